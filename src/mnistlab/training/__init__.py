"""Training one model (or a seed bundle): the engine, its config, history, resume, optimizers, precision, limits, cost.

Imports nothing: import the module you need (the store never pulls in torch, `ls` never pulls in matplotlib)."""
