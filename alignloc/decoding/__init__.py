"""Decoding-time alignment: proxy-tuning / emulated fine-tuning, and the experiment comparing it with weight fine-tuning."""
