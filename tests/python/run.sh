#!/usr/bin/env bash
# Builds onebitd (unless $ONEBITD names a binary), installs the Python clients, and runs the tests in this folder against
# onebitd on the tiny fixture model (each test starts its own daemon on 127.0.0.1 with a
# free port and stops it). Usage: tests/python/run.sh [pytest args]
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
fixtures=${ONEBIT_FIXTURES:-$root/../shared/fixtures}
model="$fixtures/tiny-a/tiny-a.i2_s.gguf"
if [ ! -f "$model" ]; then
    echo "SKIP: $model not found (set ONEBIT_FIXTURES)"
    exit 0
fi
if [ -z "${ONEBITD:-}" ]; then
    target=${CARGO_TARGET_DIR:-$root/target}
    (cd "$root" && cargo build --release -q -p onebit-engine --bin onebitd)
    ONEBITD="$target/release/onebitd"
fi
if ! command -v python3 >/dev/null; then
    echo "SKIP: python3 is not installed"
    exit 0
fi
python3 -m pip install -q --disable-pip-version-check --root-user-action=ignore "openai>=1.40" "pytest>=7" 2>&1 | grep -v "^\[notice\]" || true
if ! python3 -c 'import openai, pytest' 2>/dev/null; then
    echo "SKIP: the openai and pytest Python packages could not be installed"
    exit 0
fi
command -v curl >/dev/null || { apt-get update -qq && apt-get install -y -qq curl >/dev/null; }
export ONEBITD ONEBIT_TEST_MODEL="$model"
# The daemon drops to "nobody" when run as root; the model is opened before that.
cd "$here"
if [ $# -eq 0 ]; then set -- .; fi
# The whole suite once per surface: the CPU, the iGPU on the in-process KFD emulator
# (onebitd --surface igpu --emulator), and NPU prefill + iGPU decode on the emulated NPU and
# iGPU (--surface npu+igpu --emulator).
status=0
for surface in ${ONEBIT_TEST_SURFACES:-cpu igpu npu+igpu}; do
    echo "== surface $surface"
    ONEBIT_TEST_SURFACE=$surface python3 -m pytest -q -p no:cacheprovider "$@" || status=$?
done
exit $status
