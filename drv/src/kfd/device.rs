//! Opening the GPU: `/dev/kfd`, its version, the render node and the compute VM.

use std::path::Path;
use std::sync::{Arc, Mutex, Weak};

use super::events::Interrupts;
use super::{KfdError, Result, MIN_VERSION};
use crate::error::{Ctx, SysError};
use crate::io::{Fd, KernelIo, Mapping};
use crate::sys::kfd as sys;
use crate::topology::{Node, Topology};

/// Path of the KFD node.
pub const KFD_PATH: &str = "/dev/kfd";

/// `GET_VERSION`'s answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct KfdVersion {
    /// Major (1).
    pub major: u32,
    /// Minor.
    pub minor: u32,
}

impl KfdVersion {
    /// Whether at least `major.minor`.
    pub fn at_least(self, major: u32, minor: u32) -> bool {
        (self.major, self.minor) >= (major, minor)
    }
}

/// The GPU's apertures in this process (GET_PROCESS_APERTURES_NEW).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Apertures {
    /// LDS window base (flat addressing).
    pub lds_base: u64,
    /// Scratch window base.
    pub scratch_base: u64,
    /// First GPUVM address usable for buffers.
    pub gpuvm_base: u64,
    /// Last GPUVM address.
    pub gpuvm_limit: u64,
}

/// GET_CLOCK_COUNTERS.
#[derive(Debug, Clone, Copy, Default)]
pub struct ClockCounters {
    /// GPU reference counter.
    pub gpu: u64,
    /// CPU raw monotonic ns.
    pub cpu: u64,
    /// Boot-time ns.
    pub system: u64,
    /// Frequency of `system` in Hz.
    pub system_freq: u64,
}

/// What to open.
#[derive(Debug, Clone, Default)]
pub struct DeviceOptions {
    /// LLVM target to pick ("gfx1151"); None = the first GPU.
    pub gfx: Option<String>,
}

/// The descriptors and ids every GPU object needs; objects keep it alive.
pub(crate) struct DevCore {
    pub(crate) io: Arc<dyn KernelIo>,
    pub(crate) kfd: Fd,
    pub(crate) render: Fd,
    pub(crate) gpu_id: u32,
}

impl DevCore {
    pub(crate) fn kio(&self) -> &dyn KernelIo {
        self.io.as_ref()
    }

    /// Runs one KFD ioctl, naming it in the error.
    pub(crate) fn ioctl<T>(
        &self,
        name: &'static str,
        f: unsafe fn(&dyn KernelIo, i32, &mut T) -> std::io::Result<i32>,
        arg: &mut T,
    ) -> Result<i32, SysError> {
        // SAFETY: every caller passes an `arg` whose embedded pointers (if any) point at
        // live local arrays sized as the count fields say.
        unsafe { f(self.kio(), self.kfd.raw(), arg) }.ctx(name, || KFD_PATH.into())
    }
}

pub(crate) struct DevShared {
    pub(crate) core: Arc<DevCore>,
    pub(crate) node: Node,
    pub(crate) version: KfdVersion,
    pub(crate) apertures: Apertures,
    pub(crate) interrupts: Mutex<Option<Arc<Interrupts>>>,
    pub(crate) doorbells: Mutex<Option<Arc<Mapping>>>,
}

/// The devices this process has open, one per (KFD process, GPU).
struct ProcessDevice {
    process: Option<usize>,
    gpu_id: u32,
    dev: Weak<DevShared>,
    /// Held on the real kernel, where the KFD process outlives every descriptor.
    keep: Option<Device>,
}

static PROCESS_DEVICES: Mutex<Vec<ProcessDevice>> = Mutex::new(Vec::new());

/// An opened GPU with its compute VM: one per process and GPU ([`Device::open`] returns
/// the existing one). Cheap to clone.
#[derive(Clone)]
pub struct Device {
    pub(crate) shared: Arc<DevShared>,
}

impl std::fmt::Debug for Device {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Device")
            .field("gpu_id", &self.shared.core.gpu_id)
            .field("gfx", &self.shared.node.gfx_name())
            .field("version", &self.shared.version)
            .finish()
    }
}

/// GET_VERSION on an open `/dev/kfd`.
pub fn get_version(io: &dyn KernelIo, kfd: &Fd) -> Result<KfdVersion, SysError> {
    let mut a = sys::kfd_ioctl_get_version_args::default();
    // SAFETY: no pointers in the args.
    unsafe { sys::get_version(io, kfd.raw(), &mut a) }
        .ctx("AMDKFD_IOC_GET_VERSION", || KFD_PATH.into())?;
    Ok(KfdVersion {
        major: a.major_version,
        minor: a.minor_version,
    })
}

fn open_node(io: &Arc<dyn KernelIo>, path: &str) -> Result<Fd, SysError> {
    Fd::open(io, Path::new(path)).ctx("open", || path.into())
}

impl Device {
    /// Reads the topology, opens the GPU and acquires its compute VM.
    pub fn open(io: &Arc<dyn KernelIo>, opts: &DeviceOptions) -> Result<Device> {
        let topo = Topology::read(io.as_ref())?;
        let node = topo.pick_gpu(opts.gfx.as_deref())?.clone();
        Self::open_node(io, node)
    }

    /// Opens a specific topology node, or returns the device this process already has for
    /// it: KFD keeps one process object per OS process, whose GPU VM is bound to the first
    /// render file for good (a second render fd gets EBUSY from ACQUIRE_VM) and whose event
    /// page is registered once (a second one is EINVAL). On the real kernel the device
    /// therefore lives until the process exits.
    pub fn open_node(io: &Arc<dyn KernelIo>, node: Node) -> Result<Device> {
        let process = io.kfd_process_id();
        let mut reg = PROCESS_DEVICES.lock().unwrap_or_else(|p| p.into_inner());
        reg.retain(|s| s.keep.is_some() || s.dev.strong_count() > 0);
        if let Some(shared) = reg
            .iter()
            .find(|s| s.process == process && s.gpu_id == node.gpu_id)
            .and_then(|s| s.dev.upgrade())
        {
            return Ok(Device { shared });
        }
        let dev = Self::open_fresh(io, node)?;
        reg.push(ProcessDevice {
            process,
            gpu_id: dev.gpu_id(),
            dev: Arc::downgrade(&dev.shared),
            keep: process.is_none().then(|| dev.clone()),
        });
        Ok(dev)
    }

    fn open_fresh(io: &Arc<dyn KernelIo>, node: Node) -> Result<Device> {
        let kfd = open_node(io, KFD_PATH)?;
        let version = get_version(io.as_ref(), &kfd)?;
        if !version.at_least(MIN_VERSION.0, MIN_VERSION.1) || version.major != 1 {
            return Err(KfdError::Version {
                major: version.major,
                minor: version.minor,
            });
        }
        let render_path = node.render_node().ok_or_else(|| {
            KfdError::Invalid(format!(
                "GPU node {} has no drm_render_minor in its properties",
                node.index
            ))
        })?;
        let render = open_node(io, &render_path)?;
        let core = Arc::new(DevCore {
            io: io.clone(),
            kfd,
            render,
            gpu_id: node.gpu_id,
        });
        let mut a = sys::kfd_ioctl_acquire_vm_args {
            drm_fd: core.render.raw() as u32,
            gpu_id: core.gpu_id,
        };
        core.ioctl("AMDKFD_IOC_ACQUIRE_VM", sys::acquire_vm, &mut a).map_err(|e| {
            match e.errno() {
                Some(libc::EINVAL) => e.with_advice(format!("{render_path} may already have a graphics VM in use; open a fresh render fd")),
                Some(libc::EBUSY) => e.with_advice("this process already bound the GPU's VM to another render fd (a ROCm runtime loaded in the same process?); KFD allows one per process, so use that one or a separate process".to_string()),
                _ => e,
            }
        })?;
        let apertures = Self::read_apertures(&core)?;
        tracing::info!(gpu_id = core.gpu_id, gfx = %node.gfx_name(), ?version, "KFD device open");
        let shared = DevShared {
            core,
            node,
            version,
            apertures,
            interrupts: Mutex::new(None),
            doorbells: Mutex::new(None),
        };
        let dev = Device {
            shared: Arc::new(shared),
        };
        if version.at_least(1, 13) {
            // As ROCr does: the enable bit marks the runtime enabled for the debugger (all-zero
            // arguments would be runtime_disable, see kfd_ioctl_runtime_enable). No TTMP save:
            // onebit installs no trap handler. It must come before any queue (EEXIST after);
            // queues work without it, so a refusal (EBUSY when another runtime in this
            // process enabled it first) is reported, not fatal.
            let mut r = sys::kfd_ioctl_runtime_enable_args {
                mode_mask: crate::flags::KfdRuntimeMode::ENABLE.bits(),
                ..Default::default()
            };
            if let Err(e) =
                dev.core()
                    .ioctl("AMDKFD_IOC_RUNTIME_ENABLE", sys::runtime_enable, &mut r)
            {
                tracing::warn!(error = %e, "RUNTIME_ENABLE refused; continuing without it");
            }
        }
        Ok(dev)
    }

    fn read_apertures(core: &DevCore) -> Result<Apertures> {
        let mut list = [sys::kfd_process_device_apertures::default(); 16];
        let mut a = sys::kfd_ioctl_get_process_apertures_new_args {
            kfd_process_device_apertures_ptr: list.as_mut_ptr() as u64,
            num_of_nodes: list.len() as u32,
            pad: 0,
        };
        core.ioctl(
            "AMDKFD_IOC_GET_PROCESS_APERTURES_NEW",
            sys::get_process_apertures_new,
            &mut a,
        )?;
        let n = (a.num_of_nodes as usize).min(list.len());
        let ap = list[..n]
            .iter()
            .find(|x| x.gpu_id == core.gpu_id)
            .ok_or_else(|| {
                KfdError::Invalid(format!(
                    "GET_PROCESS_APERTURES_NEW lists no aperture for gpu_id {}",
                    core.gpu_id
                ))
            })?;
        Ok(Apertures {
            lds_base: ap.lds_base,
            scratch_base: ap.scratch_base,
            gpuvm_base: ap.gpuvm_base,
            gpuvm_limit: ap.gpuvm_limit,
        })
    }

    pub(crate) fn core(&self) -> &Arc<DevCore> {
        &self.shared.core
    }

    /// The `KernelIo` in use.
    pub fn io(&self) -> &Arc<dyn KernelIo> {
        &self.shared.core.io
    }

    /// KFD's id of this GPU (changes across boots).
    pub fn gpu_id(&self) -> u32 {
        self.shared.core.gpu_id
    }

    /// The topology node.
    pub fn node(&self) -> &Node {
        &self.shared.node
    }

    /// KFD uapi version.
    pub fn version(&self) -> KfdVersion {
        self.shared.version
    }

    /// Apertures.
    pub fn apertures(&self) -> Apertures {
        self.shared.apertures
    }

    /// GET_CLOCK_COUNTERS.
    pub fn clock_counters(&self) -> Result<ClockCounters> {
        let mut a = sys::kfd_ioctl_get_clock_counters_args {
            gpu_id: self.gpu_id(),
            ..Default::default()
        };
        self.core().ioctl(
            "AMDKFD_IOC_GET_CLOCK_COUNTERS",
            sys::get_clock_counters,
            &mut a,
        )?;
        Ok(ClockCounters {
            gpu: a.gpu_clock_counter,
            cpu: a.cpu_clock_counter,
            system: a.system_clock_counter,
            system_freq: a.system_clock_freq,
        })
    }

    /// AVAILABLE_MEMORY: bytes KFD still lets this process allocate on this GPU.
    pub fn available_memory(&self) -> Result<u64> {
        let mut a = sys::kfd_ioctl_get_available_memory_args {
            gpu_id: self.gpu_id(),
            ..Default::default()
        };
        self.core()
            .ioctl("AMDKFD_IOC_AVAILABLE_MEMORY", sys::available_memory, &mut a)?;
        Ok(a.available)
    }

    /// The event page and the device's events (created on first use).
    pub(crate) fn interrupts(&self) -> Result<Arc<Interrupts>> {
        let mut slot = self
            .shared
            .interrupts
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if let Some(i) = slot.as_ref() {
            return Ok(i.clone());
        }
        let i = Arc::new(Interrupts::new(self)?);
        *slot = Some(i.clone());
        Ok(i)
    }
}

impl Device {
    /// SET_EVENT on the completion event: wakes threads blocked in `Completion::wait` so
    /// they re-check their signals (e.g. after the CPU completed a signal itself).
    pub fn wake_waiters(&self) -> Result<()> {
        let i = self.interrupts()?;
        i.set(i.signal)
    }
}
