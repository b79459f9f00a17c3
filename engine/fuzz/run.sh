#!/usr/bin/env bash
# The fuzzing campaign, on stable Rust: libFuzzer (from the libfuzzer-sys crate, built
# with the system C++ compiler) drives each target, and rustc's SanitizerCoverage pass,
# which stable accepts as `-Cpasses=sancov-module`, gives it coverage and comparison
# feedback. No nightly and no sanitizer runtime: a panic aborts the process and
# libFuzzer saves the input under artifacts/TARGET/.
#
#   engine/fuzz/run.sh [TARGET...]        all targets when none are named
#   RUNS=10000000  executions per target (libFuzzer -runs)
#   MAX_TIME=600   seconds per target at most (0: no limit), whichever comes first
#   PARALLEL=1     targets fuzzed at once
#   MAX_LEN=       longest input in bytes (default: libFuzzer's, the larger of 4096 and the
#                  largest corpus file); also applied when minimizing, which keeps a corpus
#                  of large files (code objects) small
#
# Each target starts from its committed corpus (corpus/TARGET) plus what earlier runs
# found (work/TARGET, not committed); afterwards the union is minimized back into
# corpus/TARGET (libFuzzer -merge=1: the smallest inputs keeping all coverage). One line
# per target is appended to logs/results.tsv: executions, exec/s, seconds, corpus files
# and bytes, crashes. Run it under `nice -n 19` on a shared machine.
set -euo pipefail
cd "$(dirname "$0")"
RUNS=${RUNS:-10000000}
MAX_TIME=${MAX_TIME:-600}
PARALLEL=${PARALLEL:-1}
len=()
[ -z "${MAX_LEN:-}" ] || len=(-max_len="$MAX_LEN")
all=(http_request json_bodies text_stream gguf safetensors tokenizer_json sentencepiece hf_config xclbin code_object)
targets=("$@")
((${#targets[@]})) || targets=("${all[@]}")

host=$(rustc -vV | sed -n 's/^host: //p')
# --target keeps these flags off build scripts and proc macros (they would not link).
export RUSTFLAGS="-Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4 \
-Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-pc-table \
-Cllvm-args=-sanitizer-coverage-trace-compares --cfg fuzzing -Cdebug-assertions -Coverflow-checks"
cargo build --release --target "$host" --bins
bin=target/$host/release
mkdir -p logs

one() {
    local t=$1
    mkdir -p "work/$t" "corpus/$t" "artifacts/$t"
    local log=logs/$t.log
    local start=$SECONDS
    set +e
    "$bin/$t" "work/$t" "corpus/$t" "${len[@]}" -runs="$RUNS" -max_total_time="$MAX_TIME" -timeout=10 \
        -rss_limit_mb=2048 -artifact_prefix="artifacts/$t/" -print_final_stats=1 >"$log" 2>&1
    local rc=$?
    set -e
    local secs=$((SECONDS - start))
    local execs rate
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
    rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
    # Minimize work + corpus into a fresh corpus, then replace the committed one.
    rm -rf "corpus/$t.new" && mkdir -p "corpus/$t.new"
    "$bin/$t" -merge=1 "${len[@]}" "corpus/$t.new" "corpus/$t" "work/$t" >"logs/$t.merge.log" 2>&1
    rm -rf "corpus/$t" && mv "corpus/$t.new" "corpus/$t"
    local files bytes crashes
    files=$(find "corpus/$t" -type f | wc -l)
    bytes=$(du -sb "corpus/$t" | cut -f1)
    crashes=$(find "artifacts/$t" -type f | wc -l)
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$(date -u +%FT%TZ)" "$t" "${execs:-?}" "${rate:-?}" \
        "$secs" "$files" "$bytes" "$crashes" | tee -a logs/results.tsv
    [ "$rc" -eq 0 ] || echo "$t: libFuzzer exited with $rc (see $log and artifacts/$t/)" >&2
}

printf 'date\ttarget\texecutions\texec/s\tseconds\tcorpus files\tcorpus bytes\tcrashes\n' >>logs/results.tsv
running=0
for t in "${targets[@]}"; do
    one "$t" &
    running=$((running + 1))
    if ((running >= PARALLEL)); then
        wait -n || true
        running=$((running - 1))
    fi
done
wait
