#!/usr/bin/env bash
# Model load benchmark: mmap (the file's page cache), read (pread into the weights' sealed
# memfd) and uring (io_uring O_DIRECT reads into it) loads of the 2B-4T-shaped synthetic
# I2_S file, cold (page cache dropped with posix_fadvise DONTNEED first) and warm (file read
# into the page cache first). The time runs until every weight is in memory (one byte of each
# page read after the load returns: an mmap load is lazy). Each load runs in its own process (`onebit load-bench`), so
# peak RSS (VmHWM) is that load's; the file's page cache afterwards is counted with mincore.
#
#   bench/load.sh
#
# Environment: FILE (the model file; default $CACHE/load-2b4t.i2_s.gguf, synthesized when
# missing; keep it on the disk you want to measure, not on tmpfs), ROUNDS (1), ONEBIT (use
# this binary instead of building), CACHE (default bench/.cache, not in git).
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/.." && pwd)"
cache="${CACHE:-$here/.cache}"
rounds="${ROUNDS:-1}"
mkdir -p "$cache"
if [[ -d "$root/.git/info" ]]; then
    grep -qs '^bench/.cache/$' "$root/.git/info/exclude" || echo 'bench/.cache/' >>"$root/.git/info/exclude"
fi
# shellcheck source=bench/lib.sh
source "$here/lib.sh"

onebit="${ONEBIT:-}"
if [[ -z "$onebit" ]]; then
    (cd "$root" && cargo build --release -p onebit-engine --bin onebit >&2)
    onebit="$root/target/release/onebit"
fi

file="${FILE:-$cache/load-2b4t.i2_s.gguf}"
if [[ ! -f "$file" ]]; then
    echo "synthesizing $file (2b4t, I2_S)" >&2
    "$onebit" synth --preset 2b4t --format i2s --out "$file" >&2
fi
fs="$(findmnt -no FSTYPE -T "$file" 2>/dev/null || stat -f -c %T "$file")"
if [[ "$fs" == tmpfs ]]; then
    echo "warning: $file is on tmpfs: its pages are its page cache and cannot be dropped" >&2
fi
cpu="$(cpu_desc), $(nproc) cores"
dev="$(df --output=source "$file" | tail -1)"

results="$(mktemp)"
logs="$(mktemp)"
trap 'rm -f "$results" "$logs"' EXIT
for round in $(seq "$rounds"); do
    for temp in cold warm; do
        for method in mmap read uring; do
            if [[ "$temp" == warm ]]; then
                cat "$file" >/dev/null
                flag=()
            else
                flag=(--cold)
            fi
            echo "round $round: $temp $method" >&2
            "$onebit" load-bench -m "$file" --load "$method" "${flag[@]}" >>"$results" 2>>"$logs"
        done
    done
done

if grep -q "refused" "$logs"; then
    echo "note: a load fell back:" >&2
    grep "refused" "$logs" >&2
fi

python3 - "$results" "$cpu" "$fs" "$dev" "$(uname -r)" "$file" "$(grep -c refused "$logs" || true)" <<'EOF'
import json, sys
path, cpu, fs, dev, kernel, file, fallbacks = sys.argv[1:8]
rows = [json.loads(l) for l in open(path) if l.startswith("{")]
mib = 1 << 20
size = rows[0]["file_bytes"] if rows else 0
print(f"CPU: {cpu}; file system: {fs} on {dev}; kernel {kernel}")
print(f"file: {file} ({size / 1e9:.2f} GB); io_uring fallbacks logged: {fallbacks}")
print()
print("| cache | load | wall s (load call) | GB/s | peak RSS MiB (at load return) | of which heap after MiB | page cache after MiB (% of file) | RSS + cache − file MiB |")
print("|---|---|---:|---:|---:|---:|---:|---:|")
undropped = []
for r in rows:
    temp = "cold" if r["cold"] else "warm"
    before = r.get("cache_before_bytes")
    if r["cold"] and before is not None and before > 0.01 * size:
        undropped.append(f"{r['method']}: {before / mib:.0f} MiB still cached before the cold load")
    cache = r["page_cache_after_bytes"]
    over = (r["peak_rss_bytes"] + cache - size) / mib
    print(
        f"| {temp} | {r['method']} | {r['seconds']:.2f} ({r['load_seconds']:.2f}) | {r['gb_per_s']:.2f} | "
        f"{r['peak_rss_bytes'] / mib:.0f} ({r['peak_rss_at_load_return_bytes'] / mib:.0f}) | "
        f"{(r.get('rss_anon_bytes') or 0) / mib:.0f} | {cache / mib:.0f} ({100 * cache / size:.1f} %) | {over:+.0f} |"
    )
print()
print("For mmap the page cache and the resident set are the same pages, counted twice in the last column.")
if undropped:
    print("The OS could not drop the cache: " + "; ".join(undropped))
else:
    print("Cold runs started with < 1 % of the file cached (posix_fadvise DONTNEED worked).")
for r in rows:
    if r["method"] == "uring":
        cache = r["page_cache_after_bytes"]
        ok_cache = cache < 0.05 * size
        ok_mem = r["peak_rss_bytes"] + cache <= size + 64 * mib
        temp = "cold" if r["cold"] else "warm"
        print(
            f"uring {temp}: page cache {100 * cache / size:.1f} % of the file (target < 5 %: "
            f"{'met' if ok_cache else 'NOT met'}); peak RSS + page cache − file = "
            f"{(r['peak_rss_bytes'] + cache - size) / mib:+.0f} MiB (target ≤ +64 MiB: "
            f"{'met' if ok_mem else 'NOT met'})"
        )
EOF
