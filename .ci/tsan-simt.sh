#!/usr/bin/env bash
# The SIMT host build of the GPU kernels under ThreadSanitizer: every kernel at tiny and
# BitNet-2B-like shapes with one thread per work-item racing between real barriers must be
# free of data races, and a run with a barrier of attn_split removed must be reported as
# one. The Rust toolchain's -Zsanitizer needs nightly; instead the C side (the kernels and
# their SIMT runner) is compiled with -fsanitize=thread (kernels/build.rs, ONEBIT_TSAN=1),
# in its own target directory so the normal build stays cached.
set -euo pipefail
cd "$(dirname "$0")/.."
export ONEBIT_TSAN=1 CARGO_TARGET_DIR=target/tsan
# halt_on_error: the first race fails the run. setarch -R: TSan's fixed memory layout
# cannot always coexist with full address randomisation on recent kernels.
export TSAN_OPTIONS="halt_on_error=1 exitcode=66 second_deadlock_stack=1 suppressions=$PWD/.ci/tsan-rust-std.supp"
run() { if setarch "$(uname -m)" -R true 2>/dev/null; then setarch "$(uname -m)" -R "$@"; else "$@"; fi; }

cargo test --release -p onebit-kernels --lib --no-run
echo "== SIMT kernels under ThreadSanitizer (must be race-free)"
run cargo test --release -p onebit-kernels --lib gpu::simt_tests -- --test-threads=1

echo "== a missing barrier under ThreadSanitizer (must be reported)"
log=$(mktemp)
set +e
run cargo test --release -p onebit-kernels --lib gpu::simt_tests::tsan_stops_a_run_with_a_missing_barrier \
    -- --ignored --exact >"$log" 2>&1
status=$?
set -e
if [ "$status" -ne 66 ] || ! grep -q "WARNING: ThreadSanitizer: data race" "$log"; then
    cat "$log"
    echo "tsan-simt: ThreadSanitizer did not report the missing barrier (exit $status)" >&2
    exit 1
fi
echo "ThreadSanitizer reported the missing barrier as a data race, as it must"
rm -f "$log"
