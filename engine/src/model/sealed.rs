//! The weights' one home: a memfd that holds the model file's bytes, sealed against
//! resizing, mapped read-only on the CPU and exportable to devices (udmabuf) as it is.
//!
//! The memfd is made with the `memfd` crate; everything a kernel emulator must rule on
//! (size, seals, the CPU mapping) goes through the [`KernelIo`] it was made for.

use memfd::{FileSeal, MemfdOptions};
use onebit_drv::io::{KernelIo, Mapping, Seals};
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::Arc;

/// Seals the weights' memfd carries once loaded: the size is fixed for good. No write
/// seal: `drivers/dma-buf/udmabuf.c` refuses memfds with F_SEAL_WRITE or
/// F_SEAL_FUTURE_WRITE, and the CPU's mapping is read-only anyway.
pub const WEIGHT_SEALS: [FileSeal; 3] =
    [FileSeal::SealShrink, FileSeal::SealGrow, FileSeal::SealSeal];

/// A memfd being filled: writable mapping of `len` bytes (the size rounded up to pages).
pub struct MemfdWriter {
    io: Arc<dyn KernelIo>,
    memfd: memfd::Memfd,
    map: Mapping,
    len: usize,
    name: String,
}

fn page() -> usize {
    onebit_drv::page_size() as usize
}

impl MemfdWriter {
    /// A zero-filled memfd of `len` bytes, mapped writable.
    pub fn new(io: &Arc<dyn KernelIo>, name: &str, len: usize) -> io::Result<MemfdWriter> {
        let memfd = MemfdOptions::default()
            .allow_sealing(true)
            .close_on_exec(true)
            .create(name)
            .map_err(|e| match e {
                memfd::Error::Create(e) => e,
                other => io::Error::other(other.to_string()),
            })?;
        let size = len.max(1).next_multiple_of(page());
        io.ftruncate(memfd.as_raw_fd(), size as u64)?;
        let flags = libc::MAP_SHARED;
        // SAFETY: not MAP_FIXED: the kernel picks fresh address space.
        let map =
            unsafe { Mapping::new(io, std::ptr::null_mut(), size, flags, memfd.as_raw_fd(), 0) }?;
        Ok(MemfdWriter {
            io: io.clone(),
            memfd,
            map,
            len,
            name: name.to_owned(),
        })
    }

    /// The whole writable mapping (page-rounded, so aligned over-reads past `len` fit).
    pub fn as_mut_ptr(&mut self) -> *mut u8 {
        self.map.ptr()
    }

    /// Mapped bytes (a page multiple ≥ the requested length).
    pub fn mapped_len(&self) -> usize {
        self.map.len()
    }

    /// The memfd's descriptor (for `pread` into it).
    pub fn raw_fd(&self) -> RawFd {
        self.memfd.as_raw_fd()
    }

    /// Drops the writable mapping, seals the memfd with [`WEIGHT_SEALS`] and maps it
    /// `PROT_READ` from a read-only reopen, so no mapping of this process can write it.
    pub fn seal(self) -> io::Result<SealedFile> {
        let MemfdWriter {
            io,
            memfd,
            map,
            len,
            name,
        } = self;
        let size = map.len();
        drop(map);
        io.add_seals(memfd.as_raw_fd(), Seals::of(&WEIGHT_SEALS))?;
        // A MAP_SHARED mapping of an O_RDWR descriptor could be mprotect'ed writable; one of
        // an O_RDONLY descriptor cannot (mprotect answers EACCES).
        let path = format!("/proc/self/fd/{}", memfd.as_raw_fd());
        let ro = std::fs::File::open(&path).map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => io::Error::new(
                e.kind(),
                format!("cannot reopen the memfd as {path} ({e}): /proc is not mounted here; mount proc on /proc (a chroot or empty root needs it too)"),
            ),
            _ => e,
        })?;
        let map = Mapping::read_only(&io, size, ro.as_raw_fd(), 0)?;
        Ok(SealedFile {
            map,
            memfd,
            len,
            name,
        })
    }
}

/// A sealed memfd holding a model file's bytes, mapped read-only.
pub struct SealedFile {
    // Field order is drop order: the mapping, then the memfd.
    map: Mapping,
    memfd: memfd::Memfd,
    len: usize,
    name: String,
}

impl SealedFile {
    /// The file's bytes.
    pub fn as_slice(&self) -> &[u8] {
        // SAFETY: the mapping holds at least `len` readable bytes while `self` lives, and
        // nothing writes them: the memfd's only writable mapping was dropped before this
        // one was made, and punched ranges are never read again (see `punch`).
        unsafe { std::slice::from_raw_parts(self.map.ptr(), self.len) }
    }

    /// The memfd's descriptor (read-write: for udmabuf export and hole punching).
    pub fn raw_fd(&self) -> RawFd {
        self.memfd.as_raw_fd()
    }

    /// The memfd, for callers that need the crate's own handle (seals, file).
    pub fn memfd(&self) -> &memfd::Memfd {
        &self.memfd
    }

    /// Address of byte 0 of the CPU's read-only mapping.
    pub fn addr(&self) -> usize {
        self.map.ptr() as usize
    }

    /// Mapped bytes (a page multiple).
    pub fn mapped_len(&self) -> usize {
        self.map.len()
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Frees the memory behind the whole pages in `start..end` (file offsets) for good:
    /// shmem pages hold the only copy of these bytes, so this is for bytes nobody reads
    /// again (they would read back as zeros, faulting in new pages).
    pub fn punch(&self, start: usize, end: usize) {
        let page = page();
        let (start, end) = (start.div_ceil(page) * page, end.min(self.len) / page * page);
        if end <= start {
            return;
        }
        let mode = nix::fcntl::FallocateFlags::FALLOC_FL_PUNCH_HOLE
            | nix::fcntl::FallocateFlags::FALLOC_FL_KEEP_SIZE;
        let r = nix::fcntl::fallocate(
            self.memfd.as_raw_fd(),
            mode,
            start as libc::off_t,
            (end - start) as libc::off_t,
        );
        if let Err(e) = r {
            tracing::debug!(
                "fallocate(PUNCH_HOLE) on {} bytes of {} failed: {e}",
                end - start,
                self.name
            );
        }
    }
}

impl std::fmt::Debug for SealedFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SealedFile({}, {} bytes)", self.name, self.len)
    }
}
