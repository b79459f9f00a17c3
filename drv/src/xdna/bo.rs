//! NPU buffer objects: the per-process device heap, DEV BOs carved from it (PDIs and
//! instruction streams), SHARE BOs, command BOs, imported dma-bufs (the zero-copy
//! [`SharedBuffer`] path) and BOs over user memory. Every handle is closed on drop.

use std::fmt;
use std::os::fd::RawFd;
use std::sync::Arc;

use super::device::{DevInner, XdnaDevice};
use super::error::{sys, XdnaError};
use super::ioctl;
use super::memlock;
use crate::buffer::{check_import, BufferDescriptor, SharedBuffer};
use crate::flags::DmabufFdFlags;
use crate::io::Mapping;
use crate::sys::amdxdna::*;

/// `enum amdxdna_bo_type` (`amdxdna_accel.h`): the value of `amdxdna_drm_create_bo.type`.
/// One value per BO, not a bit word, so it stays an enum rather than a `bitflags` type.
/// (`amdxdna_drm_create_bo.flags` is "MBZ" in the same header: no bits to name.)
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum XdnaBoType {
    /// `AMDXDNA_BO_SHARE` (SHMEM): shmem pages, or user memory / a dma-buf via a va table.
    Share = AMDXDNA_BO_SHARE,
    /// `AMDXDNA_BO_DEV_HEAP`: the per-process device heap.
    DevHeap = AMDXDNA_BO_DEV_HEAP,
    /// `AMDXDNA_BO_DEV`: carved from the heap.
    Dev = AMDXDNA_BO_DEV,
    /// `AMDXDNA_BO_CMD`: a command BO.
    Cmd = AMDXDNA_BO_CMD,
}

impl XdnaBoType {
    /// The raw `type` value.
    pub const fn raw(self) -> u32 {
        self as u32
    }

    /// The type a raw value names (`AMDXDNA_BO_INVALID` and unknown values are `None`).
    pub const fn from_raw(v: u32) -> Option<XdnaBoType> {
        match v {
            AMDXDNA_BO_SHARE => Some(XdnaBoType::Share),
            AMDXDNA_BO_DEV_HEAP => Some(XdnaBoType::DevHeap),
            AMDXDNA_BO_DEV => Some(XdnaBoType::Dev),
            AMDXDNA_BO_CMD => Some(XdnaBoType::Cmd),
            _ => None,
        }
    }
}

/// How amdxdna names itself when it refuses a buffer's descriptor.
pub const NPU_IMPORTER: &str = "amdxdna (NPU)";

/// What a BO is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BoKind {
    Share,
    DevHeap,
    Dev,
    Cmd,
    /// A dma-buf imported with PRIME.
    Imported,
    /// Pinned user memory (SHARE with a va table).
    UserMemory,
    /// A SHARE BO standing in for a dma-buf the driver cannot import (Linux 6.14 has no
    /// PRIME import): SYNC_BO to the device copies the dma-buf's bytes in first, SYNC_BO
    /// from the device copies them back after.
    Staged,
}

enum CpuView {
    None,
    Own(Mapping),
    Heap { heap: Arc<DevHeap>, offset: usize },
}

/// A GEM handle on the accel node.
pub struct Bo {
    dev: Arc<DevInner>,
    handle: u32,
    kind: BoKind,
    size: u64,
    xdna_addr: u64,
    cpu: CpuView,
    /// For [`BoKind::Staged`]: the dma-buf's pages, as the CPU maps them.
    stage: Option<Mapping>,
}

impl fmt::Debug for Bo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Bo({:?} #{}, {} bytes @ npu {:#x})",
            self.kind, self.handle, self.size, self.xdna_addr
        )
    }
}

/// The process's device heap (one per process; the NPU sees it at [`AIE2_DEVM_BASE`]).
#[derive(Debug)]
pub struct DevHeap {
    bo: Bo,
}

impl DevHeap {
    pub fn size(&self) -> u64 {
        self.bo.size
    }
    pub fn xdna_addr(&self) -> u64 {
        self.bo.xdna_addr
    }
    fn base(&self) -> *mut u8 {
        match &self.bo.cpu {
            CpuView::Own(m) => m.ptr(),
            _ => unreachable!("the heap is always mapped"),
        }
    }
}

/// A byte range of a BO, as a kernel argument.
#[derive(Clone, Copy, Debug)]
pub struct NpuRange<'a> {
    pub bo: &'a Bo,
    pub offset: u64,
    pub len: u64,
}

impl NpuRange<'_> {
    /// The address the NPU uses for the first byte.
    pub fn xdna_addr(&self) -> u64 {
        self.bo.xdna_addr + self.offset
    }
}

fn create(
    dev: &DevInner,
    ty: XdnaBoType,
    size: u64,
    vaddr: u64,
    what: &str,
) -> Result<u32, XdnaError> {
    let mut a = amdxdna_drm_create_bo {
        flags: 0,
        vaddr,
        size,
        r#type: ty.raw(),
        handle: 0,
    };
    // SAFETY: `vaddr` is 0 or points at a va table the caller keeps alive for the call.
    unsafe { ioctl::amdxdna_create_bo(dev.io(), dev.fd.raw(), &mut a) }.map_err(|e| {
        sys(
            "DRM_IOCTL_AMDXDNA_CREATE_BO",
            &format!("{} ({what}, {size} bytes)", dev.target()),
            e,
        )
    })?;
    Ok(a.handle)
}

fn info(dev: &DevInner, handle: u32) -> Result<amdxdna_drm_get_bo_info, XdnaError> {
    let mut a = amdxdna_drm_get_bo_info {
        handle,
        ..Default::default()
    };
    // SAFETY: no pointers inside.
    unsafe { ioctl::amdxdna_get_bo_info(dev.io(), dev.fd.raw(), &mut a) }.map_err(|e| {
        sys(
            "DRM_IOCTL_AMDXDNA_GET_BO_INFO",
            &format!("{} (BO {handle})", dev.target()),
            e,
        )
    })?;
    Ok(a)
}

fn close(dev: &DevInner, handle: u32) {
    let mut a = drm_gem_close { handle, pad: 0 };
    // SAFETY: no pointers inside.
    if let Err(e) = unsafe { ioctl::drm_gem_close(dev.io(), dev.fd.raw(), &mut a) } {
        tracing::warn!(handle, error = %e, "DRM_IOCTL_GEM_CLOSE failed");
    }
}

fn map(dev: &DevInner, map_offset: u64, len: u64, what: &str) -> Result<Mapping, XdnaError> {
    // SAFETY: not MAP_FIXED: the kernel picks fresh address space.
    unsafe {
        Mapping::new(
            dev.fd.io(),
            std::ptr::null_mut(),
            len as usize,
            libc::MAP_SHARED,
            dev.fd.raw(),
            map_offset,
        )
    }
    .map_err(|e| {
        sys(
            "mmap",
            &format!("{} ({what} at offset {map_offset:#x})", dev.target()),
            e,
        )
    })
}

impl Bo {
    /// Wraps a fresh handle; closes it if GET_BO_INFO or the mapping fails. Mapped BOs
    /// (everything but DEV BOs and the heap's carve-outs) get their NPU address after the
    /// mapping exists: in SVA mode the NPU reaches them at the mapping's address, and
    /// GET_BO_INFO reports ~0 until there is one (6.14 reports ~0 even then).
    fn finish(
        dev: &Arc<DevInner>,
        handle: u32,
        kind: BoKind,
        size: u64,
        map_it: bool,
    ) -> Result<(Bo, amdxdna_drm_get_bo_info), XdnaError> {
        let mut bo = Bo {
            dev: dev.clone(),
            handle,
            kind,
            size,
            xdna_addr: 0,
            cpu: CpuView::None,
            stage: None,
        };
        let mut i = info(dev, handle)?;
        if map_it {
            let m = map(dev, i.map_offset, size, &format!("{kind:?} BO {handle}"))?;
            let at = m.ptr() as u64;
            bo.cpu = CpuView::Own(m);
            i = info(dev, handle)?;
            if i.xdna_addr == AMDXDNA_INVALID_ADDR {
                // What XRT's shim does: the NPU shares the process's page tables (SVA).
                i.xdna_addr = at;
            }
        }
        if i.xdna_addr == AMDXDNA_INVALID_ADDR {
            return Err(XdnaError::Invalid(format!(
                "the driver reports no NPU address for {kind:?} BO {handle} (GET_BO_INFO xdna_addr is ~0)"
            )));
        }
        bo.xdna_addr = i.xdna_addr;
        Ok((bo, i))
    }

    pub fn handle(&self) -> u32 {
        self.handle
    }
    pub fn kind(&self) -> BoKind {
        self.kind
    }
    pub fn size(&self) -> u64 {
        self.size
    }
    /// The address the NPU uses (GET_BO_INFO `xdna_addr`).
    pub fn xdna_addr(&self) -> u64 {
        self.xdna_addr
    }

    fn cpu_ptr(&self) -> Option<*mut u8> {
        match &self.cpu {
            CpuView::None => None,
            CpuView::Own(m) => Some(m.ptr()),
            // SAFETY: offset + size lies inside the heap mapping (checked at creation).
            CpuView::Heap { heap, offset } => Some(unsafe { heap.base().add(*offset) }),
        }
    }

    /// The CPU view through the accel node (for imported and user-memory BOs, a second
    /// view of the owner's pages).
    pub fn as_slice(&self) -> Result<&[u8], XdnaError> {
        let p = self.cpu_ptr().ok_or_else(|| self.no_cpu_view())?;
        // SAFETY: `size` bytes mapped for as long as `self` lives.
        Ok(unsafe { std::slice::from_raw_parts(p, self.size as usize) })
    }

    pub fn as_mut_slice(&mut self) -> Result<&mut [u8], XdnaError> {
        let p = self.cpu_ptr().ok_or_else(|| self.no_cpu_view())?;
        // SAFETY: as above; `&mut self` gives exclusive CPU access.
        Ok(unsafe { std::slice::from_raw_parts_mut(p, self.size as usize) })
    }

    fn no_cpu_view(&self) -> XdnaError {
        XdnaError::Invalid(format!("{self:?} has no CPU mapping yet"))
    }

    /// Copies `bytes` to `offset` and flushes them to the NPU.
    pub fn write_and_flush(&mut self, offset: u64, bytes: &[u8]) -> Result<(), XdnaError> {
        let end = offset
            .checked_add(bytes.len() as u64)
            .filter(|&e| e <= self.size);
        let Some(_) = end else {
            return Err(XdnaError::Invalid(format!(
                "{} bytes at {offset} overflow {self:?}",
                bytes.len()
            )));
        };
        self.as_mut_slice()?[offset as usize..offset as usize + bytes.len()].copy_from_slice(bytes);
        self.sync(SyncDir::ToDevice, offset, bytes.len() as u64)
    }

    /// SYNC_BO: the NPU is not cache coherent with the CPU. ToDevice after CPU writes,
    /// FromDevice before CPU reads of what the NPU wrote. A [`BoKind::Staged`] BO copies
    /// the range in from its dma-buf before a ToDevice flush and back out after a
    /// FromDevice one, so inputs reach the NPU and outputs reach the dma-buf's pages.
    pub fn sync(&self, dir: SyncDir, offset: u64, size: u64) -> Result<(), XdnaError> {
        if offset.checked_add(size).is_none_or(|e| e > self.size) {
            return Err(XdnaError::Invalid(format!(
                "sync of {size} bytes at {offset} overflows {self:?}"
            )));
        }
        if dir == SyncDir::ToDevice {
            self.copy_stage(offset, size, true);
        }
        let direction = match dir {
            SyncDir::ToDevice => SYNC_DIRECT_TO_DEVICE,
            SyncDir::FromDevice => SYNC_DIRECT_FROM_DEVICE,
        };
        let mut a = amdxdna_drm_sync_bo {
            handle: self.handle,
            direction,
            offset,
            size,
        };
        // SAFETY: no pointers inside.
        unsafe { ioctl::amdxdna_sync_bo(self.dev.io(), self.dev.fd.raw(), &mut a) }.map_err(
            |e| {
                sys(
                    "DRM_IOCTL_AMDXDNA_SYNC_BO",
                    &format!("{} ({self:?}, {dir:?})", self.dev.target()),
                    e,
                )
            },
        )?;
        if dir == SyncDir::FromDevice {
            self.copy_stage(offset, size, false);
        }
        Ok(())
    }

    /// Copies `offset..offset+size` between a staged BO and its dma-buf (`inbound`: into
    /// the BO). No-op for other BOs.
    fn copy_stage(&self, offset: u64, size: u64, inbound: bool) {
        let (Some(stage), Some(bo)) = (&self.stage, self.cpu_ptr()) else {
            return;
        };
        let end = (offset + size).min(stage.len() as u64);
        let Some(n) = end.checked_sub(offset).filter(|&n| n > 0) else {
            return;
        };
        // SAFETY: both mappings hold at least `end` bytes (the BO `size`, checked by the
        // caller; the stage clamped above) and are distinct mappings, so they never
        // overlap. Concurrent CPU writers race as they would on the zero-copy path.
        unsafe {
            let (b, s) = (bo.add(offset as usize), stage.ptr().add(offset as usize));
            let (src, dst) = if inbound { (s, b) } else { (b, s) };
            std::ptr::copy_nonoverlapping(src, dst, n as usize);
        }
    }

    /// Exports a SHARE BO as a dma-buf (PRIME_HANDLE_TO_FD), e.g. for the iGPU to import
    /// NPU-allocated memory. Imported and user-memory BOs cannot be re-exported.
    pub fn export_dmabuf(&self) -> Result<crate::io::Fd, XdnaError> {
        if self.kind != BoKind::Share {
            return Err(XdnaError::Invalid(format!(
                "only SHARE BOs can be exported as dma-bufs, not {self:?}"
            )));
        }
        let mut a = drm_prime_handle {
            handle: self.handle,
            flags: (DmabufFdFlags::CLOEXEC | DmabufFdFlags::RDWR).bits(),
            fd: -1,
        };
        // SAFETY: no pointers inside.
        unsafe { ioctl::drm_prime_handle_to_fd(self.dev.io(), self.dev.fd.raw(), &mut a) }
            .map_err(|e| {
                sys(
                    "DRM_IOCTL_PRIME_HANDLE_TO_FD",
                    &format!("{} ({self:?})", self.dev.target()),
                    e,
                )
            })?;
        Ok(crate::io::Fd::from_raw(self.dev.fd.io(), a.fd))
    }

    /// The whole BO as a kernel argument.
    pub fn range(&self) -> NpuRange<'_> {
        NpuRange {
            bo: self,
            offset: 0,
            len: self.size,
        }
    }

    /// `len` bytes at `offset` as a kernel argument.
    pub fn subrange(&self, offset: u64, len: u64) -> Result<NpuRange<'_>, XdnaError> {
        if offset.checked_add(len).is_none_or(|e| e > self.size) || len == 0 {
            return Err(XdnaError::Invalid(format!(
                "range {offset}+{len} is outside {self:?}"
            )));
        }
        Ok(NpuRange {
            bo: self,
            offset,
            len,
        })
    }
}

impl Drop for Bo {
    fn drop(&mut self) {
        close(&self.dev, self.handle);
    }
}

/// SYNC_BO direction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SyncDir {
    ToDevice,
    FromDevice,
}

/// A [`SharedBuffer`] imported into the NPU: one BO per udmabuf chunk. The CPU keeps using
/// the SharedBuffer's own mapping; these are the NPU's names for the same pages, or, on a
/// driver without PRIME import, SHARE BOs that [`Bo::sync`] copies to and from them
/// ([`NpuShared::copies`]).
#[derive(Debug)]
pub struct NpuShared {
    parts: Vec<(u64, Bo)>,
    len: u64,
}

impl NpuShared {
    /// Whether the NPU works on copies (no PRIME import in this driver): data moves at
    /// SYNC_BO, so every input must be flushed and every output invalidated, as
    /// [`NpuKernel`](super::NpuKernel) does by buffer access.
    pub fn copies(&self) -> bool {
        self.parts.iter().any(|(_, b)| b.kind == BoKind::Staged)
    }

    /// The BOs and their offsets in the buffer (for EXEC_CMD's argument handle list).
    pub fn bos(&self) -> impl Iterator<Item = &Bo> {
        self.parts.iter().map(|(_, b)| b)
    }

    /// `len` bytes at `offset` of the buffer; the range must lie inside one chunk because the
    /// NPU sees each dma-buf at its own address.
    pub fn range(&self, offset: u64, len: u64) -> Result<NpuRange<'_>, XdnaError> {
        if len == 0 || offset.checked_add(len).is_none_or(|e| e > self.len) {
            return Err(XdnaError::Invalid(format!(
                "range {offset}+{len} is outside the {}-byte shared buffer",
                self.len
            )));
        }
        let (start, bo) = self
            .parts
            .iter()
            .rev()
            .find(|(s, _)| *s <= offset)
            .expect("the first chunk starts at 0");
        if offset + len > start + bo.size() {
            return Err(XdnaError::Invalid(format!(
                "range {offset}+{len} crosses the udmabuf chunk boundary at {}: keep each NPU operand inside one chunk, or raise /sys/module/udmabuf/parameters/size_limit_mb so the buffer is one dma-buf",
                start + bo.size()
            )));
        }
        Ok(NpuRange {
            bo,
            offset: offset - start,
            len,
        })
    }

    /// The whole buffer (if it is one chunk).
    pub fn whole(&self) -> Result<NpuRange<'_>, XdnaError> {
        self.range(0, self.len)
    }
}

impl XdnaDevice {
    /// Creates and maps the device heap (before any context). `size` is rounded up to a
    /// page and must not exceed the driver's `dev_mem_size` (64 MiB on AIE2 parts); a
    /// process has one heap and cannot grow it.
    pub fn create_heap(&self, size: u64) -> Result<Arc<DevHeap>, XdnaError> {
        let size = size.max(1).next_multiple_of(crate::page_size());
        if size > AIE2_DEVM_SIZE {
            return Err(XdnaError::Invalid(format!(
                "a {} MiB device heap exceeds the driver's {} MiB dev_mem_size (the kernel answers EINVAL): keep only PDIs and instruction streams in the heap and put data in SHARE or shared buffers",
                size.div_ceil(1 << 20),
                AIE2_DEVM_SIZE >> 20
            )));
        }
        let mut slot = self.heap.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(h) = slot.as_ref() {
            return Err(XdnaError::Invalid(format!(
                "this process already has a {} MiB device heap",
                h.size() >> 20
            )));
        }
        let handle = create(&self.inner, XdnaBoType::DevHeap, size, 0, "DEV_HEAP")?;
        let (bo, _) = Bo::finish(&self.inner, handle, BoKind::DevHeap, size, true)?;
        if bo.xdna_addr != AIE2_DEVM_BASE {
            tracing::warn!(
                addr = format_args!("{:#x}", bo.xdna_addr),
                "device heap is not at AIE2_DEVM_BASE"
            );
        }
        let heap = Arc::new(DevHeap { bo });
        *slot = Some(heap.clone());
        tracing::debug!(mib = size >> 20, "NPU device heap created");
        Ok(heap)
    }

    /// The heap, creating a full-size (64 MiB) one if there is none.
    pub fn heap(&self) -> Result<Arc<DevHeap>, XdnaError> {
        if let Some(h) = self.heap.lock().unwrap_or_else(|p| p.into_inner()).as_ref() {
            return Ok(h.clone());
        }
        self.create_heap(AIE2_DEVM_SIZE)
    }

    /// A DEV BO from the heap (PDIs, instruction streams), CPU-visible through the heap.
    pub fn alloc_dev(&self, size: u64) -> Result<Bo, XdnaError> {
        let heap = self.heap()?;
        let size = size.max(1).next_multiple_of(AIE2_DEV_BO_ALIGN);
        let handle = create(&self.inner, XdnaBoType::Dev, size, 0, "DEV").map_err(|e| match e {
            XdnaError::Sys(s) if matches!(s.errno(), Some(libc::ENOMEM | libc::EAGAIN)) => {
                XdnaError::Sys(s.with_advice(format!(
                    "the {} MiB device heap has no room for a {size}-byte DEV BO: the heap cannot grow past the driver's {} MiB dev_mem_size, so free DEV BOs (PDIs, instruction streams) you no longer need, or create the heap at full size first (XdnaDevice::create_heap)",
                    heap.size() >> 20,
                    AIE2_DEVM_SIZE >> 20
                )))
            }
            e => e,
        })?;
        let (mut bo, i) = Bo::finish(&self.inner, handle, BoKind::Dev, size, false)?;
        let offset = bo
            .xdna_addr
            .checked_sub(heap.xdna_addr())
            .filter(|o| o + size <= heap.size())
            .ok_or_else(|| {
                XdnaError::Invalid(format!(
                    "driver placed DEV BO {handle} at npu {:#x}, outside the heap",
                    bo.xdna_addr
                ))
            })?;
        let expect = heap.base() as u64 + offset;
        if i.vaddr != 0 && i.vaddr != expect {
            return Err(XdnaError::Invalid(format!(
                "driver reports DEV BO {handle} at CPU {:#x}, but its heap offset puts it at {expect:#x}",
                i.vaddr
            )));
        }
        bo.cpu = CpuView::Heap {
            heap,
            offset: offset as usize,
        };
        Ok(bo)
    }

    /// A shmem-backed SHARE BO, mapped on the CPU.
    pub fn alloc_share(&self, size: u64) -> Result<Bo, XdnaError> {
        let size = size.max(1).next_multiple_of(crate::page_size());
        let handle = create(&self.inner, XdnaBoType::Share, size, 0, "SHARE")?;
        Ok(Bo::finish(&self.inner, handle, BoKind::Share, size, true)?.0)
    }

    /// A command BO (at most 32 KiB), mapped on the CPU.
    pub fn alloc_cmd(&self, size: u64) -> Result<Bo, XdnaError> {
        if size > XDNA_MAX_CMD_BO_SIZE {
            return Err(XdnaError::Invalid(format!(
                "command BOs are at most {XDNA_MAX_CMD_BO_SIZE} bytes (asked for {size})"
            )));
        }
        let size = size.max(1).next_multiple_of(crate::page_size());
        let handle = create(&self.inner, XdnaBoType::Cmd, size, 0, "CMD")?;
        Ok(Bo::finish(&self.inner, handle, BoKind::Cmd, size, true)?.0)
    }

    /// Imports a dma-buf (`DRM_IOCTL_PRIME_FD_TO_HANDLE`) of `size` bytes, mapped through
    /// the accel node (the NPU reaches it at that mapping in SVA mode). Where the driver
    /// has no PRIME import (Linux 6.14 answers EINVAL), falls back to a SHARE BO that
    /// copies through [`Bo::sync`] ([`BoKind::Staged`]). `descriptor` says what the
    /// dma-buf holds; one the NPU cannot read (tiled, or a format that does not match its
    /// elements) is refused before the driver sees the fd.
    pub fn import_dmabuf(
        &self,
        fd: RawFd,
        size: u64,
        descriptor: &BufferDescriptor,
    ) -> Result<Bo, XdnaError> {
        check_import(NPU_IMPORTER, &format!("dma-buf fd {fd}"), descriptor)?;
        match self.prime_import(fd) {
            Ok(handle) => Ok(Bo::finish(&self.inner, handle, BoKind::Imported, size, true)?.0),
            Err(e) if e.errno() == Some(libc::EINVAL) => {
                static SAID: std::sync::Once = std::sync::Once::new();
                SAID.call_once(|| {
                    tracing::warn!(
                        node = %self.inner.target(),
                        "the amdxdna driver cannot import dma-bufs (no PRIME import before Linux 6.15): NPU operands go through SHARE buffers with a copy in before each run and out after, instead of zero-copy"
                    )
                });
                self.import_by_copy(fd, size)
            }
            Err(e) => Err(e),
        }
    }

    fn prime_import(&self, fd: RawFd) -> Result<u32, XdnaError> {
        let mut a = drm_prime_handle {
            handle: 0,
            flags: 0,
            fd,
        };
        // SAFETY: no pointers inside.
        unsafe { ioctl::drm_prime_fd_to_handle(self.inner.io(), self.inner.fd.raw(), &mut a) }
            .map_err(|e| {
                sys(
                    "DRM_IOCTL_PRIME_FD_TO_HANDLE",
                    &format!("{} (dma-buf fd {fd})", self.inner.target()),
                    e,
                )
            })?;
        Ok(a.handle)
    }

    /// The copy fallback: a SHARE BO plus a CPU mapping of the dma-buf's pages.
    fn import_by_copy(&self, fd: RawFd, size: u64) -> Result<Bo, XdnaError> {
        // SAFETY: not MAP_FIXED: the kernel picks fresh address space.
        let stage = unsafe {
            Mapping::new(
                self.inner.fd.io(),
                std::ptr::null_mut(),
                size as usize,
                libc::MAP_SHARED,
                fd,
                0,
            )
        }
        .map_err(|e| sys("mmap", &format!("dma-buf fd {fd} ({size} bytes)"), e))?;
        let mut bo = self.alloc_share(size)?;
        bo.kind = BoKind::Staged;
        bo.stage = Some(stage);
        Ok(bo)
    }

    /// Whether the driver imports another driver's dma-buf (PRIME import, Linux 6.15+),
    /// tried with a one-page udmabuf; `None` when there is no `/dev/udmabuf` to try with.
    pub fn prime_import_works(&self) -> Result<Option<bool>, XdnaError> {
        let io = self.inner.fd.io();
        if !crate::buffer::udmabuf_present(io.as_ref()) {
            return Ok(None);
        }
        let buf = SharedBuffer::new(
            io,
            "onebit-prime-probe",
            crate::page_size() as usize,
            BufferDescriptor::blob(),
        )
        .map_err(|e| {
            XdnaError::Invalid(format!("a one-page udmabuf to try PRIME import with: {e}"))
        })?;
        match self.prime_import(buf.chunks()[0].dmabuf.raw()) {
            Ok(handle) => {
                close(&self.inner, handle);
                Ok(Some(true))
            }
            Err(e) if e.errno() == Some(libc::EINVAL) => Ok(Some(false)),
            Err(e) => Err(e),
        }
    }

    /// Imports every dma-buf chunk of a shared buffer: CPU, iGPU and NPU then see one copy.
    pub fn import_shared(&self, buf: &SharedBuffer) -> Result<NpuShared, XdnaError> {
        buf.check_import(NPU_IMPORTER)?;
        if buf.chunks().is_empty() {
            return Err(XdnaError::Invalid(format!(
                "shared buffer '{}' has no dma-buf (made with cpu_only?); create it with SharedBuffer::new",
                buf.name()
            )));
        }
        let parts = buf
            .chunks()
            .iter()
            .map(|c| {
                let bo = self.import_dmabuf(c.dmabuf.raw(), c.size, buf.descriptor())?;
                Ok((c.offset, bo))
            })
            .collect::<Result<Vec<_>, XdnaError>>()?;
        Ok(NpuShared {
            parts,
            len: buf.mapped_len() as u64,
        })
    }

    /// Pins `len` bytes of this process's memory at `addr` as one NPU BO, mapped again
    /// through the accel node, whose mapping is the NPU's address in SVA mode (driver
    /// [`MINOR_USER_MEMORY_BO`](super::device::MINOR_USER_MEMORY_BO)+). Charged to
    /// RLIMIT_MEMLOCK, which is raised first if allowed.
    ///
    /// # Safety
    /// `addr..addr+len` must stay mapped (and not be remapped) while the BO lives: the NPU
    /// reads and writes it.
    pub unsafe fn user_memory_bo(&self, addr: u64, len: u64) -> Result<Bo, XdnaError> {
        if !self.inner.features.user_memory_bo {
            return Err(XdnaError::Unsupported {
                what: "a BO over user memory",
                need: format!("0.{}", super::device::MINOR_USER_MEMORY_BO),
                have: self.inner.version.to_string(),
                advice: "import the buffer as a dma-buf instead (XdnaDevice::import_shared)",
            });
        }
        let page = crate::page_size();
        if !addr.is_multiple_of(page) || !len.is_multiple_of(page) || len == 0 {
            return Err(XdnaError::Invalid(format!(
                "user memory {addr:#x}+{len:#x} must be page aligned and non-empty"
            )));
        }
        memlock::ensure(self.inner.io(), len)?;
        #[repr(C)]
        struct Table {
            head: amdxdna_drm_va_tbl,
            entry: amdxdna_drm_va_entry,
        }
        let tbl = Table {
            head: amdxdna_drm_va_tbl {
                dmabuf_fd: -1,
                num_entries: 1,
            },
            entry: amdxdna_drm_va_entry { vaddr: addr, len },
        };
        let handle = create(
            &self.inner,
            XdnaBoType::Share,
            len,
            &tbl as *const Table as u64,
            "SHARE over user memory",
        )?;
        Ok(Bo::finish(&self.inner, handle, BoKind::UserMemory, len, true)?.0)
    }

    /// The whole CPU range of a shared buffer as one NPU BO (one contiguous NPU address
    /// even when the buffer has several udmabuf chunks).
    ///
    /// # Safety
    /// `buf` must outlive the returned BO.
    pub unsafe fn pin_shared(&self, buf: &SharedBuffer) -> Result<Bo, XdnaError> {
        buf.check_import(NPU_IMPORTER)?;
        // SAFETY: the SharedBuffer's mapping is fixed for its lifetime, which the caller
        // promises covers the BO's.
        unsafe { self.user_memory_bo(buf.addr(), buf.mapped_len() as u64) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bo_type_is_the_uapi_enum_value_and_back() {
        for (t, raw) in [
            (XdnaBoType::Share, AMDXDNA_BO_SHARE),
            (XdnaBoType::DevHeap, AMDXDNA_BO_DEV_HEAP),
            (XdnaBoType::Dev, AMDXDNA_BO_DEV),
            (XdnaBoType::Cmd, AMDXDNA_BO_CMD),
        ] {
            assert_eq!(t.raw(), raw);
            assert_eq!(XdnaBoType::from_raw(raw), Some(t));
        }
        assert_eq!(XdnaBoType::from_raw(AMDXDNA_BO_INVALID), None);
        assert_eq!(XdnaBoType::from_raw(5), None);
    }
}
