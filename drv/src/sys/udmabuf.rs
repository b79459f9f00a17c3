//! `include/uapi/linux/udmabuf.h`: turn memfd ranges into a dma-buf.

use super::iow;

/// `UDMABUF_FLAGS_CLOEXEC`: the returned dma-buf fd is close-on-exec.
pub const UDMABUF_FLAGS_CLOEXEC: u32 = 0x01;

/// `struct udmabuf_create`.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct udmabuf_create {
    pub memfd: u32,
    pub flags: u32,
    pub offset: u64,
    pub size: u64,
}
const _: () = assert!(std::mem::size_of::<udmabuf_create>() == 24);

/// `struct udmabuf_create_item`.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct udmabuf_create_item {
    pub memfd: u32,
    pub __pad: u32,
    pub offset: u64,
    pub size: u64,
}
const _: () = assert!(std::mem::size_of::<udmabuf_create_item>() == 24);

/// `struct udmabuf_create_list` header; `count` items follow it in memory.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct udmabuf_create_list {
    pub flags: u32,
    pub count: u32,
}
const _: () = assert!(std::mem::size_of::<udmabuf_create_list>() == 8);

/// `UDMABUF_CREATE` = `_IOW('u', 0x42, struct udmabuf_create)`; returns the dma-buf fd.
pub const UDMABUF_CREATE: u64 = iow::<udmabuf_create>(b'u', 0x42);
/// `UDMABUF_CREATE_LIST` = `_IOW('u', 0x43, struct udmabuf_create_list)`.
pub const UDMABUF_CREATE_LIST: u64 = iow::<udmabuf_create_list>(b'u', 0x43);
const _: () = assert!(UDMABUF_CREATE == 0x4018_7542);
const _: () = assert!(UDMABUF_CREATE_LIST == 0x4008_7543);

/// `/sys/module/udmabuf/parameters/size_limit_mb`: max MiB per dma-buf (default 64).
pub const SIZE_LIMIT_PATH: &str = "/sys/module/udmabuf/parameters/size_limit_mb";
/// `/sys/module/udmabuf/parameters/list_limit`: max items per CREATE_LIST (default 1024).
pub const LIST_LIMIT_PATH: &str = "/sys/module/udmabuf/parameters/list_limit";
/// Kernel default for `size_limit_mb`.
pub const DEFAULT_SIZE_LIMIT_MB: u64 = 64;
/// Kernel default for `list_limit`.
pub const DEFAULT_LIST_LIMIT: u32 = 1024;

super::ioctl_fn!(
    /// `UDMABUF_CREATE` on `/dev/udmabuf`; returns the new dma-buf fd. The kernel keeps a
    /// reference to the memfd's pages (pinned on current kernels) until the dma-buf dies.
    udmabuf_create,
    UDMABUF_CREATE,
    udmabuf_create
);

/// `UDMABUF_CREATE_LIST` on `/dev/udmabuf`; returns the new dma-buf fd.
///
/// # Safety
/// `items` must be exactly `hdr.count` long; the kernel reads them right after the header,
/// which this function lays out in one contiguous buffer.
pub unsafe fn udmabuf_create_list(
    io: &dyn crate::io::KernelIo,
    fd: std::os::fd::RawFd,
    flags: u32,
    items: &[udmabuf_create_item],
) -> std::io::Result<i32> {
    let words = 1 + items.len() * 3;
    let mut buf = vec![0u64; words];
    let hdr = udmabuf_create_list {
        flags,
        count: items.len() as u32,
    };
    // SAFETY: `buf` has room for the 8-byte header plus `items.len()` 24-byte items, and
    // u64 alignment satisfies both structs.
    unsafe {
        let p = buf.as_mut_ptr().cast::<u8>();
        std::ptr::write(p.cast::<udmabuf_create_list>(), hdr);
        std::ptr::copy_nonoverlapping(items.as_ptr(), p.add(8).cast(), items.len());
        io.ioctl(fd, UDMABUF_CREATE_LIST, p.cast())
    }
}
