//! RLIMIT_MEMLOCK: amdxdna charges pinned user memory (BOs over user pages) to it, and a
//! low limit turns into ENOMEM/EPERM deep inside CREATE_BO. Check first, raise the soft
//! limit when the hard limit allows, else say exactly what to set.

use super::error::XdnaError;
use crate::io::KernelIo;

/// What to do about the limit for `needed` more locked bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Plan {
    /// The soft limit already covers it (or CAP_IPC_LOCK makes it moot).
    Enough,
    /// Raise the soft limit to this (≤ hard).
    Raise(u64),
    /// The hard limit is too low: only the administrator can fix it.
    Insufficient { soft: u64, hard: u64, needed: u64 },
}

/// Pure decision: `soft`/`hard` as getrlimit reports them (`u64::MAX` = unlimited).
pub fn plan(soft: u64, hard: u64, needed: u64, cap_ipc_lock: bool) -> Plan {
    if cap_ipc_lock || soft == u64::MAX || needed <= soft {
        Plan::Enough
    } else if hard == u64::MAX || needed <= hard {
        // Ask for everything the hard limit allows: pins add up across buffers.
        Plan::Raise(hard)
    } else {
        Plan::Insufficient { soft, hard, needed }
    }
}

/// The sentence a user needs when the hard limit is too low.
pub fn advice(soft: u64, hard: u64, needed: u64) -> String {
    let show = |v: u64| {
        if v == u64::MAX {
            "unlimited".to_string()
        } else {
            format!("{} KiB", v >> 10)
        }
    };
    format!(
        "RLIMIT_MEMLOCK is {} (hard {}) but the NPU must pin {} KiB: set LimitMEMLOCK=infinity in the [Service] section of onebitd.service (systemd), \
         or add '<user> - memlock unlimited' to /etc/security/limits.d/99-onebit.conf and log in again",
        show(soft),
        show(hard),
        needed.div_ceil(1024)
    )
}

/// `CAP_IPC_LOCK` (linux/capability.h).
const CAP_IPC_LOCK: u32 = 14;

/// Whether the process has CAP_IPC_LOCK (bit 14 of CapEff in /proc/self/status).
pub fn has_cap_ipc_lock(io: &dyn KernelIo) -> bool {
    let Ok(status) = io.read_to_string(std::path::Path::new("/proc/self/status")) else {
        return false;
    };
    status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        .is_some_and(|caps| caps & (1 << CAP_IPC_LOCK) != 0)
}

/// Makes room for `needed` locked bytes or explains why it cannot.
pub fn ensure(io: &dyn KernelIo, needed: u64) -> Result<(), XdnaError> {
    let (soft, hard) = io
        .memlock_limit()
        .map_err(|e| XdnaError::Memlock(format!("getrlimit(RLIMIT_MEMLOCK) failed: {e}")))?;
    match plan(soft, hard, needed, has_cap_ipc_lock(io)) {
        Plan::Enough => Ok(()),
        Plan::Raise(to) => {
            io.set_memlock_soft(to).map_err(|e| {
                XdnaError::Memlock(format!(
                    "setrlimit(RLIMIT_MEMLOCK, soft = {to}) failed: {e}; {}",
                    advice(soft, hard, needed)
                ))
            })?;
            tracing::info!(
                from = soft,
                to,
                "raised RLIMIT_MEMLOCK soft limit for NPU pinning"
            );
            Ok(())
        }
        Plan::Insufficient { soft, hard, needed } => {
            Err(XdnaError::Memlock(advice(soft, hard, needed)))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plans() {
        let m = u64::MAX;
        assert_eq!(plan(8 << 20, 8 << 20, 4 << 20, false), Plan::Enough);
        assert_eq!(plan(8 << 20, m, 1 << 30, false), Plan::Raise(m));
        assert_eq!(plan(8 << 20, 2 << 30, 1 << 30, false), Plan::Raise(2 << 30));
        assert_eq!(
            plan(8 << 20, 8 << 20, 1 << 30, false),
            Plan::Insufficient {
                soft: 8 << 20,
                hard: 8 << 20,
                needed: 1 << 30
            }
        );
        assert_eq!(plan(0, 0, 1 << 30, true), Plan::Enough);
        assert_eq!(plan(m, m, 1 << 40, false), Plan::Enough);
        let a = advice(8 << 20, 8 << 20, 1 << 30);
        assert!(
            a.contains("LimitMEMLOCK=infinity")
                && a.contains("8192 KiB")
                && a.contains("1048576 KiB"),
            "{a}"
        );
    }
}
