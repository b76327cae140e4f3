"""Other tools' formats: Keras code in and out, Keras weights, TensorBoard and MLflow.

Imports nothing: import the module you need (the store never pulls in torch, `ls` never pulls in matplotlib)."""
