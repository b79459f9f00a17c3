"""onebitd as systemd runs it: socket activation, sd_notify readiness, SIGTERM with a
stream in flight, privilege drop, env twins of flags, journald-style logs."""

import json
import os
import re
import shutil
import signal
import socket
import tempfile
import time
import urllib.error
import urllib.request

import pytest

from conftest import BIN, LOG_DIR, MODEL, SURFACE, Daemon, as_root, free_port, root_args

pytestmark = pytest.mark.skipif(not BIN or not MODEL, reason="ONEBITD and ONEBIT_TEST_MODEL are not set (run tests/python/run.sh)")


def get_json(url):
    with urllib.request.urlopen(url, timeout=10) as r:
        return json.loads(r.read())


def test_socket_activation_and_notify():
    if not shutil.which("systemd-socket-activate"):
        pytest.skip("systemd-socket-activate is not installed")
    notify_dir = tempfile.mkdtemp(dir=LOG_DIR.name)
    notify_path = os.path.join(notify_dir, "notify")
    rx = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    rx.bind(notify_path)
    rx.settimeout(30)
    port = free_port()
    # systemd-socket-activate binds the socket and passes it as fd 3 with LISTEN_FDS/LISTEN_PID.
    d = Daemon(root_args() + ["--metrics"], env={"NOTIFY_SOCKET": notify_path, "JOURNAL_STREAM": "8:1234", "WATCHDOG_USEC": "200000"},
               prefix=["systemd-socket-activate", "-l", f"127.0.0.1:{port}",
                       "-E", "NOTIFY_SOCKET", "-E", "JOURNAL_STREAM", "-E", "WATCHDOG_USEC"],
               port=port)
    try:
        # systemd-socket-activate binds, then starts onebitd on the first connection.
        deadline = time.time() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=30).close()
                break
            except ConnectionRefusedError:
                assert time.time() < deadline, d.logs()
                time.sleep(0.05)
        messages = []
        deadline = time.time() + 30
        while not any("READY=1" in m for m in messages) and time.time() < deadline:
            messages.append(rx.recv(4096).decode())
        assert any(m.startswith("STATUS=loading") for m in messages), messages
        assert any("READY=1" in m for m in messages), messages
        d.wait_ready()
        assert get_json(d.url("/health")) == {"status": "ok", "surface": SURFACE}
        # WATCHDOG_USEC=200ms: an idle engine pings every 100 ms.
        rx.settimeout(30)
        assert "WATCHDOG=1" in rx.recv(4096).decode()
        assert d.stop() == 0
        rest = []
        while not any("STOPPING=1" in m for m in rest):
            rest.append(rx.recv(4096).decode())
        logs = d.logs()
        assert "using sockets passed by systemd" in logs, logs
        # Under journald, no timestamps: the journal adds its own.
        assert not re.search(r"^\d{4}-\d\d-\d\dT", logs, re.M), logs
    finally:
        rx.close()
        d.stop()


def test_sigterm_finishes_the_stream_and_exits_zero():
    d = Daemon(root_args() + ["--shutdown-grace", "0.5"]).wait_ready()
    body = json.dumps({"prompt": "a", "max_tokens": 400, "stream": True}).encode()
    req = urllib.request.Request(d.url("/v1/completions"), body, {"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as r:
        r.readline()
        d.proc.send_signal(signal.SIGTERM)
        rest = r.read().decode()
    assert rest.rstrip().endswith("data: [DONE]"), rest[-300:]
    assert d.proc.wait(30) == 0, d.logs()
    # Stopped accepting.
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", d.port), timeout=2).close()


def test_flags_win_over_env_twins():
    d = Daemon(root_args() + ["--alias", "from-flag"], env={"ONEBIT_ARG_ALIAS": "from-env", "ONEBIT_ARG_PARALLEL": "2"}).wait_ready()
    try:
        assert get_json(d.url("/v1/models"))["data"][0]["id"] == "from-flag"
        assert get_json(d.url("/props"))["total_slots"] == 2
    finally:
        assert d.stop() == 0
    d = Daemon(root_args(), env={"ONEBIT_ARG_ALIAS": "from-env", "ONEBIT_API_KEY": "k"}).wait_ready()
    try:
        with pytest.raises(urllib.error.HTTPError) as e:
            get_json(d.url("/v1/models"))
        assert e.value.code == 401
        req = urllib.request.Request(d.url("/v1/models"), headers={"Authorization": "Bearer k"})
        with urllib.request.urlopen(req, timeout=10) as r:
            assert json.loads(r.read())["data"][0]["id"] == "from-env"
    finally:
        assert d.stop() == 0


def test_strict_model_and_no_webui_from_their_env_twins():
    import openai
    d = Daemon(root_args(), env={"ONEBIT_ARG_STRICT_MODEL": "true", "ONEBIT_ARG_NO_WEBUI": "true"}).wait_ready()
    try:
        client = openai.OpenAI(base_url=d.url("/v1"), api_key="none", max_retries=0)
        with pytest.raises(openai.NotFoundError) as e:
            client.chat.completions.create(model="gpt-nonexistent", messages=[{"role": "user", "content": "hi"}])
        assert "gpt-nonexistent" in str(e.value)
        with pytest.raises(urllib.error.HTTPError) as e:
            urllib.request.urlopen(d.url("/"), timeout=10)
        assert e.value.code == 404
    finally:
        assert d.stop() == 0


@pytest.mark.skipif(not as_root(), reason="privilege drop needs root")
def test_root_drops_privileges_or_refuses():
    d = Daemon(["--user", "nobody"]).wait_ready()
    try:
        with open(f"/proc/{d.proc.pid}/status") as f:
            uids = next(line for line in f if line.startswith("Uid:")).split()[1:]
        assert uids == ["65534"] * 4, uids
    finally:
        assert d.stop() == 0
    d = Daemon(["--user", "no-such-user-onebit"])
    assert d.proc.wait(60) != 0
    assert "does not exist" in d.logs()
