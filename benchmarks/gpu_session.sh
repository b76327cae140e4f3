#!/usr/bin/env bash
# Issue 10's GPU work, one phase per device call (each call may run 10 minutes; a session has 30).
# On the GPU machine, from the repository root, with benchmarks/.wheels-gpu (gpu_wheels.sh) and .data/mnist
# carried (benchmarks/README.md, "GPU benchmark"):
#
#   bash benchmarks/gpu_session.sh tests      # the engine's features on CUDA: tests/test_device.py
#   bash benchmarks/gpu_session.sh bench      # bench_gpu.py: models, scaling, epoch, to-99, options
#   bash benchmarks/gpu_session.sh study      # bench_gpu.py: the seed study, extrapolated and said so
#   bash benchmarks/gpu_session.sh reproduce  # `mnistlab run reproduce` (35 models x 3 seeds), resumable
#
# What comes back is under $OUT: logs, JSON, Markdown, and the run store's store.sqlite (not its artifacts:
# `mnistlab reproduction --store DIR` reads the database alone). To continue `reproduce` in a later call,
# copy that store.sqlite into .gpu-store/ here and carry .gpu-store too: finished runs are skipped.
set -euo pipefail
phase="${1:?phase: tests, bench, study or reproduce}"
out="${OUT:-/tmp/mnistlab-gpu}"
mkdir -p "$out"
cd "$(dirname "$0")/.."
# The machine's own torch, numpy, pandas, statsmodels...; mnistlab's other dependencies from the wheels.
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
    benchmarks/.wheels-gpu/*.whl
export PYTHONPATH="/tmp/site:$PWD/src" MNISTLAB_DATA_DIR="${MNISTLAB_DATA_DIR:-$PWD/.data}" PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$out/gpu.txt"

case "$phase" in
  tests)
    MNISTLAB_TEST_DEVICE=cuda python3 -m pytest -q -p no:cacheprovider tests/test_device.py 2>&1 | tee "$out/tests-cuda.log"
    ;;
  bench)
    python3 benchmarks/bench_gpu.py --sections models scaling epoch to-99 options \
        --out "$out/results-gpu.json" --markdown "$out/results-gpu.md"
    ;;
  study)
    python3 benchmarks/bench_gpu.py --sections study --out "$out/results-gpu-study.json" \
        --markdown "$out/results-gpu-study.md"
    ;;
  reproduce)
    mkdir -p .gpu-store
    # Stop short of the call's limit; a run cut off here restarts from its epoch 1 in the next call.
    timeout "${REPRODUCE_SECONDS:-540}" python3 -m mnistlab run reproduce --store .gpu-store --bundle auto \
        2>&1 | tail -n 200 >"$out/reproduce.log" || true
    python3 -m mnistlab ls reproduce --store .gpu-store | tee -a "$out/reproduce.log" | tail -n 5
    # SQLite's own backup: a copy that includes what is still in the write-ahead log of a killed run.
    python3 -c "import sqlite3, sys; sqlite3.connect(sys.argv[1]).backup(sqlite3.connect(sys.argv[2]))" \
        .gpu-store/store.sqlite "$out/store.sqlite"
    ;;
  *)
    echo "unknown phase $phase: tests, bench, study or reproduce" >&2
    exit 2
    ;;
esac
