//! The error every drv layer wraps: which kernel call failed on what, with errno and advice.

use std::io;

/// A failed syscall/ioctl, named in the kernel's spelling, with a hint for the user.
#[derive(Debug, thiserror::Error)]
#[error("{op} on {target} failed: {source}{}", fmt_advice(.advice))]
pub struct SysError {
    /// The call (`"AMDKFD_IOC_CREATE_QUEUE"`, `"open"`, `"mmap"`).
    pub op: &'static str,
    /// What it was applied to (`"/dev/kfd"`, `"memfd 'weights' offset 0x0"`).
    pub target: String,
    /// The errno.
    #[source]
    pub source: io::Error,
    /// What to do about it (may be empty).
    pub advice: String,
}

fn fmt_advice(a: &str) -> String {
    if a.is_empty() {
        String::new()
    } else {
        format!(" — {a}")
    }
}

impl SysError {
    /// Without advice.
    pub fn new(op: &'static str, target: impl Into<String>, source: io::Error) -> SysError {
        let advice = generic_advice(op, &source);
        SysError {
            op,
            target: target.into(),
            source,
            advice,
        }
    }

    /// With specific advice.
    pub fn with_advice(mut self, advice: impl Into<String>) -> SysError {
        self.advice = advice.into();
        self
    }

    /// Adds what the call was about to the target: `/dev/kfd (buffer of 4096 bytes, flags
    /// GTT | WRITABLE)`.
    pub fn in_target(mut self, detail: impl std::fmt::Display) -> SysError {
        self.target = format!("{} ({detail})", self.target);
        self
    }

    /// The errno, if it came from the kernel.
    pub fn errno(&self) -> Option<i32> {
        self.source.raw_os_error()
    }
}

fn generic_advice(op: &str, e: &io::Error) -> String {
    match (op, e.raw_os_error()) {
        ("open", Some(libc::EACCES)) | ("open", Some(libc::EPERM)) => {
            "add the user to the 'render' group (or install udev/ rules from this repo)".into()
        }
        ("open", Some(libc::ENOENT)) => "the device node does not exist on this machine".into(),
        (_, Some(libc::ENOMEM)) => {
            "out of GPU-visible memory: raise the GTT/TTM limit (ttm.pages_limit) or free buffers"
                .into()
        }
        _ => String::new(),
    }
}

/// Shorthand for mapping an `io::Result` into a `SysError`.
pub(crate) trait Ctx<T> {
    fn ctx(self, op: &'static str, target: impl FnOnce() -> String) -> Result<T, SysError>;
}

impl<T> Ctx<T> for io::Result<T> {
    fn ctx(self, op: &'static str, target: impl FnOnce() -> String) -> Result<T, SysError> {
        self.map_err(|e| SysError::new(op, target(), e))
    }
}
