#!/usr/bin/env bash
# Create the separate virtual environment the Keras peer runs in: benchmarks/.venv-keras.
#
# TensorFlow and torch are kept apart on purpose: each framework is benchmarked in its own
# process with its own interpreter, so neither's thread pools, allocator or OpenMP runtime
# touches the other's. mnistlab and torch are NOT installed here; keras_peer.py reads the model
# architecture as JSON written by bench_train.py.
#
# Usage: bash benchmarks/setup_env.sh            (idempotent; re-run to upgrade)
#        PYTHON=python3.11 bash benchmarks/setup_env.sh
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
venv="$here/.venv-keras"
python="${PYTHON:-python3}"

"$python" - <<'PY'
import sys
if sys.version_info[:2] < (3, 9):
    sys.exit(f"need Python >= 3.9 for TensorFlow wheels, got {sys.version.split()[0]}")
PY

if [ ! -x "$venv/bin/python" ]; then
    echo "creating $venv with $("$python" --version 2>&1)"
    "$python" -m venv "$venv"
fi

# tensorflow-cpu: the CPU-only build (no CUDA/cuDNN wheels are pulled in). If your platform has
# no tensorflow-cpu wheel (check: pip index versions tensorflow-cpu), plain `tensorflow` is
# CPU-only on Linux unless installed as tensorflow[and-cuda].
"$venv/bin/python" -m pip install --quiet --upgrade pip
"$venv/bin/python" -m pip install --quiet --upgrade tensorflow-cpu keras numpy

# Refuse an environment that pulled GPU runtimes: they would only cost disk and start-up time.
if "$venv/bin/python" -m pip list 2>/dev/null | grep -iE '^nvidia-' ; then
    echo "warning: NVIDIA packages were installed into $venv (listed above)" >&2
fi

"$venv/bin/python" - <<'PY'
import os
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")
import keras, tensorflow as tf
print(f"ok: python {os.sys.version.split()[0]}, tensorflow {tf.__version__}, keras {keras.__version__}, "
      f"backend {keras.backend.backend()}, GPUs visible: {len(tf.config.list_physical_devices('GPU'))}")
PY
echo "Keras peer interpreter: $venv/bin/python"
