//! The choke point: every file, ioctl and mmap that `onebit-drv` performs goes through
//! [`KernelIo`]. Production code uses [`real()`]; tests swap in `emu::Emulator`, which
//! plays the kernel in-process (tinygrad's `FileIOInterface` idea, without LD_PRELOAD).
//!
//! File descriptors are plain [`RawFd`]s so that an emulator can hand out its own; the
//! owning wrapper [`Fd`] closes through the same `KernelIo` it came from.

use std::ffi::{c_void, CString};
use std::io;
use std::os::fd::RawFd;
use std::path::Path;
use std::sync::Arc;

/// `open(2)` flags used by drv (a subset of `O_*`).
pub const O_RDWR_CLOEXEC: i32 = libc::O_RDWR | libc::O_CLOEXEC;

bitflags::bitflags! {
    /// `memfd_create(2)` flags (`MFD_*`). Bits this type does not name are kept.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
    pub struct MemfdFlags: u32 {
        const CLOEXEC = libc::MFD_CLOEXEC;
        const ALLOW_SEALING = libc::MFD_ALLOW_SEALING;
        const HUGETLB = libc::MFD_HUGETLB;
        const _ = !0;
    }
}

bitflags::bitflags! {
    /// File seals (`F_SEAL_*`) as `fcntl(F_ADD_SEALS / F_GET_SEALS)` take and give them.
    /// Bits this type does not name (seals of newer kernels) are kept and shown.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
    pub struct Seals: i32 {
        const SEAL = libc::F_SEAL_SEAL;
        const SHRINK = libc::F_SEAL_SHRINK;
        const GROW = libc::F_SEAL_GROW;
        const WRITE = libc::F_SEAL_WRITE;
        const FUTURE_WRITE = libc::F_SEAL_FUTURE_WRITE;
        const _ = !0;
    }
}

impl Seals {
    /// The seals the memfd crate's [`memfd::FileSeal`] names.
    pub fn of(seals: &[memfd::FileSeal]) -> Seals {
        use memfd::FileSeal::*;
        seals.iter().fold(Seals::empty(), |w, s| {
            w | match s {
                SealShrink => Seals::SHRINK,
                SealGrow => Seals::GROW,
                SealWrite => Seals::WRITE,
                SealSeal => Seals::SEAL,
                SealFutureWrite => Seals::FUTURE_WRITE,
            }
        })
    }
}

/// The narrow interface between drv and the kernel.
///
/// Implementations must behave like the Linux syscalls they are named after, including
/// the errno they fail with, because callers turn errno into advice.
pub trait KernelIo: Send + Sync {
    /// `open(path, flags)`; returns a new descriptor.
    fn open(&self, path: &Path, flags: i32) -> io::Result<RawFd>;
    /// `close(fd)`.
    fn close(&self, fd: RawFd) -> io::Result<()>;
    /// `ioctl(fd, request, arg)`; returns the ioctl's non-negative return value
    /// (udmabuf returns the new dma-buf fd this way).
    ///
    /// # Safety
    /// `arg` must point to memory laid out as `request` expects (its `_IOC_SIZE` bytes, and
    /// whatever those bytes point to), valid for reads and writes for the whole call.
    unsafe fn ioctl(&self, fd: RawFd, request: u64, arg: *mut c_void) -> io::Result<i32>;
    /// `mmap(addr, len, prot, flags, fd, offset)`; `fd == -1` with `MAP_ANONYMOUS` reserves
    /// plain address space.
    ///
    /// # Safety
    /// With `MAP_FIXED`, `addr..addr+len` must be address space the caller owns (for
    /// example its own earlier reservation); it is replaced.
    unsafe fn mmap(
        &self,
        addr: *mut c_void,
        len: usize,
        prot: i32,
        flags: i32,
        fd: RawFd,
        offset: u64,
    ) -> io::Result<*mut c_void>;
    /// `munmap(addr, len)`.
    ///
    /// # Safety
    /// Nothing may use `addr..addr+len` afterwards.
    unsafe fn munmap(&self, addr: *mut c_void, len: usize) -> io::Result<()>;
    /// `memfd_create(name, flags)`.
    fn memfd_create(&self, name: &str, flags: MemfdFlags) -> io::Result<RawFd>;
    /// `ftruncate(fd, len)`.
    fn ftruncate(&self, fd: RawFd, len: u64) -> io::Result<()>;
    /// `fcntl(fd, F_ADD_SEALS, seals)`.
    fn add_seals(&self, fd: RawFd, seals: Seals) -> io::Result<()>;
    /// `fcntl(fd, F_GET_SEALS)`.
    fn get_seals(&self, fd: RawFd) -> io::Result<Seals>;
    /// Whole contents of a small (sysfs, procfs) text file.
    fn read_to_string(&self, path: &Path) -> io::Result<String>;
    /// Entry names of a directory (no `.`/`..`), sorted.
    fn read_dir(&self, path: &Path) -> io::Result<Vec<String>>;
    /// Whether `path` exists (device node, sysfs file or directory).
    fn exists(&self, path: &Path) -> bool;
    /// `getrlimit(RLIMIT_MEMLOCK)` as (soft, hard); `u64::MAX` is unlimited.
    fn memlock_limit(&self) -> io::Result<(u64, u64)>;
    /// Which KFD process this I/O reaches. `None` is the real kernel, which keeps one KFD
    /// process per OS process for the life of its address space (closing `/dev/kfd` does
    /// not end it, see `kfd_open`/`kfd_release`); an emulator answers `Some(id)` of its own
    /// process, which ends when its last `/dev/kfd` descriptor closes.
    fn kfd_process_id(&self) -> Option<usize> {
        None
    }
    /// `setrlimit(RLIMIT_MEMLOCK)` with a new soft limit (≤ hard; `u64::MAX` is unlimited).
    /// The default acts on this process; the emulator records it instead.
    fn set_memlock_soft(&self, soft: u64) -> io::Result<()> {
        let mut r = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: `r` is a valid rlimit to fill.
        if unsafe { libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut r) } != 0 {
            return Err(io::Error::last_os_error());
        }
        r.rlim_cur = if soft == u64::MAX {
            libc::RLIM_INFINITY
        } else {
            soft
        };
        // SAFETY: `r` is a valid rlimit.
        if unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &r) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }
}

/// The real kernel.
#[derive(Debug, Default, Clone, Copy)]
pub struct RealIo;

/// The real kernel behind the shared handle type drv's owning types keep.
pub fn real() -> Arc<dyn KernelIo> {
    Arc::new(RealIo)
}

fn cstr(path: &Path) -> io::Result<CString> {
    use std::os::unix::ffi::OsStrExt;
    CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains a NUL byte"))
}

fn check(ret: libc::c_int) -> io::Result<i32> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

impl KernelIo for RealIo {
    fn open(&self, path: &Path, flags: i32) -> io::Result<RawFd> {
        let c = cstr(path)?;
        // SAFETY: `c` is a valid NUL-terminated string for the duration of the call.
        check(unsafe { libc::open(c.as_ptr(), flags) })
    }

    fn close(&self, fd: RawFd) -> io::Result<()> {
        // SAFETY: closing a descriptor has no memory-safety preconditions.
        check(unsafe { libc::close(fd) }).map(|_| ())
    }

    unsafe fn ioctl(&self, fd: RawFd, request: u64, arg: *mut c_void) -> io::Result<i32> {
        loop {
            // The request type is the C library's (glibc: unsigned long, musl: int); the kernel
            // reads 32 bits, so the wrapping `as` keeps every request number intact.
            // SAFETY: the caller guarantees `arg` matches `request`.
            let r = unsafe { libc::ioctl(fd, request as libc::Ioctl, arg) };
            match check(r) {
                Err(e) if e.raw_os_error() == Some(libc::EINTR) => continue,
                other => return other,
            }
        }
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
        // SAFETY: the caller upholds the MAP_FIXED contract; otherwise mmap picks fresh space.
        let p = unsafe { libc::mmap(addr, len, prot, flags, fd, offset as libc::off_t) };
        if p == libc::MAP_FAILED {
            Err(io::Error::last_os_error())
        } else {
            Ok(p)
        }
    }

    unsafe fn munmap(&self, addr: *mut c_void, len: usize) -> io::Result<()> {
        // SAFETY: the caller promises nothing uses the range any more.
        check(unsafe { libc::munmap(addr, len) }).map(|_| ())
    }

    fn memfd_create(&self, name: &str, flags: MemfdFlags) -> io::Result<RawFd> {
        let c = CString::new(name)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "name contains a NUL byte"))?;
        // SAFETY: `c` is a valid NUL-terminated string.
        check(unsafe { libc::memfd_create(c.as_ptr(), flags.bits()) })
    }

    fn ftruncate(&self, fd: RawFd, len: u64) -> io::Result<()> {
        // SAFETY: no pointers involved.
        check(unsafe { libc::ftruncate(fd, len as libc::off_t) }).map(|_| ())
    }

    fn add_seals(&self, fd: RawFd, seals: Seals) -> io::Result<()> {
        // SAFETY: no pointers involved.
        check(unsafe { libc::fcntl(fd, libc::F_ADD_SEALS, seals.bits()) }).map(|_| ())
    }

    fn get_seals(&self, fd: RawFd) -> io::Result<Seals> {
        // SAFETY: no pointers involved.
        check(unsafe { libc::fcntl(fd, libc::F_GET_SEALS) }).map(Seals::from_bits_retain)
    }

    fn read_to_string(&self, path: &Path) -> io::Result<String> {
        std::fs::read_to_string(path)
    }

    fn read_dir(&self, path: &Path) -> io::Result<Vec<String>> {
        let mut names = std::fs::read_dir(path)?
            .map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned()))
            .collect::<io::Result<Vec<_>>>()?;
        names.sort();
        Ok(names)
    }

    fn exists(&self, path: &Path) -> bool {
        path.exists()
    }

    fn memlock_limit(&self) -> io::Result<(u64, u64)> {
        let mut r = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: `r` is a valid, writable rlimit.
        check(unsafe { libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut r) })?;
        let conv = |v: libc::rlim_t| {
            if v == libc::RLIM_INFINITY {
                u64::MAX
            } else {
                v
            }
        };
        Ok((conv(r.rlim_cur), conv(r.rlim_max)))
    }
}

/// An owned descriptor that closes through the [`KernelIo`] it was opened with.
pub struct Fd {
    io: Arc<dyn KernelIo>,
    fd: RawFd,
}

impl Fd {
    /// Opens `path` read-write, close-on-exec.
    pub fn open(io: &Arc<dyn KernelIo>, path: &Path) -> io::Result<Fd> {
        let fd = io.open(path, O_RDWR_CLOEXEC)?;
        Ok(Fd { io: io.clone(), fd })
    }

    /// Takes ownership of `fd`, which must have come from `io`.
    pub fn from_raw(io: &Arc<dyn KernelIo>, fd: RawFd) -> Fd {
        Fd { io: io.clone(), fd }
    }

    /// The raw number, for ioctl arguments; `self` keeps ownership.
    pub fn raw(&self) -> RawFd {
        self.fd
    }

    /// The `KernelIo` this descriptor belongs to.
    pub fn io(&self) -> &Arc<dyn KernelIo> {
        &self.io
    }
}

impl std::fmt::Debug for Fd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Fd({})", self.fd)
    }
}

impl Drop for Fd {
    fn drop(&mut self) {
        if let Err(e) = self.io.close(self.fd) {
            tracing::warn!(fd = self.fd, error = %e, "close failed");
        }
    }
}

/// A mapping that unmaps through the [`KernelIo`] it came from.
pub struct Mapping {
    io: Arc<dyn KernelIo>,
    ptr: *mut u8,
    len: usize,
}

// SAFETY: a Mapping is an address range; access to the bytes is synchronised by its users
// (`as_slice` borrows `&self`, `as_mut_slice` borrows `&mut self`).
unsafe impl Send for Mapping {}
// SAFETY: as above; shared access only reads through `&self`.
unsafe impl Sync for Mapping {}

impl Mapping {
    /// `mmap(addr or NULL, len, READ|WRITE, flags, fd, offset)` owned by the result.
    ///
    /// # Safety
    /// With `MAP_FIXED` in `flags`, the caller must own `addr..addr+len` (its reservation is
    /// replaced and must not be unmapped separately while this mapping lives).
    pub unsafe fn new(
        io: &Arc<dyn KernelIo>,
        addr: *mut c_void,
        len: usize,
        flags: i32,
        fd: RawFd,
        offset: u64,
    ) -> io::Result<Mapping> {
        // SAFETY: forwarded contract.
        unsafe {
            Self::with_prot(
                io,
                addr,
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                flags,
                fd,
                offset,
            )
        }
    }

    /// Same as [`Mapping::new`] with the protection given (`PROT_READ` for a view nobody
    /// may write through).
    ///
    /// # Safety
    /// As for [`Mapping::new`].
    pub unsafe fn with_prot(
        io: &Arc<dyn KernelIo>,
        addr: *mut c_void,
        len: usize,
        prot: i32,
        flags: i32,
        fd: RawFd,
        offset: u64,
    ) -> io::Result<Mapping> {
        // SAFETY: forwarded contract.
        let p = unsafe { io.mmap(addr, len, prot, flags, fd, offset)? };
        Ok(Mapping {
            io: io.clone(),
            ptr: p.cast(),
            len,
        })
    }

    /// `mmap(NULL, len, PROT_READ, MAP_SHARED, fd, offset)` owned by the result: a view
    /// nobody writes through (map it from a read-only descriptor, and `mprotect` cannot make
    /// it writable either: the kernel refuses with `EACCES`).
    pub fn read_only(
        io: &Arc<dyn KernelIo>,
        len: usize,
        fd: RawFd,
        offset: u64,
    ) -> io::Result<Mapping> {
        // SAFETY: not MAP_FIXED, so the kernel picks fresh space nobody else owns.
        let p = unsafe {
            io.mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ,
                libc::MAP_SHARED,
                fd,
                offset,
            )?
        };
        Ok(Mapping {
            io: io.clone(),
            ptr: p.cast(),
            len,
        })
    }

    /// Reserves `len` bytes of address space (PROT_NONE), to be filled with MAP_FIXED maps
    /// so that several objects sit at adjacent addresses.
    pub fn reserve(io: &Arc<dyn KernelIo>, len: usize, align: usize) -> io::Result<Mapping> {
        let total = len + align;
        let flags = libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE;
        // SAFETY: not MAP_FIXED, so the kernel picks fresh space nobody else owns.
        let p = unsafe { io.mmap(std::ptr::null_mut(), total, libc::PROT_NONE, flags, -1, 0)? };
        let start = p as usize;
        let aligned = start.next_multiple_of(align.max(1));
        let (head, tail) = (aligned - start, total - (aligned - start) - len);
        // SAFETY: head and tail are parts of the reservation we just made and nobody uses.
        unsafe {
            if head > 0 {
                io.munmap(p, head)?;
            }
            if tail > 0 {
                io.munmap((aligned + len) as *mut c_void, tail)?;
            }
        }
        Ok(Mapping {
            io: io.clone(),
            ptr: aligned as *mut u8,
            len,
        })
    }

    /// Start address (also the GPU VA when mapped at the same address on the GPU).
    pub fn addr(&self) -> u64 {
        self.ptr as u64
    }

    /// Start pointer.
    pub fn ptr(&self) -> *mut u8 {
        self.ptr
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the mapping is empty (never, for mappings drv makes).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Forgets the range without unmapping (it was handed to MAP_FIXED mappings that own
    /// it piecewise).
    pub fn into_raw(self) -> (*mut u8, usize) {
        let me = std::mem::ManuallyDrop::new(self);
        (me.ptr, me.len)
    }
}

impl std::fmt::Debug for Mapping {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Mapping({:#x}+{:#x})", self.ptr as usize, self.len)
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: we own the range; the borrow rules of Mapping stop use after drop.
        if let Err(e) = unsafe { self.io.munmap(self.ptr.cast(), self.len) } {
            tracing::warn!(addr = self.ptr as usize, len = self.len, error = %e, "munmap failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use memfd::FileSeal;

    #[test]
    fn seals_match_the_kernel_words_and_keep_unknown_bits() {
        assert_eq!(
            Seals::of(&[FileSeal::SealShrink, FileSeal::SealGrow, FileSeal::SealSeal]).bits(),
            libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_SEAL
        );
        assert_eq!(Seals::of(&[FileSeal::SealWrite]).bits(), libc::F_SEAL_WRITE);
        assert_eq!(
            Seals::of(&[FileSeal::SealFutureWrite]).bits(),
            libc::F_SEAL_FUTURE_WRITE
        );
        // F_SEAL_EXEC (0x20, Linux 6.3) has no name here: it is kept, and shown.
        let got = Seals::from_bits_retain(libc::F_SEAL_SHRINK | 0x20);
        assert_eq!(got.bits(), libc::F_SEAL_SHRINK | 0x20);
        assert!(format!("{got:?}").contains("0x20"), "{got:?}");
        assert_eq!(
            (MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING).bits(),
            libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING
        );
    }

    #[test]
    fn the_real_kernel_reports_the_seals_added() {
        let io = real();
        let fd = io
            .memfd_create("seals", MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING)
            .unwrap();
        let fd = Fd::from_raw(&io, fd);
        io.ftruncate(fd.raw(), 4096).unwrap();
        let want = Seals::SHRINK | Seals::GROW | Seals::SEAL;
        io.add_seals(fd.raw(), want).unwrap();
        assert_eq!(io.get_seals(fd.raw()).unwrap(), want);
        let e = io.add_seals(fd.raw(), Seals::WRITE).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EPERM));
    }
}
