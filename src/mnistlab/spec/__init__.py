"""Model specifications: layers, the ModelSpec, parsing with file:line errors, Keras vocabulary, summaries.

Imports nothing: import the module you need (the store never pulls in torch, `ls` never pulls in matplotlib)."""
