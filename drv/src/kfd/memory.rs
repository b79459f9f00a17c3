//! GPU memory: KFD buffer objects placed at a GPU VA equal to a CPU address we reserved,
//! so pointers mean the same thing on both sides.

use std::os::fd::RawFd;
use std::sync::Arc;

use super::device::{DevCore, Device};
use super::{KfdError, Result};
use crate::error::{Ctx, SysError};
use crate::flags::{DmabufFdFlags, KfdAllocFlags};
use crate::io::{Fd, Mapping};
use crate::sys::kfd as sys;

/// How to allocate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AllocOptions {
    /// VRAM (on an APU: the carve-out) instead of GTT.
    pub vram: bool,
    /// GPU-uncached (MTYPE UC): for memory polled by both CPU and GPU (signals, rings).
    pub uncached: bool,
    /// GPU-executable (code objects).
    pub executable: bool,
    /// Map it on the CPU too (at the same address).
    pub cpu_visible: bool,
    /// Alignment of the address (a power of two ≥ 4096).
    pub align: u64,
}

impl AllocOptions {
    /// Cached GTT memory visible to the CPU: the default for data.
    pub const fn gtt() -> AllocOptions {
        AllocOptions {
            vram: false,
            uncached: false,
            executable: false,
            cpu_visible: true,
            align: 4096,
        }
    }
    /// GPU-uncached GTT memory (signals, rings, control pages).
    pub const fn uncached() -> AllocOptions {
        AllocOptions {
            uncached: true,
            ..Self::gtt()
        }
    }
    /// Executable GTT memory (kernel code).
    pub const fn code() -> AllocOptions {
        AllocOptions {
            executable: true,
            ..Self::gtt()
        }
    }
    /// GPU-only memory (no CPU mapping: EOP, CWSR, scratch).
    pub const fn gpu_only() -> AllocOptions {
        AllocOptions {
            cpu_visible: false,
            ..Self::gtt()
        }
    }

    /// The KFD allocation flags these options ask for.
    pub fn kfd_flags(&self) -> KfdAllocFlags {
        let mut f = KfdAllocFlags::WRITABLE | KfdAllocFlags::NO_SUBSTITUTE;
        f |= if self.vram {
            KfdAllocFlags::VRAM
        } else {
            KfdAllocFlags::GTT
        };
        if self.vram && self.cpu_visible {
            f |= KfdAllocFlags::PUBLIC;
        }
        if self.uncached {
            f |= KfdAllocFlags::UNCACHED | KfdAllocFlags::COHERENT;
        }
        if self.executable {
            f |= KfdAllocFlags::EXECUTABLE;
        }
        f
    }
}

/// A KFD buffer object mapped on this GPU (and on the CPU when asked).
pub struct GpuBuffer {
    core: Arc<DevCore>,
    handle: u64,
    va: u64,
    size: u64,
    gpu_mapped: bool,
    /// The KFD refuses to free the BO registered as event page; the process teardown does.
    free_on_drop: bool,
    /// Owner of the address range: the CPU mapping, or a PROT_NONE reservation; None when
    /// someone else owns the range (imports at a `SharedBuffer`'s address).
    space: Option<Mapping>,
    cpu_visible: bool,
    what: &'static str,
}

impl std::fmt::Debug for GpuBuffer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "GpuBuffer({} {:#x}+{:#x} handle {:#x})",
            self.what, self.va, self.size, self.handle
        )
    }
}

fn page_round(n: u64) -> u64 {
    n.next_multiple_of(crate::page_size())
}

impl GpuBuffer {
    /// Allocates `size` bytes (rounded up to pages) and maps them on the GPU.
    pub fn alloc(dev: &Device, size: u64, opts: AllocOptions) -> Result<GpuBuffer> {
        Self::alloc_core(dev.core(), size, opts, "buffer")
    }

    pub(crate) fn alloc_core(
        core: &Arc<DevCore>,
        size: u64,
        opts: AllocOptions,
        what: &'static str,
    ) -> Result<GpuBuffer> {
        if size == 0 {
            return Err(KfdError::Invalid(format!("{what}: zero-byte allocation")));
        }
        if !opts.align.is_power_of_two() || opts.align < crate::page_size() {
            return Err(KfdError::Invalid(format!(
                "{what}: alignment {:#x} is not a power of two ≥ a page",
                opts.align
            )));
        }
        let size = page_round(size);
        let io = &core.io;
        let space = Mapping::reserve(io, size as usize, opts.align as usize)
            .ctx("mmap", || format!("{what} VA reservation"))?;
        let va = space.addr();
        let mut a = sys::kfd_ioctl_alloc_memory_of_gpu_args {
            va_addr: va,
            size,
            gpu_id: core.gpu_id,
            flags: opts.kfd_flags().bits(),
            ..Default::default()
        };
        core.ioctl("AMDKFD_IOC_ALLOC_MEMORY_OF_GPU", sys::alloc_memory_of_gpu, &mut a).map_err(|e| {
            let e = e.in_target(format!("{what} of {size} bytes, flags {}", opts.kfd_flags()));
            if e.errno() == Some(libc::ENOMEM) {
                e.with_advice(format!(
                    "{size} bytes of {} did not fit: raise ttm.pages_limit / amdgpu.gttsize, or free buffers",
                    if opts.vram { "VRAM" } else { "GTT" }
                ))
            } else {
                e
            }
        })?;
        let mut buf = GpuBuffer {
            core: core.clone(),
            handle: a.handle,
            va,
            size,
            gpu_mapped: false,
            free_on_drop: true,
            space: Some(space),
            cpu_visible: opts.cpu_visible,
            what,
        };
        if opts.cpu_visible {
            let reservation = buf.space.take().expect("set above");
            let (ptr, len) = reservation.into_raw();
            // SAFETY: `ptr..ptr+len` is our reservation; the new mapping replaces and owns it.
            let m = unsafe {
                Mapping::new(
                    io,
                    ptr.cast(),
                    len,
                    libc::MAP_SHARED | libc::MAP_FIXED,
                    core.render.raw(),
                    a.mmap_offset,
                )
            };
            match m.ctx("mmap", || {
                format!("render node, {what} offset {:#x}", a.mmap_offset)
            }) {
                Ok(m) => buf.space = Some(m),
                Err(e) => {
                    // The range is no longer ours to unmap via a Mapping; release it here.
                    // SAFETY: nothing else refers to this failed range.
                    let _ = unsafe { io.munmap(ptr.cast(), len) };
                    return Err(e.into());
                }
            }
        }
        buf.map_to_gpu()?;
        Ok(buf)
    }

    /// Wraps existing process memory (KFD USERPTR: not pinned, HMM-tracked; any
    /// invalidation evicts the process's queues — avoid for hot buffers).
    ///
    /// # Safety
    /// `ptr..ptr+len` must stay mapped and page-aligned for the life of the result, and the
    /// GPU may write it at any time while work is in flight.
    pub unsafe fn userptr(dev: &Device, ptr: *mut u8, len: u64) -> Result<GpuBuffer> {
        let core = dev.core();
        let page = crate::page_size();
        if !(ptr as u64).is_multiple_of(page) || !len.is_multiple_of(page) || len == 0 {
            return Err(KfdError::Invalid(format!(
                "userptr {ptr:p}+{len:#x} is not page-aligned"
            )));
        }
        let mut a = sys::kfd_ioctl_alloc_memory_of_gpu_args {
            va_addr: ptr as u64,
            size: len,
            mmap_offset: ptr as u64,
            gpu_id: core.gpu_id,
            flags: (KfdAllocFlags::USERPTR | KfdAllocFlags::WRITABLE).bits(),
            ..Default::default()
        };
        core.ioctl(
            "AMDKFD_IOC_ALLOC_MEMORY_OF_GPU",
            sys::alloc_memory_of_gpu,
            &mut a,
        )?;
        let mut buf = GpuBuffer {
            core: core.clone(),
            handle: a.handle,
            va: ptr as u64,
            size: len,
            gpu_mapped: false,
            free_on_drop: true,
            space: None,
            cpu_visible: true,
            what: "userptr",
        };
        buf.map_to_gpu()?;
        Ok(buf)
    }

    /// Imports a dma-buf at GPU address `va` (owned by the caller's reservation or CPU
    /// mapping) and maps it.
    ///
    /// The GPU mapping is always writable, even for the weights: IMPORT_DMABUF takes no
    /// flags, and `amdgpu_amdkfd_gpuvm_import_dmabuf` gives every import
    /// `WRITABLE | EXECUTABLE` (drivers/gpu/drm/amd/amdgpu/amdgpu_amdkfd_gpuvm.c). Only
    /// the CPU's view of the weights is read-only (`PROT_READ`); on the GPU, no kernel
    /// writes them because none is given their address as an output.
    pub(crate) fn import_at(
        core: &Arc<DevCore>,
        dmabuf: RawFd,
        va: u64,
        size: u64,
    ) -> Result<GpuBuffer, SysError> {
        let mut a = sys::kfd_ioctl_import_dmabuf_args {
            va_addr: va,
            gpu_id: core.gpu_id,
            dmabuf_fd: dmabuf as u32,
            ..Default::default()
        };
        core.ioctl("AMDKFD_IOC_IMPORT_DMABUF", sys::import_dmabuf, &mut a)?;
        let mut buf = GpuBuffer {
            core: core.clone(),
            handle: a.handle,
            va,
            size,
            gpu_mapped: false,
            free_on_drop: true,
            space: None,
            cpu_visible: false,
            what: "dma-buf import",
        };
        buf.map_to_gpu()?;
        Ok(buf)
    }

    /// EXPORT_DMABUF: a dma-buf of this BO for another device (the NPU).
    pub fn export_dmabuf(&self) -> Result<Fd> {
        let mut a = sys::kfd_ioctl_export_dmabuf_args {
            handle: self.handle,
            flags: (DmabufFdFlags::CLOEXEC | DmabufFdFlags::RDWR).bits(),
            ..Default::default()
        };
        self.core
            .ioctl("AMDKFD_IOC_EXPORT_DMABUF", sys::export_dmabuf, &mut a)?;
        Ok(Fd::from_raw(&self.core.io, a.dmabuf_fd as RawFd))
    }

    fn map_to_gpu(&mut self) -> Result<(), SysError> {
        let mut ids = [self.core.gpu_id];
        let mut a = sys::kfd_ioctl_map_memory_to_gpu_args {
            handle: self.handle,
            device_ids_array_ptr: ids.as_mut_ptr() as u64,
            n_devices: 1,
            n_success: 0,
        };
        self.core.ioctl(
            "AMDKFD_IOC_MAP_MEMORY_TO_GPU",
            sys::map_memory_to_gpu,
            &mut a,
        )?;
        self.gpu_mapped = true;
        Ok(())
    }

    fn unmap_from_gpu(&mut self) -> Result<(), SysError> {
        let mut ids = [self.core.gpu_id];
        let mut a = sys::kfd_ioctl_unmap_memory_from_gpu_args {
            handle: self.handle,
            device_ids_array_ptr: ids.as_mut_ptr() as u64,
            n_devices: 1,
            n_success: 0,
        };
        self.core.ioctl(
            "AMDKFD_IOC_UNMAP_MEMORY_FROM_GPU",
            sys::unmap_memory_from_gpu,
            &mut a,
        )?;
        self.gpu_mapped = false;
        Ok(())
    }

    pub(crate) fn keep_until_process_exit(&mut self) {
        self.free_on_drop = false;
    }

    /// KFD handle.
    pub fn handle(&self) -> u64 {
        self.handle
    }

    /// GPU virtual address (equal to the CPU address when CPU-visible).
    pub fn va(&self) -> u64 {
        self.va
    }

    /// Size in bytes (page multiple).
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Whether the CPU can touch the bytes at [`Self::va`].
    pub fn cpu_visible(&self) -> bool {
        self.cpu_visible
    }

    /// CPU pointer (same as the VA), or an error for GPU-only memory.
    pub fn cpu_ptr(&self) -> Result<*mut u8> {
        if self.cpu_visible {
            Ok(self.va as *mut u8)
        } else {
            Err(KfdError::Invalid(format!(
                "{} at {:#x} is not CPU-visible",
                self.what, self.va
            )))
        }
    }

    /// The bytes, as the CPU sees them (read after the GPU's completion signal).
    pub fn as_slice(&self) -> Result<&[u8]> {
        let p = self.cpu_ptr()?;
        // SAFETY: a CPU-visible buffer is `size` mapped bytes living as long as `self`.
        Ok(unsafe { std::slice::from_raw_parts(p, self.size as usize) })
    }

    /// The bytes, writable.
    pub fn as_mut_slice(&mut self) -> Result<&mut [u8]> {
        let p = self.cpu_ptr()?;
        // SAFETY: as above; `&mut self` gives exclusive CPU access.
        Ok(unsafe { std::slice::from_raw_parts_mut(p, self.size as usize) })
    }
}

impl Drop for GpuBuffer {
    fn drop(&mut self) {
        if !self.free_on_drop {
            // The kernel refuses both for the event page; closing /dev/kfd releases it.
            return;
        }
        if self.gpu_mapped {
            if let Err(e) = self.unmap_from_gpu() {
                tracing::warn!(error = %e, "{self:?}: unmap failed");
            }
        }
        let mut a = sys::kfd_ioctl_free_memory_of_gpu_args {
            handle: self.handle,
        };
        if let Err(e) = self.core.ioctl(
            "AMDKFD_IOC_FREE_MEMORY_OF_GPU",
            sys::free_memory_of_gpu,
            &mut a,
        ) {
            tracing::warn!(error = %e, "{self:?}: free failed");
        }
    }
}
