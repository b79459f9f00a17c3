//! Choosing and opening the compute surface `--surface` names, with the reasons logged.
//!
//! `auto` takes the iGPU when KFD reports a GPU the embedded gfx1151 code objects fit (or
//! `--emulator` is given), else the CPU. NPU prefill needs a kernel artifact built with
//! AMD's IRON/Peano toolchain (`kernels/npu/README.md`), which this build does not ship,
//! so `auto` never picks `npu+*` and asking for one is an error that says so.

use std::sync::Arc;
use std::time::Duration;

use super::cpu::CpuBackend;
use super::fallback::Fallback;
use super::igpu::open::open_gpu;
use super::igpu::{emulator, FaultPlan, IgpuBackend, IgpuOptions, IgpuSurface};
use super::{Backend, Surface, SurfaceChoice};
use crate::model::Model;
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
        }
    }
}

/// An opened surface. Callers match once and hand the backend to generic code.
pub enum Opened {
    Cpu(CpuBackend<Arc<Model>>),
    /// The iGPU, with the CPU behind it should the device fail.
    Igpu(Box<Fallback>),
}

impl Opened {
    pub fn surface(&self) -> Surface {
        match self {
            Opened::Cpu(b) => b.surface(),
            Opened::Igpu(b) => b.surface(),
        }
    }
}

/// Opens the surface `o.choice` names for `model`.
pub fn open(mut model: Model, o: &SelectOptions) -> Result<Opened> {
    let want = resolve(o);
    if want.prefills_on_npu() {
        return Err(Error::Device(format!(
            "--surface {want}: NPU prefill needs an XDNA2 kernel artifact built with AMD's IRON/Peano \
             toolchain (kernels/npu/README.md), and this build has none; it cannot be compiled on a \
             machine without that toolchain. Use --surface igpu or cpu (or auto)"
        )));
    }
    if want == Surface::Igpu {
        return open_igpu(model, o).map(|f| Opened::Igpu(Box::new(f)));
    }
    if o.sparse_down {
        model.use_sparse_down();
    }
    let cpu = CpuBackend::new(Arc::new(model), o.ctx).with_screened_head(o.screened_head);
    tracing::info!(surface = "cpu", isa = ?onebit_kernels::ternary::Isa::best(), "compute surface");
    Ok(Opened::Cpu(cpu))
}

/// The surface `o.choice` names: itself, or what `auto` picks (logged with the reason).
pub fn resolve(o: &SelectOptions) -> Surface {
    match o.choice {
        SurfaceChoice::Fixed(s) => s,
        SurfaceChoice::Auto => auto(o),
    }
}

/// What `auto` picks, and why (logged).
fn auto(o: &SelectOptions) -> Surface {
    if o.emulator {
        tracing::info!("--surface auto: the emulated iGPU (--emulator)");
        return Surface::Igpu;
    }
    let kfd = std::path::Path::new("/dev/kfd");
    if !kfd.exists() {
        tracing::info!("--surface auto: the CPU (no /dev/kfd: no AMD GPU driver here; NPU prefill needs an artifact this build lacks)");
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
            ..IgpuOptions::default()
        },
    )
    .map_err(|e| Error::Device(format!("--surface igpu: {e}")))?;
    if let Some(k) = &gpu.kfd {
        emulator::bind(k, &be);
    }
    // From here on the CPU (the fallback) reads the GPU's copy of the weights.
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
    // The CPU fallback reads the row-major weights the iGPU copy came from.
    let cpu = CpuBackend::new(model, ctx).with_screened_head(o.screened_head);
    Ok(Fallback::new(surface, cpu))
}
