//! The routes: one table ([`ROUTES`]: method, path, who may call it, handler) from which
//! dispatch, 404, 405 with `Allow` and the API-key exemptions all come; and the handlers:
//! health, models, props, metrics, tokenize/detokenize, the chat page's files, and the two
//! generation routes with and without SSE.

use super::api::{self, ChatRequest, CompletionRequest, Prompt};
use super::error::ApiError;
use super::http::{Chunked, Request, Response};
use super::listen::Conn;
use super::scheduler::{Event, Finish, Job, Rejected, TokenLogprob, Usage};
use super::text::TextStream;
use super::{webui, Ready, Shared};
use crate::backend::Health;
use serde_json::{json, Value};
use std::io::BufReader;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Answers one request; returns whether the connection can serve another.
pub fn handle(sh: &Shared, req: &Request, conn: &mut BufReader<Conn>) -> bool {
    let result = dispatch(sh, req, conn);
    let keep = req.keep_alive && !sh.closing.load(Relaxed);
    match result {
        Ok(Reply::Done(keep_stream)) => keep_stream && keep,
        Ok(Reply::Send(resp)) => resp.write_to(conn.get_mut(), keep).is_ok() && keep,
        Err(e) => {
            if e.status >= 500 && e.status != 503 {
                tracing::warn!(
                    status = e.status,
                    message = e.message,
                    path = req.path,
                    "request failed"
                );
            }
            e.response().write_to(conn.get_mut(), keep).is_ok() && keep
        }
    }
}

pub(super) enum Reply {
    Send(Response),
    /// The handler wrote the response itself (a stream); the flag says whether the
    /// connection is still usable.
    Done(bool),
}

/// Runs one route: the request and its connection (streaming handlers write to it
/// themselves).
type Handler = fn(&Shared, &Request, &mut BufReader<Conn>) -> Result<Reply, ApiError>;

/// Who may call a route.
#[derive(Clone, Copy, PartialEq)]
enum Access {
    /// Anyone who reaches the socket: liveness probes and the chat page's static files,
    /// which hold no data and send the key themselves on API calls.
    Open,
    /// Only with the API key, when one is set.
    Key,
}

struct Route {
    method: &'static str,
    path: &'static str,
    access: Access,
    handler: Handler,
}

const fn route(
    method: &'static str,
    path: &'static str,
    access: Access,
    handler: Handler,
) -> Route {
    Route {
        method,
        path,
        access,
        handler,
    }
}

/// Every route onebitd answers. Dispatch, 404, 405 (with `Allow`) and which routes need the
/// API key all come from this table: a new route is one line here.
#[rustfmt::skip]
const ROUTES: &[Route] = &[
    route("GET",  "/",                    Access::Open, |sh, _, _| webui::page(sh, webui::Asset::Page)),
    route("GET",  "/webui/chat.js",       Access::Open, |sh, _, _| webui::page(sh, webui::Asset::Script)),
    route("GET",  "/webui/chat.css",      Access::Open, |sh, _, _| webui::page(sh, webui::Asset::Style)),
    route("GET",  "/health",              Access::Open, |sh, _, _| health_route(sh)),
    route("GET",  "/v1/health",           Access::Open, |sh, _, _| health_route(sh)),
    route("GET",  "/metrics",             Access::Key,  |sh, _, _| metrics_route(sh)),
    route("GET",  "/v1/models",           Access::Key,  |sh, _, _| Ok(Reply::Send(Response::json(200, &models(sh, ready(sh)?))))),
    route("GET",  "/models",              Access::Key,  |sh, _, _| Ok(Reply::Send(Response::json(200, &models(sh, ready(sh)?))))),
    route("GET",  "/props",               Access::Key,  |sh, _, _| Ok(Reply::Send(Response::json(200, &props(sh, ready(sh)?))))),
    route("POST", "/tokenize",            Access::Key,  |sh, req, _| tokenize(sh, ready(sh)?, &req.body).map(Reply::Send)),
    route("POST", "/detokenize",          Access::Key,  |sh, req, _| detokenize(ready(sh)?, &req.body).map(Reply::Send)),
    route("POST", "/v1/chat/completions", Access::Key,  |sh, req, conn| generate(sh, ready(sh)?, Kind::Chat, &req.body, conn, req.http11)),
    route("POST", "/chat/completions",    Access::Key,  |sh, req, conn| generate(sh, ready(sh)?, Kind::Chat, &req.body, conn, req.http11)),
    route("POST", "/v1/completions",      Access::Key,  |sh, req, conn| generate(sh, ready(sh)?, Kind::Text, &req.body, conn, req.http11)),
    route("POST", "/completions",         Access::Key,  |sh, req, conn| generate(sh, ready(sh)?, Kind::Text, &req.body, conn, req.http11)),
];

/// The table's answer to `method path`: its handler, or the 404 / 405 that the table
/// implies.
fn find(method: &str, path: &str) -> Result<&'static Route, Response> {
    let mut on_path = ROUTES.iter().filter(|r| r.path == path).peekable();
    if on_path.peek().is_none() {
        return Err(ApiError::new(
            404,
            "not_found_error",
            format!("no route {method} {path}; see /v1/models, /v1/chat/completions, /v1/completions, /health"),
        )
        .response());
    }
    let mut allowed = Vec::new();
    for r in on_path {
        if r.method == method {
            return Ok(r);
        }
        allowed.push(r.method);
    }
    let allowed = allowed.join(", ");
    Err(ApiError::new(
        405,
        "invalid_request_error",
        format!("{path} takes {allowed}, not {method}"),
    )
    .response()
    .with_header("Allow", allowed))
}

fn dispatch(sh: &Shared, req: &Request, conn: &mut BufReader<Conn>) -> Result<Reply, ApiError> {
    match find(&req.method, &req.path) {
        Ok(r) => (r.handler)(sh, req, conn),
        Err(answer) => Ok(Reply::Send(answer)),
    }
}

/// The loaded model, or 503 "Loading model" until it is.
fn ready(sh: &Shared) -> Result<&Ready, ApiError> {
    sh.ready.get().ok_or_else(ApiError::loading)
}

fn health_route(sh: &Shared) -> Result<Reply, ApiError> {
    ready(sh)?;
    Ok(Reply::Send(Response::json(200, &health(sh))))
}

fn metrics_route(sh: &Shared) -> Result<Reply, ApiError> {
    if !sh.opts.metrics {
        return Err(ApiError::new(
            404,
            "not_found_error",
            "metrics are off; start onebitd with --metrics",
        ));
    }
    Ok(Reply::Send(Response::text(
        200,
        "text/plain; version=0.0.4; charset=utf-8",
        sh.metrics.render(),
    )))
}

/// Routes that need no API key (any method: a wrong method on them gets its 405 without
/// the key, as a missing route gets its 401 without it).
fn is_open(path: &str) -> bool {
    ROUTES
        .iter()
        .any(|r| r.path == path && r.access == Access::Open)
}

/// Checks a request from its head alone, before its body is read: the `Host` it names
/// (TCP only: no web page reaches a Unix socket), its API key (all but `/health`), and,
/// for a POST, that the body is JSON. A form or a `text/plain` body is what a page on
/// another site can send without asking the browser first (CORS "simple" requests);
/// `application/json` makes the browser ask, and onebitd never says yes.
pub fn admit(sh: &Shared, req: &Request, conn: &Conn) -> Result<(), ApiError> {
    if let Some(local) = conn.local_ip() {
        if !super::auth::host_allowed(req.header("host"), Some(local), &sh.opts.allowed_hosts) {
            return Err(ApiError::new(
                421,
                "invalid_request_error",
                format!(
                    "Host {:?} is not served here: name this machine by a loopback or local address, or start onebitd with --allowed-host NAME",
                    req.header("host").unwrap_or("")
                ),
            ));
        }
    }
    if let Some(key) = &sh.api_key {
        let given = super::auth::given_key(req.header("authorization"), req.header("x-api-key"));
        if !is_open(&req.path) && !key.matches(given) {
            return Err(ApiError::unauthorized());
        }
    }
    if req.method == "POST" {
        check_json(req)?;
    }
    Ok(())
}

fn check_json(req: &Request) -> Result<(), ApiError> {
    match req.header("content-type") {
        Some(ct)
            if ct
                .split(';')
                .next()
                .is_some_and(|m| m.trim().eq_ignore_ascii_case("application/json")) =>
        {
            Ok(())
        }
        ct => Err(ApiError::new(
            415,
            "invalid_request_error",
            format!(
                "Content-Type {:?}: send the body as application/json (add -H 'Content-Type: application/json')",
                ct.unwrap_or("")
            ),
        )),
    }
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn new_id(prefix: &str) -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    let t = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    let x = (t ^ N.fetch_add(1, Relaxed).wrapping_mul(0x9E37_79B9_7F4A_7C15))
        .wrapping_mul(0xBF58_476D_1CE4_E5B9);
    format!("{prefix}-{:016x}{:08x}", x, std::process::id())
}

/// `{"status": "ok", "surface": ...}`, or `"degraded"` with the surface that failed and
/// why, while another serves (still 200: requests are answered).
fn health(sh: &Shared) -> Value {
    match sh.metrics.surface() {
        None => json!({"status": "ok"}),
        Some(st) => match st.health {
            Health::Ok => json!({"status": "ok", "surface": st.serving.as_str()}),
            Health::Degraded {
                failed,
                serving,
                reason,
            } => json!({
                "status": "degraded", "surface": serving.as_str(),
                "failed_surface": failed.as_str(), "reason": reason, "fallbacks": st.fallbacks,
            }),
        },
    }
}

fn models(sh: &Shared, r: &Ready) -> Value {
    let i = &r.info;
    let surface = sh.metrics.surface().map(|s| s.serving.as_str());
    json!({"object": "list", "data": [{
        "id": i.id, "object": "model", "created": now_secs(), "owned_by": "onebit",
        "meta": {"n_ctx_train": i.n_ctx_train, "n_ctx_slot": i.n_ctx_slot, "n_vocab": i.n_vocab, "n_params": i.n_params, "surface": surface}
    }]})
}

fn props(sh: &Shared, r: &Ready) -> Value {
    let s = &sh.opts.defaults.sampling;
    json!({
        "model_path": r.info.path, "model_alias": r.info.id, "total_slots": sh.opts.slots, "n_ctx": r.info.n_ctx_slot,
        "default_generation_settings": {
            "temperature": s.temperature, "top_k": s.top_k, "top_p": s.top_p, "min_p": s.min_p,
            "repeat_penalty": s.repeat_penalty, "repeat_last_n": s.repeat_last_n,
            "n_predict": sh.opts.defaults.max_tokens.map_or(-1, |n| n as i64),
        },
        "build_info": env!("CARGO_PKG_VERSION"),
    })
}

/// Tokenizations (of `/tokenize` text and of prompts) that may run at once.
pub const TOKENIZE_AT_ONCE: usize = 2;

/// A counting semaphore: tokenizing a long text takes far more memory than the text, so
/// only a few run at once and the others wait their turn.
pub struct Permits {
    free: std::sync::Mutex<usize>,
    returned: std::sync::Condvar,
}

impl Permits {
    pub fn new(n: usize) -> Self {
        Self {
            free: std::sync::Mutex::new(n.max(1)),
            returned: std::sync::Condvar::new(),
        }
    }

    /// Runs `f` once a permit is free.
    fn with<T>(&self, f: impl FnOnce() -> T) -> T {
        let mut free = self.free.lock().unwrap_or_else(|p| p.into_inner());
        while *free == 0 {
            free = self.returned.wait(free).unwrap_or_else(|p| p.into_inner());
        }
        *free -= 1;
        drop(free);
        struct Give<'a>(&'a Permits);
        impl Drop for Give<'_> {
            fn drop(&mut self) {
                *self.0.free.lock().unwrap_or_else(|p| p.into_inner()) += 1;
                self.0.returned.notify_one();
            }
        }
        let _give = Give(self);
        f()
    }
}

/// Refuses text that cannot fit the context however it is tokenized: no token stands for
/// more than `max_token_bytes` bytes. Checked before tokenizing, which costs far more
/// memory than the text itself.
fn check_fits(r: &Ready, bytes: usize, param: &str) -> Result<(), ApiError> {
    let n_ctx = r.info.n_ctx_slot;
    let most = n_ctx.saturating_mul(r.max_token_bytes);
    if bytes > most {
        return Err(ApiError::invalid(format!(
            "{param} is {bytes} bytes, more than the {n_ctx}-token context can hold ({most} bytes at most, {} per token); shorten it (context_length_exceeded)",
            r.max_token_bytes
        ))
        .param(param));
    }
    Ok(())
}

fn tokenize(sh: &Shared, r: &Ready, body: &[u8]) -> Result<Response, ApiError> {
    let q: api::TokenizeRequest = api::parse(body)?;
    check_fits(r, q.content.len(), "content")?;
    let ids = sh
        .tokenizing
        .with(|| r.vocab.encode(&q.content, q.add_special))
        .map_err(|e| ApiError::from(e).param("content"))?;
    // Written out directly: a JSON value per token would cost hundreds of bytes each.
    let mut out = String::with_capacity(16 + ids.len() * if q.with_pieces { 32 } else { 7 });
    out.push_str("{\"tokens\":[");
    for (i, &id) in ids.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        if q.with_pieces {
            let b = r.vocab.token_bytes(id);
            let piece = match std::str::from_utf8(&b) {
                Ok(s) => json!(s),
                Err(_) => json!(b),
            };
            out.push_str(&format!("{{\"id\":{id},\"piece\":{piece}}}"));
        } else {
            out.push_str(&id.to_string());
        }
    }
    out.push_str("]}\n");
    Ok(Response::text(200, "application/json", out))
}

fn detokenize(r: &Ready, body: &[u8]) -> Result<Response, ApiError> {
    let q: api::DetokenizeRequest = api::parse(body)?;
    let ids = check_ids(r, &q.tokens, "tokens")?;
    let text = r
        .vocab
        .decode(&ids)
        .map_err(|e| ApiError::from(e).param("tokens"))?;
    Ok(Response::json(200, &json!({"content": text})))
}

fn check_ids(r: &Ready, ids: &[i64], param: &str) -> Result<Vec<u32>, ApiError> {
    let n = r.vocab.vocab_size();
    ids.iter()
        .enumerate()
        .map(|(i, &t)| {
            u32::try_from(t)
                .ok()
                .filter(|&t| (t as usize) < n)
                .ok_or_else(|| {
                    ApiError::invalid(format!(
                        "{param}[{i}] = {t} is not a token id; ids run from 0 to {}",
                        n - 1
                    ))
                    .param(param)
                })
        })
        .collect()
}

#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Chat,
    Text,
}

/// A checked generation request and what its responses share.
struct Gen {
    kind: Kind,
    id: String,
    created: u64,
    model: String,
    plan: api::Plan,
    prompt: Vec<u32>,
    logprobs: Option<usize>,
    /// Completions with `echo`: the prompt text, sent before the completion.
    echo: Option<String>,
}

fn prepare(sh: &Shared, r: &Ready, kind: Kind, body: &[u8]) -> Result<Gen, ApiError> {
    let n_ctx = r.info.n_ctx_slot;
    let (plan, prompt, logprobs, echo) = match kind {
        Kind::Chat => {
            let q: ChatRequest = api::parse(body)?;
            check_model(sh, r, &q.params)?;
            let plan = q.params.plan(n_ctx, &sh.opts.defaults)?;
            let msgs = q.chat_messages()?;
            check_fits(r, msgs.iter().map(|m| m.content.len()).sum(), "messages")?;
            let prompt = sh
                .tokenizing
                .with(|| r.vocab.chat_prompt(&msgs))
                .map_err(|e| ApiError::from(e).param("messages"))?;
            (plan, prompt, q.logprobs()?, None)
        }
        Kind::Text => {
            let q: CompletionRequest = api::parse(body)?;
            check_model(sh, r, &q.params)?;
            let plan = q.params.plan(n_ctx, &sh.opts.defaults)?;
            let encode = |t: &String| {
                check_fits(r, t.len(), "prompt")?;
                Ok::<_, ApiError>((sh.tokenizing.with(|| r.vocab.encode(t, true)), t.clone()))
            };
            let (prompt, text) = match &q.prompt {
                Prompt::Text(t) => encode(t)?,
                Prompt::Texts(v) if v.len() == 1 => encode(&v[0])?,
                Prompt::Texts(v) => {
                    return Err(ApiError::invalid(format!(
                        "prompt is a list of {} strings: onebitd completes one prompt per request",
                        v.len()
                    ))
                    .param("prompt"))
                }
                Prompt::Tokens(ids) => {
                    // Too long to fit is refused before the ids are checked and decoded.
                    if ids.len() >= n_ctx {
                        return Err(too_long(ids.len(), n_ctx, "prompt"));
                    }
                    let ids: Vec<i64> = ids.iter().map(|&i| i64::from(i)).collect();
                    let ids = check_ids(r, &ids, "prompt")?;
                    let text = r.vocab.decode(&ids).unwrap_or_default();
                    (Ok(ids), text)
                }
            };
            let prompt = prompt.map_err(|e| ApiError::from(e).param("prompt"))?;
            (plan, prompt, q.logprobs()?, q.echo.then_some(text))
        }
    };
    if prompt.is_empty() {
        return Err(
            ApiError::invalid("the prompt is empty: give some text to continue".into())
                .param("prompt"),
        );
    }
    if prompt.len() >= n_ctx {
        let param = if kind == Kind::Chat {
            "messages"
        } else {
            "prompt"
        };
        return Err(too_long(prompt.len(), n_ctx, param));
    }
    if let Some(m) = plan.max_tokens {
        if prompt.len() + m > n_ctx {
            return Err(ApiError::invalid(format!(
                "this model's context is {n_ctx} tokens, but {} were asked for ({} in the prompt, {m} in the completion); lower max_tokens or shorten the prompt",
                prompt.len() + m,
                prompt.len()
            ))
            .param("max_tokens"));
        }
    }
    let prefix = if kind == Kind::Chat {
        "chatcmpl"
    } else {
        "cmpl"
    };
    Ok(Gen {
        kind,
        id: new_id(prefix),
        created: now_secs(),
        model: r.info.id.clone(),
        plan,
        prompt,
        logprobs,
        echo,
    })
}

/// Under `--strict-model`, a request for another model gets 404; otherwise whatever name it
/// gives, the model loaded here answers (and the response names it).
fn check_model(sh: &Shared, r: &Ready, params: &api::Params) -> Result<(), ApiError> {
    if sh.opts.strict_model {
        params.check_model(&r.info.id)?;
    }
    Ok(())
}

fn too_long(tokens: usize, n_ctx: usize, param: &str) -> ApiError {
    ApiError::invalid(format!(
        "the prompt has {tokens} tokens but the context holds {n_ctx}; shorten it (context_length_exceeded)"
    ))
    .param(param)
}

/// What the connection side keeps of one generation.
struct Collected {
    completion_tokens: usize,
    cached: usize,
    /// Per generated token: (bytes, logprob).
    logprobs: Vec<(Vec<u8>, TokenLogprob)>,
}

fn generate(
    sh: &Shared,
    r: &Ready,
    kind: Kind,
    body: &[u8],
    conn: &mut BufReader<Conn>,
    http11: bool,
) -> Result<Reply, ApiError> {
    let g = prepare(sh, r, kind, body)?;
    let (tx, rx) = mpsc::channel();
    let cancel = Arc::new(AtomicBool::new(false));
    let job = Job {
        prompt: g.prompt.clone(),
        sampling: g.plan.sampling.clone(),
        max_new: g
            .plan
            .max_tokens
            .unwrap_or(r.info.n_ctx_slot - g.prompt.len()),
        logprobs: g.logprobs,
        cache_prompt: g.plan.cache_prompt,
        ignore_eos: g.plan.ignore_eos,
        events: tx,
        cancel: cancel.clone(),
        arrived: Instant::now(),
    };
    match r.queue.submit(job) {
        Ok(()) => {}
        Err(Rejected::Busy) => return Err(ApiError::busy(1)),
        Err(Rejected::Closing) => return Err(ApiError::closing()),
    }
    // Whatever happens below, the engine must stop working for this request.
    let _cancel_on_exit = CancelOnDrop(cancel);
    if g.plan.stream {
        // HTTP/1.0 streams end by closing the connection.
        Ok(Reply::Done(stream(sh, r, &g, &rx, conn, http11) && http11))
    } else {
        collect(r, &g, &rx, conn).map(Reply::Send)
    }
}

struct CancelOnDrop(Arc<AtomicBool>);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Relaxed);
    }
}

/// One step of reading engine events for a connection.
enum Step {
    /// New text to send (may be empty) and the token's logprob entry.
    Text(String, Option<(Vec<u8>, TokenLogprob)>),
    /// The generation ended: the remaining text and why.
    End(String, Finish, Option<Usage>),
    Failed(ApiError),
    /// Nothing yet.
    Wait,
    /// The client went away.
    Gone,
}

struct Reader<'a> {
    r: &'a Ready,
    rx: &'a mpsc::Receiver<Event>,
    text: TextStream,
    got: Collected,
}

impl<'a> Reader<'a> {
    fn new(r: &'a Ready, g: &Gen, rx: &'a mpsc::Receiver<Event>) -> Self {
        Self {
            r,
            rx,
            text: TextStream::new(g.plan.stops.clone()),
            got: Collected {
                completion_tokens: 0,
                cached: 0,
                logprobs: Vec::new(),
            },
        }
    }

    fn next(&mut self, conn: &Conn, wait: Duration) -> Step {
        let got = self.rx.recv_timeout(wait);
        // After every event, not only when the engine is quiet: a client that left while
        // tokens keep coming must stop its generation too. (One non-blocking peek per
        // token, against milliseconds of model work.)
        if got.is_ok() && conn.peer_gone() {
            return Step::Gone;
        }
        match got {
            Ok(Event::Started { cached }) => {
                self.got.cached = cached;
                Step::Wait
            }
            Ok(Event::Token { id, logprob }) => {
                self.got.completion_tokens += 1;
                let bytes = if self.r.vocab.is_control(id) {
                    Vec::new()
                } else {
                    self.r.vocab.token_bytes(id)
                };
                let piece = self.text.push(&bytes);
                let lp = logprob.map(|l| (bytes, l));
                if self.text.stopped() {
                    // A stop string matched: the text is final, the engine can stop.
                    return Step::End(piece, Finish::Stop, None);
                }
                Step::Text(piece, lp)
            }
            Ok(Event::Done { finish, usage }) => Step::End(self.text.finish(), finish, Some(usage)),
            Ok(Event::Failed(msg)) => Step::Failed(ApiError::internal(msg)),
            Ok(Event::Closing) => Step::Failed(ApiError::closing()),
            Err(RecvTimeoutError::Timeout) if conn.peer_gone() => Step::Gone,
            Err(RecvTimeoutError::Timeout) => Step::Wait,
            Err(RecvTimeoutError::Disconnected) => {
                Step::Failed(ApiError::internal("the engine stopped"))
            }
        }
    }

    /// One line per finished generation.
    fn log_end(&self, g: &Gen, finish: Finish, engine: Option<&Usage>) {
        let completion = engine.map_or(self.got.completion_tokens, |u| u.completion_tokens);
        tracing::info!(
            id = g.id,
            prompt = g.prompt.len(),
            cached = self.got.cached,
            completion,
            finish = finish.as_openai(),
            stream = g.plan.stream,
            predicted_ms = engine.map_or(0.0, |u| u.predicted_ms).round(),
            "generation done"
        );
    }

    /// llama-server's `timings` object (only when the engine finished the request).
    fn timings(engine: Option<&Usage>) -> Option<Value> {
        engine.map(|e| {
            json!({
                "prompt_n": e.prompt_tokens - e.cached_tokens, "prompt_ms": e.prompt_ms, "cache_n": e.cached_tokens,
                "predicted_n": e.completion_tokens, "predicted_ms": e.predicted_ms,
                "predicted_per_second": if e.predicted_ms > 0.0 { e.completion_tokens as f64 * 1e3 / e.predicted_ms } else { 0.0 },
                "draft_n": e.drafted_tokens, "draft_n_accepted": e.accepted_tokens,
            })
        })
    }

    fn usage(&self, g: &Gen, engine: Option<&Usage>) -> Value {
        let completion = engine.map_or(self.got.completion_tokens, |u| u.completion_tokens);
        let cached = engine.map_or(self.got.cached, |u| u.cached_tokens);
        let (drafted, accepted) = engine.map_or((0, 0), |u| (u.drafted_tokens, u.accepted_tokens));
        json!({
            "prompt_tokens": g.prompt.len(),
            "completion_tokens": completion,
            "total_tokens": g.prompt.len() + completion,
            "prompt_tokens_details": {"cached_tokens": cached},
            // OpenAI's names for predicted-output tokens: the speculative drafts kept and
            // thrown away, with onebit's own totals beside them.
            "completion_tokens_details": {
                "accepted_prediction_tokens": accepted,
                "rejected_prediction_tokens": drafted - accepted,
                "drafted_tokens": drafted,
                "acceptance_rate": if drafted > 0 { accepted as f64 / drafted as f64 } else { 0.0 },
            },
        })
    }
}

fn lossy(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Chat logprobs entries (`logprobs.content`) for the given tokens.
fn chat_logprobs(r: &Ready, entries: &[(Vec<u8>, TokenLogprob)]) -> Value {
    let content: Vec<Value> = entries
        .iter()
        .map(|(bytes, lp)| {
            let top: Vec<Value> = lp
                .top
                .iter()
                .map(|&(id, l)| {
                    let b = r.vocab.token_bytes(id);
                    json!({"token": lossy(&b), "logprob": l, "bytes": b})
                })
                .collect();
            json!({"token": lossy(bytes), "logprob": lp.logprob, "bytes": bytes, "top_logprobs": top})
        })
        .collect();
    json!({"content": content})
}

/// Legacy completions logprobs (`tokens`, `token_logprobs`, `top_logprobs`, `text_offset`).
fn text_logprobs(r: &Ready, entries: &[(Vec<u8>, TokenLogprob)], start: usize) -> Value {
    let mut off = start;
    let mut tokens = Vec::new();
    let mut lps = Vec::new();
    let mut tops = Vec::new();
    let mut offsets = Vec::new();
    for (bytes, lp) in entries {
        tokens.push(json!(lossy(bytes)));
        lps.push(json!(lp.logprob));
        let mut top = serde_json::Map::new();
        for &(id, l) in &lp.top {
            top.insert(lossy(&r.vocab.token_bytes(id)), json!(l));
        }
        tops.push(Value::Object(top));
        offsets.push(json!(off));
        off += bytes.len();
    }
    json!({"tokens": tokens, "token_logprobs": lps, "top_logprobs": tops, "text_offset": offsets})
}

fn collect(
    r: &Ready,
    g: &Gen,
    rx: &mpsc::Receiver<Event>,
    conn: &mut BufReader<Conn>,
) -> Result<Response, ApiError> {
    let mut rd = Reader::new(r, g, rx);
    let mut out = String::new();
    let (finish, usage) = loop {
        match rd.next(conn.get_ref(), Duration::from_millis(100)) {
            Step::Text(t, lp) => {
                out.push_str(&t);
                rd.got.logprobs.extend(lp);
            }
            Step::End(t, f, u) => {
                out.push_str(&t);
                rd.log_end(g, f, u.as_ref());
                break (f, u);
            }
            Step::Failed(e) => return Err(e),
            Step::Wait => {}
            Step::Gone => {
                return Err(ApiError::new(
                    499,
                    "client_closed",
                    "client closed the connection",
                ))
            }
        }
    };
    let usage_json = rd.usage(g, usage.as_ref());
    let lp = g.logprobs.map(|_| match g.kind {
        Kind::Chat => chat_logprobs(r, &rd.got.logprobs),
        Kind::Text => text_logprobs(r, &rd.got.logprobs, g.echo.as_ref().map_or(0, |e| e.len())),
    });
    let mut body = match g.kind {
        Kind::Chat => json!({
            "id": g.id, "object": "chat.completion", "created": g.created, "model": g.model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": out}, "logprobs": lp, "finish_reason": finish.as_openai()}],
            "usage": usage_json,
        }),
        Kind::Text => json!({
            "id": g.id, "object": "text_completion", "created": g.created, "model": g.model,
            "choices": [{"index": 0, "text": format!("{}{out}", g.echo.as_deref().unwrap_or("")), "logprobs": lp, "finish_reason": finish.as_openai()}],
            "usage": usage_json,
        }),
    };
    if let Some(t) = Reader::timings(usage.as_ref()) {
        body["timings"] = t;
    }
    Ok(Response::json(200, &body))
}

/// An SSE event line.
fn event(v: &Value) -> Vec<u8> {
    let mut s = b"data: ".to_vec();
    s.extend(serde_json::to_vec(v).unwrap_or_default());
    s.extend_from_slice(b"\n\n");
    s
}

fn chunk(
    g: &Gen,
    text: Option<&str>,
    lp: Option<Value>,
    finish: Option<Finish>,
    role: bool,
) -> Value {
    let fin = finish.map(Finish::as_openai);
    let mut v = match g.kind {
        Kind::Chat => {
            let delta = match (role, text) {
                (true, _) => json!({"role": "assistant", "content": ""}),
                (false, Some(t)) => json!({"content": t}),
                (false, None) => json!({}),
            };
            json!({"id": g.id, "object": "chat.completion.chunk", "created": g.created, "model": g.model,
                   "choices": [{"index": 0, "delta": delta, "logprobs": lp, "finish_reason": fin}]})
        }
        Kind::Text => {
            json!({"id": g.id, "object": "text_completion", "created": g.created, "model": g.model,
                              "choices": [{"index": 0, "text": text.unwrap_or(""), "logprobs": lp, "finish_reason": fin}]})
        }
    };
    if g.plan.include_usage {
        v["usage"] = Value::Null;
    }
    v
}

/// Streams the generation as SSE; returns whether the connection is still usable.
fn stream(
    sh: &Shared,
    r: &Ready,
    g: &Gen,
    rx: &mpsc::Receiver<Event>,
    conn: &mut BufReader<Conn>,
    http11: bool,
) -> bool {
    let mut rd = Reader::new(r, g, rx);
    let Ok(mut out) = Chunked::start(conn.get_mut(), "text/event-stream", true, http11) else {
        return false;
    };
    let mut last_write = Instant::now();
    let mut offset = g.echo.as_ref().map_or(0, |e| e.len());
    let first = match (g.kind, &g.echo) {
        (Kind::Chat, _) => Some(chunk(g, None, None, None, true)),
        (Kind::Text, Some(e)) => Some(chunk(g, Some(e), None, None, false)),
        (Kind::Text, None) => None,
    };
    if let Some(c) = first {
        if out.send(&event(&c)).is_err() {
            return false;
        }
    }
    let mut pending_lp: Vec<(Vec<u8>, TokenLogprob)> = Vec::new();
    let lp_value = |entries: &[(Vec<u8>, TokenLogprob)], off: usize| {
        g.logprobs.map(|_| match g.kind {
            Kind::Chat => chat_logprobs(r, entries),
            Kind::Text => text_logprobs(r, entries, off),
        })
    };
    let wait = Duration::from_millis(100).min(sh.opts.sse_ping);
    loop {
        let step = rd.next(out.inner(), wait);
        let sent = match step {
            Step::Text(t, lp) => {
                pending_lp.extend(lp);
                if t.is_empty() {
                    continue;
                }
                let v = lp_value(&pending_lp, offset);
                offset += pending_lp.iter().map(|e| e.0.len()).sum::<usize>();
                pending_lp.clear();
                out.send(&event(&chunk(g, Some(&t), v, None, false)))
            }
            Step::End(t, finish, usage) => {
                rd.log_end(g, finish, usage.as_ref());
                let mut bytes = Vec::new();
                if !t.is_empty() || !pending_lp.is_empty() {
                    let v = lp_value(&pending_lp, offset);
                    bytes.extend(event(&chunk(g, Some(&t), v, None, false)));
                }
                bytes.extend(event(&chunk(g, None, None, Some(finish), false)));
                if g.plan.include_usage {
                    let mut u = chunk(g, None, None, None, false);
                    u["choices"] = json!([]);
                    u["usage"] = rd.usage(g, usage.as_ref());
                    if let Some(t) = Reader::timings(usage.as_ref()) {
                        u["timings"] = t;
                    }
                    bytes.extend(event(&u));
                }
                bytes.extend_from_slice(b"data: [DONE]\n\n");
                return out.send(&bytes).and_then(|_| out.finish()).is_ok();
            }
            Step::Failed(e) => {
                let mut bytes = event(&e.body());
                bytes.extend_from_slice(b"data: [DONE]\n\n");
                return out.send(&bytes).and_then(|_| out.finish()).is_ok();
            }
            Step::Gone => return false,
            Step::Wait => {
                if last_write.elapsed() < sh.opts.sse_ping {
                    continue;
                }
                out.send(b": ping\n\n")
            }
        };
        if sent.is_err() {
            return false;
        }
        last_write = Instant::now();
    }
}
