//! `onebit selftest`: what a Strix Halo owner runs first. Every kernel of a surface on
//! random inputs against the CPU reference, then a tiny model end to end, pass/fail with
//! timings. `--emulator` runs the iGPU selftest on the in-process KFD emulator (CI).

use std::path::Path;
use std::time::Instant;

use clap::Args as ClapArgs;
use onebit_engine::backend::igpu::{emulator, selftest, IgpuBackend, IgpuOptions};
use onebit_engine::backend::select::resolve;
use onebit_engine::backend::{SelectOptions, SurfaceChoice};
use onebit_engine::forward::{forward, LogitsMode, Session};
use onebit_engine::model::Model;
use onebit_kernels::act_quant::{quantize_row, quantize_row_ref};
use onebit_kernels::ternary::{self, padded_cols, TernaryView};

use crate::common::{CliResult, ModelArgs};

/// What to test: any `--surface` name (for `npu+igpu` and `npu+cpu` the NPU kernels, then
/// the decode surface's), or `npu` for the NPU kernels alone.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    Surface(SurfaceChoice),
    Npu,
}

impl std::str::FromStr for Target {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "npu" => Ok(Target::Npu),
            _ => s
                .parse()
                .map(Target::Surface)
                .map_err(|e| format!("{e} (or npu: the NPU kernels alone)")),
        }
    }
}

#[derive(ClapArgs, Debug)]
pub struct Args {
    /// Which compute surface to test: auto, cpu, igpu, npu+igpu, npu+cpu, or npu (the NPU
    /// kernels alone).
    #[arg(long, default_value = "igpu")]
    pub surface: Target,
    /// Run on the in-process KFD emulator instead of the hardware (the kernels then run
    /// as host builds of their GPU sources).
    #[arg(long)]
    pub emulator: bool,
    /// Built NPU kernel artifacts to test (`--surface npu`; kernels/npu/build.sh).
    #[arg(long = "npu-artifacts", env = "ONEBIT_NPU_ARTIFACTS")]
    pub npu_artifacts: Option<std::path::PathBuf>,
    /// Seed of the random inputs.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Greedy tokens of the end-to-end model check.
    #[arg(long, default_value_t = 16)]
    pub tokens: usize,
    /// Also time every op of one decode step through its completion signal's timestamps.
    #[arg(long)]
    pub profile: bool,
    #[command(flatten)]
    pub model: ModelArgs,
}

pub use onebit_engine::backend::igpu::open::{open_gpu, Gpu};

fn verdict(ok: bool) -> &'static str {
    if ok {
        "PASS"
    } else {
        "FAIL"
    }
}

pub fn main(args: Args) -> CliResult {
    let surface = match args.surface {
        Target::Npu => return finish(npu(&args)?),
        Target::Surface(SurfaceChoice::Fixed(s)) => s,
        Target::Surface(choice) => {
            let (model, _) = args.model.load()?;
            let o = SelectOptions {
                choice,
                emulator: args.emulator,
                npu_artifacts: args.npu_artifacts.clone(),
                ..SelectOptions::default()
            };
            resolve(&o, &model)
        }
    };
    let mut ok = None;
    if surface.prefills_on_npu() {
        ok = both(ok, npu(&args)?);
    }
    ok = both(
        ok,
        if surface.decodes_on_igpu() {
            igpu(&args)?
        } else {
            cpu(&args)?
        },
    );
    finish(ok)
}

/// Two verdicts: None (nothing ran) stays None only if both are.
fn both(a: Option<bool>, b: Option<bool>) -> Option<bool> {
    match (a, b) {
        (Some(x), Some(y)) => Some(x && y),
        (x, None) | (None, x) => x,
    }
}

fn finish(ok: Option<bool>) -> CliResult {
    match ok {
        Some(true) => {
            println!("selftest: all checks passed");
            Ok(())
        }
        Some(false) => Err("selftest: some checks FAILED (see above)".into()),
        None => Ok(()),
    }
}

fn load_model(args: &Args) -> Option<Model> {
    match args.model.load() {
        Ok((m, _)) => Some(m),
        Err(e) => {
            println!("model check skipped: {e}");
            None
        }
    }
}

fn prompt(model: &Model) -> Vec<u32> {
    let bos = model.config.bos_token_id.unwrap_or(0);
    let v = model.config.vocab_size as u32;
    [bos, 3 % v, 17 % v, 42 % v, 7 % v].to_vec()
}

fn igpu(args: &Args) -> Result<Option<bool>, Box<dyn std::error::Error>> {
    let Some(gpu) = open_gpu(args.emulator)? else {
        return Ok(None);
    };
    let reports = selftest::run_kernels(&gpu.dev, args.seed, &|p| gpu.bind(p))?;
    println!(
        "{:<20} {:<5} {:>10} {:>10}  detail",
        "kernel", "", "wall", "gpu ticks"
    );
    let mut all = true;
    for r in &reports {
        all &= r.ok;
        println!(
            "{:<20} {:<5} {:>8.1}µs {:>10}  {}",
            r.name,
            verdict(r.ok),
            r.wall.as_secs_f64() * 1e6,
            r.gpu_ticks,
            r.detail
        );
    }
    if let Some(model) = load_model(args) {
        let (r, gpu) = selftest::run_model(gpu, &model, &prompt(&model), args.tokens)?;
        all &= r.ok();
        let same = r
            .cpu_tokens
            .iter()
            .zip(&r.gpu_tokens)
            .take_while(|(a, b)| a == b)
            .count();
        println!(
            "{:<20} {:<5} {} of {} greedy tokens equal the CPU's (iGPU {:.1} ms, CPU {:.1} ms){}",
            "model end to end",
            verdict(r.ok()),
            same,
            r.cpu_tokens.len(),
            r.gpu_time.as_secs_f64() * 1e3,
            r.cpu_time.as_secs_f64() * 1e3,
            r.margin_at_mismatch
                .map(|m| format!("; first difference at a CPU margin of {m:.3}"))
                .unwrap_or_default()
        );
        if args.profile {
            profile(&gpu, &model)?;
        }
    }
    Ok(Some(all))
}

/// Per-op times of one decode step, summed by kernel, from the CP's signal timestamps.
fn profile(gpu: &Gpu, model: &Model) -> Result<(), Box<dyn std::error::Error>> {
    let p = prompt(model);
    let opts = IgpuOptions {
        max_ctx: p.len() + 1,
        profile: true,
        ..IgpuOptions::default()
    };
    let mut be = IgpuBackend::new(&gpu.dev, model, &opts)?;
    if let Some(k) = &gpu.kfd {
        emulator::bind(k, &be);
    }
    let tok = be.forward(&p)?;
    let c0 = gpu.dev.clock_counters()?;
    be.forward(&[tok])?;
    let c1 = gpu.dev.clock_counters()?;
    let secs = c1.system.saturating_sub(c0.system) as f64 / c1.system_freq.max(1) as f64;
    let ticks_per_us = c1.gpu.saturating_sub(c0.gpu) as f64 / (secs * 1e6).max(1e-9);
    let mut by_name: Vec<(&str, u64, usize)> = Vec::new();
    for op in be.profile() {
        match by_name.iter_mut().find(|(n, _, _)| *n == op.name) {
            Some(e) => {
                e.1 += op.ticks;
                e.2 += 1;
            }
            None => by_name.push((op.name, op.ticks, 1)),
        }
    }
    let total: u64 = by_name.iter().map(|e| e.1).sum();
    println!(
        "\nprofile of one decode step ({} ops, {:.1} GPU ticks/µs):",
        be.profile().len(),
        ticks_per_us
    );
    for (name, ticks, n) in by_name {
        let us = if ticks_per_us > 0.0 {
            ticks as f64 / ticks_per_us
        } else {
            0.0
        };
        let share = 100.0 * ticks as f64 / total.max(1) as f64;
        println!("  {name:<16} {n:>4}× {ticks:>10} ticks {us:>10.1} µs {share:>5.1} %");
    }
    Ok(())
}

/// The CPU surface: the optimized kernels against their scalar references, then the model
/// prefilled in one batch against token by token.
fn cpu(args: &Args) -> Result<Option<bool>, Box<dyn std::error::Error>> {
    let mut s = args.seed | 1;
    let mut next = move || {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        s
    };
    let (rows, cols, n) = (517, 2000, 5);
    let codes: Vec<u8> = (0..rows * cols).map(|_| (next() % 3) as u8).collect();
    let w = ternary::pack(rows, cols, |i, j| codes[i * cols + j]);
    let view = TernaryView::new(rows, cols, &w).ok_or("packing failed")?;
    let k = padded_cols(cols);
    let x: Vec<f32> = (0..n * cols)
        .map(|_| (next() % 2001) as f32 / 100.0 - 10.0)
        .collect();
    let mut all = true;
    let mut report = |name: &str, ok: bool, t: Instant| {
        all &= ok;
        println!(
            "{name:<20} {:<5} {:>8.1}µs",
            verdict(ok),
            t.elapsed().as_secs_f64() * 1e6
        );
    };
    let t = Instant::now();
    let (mut qa, mut qb) = (vec![0i8; n * k], vec![0i8; n * k]);
    let mut acts = Vec::new();
    let mut ok = true;
    for r in 0..n {
        let a = quantize_row_ref(&x[r * cols..(r + 1) * cols], &mut qa[r * k..(r + 1) * k]);
        ok &= a == quantize_row(&x[r * cols..(r + 1) * cols], &mut qb[r * k..(r + 1) * k]);
        acts.push(a);
    }
    report("quantize_row", ok && qa == qb, t);
    let t = Instant::now();
    let (mut a, mut b) = (vec![0f32; rows], vec![0f32; rows]);
    ternary::gemv_ref(view, &qa[..k], acts[0], 0.8, &mut a);
    ternary::gemv(view, &qa[..k], acts[0], 0.8, &mut b);
    report("ternary gemv", a == b, t);
    let t = Instant::now();
    let mut g = vec![0f32; n * rows];
    ternary::gemm(view, &qa, &acts, 0.8, &mut g);
    let ok = (0..n).all(|r| {
        ternary::gemv_ref(view, &qa[r * k..(r + 1) * k], acts[r], 0.8, &mut a);
        a[..] == g[r * rows..(r + 1) * rows]
    });
    report("ternary gemm", ok, t);
    if let Some(model) = load_model(args) {
        let p = prompt(&model);
        let t = Instant::now();
        let (mut s1, mut s2) = (Session::new(&model, 64), Session::new(&model, 64));
        let batched = forward(&model, &mut s1, &p, LogitsMode::Last)?;
        let mut one = Vec::new();
        for id in &p {
            one = forward(&model, &mut s2, &[*id], LogitsMode::Last)?;
        }
        let worst = batched
            .iter()
            .zip(&one)
            .map(|(x, y)| (x - y).abs())
            .fold(0.0f32, f32::max);
        report("model prefill", worst < 1e-3, t);
    }
    Ok(Some(all))
}

fn npu(args: &Args) -> Result<Option<bool>, Box<dyn std::error::Error>> {
    use onebit_engine::backend::npu::{selftest as npu_selftest, ArtifactSource, GemmShape};
    let source = if args.emulator {
        println!("NPU: the in-process emulated amdxdna (kernels run as their CPU stand-ins)");
        ArtifactSource::Emulated
    } else {
        let io = onebit_drv::io::real();
        if !io.exists(Path::new("/dev/accel/accel0")) {
            println!("no NPU here: /dev/accel/accel0 does not exist (amdxdna not loaded or no XDNA NPU); nothing was dispatched.");
            return Ok(None);
        }
        let Some(dir) = args.npu_artifacts.clone() else {
            return Err("--surface npu tests built kernels: build them with kernels/npu/build.sh (IRON/Peano) \
                        and pass their directory with --npu-artifacts or ONEBIT_NPU_ARTIFACTS"
                .into());
        };
        ArtifactSource::Dir(dir)
    };
    // On the emulator: odd sizes and a 2B-4T-shaped chunk of each projection kind.
    let shapes: Vec<(GemmShape, usize)> =
        [(5, 256, 37, 200), (3, 384, 1, 300), (64, 2560, 640, 2560)]
            .into_iter()
            .map(|(m, k, n, cols)| (GemmShape { m, k, n }, cols))
            .collect();
    let t = Instant::now();
    let checks = npu_selftest::run(&source, &shapes, args.seed)?;
    let mut ok = true;
    for c in &checks {
        let pass = c.mismatches == 0;
        ok &= pass;
        println!(
            "{:<40} {}  ({} of {} outputs differ from the CPU GEMM's bits)",
            c.name,
            verdict(pass),
            c.mismatches,
            c.elements
        );
    }
    println!(
        "NPU kernels: {} checked in {:.2?}",
        checks.len(),
        t.elapsed()
    );
    Ok(Some(ok))
}
