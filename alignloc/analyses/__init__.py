"""Analyses: pure functions from arrays (or a store) to numbers; they never load models or write files."""
