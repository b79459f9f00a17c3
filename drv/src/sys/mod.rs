//! Raw kernel ABI: `#[repr(C)]` structs and request numbers, in the kernel's spelling so
//! they can be grepped against the uapi headers. Every struct has a compile-time size
//! assertion next to it. No behaviour lives here.

pub mod amdxdna;
pub mod hsa;
pub mod kfd;
pub mod udmabuf;

/// `_IOC` direction bits.
pub const IOC_NONE: u64 = 0;
/// `_IOC_WRITE` (userspace writes, kernel reads).
pub const IOC_WRITE: u64 = 1;
/// `_IOC_READ` (kernel writes back).
pub const IOC_READ: u64 = 2;

/// `_IOC(dir, ty, nr, size)` as on x86-64.
pub const fn ioc(dir: u64, ty: u8, nr: u8, size: usize) -> u64 {
    (dir << 30) | ((size as u64) << 16) | ((ty as u64) << 8) | nr as u64
}

/// `_IOW(ty, nr, T)`.
pub const fn iow<T>(ty: u8, nr: u8) -> u64 {
    ioc(IOC_WRITE, ty, nr, std::mem::size_of::<T>())
}

/// `_IOR(ty, nr, T)`.
pub const fn ior<T>(ty: u8, nr: u8) -> u64 {
    ioc(IOC_READ, ty, nr, std::mem::size_of::<T>())
}

/// `_IOWR(ty, nr, T)`.
pub const fn iowr<T>(ty: u8, nr: u8) -> u64 {
    ioc(IOC_READ | IOC_WRITE, ty, nr, std::mem::size_of::<T>())
}

/// `_IOC_NR(request)`.
pub const fn ioc_nr(request: u64) -> u8 {
    (request & 0xff) as u8
}

/// `_IOC_TYPE(request)`.
pub const fn ioc_type(request: u64) -> u8 {
    ((request >> 8) & 0xff) as u8
}

/// `_IOC_SIZE(request)`.
pub const fn ioc_size(request: u64) -> usize {
    ((request >> 16) & 0x3fff) as usize
}

/// One `unsafe fn` per ioctl: `name(io, fd, &mut args) -> io::Result<i32>`.
macro_rules! ioctl_fn {
    ($(#[$m:meta])* $name:ident, $req:expr, $ty:ty) => {
        $(#[$m])*
        ///
        /// # Safety
        /// Every pointer stored inside `arg` must be valid for what the kernel does with it
        /// (read or write the documented number of elements) for the duration of the call.
        pub unsafe fn $name(
            io: &dyn $crate::io::KernelIo,
            fd: std::os::fd::RawFd,
            arg: &mut $ty,
        ) -> std::io::Result<i32> {
            // SAFETY: `arg` is a live, exclusive `$ty`, the struct `$req` encodes; the
            // caller vouches for the pointers inside it.
            unsafe { io.ioctl(fd, $req, (arg as *mut $ty).cast()) }
        }
    };
}
pub(crate) use ioctl_fn;
