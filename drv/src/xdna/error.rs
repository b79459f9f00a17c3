//! Errors of the NPU layer. Kernel failures carry the ioctl, the errno and advice that
//! fits amdxdna (permissions, IOMMU, firmware, a busy NPU, memlock).

use std::io;
use std::time::Duration;

use super::artifact::ArtifactError;
use super::ert::{CmdState, ErtError};
use crate::error::SysError;
use crate::xclbin::XclbinError;

#[derive(Debug, thiserror::Error)]
pub enum XdnaError {
    #[error(transparent)]
    Sys(#[from] SysError),
    #[error("no amdxdna NPU: {0}")]
    NotFound(String),
    #[error("{what} needs amdxdna driver {need} or newer; this kernel's driver reports {have} ({advice})")]
    Unsupported {
        what: &'static str,
        need: String,
        have: String,
        advice: &'static str,
    },
    #[error(transparent)]
    Ert(#[from] ErtError),
    #[error(transparent)]
    Artifact(#[from] ArtifactError),
    #[error(transparent)]
    Xclbin(#[from] XclbinError),
    #[error(
        "NPU command (timeline point {seq} on context {ctx}) ended in state {state:?}{detail}"
    )]
    CommandFailed {
        ctx: u32,
        seq: u64,
        state: CmdState,
        detail: String,
    },
    #[error("NPU command (timeline point {seq} on context {ctx}) did not complete within {timeout:?}: the NPU may be hung or held by another process's long job (check dmesg for amdxdna timeouts)")]
    Timeout {
        ctx: u32,
        seq: u64,
        timeout: Duration,
    },
    #[error("{0}")]
    Memlock(String),
    /// A buffer whose descriptor (DRM format, modifier) the NPU cannot read.
    #[error(transparent)]
    Descriptor(#[from] crate::buffer::DescriptorError),
    #[error("{0}")]
    Invalid(String),
}

impl XdnaError {
    /// The errno behind a kernel failure, if any.
    pub fn errno(&self) -> Option<i32> {
        match self {
            XdnaError::Sys(e) => e.errno(),
            _ => None,
        }
    }
}

/// Advice for `op` failing with `e` on an amdxdna node (empty where the errno says it all).
pub fn advice(op: &str, e: &io::Error) -> &'static str {
    let errno = e.raw_os_error().unwrap_or(0);
    match (op, errno) {
        ("open", libc::EACCES | libc::EPERM) => {
            "the accel node is not accessible: install udev/ rules from this repo (group 'render') or add the user to the node's group"
        }
        ("open", libc::ENOENT) => {
            "no such node: the NPU needs Linux 6.14+ with CONFIG_DRM_ACCEL_AMDXDNA and the amdxdna module loaded (modprobe amdxdna); dmesg shows firmware load errors (amdnpu/17f0_10/npu.sbin)"
        }
        ("open", libc::ENODEV | libc::EOPNOTSUPP | libc::EINVAL) => {
            "the driver refused to bind this process: amdxdna needs the IOMMU with SVA/PASID; remove amd_iommu=off from the kernel command line (iommu=pt is fine)"
        }
        ("open", libc::EBUSY) => "the NPU is held exclusively by another process",
        (_, libc::ENOTTY) => "this kernel's amdxdna does not implement the ioctl: the driver is too old",
        ("DRM_IOCTL_AMDXDNA_SET_STATE", libc::EACCES | libc::EPERM) => {
            "SET_STATE is root-only (DRM_ROOT_ONLY): run as root or leave the power mode to the driver"
        }
        ("DRM_IOCTL_AMDXDNA_CREATE_HWCTX", libc::EBUSY | libc::ENOSPC | libc::EAGAIN) => {
            "no free NPU columns or contexts: another process holds the NPU (see `fuser -v /dev/accel/accel*`) or too many contexts are open (npu4: 16)"
        }
        ("DRM_IOCTL_AMDXDNA_CREATE_HWCTX", libc::ENOENT) => {
            "no device heap: the DEV_HEAP BO must exist (and be mapped) before a context"
        }
        ("DRM_IOCTL_AMDXDNA_CREATE_HWCTX", libc::EINVAL) => {
            "the partition does not fit this NPU (columns × 4 rows) or QoS was rejected"
        }
        ("DRM_IOCTL_AMDXDNA_CONFIG_HWCTX", libc::EINVAL | libc::EIO) => {
            "the firmware rejected the PDI: firmware too old for this xclbin (update linux-firmware amdnpu/) or the PDI targets another NPU generation"
        }
        ("DRM_IOCTL_AMDXDNA_CREATE_BO", libc::ENOMEM | libc::EAGAIN) => {
            "out of NPU memory: the device heap is full (at most 512 MiB) or RLIMIT_MEMLOCK is too low for pinned user memory (set LimitMEMLOCK=infinity)"
        }
        ("DRM_IOCTL_AMDXDNA_CREATE_BO", libc::EPERM) => {
            "pinning user memory is not allowed: RLIMIT_MEMLOCK is 0 and the process lacks CAP_IPC_LOCK (set LimitMEMLOCK=infinity)"
        }
        ("DRM_IOCTL_PRIME_FD_TO_HANDLE", libc::EINVAL | libc::EOPNOTSUPP) => {
            "the driver cannot import this dma-buf: amdxdna has PRIME import from Linux 6.15 on (6.14 answers EINVAL, and XdnaDevice::import_dmabuf then falls back to SHARE buffers with a copy); otherwise check dmesg"
        }
        ("DRM_IOCTL_AMDXDNA_EXEC_CMD", libc::EINVAL) => "the driver rejected the command packet",
        ("DRM_IOCTL_AMDXDNA_EXEC_CMD", libc::ENODEV | libc::EIO) => {
            "the NPU was reset or its firmware stopped responding; dmesg has the amdxdna error"
        }
        ("DRM_IOCTL_SYNCOBJ_TIMELINE_WAIT", libc::ETIME) => "the command did not finish before the deadline",
        _ => "",
    }
}

/// `SysError` for `op` on `target` with amdxdna advice.
pub(crate) fn sys(op: &'static str, target: &str, e: io::Error) -> XdnaError {
    let a = advice(op, &e);
    let err = SysError::new(op, target, e);
    XdnaError::Sys(if a.is_empty() {
        err
    } else {
        err.with_advice(a)
    })
}
