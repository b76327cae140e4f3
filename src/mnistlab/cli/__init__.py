"""The command line: Typer commands over mnistlab.api, and terminal views.

Imports nothing: import the module you need (the store never pulls in torch, `ls` never pulls in matplotlib)."""
