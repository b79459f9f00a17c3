//! `onebit bench`: llama-bench's measurements (pp = prompt processing, tg = decode, random
//! token ids, mean ± sd over repetitions, each after `-d` tokens already in the KV cache)
//! plus the decode jitter (p50/p99 ms per token) and the memory bandwidth measured in the
//! same run, with the fraction of the decode roofline that was reached: the bytes each
//! token actually read (down_proj columns read, the head used, the KV at its depth) over
//! the bandwidth.

use crate::bandwidth::{self, Probe};
use crate::common::CliResult;
use crate::roofline::{ceiling, Budget};
use onebit_engine::backend::cpu::{CpuBackend, CpuSession};
use onebit_engine::backend::select::resolve;
use onebit_engine::backend::{open, Backend, Need, SelectOptions, Surface, SurfaceChoice};
use onebit_engine::forward::{
    forward, forward_greedy, KvFormat, LogitsMode, Session, SCREENED_HEAD_ROWS,
};
use onebit_engine::generate::{step, Options, Stream};
use onebit_engine::model::{Model, SPARSE_COLUMNS};
use onebit_engine::sampler::SamplingParams;
use onebit_engine::speculate::{Mode, SpecOptions, SpecStats};
use onebit_engine::synth::{self, Preset, Rng};
use onebit_kernels::embd::EmbdType;
use onebit_kernels::parallel;
use onebit_kernels::screen::Int8Head;
use onebit_kernels::ternary::Isa;
use serde::Serialize;
use std::path::PathBuf;
use std::time::Instant;

#[derive(clap::Args, Clone, Debug)]
pub struct Args {
    /// Model: a GGUF file, HF directory or pulled `OWNER/NAME[:FILE]`.
    #[arg(short = 'm', long = "model", required_unless_present = "preset", value_parser = onebit_engine::hub::model_arg)]
    pub model: Option<PathBuf>,
    /// How a GGUF file gets into memory: uring (io_uring O_DIRECT reads into a sealed
    /// memfd, falling back to read where refused), read (pread into the memfd) or mmap (the
    /// file's page cache, as mapped windows).
    #[arg(long = "load", default_value = "uring")]
    pub load: onebit_engine::format::LoadMethod,
    /// Benchmark a synthetic model built in memory instead of a file (2b4t, small).
    #[arg(long, conflicts_with = "model")]
    pub preset: Option<String>,
    /// Prompt lengths for the pp tests, comma-separated (0 skips pp).
    #[arg(
        short = 'p',
        long = "n-prompt",
        value_delimiter = ',',
        default_value = "128"
    )]
    pub n_prompt: Vec<usize>,
    /// Generated tokens for the tg tests, comma-separated (0 skips tg).
    #[arg(
        short = 'n',
        long = "n-gen",
        value_delimiter = ',',
        default_value = "64"
    )]
    pub n_gen: Vec<usize>,
    /// Tokens already in the KV cache before each test, comma-separated (llama-bench's
    /// `-d`): the cache is filled once per depth, untimed, and cut back to it before every
    /// repetition. A context beyond the model's trained one is allowed, as llama-bench does.
    #[arg(
        short = 'd',
        long = "n-depth",
        value_delimiter = ',',
        default_value = "0"
    )]
    pub n_depth: Vec<usize>,
    /// Thread counts to test, comma-separated.
    #[arg(short = 't', long = "threads", value_delimiter = ',')]
    pub threads: Vec<usize>,
    /// Repetitions of each test.
    #[arg(short = 'r', long = "repetitions", default_value_t = 5)]
    pub reps: usize,
    /// Output format: md or json.
    #[arg(short = 'o', long = "output", default_value = "md")]
    pub output: String,
    /// Also write the JSON result to this file.
    #[arg(long)]
    pub json_out: Option<PathBuf>,
    /// Skip the bandwidth measurement (no roofline column).
    #[arg(long)]
    pub no_bandwidth: bool,
    /// Also time greedy decoding with the int8-screened head (exact argmax, half the head
    /// bytes), after checking it picks the F16 head's token.
    #[arg(long)]
    pub greedy_head: bool,
    /// down_proj: `sparse` reads only the weight columns whose input is nonzero (lossless,
    /// the default), `dense` reads them all, `both` times each on its own.
    /// LM head for the sampled tg rows: `screened` (the default everywhere: the int8 copy
    /// picks the rows that could be among the sampler's top k and only those are scored in
    /// full, the same tokens), `full` (every row of the float head), or `both`.
    #[arg(long, default_value = "screened", value_parser = ["screened", "full", "both"])]
    pub head: String,
    /// KV cache format on the CPU: f32 (exact), f16, q8_0 or q4_0 (device surfaces keep f32).
    #[arg(long = "kv", default_value = "f16")]
    pub kv: KvFormat,
    #[arg(long, default_value = "sparse")]
    pub down: String,
    /// Compute surface to time: auto, cpu or igpu (pp and tg through the same backend the
    /// other commands use; the CPU-only rows — bandwidth, greedy head, down_proj — need cpu).
    #[arg(long, default_value = "auto")]
    pub surface: SurfaceChoice,
    /// Time device surfaces on the in-process KFD emulator (checks the path; its speed
    /// says nothing about a GPU's).
    #[arg(long)]
    pub emulator: bool,
    /// Also time each tg test speculating (lookup, medusa or auto; off: no such rows), and
    /// report the tokens each pass over the weights produced.
    #[arg(long, default_value = "off")]
    pub speculate: onebit_engine::speculate::Mode,
}

impl Args {
    fn prompts(&self) -> impl Iterator<Item = usize> + '_ {
        self.n_prompt.iter().copied().filter(|&n| n > 0)
    }

    fn gens(&self) -> impl Iterator<Item = usize> + '_ {
        self.n_gen.iter().copied().filter(|&n| n > 0)
    }

    /// Tokens a session must hold: the deepest cache plus the longest test after it.
    fn context(&self) -> usize {
        let depth = self.n_depth.iter().copied().max().unwrap_or(0);
        let test = self.prompts().chain(self.gens()).max().unwrap_or(0);
        depth + test + 1
    }
}

#[derive(Serialize, Clone, Debug)]
pub struct Row {
    pub threads: usize,
    /// llama-bench's name: `pp512`, `tg64 @ d4096`, then what differs from a plain run.
    pub test: String,
    pub n_prompt: usize,
    pub n_gen: usize,
    pub n_depth: usize,
    /// How tg picks tokens: `default` (llama.cpp's default sampling, full head) or
    /// `greedy-screened` (argmax through the int8-screened head).
    pub sampling: &'static str,
    /// down_proj on the CPU: `sparse` or `dense`.
    pub down: Option<&'static str>,
    pub ts_mean: f64,
    pub ts_sd: f64,
    pub samples_ts: Vec<f64>,
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    pub bandwidth_gbs: Option<f64>,
    /// The bytes one decoded token read, which the roofline divides the bandwidth by.
    pub bytes_per_token: Option<f64>,
    pub roofline_ts: Option<f64>,
    /// Rate over roofline, when at most 1.
    pub roofline_fraction: Option<f64>,
    /// Rate over roofline when above 1: the bandwidth probe read low, so it is no result.
    pub roofline_probe_error: Option<f64>,
    /// The fraction of down_proj weight columns read (sparse down_proj only).
    pub down_columns_read: Option<f64>,
    /// Speculating tg rows: tokens produced per pass over the weights, and the share of
    /// draft tokens accepted.
    pub tokens_per_pass: Option<f64>,
    pub acceptance: Option<f64>,
}

/// What a row measured, before any roofline.
struct Test {
    threads: usize,
    n_prompt: usize,
    n_gen: usize,
    n_depth: usize,
    sampling: &'static str,
    down: Option<&'static str>,
    /// Appended to the test's name.
    label: String,
}

impl Test {
    fn name(&self) -> String {
        let (kind, n) = if self.n_prompt > 0 {
            ("pp", self.n_prompt)
        } else {
            ("tg", self.n_gen)
        };
        let depth = if self.n_depth > 0 {
            format!(" @ d{}", self.n_depth)
        } else {
            String::new()
        };
        format!("{kind}{n}{depth}{}", self.label)
    }

    fn row(self, samples: Vec<f64>) -> Row {
        let (m, sd) = mean_sd(&samples);
        Row {
            threads: self.threads,
            test: self.name(),
            n_prompt: self.n_prompt,
            n_gen: self.n_gen,
            n_depth: self.n_depth,
            sampling: self.sampling,
            down: self.down,
            ts_mean: m,
            ts_sd: sd,
            samples_ts: samples,
            p50_ms: None,
            p99_ms: None,
            bandwidth_gbs: None,
            bytes_per_token: None,
            roofline_ts: None,
            roofline_fraction: None,
            roofline_probe_error: None,
            down_columns_read: None,
            tokens_per_pass: None,
            acceptance: None,
        }
    }
}

#[derive(Serialize, Debug)]
pub struct Report {
    pub model: String,
    pub path: String,
    pub size_bytes: u64,
    pub params: u64,
    pub backend: String,
    /// The best pattern of the probe at the last thread count.
    pub bandwidth_gbs: Option<f64>,
    /// Every thread count's probe, pattern by pattern.
    pub bandwidth_probes: Vec<(usize, Probe)>,
    /// At context 0, every down_proj column and the full head.
    pub decode_bytes_per_token: f64,
    /// KV cache of the longest session of the run.
    pub kv_cache_bytes: u64,
    /// Peak RSS of the plain (F16 head) runs.
    pub peak_rss_bytes: Option<u64>,
    /// Peak RSS once the int8 screening copy exists (with --greedy-head).
    pub peak_rss_greedy_bytes: Option<u64>,
    pub results: Vec<Row>,
}

fn mean_sd(x: &[f64]) -> (f64, f64) {
    let n = x.len() as f64;
    let m = x.iter().sum::<f64>() / n;
    let var = if x.len() > 1 {
        x.iter().map(|v| (v - m) * (v - m)).sum::<f64>() / (n - 1.0)
    } else {
        0.0
    };
    (m, var.sqrt())
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i]
}

/// Restarts VmHWM at the current RSS (Linux ≥ 4.0: `5` to clear_refs).
fn reset_peak_rss() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

/// Peak resident set of this process (VmHWM).
pub fn peak_rss() -> Option<u64> {
    status_bytes("VmHWM").map(|b| b as u64)
}

/// A `/proc/self/status` field given in kB (`VmHWM`, the peak resident set; `RssAnon`,
/// `RssShmem`), in bytes.
pub fn status_bytes(field: &str) -> Option<usize> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = s.lines().find(|l| l.split(':').next() == Some(field))?;
    let kb: usize = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

fn random_ids_of(vocab: usize, n: usize, seed: u64) -> Vec<u32> {
    let mut rng = Rng::new(seed, 0xB0);
    (0..n).map(|_| rng.below(vocab) as u32).collect()
}

/// A stream of the one generation loop for `prompt`, sampling `max_new` tokens at
/// llama.cpp's default settings (the full F16 head; the screened one has its own row)
/// with a fixed seed and no stop token, so every run does the same work.
fn bench_stream(prompt: Vec<u32>, max_new: usize, seed: u64) -> Stream {
    let opts = Options {
        max_new,
        sampling: SamplingParams {
            seed: Some(seed),
            ..SamplingParams::default()
        },
        stop_ids: Vec::new(),
        logprobs: None,
    };
    Stream::new(prompt, 0, opts)
}

/// One session per depth, filled once (untimed) and cut back to its depth before each run,
/// so a deep cache costs its prefill once per process, not once per repetition.
struct Depths<S> {
    capacity: usize,
    filled: Vec<(usize, S)>,
}

impl<S> Depths<S> {
    fn new(capacity: usize) -> Self {
        Self {
            capacity,
            filled: Vec::new(),
        }
    }

    /// The session holding exactly `depth` random tokens.
    fn at<B: Backend<Session = S>>(
        &mut self,
        b: &mut B,
        vocab: usize,
        depth: usize,
    ) -> onebit_engine::Result<&mut S> {
        let i = match self.filled.iter().position(|(d, _)| *d == depth) {
            Some(i) => i,
            None => {
                let mut s = b.new_session(self.capacity)?;
                let t0 = Instant::now();
                let ids = random_ids_of(vocab, depth, 0xD0 + depth as u64);
                // Chunks bound the activations' memory; the fill is not timed anyway.
                for chunk in ids.chunks(512) {
                    b.step(&mut [&mut s], &[chunk], &[Need::Nothing])?;
                }
                if depth > 0 {
                    tracing::info!(
                        "filled the KV cache with {depth} tokens in {:.1} s (untimed)",
                        t0.elapsed().as_secs_f64()
                    );
                }
                self.filled.push((depth, s));
                self.filled.len() - 1
            }
        };
        let s = &mut self.filled[i].1;
        b.truncate(s, depth);
        Ok(s)
    }
}

/// One pp run on any surface, through the generation loop: `n` prompt tokens after what
/// `s` holds, in one step, which also samples the first new token; tokens per second.
fn run_pp<B: Backend>(
    b: &mut B,
    s: &mut B::Session,
    vocab: usize,
    n: usize,
    rep: usize,
) -> onebit_engine::Result<f64> {
    let mut stream = bench_stream(random_ids_of(vocab, n, rep as u64), 1, rep as u64);
    let t0 = Instant::now();
    step(b, &mut [(s, &mut stream)], n)?;
    Ok(n as f64 / t0.elapsed().as_secs_f64())
}

/// One tg run on any surface, through the generation loop: `n` steps after a one-token
/// prompt appended to what `s` holds, each feeding the token the last one sampled;
/// per-step seconds.
fn run_tg<B: Backend>(
    b: &mut B,
    s: &mut B::Session,
    vocab: usize,
    n: usize,
    rep: usize,
) -> onebit_engine::Result<Vec<f64>> {
    let prompt = random_ids_of(vocab, 1, 1000 + rep as u64);
    let mut stream = bench_stream(prompt, n, rep as u64);
    let mut times = Vec::with_capacity(n);
    while times.len() < n {
        let t0 = Instant::now();
        let adv = step(b, &mut [(&mut *s, &mut stream)], 1)?;
        times.push(t0.elapsed().as_secs_f64());
        if adv.iter().any(|a| a.finish.is_some()) {
            break;
        }
    }
    Ok(times)
}

/// [`run_tg`] speculating as `spec` says: `n` tokens, each step's time shared by the
/// tokens it produced; per-token seconds and what speculation did.
fn run_tg_spec<B: Backend>(
    b: &mut B,
    s: &mut B::Session,
    vocab: usize,
    (n, rep): (usize, usize),
    spec: SpecOptions,
) -> onebit_engine::Result<(Vec<f64>, SpecStats)> {
    let prompt = random_ids_of(vocab, 1, 1000 + rep as u64);
    let mut stream = bench_stream(prompt, n, rep as u64).with_speculation(spec);
    let mut times = Vec::with_capacity(n);
    while times.len() < n {
        let t0 = Instant::now();
        let adv = step(b, &mut [(&mut *s, &mut stream)], 1)?.remove(0);
        let dt = t0.elapsed().as_secs_f64();
        let k = adv.tokens.len().max(1);
        times.extend(std::iter::repeat_n(dt / k as f64, k));
        if adv.finish.is_some() {
            break;
        }
    }
    let stats = stream.spec_stats().cloned().unwrap_or_default();
    Ok((times, stats))
}

/// Like [`run_tg`], through the int8-screened greedy head, after what `s` holds.
fn run_tg_greedy(
    model: &Model,
    s: &mut Session,
    screen: &Int8Head,
    n: usize,
    rep: usize,
) -> onebit_engine::Result<Vec<f64>> {
    let ids = random_ids_of(model.config.vocab_size, n, 1000 + rep as u64);
    let mut times = Vec::with_capacity(n);
    for id in ids {
        let t0 = Instant::now();
        forward_greedy(model, s, &[id], screen)?;
        times.push(t0.elapsed().as_secs_f64());
    }
    Ok(times)
}

/// Steps where the screened head and the F16 head's argmax agree, out of `n`.
fn check_greedy(
    model: &Model,
    screen: &Int8Head,
    n: usize,
) -> onebit_engine::Result<(usize, usize)> {
    let ids = random_ids_of(model.config.vocab_size, n, 77);
    let (mut a, mut b) = (Session::new(model, n), Session::new(model, n));
    let mut same = 0;
    for id in ids {
        let logits = forward(model, &mut a, &[id], LogitsMode::Last)?;
        let g = forward_greedy(model, &mut b, &[id], screen)?;
        same += usize::from(onebit_engine::sampler::argmax(&logits) == g);
    }
    Ok((same, n))
}

/// `reps` decode runs: tokens per second of each, and every token's time (the column
/// counter restarts, so it describes these runs).
fn decode_reps(
    reps: usize,
    mut run: impl FnMut(usize) -> onebit_engine::Result<Vec<f64>>,
) -> onebit_engine::Result<(Vec<f64>, Vec<f64>)> {
    let (mut samples, mut all) = (Vec::new(), Vec::new());
    SPARSE_COLUMNS.reset();
    SCREENED_HEAD_ROWS.reset();
    for r in 0..reps {
        let times = run(r)?;
        samples.push(times.len() as f64 / times.iter().sum::<f64>());
        all.extend(times);
    }
    Ok((samples, all))
}

/// Where a surface's decode rows get their roofline: the bandwidth and the bytes a token
/// read at a context, from the counters of the runs just made.
struct Roof<'a> {
    bandwidth: Option<f64>,
    bytes_at: &'a dyn Fn(usize) -> f64,
}

/// The pp and tg rows at every depth, through `b`: the same code for every surface.
fn timed_rows<B: Backend>(
    b: &mut B,
    depths: &mut Depths<B::Session>,
    a: &Args,
    vocab: usize,
    test: &dyn Fn(usize, usize, usize) -> Test,
    roof: Option<&Roof<'_>>,
) -> onebit_engine::Result<Vec<Row>> {
    let mut rows = Vec::new();
    // Warm-up (page in the weights, start the threads), as llama-bench does.
    let s = depths.at(b, vocab, 0)?;
    if let Some(n) = a.prompts().min() {
        run_pp(b, s, vocab, n.min(16), 0)?;
        b.truncate(s, 0);
    }
    run_tg(b, s, vocab, 2, 0)?;
    for &depth in &a.n_depth {
        for n in a.prompts() {
            SPARSE_COLUMNS.reset();
            let mut samples = Vec::with_capacity(a.reps);
            for r in 0..a.reps {
                let s = depths.at(b, vocab, depth)?;
                samples.push(run_pp(b, s, vocab, n, r)?);
            }
            let mut row = test(n, 0, depth).row(samples);
            row.down_columns_read = columns_read(&row);
            rows.push(row);
        }
        for n in a.gens() {
            let (samples, all) = decode_reps(a.reps, |r| {
                let s = depths.at(b, vocab, depth)?;
                run_tg(b, s, vocab, n, r)
            })?;
            let row = test(0, n, depth).row(samples);
            rows.push(decode_row(row, all, roof, depth + n / 2));
            if a.speculate != Mode::Off {
                let stats = std::cell::RefCell::new(SpecStats::default());
                let (samples, all) = decode_reps(a.reps, |r| {
                    let s = depths.at(b, vocab, depth)?;
                    let (times, st) =
                        run_tg_spec(b, s, vocab, (n, r), SpecOptions::new(a.speculate))?;
                    stats.borrow_mut().add(&st);
                    Ok(times)
                })?;
                let stats = stats.into_inner();
                let mut row = test(0, n, depth).row(samples);
                row.test = format!(
                    "{} speculate {} ({:.2} tok/pass, {:.0} % accepted)",
                    row.test,
                    a.speculate,
                    stats.tokens_per_pass(),
                    100.0 * stats.acceptance()
                );
                row.tokens_per_pass = Some(stats.tokens_per_pass());
                row.acceptance = Some(stats.acceptance());
                rows.push(decode_row(row, all, roof, depth + n / 2));
            }
        }
    }
    Ok(rows)
}

/// The plain rows of one down_proj configuration at `t` threads on the CPU, with the
/// screened head, the full head or both (`--head`).
fn cpu_rows(
    model: &Model,
    a: &Args,
    depths: &mut Depths<CpuSession>,
    t: usize,
    bw: Option<f64>,
    label: &str,
) -> onebit_engine::Result<Vec<Row>> {
    let sparse = model.has_sparse_down();
    let heads: &[bool] = match a.head.as_str() {
        "full" => &[false],
        "both" => &[true, false],
        _ => &[true],
    };
    let mut rows = Vec::new();
    for (i, &screened) in heads.iter().enumerate() {
        let budget = Budget::of_model(model, a.kv);
        let bytes_at = |ctx: usize| {
            let read = SPARSE_COLUMNS.density().filter(|_| sparse).unwrap_or(1.0);
            let b = budget.clone().with_down_density(read);
            match SCREENED_HEAD_ROWS.density().filter(|_| screened) {
                Some(d) => b.with_head(screened_head_bytes(model, d)),
                None => b,
            }
            .decode_bytes(ctx)
        };
        let roof = Roof {
            bandwidth: bw,
            bytes_at: &bytes_at,
        };
        let head = if screened { "" } else { ", full head" };
        let test = |n_prompt, n_gen, n_depth| Test {
            threads: t,
            n_prompt,
            n_gen,
            n_depth,
            sampling: if screened {
                "default"
            } else {
                "default-full-head"
            },
            down: Some(if sparse { "sparse" } else { "dense" }),
            label: format!("{label}{head}"),
        };
        let mut cpu = CpuBackend::new(model, 0)
            .with_kv_format(a.kv)
            .with_screened_head(screened);
        // The prompt rows do not depend on the head: time them once.
        let mut mine = a.clone();
        if i > 0 {
            mine.n_prompt.clear();
        }
        rows.extend(timed_rows(
            &mut cpu,
            depths,
            &mine,
            model.config.vocab_size,
            &test,
            Some(&roof),
        )?);
        if let Some(d) = SCREENED_HEAD_ROWS.density().filter(|_| screened) {
            tracing::info!(
                "tg{label} ({t} threads): the screened head scored {:.2} % of its rows in full",
                d * 100.0
            );
        }
    }
    Ok(rows)
}

/// Bytes a step reads of a screened head: the int8 copy with its two scales per row, and
/// `scored` (0..=1) of the float head's rows.
fn screened_head_bytes(model: &Model, scored: f64) -> f64 {
    let e = &model.embed_tokens;
    (e.rows * e.cols + e.rows * 8) as f64 + scored * e.data.len() as f64
}

fn describe(model: &Model) -> String {
    let arch = model
        .provenance
        .metadata
        .iter()
        .find(|(k, _)| k == "general.architecture")
        .map_or("bitnet-b1.58", |(_, v)| v.as_str().trim_matches('"'));
    let b = model.n_params() as f64 / 1e9;
    let size = if b >= 1.0 {
        format!("{}B", b.floor() as u64)
    } else {
        format!("{}M", (b * 1000.0).round() as u64)
    };
    format!(
        "{arch} {size} {} ({} head)",
        model.provenance.ternary_type,
        model.embed_tokens.kind.name()
    )
}

pub fn main(mut a: Args) -> CliResult {
    if a.reps == 0 {
        return Err("-r/--repetitions must be at least 1".into());
    }
    if !matches!(a.output.as_str(), "md" | "json") {
        return Err(format!("-o {}: use md or json", a.output).into());
    }
    if a.prompts().next().is_none() && a.gens().next().is_none() {
        return Err(
            "-p and -n are both 0: give a prompt length or a number of tokens to generate".into(),
        );
    }
    a.n_depth.sort_unstable();
    a.n_depth.dedup();
    let downs: &[bool] = match a.down.as_str() {
        "sparse" => &[true],
        "dense" => &[false],
        "both" => &[true, false],
        other => return Err(format!("--down {other}: use sparse, dense or both").into()),
    };
    let mut threads = a.threads.clone();
    if threads.is_empty() {
        threads.push(std::thread::available_parallelism().map_or(1, |n| n.get()));
    }
    if threads.contains(&0) {
        return Err("-t: thread counts must be at least 1".into());
    }
    parallel::init_threads(*threads.iter().max().unwrap_or(&1));
    let mut model = match (&a.model, &a.preset) {
        (Some(path), _) => {
            onebit_engine::format::load_with(path, &crate::common::load_options(a.load))?.0
        }
        (None, Some(p)) => {
            let preset = Preset::parse(p)
                .ok_or_else(|| format!("unknown preset {p:?}: use 2b4t or small"))?;
            synth::model(preset, 1, EmbdType::F16)?
        }
        (None, None) => return Err("give -m MODEL or --preset NAME".into()),
    };
    let context = a.context();
    if context > model.config.max_context {
        tracing::warn!(
            "depth + test need {context} positions, beyond the model's trained context of {}: \
             running past it, as llama-bench does",
            model.config.max_context
        );
        model.config.max_context = context;
    }
    let select = SelectOptions {
        choice: a.surface,
        emulator: a.emulator,
        ctx: context.max(16),
        kv_format: a.kv,
        ..SelectOptions::default()
    };
    if resolve(&select, &model) != Surface::Cpu {
        return device_bench(&a, model, &select, context);
    }
    let backend = format!("CPU ({}, {} KV)", Isa::best().name(), a.kv);
    model.use_lanes();
    let mut rows = Vec::new();
    let mut probes: Vec<(usize, Probe)> = Vec::new();
    let mut plain_rss = None;
    let mut depths = Depths::new(context);
    for (i, &sparse) in downs.iter().enumerate() {
        if sparse {
            model.use_sparse_down();
        } else {
            model.use_dense_down();
        }
        let label = if downs.len() > 1 && !sparse {
            " dense down_proj"
        } else {
            ""
        };
        for &t in &threads {
            let t = parallel::set_active_threads(t);
            if i == 0 && !a.no_bandwidth {
                probes.push((t, bandwidth::measure(5)));
                // The bandwidth buffer is freed; restart the peak-RSS count so it shows the model's.
                reset_peak_rss();
            }
            let bw = bandwidth_at(&probes, t);
            rows.extend(cpu_rows(&model, &a, &mut depths, t, bw, label)?);
        }
        // The first configuration's peak RSS: what a default run costs.
        if i == 0 {
            plain_rss = peak_rss();
        }
    }
    if downs[0] && !model.has_sparse_down() {
        model.use_sparse_down();
    }
    let screen = if a.greedy_head && a.gens().next().is_some() {
        let t0 = Instant::now();
        let s = Int8Head::new_releasing(&model.head().view(), &|r| {
            model.head().data.release_range(r)
        })
        .ok_or("--greedy-head needs an F16 embedding (the int8 copy screens an F16 head)")?;
        let (same, n) = check_greedy(&model, &s, 8)?;
        eprintln!(
            "int8-screened head: {:.0} MB, built in {:.1} s; same token as the F16 head in {same}/{n} steps",
            s.bytes() as f64 / 1e6,
            t0.elapsed().as_secs_f64()
        );
        if same != n {
            return Err("the int8-screened head picked a different token than the F16 head".into());
        }
        // The check read the whole F16 head; greedy decoding reads only rescored rows.
        model.head().data.release_pages();
        reset_peak_rss();
        Some(s)
    } else {
        None
    };
    if let Some(screen) = &screen {
        rows.extend(greedy_rows(
            &model,
            &a,
            &mut depths,
            screen,
            &threads,
            &probes,
        )?);
    }
    let report = Report {
        model: describe(&model),
        path: model.provenance.path.display().to_string(),
        size_bytes: model.provenance.file_bytes,
        params: model.n_params(),
        backend,
        bandwidth_gbs: probes.last().map(|(_, p)| p.best_gbs),
        bandwidth_probes: probes,
        decode_bytes_per_token: Budget::of_model(&model, a.kv).decode_bytes(0),
        kv_cache_bytes: (context * Session::kv_bytes_per_token(&model, a.kv)) as u64,
        peak_rss_bytes: plain_rss,
        peak_rss_greedy_bytes: screen.as_ref().and(peak_rss()),
        results: rows,
    };
    emit(&a, &report)
}

/// The probe's best at `t` threads.
fn bandwidth_at(probes: &[(usize, Probe)], t: usize) -> Option<f64> {
    probes
        .iter()
        .find(|(n, _)| *n == t)
        .map(|(_, p)| p.best_gbs)
}

/// Greedy decoding through the int8-screened head at every depth and thread count.
fn greedy_rows(
    model: &Model,
    a: &Args,
    depths: &mut Depths<CpuSession>,
    screen: &Int8Head,
    threads: &[usize],
    probes: &[(usize, Probe)],
) -> onebit_engine::Result<Vec<Row>> {
    let sparse = model.has_sparse_down();
    let vocab = model.config.vocab_size;
    // The int8 copy and its scales, plus the float rows the screen kept, as counted.
    let budget = Budget::of_model(model, a.kv);
    let bytes_at = |ctx: usize| {
        let read = SPARSE_COLUMNS.density().filter(|_| sparse).unwrap_or(1.0);
        let scored = SCREENED_HEAD_ROWS.density().unwrap_or(0.0);
        debug_assert_eq!(screen.bytes(), screened_head_bytes(model, 0.0) as usize);
        budget
            .clone()
            .with_down_density(read)
            .with_head(screened_head_bytes(model, scored))
            .decode_bytes(ctx)
    };
    let mut cpu = CpuBackend::new(model, 0).with_kv_format(a.kv);
    let mut rows = Vec::new();
    for &t in threads {
        let t = parallel::set_active_threads(t);
        let roof = Roof {
            bandwidth: bandwidth_at(probes, t),
            bytes_at: &bytes_at,
        };
        for &depth in &a.n_depth {
            for n in a.gens() {
                let (samples, all) = decode_reps(a.reps, |r| {
                    let s = depths.at(&mut cpu, vocab, depth)?;
                    run_tg_greedy(model, &mut s.kv, screen, n, r)
                })?;
                let row = Test {
                    threads: t,
                    n_prompt: 0,
                    n_gen: n,
                    n_depth: depth,
                    sampling: "greedy-screened",
                    down: Some(if sparse { "sparse" } else { "dense" }),
                    label: " greedy, int8-screened head".into(),
                }
                .row(samples);
                rows.push(decode_row(row, all, Some(&roof), depth + n / 2));
            }
        }
    }
    Ok(rows)
}

fn emit(a: &Args, report: &Report) -> CliResult {
    let json = serde_json::to_string_pretty(report)?;
    if let Some(p) = &a.json_out {
        std::fs::write(p, &json).map_err(|e| format!("cannot write {}: {e}", p.display()))?;
    }
    if a.output == "json" {
        println!("{json}");
    } else {
        print_md(report);
    }
    Ok(())
}

/// pp and tg on a device surface, through the backend every other command uses.
fn device_bench(a: &Args, model: Model, select: &SelectOptions, context: usize) -> CliResult {
    let (name, path, size, params) = (
        describe(&model),
        model.provenance.path.display().to_string(),
        model.provenance.file_bytes,
        model.n_params(),
    );
    let vocab = model.config.vocab_size;
    // Device surfaces keep an f32 cache.
    let kv = (context * Session::kv_bytes_per_token(&model, KvFormat::F32)) as u64;
    let decode_bytes = Budget::of_model(&model, KvFormat::F32).decode_bytes(0);
    let opened = open(model, select)?;
    let label = format!(
        "{}{}",
        opened.surface(),
        if select.emulator { " (emulator)" } else { "" }
    );
    let test = |n_prompt, n_gen, n_depth| Test {
        threads: 0,
        n_prompt,
        n_gen,
        n_depth,
        sampling: "default",
        down: None,
        label: String::new(),
    };
    let rows = crate::with_backend!(opened, |b| {
        let mut depths = Depths::new(context);
        timed_rows(&mut b, &mut depths, a, vocab, &test, None)
    })?;
    let report = Report {
        model: name,
        path,
        size_bytes: size,
        params,
        backend: label,
        bandwidth_gbs: None,
        bandwidth_probes: Vec::new(),
        decode_bytes_per_token: decode_bytes,
        kv_cache_bytes: kv,
        peak_rss_bytes: peak_rss(),
        peak_rss_greedy_bytes: None,
        results: rows,
    };
    emit(a, &report)
}

pub fn print_md(r: &Report) {
    println!("| model | size | params | backend | threads | test | t/s | p50 ms | p99 ms | BW GB/s | roofline |");
    println!("| --- | ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
    let size = if r.size_bytes > 0 {
        format!("{:.2} GiB", r.size_bytes as f64 / (1u64 << 30) as f64)
    } else {
        "in memory".into()
    };
    for row in &r.results {
        let opt = |v: Option<f64>, d: usize| v.map_or("-".to_string(), |x| format!("{x:.d$}"));
        let roof = match (
            row.roofline_ts,
            row.roofline_fraction,
            row.roofline_probe_error,
        ) {
            (Some(t), Some(f), _) => format!("{:.0}% of {t:.1}", f * 100.0),
            (Some(t), None, Some(f)) => format!("probe error ({:.0}% of {t:.1})", f * 100.0),
            _ => "-".into(),
        };
        println!(
            "| {} | {} | {:.2} B | {} | {} | {} | {:.2} ± {:.2} | {} | {} | {} | {} |",
            r.model,
            size,
            r.params as f64 / 1e9,
            r.backend,
            row.threads,
            row.test,
            row.ts_mean,
            row.ts_sd,
            opt(row.p50_ms, 2),
            opt(row.p99_ms, 2),
            opt(row.bandwidth_gbs, 1),
            roof
        );
    }
    let mib = |b: u64| format!("{:.0} MiB", b as f64 / (1u64 << 20) as f64);
    for (t, p) in &r.bandwidth_probes {
        println!(
            "\nread bandwidth at {t} threads: {:.1} GB/s, the best of the probe's patterns ({} GB/s)",
            p.best_gbs,
            p.describe()
        );
    }
    println!(
        "\ndecode reads {:.1} MB per token at context 0 with every down_proj column and the full head; \
         each roofline uses the bytes its row read (down_proj columns read, the head used, the KV at its depth)",
        r.decode_bytes_per_token / 1e6
    );
    if r.results.iter().any(|x| x.roofline_probe_error.is_some()) {
        println!(
            "probe error: a rate above its roofline means the bandwidth probe read slower than memory can \
             deliver (no engine reads faster than memory), not a result; take those rows' BW as a lower bound"
        );
    }
    for row in &r.results {
        if let Some(d) = row.down_columns_read {
            println!(
                "{} ({} threads): down_proj read {:.1} % of its weight columns (the rest had input 0)",
                row.test,
                row.threads,
                d * 100.0
            );
        }
    }
    if let Some(rss) = r.peak_rss_bytes {
        let budget = r.size_bytes + r.kv_cache_bytes + (64 << 20);
        println!(
            "peak RSS {} (file {} + KV cache {} + 64 MiB = {}{})",
            mib(rss),
            mib(r.size_bytes),
            mib(r.kv_cache_bytes),
            mib(budget),
            if r.size_bytes > 0 && rss <= budget {
                ", within"
            } else {
                ""
            }
        );
    }
    if let Some(g) = r.peak_rss_greedy_bytes {
        println!("peak RSS with the int8 screening head: {}", mib(g));
    }
}

/// The share of down_proj columns the row's runs read, where it skipped any.
fn columns_read(row: &Row) -> Option<f64> {
    SPARSE_COLUMNS
        .density()
        .filter(|_| row.down == Some("sparse"))
}

/// Completes a decode row from every token's time, with the roofline for the bytes a token
/// read at context `ctx` (the run's mean) at the measured bandwidth.
fn decode_row(mut row: Row, mut token_times: Vec<f64>, roof: Option<&Roof<'_>>, ctx: usize) -> Row {
    token_times.sort_by(|x, y| x.total_cmp(y));
    row.p50_ms = Some(percentile(&token_times, 0.5) * 1e3);
    row.p99_ms = Some(percentile(&token_times, 0.99) * 1e3);
    row.down_columns_read = columns_read(&row);
    if let Some(roof) = roof {
        let bytes = (roof.bytes_at)(ctx);
        row.bytes_per_token = Some(bytes);
        row.bandwidth_gbs = roof.bandwidth;
        if let Some(bw) = roof.bandwidth {
            let ceil = ceiling(bw, bytes);
            let fraction = row.ts_mean / ceil;
            row.roofline_ts = Some(ceil);
            if fraction <= 1.0 {
                row.roofline_fraction = Some(fraction);
            } else {
                row.roofline_probe_error = Some(fraction);
            }
        }
    }
    row
}

#[cfg(test)]
mod tests {
    use super::*;

    fn test(n_prompt: usize, n_gen: usize, n_depth: usize, label: &str) -> Test {
        Test {
            threads: 2,
            n_prompt,
            n_gen,
            n_depth,
            sampling: "default",
            down: Some("dense"),
            label: label.into(),
        }
    }

    #[test]
    fn rows_are_named_as_llama_bench_names_them() {
        assert_eq!(test(512, 0, 0, "").name(), "pp512");
        assert_eq!(test(512, 0, 4096, "").name(), "pp512 @ d4096");
        assert_eq!(
            test(0, 64, 4096, " greedy, int8-screened head").name(),
            "tg64 @ d4096 greedy, int8-screened head"
        );
    }

    #[test]
    fn the_context_holds_the_deepest_cache_and_the_longest_test() {
        use clap::Parser;
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            a: Args,
        }
        let a = Cli::parse_from([
            "bench", "--preset", "small", "-p", "0,4096", "-n", "64", "-d", "0,4096",
        ])
        .a;
        assert_eq!(a.n_depth, [0, 4096]);
        assert_eq!(a.prompts().collect::<Vec<_>>(), [4096]);
        assert_eq!(a.context(), 4096 + 4096 + 1);
        let a = Cli::parse_from(["bench", "--preset", "small"]).a;
        assert_eq!((a.n_depth.as_slice(), a.context()), (&[0][..], 129));
        assert!(Cli::try_parse_from(["bench", "--preset", "small", "-d", "deep"]).is_err());
    }

    /// A rate above what the bandwidth allows is a probe error, never a fraction.
    #[test]
    fn a_rate_above_the_roofline_is_reported_as_a_probe_error() {
        // 1 GB/s over 20 MB per token: a ceiling of 50 tokens per second.
        let bytes_at = |ctx: usize| 2e7 + ctx as f64;
        let roof = Roof {
            bandwidth: Some(1.0),
            bytes_at: &bytes_at,
        };
        let within = decode_row(
            test(0, 8, 0, "").row(vec![25.0]),
            vec![0.04; 8],
            Some(&roof),
            0,
        );
        assert_eq!(within.roofline_ts, Some(50.0));
        assert_eq!(within.roofline_fraction, Some(0.5));
        assert_eq!(within.roofline_probe_error, None);
        assert_eq!(within.bytes_per_token, Some(2e7));
        let above = decode_row(
            test(0, 8, 0, "").row(vec![100.0]),
            vec![0.01; 8],
            Some(&roof),
            0,
        );
        assert_eq!(above.roofline_fraction, None);
        assert_eq!(above.roofline_probe_error, Some(2.0));
    }
}
