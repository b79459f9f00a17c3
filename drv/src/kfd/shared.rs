//! Zero-copy buffers on the GPU: a [`SharedBuffer`]'s dma-bufs imported at the CPU's own
//! address, or (fallback) a KFD GTT buffer exported as a dma-buf for the NPU.

use std::os::fd::RawFd;

use super::device::Device;
use super::memory::{AllocOptions, GpuBuffer};
use super::{KfdError, Result};
use crate::buffer::{BufferDescriptor, BufferError, SharedBuffer};
use crate::error::Ctx;
use crate::io::{Fd, Mapping};

/// One buffer, one set of pages, seen by CPU, GPU (and through its dma-bufs, the NPU).
pub enum SharedGpuBuffer {
    /// memfd + udmabuf, imported into KFD.
    Udmabuf {
        /// Per-chunk imports (dropped first).
        imports: Vec<GpuBuffer>,
        /// A separate GPU range, when importing at the CPU address failed.
        gpu_range: Option<Mapping>,
        /// The memory.
        buf: SharedBuffer,
    },
    /// KFD GTT allocation exported as one dma-buf.
    Gtt {
        /// The exported dma-buf (closed first).
        dmabuf: Fd,
        /// The memory.
        bo: GpuBuffer,
        /// Requested length.
        len: usize,
        /// The debug name.
        name: String,
        /// What it holds.
        descriptor: BufferDescriptor,
    },
}

/// How KFD names itself when it refuses a buffer's descriptor.
pub const KFD_IMPORTER: &str = "KFD (iGPU)";

impl std::fmt::Debug for SharedGpuBuffer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Udmabuf { buf, .. } => write!(
                f,
                "SharedGpuBuffer::Udmabuf({buf:?}, gpu {:#x})",
                self.gpu_va()
            ),
            Self::Gtt { bo, .. } => write!(f, "SharedGpuBuffer::Gtt({bo:?})"),
        }
    }
}

impl SharedGpuBuffer {
    /// A shared buffer holding what `descriptor` says: udmabuf when available, else the
    /// GTT fallback.
    pub fn new(
        dev: &Device,
        name: &str,
        len: usize,
        descriptor: BufferDescriptor,
    ) -> Result<SharedGpuBuffer> {
        // Refuse a descriptor the GPU cannot read before any fallback could hide it.
        crate::buffer::check_import(KFD_IMPORTER, name, &descriptor).map_err(BufferError::from)?;
        match SharedBuffer::new(dev.io(), name, len, descriptor) {
            // Kernels before the dma-buf interop rework (≈6.7) refuse foreign dma-bufs.
            Ok(buf) => Self::import(dev, buf).or_else(|e| {
                tracing::info!(error = %e, "KFD did not import the udmabuf; falling back to a GTT buffer");
                Self::gtt(dev, name, len, descriptor)
            }),
            Err(e) => {
                tracing::info!(error = %e, "udmabuf unavailable; falling back to a KFD GTT buffer exported as dma-buf");
                Self::gtt(dev, name, len, descriptor)
            }
        }
    }

    /// Imports `buf`'s chunks at adjacent GPU addresses: at the CPU address when the GPU VM
    /// accepts it, else in a fresh range.
    ///
    /// The buffer's descriptor must be one the GPU reads (linear; see
    /// [`crate::buffer::check_import`]): a tiled or unknown layout is refused, not guessed at.
    pub fn import(dev: &Device, buf: SharedBuffer) -> Result<SharedGpuBuffer> {
        buf.check_import(KFD_IMPORTER).map_err(BufferError::from)?;
        if buf.chunks().is_empty() {
            return Err(KfdError::Invalid(format!(
                "shared buffer '{}' has no dma-bufs (made with cpu_only?)",
                buf.name()
            )));
        }
        match import_chunks(dev, &buf, buf.addr()) {
            Ok(imports) => {
                return Ok(SharedGpuBuffer::Udmabuf {
                    imports,
                    gpu_range: None,
                    buf,
                })
            }
            // IMPORT_DMABUF only records the address; the GPU VM refuses one it cannot use
            // (outside the VM, or overlapping another mapping) when the BO is mapped:
            // amdgpu_vm_bo_map answers EINVAL through MAP_MEMORY_TO_GPU. Other failures are
            // real.
            Err(KfdError::Sys(e))
                if e.errno() == Some(libc::EINVAL) && e.op == "AMDKFD_IOC_MAP_MEMORY_TO_GPU" =>
            {
                tracing::info!(error = %e, "import at the CPU address refused; using a separate GPU range");
            }
            Err(e) => return Err(e),
        }
        let range = Mapping::reserve(dev.io(), buf.mapped_len(), 2 << 20)
            .ctx("mmap", || "GPU VA reservation".into())?;
        let imports = import_chunks(dev, &buf, range.addr())?;
        Ok(SharedGpuBuffer::Udmabuf {
            imports,
            gpu_range: Some(range),
            buf,
        })
    }

    /// The fallback: GTT memory the CPU maps through the render node, exported as a
    /// dma-buf (no udmabuf size limit; KFD may evict it under memory pressure).
    pub fn gtt(
        dev: &Device,
        name: &str,
        len: usize,
        descriptor: BufferDescriptor,
    ) -> Result<SharedGpuBuffer> {
        let bo = GpuBuffer::alloc(
            dev,
            len as u64,
            AllocOptions {
                align: 2 << 20,
                ..AllocOptions::gtt()
            },
        )?;
        let dmabuf = bo.export_dmabuf()?;
        descriptor.log(name, len, "GTT buffer exported as a dma-buf");
        Ok(SharedGpuBuffer::Gtt {
            dmabuf,
            bo,
            len,
            name: name.to_owned(),
            descriptor,
        })
    }

    /// The debug name.
    pub fn name(&self) -> &str {
        match self {
            Self::Udmabuf { buf, .. } => buf.name(),
            Self::Gtt { name, .. } => name,
        }
    }

    /// What the buffer holds and how it is laid out.
    pub fn descriptor(&self) -> &BufferDescriptor {
        match self {
            Self::Udmabuf { buf, .. } => buf.descriptor(),
            Self::Gtt { descriptor, .. } => descriptor,
        }
    }

    /// GPU address of byte 0.
    pub fn gpu_va(&self) -> u64 {
        match self {
            Self::Udmabuf { imports, .. } => imports[0].va(),
            Self::Gtt { bo, .. } => bo.va(),
        }
    }

    /// CPU address of byte 0 (equal to [`Self::gpu_va`] unless the fallback range was used).
    pub fn cpu_addr(&self) -> u64 {
        match self {
            Self::Udmabuf { buf, .. } => buf.addr(),
            Self::Gtt { bo, .. } => bo.va(),
        }
    }

    /// Whether GPU and CPU use the same address.
    pub fn same_va(&self) -> bool {
        self.gpu_va() == self.cpu_addr()
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        match self {
            Self::Udmabuf { buf, .. } => buf.len(),
            Self::Gtt { len, .. } => *len,
        }
    }

    /// Whether empty (never).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// dma-buf fds covering the buffer in order (chunk i starts at byte `i × chunk size`).
    pub fn dmabuf_fds(&self) -> Vec<RawFd> {
        match self {
            Self::Udmabuf { buf, .. } => buf.dmabuf_fds(),
            Self::Gtt { dmabuf, .. } => vec![dmabuf.raw()],
        }
    }

    /// The memfd behind the bytes and where byte 0 lies in it (none on the GTT fallback or
    /// for a dma-buf from outside the engine).
    pub fn memfd(&self) -> Option<(RawFd, u64)> {
        match self {
            Self::Udmabuf { buf, .. } => buf.memfd().map(|m| (m.raw(), buf.memfd_offset())),
            Self::Gtt { .. } => None,
        }
    }

    /// The CPU address range of the bytes (to show that a view lies inside this buffer).
    pub fn cpu_range(&self) -> std::ops::Range<usize> {
        let s = self.as_slice();
        s.as_ptr() as usize..s.as_ptr() as usize + s.len()
    }

    /// The bytes as the CPU sees them (read after the GPU's completion).
    pub fn as_slice(&self) -> &[u8] {
        match self {
            Self::Udmabuf { buf, .. } => buf.as_slice(),
            Self::Gtt { bo, len, .. } => {
                &bo.as_slice().expect("GTT fallback is CPU-visible")[..*len]
            }
        }
    }

    /// The bytes, writable.
    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        match self {
            Self::Udmabuf { buf, .. } => buf.as_mut_slice(),
            Self::Gtt { bo, len, .. } => {
                &mut bo.as_mut_slice().expect("GTT fallback is CPU-visible")[..*len]
            }
        }
    }
}

fn import_chunks(dev: &Device, buf: &SharedBuffer, base: u64) -> Result<Vec<GpuBuffer>> {
    buf.chunks()
        .iter()
        .map(|c| {
            GpuBuffer::import_at(dev.core(), c.dmabuf.raw(), base + c.offset, c.size)
                .map_err(KfdError::from)
        })
        .collect()
}
