"""Small helpers every layer may use: atomic writes, safe text, strict parsing, YAML, the machine.

Imports nothing: import the module you need (the store never pulls in torch, `ls` never pulls in matplotlib)."""
