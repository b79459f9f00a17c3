//! `/dev/accel/accel0` as the amdxdna driver and NPU firmware behave, for tests: per-open
//! clients with a device heap, BO tables, hardware contexts and timeline syncobjs; command
//! packets decoded and validated as the driver does (amd-uapi.md §5, §7.3).
//!
//! The NPU itself is a lookup: a START_NPU command runs the CPU function registered under
//! the FNV-1a hash of its instruction stream ([`XdnaEmu::register_kernel`]), which reads and
//! writes the command's buffers by NPU address. With [`XdnaEmuConfig::coherent`] off the
//! "NPU" sees only what SYNC_BO flushed and the CPU sees NPU writes only after SYNC_BO
//! FROM_DEVICE, so missing cache maintenance fails in CI as it would on hardware.
//!
//! Deviations from the real driver, on purpose: commands run synchronously inside EXEC_CMD;
//! DEV BOs report `vaddr` 0 (the emulator does not learn where the heap was mapped);
//! packets the firmware would reject asynchronously are rejected at EXEC_CMD with EINVAL.

use std::collections::HashMap;
use std::ffi::c_void;
use std::io;
use std::os::fd::RawFd;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use super::host::{dup_fd, page_size, Backing, DmaBuf, DmaBufRef, DmaChunk, HostMap};
use super::{errno, DeviceEmu, Emulator, EmulatorBuilder, MmapTarget};
use crate::io::KernelIo;
use crate::sys::amdxdna::*;
use crate::xdna::artifact::instruction_hash;
use crate::xdna::ert::Header;

mod exec;
mod objects;
mod query;

/// The device node the emulator serves.
pub const NODE: &str = "/dev/accel/accel0";

/// What the emulated NPU reports and enforces.
#[derive(Clone, Debug)]
pub struct XdnaEmuConfig {
    /// DRM driver minor version (features follow it).
    pub driver_minor: i32,
    pub firmware: [u32; 4],
    pub aie_version: (u32, u32),
    pub cols: u16,
    pub rows: u16,
    pub max_hwctx: usize,
    /// Whether the process counts as root (SET_STATE is DRM_ROOT_ONLY).
    pub root: bool,
    /// PCI device id and revision (0x17f0 rev 0x10 = npu4, Strix Halo).
    pub pci_device: u16,
    pub pci_revision: u8,
    /// CPU and NPU views are always equal (no SYNC_BO needed) when true.
    pub coherent: bool,
    /// Which kernel's amdxdna rules to follow where they changed after 6.14.
    pub kernel: XdnaKernel,
}

/// The amdxdna generations whose buffer rules differ.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum XdnaKernel {
    /// Linux 6.14, the first release with amdxdna: `amdxdna_drm_drv` (amdxdna_pci_drv.c)
    /// sets neither `gem_prime_import` nor `gem_prime_import_sg_table`, so PRIME import of
    /// another driver's dma-buf is EINVAL; GET_BO_INFO reports `xdna_addr` ~0 for every
    /// shmem BO (only the heap and DEV BOs get a `dev_addr`) and `vaddr` from the BO's
    /// mmap (`amdxdna_hmm_register`), one mapping per BO.
    #[default]
    Linux6_14,
    /// Later kernels: `amdxdna_gem_prime_import` imports foreign dma-bufs, and
    /// GET_BO_INFO's `xdna_addr` is `amdxdna_gem_dev_addr`, which in SVA (PASID) mode is
    /// `amdxdna_gem_uva`: the start of the BO's first live mmap, ~0 while there is none.
    Newer,
}

impl Default for XdnaEmuConfig {
    fn default() -> Self {
        XdnaEmuConfig {
            driver_minor: 7,
            firmware: [1, 1, 0, 0],
            aie_version: (2, 0),
            cols: 8,
            rows: 6,
            max_hwctx: NPU4_MAX_HWCTX,
            root: false,
            pci_device: 0x17f0,
            pci_revision: 0x10,
            coherent: false,
            kernel: XdnaKernel::default(),
        }
    }
}

/// What a registered kernel sees of one START_NPU command.
pub struct NpuJob<'a> {
    /// The argument words after the instruction-buffer fields (properties first).
    pub args: &'a [u32],
    pub cu_index: u32,
    /// FNV-1a of the PDI the CU was configured with.
    pub pdi_hash: u64,
    regions: &'a [Region],
}

/// A stand-in for an NPU kernel.
pub type NpuFn = Arc<dyn Fn(&mut NpuJob<'_>) -> Result<(), String> + Send + Sync>;

#[derive(Clone, Copy)]
struct Region {
    addr: u64,
    len: u64,
    ptr: *mut u8,
}

impl NpuJob<'_> {
    pub fn arg_u32(&self, word: usize) -> Result<u32, String> {
        self.args
            .get(word)
            .copied()
            .ok_or_else(|| format!("argument word {word} missing ({} words)", self.args.len()))
    }

    pub fn arg_u64(&self, word: usize) -> Result<u64, String> {
        Ok(u64::from(self.arg_u32(word)?) | (u64::from(self.arg_u32(word + 1)?) << 32))
    }

    fn find(&self, addr: u64, len: u64) -> Result<*mut u8, String> {
        self.regions
            .iter()
            .find(|r| addr >= r.addr && addr.checked_add(len).is_some_and(|e| e <= r.addr + r.len))
            // SAFETY: the offset is inside the region (checked just above).
            .map(|r| unsafe { r.ptr.add((addr - r.addr) as usize) })
            .ok_or_else(|| {
                format!(
                    "NPU page fault: {len} bytes at {addr:#x} are not in any BO of this command"
                )
            })
    }

    /// Reads `len` bytes at NPU address `addr`.
    pub fn read(&self, addr: u64, len: usize) -> Result<Vec<u8>, String> {
        let p = self.find(addr, len as u64)?;
        // SAFETY: `p..p+len` lies in a live BO region (found above); the device lock is held.
        Ok(unsafe { std::slice::from_raw_parts(p, len) }.to_vec())
    }

    /// Writes `bytes` at NPU address `addr`.
    pub fn write(&mut self, addr: u64, bytes: &[u8]) -> Result<(), String> {
        let p = self.find(addr, bytes.len() as u64)?;
        // SAFETY: as in `read`, and `bytes` cannot alias the device view being written.
        unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), p, bytes.len()) };
        Ok(())
    }
}

/// A buffer the "NPU" writes into and never frees while the device lock is held.
struct Shadow {
    ptr: *mut u8,
    len: usize,
}

impl Shadow {
    fn new(len: usize) -> Shadow {
        let b = vec![0u8; len].into_boxed_slice();
        Shadow {
            len,
            ptr: Box::into_raw(b).cast(),
        }
    }
}

impl Drop for Shadow {
    fn drop(&mut self) {
        // SAFETY: `ptr`/`len` came from Box::into_raw of a boxed slice of this length.
        drop(unsafe { Box::from_raw(std::ptr::slice_from_raw_parts_mut(self.ptr, self.len)) });
    }
}

enum CpuMem {
    Backing(Backing),
    Import(HostMap, #[allow(dead_code)] DmaBufRef),
    /// Pinned user pages: (address, length) segments in order.
    User(Vec<(usize, usize)>),
}

/// Memory behind one or more BOs (DEV BOs share the heap's).
struct Store {
    cpu: CpuMem,
    len: u64,
    shadow: Option<Shadow>,
}

// SAFETY: the raw pointers are plain memory only touched while `XdnaEmu::state` is locked.
unsafe impl Send for Store {}
// SAFETY: as above.
unsafe impl Sync for Store {}

impl Store {
    fn new(cpu: CpuMem, len: u64, coherent: bool) -> Arc<Store> {
        let shadow = (!coherent).then(|| Shadow::new(len as usize));
        Arc::new(Store { cpu, len, shadow })
    }

    /// CPU pointer to `off..off+len` if it lies in one contiguous piece.
    fn cpu_ptr(&self, off: u64, len: u64) -> Option<*mut u8> {
        if off + len > self.len {
            return None;
        }
        match &self.cpu {
            // SAFETY: in range of the backing (checked against `self.len`).
            CpuMem::Backing(b) => Some(unsafe { b.ptr().add(off as usize) }),
            // SAFETY: as above.
            CpuMem::Import(m, _) => Some(unsafe { m.ptr().add(off as usize) }),
            CpuMem::User(segs) => {
                let mut at = 0u64;
                for &(addr, n) in segs {
                    if off >= at && off + len <= at + n as u64 {
                        return Some((addr + (off - at) as usize) as *mut u8);
                    }
                    at += n as u64;
                }
                None
            }
        }
    }

    /// What the NPU sees at `off..off+len`.
    fn dev_ptr(&self, off: u64, len: u64) -> Option<*mut u8> {
        match &self.shadow {
            // SAFETY: in range of the shadow (same length as the store).
            Some(s) => (off + len <= self.len).then(|| unsafe { s.ptr.add(off as usize) }),
            None => self.cpu_ptr(off, len),
        }
    }

    fn sync(&self, off: u64, len: u64, to_device: bool) {
        let (Some(s), Some(c)) = (&self.shadow, self.cpu_ptr(off, len)) else {
            return;
        };
        // SAFETY: both ranges are `len` bytes inside their buffers; they never overlap.
        unsafe {
            let d = s.ptr.add(off as usize);
            if to_device {
                std::ptr::copy_nonoverlapping(c, d, len as usize);
            } else {
                std::ptr::copy_nonoverlapping(d, c, len as usize);
            }
        }
    }
}

struct EmuBo {
    kind: u32,
    size: u64,
    /// The NPU address of heap and DEV BOs (`mem.dev_addr`); others are reached through
    /// their mmaps (SVA: the NPU uses the process's page tables).
    xdna_addr: u64,
    map_offset: u64,
    store: Arc<Store>,
    store_off: u64,
    imported: Option<DmaBufRef>,
    pinned: u64,
    /// Live mmaps of this BO through the accel fd: (address, length), oldest first.
    maps: Vec<(usize, usize)>,
    /// 6.14's `mem.userptr`: set by the first mmap, never cleared.
    userptr: Option<u64>,
}

impl EmuBo {
    /// Whether the NPU reaches this BO at a fixed device address rather than through
    /// the process's mappings.
    fn has_dev_addr(&self) -> bool {
        matches!(self.kind, AMDXDNA_BO_DEV | AMDXDNA_BO_DEV_HEAP)
    }

    fn dev_ptr(&self, off: u64, len: u64) -> Option<*mut u8> {
        (off + len <= self.size)
            .then(|| self.store.dev_ptr(self.store_off + off, len))
            .flatten()
    }
    fn cpu_ptr(&self, off: u64, len: u64) -> Option<*mut u8> {
        (off + len <= self.size)
            .then(|| self.store.cpu_ptr(self.store_off + off, len))
            .flatten()
    }
}

struct Ctx {
    id: u32,
    cols: u32,
    syncobj: u32,
    cus: Vec<(u64, u8)>,
    hung: bool,
    submissions: u64,
    completions: u64,
    errors: u64,
    qos: amdxdna_qos_info,
}

#[derive(Default)]
struct Syncobj {
    submitted: u64,
    signalled: u64,
}

#[derive(Default)]
struct Client {
    bos: HashMap<u32, EmuBo>,
    next_handle: u32,
    heap: Option<(u32, Arc<Store>)>,
    heap_mapped: bool,
    /// Allocated DEV ranges in the heap (offset, size).
    dev_ranges: Vec<(u64, u64)>,
    ctxs: HashMap<u32, Ctx>,
    syncobjs: HashMap<u32, Syncobj>,
    pinned: u64,
}

impl Client {
    fn new_handle(&mut self) -> u32 {
        self.next_handle += 1;
        self.next_handle
    }
}

/// Counters tests can check.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct XdnaStats {
    pub commands_completed: u64,
    pub commands_failed: u64,
    pub syncs_to_device: u64,
    pub syncs_from_device: u64,
    pub submissions: u64,
}

#[derive(Default)]
struct DevState {
    clients: HashMap<RawFd, Client>,
    next_ctx_id: u32,
    power_mode: u8,
    hang_next: u32,
    fail_next: u32,
    stats: XdnaStats,
    closed_leaks: Vec<String>,
    /// dma-bufs this device exported, with the (fd, handle) of the BO behind each.
    exported: Vec<(std::sync::Weak<DmaBuf>, (RawFd, u32))>,
}

/// The emulated amdxdna device.
pub struct XdnaEmu {
    cfg: XdnaEmuConfig,
    kernels: Mutex<HashMap<u64, (String, NpuFn)>>,
    state: Mutex<DevState>,
}

fn fault() -> io::Error {
    errno(libc::EFAULT)
}

fn einval() -> io::Error {
    errno(libc::EINVAL)
}

/// # Safety
/// `p` must be null or point to a readable `T`.
unsafe fn read_user<T: Copy>(p: u64) -> io::Result<T> {
    if p == 0 {
        return Err(fault());
    }
    // SAFETY: forwarded.
    Ok(unsafe { std::ptr::read_unaligned(p as *const T) })
}

/// # Safety
/// `p` must be null or point to `len` writable bytes.
unsafe fn write_user(p: u64, bytes: &[u8], len: usize) -> io::Result<()> {
    if p == 0 {
        return Err(fault());
    }
    let n = bytes.len().min(len);
    // SAFETY: forwarded; `n ≤ len`.
    unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), p as *mut u8, n) };
    Ok(())
}

fn as_bytes<T: Copy>(v: &T) -> &[u8] {
    // SAFETY: `T` is a plain `#[repr(C)]` sys struct without padding-dependent invariants.
    unsafe { std::slice::from_raw_parts(v as *const T as *const u8, std::mem::size_of::<T>()) }
}

impl XdnaEmu {
    pub fn new(cfg: XdnaEmuConfig) -> Arc<XdnaEmu> {
        Arc::new(XdnaEmu {
            cfg,
            kernels: Mutex::new(HashMap::new()),
            state: Mutex::new(DevState::default()),
        })
    }

    /// Adds this device at [`NODE`] plus the sysfs files discovery reads.
    pub fn install(self: &Arc<Self>, b: EmulatorBuilder) -> EmulatorBuilder {
        let dev = "/sys/class/accel/accel0/device";
        b.with_shared_device(NODE, self.clone())
            .with_file(
                format!("{dev}/uevent"),
                format!(
                    "DRIVER=amdxdna\nPCI_CLASS=118000\nPCI_ID=1022:{:04X}\nPCI_SUBSYS_ID=1022:{:04X}\nPCI_SLOT_NAME=0000:c6:00.1\nMODALIAS=pci:v00001022d0000{:04X}\n",
                    self.cfg.pci_device, self.cfg.pci_device, self.cfg.pci_device
                ),
            )
            .with_file(format!("{dev}/revision"), format!("0x{:02x}\n", self.cfg.pci_revision))
            .with_file("/sys/class/accel/accel0/dev", "261:0\n")
    }

    /// Runs `f` for START_NPU commands whose instruction stream hashes to `hash`
    /// ([`instruction_hash`]).
    pub fn register_kernel(&self, hash: u64, name: &str, f: NpuFn) {
        self.kernels
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(hash, (name.to_owned(), f));
    }

    /// The next `n` commands never complete (a hung NPU): waits time out.
    pub fn hang_next_commands(&self, n: u32) {
        self.st().hang_next = n;
    }

    /// The next `n` commands end in ERT state ERROR (a firmware-reported failure).
    pub fn fail_next_commands(&self, n: u32) {
        self.st().fail_next = n;
    }

    pub fn stats(&self) -> XdnaStats {
        self.st().stats
    }

    fn st(&self) -> MutexGuard<'_, DevState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl XdnaEmu {
    /// The BO a mmap of `len` bytes at `offset` maps, as `drm_gem_mmap` finds it, plus
    /// the rule of 6.14's `amdxdna_hmm_register`: a BO with a live mapping refuses a
    /// second one with EEXIST.
    fn mappable<'c>(
        &self,
        c: &'c mut Client,
        len: usize,
        offset: u64,
    ) -> io::Result<(u32, &'c EmuBo)> {
        let (&handle, bo) = c
            .bos
            .iter()
            .find(|(_, b)| b.map_offset == offset && b.kind != AMDXDNA_BO_DEV)
            .ok_or_else(einval)?;
        if len as u64 > bo.size {
            return Err(einval());
        }
        if self.cfg.kernel == XdnaKernel::Linux6_14 && !bo.maps.is_empty() {
            return Err(errno(libc::EEXIST));
        }
        Ok((handle, bo))
    }
}

fn client(st: &mut DevState, fd: RawFd) -> io::Result<&mut Client> {
    st.clients.get_mut(&fd).ok_or_else(|| errno(libc::EBADF))
}

impl DeviceEmu for XdnaEmu {
    fn open(&self, _emu: &Emulator, _path: &Path, fd: RawFd) -> io::Result<()> {
        self.st().clients.insert(fd, Client::default());
        Ok(())
    }

    fn ioctl_name(&self, request: u64) -> Option<&'static str> {
        Some(match request {
            DRM_IOCTL_VERSION => "DRM_IOCTL_VERSION",
            DRM_IOCTL_AMDXDNA_CREATE_HWCTX => "DRM_IOCTL_AMDXDNA_CREATE_HWCTX",
            DRM_IOCTL_AMDXDNA_DESTROY_HWCTX => "DRM_IOCTL_AMDXDNA_DESTROY_HWCTX",
            DRM_IOCTL_AMDXDNA_CONFIG_HWCTX => "DRM_IOCTL_AMDXDNA_CONFIG_HWCTX",
            DRM_IOCTL_AMDXDNA_CREATE_BO => "DRM_IOCTL_AMDXDNA_CREATE_BO",
            DRM_IOCTL_AMDXDNA_GET_BO_INFO => "DRM_IOCTL_AMDXDNA_GET_BO_INFO",
            DRM_IOCTL_AMDXDNA_SYNC_BO => "DRM_IOCTL_AMDXDNA_SYNC_BO",
            DRM_IOCTL_AMDXDNA_EXEC_CMD => "DRM_IOCTL_AMDXDNA_EXEC_CMD",
            DRM_IOCTL_AMDXDNA_GET_INFO => "DRM_IOCTL_AMDXDNA_GET_INFO",
            DRM_IOCTL_AMDXDNA_SET_STATE => "DRM_IOCTL_AMDXDNA_SET_STATE",
            DRM_IOCTL_AMDXDNA_GET_ARRAY => "DRM_IOCTL_AMDXDNA_GET_ARRAY",
            DRM_IOCTL_GEM_CLOSE => "DRM_IOCTL_GEM_CLOSE",
            DRM_IOCTL_PRIME_FD_TO_HANDLE => "DRM_IOCTL_PRIME_FD_TO_HANDLE",
            DRM_IOCTL_PRIME_HANDLE_TO_FD => "DRM_IOCTL_PRIME_HANDLE_TO_FD",
            DRM_IOCTL_SYNCOBJ_DESTROY => "DRM_IOCTL_SYNCOBJ_DESTROY",
            DRM_IOCTL_SYNCOBJ_TIMELINE_WAIT => "DRM_IOCTL_SYNCOBJ_TIMELINE_WAIT",
            DRM_IOCTL_SYNCOBJ_QUERY => "DRM_IOCTL_SYNCOBJ_QUERY",
            _ => return None,
        })
    }

    unsafe fn ioctl(
        &self,
        emu: &Emulator,
        fd: RawFd,
        request: u64,
        arg: *mut c_void,
    ) -> io::Result<i32> {
        // SAFETY: (all arms) `arg` points at the struct `request` encodes (KernelIo::ioctl).
        unsafe {
            match request {
                DRM_IOCTL_VERSION => self.version(arg.cast()),
                DRM_IOCTL_AMDXDNA_GET_INFO => self.get_info(arg.cast()),
                DRM_IOCTL_AMDXDNA_GET_ARRAY => self.get_array(arg.cast()),
                DRM_IOCTL_AMDXDNA_SET_STATE => self.set_state(arg.cast()),
                DRM_IOCTL_AMDXDNA_CREATE_BO => self.create_bo(emu, fd, arg.cast()),
                DRM_IOCTL_AMDXDNA_GET_BO_INFO => self.get_bo_info(fd, arg.cast()),
                DRM_IOCTL_AMDXDNA_SYNC_BO => self.sync_bo(fd, arg.cast()),
                DRM_IOCTL_GEM_CLOSE => self.gem_close(fd, arg.cast()),
                DRM_IOCTL_PRIME_FD_TO_HANDLE => self.prime_import(emu, fd, arg.cast()),
                DRM_IOCTL_PRIME_HANDLE_TO_FD => self.prime_export(emu, fd, arg.cast()),
                DRM_IOCTL_AMDXDNA_CREATE_HWCTX => self.create_hwctx(fd, arg.cast()),
                DRM_IOCTL_AMDXDNA_CONFIG_HWCTX => self.config_hwctx(fd, arg.cast()),
                DRM_IOCTL_AMDXDNA_DESTROY_HWCTX => self.destroy_hwctx(fd, arg.cast()),
                DRM_IOCTL_AMDXDNA_EXEC_CMD => self.exec_cmd(fd, arg.cast()),
                DRM_IOCTL_SYNCOBJ_TIMELINE_WAIT => self.timeline_wait(fd, arg.cast()),
                DRM_IOCTL_SYNCOBJ_QUERY => self.syncobj_query(fd, arg.cast()),
                DRM_IOCTL_SYNCOBJ_DESTROY => self.syncobj_destroy(fd, arg.cast()),
                _ => Err(einval()),
            }
        }
    }

    fn mmap_alias(
        &self,
        _emu: &Emulator,
        fd: RawFd,
        len: usize,
        offset: u64,
    ) -> io::Result<Option<Vec<(usize, usize)>>> {
        let mut st = self.st();
        let bo = self.mappable(client(&mut st, fd)?, len, offset)?.1;
        // Imported dma-bufs (the exporter's pages, as `dma_buf_mmap` maps them) and user
        // memory (`amdxdna_ubuf_mmap` maps the pinned pages) are aliased from where the
        // emulator or the process already maps them.
        Ok(match &bo.store.cpu {
            CpuMem::Backing(_) => None,
            CpuMem::Import(m, _) => Some(vec![(m.ptr() as usize + bo.store_off as usize, len)]),
            CpuMem::User(segs) => Some(segs.clone()),
        })
    }

    fn mmap(&self, _emu: &Emulator, fd: RawFd, len: usize, offset: u64) -> io::Result<MmapTarget> {
        let mut st = self.st();
        let c = client(&mut st, fd)?;
        let (handle, bo) = self.mappable(c, len, offset)?;
        let CpuMem::Backing(b) = &bo.store.cpu else {
            return Err(einval());
        };
        let target = MmapTarget {
            fd: b.fd(),
            offset: bo.store_off,
        };
        if c.heap.as_ref().is_some_and(|(h, _)| *h == handle) {
            c.heap_mapped = true;
        }
        Ok(target)
    }

    fn mapped(&self, _emu: &Emulator, fd: RawFd, offset: u64, addr: usize, len: usize) {
        let mut st = self.st();
        let Ok(c) = client(&mut st, fd) else { return };
        if let Some(bo) = c.bos.values_mut().find(|b| b.map_offset == offset) {
            bo.maps.push((addr, len));
            bo.userptr.get_or_insert(addr as u64);
        }
    }

    fn unmapped(&self, _emu: &Emulator, addr: usize, len: usize) {
        // The mmu notifier's MMU_NOTIFY_UNMAP (amdxdna_hmm_invalidate) retires a mapping
        // that any part of the range touches.
        let mut st = self.st();
        for c in st.clients.values_mut() {
            for bo in c.bos.values_mut() {
                bo.maps.retain(|&(a, n)| a + n <= addr || addr + len <= a);
            }
        }
    }

    fn close(&self, _emu: &Emulator, fd: RawFd) {
        let mut st = self.st();
        if let Some(c) = st.clients.remove(&fd) {
            let live = describe(&c);
            if !live.is_empty() {
                st.closed_leaks.push(format!(
                    "accel fd {fd} closed with live objects: {}",
                    live.join(", ")
                ));
            }
        }
    }

    fn leaks(&self) -> Vec<String> {
        let st = self.st();
        let mut out = st.closed_leaks.clone();
        for (fd, c) in &st.clients {
            let live = describe(c);
            if !live.is_empty() {
                out.push(format!("accel fd {fd} holds: {}", live.join(", ")));
            }
        }
        out
    }
}

fn kind_name(k: u32) -> &'static str {
    match k {
        AMDXDNA_BO_SHARE => "SHARE",
        AMDXDNA_BO_DEV_HEAP => "DEV_HEAP",
        AMDXDNA_BO_DEV => "DEV",
        AMDXDNA_BO_CMD => "CMD",
        _ => "?",
    }
}

fn describe(c: &Client) -> Vec<String> {
    let mut v: Vec<String> = Vec::new();
    let mut bos: Vec<_> = c.bos.iter().collect();
    bos.sort_by_key(|(h, _)| **h);
    v.extend(bos.iter().map(|(h, b)| {
        let what = if b.imported.is_some() {
            "imported"
        } else {
            kind_name(b.kind)
        };
        format!("BO {h} ({what}, {} bytes)", b.size)
    }));
    let mut ctxs: Vec<_> = c.ctxs.keys().collect();
    ctxs.sort();
    v.extend(ctxs.iter().map(|h| format!("hw context {h}")));
    let mut sync: Vec<_> = c.syncobjs.keys().collect();
    sync.sort();
    v.extend(sync.iter().map(|h| format!("syncobj {h}")));
    v
}
