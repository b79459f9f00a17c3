//! Zero-copy buffers shared by CPU, GPU and NPU: a sealed memfd mapped on the CPU and
//! exported as one or more dma-bufs through `/dev/udmabuf` (reference §6.2).
//!
//! The udmabuf module caps one dma-buf at `size_limit_mb` (64 MiB by default), so a large
//! buffer becomes several chunks; the CPU mapping stays one contiguous range, and importers
//! map chunk `i` at `base + chunk.offset` so the device sees the same contiguous bytes.
//!
//! Every buffer carries a [`BufferDescriptor`] (DRM format and modifier, element type) that
//! importers check; a dma-buf made outside the engine enters with its producer's
//! descriptor through [`SharedBuffer::from_dmabuf`].

pub mod descriptor;
pub mod udmabuf;

use std::path::Path;
use std::sync::Arc;

use crate::error::{Ctx, SysError};
use crate::io::{Fd, KernelIo, Mapping, MemfdFlags, Seals};
pub use descriptor::{
    check_import, BufferDescriptor, DescriptorError, DrmFourcc, DrmModifier, Element,
};
use memfd::FileSeal;
pub use udmabuf::{Limits, Udmabuf};

/// Errors of the buffer layer.
#[derive(Debug, thiserror::Error)]
pub enum BufferError {
    /// A syscall or ioctl failed.
    #[error(transparent)]
    Sys(#[from] SysError),
    /// A zero-length buffer was asked for.
    #[error("a shared buffer needs at least one byte (asked for 0)")]
    Empty,
    /// The udmabuf module's limits cannot hold this buffer.
    #[error(
        "a {len}-byte buffer needs {chunks} udmabuf chunks of {chunk} bytes (one dma-buf fd \
         each, at most {MAX_CHUNKS}); raise /sys/module/udmabuf/parameters/size_limit_mb"
    )]
    TooManyChunks {
        /// Requested length.
        len: u64,
        /// Chunk size used.
        chunk: u64,
        /// Chunks needed.
        chunks: u64,
    },
    /// A descriptor the importer cannot read.
    #[error(transparent)]
    Descriptor(#[from] DescriptorError),
    /// A dma-buf handed over from outside is unusable as given.
    #[error("dma-buf '{name}' from outside the engine: {problem}")]
    Foreign {
        /// The name given to it.
        name: String,
        /// What is wrong and what to do.
        problem: String,
    },
}

/// One dma-buf of a [`SharedBuffer`]: bytes `offset..offset+size` of the buffer.
#[derive(Debug)]
pub struct Chunk {
    /// Byte offset of this chunk in the buffer.
    pub offset: u64,
    /// Bytes (a page multiple).
    pub size: u64,
    /// The dma-buf.
    pub dmabuf: Fd,
}

/// Most dma-bufs one buffer may use (each is an open fd): 4096 × 64 MiB = 256 GiB.
pub const MAX_CHUNKS: u64 = 4096;

/// Alignment of the CPU mapping: 2 MiB lets the CPU and GPU use large pages.
const MAP_ALIGN: usize = 2 << 20;

/// A memfd-backed buffer visible to the CPU at [`SharedBuffer::addr`] and to devices
/// through [`SharedBuffer::chunks`] (dma-bufs of the same pages). A buffer made from a
/// dma-buf of another producer ([`SharedBuffer::from_dmabuf`]) has that one dma-buf as its
/// only chunk and no memfd.
pub struct SharedBuffer {
    // Field order is drop order: dma-bufs, then the CPU view, then the memfd.
    chunks: Vec<Chunk>,
    map: Mapping,
    memfd: Option<Fd>,
    /// Where byte 0 lies in the memfd (0 but for [`SharedBuffer::from_memfd`]).
    memfd_offset: u64,
    len: usize,
    name: String,
    descriptor: BufferDescriptor,
    /// False for a memfd exported as it is ([`SharedBuffer::from_memfd`]): its CPU view is
    /// `PROT_READ`.
    writable: bool,
}

impl std::fmt::Debug for SharedBuffer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedBuffer")
            .field("name", &self.name)
            .field("addr", &format_args!("{:#x}", self.map.addr()))
            .field("len", &self.len)
            .field("chunks", &self.chunks.len())
            .field("descriptor", &format_args!("{}", self.descriptor))
            .finish()
    }
}

fn page() -> u64 {
    crate::page_size()
}

impl SharedBuffer {
    /// A zero-filled buffer of `len` bytes holding what `descriptor` says, mapped on the
    /// CPU and exported as dma-bufs (chunked to the udmabuf size limit).
    pub fn new(
        io: &Arc<dyn KernelIo>,
        name: &str,
        len: usize,
        descriptor: BufferDescriptor,
    ) -> Result<SharedBuffer, BufferError> {
        let udmabuf = Udmabuf::open(io)?;
        Self::with_udmabuf(io, &udmabuf, name, len, descriptor)
    }

    /// Same, with an already open `/dev/udmabuf` (many buffers, one open).
    pub fn with_udmabuf(
        io: &Arc<dyn KernelIo>,
        udmabuf: &Udmabuf,
        name: &str,
        len: usize,
        descriptor: BufferDescriptor,
    ) -> Result<SharedBuffer, BufferError> {
        let mut buf = Self::cpu_only(io, name, len)?;
        buf.descriptor = descriptor;
        buf.export(udmabuf)?;
        descriptor.log(name, len, "shared buffer exported as udmabuf chunks");
        Ok(buf)
    }

    /// Exports bytes `offset..offset + len` of a memfd that already holds data (the model
    /// file's sealed memfd) as udmabuf chunks, mapped read-only on the CPU: devices read the
    /// very pages the memfd's owner reads, and nothing is copied. `offset` must be a page
    /// multiple. The memfd is duplicated, so the caller keeps its own descriptor. udmabuf
    /// takes it only with `F_SEAL_SHRINK` and without a write seal, as
    /// `drivers/dma-buf/udmabuf.c` `check_memfd_seals` rules.
    pub fn from_memfd(
        io: &Arc<dyn KernelIo>,
        udmabuf: &Udmabuf,
        name: &str,
        memfd: std::os::fd::RawFd,
        offset: u64,
        len: usize,
        descriptor: BufferDescriptor,
    ) -> Result<SharedBuffer, BufferError> {
        if len == 0 {
            return Err(BufferError::Empty);
        }
        if !offset.is_multiple_of(page()) {
            return Err(BufferError::Foreign {
                name: name.to_owned(),
                problem: format!(
                    "memfd offset {offset:#x} is not a multiple of the {}-byte page: udmabuf \
                     exports whole pages",
                    page()
                ),
            });
        }
        let what = || format!("memfd '{name}' (fd {memfd})");
        // SAFETY: F_DUPFD_CLOEXEC makes a new descriptor and touches no memory; the Fd
        // below owns it.
        let dup = unsafe { libc::fcntl(memfd, libc::F_DUPFD_CLOEXEC, 0) };
        if dup < 0 {
            Err(std::io::Error::last_os_error()).ctx("fcntl(F_DUPFD_CLOEXEC)", what)?;
        }
        let memfd = Fd::from_raw(io, dup);
        let size = (len as u64).next_multiple_of(page()) as usize;
        let map = map_aligned(io, &memfd, size, offset, libc::PROT_READ, what)?;
        let mut buf = SharedBuffer {
            chunks: Vec::new(),
            map,
            memfd_offset: offset,
            memfd: Some(memfd),
            len,
            name: name.to_owned(),
            descriptor,
            writable: false,
        };
        buf.export(udmabuf)?;
        descriptor.log(name, len, "memfd exported as udmabuf chunks, as it is");
        Ok(buf)
    }

    /// Makes the udmabuf chunks covering the whole mapping, each at most the module's size
    /// limit.
    fn export(&mut self, udmabuf: &Udmabuf) -> Result<(), BufferError> {
        let buf = self;
        let limits = udmabuf.limits();
        let chunk = (limits.size_limit / page() * page()).max(page());
        let total = buf.map.len() as u64;
        let n = total.div_ceil(chunk);
        if n > MAX_CHUNKS {
            return Err(BufferError::TooManyChunks {
                len: total,
                chunk,
                chunks: n,
            });
        }
        let memfd = buf
            .memfd
            .as_ref()
            .expect("export is only called on memfd-backed buffers");
        let mut offset = 0;
        while offset < total {
            let size = chunk.min(total - offset);
            let dmabuf = udmabuf.create(memfd, buf.memfd_offset + offset, size)?;
            buf.chunks.push(Chunk {
                offset,
                size,
                dmabuf,
            });
            offset += size;
        }
        Ok(())
    }

    /// Wraps a dma-buf made outside the engine (a camera's or a video decoder's frame, a
    /// udmabuf another process made), `len` bytes holding what its producer's `descriptor`
    /// says. It is mapped on the CPU through the dma-buf itself; the device importers
    /// ([`crate::kfd::SharedGpuBuffer::import`], [`crate::xdna::XdnaDevice::import_shared`])
    /// check the descriptor and refuse a layout or format they cannot read.
    pub fn from_dmabuf(
        io: &Arc<dyn KernelIo>,
        name: &str,
        dmabuf: Fd,
        len: usize,
        descriptor: BufferDescriptor,
    ) -> Result<SharedBuffer, BufferError> {
        let foreign = |problem: String| BufferError::Foreign {
            name: name.to_owned(),
            problem,
        };
        if len == 0 || !(len as u64).is_multiple_of(page()) {
            return Err(foreign(format!(
                "length {len} is not a positive multiple of the {}-byte page (a dma-buf is \
                 whole pages): pass the dma-buf's size",
                page()
            )));
        }
        let what = || format!("dma-buf '{name}' (fd {})", dmabuf.raw());
        let map = map_aligned(
            io,
            &dmabuf,
            len,
            0,
            libc::PROT_READ | libc::PROT_WRITE,
            what,
        )
        .map_err(|e| {
            e.with_advice(
                "the dma-buf must be CPU-mappable (dma_buf_mmap) and at least this long; \
                 check the length its producer reported",
            )
        })?;
        descriptor.log(name, len, "dma-buf from outside the engine wrapped");
        Ok(SharedBuffer {
            chunks: vec![Chunk {
                offset: 0,
                size: len as u64,
                dmabuf,
            }],
            map,
            memfd: None,
            memfd_offset: 0,
            len,
            name: name.to_owned(),
            descriptor,
            writable: true,
        })
    }

    /// A sealed memfd mapped on the CPU, without dma-bufs (for the GTT fallback path and
    /// for CPU-only use).
    pub fn cpu_only(
        io: &Arc<dyn KernelIo>,
        name: &str,
        len: usize,
    ) -> Result<SharedBuffer, BufferError> {
        if len == 0 {
            return Err(BufferError::Empty);
        }
        let size = (len as u64).next_multiple_of(page());
        let what = || format!("memfd '{name}'");
        let fd = io
            .memfd_create(name, MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING)
            .ctx("memfd_create", what)?;
        let memfd = Fd::from_raw(io, fd);
        io.ftruncate(memfd.raw(), size).ctx("ftruncate", what)?;
        // SHRINK is what udmabuf requires; GROW and SEAL keep the size fixed for good.
        // WRITE must stay unsealed or udmabuf refuses the memfd.
        let seals = [FileSeal::SealShrink, FileSeal::SealGrow, FileSeal::SealSeal];
        io.add_seals(memfd.raw(), Seals::of(&seals))
            .ctx("fcntl(F_ADD_SEALS)", what)?;
        let map = map_aligned(
            io,
            &memfd,
            size as usize,
            0,
            libc::PROT_READ | libc::PROT_WRITE,
            what,
        )?;
        Ok(SharedBuffer {
            chunks: Vec::new(),
            map,
            memfd: Some(memfd),
            memfd_offset: 0,
            len,
            name: name.to_owned(),
            // Bytes until someone says more: a CPU-only buffer is never imported.
            descriptor: BufferDescriptor::blob(),
            writable: true,
        })
    }

    /// CPU (and, when imported at the same VA, GPU) address of byte 0.
    pub fn addr(&self) -> u64 {
        self.map.addr()
    }

    /// Requested length in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether zero-length (never: construction refuses it).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Mapped length (page multiple, ≥ `len`); devices import this much.
    pub fn mapped_len(&self) -> usize {
        self.map.len()
    }

    /// The debug name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The memfd (`None` for a dma-buf from outside the engine).
    pub fn memfd(&self) -> Option<&Fd> {
        self.memfd.as_ref()
    }

    /// Where byte 0 lies in the memfd.
    pub fn memfd_offset(&self) -> u64 {
        self.memfd_offset
    }

    /// What the buffer holds and how it is laid out.
    pub fn descriptor(&self) -> &BufferDescriptor {
        &self.descriptor
    }

    /// Refuses the buffer when `importer` cannot read its descriptor.
    pub fn check_import(&self, importer: &'static str) -> Result<(), DescriptorError> {
        check_import(importer, &self.name, &self.descriptor)
    }

    /// The dma-bufs covering the buffer, in order (empty for [`Self::cpu_only`]).
    pub fn chunks(&self) -> &[Chunk] {
        &self.chunks
    }

    /// The dma-buf fds, in order.
    pub fn dmabuf_fds(&self) -> Vec<std::os::fd::RawFd> {
        self.chunks.iter().map(|c| c.dmabuf.raw()).collect()
    }

    /// The bytes, as the CPU sees them.
    ///
    /// Devices may write the same pages; read after their completion signal.
    pub fn as_slice(&self) -> &[u8] {
        // SAFETY: the mapping is `len` readable bytes alive as long as `self`.
        unsafe { std::slice::from_raw_parts(self.map.ptr(), self.len) }
    }

    /// Whether the CPU may write the bytes (not for [`SharedBuffer::from_memfd`]).
    pub fn is_writable(&self) -> bool {
        self.writable
    }

    /// The bytes, writable.
    ///
    /// # Panics
    /// On a read-only buffer ([`SharedBuffer::is_writable`]): a write would fault.
    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        assert!(
            self.writable,
            "shared buffer '{}' is a read-only view of its memfd",
            self.name
        );
        // SAFETY: as above, and `&mut self` gives exclusive CPU access.
        unsafe { std::slice::from_raw_parts_mut(self.map.ptr(), self.len) }
    }

    /// Raw pointer to byte 0 (for devices that alias it).
    pub fn as_ptr(&self) -> *mut u8 {
        self.map.ptr()
    }
}

/// Maps `len` bytes of `fd` from `offset` on, shared, at an address aligned to [`MAP_ALIGN`] (or `len`), so a
/// device can import the range at the same address.
fn map_aligned(
    io: &Arc<dyn KernelIo>,
    fd: &Fd,
    len: usize,
    offset: u64,
    prot: i32,
    what: impl Fn() -> String + Copy,
) -> Result<Mapping, SysError> {
    let reserve = Mapping::reserve(io, len, MAP_ALIGN.min(len)).ctx("mmap", what)?;
    let addr = reserve.ptr();
    let (_, _) = reserve.into_raw();
    // SAFETY: `addr..addr+len` is the reservation we own; this mapping replaces it and is
    // the only owner from now on.
    unsafe {
        Mapping::with_prot(
            io,
            addr.cast(),
            len,
            prot,
            libc::MAP_SHARED | libc::MAP_FIXED,
            fd.raw(),
            offset,
        )
    }
    .ctx("mmap", what)
}

/// Whether `/dev/udmabuf` exists.
pub fn udmabuf_present(io: &dyn KernelIo) -> bool {
    io.exists(Path::new(udmabuf::DEVICE))
}
