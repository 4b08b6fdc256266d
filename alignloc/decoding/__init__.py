"""Decoding-time alignment: proxy-tuning / emulated fine-tuning (``proxy``); the experiment comparing it with
weight fine-tuning is ``alignloc.experiments.proxytune``."""
