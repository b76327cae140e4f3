"""From a spec to a torch module: building, TensorFlow padding, Keras initializers, fused and stacked bundles.

Imports nothing: import the module you need (the store never pulls in torch, `ls` never pulls in matplotlib)."""
