//! A [`KernelIo`] wrapper that logs every call (tinygrad's `IOCTL=1`): run a hardware
//! session with `RUST_LOG=onebit_drv::io_trace=trace` to learn the exact call sequence and
//! turn it into emulator fixtures.

use std::ffi::c_void;
use std::io;
use std::os::fd::RawFd;
use std::path::Path;
use std::sync::Arc;

use crate::io::KernelIo;

/// Logs, then forwards to the inner `KernelIo`.
pub struct TracedIo {
    inner: Arc<dyn KernelIo>,
}

/// Wraps `inner` so that every call is logged at TRACE level.
pub fn traced(inner: Arc<dyn KernelIo>) -> Arc<dyn KernelIo> {
    Arc::new(TracedIo { inner })
}

fn name(request: u64) -> String {
    crate::sys::kfd::ioctl_name(request)
        .map(str::to_owned)
        .or_else(|| match request {
            crate::sys::udmabuf::UDMABUF_CREATE => Some("UDMABUF_CREATE".into()),
            crate::sys::udmabuf::UDMABUF_CREATE_LIST => Some("UDMABUF_CREATE_LIST".into()),
            _ => None,
        })
        .unwrap_or_else(|| format!("ioctl {request:#x}"))
}

fn log<T: std::fmt::Debug>(call: &str, r: &io::Result<T>) {
    match r {
        Ok(v) => tracing::trace!(target: "onebit_drv::io_trace", "{call} = {v:?}"),
        Err(e) => tracing::trace!(target: "onebit_drv::io_trace", "{call} failed: {e}"),
    }
}

impl KernelIo for TracedIo {
    fn open(&self, path: &Path, flags: i32) -> io::Result<RawFd> {
        let r = self.inner.open(path, flags);
        log(&format!("open({}, {flags:#x})", path.display()), &r);
        r
    }

    fn close(&self, fd: RawFd) -> io::Result<()> {
        let r = self.inner.close(fd);
        log(&format!("close({fd})"), &r);
        r
    }

    unsafe fn ioctl(&self, fd: RawFd, request: u64, arg: *mut c_void) -> io::Result<i32> {
        let size = crate::sys::ioc_size(request);
        // SAFETY: the caller's contract guarantees `size` readable bytes at `arg`.
        let before = unsafe { std::slice::from_raw_parts(arg as *const u8, size) }.to_vec();
        // SAFETY: forwarded.
        let r = unsafe { self.inner.ioctl(fd, request, arg) };
        // SAFETY: as above, after the call.
        let after = unsafe { std::slice::from_raw_parts(arg as *const u8, size) };
        log(
            &format!(
                "{}(fd {fd}, in {before:02x?}, out {after:02x?})",
                name(request)
            ),
            &r,
        );
        r
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
        // SAFETY: forwarded.
        let r = unsafe { self.inner.mmap(addr, len, prot, flags, fd, offset) };
        log(
            &format!(
                "mmap({addr:p}, {len:#x}, prot {prot}, flags {flags:#x}, fd {fd}, {offset:#x})"
            ),
            &r,
        );
        r
    }

    unsafe fn munmap(&self, addr: *mut c_void, len: usize) -> io::Result<()> {
        // SAFETY: forwarded.
        let r = unsafe { self.inner.munmap(addr, len) };
        log(&format!("munmap({addr:p}, {len:#x})"), &r);
        r
    }

    fn memfd_create(&self, name: &str, flags: crate::io::MemfdFlags) -> io::Result<RawFd> {
        let r = self.inner.memfd_create(name, flags);
        log(&format!("memfd_create({name}, {flags:?})"), &r);
        r
    }

    fn ftruncate(&self, fd: RawFd, len: u64) -> io::Result<()> {
        let r = self.inner.ftruncate(fd, len);
        log(&format!("ftruncate({fd}, {len:#x})"), &r);
        r
    }

    fn add_seals(&self, fd: RawFd, seals: crate::io::Seals) -> io::Result<()> {
        let r = self.inner.add_seals(fd, seals);
        log(&format!("F_ADD_SEALS({fd}, {seals:?})"), &r);
        r
    }

    fn get_seals(&self, fd: RawFd) -> io::Result<crate::io::Seals> {
        self.inner.get_seals(fd)
    }

    fn read_to_string(&self, path: &Path) -> io::Result<String> {
        self.inner.read_to_string(path)
    }

    fn read_dir(&self, path: &Path) -> io::Result<Vec<String>> {
        self.inner.read_dir(path)
    }

    fn exists(&self, path: &Path) -> bool {
        self.inner.exists(path)
    }

    fn memlock_limit(&self) -> io::Result<(u64, u64)> {
        self.inner.memlock_limit()
    }

    fn set_memlock_soft(&self, soft: u64) -> io::Result<()> {
        self.inner.set_memlock_soft(soft)
    }

    fn kfd_process_id(&self) -> Option<usize> {
        self.inner.kfd_process_id()
    }
}

#[cfg(all(test, feature = "emulator"))]
mod tests {
    #[test]
    fn traced_io_forwards_everything() {
        let (emu, _kfd) = crate::emu::Emulator::strix_halo();
        {
            let io = super::traced(emu.io());
            let dev = crate::kfd::Device::open(&io, &Default::default()).unwrap();
            let b = crate::buffer::SharedBuffer::new(
                &io,
                "t",
                4096,
                crate::buffer::BufferDescriptor::blob(),
            )
            .unwrap();
            assert_eq!(dev.node().gfx_name(), "gfx1151");
            assert_eq!(b.chunks().len(), 1);
        }
        emu.assert_no_leaks();
    }
}
