"""onebitd driven by clients no one here wrote: the official `openai` package and curl."""

import concurrent.futures
import json
import subprocess

import openai
import pytest

from conftest import API_KEY, MODEL_ID, SURFACE, json_events, sse_events

MSGS = [{"role": "user", "content": "Tell me something."}]


def test_models(client):
    ids = [m.id for m in client.models.list()]
    assert ids == [MODEL_ID]


def test_chat_completion(client):
    r = client.chat.completions.create(model=MODEL_ID, messages=MSGS, max_tokens=10, temperature=0)
    assert r.object == "chat.completion"
    choice = r.choices[0]
    assert choice.message.role == "assistant"
    assert isinstance(choice.message.content, str)
    assert choice.finish_reason in ("stop", "length")
    assert r.usage.completion_tokens <= 10
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens
    if choice.finish_reason == "length":
        assert r.usage.completion_tokens == 10
    # A repeated prompt is served from the slot's KV cache.
    r2 = client.chat.completions.create(model=MODEL_ID, messages=MSGS, max_tokens=10, temperature=0)
    assert r2.choices[0].message.content == choice.message.content
    assert r2.usage.prompt_tokens_details.cached_tokens >= r.usage.prompt_tokens - 1


def test_completion_with_llama_cpp_parameters(client):
    r = client.completions.create(
        model=MODEL_ID,
        prompt="Once upon a time",
        max_tokens=8,
        temperature=0.7,
        top_p=0.9,
        seed=42,
        presence_penalty=0.5,
        frequency_penalty=0.5,
        extra_body={"top_k": 20, "min_p": 0.05, "repetition_penalty": 1.1},
    )
    assert r.object == "text_completion"
    again = client.completions.create(
        model=MODEL_ID,
        prompt="Once upon a time",
        max_tokens=8,
        temperature=0.7,
        top_p=0.9,
        seed=42,
        presence_penalty=0.5,
        frequency_penalty=0.5,
        extra_body={"top_k": 20, "min_p": 0.05, "repetition_penalty": 1.1},
    )
    assert r.choices[0].text == again.choices[0].text, "a fixed seed reproduces the output"


def test_chat_stream_with_usage_matches_non_stream(client):
    plain = client.chat.completions.create(model=MODEL_ID, messages=MSGS, max_tokens=16, temperature=0)
    stream = client.chat.completions.create(
        model=MODEL_ID, messages=MSGS, max_tokens=16, temperature=0, stream=True, stream_options={"include_usage": True}
    )
    text, finish, usage, ids = "", None, None, set()
    for chunk in stream:
        ids.add(chunk.id)
        if chunk.usage is not None:
            usage = chunk.usage
            assert chunk.choices == []
            continue
        delta = chunk.choices[0].delta
        text += delta.content or ""
        finish = chunk.choices[0].finish_reason or finish
    assert len(ids) == 1
    assert text == plain.choices[0].message.content
    assert finish == plain.choices[0].finish_reason
    assert usage.completion_tokens == plain.usage.completion_tokens


def test_completion_stream(client):
    plain = client.completions.create(model=MODEL_ID, prompt="The cat", max_tokens=12, temperature=0)
    text = "".join(c.choices[0].text for c in client.completions.create(
        model=MODEL_ID, prompt="The cat", max_tokens=12, temperature=0, stream=True) if c.choices)
    assert text == plain.choices[0].text


def test_stop_strings(client):
    full = client.completions.create(model=MODEL_ID, prompt="The", max_tokens=24, temperature=0).choices[0].text
    assert len(full) >= 6, full
    stop = full[len(full) // 2: len(full) // 2 + 3]
    want = full[: full.find(stop)]
    r = client.completions.create(model=MODEL_ID, prompt="The", max_tokens=24, temperature=0, stop=[stop, "zzzz"])
    assert r.choices[0].text == want
    assert r.choices[0].finish_reason == "stop"
    streamed = ""
    for c in client.completions.create(model=MODEL_ID, prompt="The", max_tokens=24, temperature=0, stop=stop, stream=True):
        if c.choices:
            streamed += c.choices[0].text
            assert stop not in streamed
    assert streamed == want


def test_chat_logprobs(client):
    r = client.chat.completions.create(model=MODEL_ID, messages=MSGS, max_tokens=4, temperature=0, logprobs=True, top_logprobs=2)
    content = r.choices[0].logprobs.content
    assert len(content) == r.usage.completion_tokens
    for tok in content:
        assert tok.logprob <= 0
        assert len(tok.top_logprobs) == 2
        assert tok.top_logprobs[0].logprob >= tok.top_logprobs[1].logprob


def test_many_concurrent_streams(client):
    def one(i):
        s = client.chat.completions.create(
            model=MODEL_ID, messages=[{"role": "user", "content": f"Story {i}"}], max_tokens=12,
            temperature=0.8, seed=i, stream=True, stream_options={"include_usage": True})
        usage = None
        for chunk in s:
            if chunk.usage:
                usage = chunk.usage
        return usage.completion_tokens

    with concurrent.futures.ThreadPoolExecutor(16) as ex:
        counts = list(ex.map(one, range(16)))
    assert len(counts) == 16 and all(c >= 1 for c in counts)


def test_unknown_model_names_are_served_by_the_loaded_model(client):
    # As llama-server: the model name is a label; the one model loaded answers (and says so).
    r = client.chat.completions.create(model="gpt-nonexistent", messages=MSGS, max_tokens=3)
    assert r.model == MODEL_ID and r.usage.completion_tokens >= 1


def test_errors_map_to_openai_exceptions(client, daemon):
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model=MODEL_ID, messages=MSGS, max_tokens=-5)
    assert "max_tokens" in str(e.value)
    with pytest.raises(openai.BadRequestError):
        client.completions.create(model=MODEL_ID, prompt="word " * 2000)
    bad = openai.OpenAI(base_url=daemon.url("/v1"), api_key="wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        bad.models.list()


def curl(*args):
    return subprocess.run(["curl", "-sS", "--max-time", "60", *args], capture_output=True, check=True).stdout


def test_curl(daemon):
    assert json.loads(curl(daemon.url("/health"))) == {"status": "ok", "surface": SURFACE}
    auth = ["-H", f"Authorization: Bearer {API_KEY}"]
    body = json.dumps({"model": MODEL_ID, "messages": MSGS, "max_tokens": 6, "stream": True,
                       "stream_options": {"include_usage": True}})
    out = curl("-N", *auth, "-H", "Content-Type: application/json", "-d", body, daemon.url("/v1/chat/completions"))
    events = sse_events(out)
    assert events[-1] == "[DONE]"
    chunks = json_events(out)
    assert chunks[-1]["usage"]["completion_tokens"] >= 1
    # A big body makes curl send Expect: 100-continue.
    big = json.dumps({"model": MODEL_ID, "prompt": "a " * 300, "max_tokens": 2})
    r = json.loads(curl(*auth, "-H", "Content-Type: application/json", "-d", big, daemon.url("/v1/completions")))
    assert r["usage"]["completion_tokens"] == 2
    # curl -d without a JSON content type is a form post: 415 with an OpenAI error body.
    code = curl(*auth, "-o", "/dev/null", "-w", "%{http_code}", "-d", "{}", daemon.url("/v1/completions"))
    assert code == b"415"
    tok = json.loads(curl(*auth, "-H", "Content-Type: application/json", "-d", '{"content":"hello"}', daemon.url("/tokenize")))
    text = json.loads(curl(*auth, "-H", "Content-Type: application/json", "-d", json.dumps({"tokens": tok["tokens"]}),
                           daemon.url("/detokenize")))
    assert text["content"] == "hello"
    metrics = curl(*auth, daemon.url("/metrics")).decode()
    for name in ("onebit:prompt_tokens_total", "onebit:tokens_predicted_total", "onebit:requests_processing",
                 "onebit:requests_deferred", "onebit:time_to_first_token_seconds_bucket",
                 "onebit:inter_token_latency_seconds_bucket"):
        assert name in metrics
