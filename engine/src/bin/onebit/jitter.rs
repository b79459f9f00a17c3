//! `onebit jitter`: dispatch-to-completion latency of an empty and of a real kernel, N
//! runs, as percentiles + histogram text and an SVG plot, with the GPU clock policy; the
//! raw samples as JSON or CSV; under chosen conditions (pinned core, SCHED_FIFO, locked
//! memory) and, on the iGPU, with each completion-wait mode side by side.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::Args as ClapArgs;
use onebit_drv::buffer::BufferDescriptor;
use onebit_drv::codeobj::load::{dispatch_args, KernargArena, Program};
use onebit_drv::codeobj::{mach_for, CodeObject, Launch};
use onebit_drv::kfd::{AqlQueue, FenceScope, QueueOptions, SharedGpuBuffer};
use onebit_engine::backend::jitter::{clock_policy, csv, json, svg, text, Series};
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
    /// Write every sample, its series' statistics and the run's conditions as JSON here.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Write every sample as CSV (`series,run,ns`) here.
    #[arg(long)]
    pub csv: Option<PathBuf>,
    /// Pin the measuring thread to this CPU (the CPU series' worker threads are not moved).
    #[arg(long)]
    pub pin_cpu: Option<usize>,
    /// Run the measuring thread under SCHED_FIFO at this priority (1-99; needs root or
    /// CAP_SYS_NICE).
    #[arg(long)]
    pub fifo: Option<i32>,
    /// Lock all memory (mlockall) so page faults stay out of the samples.
    #[arg(long)]
    pub mlock: bool,
    /// iGPU completion waits to measure, side by side (comma-separated): `default` (poll
    /// 50 µs, then interrupts), `poll` (poll only), `interrupt` (interrupts only).
    #[arg(long, default_value = "default", value_delimiter = ',')]
    pub wait: Vec<WaitMode>,
}

/// How the host waits for a dispatch's completion signal.
#[derive(Clone, Copy, Debug, PartialEq, clap::ValueEnum)]
pub enum WaitMode {
    Default,
    Poll,
    Interrupt,
}

impl WaitMode {
    fn wait(
        self,
        c: &onebit_drv::kfd::Completion,
        budget: Duration,
    ) -> Result<(), onebit_drv::kfd::KfdError> {
        match self {
            WaitMode::Default => c.wait(budget),
            WaitMode::Poll => c.wait_spinning(budget, budget),
            WaitMode::Interrupt => c.wait_spinning(Duration::ZERO, budget),
        }
    }

    fn name(self) -> &'static str {
        match self {
            WaitMode::Default => "default wait",
            WaitMode::Poll => "poll",
            WaitMode::Interrupt => "interrupt",
        }
    }
}

/// Applies the requested conditions to this thread and says what holds.
fn set_conditions(a: &Args) -> Result<Vec<(String, String)>, Box<dyn std::error::Error>> {
    let mut held = vec![
        ("surface".to_string(), a.surface.to_string()),
        ("emulator".to_string(), a.emulator.to_string()),
        ("runs".to_string(), a.runs.to_string()),
    ];
    if let Some(cpu) = a.pin_cpu {
        if cpu >= libc::CPU_SETSIZE as usize {
            return Err(format!("--pin-cpu {cpu}: no such CPU").into());
        }
        // SAFETY: a zeroed cpu_set_t is the empty set; CPU_SET writes inside it (cpu was
        // bounds-checked against CPU_SETSIZE above).
        let set = unsafe {
            let mut set: libc::cpu_set_t = std::mem::zeroed();
            libc::CPU_SET(cpu, &mut set);
            set
        };
        // SAFETY: pid 0 is this thread; `set` is a valid cpu_set_t of the size passed.
        let r = unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) };
        if r != 0 {
            let e = std::io::Error::last_os_error();
            return Err(format!("--pin-cpu {cpu}: sched_setaffinity failed ({e}); pick a CPU this process may run on (see `taskset -p $$`)").into());
        }
        held.push(("pin_cpu".into(), cpu.to_string()));
    }
    if let Some(prio) = a.fifo {
        // SAFETY: sched_param is plain integers (musl's has more of them than glibc's), for
        // which all zeroes is a valid value.
        let mut param: libc::sched_param = unsafe { std::mem::zeroed() };
        param.sched_priority = prio;
        // The system call itself: musl's sched_setscheduler() always fails with ENOSYS, since
        // the kernel's per-thread semantics differ from POSIX's per-process ones.
        // SAFETY: pid 0 is this thread; `param` is a valid sched_param that outlives the call.
        let r = unsafe {
            libc::syscall(
                libc::SYS_sched_setscheduler,
                0,
                libc::SCHED_FIFO,
                &param as *const libc::sched_param,
            )
        };
        if r != 0 {
            let e = std::io::Error::last_os_error();
            return Err(format!("--fifo {prio}: sched_setscheduler(SCHED_FIFO) failed ({e}); it needs root or CAP_SYS_NICE and a priority in 1..=99").into());
        }
        held.push(("sched".into(), format!("SCHED_FIFO {prio}")));
    } else {
        held.push(("sched".into(), "SCHED_OTHER".into()));
    }
    if a.mlock {
        // SAFETY: mlockall takes flags only and touches no memory of ours.
        let r = unsafe { libc::mlockall(libc::MCL_CURRENT | libc::MCL_FUTURE) };
        if r != 0 {
            let e = std::io::Error::last_os_error();
            return Err(format!(
                "--mlock: mlockall failed ({e}); raise RLIMIT_MEMLOCK (`ulimit -l`) or run as root"
            )
            .into());
        }
    }
    held.push(("mlock".into(), a.mlock.to_string()));
    Ok(held)
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
    let mut conditions = set_conditions(&args)?;
    let series = match args.surface {
        Surface::Cpu => cpu(args.runs)?,
        Surface::Igpu => match igpu(args.runs, args.emulator, &args.wait)? {
            Some(s) => s,
            None => return Ok(()),
        },
        Surface::NpuIgpu | Surface::NpuCpu => {
            return Err("jitter --surface npu+* needs the NPU dispatch path, which this command does not drive yet".into())
        }
    };
    let policy = clock_policy(onebit_drv::io::real().as_ref());
    print!("{}", text(&series, &policy));
    if args.surface == Surface::Igpu {
        let waits: Vec<&str> = args.wait.iter().map(|w| w.name()).collect();
        conditions.push(("wait".into(), waits.join(",")));
    }
    conditions.extend(policy.iter().cloned());
    let write = |path: &PathBuf, what: String| {
        std::fs::write(path, what).map_err(|e| format!("cannot write {}: {e}", path.display()))
    };
    if let Some(path) = &args.json {
        write(path, format!("{:#}\n", json(&series, &conditions)))?;
        println!("wrote {}", path.display());
    }
    if let Some(path) = &args.csv {
        write(path, csv(&series))?;
        println!("wrote {}", path.display());
    }
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

fn igpu(
    runs: usize,
    emulator: bool,
    waits: &[WaitMode],
) -> Result<Option<Vec<Series>>, Box<dyn std::error::Error>> {
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
    let tag = if emulator { "emulated " } else { "" };
    let mut series = Vec::new();
    for &mode in waits {
        let e = measure(runs, || Ok(mode.wait(&queue.dispatch(&empty)?, budget)?))?;
        let r = measure(runs, || Ok(mode.wait(&queue.dispatch(&gemv)?, budget)?))?;
        let how = if waits.len() > 1 {
            format!(", {}", mode.name())
        } else {
            String::new()
        };
        series.push(Series {
            name: format!("{tag}igpu empty kernel{how}"),
            samples_ns: e,
        });
        series.push(Series {
            name: format!("{tag}igpu gemv {ROWS}x{COLS}{how}"),
            samples_ns: r,
        });
    }
    Ok(Some(series))
}
