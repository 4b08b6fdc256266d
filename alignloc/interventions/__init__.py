"""Interventions on a loaded model: directions, steering, ablation, patching from another run, scaling."""
