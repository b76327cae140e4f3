#!/usr/bin/env bash
# Wheels for the GPU machine (Python 3.12, torch and numpy preinstalled, no network): what mnistlab's
# engine imports that such a machine may lack. Carried with the tree (the device tool's `carry`), then
#   pip install --no-index --no-deps benchmarks/.wheels-gpu/*.whl && pip install --no-deps -e .
# The report's libraries (pandas, statsmodels, matplotlib) are not needed by bench_gpu.py and are left out
# to stay within the carry limit.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
out="${1:-$here/.wheels-gpu}"
mkdir -p "$out"
python -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 \
    --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux_2_28_x86_64 \
    --implementation cp -d "$out" \
    pydantic pydantic-core annotated-types typing-inspection typing-extensions platformdirs safetensors \
    PyYAML rich markdown-it-py mdurl pygments typer shellingham click Jinja2 MarkupSafe
du -sh "$out"
