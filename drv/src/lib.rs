//! Raw kernel interfaces for AMD Strix Halo: `/dev/kfd`, the amdgpu render node,
//! `/dev/accel/accel*` (amdxdna) and `/dev/udmabuf`. No math lives here.
//!
//! Every kernel call goes through [`io::KernelIo`]; `emu::Emulator` replaces the kernel in
//! tests.

pub mod buffer;
pub mod codeobj;
#[cfg(feature = "emulator")]
pub mod emu;
pub mod error;
pub mod flags;
pub mod io;
pub mod io_trace;
pub mod kfd;
pub mod sys;
pub mod topology;
pub mod xclbin;
#[cfg(feature = "emulator")]
pub mod xclbin_build;
pub mod xdna;

pub use error::SysError;

/// The host page size (4 KiB on x86-64 Linux).
pub fn page_size() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let p = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if p > 0 {
        p as u64
    } else {
        4096
    }
}
