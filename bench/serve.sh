#!/usr/bin/env bash
# Serving benchmark: onebitd (I2_S) against llama-server (TQ2_0, continuous batching) on the
# same synthetic 2B-4T-shaped model, 1..16 concurrent streaming clients, servers interleaved.
#
#   bench/serve.sh            # build what is missing, then 3 interleaved rounds
#
# Environment: THREADS (2), ROUNDS (3), CLIENTS (1,2,4,8,16), REQUESTS per client (2),
# TOKENS per request (64), CTX per slot (512), PRESET (2b4t), LLAMA_SERVER / ONEBIT (use these
# binaries; ONEBIT is the directory holding onebit and onebitd), CACHE (bench/.cache),
# RESULTS (bench/RESULTS.md: its serving section is replaced; RESULTS=- leaves it alone).
# Both servers sample at llama-server's defaults (temp 0.8, top-k 40, top-p 0.95, min-p 0.05)
# with `ignore_eos`, so every request generates exactly TOKENS tokens.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/.." && pwd)"
cache="${CACHE:-$here/.cache}"
threads="${THREADS:-2}"
rounds="${ROUNDS:-3}"
clients="${CLIENTS:-1,2,4,8,16}"
requests="${REQUESTS:-2}"
tokens="${TOKENS:-64}"
ctx="${CTX:-512}"
preset="${PRESET:-2b4t}"
results="${RESULTS:-$here/RESULTS.md}"
mkdir -p "$cache"
# shellcheck source=bench/lib.sh
source "$here/lib.sh"

slots="$(tr ',' '\n' <<<"$clients" | sort -n | tail -1)"
llama_server="${LLAMA_SERVER:-$(build_llama_target llama-server)}"
onebit_dir="${ONEBIT:-$(build_onebit)}"
i2s="$(synth_model i2s)"
tq2="$(synth_model tq2_0)"
port=18480
stamp="$(date -u +%Y%m%dT%H%M%SZ)"
out="$cache/serve-$stamp"
mkdir -p "$out"

server_pid=""
stop_server() {
    if [[ -n "$server_pid" ]]; then
        kill "$server_pid" 2>/dev/null || true
        wait "$server_pid" 2>/dev/null || true
        server_pid=""
    fi
}
trap stop_server EXIT

wait_ready() {
    for _ in $(seq 1 600); do
        if python3 -c "import urllib.request,sys; sys.exit(urllib.request.urlopen('http://127.0.0.1:$port/health', timeout=2).status != 200)" 2>/dev/null; then
            return 0
        fi
        kill -0 "$server_pid" 2>/dev/null || { echo "the server exited; its log: $1" >&2; tail -20 "$1" >&2; exit 1; }
        sleep 0.5
    done
    echo "the server did not become ready in 300 s; its log: $1" >&2
    exit 1
}

start_llama() {
    "$llama_server" -m "$tq2" -t "$threads" -np "$slots" -cb -c $((slots * ctx)) \
        --host 127.0.0.1 --port "$port" >"$1" 2>&1 &
    server_pid=$!
}

start_onebit() {
    local as_root=()
    [[ "$(id -u)" != 0 ]] || as_root=(--allow-root) # onebitd refuses root unless told
    "$onebit_dir/onebitd" "${as_root[@]}" -m "$i2s" -t "$threads" --parallel "$slots" -c "$ctx" \
        --host 127.0.0.1 --port "$port" --metrics >"$1" 2>&1 &
    server_pid=$!
}

echo "# $(date -u) — $(cpu_desc) — $threads threads, clients $clients, $requests requests x $tokens tokens each, $rounds rounds" | tee "$out/log"
for round in $(seq 1 "$rounds"); do
    for server in llama onebit; do
        echo "## round $round: $server" | tee -a "$out/log"
        "start_$server" "$out/$server-r$round.server.log"
        wait_ready "$out/$server-r$round.server.log"
        python3 "$here/serve_drive.py" --url "http://127.0.0.1:$port" --clients "$clients" \
            --requests "$requests" --max-tokens "$tokens" --label "$server" |
            tee "$out/$server-r$round.jsonl" | tee -a "$out/log"
        if [[ "$server" == onebit ]]; then
            python3 -c "import urllib.request; print(urllib.request.urlopen('http://127.0.0.1:$port/metrics').read().decode())" \
                >"$out/onebit-r$round.metrics" || true
        fi
        stop_server
    done
done

python3 - "$out" "$rounds" "$(cpu_desc)" "$threads" "$stamp" <<'EOF' | tee -a "$out/log"
import json, statistics, sys
out, rounds, cpu, threads, stamp = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5]
rows = {}
for server in ("llama", "onebit"):
    for r in range(1, rounds + 1):
        for line in open(f"{out}/{server}-r{r}.jsonl"):
            d = json.loads(line)
            rows.setdefault((server, d["clients"]), []).append(d)
levels = sorted({n for _, n in rows})
mean = lambda xs: statistics.mean(xs) if xs else float("nan")
def col(server, n, key):
    return [d[key] for d in rows.get((server, n), [])]
one = mean(col("onebit", levels[0], "tok_s"))
lines = [
    f"CPU: {cpu}; {threads} threads; {rounds} interleaved rounds; log `bench/.cache/serve-{stamp}/log`.",
    "",
    "| streams | llama-server tok/s | onebitd tok/s (per round) | onebitd / llama-server | onebitd vs its 1 stream | TTFT p50/p99 ms (llama / onebit) | ITL p50/p99 ms (llama / onebit) | failed requests |",
    "|---:|---:|---:|---:|---:|---|---|---:|",
]
for n in levels:
    l, o = mean(col("llama", n, "tok_s")), mean(col("onebit", n, "tok_s"))
    per = ", ".join(f"{x:.1f}" for x in col("onebit", n, "tok_s"))
    lat = lambda s, k: f"{mean(col(s, n, k + '_p50_ms')):.0f}/{mean(col(s, n, k + '_p99_ms')):.0f}"
    err = sum(col("llama", n, "errors")) + sum(col("onebit", n, "errors"))
    lines.append(
        f"| {n} | {l:.1f} | {o:.1f} ({per}) | **{o / l:.2f}×** | {o / one:.2f}× | {lat('llama', 'ttft')} / {lat('onebit', 'ttft')} | {lat('llama', 'itl')} / {lat('onebit', 'itl')} | {err} |"
    )
table = "\n".join(lines)
print("\n" + table)
open(f"{out}/table.md", "w").write(table + "\n")
EOF
results_section serve "## Serving: onebitd against llama-server (\`bench/serve.sh\`)" "$results" "$out/table.md"
echo "log: $out/log"
