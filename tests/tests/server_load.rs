//! onebitd under pressure on the tiny fixture model: many concurrent streams, a full
//! queue (503 + Retry-After), clients that vanish mid-stream, and shutdown with streams
//! in flight. Every loop here is bounded in count and time; traffic stays on loopback.

mod server_support;

use serde_json::{json, Value};
use server_support::*;
use std::io::Write;
use std::time::{Duration, Instant};

macro_rules! server {
    ($opts:expr) => {
        match start($opts) {
            Some(s) => s,
            None => return,
        }
    };
}

/// A server whose engine steps take at least 5 ms: a 400-token request then holds its
/// slot for about two seconds on any machine.
macro_rules! slow_server {
    ($opts:expr) => {
        match start_with_step_delay($opts, Duration::from_millis(5)) {
            Some(s) => s,
            None => return,
        }
    };
}

#[test]
fn many_concurrent_streams_all_complete() {
    let mut o = opts();
    o.slots = 4;
    o.queue = 64;
    let (srv, port) = server!(o);
    let threads: Vec<_> = (0..32)
        .map(|i| {
            std::thread::spawn(move || {
                let body = json!({"messages": [{"role": "user", "content": format!("story {i}")}], "max_tokens": 16,
                                  "temperature": 0.7, "seed": i, "stream": true, "stream_options": {"include_usage": true}});
                let r = post(port, "/v1/chat/completions", &body);
                assert_eq!(r.status, 200, "{}", r.text());
                let ev = r.sse();
                assert_eq!(ev.last().map(String::as_str), Some("[DONE]"));
                let usage: Value = serde_json::from_str(&ev[ev.len() - 2]).unwrap();
                usage["usage"]["completion_tokens"].as_u64().unwrap()
            })
        })
        .collect();
    let total: u64 = threads.into_iter().map(|t| t.join().unwrap()).sum();
    assert!(total > 0);
    assert!(
        metric(port, "onebit:n_busy_slots_per_decode") > 1.0,
        "decode steps should batch several slots"
    );
    assert!(eventually(5, || metric(port, "onebit:requests_processing") == 0.0));
    srv.shutdown();
}

#[test]
fn full_queue_answers_503_with_retry_after() {
    let mut o = opts();
    o.slots = 1;
    o.queue = 0;
    let (srv, port) = slow_server!(o);
    // Occupy the only slot with a long stream.
    let mut r = open_stream(
        port,
        "/v1/completions",
        &json!({"prompt": "a", "max_tokens": 400, "stream": true}),
    );
    assert!(next_chunk(&mut r).is_some());
    let busy = post(
        port,
        "/v1/completions",
        &json!({"prompt": "b", "max_tokens": 2}),
    );
    assert_eq!(busy.status, 503);
    assert!(busy.header("retry-after").is_some());
    assert_eq!(busy.json()["error"]["code"], 503);
    assert!(metric(port, "onebit:requests_rejected_total") >= 1.0);
    drop(r);
    // The slot frees once the client is gone, and the next request is served.
    assert!(eventually(5, || post(
        port,
        "/v1/completions",
        &json!({"prompt": "b", "max_tokens": 2})
    )
    .status
        == 200));
    srv.shutdown();
}

#[test]
fn a_client_that_disconnects_frees_its_slot_at_once() {
    let mut o = opts();
    o.slots = 1;
    o.queue = 4;
    let (srv, port) = slow_server!(o);
    for _ in 0..3 {
        let mut r = open_stream(
            port,
            "/v1/chat/completions",
            &json!({"messages": [{"role": "user", "content": "go"}], "max_tokens": 400, "stream": true}),
        );
        assert!(next_chunk(&mut r).is_some());
        assert!(next_chunk(&mut r).is_some());
        drop(r);
        assert!(
            eventually(3, || metric(port, "onebit:requests_processing") == 0.0),
            "slot not freed after disconnect"
        );
    }
    // A non-streaming client that goes away while waiting is noticed too.
    let mut s = connect(port);
    let body = json!({"prompt": "z", "max_tokens": 400}).to_string();
    write!(s, "POST /v1/completions HTTP/1.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}", body.len()).unwrap();
    assert!(eventually(3, || metric(port, "onebit:requests_processing") == 1.0));
    drop(s);
    assert!(eventually(3, || metric(port, "onebit:requests_processing") == 0.0));
    let t0 = Instant::now();
    assert_eq!(
        post(
            port,
            "/v1/completions",
            &json!({"prompt": "b", "max_tokens": 2})
        )
        .status,
        200
    );
    assert!(t0.elapsed() < Duration::from_secs(5));
    srv.shutdown();
}

#[test]
fn slow_and_silent_clients_do_not_stall_others() {
    let mut o = opts();
    o.limits.request = Duration::from_millis(500);
    let (srv, port) = server!(o);
    // Half a request line, and a body that never comes.
    let mut a = connect(port);
    a.write_all(b"POST /v1/completions HTTP/1.1\r\nContent-Le")
        .unwrap();
    let mut b = connect(port);
    b.write_all(b"POST /v1/completions HTTP/1.1\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{").unwrap();
    let t0 = Instant::now();
    assert_eq!(
        post(
            port,
            "/v1/completions",
            &json!({"prompt": "b", "max_tokens": 2})
        )
        .status,
        200
    );
    assert!(t0.elapsed() < Duration::from_secs(5));
    // The stalled ones are answered 408 once their time is up.
    let ra = read_response(&mut std::io::BufReader::new(a));
    assert_eq!(ra.status, 408);
    let rb = read_response(&mut std::io::BufReader::new(b));
    assert_eq!(rb.status, 408);
    srv.shutdown();
}

#[test]
fn shutdown_cuts_streams_with_a_final_chunk() {
    let mut o = opts();
    o.grace = Duration::from_millis(300);
    o.slots = 1;
    o.queue = 2;
    let (srv, port) = slow_server!(o);
    let mut r = open_stream(
        port,
        "/v1/completions",
        &json!({"prompt": "a", "max_tokens": 480, "stream": true}),
    );
    assert!(next_chunk(&mut r).is_some());
    // A second request waits for the only slot; shutdown turns it away with a 503.
    let queued = std::thread::spawn(move || {
        post(
            port,
            "/v1/completions",
            &json!({"prompt": "b", "max_tokens": 4}),
        )
    });
    assert!(eventually(5, || metric(port, "onebit:requests_deferred") == 1.0));
    let stopper = std::thread::spawn(move || srv.shutdown());
    let q = queued.join().unwrap();
    assert_eq!(q.status, 503, "{}", q.text());
    assert!(q.json()["error"]["message"]
        .as_str()
        .unwrap()
        .contains("shutting down"));
    let mut rest = String::new();
    while let Some(c) = next_chunk(&mut r) {
        rest.push_str(&c);
    }
    stopper.join().unwrap();
    assert!(
        rest.ends_with("data: [DONE]\n\n"),
        "stream must end cleanly: ...{:?}",
        &rest[rest.len().saturating_sub(200)..]
    );
    let last_json = rest
        .split("\n\n")
        .filter(|e| e.starts_with("data: {"))
        .last()
        .unwrap();
    let v: Value = serde_json::from_str(&last_json[6..]).unwrap();
    assert_eq!(v["choices"][0]["finish_reason"], "length");
    let texts = rest.matches("\"text\":").count();
    assert!(
        texts < 470,
        "the stream was cut, not finished ({texts} chunks)"
    );
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
        "no longer accepting"
    );
}

#[test]
fn sse_keeps_quiet_streams_alive_with_comments() {
    let mut o = opts();
    o.slots = 1;
    o.chunk = 1;
    o.sse_ping = Duration::from_millis(20);
    let (srv, port) = server!(o);
    // A long prompt fed one token per step keeps the stream quiet for a while.
    let prompt = "word ".repeat(100);
    let n = post(port, "/tokenize", &json!({"content": prompt})).json()["tokens"]
        .as_array()
        .unwrap()
        .len();
    assert!(n > 100 && n < 500, "{n} prompt tokens");
    let r = post(
        port,
        "/v1/completions",
        &json!({"prompt": prompt, "max_tokens": 1, "stream": true}),
    );
    assert_eq!(r.status, 200);
    let t = r.text();
    assert!(t.ends_with("data: [DONE]\n\n"));
    assert!(
        t.contains(": ping\n\n"),
        "no keep-alive comment on a quiet stream: {t}"
    );
    srv.shutdown();
}

#[test]
fn connections_past_the_limit_get_503_not_a_hang() {
    let mut o = opts();
    o.max_conns = 2;
    let (srv, port) = server!(o);
    let a = connect(port);
    let b = connect(port);
    // Both are open (their threads wait for a request line).
    assert!(eventually(5, || {
        let r = get(port, "/health");
        r.status == 503
            && r.json()["error"]["message"]
                .as_str()
                .unwrap()
                .contains("too many open connections")
    }));
    drop((a, b));
    assert!(eventually(5, || get(port, "/health").status == 200));
    srv.shutdown();
}
