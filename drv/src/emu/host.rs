//! Host memory that the emulated "hardware" reads and writes: real memfds mapped in this
//! process, so that a user mapping of the same object (through `KernelIo::mmap`) aliases
//! the very same pages, as CPU and GPU views of one buffer do on an APU.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::Arc;

fn last_err<T>(ret: i64) -> io::Result<T>
where
    T: TryFrom<i64>,
{
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        T::try_from(ret).map_err(|_| io::Error::other("value out of range"))
    }
}

/// A range of this process's address space with the emulator's own view of some memory.
pub struct HostMap {
    ptr: *mut u8,
    len: usize,
}

// SAFETY: the range is plain shared memory; the emulator, like hardware, accesses it with
// raw reads/writes and the driver protocols (signals, fences) order them.
unsafe impl Send for HostMap {}
// SAFETY: as above.
unsafe impl Sync for HostMap {}

impl HostMap {
    /// Maps `len` bytes of `fd` at `offset` shared, read-write.
    pub fn map(fd: RawFd, offset: u64, len: usize) -> io::Result<HostMap> {
        // SAFETY: not MAP_FIXED; the kernel picks unused space.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd,
                offset as libc::off_t,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(HostMap { ptr: p.cast(), len })
    }

    /// Maps several (fd, offset, len) pieces back to back in one contiguous range.
    pub fn map_pieces(pieces: &[(RawFd, u64, usize)]) -> io::Result<HostMap> {
        let len: usize = pieces.iter().map(|p| p.2).sum();
        let flags = libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE;
        // SAFETY: fresh reservation, not MAP_FIXED.
        let base = unsafe { libc::mmap(std::ptr::null_mut(), len, libc::PROT_NONE, flags, -1, 0) };
        if base == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let me = HostMap {
            ptr: base.cast(),
            len,
        };
        let mut at = 0usize;
        for &(fd, off, n) in pieces {
            // SAFETY: `base+at..+n` lies inside our own reservation `me`.
            let p = unsafe {
                libc::mmap(
                    me.ptr.add(at).cast(),
                    n,
                    libc::PROT_READ | libc::PROT_WRITE,
                    libc::MAP_SHARED | libc::MAP_FIXED,
                    fd,
                    off as libc::off_t,
                )
            };
            if p == libc::MAP_FAILED {
                return Err(io::Error::last_os_error());
            }
            at += n;
        }
        Ok(me)
    }

    /// Start of the emulator's view.
    pub fn ptr(&self) -> *mut u8 {
        self.ptr
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl Drop for HostMap {
    fn drop(&mut self) {
        // SAFETY: we own the range.
        unsafe { libc::munmap(self.ptr.cast(), self.len) };
    }
}

/// A real memfd of a fixed size plus the emulator's mapping of it: the backing store of an
/// emulated buffer object, doorbell page, or event page.
pub struct Backing {
    fd: OwnedFd,
    map: HostMap,
}

impl Backing {
    /// A zero-filled backing of `len` bytes (rounded up to whole pages).
    pub fn new(name: &str, len: usize) -> io::Result<Backing> {
        let len = len.next_multiple_of(page_size()).max(page_size());
        let c = CString::new(name).map_err(|_| io::Error::other("NUL in name"))?;
        // SAFETY: valid C string.
        let fd: RawFd =
            last_err(unsafe { libc::memfd_create(c.as_ptr(), libc::MFD_CLOEXEC) } as i64)?;
        // SAFETY: `fd` is a fresh descriptor we own.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        // SAFETY: no pointers.
        last_err::<i32>(unsafe { libc::ftruncate(fd.as_raw_fd(), len as libc::off_t) } as i64)?;
        let map = HostMap::map(fd.as_raw_fd(), 0, len)?;
        Ok(Backing { fd, map })
    }

    /// The memfd, for user mmaps (`MmapTarget`).
    pub fn fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// Emulator-side pointer.
    pub fn ptr(&self) -> *mut u8 {
        self.map.ptr()
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether empty (never).
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

/// One piece of a dma-buf: a range of a memfd (the emulator holds its own dup, as the
/// kernel holds a file reference).
pub struct DmaChunk {
    /// Emulator-owned duplicate of the memfd.
    pub memfd: OwnedFd,
    /// Byte offset in the memfd.
    pub offset: u64,
    /// Bytes.
    pub size: u64,
}

/// An emulated dma-buf: the pages of one or more memfd ranges, concatenated.
pub struct DmaBuf {
    /// Who made it ("udmabuf", "kfd export").
    pub exporter: &'static str,
    /// The pieces in order.
    pub chunks: Vec<DmaChunk>,
}

impl DmaBuf {
    /// Total size in bytes.
    pub fn len(&self) -> u64 {
        self.chunks.iter().map(|c| c.size).sum()
    }

    /// Whether empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Maps the whole dma-buf contiguously for the emulator (an importer's "device view").
    pub fn map(&self) -> io::Result<HostMap> {
        let pieces: Vec<_> = self
            .chunks
            .iter()
            .map(|c| (c.memfd.as_raw_fd(), c.offset, c.size as usize))
            .collect();
        HostMap::map_pieces(&pieces)
    }
}

/// Shared reference to a dma-buf; importers keep one so the pages outlive the fd.
pub type DmaBufRef = Arc<DmaBuf>;

/// `dup(fd)` as an owned descriptor.
pub fn dup_fd(fd: RawFd) -> io::Result<OwnedFd> {
    // SAFETY: no pointers.
    let n: RawFd = last_err(unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 0) } as i64)?;
    // SAFETY: fresh descriptor we own.
    Ok(unsafe { OwnedFd::from_raw_fd(n) })
}

/// The host page size.
pub fn page_size() -> usize {
    // SAFETY: sysconf has no preconditions.
    let p = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if p > 0 {
        p as usize
    } else {
        4096
    }
}

/// Reads a `T` from raw emulator memory.
///
/// # Safety
/// `p` must point to `size_of::<T>()` readable bytes.
pub unsafe fn read_at<T: Copy>(p: *const u8) -> T {
    // SAFETY: forwarded.
    unsafe { std::ptr::read_unaligned(p.cast()) }
}

/// Writes a `T` to raw emulator memory.
///
/// # Safety
/// `p` must point to `size_of::<T>()` writable bytes.
pub unsafe fn write_at<T: Copy>(p: *mut u8, v: T) {
    // SAFETY: forwarded.
    unsafe { std::ptr::write_unaligned(p.cast(), v) }
}
