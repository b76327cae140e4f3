"""mnistlab: design, train and compare neural networks on MNIST-family datasets."""

from __future__ import annotations

import os

# OpenMP threads that wait for work by spinning keep a core busy; when another process holds one
# of the cores, torch's spinning threads and a descheduled sibling cost s000-m1 70% of its speed
# (benchmarks/RESULTS.md, "A busy machine"). Passive waiting measured no slower idle and gives a
# fair share under load. libgomp reads this once, when torch loads: so this must run before
# `import torch`, and has no effect in a process that imported torch before mnistlab. A user's own
# OMP_WAIT_POLICY or GOMP_SPINCOUNT wins.
if "OMP_WAIT_POLICY" not in os.environ and "GOMP_SPINCOUNT" not in os.environ:
    os.environ["OMP_WAIT_POLICY"] = "PASSIVE"

__version__ = "0.2.0"
