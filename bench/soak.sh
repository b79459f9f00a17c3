#!/usr/bin/env bash
# Soak and abuse: onebitd on the synthetic 2B-4T-shaped I2_S model, 64 streaming clients for
# 10 minutes with a mix of prompt lengths, stop strings, mid-stream cancellations and
# malformed requests, beside slow-loris clients and oversized headers and bodies
# (bench/soak.py). Run by hand; it takes every core. Prints soak.py's JSON summary (also kept
# under bench/.cache/soak-STAMP/) and fails if a request failed, RSS drifted past ±5 % after
# warm-up, or fds or threads did not return to their count before the run.
#
#   bench/soak.sh
#
# Environment: SECONDS_RUN (600), WARMUP (120), CLIENTS (64), SLOTS (4), QUEUE (32),
# CTX (2048), THREADS (all cores), ONEBIT (directory with onebitd; default: a release build),
# CACHE (bench/.cache).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/.." && pwd)"
cache="${CACHE:-$here/.cache}"
preset=2b4t
mkdir -p "$cache"
# shellcheck source=bench/lib.sh
source "$here/lib.sh"
onebit_dir="${ONEBIT:-$(build_onebit)}"
model="$(synth_model i2s)"
out="$cache/soak-$(date -u +%Y%m%dT%H%M%SZ)"
mkdir -p "$out"
port=18590
# Every client is 127.0.0.1, so the per-client connection cap must admit them all.
args=(-m "$model" --host 127.0.0.1 --port "$port" --metrics -np "${SLOTS:-4}" --queue "${QUEUE:-32}"
    -c "${CTX:-2048}" --max-conns-per-client 1024)
[[ -n "${THREADS:-}" ]] && args+=(-t "$THREADS")
[[ $(id -u) == 0 ]] && args+=(--user nobody)
"$onebit_dir/onebitd" "${args[@]}" 2>"$out/onebitd.log" &
pid=$!
trap 'kill "$pid" 2>/dev/null || true' EXIT
until curl -sf "127.0.0.1:$port/health" >/dev/null; do
    kill -0 "$pid" || { cat "$out/onebitd.log"; exit 1; }
    sleep 0.5
done
echo "CPU: $(cpu_desc); $(nproc) cores; commit $(git -C "$root" rev-parse --short HEAD); onebitd ${args[*]}" | tee "$out/conditions.txt"
python3 "$here/soak.py" --port "$port" --pid "$pid" --seconds "${SECONDS_RUN:-600}" \
    --warmup "${WARMUP:-120}" --clients "${CLIENTS:-64}" | tee "$out/summary.json"
kill -TERM "$pid"
wait "$pid" && echo "onebitd exited 0 on SIGTERM" || { echo "onebitd exited $?"; exit 1; }
trap - EXIT
python3 - "$out/summary.json" <<'PY'
import json, sys
s = json.load(open(sys.argv[1]))
problems = []
if s["failures"] or s["outcomes"].get("FAILED"):
    problems.append(f"{s['outcomes'].get('FAILED', 0)} failed requests: {s['failures'][:5]}")
if s["rss_kib"]["max_drift"] is not None and s["rss_kib"]["max_drift"] > 0.05:
    problems.append(f"RSS drifted {s['rss_kib']['max_drift']:.1%} after warm-up")
if s["fds"]["after"] > s["fds"]["before"] or s["threads"]["after"] > s["threads"]["before"]:
    problems.append(f"fds {s['fds']} threads {s['threads']}")
if "FAILED" in s["request_after"]:
    problems.append(f"the request after the soak failed: {s['request_after']}")
if not s["idle_after"]:
    problems.append("the daemon did not go idle after the clients stopped")
print("\n".join(problems) if problems else "soak: no failed request, RSS flat, no leaked fds, threads or slots")
sys.exit(1 if problems else 0)
PY
