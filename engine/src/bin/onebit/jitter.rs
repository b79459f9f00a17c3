//! `onebit jitter`: dispatch-to-completion latency of an empty and of a real kernel, N
//! runs, as percentiles + histogram text and an SVG plot, with the GPU clock policy.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::Args as ClapArgs;
use onebit_drv::buffer::BufferDescriptor;
use onebit_drv::codeobj::load::{dispatch_args, KernargArena, Program};
use onebit_drv::codeobj::{mach_for, CodeObject, Launch};
use onebit_drv::kfd::{AqlQueue, FenceScope, QueueOptions, SharedGpuBuffer};
use onebit_engine::backend::jitter::{clock_policy, svg, text, Series};
use onebit_kernels::gpu;
use onebit_kernels::ternary::{self, padded_cols, TernaryView};
use onebit_kernels::{parallel, quantize_row};

use crate::common::CliResult;
use crate::selftest::open_gpu;
use onebit_engine::backend::Surface;

#[derive(ClapArgs, Debug)]
pub struct Args {
    /// Which compute surface to measure.
    #[arg(long, default_value = "cpu", value_parser = parse_surface)]
    pub surface: Surface,
    /// Measured runs per series (after 10 % warm-up).
    #[arg(long, default_value_t = 1000)]
    pub runs: usize,
    /// Also write the histogram as an SVG plot here.
    #[arg(long)]
    pub svg: Option<PathBuf>,
    /// Measure the iGPU path on the in-process KFD emulator.
    #[arg(long)]
    pub emulator: bool,
}

/// The "real kernel": one decode-size ternary projection (2560 × 2560, bitnet-2B's q_proj).
const ROWS: usize = 2560;
const COLS: usize = 2560;

fn measure(
    runs: usize,
    mut f: impl FnMut() -> Result<(), Box<dyn std::error::Error>>,
) -> Result<Vec<u64>, Box<dyn std::error::Error>> {
    for _ in 0..runs / 10 {
        f()?;
    }
    let mut v = Vec::with_capacity(runs);
    for _ in 0..runs {
        let t = Instant::now();
        f()?;
        v.push(t.elapsed().as_nanos() as u64);
    }
    Ok(v)
}

fn weights() -> (Vec<u8>, Vec<i8>, onebit_kernels::ActScale) {
    let w = ternary::pack(ROWS, COLS, |r, c| ((r * 7 + c * 13) % 3) as u8);
    let x: Vec<f32> = (0..COLS).map(|i| (i as f32 * 0.37).sin()).collect();
    let mut q = vec![0i8; padded_cols(COLS)];
    let act = quantize_row(&x, &mut q);
    (w, q, act)
}

fn parse_surface(s: &str) -> Result<Surface, String> {
    match s.parse()? {
        onebit_engine::backend::SurfaceChoice::Fixed(x) => Ok(x),
        onebit_engine::backend::SurfaceChoice::Auto => {
            Err("jitter measures one named surface: cpu or igpu".into())
        }
    }
}

pub fn main(args: Args) -> CliResult {
    if args.runs == 0 {
        return Err("--runs must be at least 1".into());
    }
    let series = match args.surface {
        Surface::Cpu => cpu(args.runs)?,
        Surface::Igpu => match igpu(args.runs, args.emulator)? {
            Some(s) => s,
            None => return Ok(()),
        },
        Surface::NpuIgpu | Surface::NpuCpu => {
            return Err("jitter --surface npu+* needs the NPU dispatch path, which this command does not drive yet".into())
        }
    };
    let policy = clock_policy(onebit_drv::io::real().as_ref());
    print!("{}", text(&series, &policy));
    if let Some(path) = &args.svg {
        let title = format!(
            "onebit jitter — {:?}{}",
            args.surface,
            if args.emulator { " (emulator)" } else { "" }
        );
        std::fs::write(path, svg(&series, &title))
            .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        println!("\nwrote {}", path.display());
    }
    Ok(())
}

fn cpu(runs: usize) -> Result<Vec<Series>, Box<dyn std::error::Error>> {
    let mut sink = vec![0f32; parallel::threads() * 64];
    let empty = measure(runs, || {
        parallel::for_rows(&mut sink, 64, |_, chunk| chunk[0] += 1.0);
        Ok(())
    })?;
    let (w, q, act) = weights();
    let view = TernaryView::new(ROWS, COLS, &w).ok_or("packing failed")?;
    let mut out = vec![0f32; ROWS];
    let real = measure(runs, || {
        ternary::gemv(view, &q, act, 1.0, &mut out);
        Ok(())
    })?;
    Ok(vec![
        Series {
            name: "cpu empty parallel job".into(),
            samples_ns: empty,
        },
        Series {
            name: format!("cpu gemv {ROWS}x{COLS}"),
            samples_ns: real,
        },
    ])
}

fn igpu(runs: usize, emulator: bool) -> Result<Option<Vec<Series>>, Box<dyn std::error::Error>> {
    let Some(g) = open_gpu(emulator)? else {
        return Ok(None);
    };
    let gfx = g.dev.node().gfx_name();
    let co = CodeObject::parse(gpu::CODE_OBJECT, mach_for(&gfx).ok_or("unsupported GPU")?)?;
    let program = Program::load(&g.dev, &co)?;
    g.bind(&program);
    let queue = AqlQueue::new(&g.dev, QueueOptions::default())?;
    let mut kernargs = KernargArena::new(&g.dev, 4096)?;
    let (w, q, act) = weights();
    let (w_off, q_off, a_off, o_off) = (0usize, w.len().next_multiple_of(256), 0, 0);
    let a_off = a_off + q_off + q.len().next_multiple_of(256);
    let o_off = o_off + a_off + 256;
    let mut mem = SharedGpuBuffer::new(
        &g.dev,
        "onebit-jitter",
        o_off + ROWS * 4,
        BufferDescriptor::blob(),
    )?;
    mem.as_mut_slice()[w_off..w_off + w.len()].copy_from_slice(&w);
    for (i, v) in q.iter().enumerate() {
        mem.as_mut_slice()[q_off + i] = *v as u8;
    }
    mem.as_mut_slice()[a_off..a_off + 8]
        .copy_from_slice(&[act.scale.to_le_bytes(), act.sum.to_le_bytes()].concat());
    let va = mem.gpu_va();
    let mut launch =
        |name: &str, groups: [u32; 3], words: &[u64]| -> Result<_, Box<dyn std::error::Error>> {
            let spec = gpu::spec(name).ok_or("no spec")?;
            let (k, obj) = program.kernel(name)?;
            let l = Launch::groups(groups, [spec.workgroup as u16, 1, 1]);
            let ka = kernargs.push(k, words, &l)?;
            let mut d = dispatch_args(k, obj, ka, &l);
            (d.acquire, d.release) = (FenceScope::System, FenceScope::System);
            Ok(d)
        };
    let empty = launch("empty", [1, 1, 1], &[])?;
    let kwords = (padded_cols(COLS) / 16) as u64;
    let gemv = launch(
        "gemv_i2s",
        [(ROWS as u32).div_ceil(gpu::GEMV_ROWS_PER_GROUP), 1, 1],
        &[
            va + w_off as u64,
            va + q_off as u64,
            va + a_off as u64,
            u64::from(1.0f32.to_bits()),
            va + o_off as u64,
            ROWS as u64,
            kwords,
        ],
    )?;
    let budget = Duration::from_secs(10);
    let e = measure(runs, || Ok(queue.dispatch(&empty)?.wait(budget)?))?;
    let r = measure(runs, || Ok(queue.dispatch(&gemv)?.wait(budget)?))?;
    let tag = if emulator { "emulated " } else { "" };
    Ok(Some(vec![
        Series {
            name: format!("{tag}igpu empty kernel"),
            samples_ns: e,
        },
        Series {
            name: format!("{tag}igpu gemv {ROWS}x{COLS}"),
            samples_ns: r,
        },
    ]))
}
