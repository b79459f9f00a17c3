//! `/dev/kfd` + the render node, emulated: one process, one GPU (a Strix Halo by
//! default). Validates what the kernel validates, runs AQL queues on a "CP" thread, and
//! executes dispatched kernels as registered Rust functions looked up by kernel symbol.
//!
//! ```no_run
//! # use onebit_drv::emu::{Emulator, kfd::KfdEmu};
//! let kfd = KfdEmu::strix_halo();
//! let emu = Emulator::builder().with_kfd(&kfd).with_udmabuf(64).build();
//! kfd.register_kernel("vector_add", |call| {
//!     let (a, b, out, n) = (call.arg_u64(0)?, call.arg_u64(8)?, call.arg_u64(16)?, call.arg_u32(24)?);
//!     let (x, y) = (call.read_f32(a, n as usize)?, call.read_f32(b, n as usize)?);
//!     call.write_f32(out, &x.iter().zip(&y).map(|(p, q)| p + q).collect::<Vec<_>>())
//! });
//! ```

mod coherence;
mod cp;
mod elf;
mod ioctls;
mod state;
pub mod topology;

use std::collections::HashMap;
use std::ffi::c_void;
use std::io;
use std::os::fd::RawFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, RwLock};

use super::{errno, DeviceEmu, Emulator, EmulatorBuilder, MmapTarget};
use crate::sys::kfd as sys;
use crate::topology::Node;
pub use cp::KernelCall;
use state::KState;

/// A registered CPU stand-in for a GPU kernel.
pub type KernelFn = Box<dyn Fn(&KernelCall) -> Result<(), String> + Send + Sync>;

/// How the emulated kernel behaves.
#[derive(Debug, Clone)]
pub struct KfdConfig {
    /// GET_VERSION answer.
    pub version: (u32, u32),
    /// Topology files (relative to the topology root).
    pub topology: Vec<(&'static str, &'static str)>,
    /// VGPR bytes per CU the "kernel" uses for its CWSR check (0x60000: a kernel with the
    /// gfx1151 fix; 0x40000: an older one).
    pub kernel_vgpr_per_cu: u32,
    /// Strict-equality CWSR size check (first version of `kfd_queue_acquire_buffers`)
    /// instead of "at least".
    pub strict_cwsr: bool,
    /// Bytes of GTT the process may allocate.
    pub gtt_capacity: u64,
}

impl KfdConfig {
    /// A Strix Halo on a current kernel.
    pub fn strix_halo() -> KfdConfig {
        KfdConfig {
            version: (1, 17),
            topology: topology::strix_halo_files(),
            kernel_vgpr_per_cu: 0x60000,
            strict_cwsr: false,
            gtt_capacity: 4 << 30,
        }
    }
}

pub(crate) struct Shared {
    pub(crate) cfg: KfdConfig,
    pub(crate) node: Node,
    pub(crate) st: Mutex<KState>,
    /// Signalled whenever an event fires.
    pub(crate) events_cv: Condvar,
    pub(crate) kernels: RwLock<HashMap<String, KernelFn>>,
    pub(crate) cp_running: AtomicBool,
}

impl Shared {
    pub(crate) fn lock(&self) -> MutexGuard<'_, KState> {
        self.st.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The emulated KFD. Cheap to clone; register it with [`EmulatorBuilder::with_kfd`].
#[derive(Clone)]
pub struct KfdEmu {
    pub(crate) sh: Arc<Shared>,
}

impl KfdEmu {
    /// A Strix Halo (gfx1151) on a current kernel.
    pub fn strix_halo() -> KfdEmu {
        Self::new(KfdConfig::strix_halo())
    }

    /// With an explicit configuration.
    pub fn new(cfg: KfdConfig) -> KfdEmu {
        let node = topology::gpu_node(&cfg.topology);
        KfdEmu {
            sh: Arc::new(Shared {
                cfg,
                node,
                st: Mutex::new(KState {
                    next_idr: 1,
                    next_signal_slot: 1,
                    next_queue: 1,
                    ..Default::default()
                }),
                events_cv: Condvar::new(),
                kernels: RwLock::new(HashMap::new()),
                cp_running: AtomicBool::new(false),
            }),
        }
    }

    /// The emulated GPU's topology node.
    pub fn node(&self) -> &Node {
        &self.sh.node
    }

    /// The render node path.
    pub fn render_path(&self) -> PathBuf {
        PathBuf::from(
            self.sh
                .node
                .render_node()
                .unwrap_or_else(|| "/dev/dri/renderD128".into()),
        )
    }

    /// Runs `f` whenever a dispatch's kernel object is bound to `symbol`.
    pub fn register_kernel<F>(&self, symbol: &str, f: F)
    where
        F: Fn(&KernelCall) -> Result<(), String> + Send + Sync + 'static,
    {
        self.sh
            .kernels
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(symbol.to_owned(), Box::new(f));
    }

    /// Declares that the kernel descriptor at GPU VA `kernel_object` is `symbol` (what a
    /// code-object loader knows after placing `symbol.kd`).
    pub fn bind_symbol(&self, kernel_object: u64, symbol: &str) {
        self.sh
            .lock()
            .symbols
            .insert(kernel_object, symbol.to_owned());
    }

    /// Binds every `<name>.kd` symbol of the code object `elf`, loaded so that ELF address 0
    /// is GPU VA `base`, to the kernel `name`; returns the names bound.
    pub fn bind_code_object(&self, base: u64, elf: &[u8]) -> Result<Vec<String>, String> {
        let kds = elf::kernel_descriptors(elf)?;
        let mut st = self.sh.lock();
        for (name, value) in &kds {
            st.symbols.insert(base + value, name.clone());
        }
        Ok(kds.into_iter().map(|(n, _)| n).collect())
    }

    /// While true, the CP consumes nothing: every queue looks hung.
    pub fn set_hang(&self, hang: bool) {
        self.sh.lock().hang = hang;
    }

    /// While true, the CP ignores queue `queue_id` (a queue that never completes) and keeps
    /// serving the others.
    pub fn set_queue_hang(&self, queue_id: u32, hang: bool) {
        let mut st = self.sh.lock();
        if hang {
            st.hung_queues.insert(queue_id);
        } else {
            st.hung_queues.remove(&queue_id);
        }
    }

    /// Whether the process's runtime is enabled (RUNTIME_ENABLE with the enable bit).
    pub fn runtime_enabled(&self) -> bool {
        self.sh.lock().runtime_enabled
    }

    /// Number of live queues.
    pub fn queue_count(&self) -> usize {
        self.sh.lock().queues.len()
    }

    /// Every fault the CP raised on queue `queue_id`, also after the queue was destroyed.
    pub fn queue_faults(&self, queue_id: u32) -> Vec<String> {
        self.sh
            .lock()
            .fault_log
            .iter()
            .filter(|(q, _)| *q == queue_id)
            .map(|(_, m)| m.clone())
            .collect()
    }

    /// The fault message of a queue stopped by a failing kernel, if any (while it exists).
    pub fn queue_fault(&self, queue_id: u32) -> Option<String> {
        self.sh
            .lock()
            .queues
            .get(&queue_id)
            .and_then(|q| q.fault.clone())
    }

    fn leaks(&self) -> Vec<String> {
        let st = self.sh.lock();
        let mut out = st.closed_with.clone();
        if !st.kfd_fds.is_empty() {
            out.extend(st.live());
        }
        out
    }
}

impl EmulatorBuilder {
    /// Serves `/dev/kfd`, the GPU's render node and the KFD topology from `kfd`.
    pub fn with_kfd(mut self, kfd: &KfdEmu) -> Self {
        for (p, text) in topology::absolute(&kfd.sh.cfg.topology) {
            self = self.with_file(p, text);
        }
        let dev: Arc<dyn DeviceEmu> = Arc::new(kfd.clone());
        self.with_shared_device("/dev/kfd", dev.clone())
            .with_shared_device(kfd.render_path(), dev)
    }
}

impl Emulator {
    /// A Strix Halo: KFD + render node + topology, udmabuf with the default 64 MiB cap.
    pub fn strix_halo() -> (Emulator, KfdEmu) {
        let kfd = KfdEmu::strix_halo();
        let emu = Emulator::builder().with_kfd(&kfd).with_udmabuf(64).build();
        (emu, kfd)
    }
}

impl DeviceEmu for KfdEmu {
    fn open(&self, _emu: &Emulator, path: &Path, fd: RawFd) -> io::Result<()> {
        let mut st = self.sh.lock();
        if path == Path::new("/dev/kfd") {
            st.kfd_fds.insert(fd);
        } else {
            st.render_fds.insert(fd);
        }
        Ok(())
    }

    fn ioctl_name(&self, request: u64) -> Option<&'static str> {
        sys::ioctl_name(request)
    }

    unsafe fn ioctl(
        &self,
        emu: &Emulator,
        fd: RawFd,
        request: u64,
        arg: *mut c_void,
    ) -> io::Result<i32> {
        if !self.sh.lock().kfd_fds.contains(&fd) {
            // KFD ioctls on the render node: amdgpu would not know them.
            return Err(errno(libc::ENOTTY));
        }
        // SAFETY: forwarded caller contract.
        unsafe { ioctls::dispatch(self, emu, request, arg) }
    }

    fn mmap(&self, _emu: &Emulator, fd: RawFd, len: usize, offset: u64) -> io::Result<MmapTarget> {
        let st = self.sh.lock();
        if st.render_fds.contains(&fd) {
            let bo = st
                .bos
                .values()
                .find(|b| b.mmap_offset == offset && matches!(b.mem, state::Mem::Own(_)));
            return match bo {
                Some(b) if len as u64 <= b.size => match &b.mem {
                    state::Mem::Own(m) => Ok(MmapTarget {
                        fd: m.fd(),
                        offset: 0,
                    }),
                    _ => Err(errno(libc::EINVAL)),
                },
                _ => Err(errno(libc::EINVAL)),
            };
        }
        let (ty, gpu_id, value) = sys::kfd_mmap_decode(offset);
        if gpu_id != self.sh.node.gpu_id & 0xffff && ty != sys::KFD_MMAP_TYPE_EVENTS {
            return Err(errno(libc::EINVAL));
        }
        match ty {
            sys::KFD_MMAP_TYPE_DOORBELL
                if value == 0 && len as u64 <= sys::KFD_DOORBELL_SLICE_SIZE =>
            {
                st.doorbells
                    .as_ref()
                    .map(|d| MmapTarget {
                        fd: d.fd(),
                        offset: 0,
                    })
                    .ok_or_else(|| errno(libc::EINVAL))
            }
            sys::KFD_MMAP_TYPE_EVENTS if len as u64 <= sys::KFD_SIGNAL_EVENT_LIMIT as u64 * 8 => st
                .kernel_event_page
                .as_ref()
                .map(|d| MmapTarget {
                    fd: d.fd(),
                    offset: 0,
                })
                .ok_or_else(|| errno(libc::EINVAL)),
            _ => Err(errno(libc::EINVAL)),
        }
    }

    fn close(&self, _emu: &Emulator, fd: RawFd) {
        let mut st = self.sh.lock();
        st.render_fds.remove(&fd);
        if st.kfd_fds.remove(&fd) && st.kfd_fds.is_empty() {
            // Process teardown: the kernel frees everything; for a test that is a leak.
            let live = st.live();
            st.closed_with.extend(
                live.into_iter()
                    .map(|l| format!("{l} before /dev/kfd was closed")),
            );
            st.bos.clear();
            st.queues.clear();
            st.events.clear();
            st.event_page = None;
            st.kernel_event_page = None;
            st.acquired = None;
            st.doorbells = None;
            self.sh.events_cv.notify_all();
        }
    }

    fn leaks(&self) -> Vec<String> {
        KfdEmu::leaks(self)
    }
}
