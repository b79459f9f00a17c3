"""A fleet: HAProxy (tools/fleet/haproxy.cfg, Debian's haproxy) in front of three onebitd on
loopback ports. Health checks on /health, SSE passed through as it is written, requests that
share a chat prefix kept on one backend (its KV cache holds the prefix: the /metrics
prefix-cache counter shows the reuse), and a backend killed while streams run: its streams end
in an error the client sees, every other stream completes, and new requests go to the others.

The balancer does not depend on the compute surface, so this runs in run.sh's CPU pass only.
Skips where haproxy is missing, except under CI=true, where .ci/run installs it."""

import http.client
import json
import os
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.request

import pytest

from conftest import BIN, MODEL, SURFACE, Daemon, free_port, root_args

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CONFIG = os.path.join(REPO, "tools", "fleet", "haproxy.cfg")
SERVERS = ["onebitd1", "onebitd2", "onebitd3"]

pytestmark = [
    pytest.mark.skipif(not BIN or not MODEL, reason="ONEBITD and ONEBIT_TEST_MODEL are not set (run tests/python/run.sh)"),
    pytest.mark.skipif(SURFACE != "cpu", reason="the balancer does not depend on the surface: it runs in the cpu pass"),
]


def haproxy():
    exe = shutil.which("haproxy")
    if exe:
        return exe
    if os.environ.get("CI") == "true":
        pytest.fail("haproxy is not installed (.ci/run installs it with apt-get)")
    pytest.skip("haproxy is not installed (apt-get install haproxy)")


class Fleet:
    """Three onebitd (each with its own extra arguments) behind one HAProxy."""

    def __init__(self, backend_args):
        exe = haproxy()
        common = ["--metrics", "-np", "4", "--temp", "0", "-t", "1"] + root_args()
        self.daemons = [Daemon(common + args) for args in backend_args]
        for d in self.daemons:
            d.wait_ready()
        self.port = free_port()
        self.dir = tempfile.mkdtemp(prefix="onebit-fleet-")
        self.admin = os.path.join(self.dir, "admin.sock")
        env = dict(os.environ, ONEBIT_FLEET_BIND=f"127.0.0.1:{self.port}", ONEBIT_FLEET_ADMIN=self.admin)
        for i, d in enumerate(self.daemons, 1):
            env[f"ONEBIT_BACKEND_{i}"] = f"127.0.0.1:{d.port}"
        self.log = open(os.path.join(self.dir, "haproxy.log"), "w+")
        self.proc = subprocess.Popen([exe, "-f", CONFIG], env=env, stdout=self.log, stderr=self.log)
        for name in SERVERS:
            self.wait_status(name, "UP")

    def stats(self):
        """HAProxy's view of each server: name -> (status, last check)."""
        with socket.socket(socket.AF_UNIX) as s:
            s.connect(self.admin)
            s.sendall(b"show stat\n")
            out = b""
            while chunk := s.recv(65536):
                out += chunk
        lines = out.decode().splitlines()
        head = lines[0].lstrip("# ").split(",")
        rows = [dict(zip(head, line.split(","))) for line in lines[1:] if line]
        return {r["svname"]: (r["status"], r["check_status"]) for r in rows if r["pxname"] == "onebitd"}

    def wait_status(self, name, status, timeout=60):
        """Waits for HAProxy's health checks to report `status` for a server."""
        deadline = time.time() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"haproxy exited with {self.proc.returncode}:\n{self.logs()}")
            try:
                if self.stats().get(name, ("",))[0] == status:
                    return
            except OSError:
                pass  # the admin socket is not bound yet
            assert time.time() < deadline, f"{name} never became {status}: {self.stats()}\n{self.logs()}"
            time.sleep(0.05)

    def logs(self):
        self.log.seek(0)
        return self.log.read()

    def conn(self):
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=120)

    def backend_for(self, key):
        """The server HAProxy routes X-Onebit-Affinity: key to (asked with GET /health, which
        no engine work answers)."""
        c = self.conn()
        c.request("GET", "/health", headers={"X-Onebit-Affinity": key})
        r = c.getresponse()
        r.read()
        assert r.status == 200, r.status
        return r.getheader("X-Onebit-Backend")

    def post(self, path, body, headers=None):
        c = self.conn()
        c.request("POST", path, json.dumps(body), {"Content-Type": "application/json", **(headers or {})})
        r = c.getresponse()
        return r.status, r.getheader("X-Onebit-Backend"), json.loads(r.read())

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(30)
        for d in self.daemons:
            if d.proc.poll() is None:
                d.stop()
        self.log.close()
        shutil.rmtree(self.dir, ignore_errors=True)


def cached_tokens_total(d):
    return d.metric("onebit:prompt_cached_tokens_total")


def test_health_checks_and_chat_prefix_affinity_keep_kv_reuse():
    fleet = Fleet([[], [], []])
    try:
        assert {s: st for s, (st, _) in fleet.stats().items() if s in SERVERS} == dict.fromkeys(SERVERS, "UP")
        assert all(check.startswith("L7OK") for s, (_, check) in fleet.stats().items() if s in SERVERS)
        before = [cached_tokens_total(d) for d in fleet.daemons]
        questions = [f"Tell me about the {thing}." for thing in ("sea", "moon", "king", "vineyard")]
        served = {}  # (backend, cached tokens) per response
        turns = {}
        # First turns of four conversations, then their second turns: each backend has four
        # slots, so no conversation's prefix is evicted in between wherever it lands.
        for q in questions:
            status, backend, body = fleet.post("/v1/chat/completions", {
                "messages": [{"role": "user", "content": q}], "max_tokens": 8})
            assert status == 200, body
            turns[q] = (backend, body["choices"][0]["message"]["content"])
            served.setdefault(backend, []).append(body["usage"]["prompt_tokens_details"]["cached_tokens"])
        for q in questions:
            first_backend, answer = turns[q]
            status, backend, body = fleet.post("/v1/chat/completions", {
                "messages": [{"role": "user", "content": q}, {"role": "assistant", "content": answer},
                             {"role": "user", "content": "And then?"}], "max_tokens": 8})
            assert status == 200, body
            assert backend == first_backend, f"turn 2 of {q!r} went to {backend}, turn 1 to {first_backend}"
            cached = body["usage"]["prompt_tokens_details"]["cached_tokens"]
            assert cached > 0, f"turn 2 of {q!r} reused no cached prefix: {body['usage']}"
            served[backend].append(cached)
        # Each backend's Prometheus counter accounts for exactly the reuse its responses reported.
        for name, d, b in zip(SERVERS, fleet.daemons, before):
            assert cached_tokens_total(d) - b == sum(served.get(name, [])), name
    finally:
        fleet.stop()


def read_event(r):
    """The next SSE data payload of a streaming response (comments skipped), or None at its end."""
    while True:
        line = r.readline()
        if not line:
            return None
        line = line.strip()
        if line.startswith(b"data: "):
            return line[len(b"data: "):].decode()


def open_stream(fleet, key):
    c = fleet.conn()
    c.request("POST", "/v1/completions", json.dumps({
        "prompt": "In the beginning", "max_tokens": 48, "ignore_eos": True, "stream": True}),
        {"Content-Type": "application/json", "X-Onebit-Affinity": key})
    return c


def finish(r):
    """Reads a stream to its end: 'done' after data: [DONE], else 'cut' (the client saw the
    stream end early, as a truncated chunked body or a closed connection)."""
    try:
        while (ev := read_event(r)) is not None:
            if ev == "[DONE]":
                return "done"
        return "cut"
    except (http.client.IncompleteRead, ConnectionError):
        return "cut"


def test_killed_backend_fails_its_streams_only_and_new_requests_go_elsewhere():
    # onebitd3's (emulated) device hangs at its 5th engine step and is never given up on, so
    # its streams are still running, deterministically, when it is killed; its first stream
    # has produced tokens by then, which reach the client only if HAProxy does not buffer SSE.
    fleet = Fleet([[], [], ["--surface", "igpu", "--emulator", "--emulator-fault", "hang@5",
                            "--device-timeout", "3600"]])
    try:
        keys = {}
        for i in range(300):
            keys.setdefault(fleet.backend_for(f"conversation-{i}"), []).append(f"conversation-{i}")
            if all(len(keys.get(s, [])) >= 2 for s in SERVERS):
                break
        assert all(len(keys.get(s, [])) >= 2 for s in SERVERS), keys

        doomed = open_stream(fleet, keys["onebitd3"][0])
        doomed_r = doomed.getresponse()
        assert doomed_r.status == 200 and doomed_r.getheader("X-Onebit-Backend") == "onebitd3"
        first = read_event(doomed_r)
        assert first is not None and json.loads(first)["choices"][0]["text"] is not None

        survivors = []
        for s in ("onebitd1", "onebitd2"):
            for key in keys[s]:
                r = open_stream(fleet, key).getresponse()
                assert r.status == 200 and r.getheader("X-Onebit-Backend") == s
                assert read_event(r) is not None, f"no first event from {s}"
                survivors.append(r)
        # A second stream on the hung backend: admitted, but its engine never steps again.
        waiting = open_stream(fleet, keys["onebitd3"][1])

        fleet.daemons[2].proc.kill()
        fleet.daemons[2].proc.wait(30)

        assert finish(doomed_r) == "cut", "a stream on the killed backend must end in an error the client sees"
        try:
            r = waiting.getresponse()
            if r.status == 200:
                # Its head had gone out: the body is cut. Had HAProxy retried it elsewhere
                # (no byte of a response yet), it would have completed from a live backend.
                outcome = finish(r)
                assert outcome == "cut" or r.getheader("X-Onebit-Backend") != "onebitd3", outcome
            else:
                assert r.status in (502, 503, 504), r.status
        except (http.client.RemoteDisconnected, ConnectionError):
            pass  # the client sees the connection close with no response
        assert [finish(r) for r in survivors] == ["done"] * len(survivors), "streams on live backends were lost"

        # New requests, even those whose key hashed to the dead backend, are served by the
        # others: at once (a refused connection is retried on the next server) and after the
        # health checks have taken onebitd3 out.
        def serve_all():
            for key in keys["onebitd3"] + keys["onebitd1"][:1] + keys["onebitd2"][:1]:
                status, backend, body = fleet.post("/v1/completions", {"prompt": "Hello", "max_tokens": 4},
                                                   {"X-Onebit-Affinity": key})
                assert status == 200, body
                assert backend in ("onebitd1", "onebitd2"), backend

        serve_all()
        fleet.wait_status("onebitd3", "DOWN")
        serve_all()
        assert fleet.stats()["onebitd1"][0] == "UP" and fleet.stats()["onebitd2"][0] == "UP"
    finally:
        fleet.stop()
