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
    xdna_addr: u64,
    map_offset: u64,
    store: Arc<Store>,
    store_off: u64,
    imported: Option<DmaBufRef>,
    pinned: u64,
}

impl EmuBo {
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
    next_aperture: u64,
    power_mode: u8,
    hang_next: u32,
    fail_next: u32,
    stats: XdnaStats,
    closed_leaks: Vec<String>,
}

/// The emulated amdxdna device.
pub struct XdnaEmu {
    cfg: XdnaEmuConfig,
    kernels: Mutex<HashMap<u64, (String, NpuFn)>>,
    state: Mutex<DevState>,
}

/// Where non-heap BOs appear to the emulated NPU (away from any real user address).
const APERTURE_BASE: u64 = 0x1000_0000_0000;

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

    fn aperture(st: &mut DevState, size: u64) -> u64 {
        let a = APERTURE_BASE + st.next_aperture;
        // A guard gap after each BO makes off-by-one addresses fault.
        st.next_aperture += size.next_multiple_of(1 << 20) + (1 << 20);
        a
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

    fn mmap(&self, _emu: &Emulator, fd: RawFd, len: usize, offset: u64) -> io::Result<MmapTarget> {
        let mut st = self.st();
        let c = client(&mut st, fd)?;
        let (&handle, bo) = c
            .bos
            .iter()
            .find(|(_, b)| b.map_offset == offset)
            .ok_or_else(einval)?;
        if len as u64 > bo.size {
            return Err(einval());
        }
        let target = match (&bo.store.cpu, bo.kind) {
            (CpuMem::Backing(b), AMDXDNA_BO_SHARE | AMDXDNA_BO_CMD | AMDXDNA_BO_DEV_HEAP) => {
                MmapTarget {
                    fd: b.fd(),
                    offset: bo.store_off,
                }
            }
            _ => return Err(einval()),
        };
        if c.heap.as_ref().is_some_and(|(h, _)| *h == handle) {
            c.heap_mapped = true;
        }
        Ok(target)
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

impl XdnaEmu {
    unsafe fn version(&self, a: *mut drm_version) -> io::Result<i32> {
        // SAFETY: caller contract.
        let v = unsafe { &mut *a };
        let name = crate::xdna::device::DRIVER_NAME.as_bytes();
        if v.name_len > 0 {
            // SAFETY: `name` points at `name_len` writable bytes (caller contract).
            unsafe { write_user(v.name, name, v.name_len)? };
        }
        v.name_len = name.len();
        v.date_len = 0;
        v.desc_len = 0;
        v.version_major = 0;
        v.version_minor = self.cfg.driver_minor;
        v.version_patchlevel = 0;
        Ok(0)
    }

    unsafe fn get_info(&self, a: *mut amdxdna_drm_get_info) -> io::Result<i32> {
        // SAFETY: caller contract.
        let a = unsafe { &mut *a };
        let c = &self.cfg;
        let tile = |rows: u16, start: u16| amdxdna_drm_query_aie_tile_metadata {
            row_count: rows,
            row_start: start,
            dma_channel_count: 2,
            lock_count: 16,
            event_reg_count: 128,
            pad: [0; 3],
        };
        let clock = |name: &str, mhz: u32| {
            let mut n = [0u8; 16];
            n[..name.len()].copy_from_slice(name.as_bytes());
            amdxdna_drm_query_clock {
                name: n,
                freq_mhz: mhz,
                pad: 0,
            }
        };
        let bytes: Vec<u8> = match a.param {
            DRM_AMDXDNA_QUERY_AIE_METADATA => as_bytes(&amdxdna_drm_query_aie_metadata {
                col_size: 0x200_0000,
                cols: c.cols,
                rows: c.rows,
                version: amdxdna_drm_query_aie_version {
                    major: c.aie_version.0,
                    minor: c.aie_version.1,
                },
                core: tile(c.rows - 2, 2),
                mem: tile(1, 1),
                shim: tile(1, 0),
            })
            .to_vec(),
            DRM_AMDXDNA_QUERY_AIE_VERSION => as_bytes(&amdxdna_drm_query_aie_version {
                major: c.aie_version.0,
                minor: c.aie_version.1,
            })
            .to_vec(),
            DRM_AMDXDNA_QUERY_FIRMWARE_VERSION => as_bytes(&amdxdna_drm_query_firmware_version {
                major: c.firmware[0],
                minor: c.firmware[1],
                patch: c.firmware[2],
                build: c.firmware[3],
            })
            .to_vec(),
            DRM_AMDXDNA_QUERY_CLOCK_METADATA => as_bytes(&amdxdna_drm_query_clock_metadata {
                mp_npu_clock: clock("MP-NPU Clock", 1267),
                h_clock: clock("H Clock", 1800),
            })
            .to_vec(),
            DRM_AMDXDNA_GET_POWER_MODE => as_bytes(&amdxdna_drm_get_power_mode {
                power_mode: self.st().power_mode,
                pad: [0; 7],
            })
            .to_vec(),
            DRM_AMDXDNA_QUERY_HW_CONTEXTS => {
                let st = self.st();
                let mut out = Vec::new();
                for c in st.clients.values() {
                    for x in c.ctxs.values() {
                        out.extend_from_slice(as_bytes(&amdxdna_drm_query_hwctx {
                            context_id: x.id,
                            start_col: 0,
                            num_col: x.cols,
                            pad: 0,
                            pid: i64::from(std::process::id()),
                            command_submissions: x.submissions,
                            command_completions: x.completions,
                            migrations: 0,
                            preemptions: 0,
                            errors: x.errors,
                        }));
                    }
                }
                out
            }
            _ => return Err(einval()),
        };
        if (a.buffer_size as usize) < bytes.len() {
            return Err(einval());
        }
        // SAFETY: `buffer` has `buffer_size` writable bytes (caller contract).
        unsafe { write_user(a.buffer, &bytes, a.buffer_size as usize)? };
        a.buffer_size = bytes.len() as u32;
        Ok(0)
    }

    unsafe fn get_array(&self, a: *mut amdxdna_drm_get_array) -> io::Result<i32> {
        if self.cfg.driver_minor < 1 {
            return Err(einval());
        }
        // SAFETY: caller contract.
        let a = unsafe { &mut *a };
        if a.pad != 0
            || a.num_element == 0
            || a.element_size == 0
            || a.param != DRM_AMDXDNA_HW_CONTEXT_ALL
        {
            return Err(einval());
        }
        let st = self.st();
        let entries: Vec<amdxdna_drm_hwctx_entry> = st
            .clients
            .values()
            .flat_map(|c| c.ctxs.values())
            .map(|x| amdxdna_drm_hwctx_entry {
                context_id: x.id,
                num_col: x.cols,
                hwctx_id: x.id,
                pid: i64::from(std::process::id()),
                command_submissions: x.submissions,
                command_completions: x.completions,
                errors: x.errors,
                priority: u64::from(x.qos.priority),
                state: AMDXDNA_HWCTX_STATE_ACTIVE,
                gops: x.qos.gops,
                ..Default::default()
            })
            .collect();
        let esz = (a.element_size as usize).min(std::mem::size_of::<amdxdna_drm_hwctx_entry>());
        let n = entries.len().min(a.num_element as usize);
        for (i, e) in entries.iter().take(n).enumerate() {
            // SAFETY: the caller's buffer holds `num_element × element_size` bytes.
            unsafe {
                write_user(
                    a.buffer + (i * a.element_size as usize) as u64,
                    as_bytes(e),
                    esz,
                )?
            };
        }
        a.element_size = esz as u32;
        a.num_element = n as u32;
        Ok(0)
    }

    unsafe fn set_state(&self, a: *mut amdxdna_drm_set_state) -> io::Result<i32> {
        if !self.cfg.root {
            return Err(errno(libc::EACCES));
        }
        // SAFETY: caller contract.
        let a = unsafe { &*a };
        if a.param != DRM_AMDXDNA_SET_POWER_MODE
            || (a.buffer_size as usize) < std::mem::size_of::<amdxdna_drm_set_power_mode>()
        {
            return Err(einval());
        }
        // SAFETY: `buffer` points at a set_power_mode (caller contract).
        let m: amdxdna_drm_set_power_mode = unsafe { read_user(a.buffer)? };
        if m.power_mode > POWER_MODE_TURBO || m.pad != [0; 7] {
            return Err(einval());
        }
        self.st().power_mode = m.power_mode;
        Ok(0)
    }

    unsafe fn create_bo(
        &self,
        emu: &Emulator,
        fd: RawFd,
        a: *mut amdxdna_drm_create_bo,
    ) -> io::Result<i32> {
        // SAFETY: caller contract.
        let a = unsafe { &mut *a };
        if a.flags != 0 || a.size == 0 {
            return Err(einval());
        }
        let coherent = self.cfg.coherent;
        let page = page_size() as u64;
        let mut st = self.st();
        let size = a.size.next_multiple_of(page);
        let (store, store_off, xdna, imported, pinned) = match a.r#type {
            AMDXDNA_BO_SHARE if a.vaddr == 0 => {
                let s = Store::new(
                    CpuMem::Backing(Backing::new("xdna-share", size as usize)?),
                    size,
                    coherent,
                );
                (s, 0, Self::aperture(&mut st, size), None, 0)
            }
            AMDXDNA_BO_SHARE => {
                if self.cfg.driver_minor < crate::xdna::device::MINOR_USER_MEMORY_BO {
                    return Err(einval());
                }
                // SAFETY: `vaddr` points at a va table (caller contract).
                let head: amdxdna_drm_va_tbl = unsafe { read_user(a.vaddr)? };
                if head.num_entries == 0 {
                    let buf = emu.dmabuf(head.dmabuf_fd)?;
                    let len = buf.len();
                    let s = Store::new(CpuMem::Import(buf.map()?, buf.clone()), len, coherent);
                    (s, 0, Self::aperture(&mut st, len), Some(buf), 0)
                } else {
                    let mut segs = Vec::new();
                    let mut total = 0u64;
                    for i in 0..head.num_entries as u64 {
                        // SAFETY: `num_entries` entries follow the header (caller contract).
                        let e: amdxdna_drm_va_entry = unsafe { read_user(a.vaddr + 8 + i * 16)? };
                        if !e.vaddr.is_multiple_of(page)
                            || !e.len.is_multiple_of(page)
                            || e.len == 0
                        {
                            return Err(einval());
                        }
                        total = total.checked_add(e.len).ok_or_else(einval)?;
                        segs.push((e.vaddr as usize, e.len as usize));
                    }
                    let (soft, _) = emu.memlock_limit()?;
                    let already: u64 = st.clients.values().map(|c| c.pinned).sum();
                    if soft == 0 {
                        return Err(errno(libc::EPERM));
                    }
                    if soft != u64::MAX && already + total > soft {
                        return Err(errno(libc::ENOMEM));
                    }
                    let first = segs[0].0 as u64;
                    let s = Store::new(CpuMem::User(segs), total, coherent);
                    (s, 0, first, None, total)
                }
            }
            AMDXDNA_BO_DEV_HEAP => {
                let c = client(&mut st, fd)?;
                if c.heap.is_some() {
                    return Err(errno(libc::EBUSY));
                }
                if size > AIE2_DEVM_MAX {
                    return Err(einval());
                }
                let s = Store::new(
                    CpuMem::Backing(Backing::new("xdna-heap", size as usize)?),
                    size,
                    coherent,
                );
                (s, 0, AIE2_DEVM_BASE, None, 0)
            }
            AMDXDNA_BO_DEV => {
                let c = client(&mut st, fd)?;
                let Some((_, heap)) = c.heap.clone() else {
                    return Err(einval());
                };
                if !c.heap_mapped {
                    return Err(einval());
                }
                let size = a.size.next_multiple_of(AIE2_DEV_BO_ALIGN);
                let mut ranges = c.dev_ranges.clone();
                ranges.sort();
                let mut at = 0u64;
                for &(o, s) in &ranges {
                    if o >= at + size {
                        break;
                    }
                    at = at.max(o + s);
                }
                if at + size > heap.len {
                    return Err(errno(libc::ENOMEM));
                }
                c.dev_ranges.push((at, size));
                (heap, at, AIE2_DEVM_BASE + at, None, 0)
            }
            AMDXDNA_BO_CMD => {
                if a.size > XDNA_MAX_CMD_BO_SIZE || a.size < 4 {
                    return Err(einval());
                }
                // The kernel reads command BOs through its own mapping: always coherent.
                let s = Store::new(
                    CpuMem::Backing(Backing::new("xdna-cmd", size as usize)?),
                    size,
                    true,
                );
                (s, 0, Self::aperture(&mut st, size), None, 0)
            }
            _ => return Err(einval()),
        };
        let size = if a.r#type == AMDXDNA_BO_DEV {
            a.size.next_multiple_of(AIE2_DEV_BO_ALIGN)
        } else {
            store.len
        };
        let c = client(&mut st, fd)?;
        let handle = c.new_handle();
        if a.r#type == AMDXDNA_BO_DEV_HEAP {
            c.heap = Some((handle, store.clone()));
        }
        c.pinned += pinned;
        let map_offset = u64::from(handle) << 32;
        c.bos.insert(
            handle,
            EmuBo {
                kind: a.r#type,
                size,
                xdna_addr: xdna,
                map_offset,
                store,
                store_off,
                imported,
                pinned,
            },
        );
        a.handle = handle;
        Ok(0)
    }

    unsafe fn get_bo_info(&self, fd: RawFd, a: *mut amdxdna_drm_get_bo_info) -> io::Result<i32> {
        // SAFETY: caller contract.
        let a = unsafe { &mut *a };
        if a.ext != 0 || a.ext_flags != 0 || a.pad != 0 {
            return Err(einval());
        }
        let mut st = self.st();
        let bo = client(&mut st, fd)?
            .bos
            .get(&a.handle)
            .ok_or_else(|| errno(libc::ENOENT))?;
        a.map_offset = bo.map_offset;
        a.xdna_addr = bo.xdna_addr;
        a.vaddr = match &bo.store.cpu {
            CpuMem::User(segs) => segs[0].0 as u64,
            _ => 0,
        };
        Ok(0)
    }

    unsafe fn sync_bo(&self, fd: RawFd, a: *mut amdxdna_drm_sync_bo) -> io::Result<i32> {
        // SAFETY: caller contract.
        let a = unsafe { &*a };
        let mut st = self.st();
        let bo = client(&mut st, fd)?
            .bos
            .get(&a.handle)
            .ok_or_else(|| errno(libc::ENOENT))?;
        if a.direction > SYNC_DIRECT_FROM_DEVICE
            || a.offset.checked_add(a.size).is_none_or(|e| e > bo.size)
        {
            return Err(einval());
        }
        let to_device = a.direction == SYNC_DIRECT_TO_DEVICE;
        bo.store.sync(bo.store_off + a.offset, a.size, to_device);
        if to_device {
            st.stats.syncs_to_device += 1;
        } else {
            st.stats.syncs_from_device += 1;
        }
        Ok(0)
    }

    unsafe fn gem_close(&self, fd: RawFd, a: *mut drm_gem_close) -> io::Result<i32> {
        // SAFETY: caller contract.
        let a = unsafe { &*a };
        if a.pad != 0 {
            return Err(einval());
        }
        let mut st = self.st();
        let c = client(&mut st, fd)?;
        let bo = c.bos.remove(&a.handle).ok_or_else(einval)?;
        c.pinned -= bo.pinned;
        if bo.kind == AMDXDNA_BO_DEV {
            c.dev_ranges.retain(|&(o, _)| o != bo.store_off);
        }
        if c.heap.as_ref().is_some_and(|(h, _)| *h == a.handle) {
            // The heap's pages stay while DEV BOs use them; a new heap is allowed after.
            c.heap = None;
            c.heap_mapped = false;
        }
        Ok(0)
    }

    unsafe fn prime_import(
        &self,
        emu: &Emulator,
        fd: RawFd,
        a: *mut drm_prime_handle,
    ) -> io::Result<i32> {
        // SAFETY: caller contract.
        let a = unsafe { &mut *a };
        let buf = emu.dmabuf(a.fd)?;
        let mut st = self.st();
        // Importing the same dma-buf twice gives the same GEM handle, as DRM PRIME does.
        if let Some((&h, _)) = client(&mut st, fd)?
            .bos
            .iter()
            .find(|(_, b)| b.imported.as_ref().is_some_and(|i| Arc::ptr_eq(i, &buf)))
        {
            a.handle = h;
            return Ok(0);
        }
        let len = buf.len();
        let store = Store::new(
            CpuMem::Import(buf.map()?, buf.clone()),
            len,
            self.cfg.coherent,
        );
        let xdna = Self::aperture(&mut st, len);
        let c = client(&mut st, fd)?;
        let handle = c.new_handle();
        let map_offset = u64::from(handle) << 32;
        c.bos.insert(
            handle,
            EmuBo {
                kind: AMDXDNA_BO_SHARE,
                size: len,
                xdna_addr: xdna,
                map_offset,
                store,
                store_off: 0,
                imported: Some(buf),
                pinned: 0,
            },
        );
        a.handle = handle;
        Ok(0)
    }

    unsafe fn prime_export(
        &self,
        emu: &Emulator,
        fd: RawFd,
        a: *mut drm_prime_handle,
    ) -> io::Result<i32> {
        // SAFETY: caller contract.
        let a = unsafe { &mut *a };
        let mut st = self.st();
        let bo = client(&mut st, fd)?
            .bos
            .get(&a.handle)
            .ok_or_else(|| errno(libc::ENOENT))?;
        let CpuMem::Backing(b) = &bo.store.cpu else {
            return Err(errno(libc::EOPNOTSUPP));
        };
        if bo.kind != AMDXDNA_BO_SHARE {
            return Err(errno(libc::EOPNOTSUPP));
        }
        let chunk = DmaChunk {
            memfd: dup_fd(b.fd())?,
            offset: 0,
            size: bo.size,
        };
        drop(st);
        a.fd = emu.new_dmabuf(DmaBuf {
            exporter: "amdxdna",
            chunks: vec![chunk],
        })?;
        Ok(0)
    }

    unsafe fn create_hwctx(&self, fd: RawFd, a: *mut amdxdna_drm_create_hwctx) -> io::Result<i32> {
        // SAFETY: caller contract.
        let a = unsafe { &mut *a };
        if a.ext != 0 || a.ext_flags != 0 || a.umq_bo != 0 || a.log_buf_bo != 0 || a.mem_size != 0 {
            return Err(einval());
        }
        let qos: amdxdna_qos_info = if a.qos_p == 0 {
            amdxdna_qos_info::default()
        } else {
            // SAFETY: `qos_p` points at a qos_info (caller contract).
            unsafe { read_user(a.qos_p)? }
        };
        let rows = u32::from(self.cfg.rows - 2);
        let cols = a.num_tiles / rows;
        if a.num_tiles == 0 || a.num_tiles % rows != 0 || cols > u32::from(self.cfg.cols) {
            return Err(einval());
        }
        let mut st = self.st();
        let total: usize = st.clients.values().map(|c| c.ctxs.len()).sum();
        if total >= self.cfg.max_hwctx {
            return Err(errno(libc::EBUSY));
        }
        st.next_ctx_id += 1;
        let id = st.next_ctx_id;
        let c = client(&mut st, fd)?;
        if c.heap.is_none() {
            return Err(errno(libc::ENOENT));
        }
        let syncobj = c.new_handle();
        c.syncobjs.insert(syncobj, Syncobj::default());
        let handle = c.new_handle();
        c.ctxs.insert(
            handle,
            Ctx {
                id,
                cols,
                syncobj,
                cus: Vec::new(),
                hung: false,
                submissions: 0,
                completions: 0,
                errors: 0,
                qos,
            },
        );
        a.handle = handle;
        a.syncobj_handle = syncobj;
        a.umq_doorbell = 0;
        Ok(0)
    }

    unsafe fn config_hwctx(&self, fd: RawFd, a: *mut amdxdna_drm_config_hwctx) -> io::Result<i32> {
        // SAFETY: caller contract.
        let a = unsafe { &*a };
        if a.pad != 0 {
            return Err(einval());
        }
        match a.param_type {
            DRM_AMDXDNA_HWCTX_CONFIG_CU => {}
            DRM_AMDXDNA_HWCTX_ASSIGN_DBG_BUF | DRM_AMDXDNA_HWCTX_REMOVE_DBG_BUF => {
                return Err(errno(libc::EOPNOTSUPP))
            }
            _ => return Err(einval()),
        }
        if a.param_val_size < 8 || a.param_val_size > 4096 {
            return Err(einval());
        }
        // SAFETY: `param_val` holds `param_val_size` bytes (caller contract).
        let head: amdxdna_hwctx_param_config_cu = unsafe { read_user(a.param_val)? };
        let n = usize::from(head.num_cus);
        if n == 0 || n > MAX_CUS || head.pad != [0; 3] || (a.param_val_size as usize) < 8 + 8 * n {
            return Err(einval());
        }
        let mut st = self.st();
        let c = client(&mut st, fd)?;
        let mut cus = Vec::with_capacity(n);
        for i in 0..n as u64 {
            // SAFETY: inside the `param_val_size` bytes checked above.
            let cu: amdxdna_cu_config = unsafe { read_user(a.param_val + 8 + 8 * i)? };
            let bo = c
                .bos
                .get(&cu.cu_bo)
                .filter(|b| b.kind == AMDXDNA_BO_DEV)
                .ok_or_else(einval)?;
            let pdi = bo.dev_ptr(0, bo.size).ok_or_else(einval)?;
            // SAFETY: `size` bytes of the BO's device view.
            let hash =
                instruction_hash(unsafe { std::slice::from_raw_parts(pdi, bo.size as usize) });
            cus.push((hash, cu.cu_func));
        }
        let ctx = c.ctxs.get_mut(&a.handle).ok_or_else(einval)?;
        if !ctx.cus.is_empty() {
            return Err(einval());
        }
        ctx.cus = cus;
        Ok(0)
    }

    unsafe fn destroy_hwctx(
        &self,
        fd: RawFd,
        a: *mut amdxdna_drm_destroy_hwctx,
    ) -> io::Result<i32> {
        // SAFETY: caller contract.
        let a = unsafe { &*a };
        if a.pad != 0 {
            return Err(einval());
        }
        let mut st = self.st();
        client(&mut st, fd)?
            .ctxs
            .remove(&a.handle)
            .ok_or_else(einval)?;
        Ok(0)
    }

    unsafe fn syncobj_destroy(&self, fd: RawFd, a: *mut drm_syncobj_destroy) -> io::Result<i32> {
        // SAFETY: caller contract.
        let a = unsafe { &*a };
        if a.pad != 0 {
            return Err(einval());
        }
        let mut st = self.st();
        let c = client(&mut st, fd)?;
        c.syncobjs.remove(&a.handle).ok_or_else(einval)?;
        Ok(0)
    }

    unsafe fn syncobj_query(
        &self,
        fd: RawFd,
        a: *mut drm_syncobj_timeline_array,
    ) -> io::Result<i32> {
        // SAFETY: caller contract.
        let a = unsafe { &*a };
        let mut st = self.st();
        let c = client(&mut st, fd)?;
        for i in 0..u64::from(a.count_handles) {
            // SAFETY: `count_handles` handles and points (caller contract).
            let h: u32 = unsafe { read_user(a.handles + 4 * i)? };
            let s = c.syncobjs.get(&h).ok_or_else(|| errno(libc::ENOENT))?;
            // SAFETY: as above.
            unsafe { write_user(a.points + 8 * i, &s.signalled.to_le_bytes(), 8)? };
        }
        Ok(0)
    }

    unsafe fn timeline_wait(
        &self,
        fd: RawFd,
        a: *mut drm_syncobj_timeline_wait,
    ) -> io::Result<i32> {
        // SAFETY: caller contract.
        let a = unsafe { &mut *a };
        if a.count_handles == 0 || a.flags & !0xf != 0 {
            return Err(einval());
        }
        let mut wanted = Vec::new();
        for i in 0..u64::from(a.count_handles) {
            // SAFETY: `count_handles` handles and points (caller contract).
            let h: u32 = unsafe { read_user(a.handles + 4 * i)? };
            // SAFETY: as above.
            let p: u64 = unsafe { read_user(a.points + 8 * i)? };
            wanted.push((h, p));
        }
        loop {
            {
                let mut st = self.st();
                let c = client(&mut st, fd)?;
                let mut done = 0;
                for (i, &(h, p)) in wanted.iter().enumerate() {
                    let s = c.syncobjs.get(&h).ok_or_else(|| errno(libc::ENOENT))?;
                    if p > s.submitted && a.flags & DRM_SYNCOBJ_WAIT_FLAGS_WAIT_FOR_SUBMIT == 0 {
                        return Err(einval());
                    }
                    if s.signalled >= p {
                        done += 1;
                        if a.flags & DRM_SYNCOBJ_WAIT_FLAGS_WAIT_ALL == 0 {
                            a.first_signaled = i as u32;
                            return Ok(0);
                        }
                    }
                }
                if done == wanted.len() {
                    return Ok(0);
                }
            }
            // Nothing in the emulator signals later (commands run inside EXEC_CMD), so an
            // unsignalled point waits out the deadline like a hung NPU.
            let now = crate::xdna::hwctx::monotonic_ns();
            if now >= a.timeout_nsec {
                return Err(errno(libc::ETIME));
            }
            std::thread::sleep(Duration::from_nanos(
                (a.timeout_nsec - now).min(5_000_000) as u64
            ));
        }
    }

    unsafe fn exec_cmd(&self, fd: RawFd, a: *mut amdxdna_drm_exec_cmd) -> io::Result<i32> {
        // SAFETY: caller contract.
        let a = unsafe { &mut *a };
        if a.ext != 0
            || a.ext_flags != 0
            || a.r#type != AMDXDNA_CMD_SUBMIT_EXEC_BUF
            || a.cmd_count != 1
            || a.arg_count > MAX_ARG_COUNT
        {
            return Err(einval());
        }
        let mut args = Vec::with_capacity(a.arg_count as usize);
        for i in 0..u64::from(a.arg_count) {
            // SAFETY: `arg_count` handles at `args` (caller contract).
            args.push(unsafe { read_user::<u32>(a.args + 4 * i)? });
        }
        let cmd_handle = u32::try_from(a.cmd_handles).map_err(|_| einval())?;
        let mut st = self.st();
        let hang = st.hang_next > 0;
        let fail = !hang && st.fail_next > 0;
        let c = client(&mut st, fd)?;
        let ctx = c.ctxs.get(&a.hwctx).ok_or_else(einval)?;
        if ctx.cus.is_empty() {
            return Err(einval());
        }
        if args.iter().any(|h| !c.bos.contains_key(h)) {
            return Err(errno(libc::ENOENT));
        }
        let cmd = c
            .bos
            .get(&cmd_handle)
            .filter(|b| b.kind == AMDXDNA_BO_CMD)
            .ok_or_else(einval)?;
        let header = Header::decode(read_word(cmd, 0).ok_or_else(einval)?);
        let plan = match header.opcode {
            ERT_START_NPU => vec![cmd_handle],
            ERT_CMD_CHAIN => chain_members(c, cmd)?,
            _ => return Err(einval()),
        };
        for &h in &plan {
            validate_start_npu(c, c.bos.get(&h).ok_or_else(einval)?, ctx.cus.len())?;
        }
        let ctx_handle = a.hwctx;
        let syncobj = ctx.syncobj;
        let cus = ctx.cus.clone();
        let already_hung = ctx.hung;
        // Decided and validated: from here on the command is accepted.
        let kernels = self.kernels.lock().unwrap_or_else(|p| p.into_inner());
        let mut result: Result<(), (usize, String)> = Ok(());
        if !(hang || already_hung) {
            if fail {
                result = Err((0, "injected firmware error".into()));
            } else {
                let regions = regions(c, &args);
                for (i, &h) in plan.iter().enumerate() {
                    let bo = &c.bos[&h];
                    if let Err(e) = run_start_npu(c, bo, &cus, &regions, &kernels) {
                        result = Err((i, e));
                        break;
                    }
                    set_state(bo, ERT_CMD_STATE_COMPLETED);
                }
            }
        }
        drop(kernels);
        let cmd = &c.bos[&cmd_handle];
        let (state, ok) = match (&result, hang || already_hung) {
            (_, true) => (ERT_CMD_STATE_RUNNING, None),
            (Ok(()), _) => (ERT_CMD_STATE_COMPLETED, Some(true)),
            (Err((i, msg)), _) => {
                tracing::warn!(ctx = ctx_handle, index = i, error = %msg, "emulated NPU command failed");
                if header.opcode == ERT_CMD_CHAIN {
                    write_word(cmd, 3, *i as u32); // amdxdna_cmd_chain.error_index
                    set_state(&c.bos[&plan[*i]], ERT_CMD_STATE_ERROR);
                }
                (ERT_CMD_STATE_ERROR, Some(false))
            }
        };
        set_state(cmd, state);
        let s = c.syncobjs.entry(syncobj).or_default();
        s.submitted += 1;
        let seq = s.submitted;
        if ok.is_some() {
            s.signalled = seq;
        }
        let ctx = c.ctxs.get_mut(&ctx_handle).expect("looked up above");
        ctx.submissions += 1;
        ctx.hung |= hang;
        match ok {
            Some(true) => ctx.completions += 1,
            Some(false) => {
                ctx.completions += 1;
                ctx.errors += 1;
            }
            None => {}
        }
        st.stats.submissions += 1;
        match ok {
            Some(true) => st.stats.commands_completed += 1,
            Some(false) => st.stats.commands_failed += 1,
            None => {}
        }
        if hang {
            st.hang_next -= 1;
        } else if fail {
            st.fail_next -= 1;
        }
        a.seq = seq;
        Ok(0)
    }
}

fn read_word(bo: &EmuBo, i: u64) -> Option<u32> {
    let p = bo.cpu_ptr(4 * i, 4)?;
    // SAFETY: 4 bytes inside the BO's CPU view.
    Some(unsafe { std::ptr::read_unaligned(p as *const u32) })
}

fn write_word(bo: &EmuBo, i: u64, v: u32) {
    if let Some(p) = bo.cpu_ptr(4 * i, 4) {
        // SAFETY: as above.
        unsafe { std::ptr::write_unaligned(p as *mut u32, v) };
    }
}

fn set_state(bo: &EmuBo, state: u32) {
    if let Some(h) = read_word(bo, 0) {
        write_word(bo, 0, (h & !AMDXDNA_CMD_STATE_MASK) | state);
    }
}

/// The payload words of a command BO (after the header), checked against the BO size.
fn payload(bo: &EmuBo) -> io::Result<Vec<u32>> {
    let h = Header::decode(read_word(bo, 0).ok_or_else(einval)?);
    let count = u64::from(h.count);
    if count == 0 || 4 * (1 + count) > bo.size {
        return Err(einval());
    }
    Ok((1..=count)
        .map(|i| read_word(bo, i).expect("inside the BO"))
        .collect())
}

fn chain_members(c: &Client, chain: &EmuBo) -> io::Result<Vec<u32>> {
    let p = payload(chain)?;
    let n = *p.first().ok_or_else(einval)? as usize;
    if n == 0 || p.len() < 6 + 2 * n {
        return Err(einval());
    }
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let h = u64::from(p[6 + 2 * i]) | (u64::from(p[7 + 2 * i]) << 32);
        let h = u32::try_from(h).map_err(|_| einval())?;
        let bo = c
            .bos
            .get(&h)
            .filter(|b| b.kind == AMDXDNA_BO_CMD)
            .ok_or_else(einval)?;
        if Header::decode(read_word(bo, 0).ok_or_else(einval)?).opcode != ERT_START_NPU {
            return Err(einval());
        }
        out.push(h);
    }
    Ok(out)
}

/// What the driver checks before the firmware sees a START_NPU packet.
fn validate_start_npu(c: &Client, bo: &EmuBo, ncus: usize) -> io::Result<()> {
    let h = Header::decode(read_word(bo, 0).ok_or_else(einval)?);
    let p = payload(bo)?;
    let masks = 1 + h.extra_cu_masks as usize;
    if p.len() < masks + 4 {
        return Err(einval());
    }
    let cu = cu_index(&p[..masks]).ok_or_else(einval)?;
    if cu as usize >= ncus {
        return Err(einval());
    }
    let npu = &p[masks..];
    if npu.len() - 4 > MAX_NPU_ARGS_WORDS {
        return Err(einval());
    }
    let (addr, size) = (
        u64::from(npu[0]) | (u64::from(npu[1]) << 32),
        u64::from(npu[2]),
    );
    if npu[3] as usize > npu.len() - 4 {
        return Err(einval());
    }
    // The instruction stream must sit inside one DEV BO of the heap.
    let inside = c.bos.values().any(|b| {
        b.kind == AMDXDNA_BO_DEV
            && addr >= b.xdna_addr
            && size > 0
            && addr + size <= b.xdna_addr + b.size
    });
    if !inside {
        return Err(einval());
    }
    Ok(())
}

fn cu_index(masks: &[u32]) -> Option<u32> {
    masks
        .iter()
        .enumerate()
        .find(|(_, m)| **m != 0)
        .map(|(i, m)| i as u32 * 32 + m.trailing_zeros())
}

/// The NPU's view of the command's argument BOs and of the heap's DEV BOs.
fn regions(c: &Client, args: &[u32]) -> Vec<Region> {
    c.bos
        .iter()
        .filter(|(h, b)| b.kind == AMDXDNA_BO_DEV || (args.contains(h) && b.kind != AMDXDNA_BO_CMD))
        .filter_map(|(_, b)| {
            b.dev_ptr(0, b.size).map(|ptr| Region {
                addr: b.xdna_addr,
                len: b.size,
                ptr,
            })
        })
        .collect()
}

fn run_start_npu(
    c: &Client,
    bo: &EmuBo,
    cus: &[(u64, u8)],
    regions: &[Region],
    kernels: &HashMap<u64, (String, NpuFn)>,
) -> Result<(), String> {
    let h = Header::decode(read_word(bo, 0).ok_or("unreadable command BO")?);
    let p = payload(bo).map_err(|e| e.to_string())?;
    let masks = 1 + h.extra_cu_masks as usize;
    let cu = cu_index(&p[..masks]).ok_or("no CU selected")?;
    let npu = &p[masks..];
    let (addr, size) = (
        u64::from(npu[0]) | (u64::from(npu[1]) << 32),
        npu[2] as usize,
    );
    let instr_bo = c
        .bos
        .values()
        .find(|b| {
            b.kind == AMDXDNA_BO_DEV
                && addr >= b.xdna_addr
                && addr + size as u64 <= b.xdna_addr + b.size
        })
        .ok_or("instruction buffer left the heap")?;
    let ip = instr_bo
        .dev_ptr(addr - instr_bo.xdna_addr, size as u64)
        .ok_or("instruction buffer unreadable")?;
    // SAFETY: `size` bytes of the DEV BO's device view.
    let hash = instruction_hash(unsafe { std::slice::from_raw_parts(ip, size) });
    let (name, f) = kernels.get(&hash).ok_or_else(|| {
        format!("no kernel registered for instruction stream hash {hash:#018x} (was the instruction BO flushed with SYNC_BO?)")
    })?;
    let mut job = NpuJob {
        args: &npu[4..],
        cu_index: cu,
        pdi_hash: cus[cu as usize].0,
        regions,
    };
    tracing::debug!(kernel = %name, cu, "emulated NPU runs");
    f(&mut job)
}
