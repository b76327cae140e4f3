"""Datasets: the registry and lookup, the IDX format, image files, synthetic data.

Imports nothing: import the module you need (the store never pulls in torch, `ls` never pulls in matplotlib)."""
