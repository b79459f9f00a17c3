"""Soak and abuse driver for a running onebitd (bench/soak.sh starts one and calls this).

CLIENTS streaming clients loop for SECONDS, each drawing every request from a mix: chat
streams with short, medium and long prompts, some with stop strings; streams cancelled
mid-way; non-streaming completions; malformed requests. Beside them, abusers: slow-loris
clients that send a header byte every few seconds, and requests with oversized headers and
bodies. Prints one JSON summary: outcomes, client-side TTFT and inter-token latency
percentiles, RSS/fd/thread samples, and the fd and thread counts before and after."""

import argparse
import http.client
import json
import os
import random
import socket
import statistics
import threading
import time
import urllib.request

WORDS = ("the king went forth unto the city and spake to the people of the land saying "
         "hear now my words for the day is at hand when all shall be made plain").split()


def proc_status(pid):
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            k, _, v = line.partition(":")
            out[k] = v.strip()
    return {"rss_kib": int(out["VmRSS"].split()[0]), "threads": int(out["Threads"]),
            "fds": len(os.listdir(f"/proc/{pid}/fd"))}


def metrics(port):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=30) as r:
        out = {}
        for line in r.read().decode().splitlines():
            if line.startswith("onebit:") and " " in line:
                name, value = line.rsplit(" ", 1)
                out[name] = float(value)
        return out


def pct(xs, p):
    if not xs:
        return None
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


class Tally:
    def __init__(self):
        self.lock = threading.Lock()
        self.counts = {}
        self.failures = []
        self.ttft = []
        self.itl = []
        self.tokens = 0

    def add(self, outcome, detail=None):
        with self.lock:
            self.counts[outcome] = self.counts.get(outcome, 0) + 1
            if outcome == "FAILED" and len(self.failures) < 50:
                self.failures.append(detail)


def prompt(rng):
    n = rng.choice([8, 8, 8, 120, 120, 600])  # words: short, medium, long
    return " ".join(rng.choice(WORDS) for _ in range(n))


def busy(r, tally):
    """A 503 must carry Retry-After; the client honours it (capped)."""
    retry = r.getheader("Retry-After")
    r.read()
    if not retry:
        tally.add("FAILED", "503 without Retry-After")
        return 0
    tally.add("503+Retry-After")
    return min(float(retry), 5.0)


def stream(port, rng, tally, cancel_after=None):
    body = {"messages": [{"role": "user", "content": prompt(rng)}], "max_tokens": rng.randint(8, 48),
            "temperature": 0.8, "stream": True, "stream_options": {"include_usage": True}}
    if rng.random() < 0.3:
        body["stop"] = rng.choice([["\n"], [" the"], ["land", "city"]])
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    try:
        t0 = time.monotonic()
        c.request("POST", "/v1/chat/completions", json.dumps(body), {"Content-Type": "application/json"})
        r = c.getresponse()
        if r.status == 503:
            return busy(r, tally)
        if r.status != 200:
            tally.add("FAILED", f"stream: {r.status} {r.read()[:200]!r}")
            return 0
        last, first, gaps, events, done = None, None, [], 0, False
        while True:
            line = r.readline()
            if not line:
                break
            if not line.startswith(b"data: "):
                continue
            data = line[6:].strip()
            if data == b"[DONE]":
                done = True
                break
            ev = json.loads(data)
            if ev.get("choices") and ev["choices"][0]["delta"].get("content"):
                now = time.monotonic()
                if first is None:
                    first = now - t0
                else:
                    gaps.append(now - last)
                last = now
                events += 1
                if cancel_after is not None and events >= cancel_after:
                    tally.add("cancelled mid-stream")
                    return 0
        if not done:
            tally.add("FAILED", "stream ended without [DONE]")
            return 0
        with tally.lock:
            if first is not None:
                tally.ttft.append(first)
            tally.itl.extend(gaps)
            tally.tokens += events
        tally.add("stream completed" + (" (stop strings)" if "stop" in body else ""))
        return 0
    except (OSError, http.client.HTTPException) as e:
        tally.add("FAILED", f"stream: {e!r}")
        return 0
    finally:
        c.close()


def complete(port, rng, tally):
    body = {"prompt": prompt(rng), "max_tokens": rng.randint(4, 24), "temperature": 0.8}
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    try:
        c.request("POST", "/v1/completions", json.dumps(body), {"Content-Type": "application/json"})
        r = c.getresponse()
        if r.status == 503:
            return busy(r, tally)
        data = r.read()
        if r.status != 200 or "choices" not in json.loads(data):
            tally.add("FAILED", f"completion: {r.status} {data[:200]!r}")
        else:
            tally.add("completion")
        return 0
    except (OSError, http.client.HTTPException) as e:
        tally.add("FAILED", f"completion: {e!r}")
        return 0
    finally:
        c.close()


MALFORMED = [
    ("POST", "/v1/chat/completions", b'{"messages": [', "application/json"),
    ("POST", "/v1/chat/completions", b'{"max_tokens": 4}', "application/json"),
    ("POST", "/v1/chat/completions", b'{"messages": "hi"}', "application/json"),
    ("POST", "/v1/chat/completions", b'{"messages": [{"role": "user", "content": "hi"}], "max_tokens": "many"}', "application/json"),
    ("POST", "/v1/chat/completions", b'{"messages": [{"role": "user", "content": "hi"}]}', "text/plain"),
    ("POST", "/v1/completions", b'{"prompt": "' + b"word " * 20000 + b'"}', "application/json"),
    ("GET", "/v1/nothing-here", b"", None),
    ("POST", "/v1/completions", b"\xff\xfe not utf-8", "application/json"),
]


def malformed(port, rng, tally):
    method, path, body, ctype = rng.choice(MALFORMED)
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    try:
        headers = {"Content-Type": ctype} if ctype else {}
        c.request(method, path, body if method == "POST" else None, headers)
        r = c.getresponse()
        r.read()
        if r.status == 503:
            tally.add("503+Retry-After" if r.getheader("Retry-After") else "FAILED")
        elif 400 <= r.status < 500:
            tally.add(f"malformed -> {r.status}")
        else:
            tally.add("FAILED", f"malformed {path} {body[:40]!r}: {r.status}")
    except (OSError, http.client.HTTPException) as e:
        tally.add("FAILED", f"malformed: {e!r}")
    finally:
        c.close()
    return 0


def client(port, seed, deadline, tally):
    rng = random.Random(seed)
    while time.monotonic() < deadline:
        kind = rng.choices(["stream", "cancel", "complete", "malformed"], [60, 15, 10, 15])[0]
        if kind == "stream":
            wait = stream(port, rng, tally)
        elif kind == "cancel":
            wait = stream(port, rng, tally, cancel_after=rng.randint(1, 4))
        elif kind == "complete":
            wait = complete(port, rng, tally)
        else:
            wait = malformed(port, rng, tally)
        if wait:
            time.sleep(wait)


def raw_status(sock):
    """The status code of the response on `sock`, or None if it closed without one."""
    data = b""
    while b"\r\n" not in data:
        chunk = sock.recv(4096)
        if not chunk:
            return None
        data += chunk
    return int(data.split(b" ", 2)[1])


def slow_loris(port, deadline, tally, cut_after):
    """Sends a request head one byte at a time, a byte every 2 s, until the server cuts it."""
    while time.monotonic() < deadline:
        s = socket.create_connection(("127.0.0.1", port), timeout=120)
        t0 = time.monotonic()
        head = b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: " + b"a" * 10000
        try:
            for b in head:
                s.sendall(bytes([b]))
                s.settimeout(2)
                try:
                    if s.recv(4096) == b"":
                        break
                    break  # the server answered (408) and closes
                except socket.timeout:
                    pass
            with tally.lock:
                cut_after.append(time.monotonic() - t0)
            tally.add("slow-loris cut")
        except OSError:
            with tally.lock:
                cut_after.append(time.monotonic() - t0)
            tally.add("slow-loris cut")
        finally:
            s.close()


def oversized(port, deadline, tally):
    """Oversized headers and bodies, one every 2 s: each must get its 4xx and a close."""
    i = 0
    while time.monotonic() < deadline:
        s = socket.create_connection(("127.0.0.1", port), timeout=60)
        try:
            if i % 2 == 0:
                s.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: " + b"b" * (64 << 10) + b"\r\n\r\n")
                want = 431
            else:
                s.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                          b"Content-Length: " + str(64 << 20).encode() + b"\r\n\r\n" + b"x" * 65536)
                want = 413
            status = raw_status(s)
            tally.add(f"oversized -> {status}" if status == want else "FAILED",
                      f"oversized: wanted {want}, got {status}")
        except OSError as e:
            # The server may close while the excess is still being sent: a reset, not a hang.
            tally.add("oversized -> reset while sending")
        finally:
            s.close()
        i += 1
        time.sleep(2)


def settle(pid, port, baseline, limit=120):
    """Waits (bounded) for the daemon to go idle and its fds and threads to return."""
    end = time.monotonic() + limit
    while True:
        m = metrics(port)
        st = proc_status(pid)
        idle = m.get("onebit:requests_processing", 0) == 0 and m.get("onebit:requests_deferred", 0) == 0
        if idle and st["fds"] <= baseline["fds"] and st["threads"] <= baseline["threads"]:
            return st, m, True
        if time.monotonic() > end:
            return st, m, False
        time.sleep(0.5)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--pid", type=int, required=True)
    ap.add_argument("--seconds", type=float, default=600)
    ap.add_argument("--warmup", type=float, default=120)
    ap.add_argument("--clients", type=int, default=64)
    ap.add_argument("--loris", type=int, default=4)
    a = ap.parse_args()

    # One request first, so lazily made state (thread pools, buffers) exists before the baseline.
    warm = Tally()
    stream(a.port, random.Random(0), warm)
    time.sleep(1)
    before = proc_status(a.pid)
    tally = Tally()
    start = time.monotonic()
    deadline = start + a.seconds
    cut_after = []
    threads = [threading.Thread(target=client, args=(a.port, i, deadline, tally)) for i in range(a.clients)]
    threads += [threading.Thread(target=slow_loris, args=(a.port, deadline, tally, cut_after)) for _ in range(a.loris)]
    threads.append(threading.Thread(target=oversized, args=(a.port, deadline, tally)))
    for t in threads:
        t.start()
    samples = []
    while any(t.is_alive() for t in threads):
        st = proc_status(a.pid)
        st["t"] = round(time.monotonic() - start, 1)
        samples.append(st)
        time.sleep(5)
    for t in threads:
        t.join()
    after, m, settled = settle(a.pid, a.port, before)
    # Free slots take new work: one more stream must complete.
    final = Tally()
    stream(a.port, random.Random(1), final)

    post = [s for s in samples if s["t"] >= a.warmup and s["t"] <= a.seconds]
    ref = post[0]["rss_kib"] if post else None
    drift = max(abs(s["rss_kib"] - ref) / ref for s in post) if post else None
    elapsed = time.monotonic() - start
    summary = {
        "seconds": round(elapsed, 1),
        "clients": a.clients,
        "outcomes": dict(sorted(tally.counts.items())),
        "failures": tally.failures,
        "streamed_tokens": tally.tokens,
        "ttft_s": {"p50": pct(tally.ttft, 50), "p99": pct(tally.ttft, 99), "n": len(tally.ttft)},
        "itl_s": {"p50": pct(tally.itl, 50), "p99": pct(tally.itl, 99), "n": len(tally.itl)},
        "slow_loris_cut_s": {"min": min(cut_after, default=None), "max": max(cut_after, default=None),
                             "median": statistics.median(cut_after) if cut_after else None},
        "rss_kib": {"before": before["rss_kib"], "warm_ref": ref,
                    "post_warmup_min": min((s["rss_kib"] for s in post), default=None),
                    "post_warmup_max": max((s["rss_kib"] for s in post), default=None),
                    "max_drift": drift, "after": after["rss_kib"]},
        "fds": {"before": before["fds"], "after": after["fds"], "peak": max(s["fds"] for s in samples)},
        "threads": {"before": before["threads"], "after": after["threads"], "peak": max(s["threads"] for s in samples)},
        "idle_after": settled,
        "request_after": final.counts,
        "server": {k: m[k] for k in ("onebit:requests_total", "onebit:requests_rejected_total",
                                     "onebit:tokens_predicted_total", "onebit:prompt_tokens_total",
                                     "onebit:requests_processing", "onebit:requests_deferred") if k in m},
        "samples": samples,
    }
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
