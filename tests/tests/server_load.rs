//! onebitd under pressure on the tiny fixture model: many concurrent streams, a full
//! queue (503 + Retry-After), clients that vanish mid-stream, and shutdown with streams
//! in flight. Every loop here is bounded in count and time; traffic stays on loopback.

mod server_support;

use serde_json::{json, Value};
use server_support::*;
use std::io::Write;
use std::time::Duration;

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
    // All 32 requests arrive before the engine's first step ends, so the four slots stay
    // full while the queue drains and decode steps must batch them.
    let gate = Gate::shut();
    let (srv, port) = match start_gated(o, gate.clone()) {
        Some(s) => s,
        None => return,
    };
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
    // Every request is in a slot or waiting while the engine is held in its first step;
    // once it goes on, the slots fill from the queue and stay full until it drains.
    assert!(eventually(30, || metric(
        port,
        "onebit:requests_processing"
    ) + metric(
        port,
        "onebit:requests_deferred"
    ) == 32.0));
    gate.open();
    let total: u64 = threads.into_iter().map(|t| t.join().unwrap()).sum();
    assert!(total > 0);
    assert!(
        metric(port, "onebit:n_busy_slots_per_decode") > 1.0,
        "decode steps should batch several slots"
    );
    assert!(eventually(30, || metric(
        port,
        "onebit:requests_processing"
    ) == 0.0));
    srv.shutdown();
}

#[test]
fn full_queue_answers_503_with_retry_after() {
    let mut o = opts();
    o.slots = 1;
    o.queue = 0;
    // The engine is held, so the first request keeps the only slot until the gate opens.
    let gate = Gate::shut();
    let (srv, port) = match start_gated(o, gate.clone()) {
        Some(s) => s,
        None => return,
    };
    // The response head is written once the job is queued.
    let r = open_stream(
        port,
        "/v1/completions",
        &json!({"prompt": "a", "max_tokens": 400, "stream": true}),
    );
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
    gate.open();
    // The slot frees once the client is gone, and the next request is served.
    assert!(eventually(30, || post(
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
            eventually(30, || metric(port, "onebit:requests_processing") == 0.0),
            "slot not freed after disconnect"
        );
    }
    // A non-streaming client that goes away while waiting is noticed too.
    let mut s = connect(port);
    let body = json!({"prompt": "z", "max_tokens": 400}).to_string();
    write!(s, "POST /v1/completions HTTP/1.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}", body.len()).unwrap();
    assert!(eventually(30, || metric(
        port,
        "onebit:requests_processing"
    ) == 1.0));
    drop(s);
    assert!(eventually(30, || metric(
        port,
        "onebit:requests_processing"
    ) == 0.0));
    assert_eq!(
        post(
            port,
            "/v1/completions",
            &json!({"prompt": "b", "max_tokens": 2})
        )
        .status,
        200
    );
    srv.shutdown();
}

#[test]
fn slow_and_silent_clients_do_not_stall_others() {
    let mut o = opts();
    o.limits.request = Duration::from_secs(3);
    let (srv, port) = server!(o);
    // Half a request line, and a body that never comes.
    let mut a = connect(port);
    a.write_all(b"POST /v1/completions HTTP/1.1\r\nContent-Le")
        .unwrap();
    let mut b = connect(port);
    b.write_all(b"POST /v1/completions HTTP/1.1\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{").unwrap();
    assert_eq!(
        post(
            port,
            "/v1/completions",
            &json!({"prompt": "b", "max_tokens": 2})
        )
        .status,
        200
    );
    // The good request was answered while the stalled ones were still waiting for their
    // request to arrive (no answer on them yet)...
    for s in [&a, &b] {
        s.set_nonblocking(true).unwrap();
        let mut byte = [0u8; 1];
        assert!(
            matches!(s.peek(&mut byte), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
            "a stalled connection was answered before the good request"
        );
        s.set_nonblocking(false).unwrap();
    }
    // ...and the stalled ones are answered 408 once their time is up.
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
    assert!(eventually(30, || metric(port, "onebit:requests_deferred") == 1.0));
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
    o.sse_ping = Duration::from_millis(20);
    // The engine is held before its first step: the stream has nothing to say until the
    // gate opens, however fast this machine is, so the next thing on it must be a ping.
    let gate = Gate::shut();
    let (srv, port) = match start_gated(o, gate.clone()) {
        Some(s) => s,
        None => return,
    };
    let mut r = open_stream(
        port,
        "/v1/completions",
        &json!({"prompt": "word word word", "max_tokens": 2, "stream": true}),
    );
    let first = next_chunk(&mut r).expect("a chunk while the engine is held");
    assert_eq!(
        first, ": ping\n\n",
        "no keep-alive comment on a quiet stream"
    );
    gate.open();
    let mut rest = String::new();
    while let Some(c) = next_chunk(&mut r) {
        rest.push_str(&c);
    }
    assert!(rest.contains("data: {"), "{rest}");
    assert!(rest.ends_with("data: [DONE]\n\n"), "{rest}");
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
    assert!(eventually(30, || {
        let r = get(port, "/health");
        r.status == 503
            && r.json()["error"]["message"]
                .as_str()
                .unwrap()
                .contains("too many open connections")
    }));
    drop((a, b));
    assert!(eventually(30, || get(port, "/health").status == 200));
    srv.shutdown();
}

/// A TCP connection from `source` (a loopback address other than 127.0.0.1 stands for
/// another client).
fn connect_from(source: [u8; 4], port: u16) -> std::net::TcpStream {
    use std::os::fd::FromRawFd;
    let sin = |ip: [u8; 4], port: u16| libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: port.to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from_ne_bytes(ip),
        },
        sin_zero: [0; 8],
    };
    let len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
    // SAFETY: plain socket calls on a fd this function owns; the addresses are valid
    // sockaddr_in values that live across each call.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        assert!(fd >= 0);
        let src = sin(source, 0);
        assert_eq!(
            libc::bind(fd, (&src as *const libc::sockaddr_in).cast(), len),
            0
        );
        let dst = sin([127, 0, 0, 1], port);
        assert_eq!(
            libc::connect(fd, (&dst as *const libc::sockaddr_in).cast(), len),
            0
        );
        std::net::TcpStream::from_raw_fd(fd)
    }
}

/// One client holding idle connections cannot take all of `max_conns`: another client
/// is still served.
#[test]
fn one_client_cannot_hold_every_connection() {
    let mut o = opts();
    o.max_conns = 4;
    o.max_conns_per_client = 2;
    let (srv, port) = server!(o);
    let held: Vec<_> = (0..2).map(|_| connect_from([127, 0, 0, 2], port)).collect();
    // The third from the same client is turned away...
    let third = connect_from([127, 0, 0, 2], port);
    let r = read_response(&mut std::io::BufReader::new(third));
    assert_eq!(r.status, 503);
    assert!(r.json()["error"]["message"]
        .as_str()
        .unwrap()
        .contains("from this client"));
    // ...and another client is served.
    assert_eq!(get(port, "/health").status, 200);
    drop(held);
    srv.shutdown();
}

/// A keep-alive connection past its lifetime is closed after the request it is serving.
#[test]
fn connections_retire_after_their_lifetime() {
    use std::io::{Read, Write};
    let mut o = opts();
    o.limits.lifetime = Duration::ZERO;
    let (srv, port) = server!(o);
    let mut s = connect(port);
    s.write_all(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        .unwrap();
    let mut r = std::io::BufReader::new(s);
    let resp = read_response(&mut r);
    assert_eq!(resp.status, 200);
    assert_eq!(resp.header("connection"), Some("close"));
    let mut rest = Vec::new();
    r.read_to_end(&mut rest).unwrap();
    assert!(rest.is_empty());
    srv.shutdown();
}

/// A non-streaming client that leaves while tokens keep coming stops its generation: the
/// connection looks for the client between tokens, not only when the engine is quiet.
#[test]
fn a_non_streaming_client_that_leaves_stops_its_generation() {
    use std::io::Write;
    let mut o = opts();
    o.slots = 1;
    let (srv, port) = slow_server!(o);
    let mut s = connect(port);
    let body = json!({"prompt": "a", "max_tokens": 400}).to_string();
    write!(s, "POST /v1/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}", body.len()).unwrap();
    assert!(eventually(30, || metric(
        port,
        "onebit:tokens_predicted_total"
    ) >= 1.0));
    drop(s);
    assert!(eventually(30, || metric(
        port,
        "onebit:requests_processing"
    ) == 0.0));
    let made = metric(port, "onebit:tokens_predicted_total");
    assert!(
        made < 200.0,
        "{made} tokens were generated for a client that had left"
    );
    srv.shutdown();
}
