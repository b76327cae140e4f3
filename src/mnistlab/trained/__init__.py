"""Trained models: the model folder, inference and export (ONNX, TorchScript).

Imports nothing: import the module you need (the store never pulls in torch, `ls` never pulls in matplotlib)."""
