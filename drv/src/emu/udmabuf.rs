//! `/dev/udmabuf` as `drivers/dma-buf/udmabuf.c` behaves: shmem memfd only, F_SEAL_SHRINK
//! required, F_SEAL_WRITE refused, page-aligned ranges inside the file, size and list caps
//! from the module parameters.

use std::ffi::c_void;
use std::io;
use std::os::fd::RawFd;
use std::path::Path;

use super::host::{dup_fd, page_size, DmaBuf, DmaChunk};
use super::{errno, DeviceEmu, Emulator};
use crate::flags::{known_flags, UdmabufFlags};
use crate::sys::udmabuf::*;

/// The emulated `/dev/udmabuf` (stateless: dma-bufs live in the emulator's fd table).
#[derive(Default)]
pub struct UdmabufEmu;

fn param(emu: &Emulator, path: &str, default: u64) -> u64 {
    emu.file(Path::new(path))
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(default)
}

fn check_item(memfd: RawFd, offset: u64, size: u64) -> io::Result<DmaChunk> {
    let page = page_size() as u64;
    if !offset.is_multiple_of(page) || !size.is_multiple_of(page) || size == 0 {
        return Err(errno(libc::EINVAL));
    }
    // SAFETY: plain fcntl; `memfd` is the caller's (real) memfd.
    let seals = unsafe { libc::fcntl(memfd, libc::F_GET_SEALS) };
    if seals < 0 {
        // Not a memfd (or not sealable): the kernel says EINVAL.
        return Err(errno(libc::EINVAL));
    }
    // As `check_memfd_seals()` in drivers/dma-buf/udmabuf.c: SEALS_WANTED is F_SEAL_SHRINK,
    // SEALS_DENIED is F_SEAL_WRITE | F_SEAL_FUTURE_WRITE (the latter since Linux 6.13); GROW
    // and SEAL are allowed, so a memfd sealed SHRINK|GROW|SEAL still becomes a udmabuf.
    if seals & libc::F_SEAL_SHRINK == 0
        || seals & (libc::F_SEAL_WRITE | libc::F_SEAL_FUTURE_WRITE) != 0
    {
        return Err(errno(libc::EINVAL));
    }
    // SAFETY: `st` is a writable stat buffer.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    if unsafe { libc::fstat(memfd, &mut st) } < 0 {
        return Err(io::Error::last_os_error());
    }
    if offset
        .checked_add(size)
        .is_none_or(|end| end > st.st_size as u64)
    {
        return Err(errno(libc::EINVAL));
    }
    Ok(DmaChunk {
        memfd: dup_fd(memfd)?,
        offset,
        size,
    })
}

/// `udmabuf_create()` refuses `flags & ~UDMABUF_FLAGS_CLOEXEC` with EINVAL; the log line
/// names the bits it did not know.
fn check_flags(ioctl: &str, raw: u32) -> io::Result<UdmabufFlags> {
    known_flags::<UdmabufFlags>("udmabuf flags", raw).map_err(|e| {
        tracing::debug!(ioctl, error = %e, "emulated udmabuf refuses unknown flags");
        errno(libc::EINVAL)
    })
}

impl DeviceEmu for UdmabufEmu {
    fn ioctl_name(&self, request: u64) -> Option<&'static str> {
        match request {
            UDMABUF_CREATE => Some("UDMABUF_CREATE"),
            UDMABUF_CREATE_LIST => Some("UDMABUF_CREATE_LIST"),
            _ => None,
        }
    }

    unsafe fn ioctl(
        &self,
        emu: &Emulator,
        _fd: RawFd,
        request: u64,
        arg: *mut c_void,
    ) -> io::Result<i32> {
        let items: Vec<udmabuf_create_item> = match request {
            UDMABUF_CREATE => {
                // SAFETY: the caller passes a `udmabuf_create` for this request.
                let a = unsafe { *(arg as *const udmabuf_create) };
                check_flags("UDMABUF_CREATE", a.flags)?;
                vec![udmabuf_create_item {
                    memfd: a.memfd,
                    __pad: 0,
                    offset: a.offset,
                    size: a.size,
                }]
            }
            UDMABUF_CREATE_LIST => {
                // SAFETY: header of a `udmabuf_create_list`, items follow.
                let h = unsafe { *(arg as *const udmabuf_create_list) };
                let limit = param(emu, LIST_LIMIT_PATH, DEFAULT_LIST_LIMIT as u64);
                check_flags("UDMABUF_CREATE_LIST", h.flags)?;
                if h.count == 0 || h.count as u64 > limit {
                    return Err(errno(libc::EINVAL));
                }
                // SAFETY: the kernel reads `count` items right after the header.
                let first = unsafe { (arg as *const u8).add(8) as *const udmabuf_create_item };
                // SAFETY: as above.
                (0..h.count as usize)
                    .map(|i| unsafe { first.add(i).read_unaligned() })
                    .collect()
            }
            _ => return Err(errno(libc::ENOTTY)),
        };
        let limit = param(emu, SIZE_LIMIT_PATH, DEFAULT_SIZE_LIMIT_MB) << 20;
        let total: u64 = items.iter().map(|i| i.size).sum();
        if total > limit {
            return Err(errno(libc::EINVAL));
        }
        let chunks = items
            .iter()
            .map(|i| check_item(i.memfd as RawFd, i.offset, i.size))
            .collect::<io::Result<Vec<_>>>()?;
        emu.new_dmabuf(DmaBuf {
            exporter: "udmabuf",
            chunks,
        })
    }
}
