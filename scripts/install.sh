#!/usr/bin/env bash
# Installs mnistlab into the current Python environment: `bash scripts/install.sh` for the base
# install (what the main command needs), `bash scripts/install.sh test` with the test tools.
# Torch first, pinned, and only where none is installed: an unpinned torch resolves to the
# newest CUDA build (several GB), while 2.13.0 is the CPU build this project is developed on.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
EXTRAS=${1:+[$1]}
if ! "$PYTHON" -c "import torch" 2>/dev/null; then
  "$PYTHON" -m pip install --quiet "torch==2.13.0"
fi
"$PYTHON" -m pip install --quiet -e ".${EXTRAS}"
