//! onebitd's HTTP API on the tiny fixture model: every route, both generation routes with
//! and without SSE, stop strings, logprobs, prefix reuse, auth, and malformed requests.

mod server_support;

use serde_json::{json, Value};
use server_support::*;

macro_rules! server {
    ($opts:expr) => {
        match start($opts) {
            Some(s) => s,
            None => return,
        }
    };
}

#[test]
fn health_models_props_metrics_tokenize() {
    let (srv, port) = server!(opts());
    let h = get(port, "/health");
    assert_eq!(h.status, 200);
    assert_eq!(h.json(), json!({"status": "ok", "surface": "cpu"}));
    let m = get(port, "/v1/models").json();
    assert_eq!(m["data"][0]["meta"]["surface"], "cpu");
    assert_eq!(m["object"], "list");
    assert_eq!(m["data"][0]["id"], MODEL_ID);
    assert_eq!(m["data"][0]["meta"]["n_ctx_train"], 512);
    assert_eq!(get(port, "/props").json()["total_slots"], 4);

    let t = post(
        port,
        "/tokenize",
        &json!({"content": "hello world", "add_special": true}),
    )
    .json();
    let ids: Vec<u32> = t["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap() as u32)
        .collect();
    assert_eq!(ids[0], 0, "tiny-a's BOS is id 0");
    let d = post(port, "/detokenize", &json!({"tokens": ids[1..]})).json();
    assert_eq!(d["content"], "hello world");
    let p = post(
        port,
        "/tokenize",
        &json!({"content": "hi", "with_pieces": true}),
    )
    .json();
    assert!(p["tokens"][0]["piece"].is_string());

    let metrics = get(port, "/metrics");
    assert_eq!(metrics.status, 200);
    assert!(metrics
        .header("content-type")
        .unwrap()
        .starts_with("text/plain; version=0.0.4"));
    for name in [
        "onebit:prompt_tokens_total",
        "onebit:tokens_predicted_total",
        "onebit:requests_processing",
        "onebit:requests_deferred",
    ] {
        assert!(
            metrics.text().contains(&format!("\n{name} ")),
            "{name} missing"
        );
    }
    srv.shutdown();
}

fn chat(port: u16, extra: Value) -> Value {
    let mut body = json!({"model": MODEL_ID, "messages": [{"role": "user", "content": "Tell me a story"}], "max_tokens": 12, "temperature": 0});
    body.as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    let r = post(port, "/v1/chat/completions", &body);
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()
}

#[test]
fn chat_completion_counts_and_reuses_the_prefix() {
    let (srv, port) = server!(opts());
    let a = chat(port, json!({}));
    assert_eq!(a["object"], "chat.completion");
    assert!(a["id"].as_str().unwrap().starts_with("chatcmpl-"));
    assert_eq!(a["choices"][0]["message"]["role"], "assistant");
    let u = &a["usage"];
    let prompt = u["prompt_tokens"].as_u64().unwrap();
    let completion = u["completion_tokens"].as_u64().unwrap();
    assert_eq!(u["total_tokens"].as_u64().unwrap(), prompt + completion);
    assert!(completion <= 12);
    let fin = a["choices"][0]["finish_reason"].as_str().unwrap();
    assert!(fin == "length" && completion == 12 || fin == "stop", "{a}");

    // Greedy is reproducible, and the second identical request reuses the cached prompt.
    let b = chat(port, json!({}));
    assert_eq!(
        a["choices"][0]["message"]["content"],
        b["choices"][0]["message"]["content"]
    );
    assert_eq!(
        b["usage"]["prompt_tokens_details"]["cached_tokens"]
            .as_u64()
            .unwrap(),
        prompt - 1
    );

    // A follow-up turn re-reads only what is new.
    let reply = a["choices"][0]["message"]["content"].as_str().unwrap();
    let c = chat(
        port,
        json!({"messages": [
            {"role": "user", "content": "Tell me a story"},
            {"role": "assistant", "content": reply},
            {"role": "user", "content": "And then?"}]}),
    );
    let cached = c["usage"]["prompt_tokens_details"]["cached_tokens"]
        .as_u64()
        .unwrap();
    assert!(
        cached >= prompt - 2,
        "follow-up turn should reuse the first turn's prompt: {cached} of {prompt}"
    );
    assert!(metric(port, "onebit:prompt_cached_tokens_total") >= cached as f64);
    srv.shutdown();
}

#[test]
fn streaming_matches_non_streaming_and_ends_with_usage_and_done() {
    let (srv, port) = server!(opts());
    let plain = post(
        port,
        "/v1/completions",
        &json!({"prompt": "Once upon a time", "max_tokens": 16, "temperature": 0}),
    )
    .json();
    let want = plain["choices"][0]["text"].as_str().unwrap().to_string();
    assert_eq!(plain["object"], "text_completion");

    let r = post(
        port,
        "/v1/completions",
        &json!({"prompt": "Once upon a time", "max_tokens": 16, "temperature": 0, "stream": true, "stream_options": {"include_usage": true}}),
    );
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("text/event-stream"));
    let events = r.sse();
    assert_eq!(events.last().unwrap(), "[DONE]");
    let chunks: Vec<Value> = events[..events.len() - 1]
        .iter()
        .map(|e| serde_json::from_str(e).unwrap())
        .collect();
    let id = &chunks[0]["id"];
    let mut text = String::new();
    for c in &chunks {
        assert_eq!(&c["id"], id, "one id per stream");
        assert_eq!(c["object"], "text_completion");
        if let Some(t) = c["choices"][0]["text"].as_str() {
            text.push_str(t);
        }
    }
    assert_eq!(text, want);
    let usage_chunk = chunks.last().unwrap();
    assert_eq!(usage_chunk["choices"], json!([]));
    assert_eq!(
        usage_chunk["usage"]["completion_tokens"],
        plain["usage"]["completion_tokens"]
    );
    let fin = &chunks[chunks.len() - 2]["choices"][0]["finish_reason"];
    assert_eq!(fin, &plain["choices"][0]["finish_reason"]);
    for c in &chunks[..chunks.len() - 1] {
        assert!(c["usage"].is_null(), "usage is null before the last chunk");
    }

    // Chat streams start with the role and carry content deltas.
    let r = post(
        port,
        "/v1/chat/completions",
        &json!({"messages": [{"role": "user", "content": "hi"}], "max_tokens": 5, "stream": true}),
    );
    let ev = r.sse();
    let first: Value = serde_json::from_str(&ev[0]).unwrap();
    assert_eq!(first["object"], "chat.completion.chunk");
    assert_eq!(first["choices"][0]["delta"]["role"], "assistant");
    assert_eq!(ev.last().unwrap(), "[DONE]");
    srv.shutdown();
}

#[test]
fn stop_strings_cut_the_text_and_never_leak() {
    let (srv, port) = server!(opts());
    let base = json!({"prompt": "The", "max_tokens": 24, "temperature": 0});
    let full = post(port, "/v1/completions", &base).json()["choices"][0]["text"]
        .as_str()
        .unwrap()
        .to_string();
    let chars: Vec<char> = full.chars().collect();
    assert!(chars.len() >= 6, "need some text to cut: {full:?}");
    // A stop string from the middle of the greedy output, 3 characters long.
    let start = chars.len() / 2;
    let stop: String = chars[start..start + 3].iter().collect();
    let at = full.find(&stop).unwrap();
    let mut req = base.clone();
    req["stop"] = json!([stop, "never-appears"]);
    let cut = post(port, "/v1/completions", &req).json();
    assert_eq!(cut["choices"][0]["text"], full[..at]);
    assert_eq!(cut["choices"][0]["finish_reason"], "stop");

    req["stream"] = json!(true);
    let ev = post(port, "/v1/completions", &req).sse();
    let mut text = String::new();
    for e in &ev[..ev.len() - 1] {
        let v: Value = serde_json::from_str(e).unwrap();
        text.push_str(v["choices"][0]["text"].as_str().unwrap_or(""));
        assert!(!text.contains(&stop), "stop string leaked into the stream");
    }
    assert_eq!(text, full[..at]);
    srv.shutdown();
}

#[test]
fn logprobs_on_both_routes() {
    let (srv, port) = server!(opts());
    let c = chat(
        port,
        json!({"logprobs": true, "top_logprobs": 3, "max_tokens": 4}),
    );
    let content = c["choices"][0]["logprobs"]["content"].as_array().unwrap();
    assert_eq!(
        content.len() as u64,
        c["usage"]["completion_tokens"].as_u64().unwrap()
    );
    for e in content {
        let top = e["top_logprobs"].as_array().unwrap();
        assert_eq!(top.len(), 3);
        let lps: Vec<f64> = top.iter().map(|t| t["logprob"].as_f64().unwrap()).collect();
        assert!(lps.windows(2).all(|w| w[0] >= w[1]) && lps[0] <= 0.0);
        // Greedy: the chosen token is the most likely one.
        assert!((e["logprob"].as_f64().unwrap() - lps[0]).abs() < 1e-5);
        assert!(e["bytes"].is_array());
    }
    let t = post(
        port,
        "/v1/completions",
        &json!({"prompt": "a", "max_tokens": 3, "temperature": 0, "logprobs": 2}),
    )
    .json();
    let lp = &t["choices"][0]["logprobs"];
    assert_eq!(lp["tokens"].as_array().unwrap().len(), 3);
    assert_eq!(
        lp["top_logprobs"][0].as_object().unwrap().len().min(2),
        lp["top_logprobs"][0].as_object().unwrap().len()
    );
    srv.shutdown();
}

#[test]
fn api_key_guards_everything_but_health() {
    let mut o = opts();
    o.api_key = Some("s3cret".into());
    let (srv, port) = server!(o);
    assert_eq!(get(port, "/health").status, 200);
    let r = get(port, "/v1/models");
    assert_eq!(r.status, 401);
    assert_eq!(r.json()["error"]["type"], "authentication_error");
    assert_eq!(
        request(
            port,
            "GET",
            "/v1/models",
            &[("Authorization", "Bearer nope")],
            b""
        )
        .status,
        401
    );
    assert_eq!(
        request(
            port,
            "GET",
            "/v1/models",
            &[("Authorization", "Bearer s3cret")],
            b""
        )
        .status,
        200
    );
    assert_eq!(get(port, "/metrics").status, 401);
    srv.shutdown();
}

/// Every bad request gets a 4xx with an OpenAI-style error body, and the server keeps
/// serving afterwards.
#[test]
fn malformed_requests_get_openai_errors() {
    let mut o = opts();
    o.limits.max_body = 4096;
    // An unknown model is one of the errors only under --strict-model.
    o.strict_model = true;
    let (srv, port) = server!(o);
    let json_ct = [("Content-Type", "application/json")];
    let post_raw = |path: &str, body: &str| request(port, "POST", path, &json_ct, body.as_bytes());
    let big_prompt = "word ".repeat(800);
    let mut cases: Vec<(&str, Resp, u16)> = vec![
        ("unknown route", get(port, "/v2/nothing"), 404),
        ("wrong method", get(port, "/v1/chat/completions"), 405),
        (
            "wrong method on GET route",
            request(port, "POST", "/health", &json_ct, b"{}"),
            405,
        ),
        (
            "oversized body",
            post_raw(
                "/v1/completions",
                &format!("{{\"prompt\":\"{}\"}}", "x".repeat(5000)),
            ),
            413,
        ),
        (
            "wrong content type",
            request(
                port,
                "POST",
                "/v1/completions",
                &[("Content-Type", "text/plain")],
                b"{\"prompt\":\"a\"}",
            ),
            415,
        ),
        (
            "form body",
            request(
                port,
                "POST",
                "/tokenize",
                &[("Content-Type", "application/x-www-form-urlencoded")],
                b"content=a",
            ),
            415,
        ),
        (
            "HTTP garbage",
            raw(port, b"\x16\x03\x01 hello\r\n\r\n"),
            400,
        ),
        (
            // RFC 9110: 505 names exactly what is wrong.
            "HTTP/2 preface",
            raw(port, b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"),
            505,
        ),
        (
            "bad content-length",
            raw(
                port,
                b"POST /v1/completions HTTP/1.1\r\nContent-Length: abc\r\n\r\n",
            ),
            400,
        ),
    ];
    for route in [
        "/v1/chat/completions",
        "/v1/completions",
        "/tokenize",
        "/detokenize",
    ] {
        cases.push(("malformed JSON", post_raw(route, "{\"prompt\": "), 400));
        cases.push(("empty body", post_raw(route, ""), 400));
        cases.push(("JSON array", post_raw(route, "[1,2]"), 400));
    }
    let msgs = r#""messages":[{"role":"user","content":"hi"}]"#;
    for (what, body, status) in [
        ("unknown model", format!(r#"{{"model":"gpt-17",{msgs}}}"#), 404),
        ("negative max_tokens", format!(r#"{{"max_tokens":-3,{msgs}}}"#), 400),
        ("huge max_tokens", format!(r#"{{"max_tokens":99999999999,{msgs}}}"#), 400),
        ("max_tokens past the context", format!(r#"{{"max_tokens":510,{msgs}}}"#), 400),
        ("string max_tokens", format!(r#"{{"max_tokens":"ten",{msgs}}}"#), 400),
        ("empty messages", r#"{"messages":[]}"#.to_string(), 400),
        ("messages missing", r#"{"prompt":"x"}"#.to_string(), 400),
        ("bad role", r#"{"messages":[{"role":"robot","content":"x"}]}"#.to_string(), 400),
        ("image part", r#"{"messages":[{"role":"user","content":[{"type":"image_url","image_url":{"url":"x"}}]}]}"#.to_string(), 400),
        ("temperature NaN-ish", format!(r#"{{"temperature":-1,{msgs}}}"#), 400),
        ("top_logprobs too many", format!(r#"{{"logprobs":true,"top_logprobs":50,{msgs}}}"#), 400),
        ("n > 1", format!(r#"{{"n":2,{msgs}}}"#), 400),
    ] {
        cases.push((what, post_raw("/v1/chat/completions", &body), status));
    }
    for (what, body, status) in [
        (
            "prompt over the context",
            format!(r#"{{"prompt":"{big_prompt}"}}"#),
            400,
        ),
        (
            "token ids out of range",
            r#"{"prompt":[1,2,999999]}"#.to_string(),
            400,
        ),
        ("empty token prompt", r#"{"prompt":[]}"#.to_string(), 400),
        ("prompt list", r#"{"prompt":["a","b"]}"#.to_string(), 400),
        (
            "stop not a string",
            r#"{"prompt":"a","stop":5}"#.to_string(),
            400,
        ),
        (
            "logprobs too many",
            r#"{"prompt":"a","logprobs":99}"#.to_string(),
            400,
        ),
    ] {
        cases.push((what, post_raw("/v1/completions", &body), status));
    }
    let deep = format!(r#"{{"prompt":{}{}}}"#, "[".repeat(2000), "]".repeat(2000));
    cases.push((
        "deeply nested JSON",
        post_raw("/v1/completions", &deep),
        400,
    ));
    cases.push((
        "detokenize bad id",
        post_raw("/detokenize", r#"{"tokens":[-1]}"#),
        400,
    ));
    cases.push((
        "tokenize without content",
        post_raw("/tokenize", r#"{"text":"a"}"#),
        400,
    ));

    for (what, r, status) in &cases {
        assert_eq!(
            r.status,
            *status,
            "{what}: {}",
            String::from_utf8_lossy(&r.body)
        );
        let e = r.json();
        let err = &e["error"];
        assert!(
            err["message"].as_str().is_some_and(|m| !m.is_empty()),
            "{what}: {e}"
        );
        assert_eq!(err["code"], *status, "{what}");
        assert!(err["type"].is_string(), "{what}");
    }
    // Still healthy and still generating.
    assert_eq!(get(port, "/health").status, 200);
    assert_eq!(
        chat(port, json!({"max_tokens": 2}))["usage"]["completion_tokens"],
        2
    );
    srv.shutdown();
}

#[test]
fn keep_alive_serves_several_requests_on_one_connection() {
    let (srv, port) = server!(opts());
    let s = connect(port);
    let mut r = std::io::BufReader::new(s.try_clone().unwrap());
    let mut w = s;
    use std::io::Write;
    for _ in 0..3 {
        let body = json!({"prompt": "x", "max_tokens": 2}).to_string();
        write!(w, "POST /v1/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}", body.len()).unwrap();
        let resp = read_response(&mut r);
        assert_eq!(resp.status, 200);
        assert_eq!(resp.header("connection"), Some("keep-alive"));
    }
    // Expect: 100-continue (curl sends it for larger bodies) gets its interim answer.
    let body = json!({"content": "hello"}).to_string();
    write!(w, "POST /tokenize HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nExpect: 100-continue\r\nContent-Length: {}\r\n\r\n", body.len()).unwrap();
    let cont = read_response(&mut r);
    assert_eq!(cont.status, 100);
    w.write_all(body.as_bytes()).unwrap();
    assert_eq!(read_response(&mut r).status, 200);
    srv.shutdown();
}

#[test]
fn unix_socket_listener() {
    let Some(path) = onebit_tests::fixture("tiny-a/tiny-a.i2_s.gguf") else {
        return;
    };
    let (model, tok) = onebit_engine::format::load(&path).unwrap();
    let n = model.config.vocab_size;
    let info = onebit_engine::server::backend::ModelInfo::new(
        &model,
        "m".into(),
        model.config.max_context,
        n,
    );
    let backend = onebit_engine::backend::cpu::CpuBackend::new(std::sync::Arc::new(model), 0);
    let vocab = std::sync::Arc::new(onebit_engine::server::engine::EngineVocab::new(
        std::sync::Arc::new(tok),
        n,
    ));
    // A directory of its own: started as root, onebitd refuses one others may write (/tmp).
    let dir = std::env::temp_dir().join(format!("onebitd-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let sock = dir.join("api.sock");
    let l = onebit_engine::server::listen::Listener::bind(sock.to_str().unwrap(), 0).unwrap();
    let srv = onebit_engine::server::Server::start(opts(), vec![l]).unwrap();
    // Before the model is ready: 503 "Loading model", as llama-server answers.
    let ask = |req: &str| {
        use std::io::Write;
        let mut s = std::os::unix::net::UnixStream::connect(&sock).unwrap();
        s.write_all(req.as_bytes()).unwrap();
        read_response(&mut std::io::BufReader::new(s))
    };
    let loading = ask("GET /health HTTP/1.1\r\nConnection: close\r\n\r\n");
    assert_eq!(loading.status, 503);
    assert_eq!(loading.json()["error"]["message"], "Loading model");
    assert!(loading.header("retry-after").is_some());
    assert_eq!(
        ask("GET /v1/models HTTP/1.1\r\nConnection: close\r\n\r\n").status,
        503
    );
    srv.set_ready(backend, vocab, info).unwrap();
    assert_eq!(
        ask("GET /health HTTP/1.1\r\nConnection: close\r\n\r\n").status,
        200
    );
    let body = r#"{"prompt":"hi","max_tokens":3}"#;
    let r = ask(&format!("POST /v1/completions HTTP/1.1\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}", body.len()));
    assert_eq!(r.json()["usage"]["completion_tokens"], 3);
    srv.shutdown();
    assert!(!sock.exists(), "the socket file is removed at shutdown");
    let _ = std::fs::remove_dir(&dir);
}

#[test]
fn http10_clients_get_an_unchunked_stream_ended_by_close() {
    let (srv, port) = server!(opts());
    use std::io::{Read, Write};
    let mut s = connect(port);
    let body = json!({"prompt": "x", "max_tokens": 3, "stream": true}).to_string();
    write!(s, "POST /v1/completions HTTP/1.0\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}", body.len()).unwrap();
    let mut all = String::new();
    s.read_to_string(&mut all).unwrap();
    let (head, body) = all.split_once("\r\n\r\n").unwrap();
    assert!(
        head.contains("Connection: close") && !head.contains("chunked"),
        "{head}"
    );
    assert!(
        body.starts_with("data: {") && body.ends_with("data: [DONE]\n\n"),
        "{body:?}"
    );
    srv.shutdown();
}

/// Reads one response, then checks that the server closed the connection after it.
fn response_then_close(s: std::net::TcpStream) -> Resp {
    use std::io::Read;
    let mut r = std::io::BufReader::new(s);
    let resp = read_response(&mut r);
    let mut rest = Vec::new();
    r.read_to_end(&mut rest).unwrap();
    assert!(
        rest.is_empty(),
        "connection stayed open: {:?}",
        String::from_utf8_lossy(&rest)
    );
    resp
}

/// Without the key a client gets its 401 from the request head: no `100 Continue`, no
/// body read, and the connection is closed after the answer.
#[test]
fn unauthenticated_requests_are_refused_before_the_body_and_closed() {
    use std::io::Write;
    let mut o = opts();
    o.api_key = Some("s3cret".into());
    let (srv, port) = server!(o);
    let mut s = connect(port);
    s.write_all(b"POST /v1/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nExpect: 100-continue\r\nContent-Length: 60000\r\n\r\n").unwrap();
    let r = response_then_close(s);
    assert_eq!(r.status, 401, "the key is checked before 100 Continue");
    assert_eq!(r.header("connection"), Some("close"));

    // A keep-alive request with a wrong key is answered and the connection closed.
    let mut s = connect(port);
    s.write_all(
        b"GET /v1/models HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer s3cre\r\n\r\n",
    )
    .unwrap();
    assert_eq!(response_then_close(s).status, 401);

    // The key in X-Api-Key works too, and /health needs none.
    let r = request(port, "GET", "/v1/models", &[("X-Api-Key", "s3cret")], b"");
    assert_eq!(r.status, 200);
    assert_eq!(get(port, "/health").status, 200);
    srv.shutdown();
}

/// A web page on another site can make a browser send a form or a `text/plain` POST to
/// a keyless onebitd, or rebind its own name to 127.0.0.1: neither is served.
#[test]
fn cross_site_requests_are_refused() {
    let mut o = opts();
    o.allowed_hosts = vec!["llm.example.org".into()];
    let (srv, port) = server!(o);
    let body = br#"{"prompt":"a","max_tokens":1}"#;
    for (what, ct) in [
        ("no Content-Type", None),
        ("text/plain", Some("text/plain")),
        ("form", Some("application/x-www-form-urlencoded")),
        ("multipart", Some("multipart/form-data; boundary=x")),
    ] {
        let h: Vec<(&str, &str)> = ct.map(|c| ("Content-Type", c)).into_iter().collect();
        let r = request(port, "POST", "/v1/completions", &h, body);
        assert_eq!(r.status, 415, "{what}: {}", r.text());
    }
    let ask = |host: &str| {
        raw(
            port,
            format!(
                "POST /v1/completions HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{}",
                body.len(),
                String::from_utf8_lossy(body)
            )
            .as_bytes(),
        )
        .status
    };
    assert_eq!(ask("attacker.example:8080"), 421, "DNS rebinding");
    assert_eq!(ask("localhost.attacker.example"), 421);
    assert_eq!(ask(&format!("127.0.0.1:{port}")), 200);
    assert_eq!(ask(&format!("localhost:{port}")), 200);
    assert_eq!(ask("LLM.example.org"), 200, "--allowed-host");
    srv.shutdown();
}

/// Text longer than the context could hold is refused from its length, before it is
/// tokenized (tokenizing takes far more memory than the text); text that fits is
/// tokenized as before, with or without pieces.
#[test]
fn text_that_cannot_fit_is_refused_before_tokenizing() {
    let (srv, port) = server!(opts());
    let long = "x".repeat(60_000);
    for (path, body) in [
        ("/tokenize", json!({"content": long, "with_pieces": true})),
        ("/v1/completions", json!({"prompt": long})),
        (
            "/v1/chat/completions",
            json!({"messages": [{"role": "user", "content": long}]}),
        ),
    ] {
        let r = post(port, path, &body);
        assert_eq!(r.status, 400, "{path}: {}", r.text());
        let msg = r.json()["error"]["message"].as_str().unwrap().to_string();
        assert!(
            msg.contains("60000 bytes") && msg.contains("context_length_exceeded"),
            "{path}: {msg}"
        );
    }
    let ids = post(port, "/tokenize", &json!({"content": "héllo wörld 🦀"})).json();
    let with = post(
        port,
        "/tokenize",
        &json!({"content": "héllo wörld 🦀", "with_pieces": true}),
    )
    .json();
    let ids: Vec<&Value> = ids["tokens"].as_array().unwrap().iter().collect();
    let pieces = with["tokens"].as_array().unwrap();
    assert_eq!(ids.len(), pieces.len());
    let mut bytes = Vec::new();
    for (id, p) in ids.iter().zip(pieces) {
        assert_eq!(*id, &p["id"]);
        match &p["piece"] {
            Value::String(s) => bytes.extend_from_slice(s.as_bytes()),
            Value::Array(b) => bytes.extend(b.iter().map(|x| x.as_u64().unwrap() as u8)),
            other => panic!("piece {other}"),
        }
    }
    assert_eq!(String::from_utf8(bytes).unwrap(), "héllo wörld 🦀");
    srv.shutdown();
}

#[test]
fn speculating_slots_report_drafted_and_accepted_tokens() {
    use onebit_engine::speculate::{Mode, SpecOptions};
    let plain = {
        let (srv, port) = server!(opts());
        let body = json!({"prompt": [0, 71, 87, 71, 553, 71, 87, 71, 553, 71], "max_tokens": 24, "temperature": 0});
        let r = post(port, "/v1/completions", &body).json();
        srv.shutdown();
        r
    };
    let mut o = opts();
    o.speculate = SpecOptions {
        always: true,
        ..SpecOptions::new(Mode::Lookup)
    };
    let (srv, port) = server!(o);
    let body = json!({"prompt": [0, 71, 87, 71, 553, 71, 87, 71, 553, 71], "max_tokens": 24, "temperature": 0});
    let r = post(port, "/v1/completions", &body).json();
    // Greedy speculation gives the same text.
    assert_eq!(r["choices"][0]["text"], plain["choices"][0]["text"]);
    let d = &r["usage"]["completion_tokens_details"];
    let (drafted, accepted) = (
        d["drafted_tokens"].as_u64().unwrap(),
        d["accepted_prediction_tokens"].as_u64().unwrap(),
    );
    assert!(drafted > 0, "{r}");
    assert_eq!(
        d["rejected_prediction_tokens"].as_u64().unwrap(),
        drafted - accepted
    );
    assert_eq!(r["timings"]["draft_n"].as_u64().unwrap(), drafted);
    let metrics = get(port, "/metrics").text();
    assert!(
        metrics.contains(&format!("\nonebit:draft_tokens_total {drafted}\n")),
        "{metrics}"
    );
    assert!(metrics.contains(&format!(
        "\nonebit:draft_tokens_accepted_total {accepted}\n"
    )));
    assert!(metrics.contains("\nonebit:draft_acceptance_rate "));
    srv.shutdown();
}
