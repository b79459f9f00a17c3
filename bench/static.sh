#!/usr/bin/env bash
# Decode speed of the static appliance build (musl + mimalloc, tools/appliance/build.sh) against
# the glibc release build, interleaved round by round on the same files: the embedded model
# (engine/models/onebit-tiny, the file compiled into the binaries) and the synthetic
# 2B-4T-shaped I2_S file. Prints the median tokens/s per build (range in brackets) and the
# ratio of the medians to the glibc build.
#
#   bench/static.sh
#
# Environment: ROUNDS (3), TOKENS (64), THREADS (2), REPS per round (2), CACHE (bench/.cache),
# GLIBC / STATIC (directories holding `onebit`; default: target/release, and
# target/appliance/embedded after building it), EXTRA="NAME=DIR ..." more builds to compare
# (e.g. the static build with musl's own malloc).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/.." && pwd)"
cache="${CACHE:-$here/.cache}"
rounds="${ROUNDS:-3}"
tokens="${TOKENS:-64}"
threads="${THREADS:-2}"
reps="${REPS:-2}"
preset=2b4t
mkdir -p "$cache"
# shellcheck source=bench/lib.sh
source "$here/lib.sh"

glibc="${GLIBC:-$(build_onebit)}"
if [[ -z "${STATIC:-}" ]]; then
    "$root/tools/appliance/build.sh" >&2
    STATIC="$root/target/appliance/embedded"
fi
onebit_dir="$glibc"
models=("$root/engine/models/onebit-tiny/onebit-tiny.i2_s.gguf" "$(synth_model i2s)")
builds=("glibc=$glibc" "static=$STATIC")
for extra in ${EXTRA:-}; do builds+=("$extra"); done

echo "CPU: $(cpu_desc); $(nproc) cores; ${threads} threads; tg${tokens}, ${reps} reps x ${rounds} rounds"
results="$(mktemp)"
trap 'rm -f "$results"' EXIT
for ((round = 1; round <= rounds; round++)); do
    for model in "${models[@]}"; do
        for b in "${builds[@]}"; do
            name="${b%%=*}" dir="${b#*=}"
            ts="$("$dir/onebit" bench -m "$model" -p 0 -n "$tokens" -t "$threads" -r "$reps" \
                --no-bandwidth -o json 2>/dev/null |
                python3 -c 'import json,sys; print(json.load(sys.stdin)["results"][0]["ts_mean"])')"
            echo "$(basename "$model") $name $ts" >>"$results"
            echo "round $round $(basename "$model") $name: $ts tok/s" >&2
        done
    done
done

python3 - "$results" "${builds[@]}" <<'EOF'
import collections, statistics, sys
rows = collections.defaultdict(list)
for line in open(sys.argv[1]):
    model, build, ts = line.split()
    rows[(model, build)].append(float(ts))
names = [b.split("=", 1)[0] for b in sys.argv[2:]]
print("| model | " + " | ".join(f"{n} tok/s" for n in names) + " | " + " | ".join(f"{n}/glibc" for n in names[1:]) + " |")
print("|---|" + "---:|" * (2 * len(names) - 1))
for model in dict.fromkeys(m for m, _ in rows):
    mean = {n: statistics.median(rows[(model, n)]) for n in names}
    cells = [f"{mean[n]:.1f} ({min(rows[(model, n)]):.1f}–{max(rows[(model, n)]):.1f})" for n in names]
    ratios = [f"{mean[n] / mean['glibc']:.2f}×" for n in names[1:]]
    print(f"| {model} | " + " | ".join(cells + ratios) + " |")
EOF
