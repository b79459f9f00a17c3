#!/usr/bin/env python3
"""Drives one OpenAI-compatible server with N concurrent streaming clients and prints one JSON
line per concurrency level: aggregate tok/s, time to first token p50/p99, inter-token latency
p50/p99. Standard library only, so it runs on a fresh machine.

    serve_drive.py --url http://127.0.0.1:8080 --clients 1,2,4,8 --requests 2 --max-tokens 64

Each client sends `--requests` streaming /v1/completions requests one after another, each
with its own prompt (so no server can reuse another client's cached prefix) and
`ignore_eos`, so every request generates exactly `--max-tokens` tokens on both servers.
Tokens are counted from the server's usage report when it sends one, else as the SSE chunks
that carry text.
"""
import argparse
import http.client
import json
import statistics
import sys
import threading
import time
import urllib.parse

WORDS = "the quick brown fox jumps over a lazy dog while seven wizards quietly judge boxing".split()


def prompt_for(client, request):
    # ~24 tokens, different from the first word on for every (client, request)
    words = [WORDS[(client * 7 + request * 3 + k) % len(WORDS)] for k in range(20)]
    return f"Story {client}-{request}: " + " ".join(words)


def one_request(url, body, timeout):
    """Returns (tokens, ttft_s, [inter-token gaps s]); raises on an HTTP error."""
    u = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=timeout)
    sent = time.perf_counter()
    conn.request("POST", "/v1/completions", json.dumps(body), {"Content-Type": "application/json"})
    resp = conn.getresponse()
    if resp.status != 200:
        raise RuntimeError(f"HTTP {resp.status}: {resp.read()[:300]!r}")
    stamps, usage = [], None
    while True:
        line = resp.readline()
        if not line:
            break
        line = line.strip()
        if not line.startswith(b"data:"):
            continue
        data = line[5:].strip()
        if data == b"[DONE]":
            break
        ev = json.loads(data)
        if ev.get("usage"):
            usage = ev["usage"].get("completion_tokens")
        choices = ev.get("choices") or []
        if choices and choices[0].get("text"):
            stamps.append(time.perf_counter())
    conn.close()
    if not stamps:
        return 0, None, []
    gaps = [b - a for a, b in zip(stamps, stamps[1:])]
    return (usage if usage is not None else len(stamps)), stamps[0] - sent, gaps


def pct(xs, p):
    if not xs:
        return float("nan")
    xs = sorted(xs)
    k = min(len(xs) - 1, max(0, round(p / 100 * (len(xs) - 1))))
    return xs[k]


def run_level(args, n):
    results, errors = [], []
    lock = threading.Lock()
    go = threading.Barrier(n + 1)

    def client(i):
        go.wait()
        for r in range(args.requests):
            body = {
                "prompt": prompt_for(i, r),
                "max_tokens": args.max_tokens,
                "stream": True,
                "stream_options": {"include_usage": True},
                "ignore_eos": True,
                "temperature": 0.8,
                "top_k": 40,
                "top_p": 0.95,
                "min_p": 0.05,
                "seed": 1000 * i + r,
                "cache_prompt": True,
            }
            try:
                res = one_request(args.url, body, args.timeout)
                with lock:
                    results.append(res)
            except Exception as e:  # noqa: BLE001 - reported, counted, not hidden
                with lock:
                    errors.append(str(e))

    threads = [threading.Thread(target=client, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    go.wait()
    t0 = time.perf_counter()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    tokens = sum(r[0] for r in results)
    ttft = [r[1] for r in results if r[1] is not None]
    gaps = [g for r in results for g in r[2]]
    return {
        "clients": n,
        "requests": len(results),
        "errors": len(errors),
        "first_error": errors[0] if errors else None,
        "tokens": tokens,
        "wall_s": round(wall, 3),
        "tok_s": round(tokens / wall, 2) if wall > 0 else 0.0,
        "ttft_p50_ms": round(1e3 * pct(ttft, 50), 1),
        "ttft_p99_ms": round(1e3 * pct(ttft, 99), 1),
        "itl_p50_ms": round(1e3 * pct(gaps, 50), 1),
        "itl_p99_ms": round(1e3 * pct(gaps, 99), 1),
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--url", required=True)
    ap.add_argument("--clients", default="1,2,4,8,16")
    ap.add_argument("--requests", type=int, default=2, help="requests per client")
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--timeout", type=float, default=600)
    ap.add_argument("--label", default="")
    args = ap.parse_args()
    # One warm-up request: page the weights in, start the threads.
    one_request(args.url, {"prompt": "warm up", "max_tokens": 4, "ignore_eos": True}, args.timeout)
    for n in [int(x) for x in args.clients.split(",")]:
        row = run_level(args, n)
        row["server"] = args.label
        print(json.dumps(row), flush=True)
        if row["errors"]:
            print(f"{args.label}: {row['errors']} failed requests at {n} clients: {row['first_error']}", file=sys.stderr)


if __name__ == "__main__":
    main()
