"""mnistlab: design, train and compare neural networks on MNIST-family datasets."""

from __future__ import annotations

__version__ = "0.2.0"
