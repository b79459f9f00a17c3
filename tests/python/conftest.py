"""Starts onebitd (built by run.sh) on 127.0.0.1 with a free port for the tests."""

import json
import os
import signal
import socket
import subprocess
import tempfile
import time
import urllib.request

import pytest

BIN = os.environ.get("ONEBITD", "")
MODEL = os.environ.get("ONEBIT_TEST_MODEL", "")
MODEL_ID = "tiny-a.i2_s"
API_KEY = "test-key"
# The compute surface every daemon of this run serves on (run.sh runs the suite once per
# surface): "cpu", or "igpu" on the in-process KFD emulator.
SURFACE = os.environ.get("ONEBIT_TEST_SURFACE", "cpu")
SURFACE_ARGS = {
    "cpu": ["--surface", "cpu"],
    "igpu": ["--surface", "igpu", "--emulator"],
    "npu+igpu": ["--surface", "npu+igpu", "--emulator"],
}


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def as_root():
    return os.geteuid() == 0


# The daemons' logs live in one directory that is removed when the test session ends (a
# failing test prints the log it needs in its message).
LOG_DIR = tempfile.TemporaryDirectory(prefix="onebitd-logs-")


class Daemon:
    """One onebitd child. Traffic stays on loopback; every wait is bounded."""

    def __init__(self, args=(), env=None, prefix=(), port=None):
        self.port = port or free_port()
        self.log = tempfile.NamedTemporaryFile(
            prefix="onebitd-", suffix=".log", dir=LOG_DIR.name, delete=False
        )
        surface = [] if "--surface" in args else SURFACE_ARGS[SURFACE]
        cmd = list(prefix) + [BIN, "-m", MODEL, "--host", "127.0.0.1", "--port", str(self.port)] + surface + list(args)
        full_env = dict(os.environ)
        full_env.update(env or {})
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=self.log, env=full_env)

    def url(self, path=""):
        return f"http://127.0.0.1:{self.port}{path}"

    def wait_ready(self, timeout=60):
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"onebitd exited with {self.proc.returncode}:\n{self.logs()}")
            try:
                with urllib.request.urlopen(self.url("/health"), timeout=2) as r:
                    if r.status == 200:
                        return self
            except OSError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"onebitd not ready after {timeout}s:\n{self.logs()}")

    def logs(self):
        with open(self.log.name, encoding="utf-8", errors="replace") as f:
            return f.read()

    def rss_kib(self):
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        return 0

    def metric(self, name):
        req = urllib.request.Request(self.url("/metrics"), headers={"Authorization": f"Bearer {API_KEY}"})
        with urllib.request.urlopen(req, timeout=10) as r:
            for line in r.read().decode().splitlines():
                if line.startswith(name + " "):
                    return float(line.split()[1])
        raise KeyError(name)

    def stop(self, timeout=30):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
                raise
        return self.proc.returncode


def root_args():
    # CI runs as root: exercise the privilege drop instead of --allow-root.
    return ["--user", "nobody"] if as_root() else []


@pytest.fixture(scope="session")
def daemon():
    if not BIN or not MODEL:
        pytest.skip("ONEBITD and ONEBIT_TEST_MODEL are not set (run tests/python/run.sh)")
    d = Daemon(["--api-key", API_KEY, "--metrics", "-np", "4", "--queue", "64", "--temp", "0"] + root_args())
    d.wait_ready()
    yield d
    assert d.stop() == 0, d.logs()


@pytest.fixture(scope="session")
def client(daemon):
    from openai import OpenAI

    return OpenAI(base_url=daemon.url("/v1"), api_key=API_KEY, max_retries=0, timeout=60)


def sse_events(body: bytes):
    """data: payloads of an SSE body."""
    out = []
    for ev in body.decode().split("\n\n"):
        if ev.startswith("data: "):
            out.append(ev[len("data: "):])
    return out


def json_events(body: bytes):
    return [json.loads(e) for e in sse_events(body) if e != "[DONE]"]
