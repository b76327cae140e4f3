"""mnistlab: design, train and compare neural networks on MNIST-family datasets."""

from __future__ import annotations

import os

# How long an idle OpenMP thread spins before it sleeps, in libgomp's spin iterations (torch's Linux
# wheels use libgomp). libgomp's own default (300,000) keeps a core busy while waiting; when another
# process holds one of the cores, torch's spinning threads and a descheduled sibling cost s000-m1
# up to two thirds of its speed. Passive waiting (OMP_WAIT_POLICY=PASSIVE, spin count 0) gives a fair
# share under load but costs 10-20% of idle speed on small-step models; 1,000 spins trained as fast
# under load (57-67% of idle speed with one of two cores taken; libgomp's default 34-46%) and kept
# most of the idle speed (benchmarks/RESULTS.md, "CPU: how idle OpenMP threads wait"). libgomp reads this once, when torch loads: so this
# must run before `import torch`, and has no effect in a process that imported torch before mnistlab.
# A user's own OMP_WAIT_POLICY or GOMP_SPINCOUNT wins.
DEFAULT_SPINCOUNT = "1000"
if "OMP_WAIT_POLICY" not in os.environ and "GOMP_SPINCOUNT" not in os.environ:
    os.environ["GOMP_SPINCOUNT"] = DEFAULT_SPINCOUNT

__version__ = "0.3.0"
