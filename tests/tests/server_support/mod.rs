//! Shared by the server tests: an in-process onebitd on the tiny fixture model bound to a
//! random loopback port, and a raw HTTP/1.1 client (so the tests check the bytes on the
//! wire, not what a client library forgives).

#![allow(dead_code)]

use onebit_engine::backend::cpu::CpuBackend;
use onebit_engine::backend::{Backend, BackendError, Need, Output, Surface};
use onebit_engine::model::Model;
use onebit_engine::server::backend::ModelInfo;
use onebit_engine::server::engine::EngineVocab;
use onebit_engine::server::listen::Listener;
use onebit_engine::server::{Options, Server};
use serde_json::Value;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

pub const MODEL_ID: &str = "tiny-a.i2_s";

/// Starts a server with `opts` on 127.0.0.1:0 with the model loaded, or None (with the
/// reason printed) when the fixture is absent.
pub fn start(opts: Options) -> Option<(Server, u16)> {
    start_gated(opts, Gate::default())
}

/// The real engine, held before each step by its [`Gate`], so that tests which need a
/// request to stay in its slot for a while do not depend on how fast this machine is.
pub struct Gated<B> {
    inner: B,
    gate: Gate,
}

/// Holds the engine thread before each step until the test lets it go: a test that needs
/// "nothing happens on this stream for a while" shuts the gate instead of hoping the
/// engine is slow enough, and one that needs "a few steps, then wait" lets steps through
/// one at a time.
#[derive(Clone)]
pub struct Gate(Arc<(Mutex<Pass>, Condvar)>);

/// What the gate lets through.
#[derive(Clone, Copy)]
enum Pass {
    Every,
    /// This many more steps, then hold.
    Steps(u64),
}

impl Default for Gate {
    fn default() -> Self {
        Self(Arc::new((Mutex::new(Pass::Every), Condvar::new())))
    }
}

impl Gate {
    /// A gate that starts shut.
    pub fn shut() -> Self {
        Self(Arc::new((Mutex::new(Pass::Steps(0)), Condvar::new())))
    }

    /// Lets every step through from now on.
    pub fn open(&self) {
        *self.0 .0.lock().unwrap() = Pass::Every;
        self.0 .1.notify_all();
    }

    /// Lets `n` more steps through (on a gate that is not open).
    pub fn allow(&self, n: u64) {
        let mut g = self.0 .0.lock().unwrap();
        if let Pass::Steps(left) = *g {
            *g = Pass::Steps(left + n);
        }
        self.0 .1.notify_all();
    }

    fn pass(&self) {
        let (state, cv) = &*self.0;
        let mut g = state.lock().unwrap();
        loop {
            match *g {
                Pass::Every => return,
                Pass::Steps(0) => g = cv.wait(g).unwrap(),
                Pass::Steps(n) => {
                    *g = Pass::Steps(n - 1);
                    return;
                }
            }
        }
    }
}

impl<B: Backend> Backend for Gated<B> {
    type Session = B::Session;
    fn surface(&self) -> Surface {
        self.inner.surface()
    }
    fn new_session(&mut self, ctx: usize) -> Result<Self::Session, BackendError> {
        self.inner.new_session(ctx)
    }
    fn tokens<'a>(&self, s: &'a Self::Session) -> &'a [u32] {
        self.inner.tokens(s)
    }
    fn truncate(&mut self, s: &mut Self::Session, n: usize) {
        self.inner.truncate(s, n)
    }
    fn capacity(&self, s: &Self::Session) -> usize {
        self.inner.capacity(s)
    }
    fn step(
        &mut self,
        sessions: &mut [&mut Self::Session],
        ids: &[&[u32]],
        needs: &[Need],
    ) -> Result<(), BackendError> {
        self.gate.pass();
        self.inner.step(sessions, ids, needs)
    }
    fn output<'a>(&'a self, s: &'a Self::Session) -> Output<'a> {
        self.inner.output(s)
    }
}

/// A server whose engine passes `gate` before every step.
pub fn start_gated(opts: Options, gate: Gate) -> Option<(Server, u16)> {
    let path = onebit_tests::fixture("tiny-a/tiny-a.i2_s.gguf")?;
    let (model, tok) = onebit_engine::format::load(&path).expect("load tiny-a");
    let n_vocab = model.config.vocab_size;
    let info = ModelInfo::new(&model, MODEL_ID.into(), model.config.max_context, n_vocab);
    let backend = CpuBackend::new(Arc::new(model), 0);
    let vocab = Arc::new(EngineVocab::new(Arc::new(tok), n_vocab));
    let server = Server::start(opts, vec![Listener::bind("127.0.0.1", 0).unwrap()]).unwrap();
    server
        .set_ready(
            Gated {
                inner: backend,
                gate,
            },
            vocab,
            info,
        )
        .unwrap();
    let port = server.ports()[0];
    Some((server, port))
}

/// The model id [`start_embedded`] serves.
pub const EMBEDDED_ID: &str = "onebit-tiny";

/// A server on the model compiled into onebit (no fixture needed), with `ctx` tokens per
/// slot.
pub fn start_embedded(opts: Options, ctx: usize) -> (Server, u16) {
    let (model, tok) = onebit_engine::embedded::load().expect("load the embedded model");
    let n_vocab = model.config.vocab_size;
    let info = ModelInfo::new(&model, EMBEDDED_ID.into(), ctx, n_vocab);
    let backend = CpuBackend::new(Arc::new(model), 0);
    let vocab = Arc::new(EngineVocab::new(Arc::new(tok), n_vocab));
    let server = Server::start(opts, vec![Listener::bind("127.0.0.1", 0).unwrap()]).unwrap();
    server.set_ready(backend, vocab, info).unwrap();
    let port = server.ports()[0];
    (server, port)
}

/// The tiny fixture model, for tests that build their own backend.
pub fn tiny_model() -> Option<(Model, onebit_engine::tokenizer::Tokenizer)> {
    let path = onebit_tests::fixture("tiny-a/tiny-a.i2_s.gguf")?;
    Some(onebit_engine::format::load(&path).expect("load tiny-a"))
}

/// Options for tests: quick timeouts, greedy by default so outputs are reproducible.
pub fn opts() -> Options {
    let mut o = Options::default();
    o.defaults.sampling.temperature = 0.0;
    o.sse_ping = Duration::from_millis(200);
    o.limits.max_body = 64 << 10;
    o.grace = Duration::from_secs(2);
    o
}

#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Resp {
    pub fn header(&self, k: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(k))
            .map(|(_, v)| v.as_str())
    }
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", String::from_utf8_lossy(&self.body)))
    }
    pub fn text(&self) -> String {
        String::from_utf8(self.body.clone()).expect("UTF-8 body")
    }
    /// The `data:` payloads of an SSE body, in order; also checks the framing.
    pub fn sse(&self) -> Vec<String> {
        let t = self.text();
        assert!(
            t.ends_with("\n\n"),
            "SSE body must end with a blank line: {t:?}"
        );
        let mut out = Vec::new();
        for ev in t.split("\n\n").filter(|e| !e.is_empty()) {
            if ev.starts_with(':') {
                continue;
            }
            let d = ev
                .strip_prefix("data: ")
                .unwrap_or_else(|| panic!("bad SSE event {ev:?}"));
            assert!(!d.contains('\n'), "one line per event: {ev:?}");
            out.push(d.to_string());
        }
        out
    }
}

pub fn connect(port: u16) -> TcpStream {
    let s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    s
}

/// Sends raw bytes on a fresh connection and reads one response.
pub fn raw(port: u16, bytes: &[u8]) -> Resp {
    let mut s = connect(port);
    s.write_all(bytes).unwrap();
    read_response(&mut BufReader::new(s))
}

pub fn request(port: u16, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Resp {
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\nContent-Length: {}\r\n", body.len());
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    let mut b = head.into_bytes();
    b.extend_from_slice(body);
    raw(port, &b)
}

pub fn get(port: u16, path: &str) -> Resp {
    request(port, "GET", path, &[], b"")
}

pub fn post(port: u16, path: &str, body: &Value) -> Resp {
    request(
        port,
        "POST",
        path,
        &[("Content-Type", "application/json")],
        body.to_string().as_bytes(),
    )
}

/// Reads one response (Content-Length or chunked).
pub fn read_response(r: &mut impl BufRead) -> Resp {
    let mut line = String::new();
    r.read_line(&mut line).unwrap();
    let status: u16 = line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad status line {line:?}"));
    let mut headers = Vec::new();
    loop {
        let mut h = String::new();
        r.read_line(&mut h).unwrap();
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        let (k, v) = h.split_once(':').expect("header");
        headers.push((k.to_string(), v.trim().to_string()));
    }
    let mut resp = Resp {
        status,
        headers,
        body: Vec::new(),
    };
    if resp.header("transfer-encoding") == Some("chunked") {
        loop {
            let mut sz = String::new();
            r.read_line(&mut sz).unwrap();
            let n = usize::from_str_radix(sz.trim(), 16)
                .unwrap_or_else(|_| panic!("bad chunk size {sz:?}"));
            let mut chunk = vec![0; n + 2];
            r.read_exact(&mut chunk).unwrap();
            assert_eq!(&chunk[n..], b"\r\n");
            if n == 0 {
                break;
            }
            resp.body.extend_from_slice(&chunk[..n]);
        }
    } else if let Some(n) = resp.header("content-length") {
        let n: usize = n.parse().unwrap();
        resp.body = vec![0; n];
        r.read_exact(&mut resp.body).unwrap();
    }
    resp
}

/// Reads a chunked SSE response head, then returns the reader positioned at the body.
pub fn open_stream(port: u16, path: &str, body: &Value) -> BufReader<TcpStream> {
    let mut s = connect(port);
    let b = body.to_string();
    write!(s, "POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{b}", b.len()).unwrap();
    let mut r = BufReader::new(s);
    let mut line = String::new();
    r.read_line(&mut line).unwrap();
    assert!(line.starts_with("HTTP/1.1 200"), "{line}");
    loop {
        let mut h = String::new();
        r.read_line(&mut h).unwrap();
        if h.trim_end().is_empty() {
            break;
        }
    }
    r
}

/// Reads the next chunk of a chunked body (None at its end).
pub fn next_chunk(r: &mut BufReader<TcpStream>) -> Option<String> {
    let mut sz = String::new();
    if r.read_line(&mut sz).ok()? == 0 {
        return None;
    }
    let n = usize::from_str_radix(sz.trim(), 16).ok()?;
    let mut chunk = vec![0; n + 2];
    r.read_exact(&mut chunk).ok()?;
    (n > 0).then(|| String::from_utf8(chunk[..n].to_vec()).unwrap())
}

/// Polls `f` every 20 ms for up to `secs`; true once it holds.
pub fn eventually(secs: u64, mut f: impl FnMut() -> bool) -> bool {
    let until = std::time::Instant::now() + Duration::from_secs(secs);
    while std::time::Instant::now() < until {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    f()
}

/// A metric's value from the Prometheus text.
pub fn metric(port: u16, name: &str) -> f64 {
    let t = get(port, "/metrics").text();
    t.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|r| r.strip_prefix(' ')))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("metric {name} missing"))
}
