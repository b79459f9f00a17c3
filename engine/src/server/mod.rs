//! onebitd's server: an OpenAI-compatible HTTP API in front of one engine thread.
//!
//! Threads: one accept loop per listening socket, one thread per connection (bounded by
//! `max_conns`, and by `max_conns_per_client` for one client; past that a connection gets
//! a 503 and is closed), and one engine thread
//! that owns the model and its slots ([`scheduler`]). Connection threads turn requests
//! into jobs, then turn the engine's token events into JSON or SSE.
//!
//! Why a hand-rolled HTTP/1.1 layer ([`http`], ~300 lines on `std::net`) instead of
//! axum/hyper/tokio: the API is a dozen routes with JSON bodies and SSE, and the engine
//! thread, not socket I/O, is the bottleneck. Measured for the ecosystem report, a
//! `/health` server is 311 KiB with std alone versus 734 KiB and 48 crates with
//! axum+tokio; this is an appliance binary whose selling point is being small, and blocking
//! I/O with explicit deadlines makes the limits (body size, slow clients, disconnects)
//! easy to see and test. Firecracker made the same choice with its `micro_http`.

pub mod api;
pub mod auth;
pub mod backend;
pub mod engine;
pub mod error;
pub mod http;
pub mod listen;
pub mod metrics;
pub mod privs;
mod routes;
pub mod scheduler;
pub mod systemd;
pub mod text;
pub mod webui;

use crate::backend::Backend;
use backend::{ModelInfo, Vocab};
use listen::{Conn, Listener};
use metrics::Metrics;
use scheduler::{Queue, SchedConfig};
use std::collections::HashMap;
use std::io::{BufReader, Write};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Everything the server needs besides the model.
#[derive(Clone, Debug)]
pub struct Options {
    /// Parallel sequences (`-np`).
    pub slots: usize,
    /// Requests that may wait for a free slot before new ones get a 503.
    pub queue: usize,
    /// Prompt tokens a slot feeds per engine step (`-b`), and a step in all while streams
    /// decode (`--step-tokens`).
    pub feed: crate::generate::Feed,
    pub limits: http::Limits,
    pub api_key: Option<String>,
    /// Host names (besides localhost and IP addresses of this machine) that requests may
    /// name in `Host` (`--allowed-host`); `*` accepts any.
    pub allowed_hosts: Vec<String>,
    /// Serve `GET /metrics` (`--metrics`).
    pub metrics: bool,
    /// Interval of `: ping` comments on idle SSE streams.
    pub sse_ping: Duration,
    pub max_conns: usize,
    /// Open connections from one client (one IP address, or one uid on a Unix socket).
    pub max_conns_per_client: usize,
    /// How long in-flight requests may run on after SIGTERM before they are cut.
    pub grace: Duration,
    pub defaults: api::Defaults,
    /// Serve the chat page at `GET /` (`--no-webui` turns it off).
    pub webui: bool,
    /// Refuse requests that name another `model` with 404 (`--strict-model`); by default
    /// any name is accepted and this server's model answers, as llama-server does.
    pub strict_model: bool,
    /// How each slot speculates (`--speculate`).
    pub speculate: crate::speculate::SpecOptions,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            slots: 4,
            queue: 64,
            feed: crate::generate::Feed::from(128),
            limits: http::Limits::default(),
            api_key: None,
            allowed_hosts: Vec::new(),
            metrics: true,
            sse_ping: Duration::from_secs(30),
            max_conns: 512,
            max_conns_per_client: 64,
            grace: Duration::from_secs(10),
            defaults: api::Defaults {
                sampling: crate::sampler::SamplingParams::default(),
                max_tokens: None,
            },
            webui: true,
            strict_model: false,
            speculate: crate::speculate::SpecOptions::new(crate::speculate::Mode::Auto),
        }
    }
}

/// The model side, once loaded.
struct Ready {
    queue: Arc<Queue>,
    vocab: Arc<dyn Vocab>,
    info: ModelInfo,
    /// The most bytes one token stands for: text longer than `n_ctx_slot` times this
    /// cannot fit the context, and is refused before it is tokenized.
    max_token_bytes: usize,
}

struct Shared {
    opts: Options,
    api_key: Option<auth::ApiKey>,
    /// Open connections per client ([`Conn::peer_key`]).
    peers: Mutex<HashMap<String, usize>>,
    metrics: Arc<Metrics>,
    ready: OnceLock<Ready>,
    closing: AtomicBool,
    /// Open connections.
    conns: AtomicUsize,
    /// Connections in the middle of a request.
    busy: AtomicUsize,
    /// Tokenizations running at once (each can take ~200 bytes of memory per byte of text).
    tokenizing: routes::Permits,
}

/// A running server. Dropping it does not stop it; call [`Server::shutdown`].
pub struct Server {
    shared: Arc<Shared>,
    listeners: Arc<Vec<Listener>>,
    accept: Mutex<Vec<JoinHandle<()>>>,
    engine: Mutex<Option<JoinHandle<()>>>,
}

impl Server {
    /// Starts answering on `listeners`. Until [`Server::set_ready`], `/health` and the
    /// generation routes answer 503 "Loading model".
    pub fn start(opts: Options, listeners: Vec<Listener>) -> std::io::Result<Self> {
        for l in &listeners {
            if opts.api_key.is_none() && l.exposed() {
                tracing::warn!(
                    address = %l.describe(),
                    "listening beyond loopback without an API key: anyone who can reach this address can use the model; set --api-key-file"
                );
            }
        }
        let shared = Arc::new(Shared {
            api_key: opts.api_key.as_deref().map(auth::ApiKey::new),
            peers: Mutex::default(),
            opts,
            metrics: Arc::default(),
            ready: OnceLock::new(),
            closing: AtomicBool::new(false),
            conns: AtomicUsize::new(0),
            busy: AtomicUsize::new(0),
            tokenizing: routes::Permits::new(routes::TOKENIZE_AT_ONCE),
        });
        let listeners = Arc::new(listeners);
        let mut accept = Vec::new();
        for i in 0..listeners.len() {
            listeners[i].set_nonblocking(true)?;
            let (sh, ls) = (shared.clone(), listeners.clone());
            accept.push(
                std::thread::Builder::new()
                    .name(format!("accept-{i}"))
                    .spawn(move || accept_loop(sh, &ls[i]))?,
            );
            tracing::info!(address = %listeners[i].describe(), "listening");
        }
        Ok(Self {
            shared,
            listeners,
            accept: Mutex::new(accept),
            engine: Mutex::new(None),
        })
    }

    /// Plugs in the loaded model and starts the engine thread; `/health` turns 200.
    pub fn set_ready<B: Backend + 'static>(
        &self,
        backend: B,
        vocab: Arc<dyn Vocab>,
        info: ModelInfo,
    ) -> std::io::Result<()> {
        let o = &self.shared.opts;
        let queue = Queue::new(o.slots.max(1), o.queue, self.shared.metrics.clone());
        let cfg = SchedConfig {
            slots: o.slots.max(1),
            queue: o.queue,
            feed: o.feed,
            eos: vocab.eos_ids(),
            speculate: o.speculate,
        };
        // Known before the first request: /health and /v1/models say which surface serves.
        self.shared.metrics.set_surface(metrics::SurfaceState {
            serving: backend.surface(),
            health: backend.health(),
            fallbacks: backend.fallbacks(),
        });
        let q = queue.clone();
        let handle = std::thread::Builder::new()
            .name("engine".into())
            .spawn(move || scheduler::run(backend, q, cfg))?;
        *self.engine.lock().unwrap_or_else(|p| p.into_inner()) = Some(handle);
        let max_token_bytes = (0..vocab.vocab_size())
            .map(|id| vocab.token_bytes(id as u32).len())
            .max()
            .unwrap_or(1)
            .max(1);
        let ready = Ready {
            queue,
            vocab,
            info,
            max_token_bytes,
        };
        if self.shared.ready.set(ready).is_err() {
            return Err(std::io::Error::other("set_ready called twice"));
        }
        Ok(())
    }

    /// TCP ports listened on, in listener order (tests bind port 0).
    pub fn ports(&self) -> Vec<u16> {
        self.listeners.iter().filter_map(|l| l.port()).collect()
    }

    pub fn metrics(&self) -> Arc<Metrics> {
        self.shared.metrics.clone()
    }

    /// (engine steps so far, engine idle) once ready; the watchdog pings only while the
    /// first moves or the second holds.
    pub fn progress(&self) -> Option<(u64, bool)> {
        self.shared
            .ready
            .get()
            .map(|r| (r.queue.progress.load(Relaxed), r.queue.idle.load(Relaxed)))
    }

    /// Stops accepting, lets in-flight requests run for the grace period, cuts the rest
    /// with a final chunk, and returns once their responses are written.
    pub fn shutdown(&self) {
        let sh = &self.shared;
        sh.closing.store(true, Relaxed);
        let accept = std::mem::take(&mut *self.accept.lock().unwrap_or_else(|p| p.into_inner()));
        for t in accept {
            let _ = t.join();
        }
        if let Some(r) = sh.ready.get() {
            r.queue.close(sh.opts.grace);
        }
        if let Some(t) = self.engine.lock().unwrap_or_else(|p| p.into_inner()).take() {
            let _ = t.join();
        }
        // The engine has sent every final event; give the connections a moment to write them.
        let until = Instant::now() + Duration::from_secs(5);
        while sh.busy.load(Relaxed) > 0 && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(10));
        }
        for l in self.listeners.iter() {
            l.cleanup();
        }
        tracing::info!("server stopped");
    }
}

fn accept_loop(sh: Arc<Shared>, l: &Listener) {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    use std::os::fd::AsFd;
    while !sh.closing.load(Relaxed) {
        let mut fds = [PollFd::new(l.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, PollTimeout::from(200u16)) {
            Ok(0) => continue,
            Ok(_) => {}
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => {
                tracing::error!(error = %e, "poll on the listening socket failed");
                std::thread::sleep(Duration::from_millis(200));
                continue;
            }
        }
        let conn = match l.accept() {
            Ok(c) => c,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
            Err(e) => {
                // EMFILE and friends: back off instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                std::thread::sleep(Duration::from_millis(100));
                continue;
            }
        };
        if sh.conns.load(Relaxed) >= sh.opts.max_conns {
            reject_conn(conn, "too many open connections; retry later");
            continue;
        }
        let Some(peer) = PeerSlot::take(&sh, conn.peer_key()) else {
            reject_conn(
                conn,
                "too many open connections from this client; reuse or close some",
            );
            continue;
        };
        sh.conns.fetch_add(1, Relaxed);
        let sh2 = sh.clone();
        let spawned = std::thread::Builder::new()
            .name("conn".into())
            .stack_size(512 << 10)
            .spawn(move || {
                let _guard = Count(&sh2.conns);
                let _peer = peer;
                serve_conn(&sh2, conn);
            });
        if let Err(e) = spawned {
            sh.conns.fetch_sub(1, Relaxed);
            tracing::warn!(error = %e, "cannot start a connection thread");
        }
    }
}

/// Decrements a counter when dropped (also when a handler panics).
struct Count<'a>(&'a AtomicUsize);

impl Drop for Count<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Relaxed);
    }
}

/// One open connection counted against its client's share; given back when dropped.
struct PeerSlot {
    sh: Arc<Shared>,
    key: String,
}

impl PeerSlot {
    /// Counts a new connection from `key`, or None when that client has its share open.
    fn take(sh: &Arc<Shared>, key: String) -> Option<Self> {
        let mut peers = sh.peers.lock().unwrap_or_else(|p| p.into_inner());
        let n = peers.entry(key.clone()).or_insert(0);
        if *n >= sh.opts.max_conns_per_client.max(1) {
            return None;
        }
        *n += 1;
        Some(Self {
            sh: sh.clone(),
            key,
        })
    }
}

impl Drop for PeerSlot {
    fn drop(&mut self) {
        let mut peers = self.sh.peers.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = peers.get_mut(&self.key) {
            *n -= 1;
            if *n == 0 {
                peers.remove(&self.key);
            }
        }
    }
}

fn reject_conn(mut conn: Conn, why: &str) {
    let _ = conn.set_write_timeout(Some(Duration::from_secs(1)));
    let e = error::ApiError::busy(1);
    let e = error::ApiError {
        message: why.into(),
        ..e
    };
    let _ = e.response().write_to(&mut conn, false);
    conn.shutdown();
}

fn serve_conn(sh: &Shared, conn: Conn) {
    let _ = conn.set_write_timeout(Some(Duration::from_secs(30)));
    let peer = conn.peer();
    let limits = &sh.opts.limits;
    let retire_at = Instant::now() + limits.lifetime;
    let mut r = BufReader::with_capacity(16 << 10, conn);
    let mut first = true;
    loop {
        // Idle waits never run past the connection's lifetime (the first request gets
        // the whole idle time, so that a lifetime of zero still serves one request).
        let left = retire_at.saturating_duration_since(Instant::now());
        if !first && left.is_zero() {
            break;
        }
        let idle = if first {
            limits.idle
        } else {
            limits.idle.min(left)
        };
        first = false;
        let mut req = match next_request(sh, &mut r, idle) {
            Ok(req) => req,
            Err(None) => break,
            Err(Some(e)) => {
                tracing::debug!(peer, status = e.status, msg = e.message, "request refused");
                let _ = e.response().write_to(r.get_mut(), false);
                break;
            }
        };
        if Instant::now() >= retire_at {
            req.keep_alive = false;
        }
        sh.busy.fetch_add(1, Relaxed);
        let _busy = Count(&sh.busy);
        let t0 = Instant::now();
        let keep = routes::handle(sh, &req, &mut r);
        tracing::debug!(
            peer,
            method = req.method,
            path = req.path,
            ms = t0.elapsed().as_millis() as u64,
            "request"
        );
        if !keep || !req.keep_alive || sh.closing.load(Relaxed) {
            break;
        }
    }
    let _ = r.get_mut().flush();
    r.get_ref().shutdown();
}

/// Reads the next request: its head, then (once [`routes::admit`] accepts the head: the
/// `Host`, the API key, the media type) its body. `Err(None)`: the connection ended
/// quietly; `Err(Some(e))`: answer `e`, then close.
fn next_request(
    sh: &Shared,
    r: &mut BufReader<Conn>,
    idle: Duration,
) -> Result<http::Request, Option<error::ApiError>> {
    let limits = &sh.opts.limits;
    let read = http::read_head(r, limits, idle).and_then(|head| {
        if let Err(e) = routes::admit(sh, &head.req, r.get_ref()) {
            return Ok(Err(e));
        }
        http::read_body(r, head, limits).map(Ok)
    });
    match read {
        Ok(Ok(req)) => Ok(req),
        Ok(Err(refused)) => Err(Some(refused)),
        Err(http::ReadError::Closed | http::ReadError::Idle) => Err(None),
        Err(http::ReadError::Bad(status, msg)) => {
            let kind = if status >= 500 {
                "server_error"
            } else {
                "invalid_request_error"
            };
            Err(Some(error::ApiError::new(status, kind, msg)))
        }
        Err(http::ReadError::Io(e)) => Err(matches!(
            e.kind(),
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
        )
        .then(|| {
            error::ApiError::new(
                408,
                "invalid_request_error",
                "the request did not arrive in time",
            )
        })),
    }
}
