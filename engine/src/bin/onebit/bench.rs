//! `onebit bench`: llama-bench's measurements (pp = prompt processing, tg = decode, both
//! from an empty cache, random token ids, mean ± sd over repetitions) plus the decode
//! jitter (p50/p99 ms per token) and the memory bandwidth measured in the same run, with
//! the fraction of the resulting decode roofline that was reached.

use crate::bandwidth;
use crate::common::CliResult;
use crate::roofline::{ceiling, Budget};
use onebit_engine::backend::cpu::CpuBackend;
use onebit_engine::backend::select::resolve;
use onebit_engine::backend::{open, Backend, SelectOptions, Surface, SurfaceChoice};
use onebit_engine::forward::{
    forward, forward_greedy, KvFormat, LogitsMode, Session, SCREENED_HEAD_ROWS,
};
use onebit_engine::generate::{step, Options, Stream};
use onebit_engine::model::{Model, SPARSE_COLUMNS};
use onebit_engine::sampler::SamplingParams;
use onebit_engine::synth::{self, Preset, Rng};
use onebit_kernels::embd::EmbdType;
use onebit_kernels::parallel;
use onebit_kernels::screen::Int8Head;
use onebit_kernels::ternary::Isa;
use serde::Serialize;
use std::path::PathBuf;
use std::time::Instant;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Model: a GGUF file or HF directory.
    #[arg(short = 'm', long = "model", required_unless_present = "preset")]
    pub model: Option<PathBuf>,
    /// How a GGUF file gets into memory: uring (io_uring O_DIRECT reads into a sealed
    /// memfd, falling back to read where refused), read (pread into the memfd) or mmap (the
    /// file's page cache, as mapped windows).
    #[arg(long = "load", default_value = "uring")]
    pub load: onebit_engine::format::LoadMethod,
    /// Benchmark a synthetic model built in memory instead of a file (2b4t, small).
    #[arg(long, conflicts_with = "model")]
    pub preset: Option<String>,
    /// Prompt tokens for the pp test (0 skips it).
    #[arg(short = 'p', long = "n-prompt", default_value_t = 128)]
    pub n_prompt: usize,
    /// Generated tokens for the tg test (0 skips it).
    #[arg(short = 'n', long = "n-gen", default_value_t = 64)]
    pub n_gen: usize,
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
    /// LM head for the sampled tg rows: `screened` (the default everywhere: the int8 copy
    /// picks the rows that could be among the sampler's top k and only those are scored in
    /// full, the same tokens), `full` (every row of the float head), or `both`.
    #[arg(long, default_value = "screened", value_parser = ["screened", "full", "both"])]
    pub head: String,
    /// down_proj: `sparse` reads only the weight columns whose input is nonzero (lossless,
    /// the default), `dense` reads them all, `both` times each on its own.
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
    /// KV cache format on the CPU: f32 (exact), f16 or q8_0 (device surfaces keep f32).
    #[arg(long = "kv", default_value = "f16")]
    pub kv: KvFormat,
}

#[derive(Serialize, Clone, Debug)]
pub struct Row {
    pub threads: usize,
    pub test: String,
    pub ts_mean: f64,
    pub ts_sd: f64,
    pub samples_ts: Vec<f64>,
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    pub bandwidth_gbs: Option<f64>,
    pub roofline_ts: Option<f64>,
    pub roofline_fraction: Option<f64>,
    /// The fraction of down_proj weight columns read (sparse down_proj only).
    pub down_columns_read: Option<f64>,
}

#[derive(Serialize, Debug)]
pub struct Report {
    pub model: String,
    pub path: String,
    pub size_bytes: u64,
    pub params: u64,
    pub backend: String,
    pub bandwidth_gbs: Option<f64>,
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

fn random_ids(model: &Model, n: usize, seed: u64) -> Vec<u32> {
    random_ids_of(model.config.vocab_size, n, seed)
}

fn random_ids_of(vocab: usize, n: usize, seed: u64) -> Vec<u32> {
    let mut rng = Rng::new(seed, 0xB0);
    (0..n).map(|_| rng.below(vocab) as u32).collect()
}

/// A stream of the one generation loop for `prompt`, sampling `max_new` tokens at
/// llama.cpp's default settings
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

/// One pp run on any surface, through the generation loop: `n` prompt tokens from an empty
/// cache in one step, which also samples the first new token; tokens per second.
fn run_pp<B: Backend>(b: &mut B, vocab: usize, n: usize, rep: usize) -> onebit_engine::Result<f64> {
    let mut s = b.new_session(n + 1)?;
    let mut stream = bench_stream(random_ids_of(vocab, n, rep as u64), 1, rep as u64);
    let t0 = Instant::now();
    step(b, &mut [(&mut s, &mut stream)], n)?;
    Ok(n as f64 / t0.elapsed().as_secs_f64())
}

/// One tg run on any surface, through the generation loop: `n` steps from a one-token
/// prompt, each feeding the token the last one sampled; per-step seconds.
fn run_tg<B: Backend>(
    b: &mut B,
    vocab: usize,
    n: usize,
    rep: usize,
) -> onebit_engine::Result<Vec<f64>> {
    let mut s = b.new_session(n + 1)?;
    let prompt = random_ids_of(vocab, 1, 1000 + rep as u64);
    let mut stream = bench_stream(prompt, n, rep as u64);
    let mut times = Vec::with_capacity(n);
    while times.len() < n {
        let t0 = Instant::now();
        let adv = step(b, &mut [(&mut s, &mut stream)], 1)?;
        times.push(t0.elapsed().as_secs_f64());
        if adv.iter().any(|a| a.finish.is_some()) {
            break;
        }
    }
    Ok(times)
}

/// Like [`run_tg`], through the int8-screened greedy head.
fn run_tg_greedy(
    model: &Model,
    screen: &Int8Head,
    n: usize,
    rep: usize,
    kv: KvFormat,
) -> onebit_engine::Result<Vec<f64>> {
    let ids = random_ids(model, n, 1000 + rep as u64);
    let mut s = Session::with_format(model, n, kv);
    let mut times = Vec::with_capacity(n);
    for id in ids {
        let t0 = Instant::now();
        forward_greedy(model, &mut s, &[id], screen)?;
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
    let ids = random_ids(model, n, 77);
    let (mut a, mut b) = (Session::new(model, n), Session::new(model, n));
    let mut same = 0;
    for id in ids {
        let logits = forward(model, &mut a, &[id], LogitsMode::Last)?;
        let g = forward_greedy(model, &mut b, &[id], screen)?;
        same += usize::from(onebit_engine::sampler::argmax(&logits) == g);
    }
    Ok((same, n))
}

/// `a.reps` decode runs: tokens per second of each, and every token's time (the column
/// counter restarts, so it describes these runs).
fn decode_reps(
    a: &Args,
    mut run: impl FnMut(usize) -> onebit_engine::Result<Vec<f64>>,
) -> onebit_engine::Result<(Vec<f64>, Vec<f64>)> {
    let (mut samples, mut all) = (Vec::new(), Vec::new());
    SPARSE_COLUMNS.reset();
    SCREENED_HEAD_ROWS.reset();
    for r in 0..a.reps {
        let times = run(r)?;
        samples.push(a.n_gen as f64 / times.iter().sum::<f64>());
        all.extend(times);
    }
    Ok((samples, all))
}

/// The pp and tg rows of one configuration at `t` threads.
fn plain_rows(
    model: &Model,
    a: &Args,
    t: usize,
    bw: Option<f64>,
    budget: &Budget,
    label: &str,
) -> Result<Vec<Row>, Box<dyn std::error::Error>> {
    let mut rows = Vec::new();
    // Warm-up (page in the weights, start the threads), as llama-bench does.
    let vocab = model.config.vocab_size;
    let mut cpu = CpuBackend::new(model, 0).with_kv_format(a.kv);
    if a.n_prompt > 0 {
        run_pp(&mut cpu, vocab, a.n_prompt.min(16), 0)?;
    }
    if a.n_prompt > 0 {
        SPARSE_COLUMNS.reset();
        let samples: Vec<f64> = (0..a.reps)
            .map(|r| run_pp(&mut cpu, vocab, a.n_prompt, r))
            .collect::<Result<_, _>>()?;
        let (m, sd) = mean_sd(&samples);
        rows.push(Row {
            threads: t,
            test: format!("pp{}{label}", a.n_prompt),
            ts_mean: m,
            ts_sd: sd,
            samples_ts: samples,
            p50_ms: None,
            p99_ms: None,
            bandwidth_gbs: bw,
            roofline_ts: None,
            roofline_fraction: None,
            down_columns_read: model
                .has_sparse_down()
                .then(|| SPARSE_COLUMNS.density())
                .flatten(),
        });
    }
    let heads: &[bool] = match a.head.as_str() {
        "full" => &[false],
        "both" => &[true, false],
        _ => &[true],
    };
    for &screened in heads.iter().filter(|_| a.n_gen > 0) {
        let mut cpu = CpuBackend::new(model, 0)
            .with_kv_format(a.kv)
            .with_screened_head(screened);
        // Warm-up, which also builds the screening copy outside the timing.
        run_tg(&mut cpu, vocab, 2, 0)?;
        let (samples, all) = decode_reps(a, |r| run_tg(&mut cpu, vocab, a.n_gen, r))?;
        // The run averages over contexts 0..n_gen.
        let bytes = budget.decode_bytes(a.n_gen / 2);
        let head = if screened { "" } else { ", full head" };
        if let Some(d) = screened.then(|| SCREENED_HEAD_ROWS.density()).flatten() {
            eprintln!(
                "tg{}{label} ({t} threads): the screened head scored {:.2} % of its rows in full",
                a.n_gen,
                d * 100.0
            );
        }
        rows.push(decode_row(
            t,
            format!("tg{}{label}{head}", a.n_gen),
            samples,
            all,
            bw,
            bytes,
        ));
    }
    Ok(rows)
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

pub fn main(a: Args) -> CliResult {
    if a.reps == 0 {
        return Err("-r/--repetitions must be at least 1".into());
    }
    if !matches!(a.output.as_str(), "md" | "json") {
        return Err(format!("-o {}: use md or json", a.output).into());
    }
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
    let budget = Budget::of_model(&model, a.kv);
    let select = SelectOptions {
        choice: a.surface,
        emulator: a.emulator,
        ctx: a.n_prompt.max(a.n_gen).max(16),
        kv_format: a.kv,
        ..SelectOptions::default()
    };
    if resolve(&select, &model) != Surface::Cpu {
        return device_bench(&a, model, &select, &budget);
    }
    let backend = format!("CPU ({}, {} KV)", Isa::best().name(), a.kv);
    let mut rows = Vec::new();
    let mut last_bw = None;
    let mut bws = Vec::new();
    let mut plain_rss = None;
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
            let bw = if i == 0 {
                let bw = (!a.no_bandwidth).then(|| bandwidth::measure(5));
                // The bandwidth buffer is freed; restart the peak-RSS count so it shows the model's.
                reset_peak_rss();
                last_bw = bw.or(last_bw);
                bws.push(bw);
                bw
            } else {
                bws[threads.iter().position(|&x| x == t).unwrap_or(0)]
            };
            rows.extend(plain_rows(&model, &a, t, bw, &budget, label)?);
        }
        // The first configuration's peak RSS: what a default run costs.
        if i == 0 {
            plain_rss = peak_rss();
        }
    }
    if downs[0] && !model.has_sparse_down() {
        model.use_sparse_down();
    }
    let screen = if a.greedy_head && a.n_gen > 0 {
        let t0 = Instant::now();
        let s = Int8Head::new_releasing(&model.embed_tokens.view(), &|r| {
            model.embed_tokens.data.release_range(r)
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
        model.embed_tokens.data.release_pages();
        reset_peak_rss();
        Some(s)
    } else {
        None
    };
    if let Some(screen) = &screen {
        for (&t, bw) in threads.iter().zip(bws) {
            let t = parallel::set_active_threads(t);
            let (samples, all) =
                decode_reps(&a, |r| run_tg_greedy(&model, screen, a.n_gen, r, a.kv))?;
            let mut b = budget.clone();
            b.head = screen.bytes() as f64;
            let test = format!("tg{} greedy, int8-screened head", a.n_gen);
            rows.push(decode_row(
                t,
                test,
                samples,
                all,
                bw,
                b.decode_bytes(a.n_gen / 2),
            ));
        }
    }
    let report = Report {
        model: describe(&model),
        path: model.provenance.path.display().to_string(),
        size_bytes: model.provenance.file_bytes,
        params: model.n_params(),
        backend,
        bandwidth_gbs: last_bw,
        decode_bytes_per_token: budget.decode_bytes(0),
        kv_cache_bytes: (a.n_prompt.max(a.n_gen) * Session::kv_bytes_per_token(&model, a.kv))
            as u64,
        peak_rss_bytes: plain_rss,
        peak_rss_greedy_bytes: screen.as_ref().and(peak_rss()),
        results: rows,
    };
    let json = serde_json::to_string_pretty(&report)?;
    if let Some(p) = &a.json_out {
        std::fs::write(p, &json).map_err(|e| format!("cannot write {}: {e}", p.display()))?;
    }
    if a.output == "json" {
        println!("{json}");
    } else {
        print_md(&report);
    }
    Ok(())
}

/// pp and tg on a device surface, through the backend every other command uses.
fn device_bench(a: &Args, model: Model, select: &SelectOptions, budget: &Budget) -> CliResult {
    let (name, path, size, params) = (
        describe(&model),
        model.provenance.path.display().to_string(),
        model.provenance.file_bytes,
        model.n_params(),
    );
    let vocab = model.config.vocab_size;
    // Device surfaces keep an f32 cache.
    let kv = (a.n_prompt.max(a.n_gen) * Session::kv_bytes_per_token(&model, KvFormat::F32)) as u64;
    let opened = open(model, select)?;
    let label = format!(
        "{}{}",
        opened.surface(),
        if select.emulator { " (emulator)" } else { "" }
    );
    let rows = crate::with_backend!(opened, |b| device_rows(a, &mut b, vocab))?;
    let report = Report {
        model: name,
        path,
        size_bytes: size,
        params,
        backend: label,
        bandwidth_gbs: None,
        decode_bytes_per_token: budget.decode_bytes(0),
        kv_cache_bytes: kv,
        peak_rss_bytes: peak_rss(),
        peak_rss_greedy_bytes: None,
        results: rows,
    };
    if let Some(p) = &a.json_out {
        std::fs::write(p, serde_json::to_string_pretty(&report)?)
            .map_err(|e| format!("cannot write {}: {e}", p.display()))?;
    }
    if a.output == "json" {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_md(&report);
    }
    Ok(())
}

fn device_rows<B: Backend>(
    a: &Args,
    b: &mut B,
    vocab: usize,
) -> Result<Vec<Row>, Box<dyn std::error::Error>> {
    let mut rows = Vec::new();
    run_tg(b, vocab, 2, 0)?;
    if a.n_prompt > 0 {
        let samples: Vec<f64> = (0..a.reps)
            .map(|r| run_pp(b, vocab, a.n_prompt, r))
            .collect::<Result<_, _>>()?;
        let (m, sd) = mean_sd(&samples);
        rows.push(Row {
            threads: 0,
            test: format!("pp{}", a.n_prompt),
            ts_mean: m,
            ts_sd: sd,
            samples_ts: samples,
            p50_ms: None,
            p99_ms: None,
            bandwidth_gbs: None,
            roofline_ts: None,
            roofline_fraction: None,
            down_columns_read: None,
        });
    }
    if a.n_gen > 0 {
        let (samples, all) = decode_reps(a, |r| run_tg(b, vocab, a.n_gen, r))?;
        let mut row = decode_row(0, format!("tg{}", a.n_gen), samples, all, None, 0.0);
        row.down_columns_read = None;
        rows.push(row);
    }
    Ok(rows)
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
        let roof = match (row.roofline_ts, row.roofline_fraction) {
            (Some(t), Some(f)) => format!("{:.0}% of {t:.1}", f * 100.0),
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
    println!(
        "\ndecode reads {:.1} MB per token at context 0 (the roofline's bytes, every down_proj column included)",
        r.decode_bytes_per_token / 1e6
    );
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

/// A decode row from per-repetition rates and every token's time, with the roofline for
/// `bytes_per_token` at the measured bandwidth.
fn decode_row(
    threads: usize,
    test: String,
    samples: Vec<f64>,
    mut token_times: Vec<f64>,
    bw: Option<f64>,
    bytes_per_token: f64,
) -> Row {
    token_times.sort_by(|x, y| x.total_cmp(y));
    let (m, sd) = mean_sd(&samples);
    let roof = bw.map(|b| ceiling(b, bytes_per_token));
    Row {
        threads,
        test,
        ts_mean: m,
        ts_sd: sd,
        samples_ts: samples,
        p50_ms: Some(percentile(&token_times, 0.5) * 1e3),
        p99_ms: Some(percentile(&token_times, 0.99) * 1e3),
        bandwidth_gbs: bw,
        roofline_ts: roof,
        roofline_fraction: roof.map(|r| m / r),
        down_columns_read: SPARSE_COLUMNS.density(),
    }
}
