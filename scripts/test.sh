#!/usr/bin/env bash
# Installs mnistlab with its test tools and runs the whole test suite.
# Integration tests use the real datasets when MNISTLAB_DATA_DIR points at them (else they skip).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh test
# The report's browser test drives Debian's headless Chromium; install it where we may.
if ! command -v chromium >/dev/null 2>&1 && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null \
    || echo "note: chromium could not be installed; the browser test will be skipped"
fi
export MNISTLAB_ARTIFACTS=${MNISTLAB_ARTIFACTS:-$PWD/ci-artifacts}
mkdir -p "$MNISTLAB_ARTIFACTS"
exec "${PYTHON:-python3}" -m pytest -q -p no:cacheprovider "$@"
