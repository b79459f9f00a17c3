//! `onebitd`: the OpenAI-compatible inference daemon. Flags follow llama-server; each has
//! an `ONEBIT_ARG_*` environment twin, and a flag on the command line wins over its twin.
//!
//! Start-up order: listen (TCP, Unix socket, or sockets from systemd) → when root, load the
//! model and drop to `--user` → serve (`/health` 503 until the model is ready) → load and
//! warm up → `READY=1`. SIGTERM/SIGINT: `STOPPING=1`, stop accepting, let in-flight
//! requests finish for `--shutdown-grace` seconds, cut the rest with a final chunk, exit 0.

use clap::Parser;
use nix::sys::signal::{SigSet, Signal};
use onebit_engine::backend::{Backend, Opened, SelectOptions};
use onebit_engine::model::Model;
use onebit_engine::server::api::Defaults;
use onebit_engine::server::engine::{warm_up, EngineVocab};
use onebit_engine::server::listen::{self, Listener};
use onebit_engine::server::{http, privs, systemd, Options, Server};
use onebit_engine::tokenizer::Tokenizer;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{mpsc, Arc};
use std::time::Duration;

#[derive(Parser, Debug)]
#[command(
    name = "onebitd",
    version,
    about = "OpenAI-compatible BitNet b1.58 inference daemon"
)]
struct Args {
    /// Model: a GGUF file, a Hugging Face model directory, or `OWNER/NAME[:FILE]` fetched
    /// by `onebit pull` (default: the embedded model).
    #[arg(short = 'm', long, env = "ONEBIT_ARG_MODEL", value_parser = onebit_engine::hub::model_arg)]
    model: Option<PathBuf>,
    /// How a GGUF file gets into memory: uring (io_uring O_DIRECT reads into a sealed
    /// memfd, falling back to read where refused), read (pread into the memfd) or mmap (the
    /// file's page cache, as mapped windows).
    #[arg(long = "load", env = "ONEBIT_ARG_LOAD", default_value = "uring")]
    load: onebit_engine::format::LoadMethod,
    /// Model id clients send as `model` (default: the model file's name).
    #[arg(short = 'a', long, env = "ONEBIT_ARG_ALIAS")]
    alias: Option<String>,
    /// Tokens of context per slot (0: the model's own).
    #[arg(
        short = 'c',
        long = "ctx-size",
        env = "ONEBIT_ARG_CTX_SIZE",
        default_value_t = 0
    )]
    ctx_size: usize,
    /// Read every down_proj weight column (by default decoding skips the columns whose
    /// input is 0: the same results, fewer bytes read).
    #[arg(long, env = "ONEBIT_ARG_DENSE_DOWN")]
    dense_down: bool,
    /// Compute surface: auto (the iGPU when KFD reports one the kernels fit, else the CPU),
    /// cpu, igpu, npu+igpu or npu+cpu. A device surface keeps the CPU behind it: should the
    /// device fail, every stream continues on the CPU.
    #[arg(long, env = "ONEBIT_ARG_SURFACE", default_value = "auto")]
    surface: onebit_engine::backend::SurfaceChoice,
    /// Run device surfaces on the in-process KFD emulator (tests, CI).
    #[arg(long, env = "ONEBIT_ARG_EMULATOR")]
    emulator: bool,
    /// KV cache format of CPU sessions: f32 (exact), f16, q8_0 or q4_0 (half, about a
    /// quarter and about an eighth of f32's bytes; `q4` for short). Device surfaces keep
    /// f32, which their kernels read.
    #[arg(long = "kv", env = "ONEBIT_ARG_KV", default_value = "f16")]
    kv: onebit_engine::forward::KvFormat,
    /// Speculative decoding per slot: lookup (prompt n-grams), medusa (the model's Medusa
    /// heads) or auto (prompt lookup, only while it is measured faster than plain decoding) or off.
    #[arg(long, env = "ONEBIT_ARG_SPECULATE", default_value = "auto")]
    speculate: onebit_engine::speculate::Mode,
    /// Seconds one device step may take before its queue counts as hung and the CPU takes over.
    #[arg(
        long = "device-timeout",
        env = "ONEBIT_ARG_DEVICE_TIMEOUT",
        default_value_t = 30.0
    )]
    device_timeout: f64,
    /// With --emulator: inject a fault (hang@N, device-error@N: at the N-th step;
    /// enomem@N: at the N-th session), to test the CPU fallback.
    #[arg(
        long = "emulator-fault",
        env = "ONEBIT_ARG_EMULATOR_FAULT",
        requires = "emulator"
    )]
    emulator_fault: Option<onebit_engine::backend::igpu::FaultPlan>,
    /// Compute threads (default: all cores).
    #[arg(short = 't', long, env = "ONEBIT_ARG_THREADS")]
    threads: Option<usize>,
    /// Parallel sequences (slots); also `-np`.
    #[arg(long, env = "ONEBIT_ARG_PARALLEL", default_value_t = 4)]
    parallel: usize,
    /// Requests that may wait for a slot; more get 503 with Retry-After.
    #[arg(long = "queue", env = "ONEBIT_ARG_QUEUE", default_value_t = 64)]
    queue: usize,
    /// Prompt tokens a slot processes per engine step (bounds the decode stall a long prompt causes).
    #[arg(
        short = 'b',
        long = "batch-size",
        env = "ONEBIT_ARG_BATCH_SIZE",
        default_value_t = 128
    )]
    batch_size: usize,
    /// Tokens one engine step feeds in all while any stream decodes: decoding rows first,
    /// prompt chunks share the rest (at least 4), oldest request first. Bounds how long
    /// new prompts stall the running streams, at the price of their time to first token
    /// (see the README's serving section). 0: no limit; each prompt then feeds up to
    /// `--batch-size` tokens a step.
    #[arg(
        long = "step-tokens",
        env = "ONEBIT_ARG_STEP_TOKENS",
        default_value_t = 0
    )]
    step_tokens: usize,
    /// Address to listen on; a path ending in .sock (or containing /) is a Unix socket.
    /// Ignored when systemd passes sockets (socket activation).
    #[arg(long, env = "ONEBIT_ARG_HOST", default_value = "127.0.0.1")]
    host: String,
    #[arg(long, env = "ONEBIT_ARG_PORT", default_value_t = 8080)]
    port: u16,
    /// API key clients must send as `Authorization: Bearer KEY` (/health stays open).
    /// Also read from ONEBIT_API_KEY.
    #[arg(long = "api-key", env = "ONEBIT_ARG_API_KEY", hide_env_values = true)]
    api_key: Option<String>,
    /// File whose first line is the API key (keeps it out of `ps`).
    #[arg(long = "api-key-file", env = "ONEBIT_ARG_API_KEY_FILE")]
    api_key_file: Option<PathBuf>,
    /// Serve Prometheus metrics at GET /metrics.
    #[arg(long, env = "ONEBIT_ARG_METRICS")]
    metrics: bool,
    /// Do not serve the chat page at GET / (the API is unchanged).
    #[arg(long = "no-webui", env = "ONEBIT_ARG_NO_WEBUI")]
    no_webui: bool,
    /// Answer a request naming another `model` with 404, instead of serving it with the
    /// model loaded here (llama-server's behaviour, the default).
    #[arg(long = "strict-model", env = "ONEBIT_ARG_STRICT_MODEL")]
    strict_model: bool,
    /// Default new-token limit per request (-1: until the context is full).
    #[arg(short = 'n', long = "predict", env = "ONEBIT_ARG_PREDICT", default_value_t = -1, allow_negative_numbers = true)]
    predict: i64,
    #[arg(long = "temp", env = "ONEBIT_ARG_TEMP", default_value_t = 0.8)]
    temp: f32,
    #[arg(long = "top-k", env = "ONEBIT_ARG_TOP_K", default_value_t = 40)]
    top_k: usize,
    #[arg(long = "top-p", env = "ONEBIT_ARG_TOP_P", default_value_t = 0.95)]
    top_p: f32,
    #[arg(long = "min-p", env = "ONEBIT_ARG_MIN_P", default_value_t = 0.05)]
    min_p: f32,
    #[arg(
        long = "repeat-penalty",
        env = "ONEBIT_ARG_REPEAT_PENALTY",
        default_value_t = 1.0
    )]
    repeat_penalty: f32,
    #[arg(
        long = "repeat-last-n",
        env = "ONEBIT_ARG_REPEAT_LAST_N",
        default_value_t = 64
    )]
    repeat_last_n: usize,
    /// Default seed (-1: random per request).
    #[arg(short = 's', long, env = "ONEBIT_ARG_SEED", default_value_t = -1, allow_negative_numbers = true)]
    seed: i64,
    /// Seconds between `: ping` comments on quiet SSE streams.
    #[arg(
        long = "sse-ping-interval",
        env = "ONEBIT_ARG_SSE_PING_INTERVAL",
        default_value_t = 30.0
    )]
    sse_ping_interval: f64,
    /// Largest request body in bytes.
    #[arg(long = "max-body", env = "ONEBIT_ARG_MAX_BODY", default_value_t = 4 << 20)]
    max_body: usize,
    /// Open connections at most; more are answered 503 and closed.
    #[arg(
        long = "max-conns",
        env = "ONEBIT_ARG_MAX_CONNS",
        default_value_t = 512
    )]
    max_conns: usize,
    /// Open connections from one client (IP address, or uid on a Unix socket) at most.
    #[arg(
        long = "max-conns-per-client",
        env = "ONEBIT_ARG_MAX_CONNS_PER_CLIENT",
        default_value_t = 64
    )]
    max_conns_per_client: usize,
    /// Host names clients may use in `Host` besides localhost and this machine's IP
    /// addresses (comma-separated or repeated; `*`: any). Requests naming another host get
    /// 421, which stops DNS-rebinding pages.
    #[arg(
        long = "allowed-host",
        env = "ONEBIT_ARG_ALLOWED_HOST",
        value_delimiter = ','
    )]
    allowed_host: Vec<String>,
    /// Seconds an idle keep-alive connection stays open.
    #[arg(long = "timeout", env = "ONEBIT_ARG_TIMEOUT", default_value_t = 30)]
    timeout: u64,
    /// Seconds in-flight requests may run on after SIGTERM before they are cut.
    #[arg(
        long = "shutdown-grace",
        env = "ONEBIT_ARG_SHUTDOWN_GRACE",
        default_value_t = 10.0
    )]
    shutdown_grace: f64,
    /// Permission bits (octal) of a Unix socket onebitd creates; connecting needs write.
    #[arg(long = "socket-mode", env = "ONEBIT_ARG_SOCKET_MODE", default_value = "660", value_parser = parse_mode)]
    socket_mode: u32,
    /// Group of a Unix socket onebitd creates (default: the user's primary group).
    #[arg(long = "socket-group", env = "ONEBIT_ARG_SOCKET_GROUP")]
    socket_group: Option<String>,
    /// When started as root: the user to become before serving.
    #[arg(long, env = "ONEBIT_ARG_USER", default_value = "onebit")]
    user: String,
    /// Serve as root instead of dropping privileges (not recommended).
    #[arg(long = "allow-root", env = "ONEBIT_ARG_ALLOW_ROOT")]
    allow_root: bool,
}

fn parse_mode(s: &str) -> Result<u32, String> {
    u32::from_str_radix(s.trim_start_matches("0o"), 8)
        .ok()
        .filter(|m| *m <= 0o777)
        .ok_or_else(|| format!("{s:?} is not a file mode; give octal permission bits such as 660"))
}

/// Logs to stderr; `ONEBIT_LOG` (or `RUST_LOG`) sets the filter. Under journald
/// (`JOURNAL_STREAM`) no timestamps and no colours: the journal adds its own.
fn init_logging() {
    let filter = std::env::var("ONEBIT_LOG")
        .or_else(|_| std::env::var("RUST_LOG"))
        .unwrap_or_else(|_| "info".into());
    let journal = std::env::var_os("JOURNAL_STREAM").is_some();
    let builder = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .with_ansi(!journal && std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false);
    if journal {
        builder.without_time().init();
    } else {
        builder.init();
    }
}

/// llama-server spells some flags with two letters after one dash.
fn argv() -> Vec<String> {
    std::env::args()
        .map(|a| match a.as_str() {
            "-np" => "--parallel".to_string(),
            _ => a,
        })
        .collect()
}

fn main() -> ExitCode {
    // Block the stop signals in every thread (threads inherit the mask); one thread
    // receives them with sigwait.
    let mut stop = SigSet::empty();
    stop.add(Signal::SIGTERM);
    stop.add(Signal::SIGINT);
    if let Err(e) = stop.thread_block() {
        eprintln!("error: cannot block SIGTERM/SIGINT: {e}");
        return ExitCode::FAILURE;
    }
    let args = Args::parse_from(argv());
    init_logging();
    match run(args, stop) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            systemd::notify_or_log(&format!("STATUS=failed: {e}"));
            ExitCode::FAILURE
        }
    }
}

fn options(a: &Args) -> Result<Options, String> {
    let api_key = match (&a.api_key_file, &a.api_key) {
        (Some(f), _) => Some(
            std::fs::read_to_string(f)
                .map_err(|e| format!("cannot read --api-key-file {}: {e}", f.display()))?
                .lines()
                .next()
                .unwrap_or("")
                .trim()
                .to_string(),
        ),
        (None, Some(k)) => Some(k.clone()),
        (None, None) => std::env::var("ONEBIT_API_KEY").ok(),
    }
    .filter(|k| !k.is_empty());
    if a.parallel == 0 {
        return Err("--parallel must be at least 1".into());
    }
    let positive = |x: f64, zero_ok: bool| x.is_finite() && (x > 0.0 || zero_ok && x == 0.0);
    if !positive(a.sse_ping_interval, false) || !positive(a.shutdown_grace, true) {
        return Err("--sse-ping-interval must be > 0 and --shutdown-grace >= 0 seconds".into());
    }
    let sampling = onebit_engine::sampler::SamplingParams {
        temperature: a.temp,
        top_k: a.top_k,
        top_p: a.top_p,
        min_p: a.min_p,
        repeat_penalty: a.repeat_penalty,
        repeat_last_n: a.repeat_last_n,
        presence_penalty: 0.0,
        frequency_penalty: 0.0,
        seed: u64::try_from(a.seed).ok(),
    };
    sampling
        .validate()
        .map_err(|e| format!("default sampling: {e}"))?;
    let limits = http::Limits {
        max_body: a.max_body,
        idle: Duration::from_secs(a.timeout.max(1)),
        ..http::Limits::default()
    };
    Ok(Options {
        slots: a.parallel,
        queue: a.queue,
        feed: onebit_engine::generate::Feed {
            chunk: a.batch_size.max(1),
            step_tokens: a.step_tokens,
        },
        limits,
        api_key,
        allowed_hosts: a.allowed_host.clone(),
        metrics: a.metrics,
        sse_ping: Duration::from_secs_f64(a.sse_ping_interval),
        max_conns: a.max_conns.max(1),
        max_conns_per_client: a.max_conns_per_client.max(1),
        grace: Duration::from_secs_f64(a.shutdown_grace),
        defaults: Defaults {
            sampling,
            max_tokens: usize::try_from(a.predict).ok().filter(|&n| n > 0),
        },
        webui: !a.no_webui,
        strict_model: a.strict_model,
        speculate: onebit_engine::speculate::SpecOptions::new(a.speculate),
    })
}

type Loaded = (
    Opened,
    Arc<EngineVocab>,
    onebit_engine::server::backend::ModelInfo,
    Vec<u32>,
);

/// The model from `-m`, or the one compiled into this binary.
fn open_model(a: &Args) -> Result<(Model, Tokenizer, String), String> {
    let Some(path) = a.model.as_ref() else {
        return embedded_model();
    };
    systemd::notify_or_log(&format!("STATUS=loading {}", path.display()));
    let o = onebit_engine::format::LoadOptions {
        method: a.load,
        ..Default::default()
    };
    let (model, tok) = onebit_engine::format::load_with(path, &o).map_err(|e| e.to_string())?;
    // A pulled HF directory is a snapshot named by its commit: the repo names it better.
    let name = match onebit_engine::hub::repo_of(path) {
        Some(repo) if path.is_dir() => repo,
        _ => path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
    };
    let id = name
        .strip_suffix(".gguf")
        .map(str::to_string)
        .unwrap_or(name);
    Ok((model, tok, id))
}

#[cfg(feature = "embedded-model")]
fn embedded_model() -> Result<(Model, Tokenizer, String), String> {
    use onebit_engine::embedded;
    systemd::notify_or_log(&format!("STATUS=loading {}", embedded::NAME));
    tracing::info!(
        "no -m given: serving the embedded model {} ({})",
        embedded::NAME,
        embedded::SOURCE
    );
    let (model, tok) = embedded::load().map_err(|e| e.to_string())?;
    Ok((model, tok, "onebit-tiny".into()))
}

#[cfg(not(feature = "embedded-model"))]
fn embedded_model() -> Result<(Model, Tokenizer, String), String> {
    Err("no model given and this build has no embedded model: pass -m MODEL (a GGUF file or a Hugging Face model directory), or set ONEBIT_ARG_MODEL".into())
}

fn load(a: &Args) -> Result<Loaded, String> {
    let t0 = std::time::Instant::now();
    let (model, tok, file_id) = open_model(a)?;
    let id = a.alias.clone().unwrap_or(file_id);
    let n_vocab = model.config.vocab_size;
    let max = model.config.max_context;
    let ctx = if a.ctx_size == 0 {
        max
    } else {
        a.ctx_size.min(max)
    };
    let warm: Vec<u32> = tok
        .bos_id()
        .into_iter()
        .chain(tok.encode("Hello", false).unwrap_or_default())
        .collect();
    let info = onebit_engine::server::backend::ModelInfo::new(&model, id, ctx, n_vocab);
    if !(a.device_timeout.is_finite() && a.device_timeout > 0.0) {
        return Err("--device-timeout must be > 0 seconds".into());
    }
    let opts = SelectOptions {
        choice: a.surface,
        emulator: a.emulator,
        ctx,
        sessions: a.parallel,
        screened_head: true,
        sparse_down: !a.dense_down,
        device_timeout: Duration::from_secs_f64(a.device_timeout),
        fault: a.emulator_fault,
        kv_format: a.kv,
        // ONEBIT_NPU_ARTIFACTS names built NPU kernels (read by the selection).
        ..Default::default()
    };
    let backend = onebit_engine::backend::open(model, &opts).map_err(|e| e.to_string())?;
    let vocab = Arc::new(EngineVocab::new(Arc::new(tok), n_vocab));
    tracing::info!(
        model = info.id,
        ctx = info.n_ctx_slot,
        slots = a.parallel,
        surface = %backend.surface(),
        "loaded {} in {:.2} s",
        info.path,
        t0.elapsed().as_secs_f64()
    );
    Ok((backend, vocab, info, warm))
}

/// Warms the surface up and hands it to the server's engine thread.
fn serve_on<B: Backend + 'static>(
    server: &Server,
    mut backend: B,
    vocab: Arc<EngineVocab>,
    info: onebit_engine::server::backend::ModelInfo,
    warm: &[u32],
) -> Result<(), String> {
    systemd::notify_or_log("STATUS=warming up");
    warm_up(&mut backend, warm).map_err(|e| format!("warm-up failed: {e}"))?;
    server
        .set_ready(backend, vocab, info)
        .map_err(|e| e.to_string())
}

fn run(a: Args, stop: SigSet) -> Result<(), String> {
    let opts = options(&a)?;
    let (slots, feed) = (opts.slots, opts.feed);
    if let Some(t) = a.threads {
        if t == 0 {
            return Err("-t/--threads must be at least 1".into());
        }
        onebit_kernels::parallel::init_threads(t);
    }

    let (sig_tx, sig_rx) = mpsc::channel();
    let serving = Arc::new(AtomicBool::new(false));
    let serving2 = serving.clone();
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || loop {
            let Ok(sig) = stop.wait() else { continue };
            if !serving2.load(Relaxed) {
                tracing::info!(signal = %sig, "stopping during start-up");
                std::process::exit(0);
            }
            tracing::info!(signal = %sig, "shutting down");
            let _ = sig_tx.send(());
        })
        .map_err(|e| format!("cannot start the signal thread: {e}"))?;

    // Nothing onebitd runs may gain privileges, whether or not the unit says so.
    privs::forbid_new_privileges()?;
    let root = privs::is_root();
    let account = if root && !a.allow_root {
        Some(privs::lookup(&a.user)?)
    } else {
        None
    };
    let group = match &a.socket_group {
        Some(g) => Some(
            nix::unistd::Group::from_name(g)
                .map_err(|e| format!("cannot look up --socket-group {g}: {e}"))?
                .ok_or_else(|| format!("--socket-group {g}: no such group"))?
                .gid,
        ),
        None => account.as_ref().map(|u| u.gid),
    };
    let access = listen::SocketAccess {
        owner: account.as_ref().map(|u| u.uid),
        group,
        mode: a.socket_mode,
    };

    let mut listeners = listen::from_systemd().map_err(|e| e.to_string())?;
    if listeners.is_empty() {
        listeners.push(Listener::bind_with(&a.host, a.port, &access).map_err(|e| e.to_string())?);
    } else {
        tracing::info!(sockets = listeners.len(), "using sockets passed by systemd");
    }

    let mut loaded = None;
    if let Some(account) = &account {
        // Open everything that needs root first: the model file, later the device nodes.
        loaded = Some(load(&a)?);
        let (uid, gid) = privs::drop_to(account)?;
        tracing::info!(user = a.user, %uid, %gid, "dropped root privileges");
    } else if root {
        tracing::warn!("serving as root because of --allow-root");
    }

    let server =
        Server::start(opts, listeners).map_err(|e| format!("cannot start the server: {e}"))?;
    serving.store(true, Relaxed);
    let watchdog_stop = Arc::new(AtomicBool::new(false));
    let server = Arc::new(server);
    if let Some(iv) = systemd::watchdog_interval() {
        spawn_watchdog(server.clone(), iv, watchdog_stop.clone());
    }
    let (backend, vocab, info, warm) = match loaded {
        Some(l) => l,
        None => load(&a)?,
    };
    let id = info.id.clone();
    match backend {
        Opened::Cpu(b) => serve_on(&server, b, vocab, info, &warm)?,
        Opened::Igpu(b) => serve_on(&server, b, vocab, info, &warm)?,
        Opened::NpuCpu(b) => serve_on(&server, b, vocab, info, &warm)?,
        Opened::NpuIgpu(b) => serve_on(&server, b, vocab, info, &warm)?,
    }
    systemd::notify_or_log(&format!("READY=1\nSTATUS=serving {id}"));
    tracing::info!(
        model = id,
        slots,
        prompt_chunk = feed.chunk,
        step_tokens = feed.step_tokens,
        "ready (while streams decode, a step feeds at most step_tokens tokens; 0: no limit)"
    );

    let _ = sig_rx.recv();
    systemd::notify_or_log("STOPPING=1\nSTATUS=finishing in-flight requests");
    watchdog_stop.store(true, Relaxed);
    server.shutdown();
    Ok(())
}

/// Pings the watchdog at half its interval, but only while the engine is idle or has
/// made progress since the last ping: a wedged engine stops the pings and systemd
/// restarts the daemon.
fn spawn_watchdog(server: Arc<Server>, iv: Duration, stop: Arc<AtomicBool>) {
    let weak = Arc::downgrade(&server);
    drop(server);
    let _ = std::thread::Builder::new()
        .name("watchdog".into())
        .spawn(move || {
            let mut dog = systemd::Watchdog::default();
            let mut stalled = Duration::ZERO;
            while !stop.load(Relaxed) {
                let Some(server) = weak.upgrade() else { return };
                let progress = server.progress();
                drop(server);
                if dog.tick(progress) {
                    stalled = Duration::ZERO;
                    systemd::notify_or_log("WATCHDOG=1");
                } else {
                    stalled += iv / 2;
                    tracing::warn!(
                        stalled_s = stalled.as_secs_f64(),
                        "engine made no progress; withholding the watchdog ping"
                    );
                }
                std::thread::sleep(iv / 2);
            }
        });
}
