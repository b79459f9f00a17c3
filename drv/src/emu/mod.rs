//! An in-process kernel for tests and CI: implements [`KernelIo`] and plays `/dev/kfd`,
//! the render node, `/dev/udmabuf` (and, from other modules, `/dev/accel/accel0`) at the
//! fd boundary, with a fake sysfs tree. Nothing here needs an AMD machine.
//!
//! # How calls are routed
//! * `open(path)` of a registered device path hands out a fresh descriptor (a real,
//!   otherwise unused memfd, so numbers never collide with real fds) and remembers which
//!   [`DeviceEmu`] owns it; `ioctl`, `mmap` and `close` on it go to that device.
//! * `memfd_create`, `ftruncate`, seals and anonymous mmaps are real (the emulated devices
//!   need real shared pages so that CPU and "device" views alias).
//! * dma-buf fds made by a device ([`Emulator::new_dmabuf`]) live in a shared table; any
//!   device can look them up with [`Emulator::dmabuf`] to import them.
//! * sysfs/procfs reads are served from an in-memory map of path -> contents.
//!
//! # The GPU
//! `Emulator::strix_halo()` returns a machine with `/dev/kfd`, `/dev/dri/renderD128`, the
//! KFD topology of a Ryzen AI MAX+ 395 and `/dev/udmabuf`, plus the [`kfd::KfdEmu`] handle
//! used to register CPU implementations of kernels, bind kernel objects to them, and
//! inject hangs. Faults of any ioctl by name: [`Emulator::fail_ioctl`]. End every test with
//! [`Emulator::assert_no_leaks`].
//!
//! # How to add a device
//! 1. Write `struct MyEmu` implementing [`DeviceEmu`] in its own file under `emu/` (decode
//!    the request numbers from `crate::sys`, keep your handle tables behind a `Mutex`,
//!    return `Err(io::Error::from_raw_os_error(libc::EINVAL))` where the kernel would).
//!    For mmappable objects return a [`MmapTarget`] pointing at a [`host::Backing`].
//! 2. Register it with one line:
//!    `Emulator::builder().with_device("/dev/accel/accel0", MyEmu::new())`
//!    (use [`EmulatorBuilder::with_shared_device`] to serve several paths from one object).
//! 3. Implement [`DeviceEmu::ioctl_name`] so fault injection by name works
//!    ([`Emulator::fail_ioctl`]), and [`DeviceEmu::leaks`] so `assert_no_leaks` sees your
//!    unreleased handles.

pub mod host;
pub mod kfd;
mod maps;
pub mod sysfs;
pub mod udmabuf;
pub mod xdna;

use std::collections::{BTreeMap, HashMap};
use std::ffi::c_void;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use crate::io::KernelIo;
use host::{DmaBuf, DmaBufRef};
use maps::MapTable;

/// Where a device wants a user mmap to land: a range of a real memfd (usually a
/// [`host::Backing`]). The emulator performs the mapping.
#[derive(Debug, Clone, Copy)]
pub struct MmapTarget {
    /// Backing memfd.
    pub fd: RawFd,
    /// Byte offset in it.
    pub offset: u64,
}

/// One emulated device node. All methods get the [`Emulator`] for shared services
/// (dma-buf table, sysfs, fault plan); they are called without any emulator lock held.
pub trait DeviceEmu: Send + Sync {
    /// A new descriptor `fd` was opened on `path`.
    fn open(&self, _emu: &Emulator, _path: &Path, _fd: RawFd) -> io::Result<()> {
        Ok(())
    }
    /// Kernel spelling of an ioctl request (`"AMDKFD_IOC_CREATE_QUEUE"`), for fault
    /// injection and traces.
    fn ioctl_name(&self, _request: u64) -> Option<&'static str> {
        None
    }
    /// Handles an ioctl.
    ///
    /// # Safety
    /// `arg` is the caller's pointer, valid as `KernelIo::ioctl` requires.
    unsafe fn ioctl(
        &self,
        emu: &Emulator,
        fd: RawFd,
        request: u64,
        arg: *mut c_void,
    ) -> io::Result<i32>;
    /// Resolves an mmap of `len` bytes at `offset` on `fd`.
    fn mmap(
        &self,
        _emu: &Emulator,
        _fd: RawFd,
        _len: usize,
        _offset: u64,
    ) -> io::Result<MmapTarget> {
        Err(errno(libc::ENODEV))
    }
    /// Resolves an mmap of `len` bytes at `offset` on `fd` as a second view of pages that
    /// are already mapped in this process (memory the device does not own: imported
    /// dma-bufs, pinned user pages): the (address, length) ranges to alias back to back.
    /// `Ok(None)` (the default) sends the call on to [`DeviceEmu::mmap`]. The ranges must
    /// be MAP_SHARED mappings, which `mremap` with an old size of 0 can alias.
    fn mmap_alias(
        &self,
        _emu: &Emulator,
        _fd: RawFd,
        _len: usize,
        _offset: u64,
    ) -> io::Result<Option<Vec<(usize, usize)>>> {
        Ok(None)
    }
    /// An mmap of `len` bytes at `offset` on `fd` landed at `addr` (drivers that record
    /// where user space mapped an object, as mmu notifiers let the kernel do).
    fn mapped(&self, _emu: &Emulator, _fd: RawFd, _offset: u64, _addr: usize, _len: usize) {}
    /// `addr..addr+len` of this process was unmapped (any mapping, any device).
    fn unmapped(&self, _emu: &Emulator, _addr: usize, _len: usize) {}
    /// `fd` was closed.
    fn close(&self, _emu: &Emulator, _fd: RawFd) {}
    /// Handles that were never released, as sentences.
    fn leaks(&self) -> Vec<String> {
        Vec::new()
    }
}

/// `io::Error` from an errno value.
pub fn errno(e: i32) -> io::Error {
    io::Error::from_raw_os_error(e)
}

enum FdKind {
    Device {
        path: PathBuf,
        dev: Arc<dyn DeviceEmu>,
    },
    DmaBuf(DmaBufRef),
    Memfd(String),
}

struct Open {
    /// Keeps the descriptor number allocated (device and dma-buf fds only).
    _placeholder: Option<OwnedFd>,
    kind: FdKind,
}

struct Fault {
    ioctl: String,
    errno: i32,
    remaining: u32,
}

#[derive(Default)]
struct State {
    fds: HashMap<RawFd, Open>,
    maps: MapTable,
    faults: Vec<Fault>,
    open_faults: Vec<(PathBuf, i32)>,
}

struct Inner {
    devices: Vec<(PathBuf, Arc<dyn DeviceEmu>)>,
    sysfs: sysfs::Tree,
    memlock: Mutex<(u64, u64)>,
    state: Mutex<State>,
}

/// The emulated kernel. Cheap to clone (a handle); implements [`KernelIo`].
#[derive(Clone)]
pub struct Emulator {
    inner: Arc<Inner>,
}

/// Builds an [`Emulator`].
pub struct EmulatorBuilder {
    devices: Vec<(PathBuf, Arc<dyn DeviceEmu>)>,
    sysfs: sysfs::Tree,
    memlock: (u64, u64),
}

impl EmulatorBuilder {
    /// Serves `path` with `dev`.
    pub fn with_device(self, path: impl Into<PathBuf>, dev: impl DeviceEmu + 'static) -> Self {
        self.with_shared_device(path, Arc::new(dev))
    }

    /// Serves `path` with an already shared device (one object behind several nodes).
    pub fn with_shared_device(mut self, path: impl Into<PathBuf>, dev: Arc<dyn DeviceEmu>) -> Self {
        self.devices.push((path.into(), dev));
        self
    }

    /// Adds a fake file (sysfs, procfs).
    pub fn with_file(mut self, path: impl Into<PathBuf>, contents: impl Into<String>) -> Self {
        self.sysfs.insert(path.into(), contents.into());
        self
    }

    /// Copies every file of a directory tree on disk (a fixture) to `mount_at`.
    pub fn with_tree(mut self, dir: &Path, mount_at: impl Into<PathBuf>) -> io::Result<Self> {
        self.sysfs.load_dir(dir, &mount_at.into())?;
        Ok(self)
    }

    /// `/dev/udmabuf` with the given `size_limit_mb` (the kernel default is 64).
    pub fn with_udmabuf(self, size_limit_mb: u64) -> Self {
        self.with_file(
            "/sys/module/udmabuf/parameters/size_limit_mb",
            format!("{size_limit_mb}\n"),
        )
        .with_file("/sys/module/udmabuf/parameters/list_limit", "1024\n")
        .with_device("/dev/udmabuf", udmabuf::UdmabufEmu)
    }

    /// RLIMIT_MEMLOCK (soft, hard) to report.
    pub fn with_memlock(mut self, soft: u64, hard: u64) -> Self {
        self.memlock = (soft, hard);
        self
    }

    /// Finishes.
    pub fn build(self) -> Emulator {
        Emulator {
            inner: Arc::new(Inner {
                devices: self.devices,
                sysfs: self.sysfs,
                memlock: Mutex::new(self.memlock),
                state: Mutex::new(State::default()),
            }),
        }
    }
}

impl Emulator {
    /// An empty machine: no devices, no sysfs. Add what the test needs.
    pub fn builder() -> EmulatorBuilder {
        EmulatorBuilder {
            devices: Vec::new(),
            sysfs: sysfs::Tree::default(),
            memlock: (8 << 20, 8 << 20),
        }
    }

    /// This emulator as the `KernelIo` drv's types take.
    pub fn io(&self) -> Arc<dyn KernelIo> {
        Arc::new(self.clone())
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // A panicking test thread must not hide later leak reports.
        self.inner.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Makes the next `times` calls of the ioctl named `ioctl` (kernel spelling, e.g.
    /// `"AMDKFD_IOC_ALLOC_MEMORY_OF_GPU"`) fail with `errno` before reaching the device.
    pub fn fail_ioctl(&self, ioctl: &str, errno: i32, times: u32) {
        self.state().faults.push(Fault {
            ioctl: ioctl.to_owned(),
            errno,
            remaining: times,
        });
    }

    /// Makes the next `open` of `path` fail with `errno` (e.g. EACCES).
    pub fn fail_open(&self, path: impl Into<PathBuf>, errno: i32) {
        self.state().open_faults.push((path.into(), errno));
    }

    /// Registers a dma-buf and returns its new descriptor (owned by the caller of the
    /// ioctl that made it; closed through `KernelIo::close`).
    pub fn new_dmabuf(&self, buf: DmaBuf) -> io::Result<RawFd> {
        let ph = placeholder("emu-dmabuf")?;
        let fd = ph.as_raw_fd();
        self.state().fds.insert(
            fd,
            Open {
                _placeholder: Some(ph),
                kind: FdKind::DmaBuf(Arc::new(buf)),
            },
        );
        Ok(fd)
    }

    /// The dma-buf behind `fd`, or EBADF/EINVAL as `dma_buf_get` would fail.
    pub fn dmabuf(&self, fd: RawFd) -> io::Result<DmaBufRef> {
        match self.state().fds.get(&fd) {
            Some(Open {
                kind: FdKind::DmaBuf(b),
                ..
            }) => Ok(b.clone()),
            Some(_) => Err(errno(libc::EINVAL)),
            None => Err(errno(libc::EBADF)),
        }
    }

    /// The device path `fd` was opened on, if it is an emulated device.
    pub fn path_of(&self, fd: RawFd) -> Option<PathBuf> {
        match self.state().fds.get(&fd) {
            Some(Open {
                kind: FdKind::Device { path, .. },
                ..
            }) => Some(path.clone()),
            _ => None,
        }
    }

    /// A fake file's contents.
    pub fn file(&self, path: &Path) -> Option<String> {
        self.inner.sysfs.get(path).map(str::to_owned)
    }

    /// Everything still held: device handles, open descriptors, live mappings.
    pub fn leaks(&self) -> Vec<String> {
        let mut out = Vec::new();
        let mut seen: Vec<*const ()> = Vec::new();
        for (_, dev) in &self.inner.devices {
            let p = Arc::as_ptr(dev) as *const ();
            if !seen.contains(&p) {
                seen.push(p);
                out.extend(dev.leaks());
            }
        }
        let st = self.state();
        let mut fds: Vec<_> = st.fds.iter().collect();
        fds.sort_by_key(|(fd, _)| **fd);
        for (fd, o) in fds {
            out.push(match &o.kind {
                FdKind::Device { path, .. } => {
                    format!("fd {fd} on {} never closed", path.display())
                }
                FdKind::DmaBuf(b) => format!("dma-buf fd {fd} from {} never closed", b.exporter),
                FdKind::Memfd(n) => format!("memfd '{n}' (fd {fd}) never closed"),
            });
        }
        out.extend(st.maps.leaks());
        out
    }

    /// Panics with the list of leaks, if any (call at the end of a test).
    pub fn assert_no_leaks(&self) {
        let l = self.leaks();
        assert!(l.is_empty(), "emulator leaks:\n  {}", l.join("\n  "));
    }

    fn device_of(&self, fd: RawFd) -> Option<Arc<dyn DeviceEmu>> {
        match self.state().fds.get(&fd) {
            Some(Open {
                kind: FdKind::Device { dev, .. },
                ..
            }) => Some(dev.clone()),
            _ => None,
        }
    }

    fn take_fault(&self, name: &str) -> Option<i32> {
        let mut st = self.state();
        let i = st
            .faults
            .iter()
            .position(|f| f.ioctl == name && f.remaining > 0)?;
        st.faults[i].remaining -= 1;
        let e = st.faults[i].errno;
        if st.faults[i].remaining == 0 {
            st.faults.remove(i);
        }
        Some(e)
    }
}

/// Maps `ranges` (MAP_SHARED mappings of this process) back to back at `addr` (with
/// MAP_FIXED) or at a fresh address: `mremap` with an old size of 0 makes a second
/// mapping of the same shared pages.
///
/// # Safety
/// With MAP_FIXED, `addr..addr+len` must belong to the caller; every range must be mapped.
unsafe fn alias(
    addr: *mut c_void,
    len: usize,
    flags: i32,
    ranges: &[(usize, usize)],
) -> io::Result<*mut c_void> {
    if ranges.iter().map(|r| r.1).sum::<usize>() < len {
        return Err(errno(libc::EINVAL));
    }
    let reserve = libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE;
    let fixed = if flags & libc::MAP_FIXED != 0 {
        libc::MAP_FIXED
    } else {
        0
    };
    // SAFETY: a PROT_NONE reservation; MAP_FIXED only over the caller's own range.
    let base =
        unsafe { crate::io::RealIo.mmap(addr, len, libc::PROT_NONE, reserve | fixed, -1, 0)? };
    let mut at = 0usize;
    for &(start, n) in ranges {
        let n = n.min(len - at);
        if n == 0 {
            break;
        }
        // SAFETY: the target lies in the reservation made above; the source is mapped.
        let p = unsafe {
            libc::mremap(
                start as *mut c_void,
                0,
                n,
                libc::MREMAP_MAYMOVE | libc::MREMAP_FIXED,
                base.cast::<u8>().add(at),
            )
        };
        if p == libc::MAP_FAILED {
            let e = io::Error::last_os_error();
            // SAFETY: our own reservation.
            unsafe { libc::munmap(base, len) };
            return Err(e);
        }
        at += n;
    }
    Ok(base)
}

/// A real descriptor that only reserves a number (never read or written).
fn placeholder(name: &str) -> io::Result<OwnedFd> {
    let fd = crate::io::RealIo.memfd_create(name, crate::io::MemfdFlags::CLOEXEC)?;
    // SAFETY: fresh descriptor that nothing else owns.
    Ok(unsafe { std::os::fd::FromRawFd::from_raw_fd(fd) })
}

impl KernelIo for Emulator {
    fn open(&self, path: &Path, _flags: i32) -> io::Result<RawFd> {
        {
            let mut st = self.state();
            if let Some(i) = st.open_faults.iter().position(|(p, _)| p == path) {
                let (_, e) = st.open_faults.remove(i);
                return Err(errno(e));
            }
        }
        let Some((p, dev)) = self.inner.devices.iter().find(|(p, _)| p == path) else {
            return Err(errno(libc::ENOENT));
        };
        let ph = placeholder(&format!("emu:{}", p.display()))?;
        let fd = ph.as_raw_fd();
        dev.open(self, path, fd)?;
        let kind = FdKind::Device {
            path: p.clone(),
            dev: dev.clone(),
        };
        self.state().fds.insert(
            fd,
            Open {
                _placeholder: Some(ph),
                kind,
            },
        );
        Ok(fd)
    }

    fn close(&self, fd: RawFd) -> io::Result<()> {
        let open = self.state().fds.remove(&fd);
        match open {
            None => crate::io::RealIo.close(fd),
            Some(Open {
                kind: FdKind::Device { dev, .. },
                ..
            }) => {
                dev.close(self, fd);
                Ok(())
            }
            Some(Open {
                kind: FdKind::Memfd(_),
                _placeholder: None,
            }) => crate::io::RealIo.close(fd),
            Some(_) => Ok(()),
        }
    }

    unsafe fn ioctl(&self, fd: RawFd, request: u64, arg: *mut c_void) -> io::Result<i32> {
        let Some(dev) = self.device_of(fd) else {
            // The kernel answers ENOTTY for ioctls a file does not implement.
            return Err(errno(if self.state().fds.contains_key(&fd) {
                libc::ENOTTY
            } else {
                libc::EBADF
            }));
        };
        if let Some(name) = dev.ioctl_name(request) {
            if let Some(e) = self.take_fault(name) {
                tracing::debug!(ioctl = name, errno = e, "injected fault");
                return Err(errno(e));
            }
        }
        // SAFETY: forwarded caller contract.
        unsafe { dev.ioctl(self, fd, request, arg) }
    }

    unsafe fn mmap(
        &self,
        addr: *mut c_void,
        len: usize,
        prot: i32,
        flags: i32,
        fd: RawFd,
        offset: u64,
    ) -> io::Result<*mut c_void> {
        let device = if fd < 0 { None } else { self.device_of(fd) };
        if let Some(dev) = &device {
            if flags & libc::MAP_SHARED == 0 {
                return Err(errno(libc::EINVAL));
            }
            if let Some(ranges) = dev.mmap_alias(self, fd, len, offset)? {
                // SAFETY: forwarded caller contract.
                let p = unsafe { alias(addr, len, flags, &ranges)? };
                let path = self.path_of(fd).unwrap_or_default();
                let what = format!("{} offset {offset:#x}", path.display());
                self.state().maps.insert(p as usize, len, what);
                dev.mapped(self, fd, offset, p as usize, len);
                return Ok(p);
            }
        }
        let (real_fd, real_off, what) = if fd < 0 {
            (fd, offset, "anonymous".to_owned())
        } else if let Some(dev) = &device {
            let t = dev.mmap(self, fd, len, offset)?;
            let path = self.path_of(fd).unwrap_or_default();
            (
                t.fd,
                t.offset,
                format!("{} offset {offset:#x}", path.display()),
            )
        } else if let Ok(b) = self.dmabuf(fd) {
            if b.chunks.len() != 1 || offset != 0 || len as u64 > b.len() {
                return Err(errno(libc::EINVAL));
            }
            let c = &b.chunks[0];
            (c.memfd.as_raw_fd(), c.offset, format!("dma-buf fd {fd}"))
        } else {
            (fd, offset, format!("fd {fd}"))
        };
        // SAFETY: forwarded caller contract (MAP_FIXED targets belong to the caller).
        let p = unsafe { crate::io::RealIo.mmap(addr, len, prot, flags, real_fd, real_off)? };
        self.state().maps.insert(p as usize, len, what);
        if let Some(dev) = device {
            dev.mapped(self, fd, offset, p as usize, len);
        }
        Ok(p)
    }

    unsafe fn munmap(&self, addr: *mut c_void, len: usize) -> io::Result<()> {
        // SAFETY: forwarded caller contract.
        unsafe { crate::io::RealIo.munmap(addr, len)? };
        self.state().maps.remove(addr as usize, len);
        let mut seen: Vec<*const ()> = Vec::new();
        for (_, dev) in &self.inner.devices {
            let p = Arc::as_ptr(dev) as *const ();
            if !seen.contains(&p) {
                seen.push(p);
                dev.unmapped(self, addr as usize, len);
            }
        }
        Ok(())
    }

    fn memfd_create(&self, name: &str, flags: crate::io::MemfdFlags) -> io::Result<RawFd> {
        let fd = crate::io::RealIo.memfd_create(name, flags)?;
        let open = Open {
            _placeholder: None,
            kind: FdKind::Memfd(name.to_owned()),
        };
        self.state().fds.insert(fd, open);
        Ok(fd)
    }

    fn ftruncate(&self, fd: RawFd, len: u64) -> io::Result<()> {
        crate::io::RealIo.ftruncate(fd, len)
    }

    fn add_seals(&self, fd: RawFd, seals: crate::io::Seals) -> io::Result<()> {
        crate::io::RealIo.add_seals(fd, seals)
    }

    fn get_seals(&self, fd: RawFd) -> io::Result<crate::io::Seals> {
        crate::io::RealIo.get_seals(fd)
    }

    fn read_to_string(&self, path: &Path) -> io::Result<String> {
        self.inner
            .sysfs
            .get(path)
            .map(str::to_owned)
            .ok_or_else(|| errno(libc::ENOENT))
    }

    fn read_dir(&self, path: &Path) -> io::Result<Vec<String>> {
        self.inner
            .sysfs
            .list(path)
            .ok_or_else(|| errno(libc::ENOENT))
    }

    fn exists(&self, path: &Path) -> bool {
        self.inner.sysfs.exists(path) || self.inner.devices.iter().any(|(p, _)| p == path)
    }

    fn memlock_limit(&self) -> io::Result<(u64, u64)> {
        Ok(*self.inner.memlock.lock().unwrap_or_else(|p| p.into_inner()))
    }

    fn kfd_process_id(&self) -> Option<usize> {
        Some(Arc::as_ptr(&self.inner) as *const () as usize)
    }

    fn set_memlock_soft(&self, soft: u64) -> io::Result<()> {
        let mut m = self.inner.memlock.lock().unwrap_or_else(|p| p.into_inner());
        // An unprivileged process may not raise its soft limit above the hard one.
        if soft > m.1 {
            return Err(errno(libc::EPERM));
        }
        m.0 = soft;
        Ok(())
    }
}

/// Map type used by sysfs trees (kept sorted for deterministic listings).
pub(crate) type FileMap = BTreeMap<PathBuf, String>;
