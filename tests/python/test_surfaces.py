"""onebitd on every compute surface, driven by the official `openai` client.

* At temperature 0 the emulated iGPU (`--surface igpu --emulator`) streams exactly the
  CPU's tokens, for several clients at once (batched decode on the device).
* A fault injected through the emulator while several clients stream — a queue hang, a
  device error, or out-of-memory when the slots' buffers are made — never reaches a
  client: the affected streams continue on the CPU from the same KV cache, finish with the
  CPU's very tokens, `/health` reports the degraded surface and `/metrics` counts the
  fallback.

These tests start their own daemons, so they run once, in the CPU pass of run.sh.
"""

import concurrent.futures
import json
import urllib.request

import openai
import pytest

from conftest import API_KEY, MODEL_ID, SURFACE, Daemon, root_args

pytestmark = pytest.mark.skipif(SURFACE != "cpu", reason="starts its own daemons; runs in the cpu pass")

PROMPTS = [
    "Once upon a time",
    "The capital of France is",
    "In the beginning",
    "A list of fruits: apples,",
]
TOKENS = 24


def start(*args):
    d = Daemon(["--api-key", API_KEY, "--metrics", "-np", "4", "--temp", "0", *args] + root_args())
    return d.wait_ready()


def stream(d, prompt):
    """One streamed completion through the openai client: (text, finish_reason)."""
    c = openai.OpenAI(base_url=d.url("/v1"), api_key=API_KEY, max_retries=0, timeout=120)
    text, finish = "", None
    for chunk in c.completions.create(model=MODEL_ID, prompt=prompt, max_tokens=TOKENS, temperature=0,
                                      stream=True):
        text += chunk.choices[0].text
        finish = chunk.choices[0].finish_reason or finish
    return text, finish


def stream_all(d):
    with concurrent.futures.ThreadPoolExecutor(len(PROMPTS)) as ex:
        return list(ex.map(lambda p: stream(d, p), PROMPTS))


def get(d, path):
    req = urllib.request.Request(d.url(path), headers={"Authorization": f"Bearer {API_KEY}"})
    with urllib.request.urlopen(req, timeout=30) as r:
        return r.read().decode()


@pytest.fixture(scope="module")
def cpu_answers():
    # The device surfaces keep an f32 KV cache: the CPU's reference answers use one too.
    d = start("--surface", "cpu", "--kv", "f32")
    try:
        return stream_all(d)
    finally:
        assert d.stop() == 0, d.logs()


def test_igpu_streams_the_cpus_tokens(cpu_answers):
    d = start("--surface", "igpu", "--emulator")
    try:
        assert json.loads(get(d, "/health")) == {"status": "ok", "surface": "igpu"}
        assert json.loads(get(d, "/v1/models"))["data"][0]["meta"]["surface"] == "igpu"
        assert stream_all(d) == cpu_answers
        assert 'onebit:surface_info{surface="igpu",state="ok",failed=""} 1' in get(d, "/metrics")
    finally:
        assert d.stop() == 0, d.logs()


# Step 1 is the warm-up; the hang and the device error strike mid-stream. enomem@3 makes
# the third slot's device buffers fail (the warm-up takes the first session).
@pytest.mark.parametrize("fault", ["hang@6", "device-error@6", "enomem@3"])
def test_a_device_fault_never_reaches_the_clients(cpu_answers, fault):
    d = start("--surface", "igpu", "--emulator", "--emulator-fault", fault, "--device-timeout", "2")
    try:
        assert stream_all(d) == cpu_answers
        health = json.loads(get(d, "/health"))
        metrics = get(d, "/metrics")
        fallbacks = next(float(l.split()[1]) for l in metrics.splitlines()
                         if l.startswith("onebit:surface_fallbacks_total "))
        assert fallbacks >= 1, metrics
        if fault.startswith("enomem"):
            # One slot lives on the CPU; the device still serves the others.
            assert health == {"status": "ok", "surface": "igpu"}
        else:
            assert health["status"] == "degraded", health
            assert health["surface"] == "cpu" and health["failed_surface"] == "igpu"
            assert 'state="degraded",failed="igpu"' in metrics
        assert "continues on the CPU" in d.logs() or "runs on the CPU" in d.logs()
    finally:
        assert d.stop() == 0, d.logs()


@pytest.mark.parametrize("surface", ["npu+igpu", "npu+cpu"])
def test_npu_prefill_streams_the_cpus_tokens(cpu_answers, surface):
    d = start("--surface", surface, "--emulator", "--kv", "f32")
    try:
        assert json.loads(get(d, "/health")) == {"status": "ok", "surface": surface}
        assert stream_all(d) == cpu_answers
    finally:
        assert d.stop() == 0, d.logs()


def test_npu_prefill_without_kernels_says_what_to_do():
    d = Daemon(["--surface", "npu+cpu"] + root_args())
    code = d.proc.wait(60)
    assert code != 0
    assert "kernels/npu" in d.logs(), d.logs()
