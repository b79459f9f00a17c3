//! Choosing and opening the compute surface `--surface` names, with the reasons logged.
//!
//! `auto` takes the iGPU when KFD reports a GPU the embedded gfx1151 code objects fit (or
//! `--emulator` is given), else the CPU; it adds NPU prefill in front of that when an NPU
//! device exists and the artifact directory (`--npu-artifacts` or `ONEBIT_NPU_ARTIFACTS`)
//! holds a kernel for every projection shape of the model. NPU kernels are built with
//! AMD's IRON/Peano toolchain (`kernels/npu/build.sh`), which this build does not ship:
//! `npu+cpu` and `npu+igpu` need either such a directory or `--emulator`, whose NPU runs
//! kernels made in process.

use std::sync::Arc;
use std::time::Duration;

use std::path::PathBuf;

use super::cpu::CpuBackend;
use super::fallback::Fallback;
use super::igpu::open::open_gpu;
use super::igpu::{emulator, FaultPlan, IgpuBackend, IgpuOptions, IgpuSurface};
use super::npu::{self, ArtifactSource, Machine, NpuPrefill, NpuSurface};
use super::{Backend, Surface, SurfaceChoice};
use crate::forward::KvFormat;
use crate::model::{Activation, Model};
use crate::{Error, Result};

/// How to open a surface.
#[derive(Clone, Debug)]
pub struct SelectOptions {
    pub choice: SurfaceChoice,
    /// Run device surfaces on the in-process emulator instead of the hardware.
    pub emulator: bool,
    /// Tokens a session holds by default (0: the model's context).
    pub ctx: usize,
    /// Sessions that may be stepped together (the daemon's slots).
    pub sessions: usize,
    /// CPU: greedy rows take the int8-screened head.
    pub screened_head: bool,
    /// CPU: skip down_proj's zero-input columns (lossless; needs an input-major copy).
    pub sparse_down: bool,
    /// How long one device step may take before its queue counts as hung.
    pub device_timeout: Duration,
    /// A fault to inject through the emulator.
    pub fault: Option<FaultPlan>,
    /// Built NPU kernel artifacts (`kernels/npu/build.sh`); `ONEBIT_NPU_ARTIFACTS` when
    /// absent.
    pub npu_artifacts: Option<PathBuf>,
    /// CPU: how sessions store their KV cache (device surfaces keep f32, which their
    /// kernels read).
    pub kv_format: KvFormat,
}

impl Default for SelectOptions {
    fn default() -> Self {
        Self {
            choice: SurfaceChoice::Fixed(Surface::Cpu),
            emulator: false,
            ctx: 0,
            sessions: 1,
            screened_head: true,
            sparse_down: true,
            device_timeout: Duration::from_secs(30),
            fault: None,
            npu_artifacts: None,
            kv_format: KvFormat::default(),
        }
    }
}

/// The environment variable naming the NPU artifact directory.
pub const NPU_ARTIFACTS_ENV: &str = "ONEBIT_NPU_ARTIFACTS";

impl SelectOptions {
    /// Where NPU kernels come from: the emulator's own, or a directory of built ones.
    fn npu_source(&self) -> Option<ArtifactSource> {
        if self.emulator {
            return Some(ArtifactSource::Emulated);
        }
        self.npu_artifacts
            .clone()
            .or_else(|| std::env::var_os(NPU_ARTIFACTS_ENV).map(PathBuf::from))
            .map(ArtifactSource::Dir)
    }
}

/// An opened surface. Callers match once and hand the backend to generic code.
pub enum Opened {
    Cpu(CpuBackend<Arc<Model>>),
    /// The iGPU, with the CPU behind it should the device fail.
    Igpu(Box<Fallback>),
    /// NPU prefill, CPU decode.
    NpuCpu(Box<NpuSurface<CpuBackend<Arc<Model>>>>),
    /// NPU prefill, iGPU decode (with the CPU behind it).
    NpuIgpu(Box<NpuSurface<Fallback>>),
}

impl Opened {
    pub fn surface(&self) -> Surface {
        match self {
            Opened::Cpu(b) => b.surface(),
            Opened::Igpu(b) => b.surface(),
            Opened::NpuCpu(b) => b.surface(),
            Opened::NpuIgpu(b) => b.surface(),
        }
    }
}

/// Opens the surface `o.choice` names for `model`.
pub fn open(mut model: Model, o: &SelectOptions) -> Result<Opened> {
    let want = resolve(o, &model);
    if want.prefills_on_npu() {
        let Some(source) = o.npu_source() else {
            return Err(Error::Device(format!(
                "--surface {want}: NPU prefill needs XDNA2 kernel artifacts built with AMD's IRON/Peano \
                 toolchain (kernels/npu/build.sh on a Strix Halo; this build cannot compile them): pass \
                 their directory with --npu-artifacts or {NPU_ARTIFACTS_ENV}, add --emulator to run the \
                 emulated NPU, or use --surface igpu, cpu or auto"
            )));
        };
        return open_npu(model, o, want, &source);
    }
    if want == Surface::Igpu {
        return open_igpu(model, o).map(|f| Opened::Igpu(Box::new(f)));
    }
    // Only relu² leaves down_proj's input mostly zero; SiLU's is dense, so the
    // column-major copy would never be read.
    if o.sparse_down && model.config.block.activation() == Activation::Relu2 {
        model.use_sparse_down();
        if o.sessions > 1 {
            let started = std::time::Instant::now();
            let bytes = model.keep_down_rows();
            tracing::info!(
                mib = bytes >> 20,
                seconds = format!("{:.2}", started.elapsed().as_secs_f64()),
                "down_proj kept row-major too, for batched steps of several sessions"
            );
        }
    }
    model.use_lanes();
    let cpu = CpuBackend::new(Arc::new(model), o.ctx)
        .with_screened_head(o.screened_head)
        .with_kv_format(o.kv_format);
    tracing::info!(surface = "cpu", isa = ?onebit_kernels::ternary::Isa::best(), kv = %o.kv_format, "compute surface");
    Ok(Opened::Cpu(cpu))
}

/// The surface `o.choice` names for `model`: itself, or what `auto` picks (logged with the
/// reason).
pub fn resolve(o: &SelectOptions, model: &Model) -> Surface {
    match o.choice {
        SurfaceChoice::Fixed(s) => s,
        SurfaceChoice::Auto => auto(o, model),
    }
}

/// NPU prefill in front of the CPU or the iGPU, planned from the roofline model.
fn open_npu(
    model: Model,
    o: &SelectOptions,
    want: Surface,
    source: &ArtifactSource,
) -> Result<Opened> {
    let machine = if want.decodes_on_igpu() {
        Machine::STRIX_HALO_IGPU
    } else {
        Machine::STRIX_HALO_CPU
    };
    let plan = npu::plan::plan(&model.config, &machine);
    // The NPU reads the row-major tensors in place from the memfd behind them, so the CPU
    // keeps them too (no input-major down_proj copy). With the iGPU decoding, those tensors
    // are windows of the iGPU's mapping of the model file's memfd by then.
    let (igpu, model) = if want.decodes_on_igpu() {
        let f = open_igpu(model, o)?;
        let m = f.cpu().shared_model();
        (Some(f), m)
    } else {
        (None, Arc::new(model))
    };
    let prefill = NpuPrefill::open(&model, plan.chunk, source)
        .map_err(|e| Error::Device(format!("--surface {want}: {e}")))?;
    let prefill = Arc::new(prefill);
    tracing::info!(surface = %want, source = ?source, ?plan, "compute surface");
    if let Some(f) = igpu {
        return Ok(Opened::NpuIgpu(Box::new(NpuSurface::new(
            f, model, prefill, plan, want,
        ))));
    }
    let cpu = CpuBackend::new(model.clone(), o.ctx)
        .with_screened_head(o.screened_head)
        .with_kv_format(o.kv_format);
    Ok(Opened::NpuCpu(Box::new(NpuSurface::new(
        cpu, model, prefill, plan, want,
    ))))
}

/// What `auto` picks, and why (logged).
fn auto(o: &SelectOptions, model: &Model) -> Surface {
    let decode = match auto_decode(o) {
        Surface::Igpu => match crate::backend::igpu::model_supported(model) {
            Ok(()) => Surface::Igpu,
            Err(why) => {
                tracing::info!("--surface auto: the CPU after all ({why})");
                Surface::Cpu
            }
        },
        other => other,
    };
    match npu_ready(o, model) {
        Ok(()) => {
            let with = if decode == Surface::Igpu {
                Surface::NpuIgpu
            } else {
                Surface::NpuCpu
            };
            tracing::info!(
                "--surface auto: {with} (an NPU and a kernel for every projection shape)"
            );
            with
        }
        Err(why) => {
            tracing::info!("--surface auto: no NPU prefill ({why})");
            decode
        }
    }
}

/// Whether NPU prefill can run: a device and built artifacts covering the model's shapes.
/// On the emulator `auto` keeps to the iGPU: `npu+*` are asked for by name there.
fn npu_ready(o: &SelectOptions, model: &Model) -> std::result::Result<(), String> {
    let Some(ArtifactSource::Dir(dir)) = o.npu_source() else {
        return Err(format!(
            "no NPU kernel artifacts: build them with kernels/npu/build.sh and pass --npu-artifacts or {NPU_ARTIFACTS_ENV}"
        ));
    };
    let io = onebit_drv::io::real();
    if onebit_drv::xdna::find_npus(&*io).is_empty() {
        return Err("no XDNA NPU (amdxdna) found".into());
    }
    let found = npu::artifacts::load_dir(&dir)?;
    for s in npu::prefill::model_shapes(model, 0) {
        if !found.iter().any(|(f, _)| f.k == s.k && f.n == s.n) {
            return Err(format!(
                "{} has no kernel for the {}x{} projections",
                dir.display(),
                s.n,
                s.k
            ));
        }
    }
    Ok(())
}

/// The decode surface `auto` picks.
fn auto_decode(o: &SelectOptions) -> Surface {
    if o.emulator {
        tracing::info!("--surface auto: the emulated iGPU (--emulator)");
        return Surface::Igpu;
    }
    let kfd = std::path::Path::new("/dev/kfd");
    if !kfd.exists() {
        tracing::info!("--surface auto: the CPU (no /dev/kfd: no AMD GPU driver here)");
        return Surface::Cpu;
    }
    let io = onebit_drv::io::real();
    match onebit_drv::topology::Topology::read(&*io) {
        Ok(topo) => {
            if let Some(n) = topo
                .gpus()
                .find(|n| onebit_drv::codeobj::mach_for(&n.gfx_name()).is_some())
            {
                tracing::info!(
                    gpu = n.gfx_name(),
                    "--surface auto: the iGPU (KFD reports a GPU the embedded code objects fit)"
                );
                return Surface::Igpu;
            }
            tracing::info!("--surface auto: the CPU (KFD reports no RDNA 3/3.5 GPU the embedded code objects fit)");
        }
        Err(e) => tracing::info!("--surface auto: the CPU (cannot read the KFD topology: {e})"),
    }
    Surface::Cpu
}

fn open_igpu(mut model: Model, o: &SelectOptions) -> Result<Fallback> {
    let gpu = open_gpu(o.emulator)
        .map_err(|e| Error::Device(format!("--surface igpu: {e}")))?
        .ok_or_else(|| {
            Error::Device(
                "--surface igpu needs an AMD GPU (/dev/kfd); use --surface cpu or auto, or add --emulator"
                    .into(),
            )
        })?;
    let ctx = if o.ctx == 0 {
        model.config.max_context
    } else {
        o.ctx.min(model.config.max_context)
    };
    let be = IgpuBackend::new(
        &gpu.dev,
        &model,
        &IgpuOptions {
            max_ctx: ctx,
            max_sessions: o.sessions.max(1),
            timeout: o.device_timeout,
            // The model is pointed at the GPU's weights below (or dropped on failure).
            discard_sources: true,
            ..IgpuOptions::default()
        },
    )
    .map_err(|e| Error::Device(format!("--surface igpu: {e}")))?;
    if let Some(k) = &gpu.kfd {
        emulator::bind(k, &be);
    }
    // From here on the CPU (the fallback) reads the weights in the GPU's mapping.
    be.share_weights_with(&mut model);
    let model = Arc::new(model);
    let mut surface = IgpuSurface::new(be, gpu);
    if let Some(f) = o.fault {
        surface = surface.with_fault(f).map_err(Error::from)?;
    }
    tracing::info!(
        surface = "igpu",
        emulator = o.emulator,
        same_va = surface.backend().same_va(),
        "compute surface (the CPU takes over should the device fail)"
    );
    if o.kv_format != KvFormat::F32 {
        tracing::info!(
            "--kv {}: the iGPU's kernels read an f32 KV cache, so its sessions (and the CPU \
             continuing them) keep f32",
            o.kv_format
        );
    }
    // The CPU fallback reads the row-major weights the iGPU copy came from, and continues
    // device sessions in their f32 caches.
    let cpu = CpuBackend::new(model, ctx)
        .with_screened_head(o.screened_head)
        .with_kv_format(KvFormat::F32);
    Ok(Fallback::new(surface, cpu))
}
