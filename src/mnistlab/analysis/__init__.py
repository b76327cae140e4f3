"""Diagnoses of training histories and the statistics that compare models.

Imports nothing: import the module you need (the store never pulls in torch, `ls` never pulls in matplotlib)."""
