"""Causal localization: which layers/modules of the tuned model carry the behavior gap."""
