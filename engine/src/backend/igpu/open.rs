//! Opening the iGPU: the real one through `/dev/kfd`, or the in-process emulator with the
//! kernels registered as host builds of their GPU sources.

use std::path::Path;

use onebit_drv::emu::kfd::KfdEmu;
use onebit_drv::emu::Emulator;
use onebit_drv::kfd::{Device, DeviceOptions};

use super::{emulator, IgpuError};

/// A GPU to test: real or emulated (the emulator handles stay alive with it).
pub struct Gpu {
    pub dev: Device,
    pub kfd: Option<KfdEmu>,
    pub emu: Option<Emulator>,
}

impl Gpu {
    /// Binds a loaded program's symbols when emulated.
    pub fn bind(&self, p: &onebit_drv::codeobj::load::Program) {
        if let Some(k) = &self.kfd {
            emulator::bind_program(k, p);
        }
    }
}

/// Opens the iGPU (or the emulator); None, after saying why, when there is no AMD GPU.
pub fn open_gpu(use_emulator: bool) -> Result<Option<Gpu>, IgpuError> {
    if use_emulator {
        let (emu, kfd) = Emulator::strix_halo();
        emulator::register_kernels(&kfd)?;
        let dev = Device::open(
            &emu.io(),
            &DeviceOptions {
                gfx: Some("gfx1151".into()),
            },
        )?;
        tracing::info!("device: emulated Strix Halo (gfx1151) — kernels run as host builds of their GPU sources");
        return Ok(Some(Gpu {
            dev,
            kfd: Some(kfd),
            emu: Some(emu),
        }));
    }
    let io = onebit_drv::io::real();
    if !io.exists(Path::new("/dev/kfd")) {
        tracing::warn!(
            "no AMD GPU here: /dev/kfd does not exist, so nothing was dispatched. On a Strix Halo, load \
             amdgpu and add yourself to the render group; to exercise this command without the hardware, \
             add --emulator."
        );
        return Ok(None);
    }
    let dev = Device::open(&io, &DeviceOptions::default())?;
    tracing::info!(
        "device: {} (gpu_id {:#x}, KFD {:?})",
        dev.node().gfx_name(),
        dev.gpu_id(),
        dev.version()
    );
    Ok(Some(Gpu {
        dev,
        kfd: None,
        emu: None,
    }))
}
