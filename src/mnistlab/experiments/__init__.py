"""Experiment definitions, factor grids, the seed notebooks' protocol and the built-in experiment files.

Imports nothing: import the module you need (the store never pulls in torch, `ls` never pulls in matplotlib)."""
