"""The run store and the runner with its backends (local, Ray).

Imports nothing: import the module you need (the store never pulls in torch, `ls` never pulls in matplotlib)."""
