//! `/dev/udmabuf`: the safe layer (limits from sysfs, one dma-buf per memfd range).

use std::path::Path;
use std::sync::Arc;

use crate::error::{Ctx, SysError};
use crate::flags::UdmabufFlags;
use crate::io::{Fd, KernelIo};
use crate::sys::udmabuf as sys;

/// Path of the device node.
pub const DEVICE: &str = "/dev/udmabuf";

/// The module's limits, read from `/sys/module/udmabuf/parameters`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Max bytes per dma-buf (`size_limit_mb` << 20).
    pub size_limit: u64,
    /// Max ranges per CREATE_LIST.
    pub list_limit: u32,
    /// Whether the values were read (false: kernel defaults assumed, module not loaded
    /// or parameters unreadable).
    pub from_sysfs: bool,
}

impl Limits {
    /// Reads the module parameters, falling back to the kernel defaults.
    pub fn read(io: &dyn KernelIo) -> Limits {
        let num = |p: &str| {
            io.read_to_string(Path::new(p))
                .ok()
                .and_then(|s| s.trim().parse::<u64>().ok())
        };
        let size = num(sys::SIZE_LIMIT_PATH);
        let list = num(sys::LIST_LIMIT_PATH);
        Limits {
            size_limit: size.unwrap_or(sys::DEFAULT_SIZE_LIMIT_MB) << 20,
            list_limit: list.map_or(sys::DEFAULT_LIST_LIMIT, |v| v.min(u32::MAX as u64) as u32),
            from_sysfs: size.is_some(),
        }
    }
}

/// An open `/dev/udmabuf`.
pub struct Udmabuf {
    fd: Fd,
    limits: Limits,
}

impl Udmabuf {
    /// Opens the device and reads its limits.
    pub fn open(io: &Arc<dyn KernelIo>) -> Result<Udmabuf, SysError> {
        let fd = Fd::open(io, Path::new(DEVICE))
            .ctx("open", || DEVICE.into())
            .map_err(|e| {
                let advice = match e.errno() {
                    Some(libc::ENOENT) => {
                        "load the module (`modprobe udmabuf`) or use the KFD GTT fallback"
                    }
                    Some(libc::EACCES) | Some(libc::EPERM) => {
                        "give the service user access to /dev/udmabuf (udev rule in udev/)"
                    }
                    _ => "",
                };
                e.with_advice(advice)
            })?;
        Ok(Udmabuf {
            limits: Limits::read(io.as_ref()),
            fd,
        })
    }

    /// The module's limits.
    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// One dma-buf over `memfd[offset..offset+size]`.
    pub fn create(&self, memfd: &Fd, offset: u64, size: u64) -> Result<Fd, SysError> {
        let mut a = sys::udmabuf_create {
            memfd: memfd.raw() as u32,
            flags: UdmabufFlags::CLOEXEC.bits(),
            offset,
            size,
        };
        // SAFETY: `udmabuf_create` holds no pointers.
        let r = unsafe { sys::udmabuf_create(self.fd.io().as_ref(), self.fd.raw(), &mut a) };
        let fd = r
            .ctx("UDMABUF_CREATE", || {
                format!("memfd {} range {offset:#x}+{size:#x}", memfd.raw())
            })
            .map_err(|e| self.explain(e, size))?;
        Ok(Fd::from_raw(self.fd.io(), fd))
    }

    /// One dma-buf concatenating several (memfd, offset, size) ranges.
    pub fn create_list(&self, ranges: &[(&Fd, u64, u64)]) -> Result<Fd, SysError> {
        let items: Vec<_> = ranges
            .iter()
            .map(|(fd, offset, size)| sys::udmabuf_create_item {
                memfd: fd.raw() as u32,
                __pad: 0,
                offset: *offset,
                size: *size,
            })
            .collect();
        let total = ranges.iter().map(|r| r.2).sum();
        // SAFETY: `items` is exactly the list passed as `count`.
        let r = unsafe {
            sys::udmabuf_create_list(
                self.fd.io().as_ref(),
                self.fd.raw(),
                UdmabufFlags::CLOEXEC.bits(),
                &items,
            )
        };
        let fd = r
            .ctx("UDMABUF_CREATE_LIST", || format!("{} ranges", items.len()))
            .map_err(|e| self.explain(e, total))?;
        Ok(Fd::from_raw(self.fd.io(), fd))
    }

    fn explain(&self, e: SysError, size: u64) -> SysError {
        if e.errno() != Some(libc::EINVAL) {
            return e;
        }
        if size > self.limits.size_limit {
            let mb = self.limits.size_limit >> 20;
            return e.with_advice(format!(
                "{size} bytes exceed udmabuf size_limit_mb={mb}; chunk the buffer or raise \
                 /sys/module/udmabuf/parameters/size_limit_mb"
            ));
        }
        e.with_advice("the memfd must be sealed with F_SEAL_SHRINK (not F_SEAL_WRITE) and the range page-aligned")
    }
}
