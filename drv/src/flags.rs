//! Typed flag words: every bit word that crosses an ioctl (or that the command processor
//! reads from a queue descriptor) as a `bitflags` type. `sys` keeps the kernel's raw
//! integers and `#[repr(C)]` structs; the safe layers build these types and call `.bits()`
//! at the struct boundary.
//!
//! Words read back from the kernel (or from memory it wrote) are wrapped with
//! `from_bits_retain`: bits this build has no name for are kept, and [`Display`] and
//! [`FlagError`] show them in hex instead of dropping them.
//!
//! Not here, because they are values rather than bit words: the KFD queue type
//! (`KFD_IOC_QUEUE_TYPE_*`, an enum in `kfd_ioctl.h`), the KFD event type
//! (`KFD_IOC_EVENT_*`, see `kfd::events::EventKind`), the amdxdna BO type
//! (`enum amdxdna_bo_type`, see `xdna::XdnaBoType`), and the AQL header's packet type and
//! fence scopes (multi-bit fields, see `kfd::aql::AqlHeader`). amdxdna's `create_bo.flags`
//! is documented "MBZ" in `amdxdna_accel.h`: it has no bits to name.

use std::fmt;

use bitflags::{Bits as _, Flags};

use crate::sys::{amdxdna, hsa, kfd, udmabuf};

bitflags::bitflags! {
    /// `KFD_IOC_ALLOC_MEM_FLAGS_*` (`kfd_ioctl_alloc_memory_of_gpu_args.flags`): one domain
    /// bit (VRAM, GTT, USERPTR, DOORBELL, MMIO_REMAP) plus attribute bits.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
    pub struct KfdAllocFlags: u32 {
        const VRAM = kfd::KFD_IOC_ALLOC_MEM_FLAGS_VRAM;
        const GTT = kfd::KFD_IOC_ALLOC_MEM_FLAGS_GTT;
        const USERPTR = kfd::KFD_IOC_ALLOC_MEM_FLAGS_USERPTR;
        const DOORBELL = kfd::KFD_IOC_ALLOC_MEM_FLAGS_DOORBELL;
        const MMIO_REMAP = kfd::KFD_IOC_ALLOC_MEM_FLAGS_MMIO_REMAP;
        const WRITABLE = kfd::KFD_IOC_ALLOC_MEM_FLAGS_WRITABLE;
        const EXECUTABLE = kfd::KFD_IOC_ALLOC_MEM_FLAGS_EXECUTABLE;
        const PUBLIC = kfd::KFD_IOC_ALLOC_MEM_FLAGS_PUBLIC;
        const NO_SUBSTITUTE = kfd::KFD_IOC_ALLOC_MEM_FLAGS_NO_SUBSTITUTE;
        const AQL_QUEUE_MEM = kfd::KFD_IOC_ALLOC_MEM_FLAGS_AQL_QUEUE_MEM;
        const COHERENT = kfd::KFD_IOC_ALLOC_MEM_FLAGS_COHERENT;
        const UNCACHED = kfd::KFD_IOC_ALLOC_MEM_FLAGS_UNCACHED;
        const EXT_COHERENT = kfd::KFD_IOC_ALLOC_MEM_FLAGS_EXT_COHERENT;
        const CONTIGUOUS = kfd::KFD_IOC_ALLOC_MEM_FLAGS_CONTIGUOUS;
    }
}

impl KfdAllocFlags {
    /// The memory-domain bits; the kernel wants exactly one of them.
    pub const DOMAINS: KfdAllocFlags = KfdAllocFlags::VRAM
        .union(KfdAllocFlags::GTT)
        .union(KfdAllocFlags::USERPTR)
        .union(KfdAllocFlags::DOORBELL)
        .union(KfdAllocFlags::MMIO_REMAP);

    /// The domain part of the word (for `match`: exactly one bit in a valid word).
    pub fn domain(self) -> KfdAllocFlags {
        self & Self::DOMAINS
    }
}

bitflags::bitflags! {
    /// `kfd_ioctl_runtime_enable_args.mode_mask`.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
    pub struct KfdRuntimeMode: u32 {
        /// Enable the runtime (without it RUNTIME_ENABLE disables).
        const ENABLE = kfd::KFD_RUNTIME_ENABLE_MODE_ENABLE_MASK;
        /// Let the trap handler save TTMP registers.
        const TTMP_SAVE = kfd::KFD_RUNTIME_ENABLE_MODE_TTMP_SAVE_MASK;
    }
}

bitflags::bitflags! {
    /// `amd_queue_t.queue_properties` (`amd_queue_properties_t`): read by the command
    /// processor from the queue descriptor KFD was given at CREATE_QUEUE.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
    pub struct AmdQueueProperties: u32 {
        const ENABLE_TRAP_HANDLER = hsa::AMD_QUEUE_PROPERTIES_ENABLE_TRAP_HANDLER;
        const IS_PTR64 = hsa::AMD_QUEUE_PROPERTIES_IS_PTR64;
        const ENABLE_PROFILING = hsa::AMD_QUEUE_PROPERTIES_ENABLE_PROFILING;
    }
}

bitflags::bitflags! {
    /// `udmabuf_create.flags` / `udmabuf_create_list.flags`; `udmabuf_create()` in
    /// `drivers/dma-buf/udmabuf.c` answers EINVAL to any other bit.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
    pub struct UdmabufFlags: u32 {
        const CLOEXEC = udmabuf::UDMABUF_FLAGS_CLOEXEC;
    }
}

bitflags::bitflags! {
    /// Flags of a new dma-buf fd: `drm_prime_handle.flags` (PRIME_HANDLE_TO_FD, which
    /// refuses anything but `DRM_CLOEXEC | DRM_RDWR`) and `kfd_ioctl_export_dmabuf_args.flags`
    /// (passed straight to `dma_buf_fd`). `DRM_CLOEXEC`/`DRM_RDWR` are `O_CLOEXEC`/`O_RDWR`.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
    pub struct DmabufFdFlags: u32 {
        const CLOEXEC = amdxdna::DRM_CLOEXEC;
        const RDWR = amdxdna::DRM_RDWR;
    }
}

bitflags::bitflags! {
    /// `DRM_SYNCOBJ_WAIT_FLAGS_*` (`drm_syncobj_timeline_wait.flags`).
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
    pub struct SyncobjWaitFlags: u32 {
        const WAIT_ALL = amdxdna::DRM_SYNCOBJ_WAIT_FLAGS_WAIT_ALL;
        const WAIT_FOR_SUBMIT = amdxdna::DRM_SYNCOBJ_WAIT_FLAGS_WAIT_FOR_SUBMIT;
        const WAIT_AVAILABLE = amdxdna::DRM_SYNCOBJ_WAIT_FLAGS_WAIT_AVAILABLE;
        const WAIT_DEADLINE = amdxdna::DRM_SYNCOBJ_WAIT_FLAGS_WAIT_DEADLINE;
    }
}

/// The named flags joined by `|`, then any bits without a name in hex ("GTT | 0x400000");
/// "0" for an empty word.
fn write_flags<F>(f: &mut fmt::Formatter<'_>, flags: &F) -> fmt::Result
where
    F: Flags,
    F::Bits: bitflags::parser::WriteHex,
{
    if flags.is_empty() {
        return f.write_str("0");
    }
    let mut s = String::new();
    bitflags::parser::to_writer(flags, &mut s)?;
    f.write_str(&s)
}

macro_rules! display_flags {
    ($($t:ty),*) => {$(
        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write_flags(f, self)
            }
        }
    )*};
}
display_flags!(
    KfdAllocFlags,
    KfdRuntimeMode,
    AmdQueueProperties,
    UdmabufFlags,
    DmabufFdFlags,
    SyncobjWaitFlags
);

/// A flag word carried bits this build has no name for.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{word} {raw:#x} carries bits {unknown:#x} that onebit does not know (it knows {known}); \
     the kernel or firmware is newer than this build: update onebit, or report the value"
)]
pub struct FlagError {
    /// Which word (`"KFD alloc flags"`).
    pub word: &'static str,
    /// The whole word as read.
    pub raw: u64,
    /// The bits without a name.
    pub unknown: u64,
    /// The names this build knows, for the message.
    pub known: String,
}

/// Wraps a raw word (read back from the kernel, or received by the emulated kernel, which
/// refuses what the real one refuses), keeping every bit, and refuses it when it holds bits
/// without a name (the error shows them). Callers that can live with unknown bits use
/// `F::from_bits_retain` directly.
pub fn known_flags<F>(word: &'static str, raw: F::Bits) -> Result<F, FlagError>
where
    F: Flags + fmt::Display,
    F::Bits: Into<u64>,
{
    let flags = F::from_bits_retain(raw);
    let unknown = flags.bits() & !F::all().bits();
    if unknown == F::Bits::EMPTY {
        return Ok(flags);
    }
    Err(FlagError {
        word,
        raw: raw.into(),
        unknown: unknown.into(),
        known: F::all().to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each named flag's bits equal the sys constant it stands for (and its name is the
    /// constant's suffix), so the typed word and the uapi header cannot drift apart.
    fn same_bits<F: Flags<Bits = u32>>(table: &[(&str, u32)]) {
        let named: Vec<(&str, u32)> = F::FLAGS
            .iter()
            .map(|f| (f.name(), f.value().bits()))
            .collect();
        assert_eq!(named, table, "{}", std::any::type_name::<F>());
    }

    #[test]
    fn each_flag_is_its_sys_constant() {
        use crate::sys::amdxdna as x;
        use crate::sys::hsa as h;
        use crate::sys::kfd as k;
        same_bits::<KfdAllocFlags>(&[
            ("VRAM", k::KFD_IOC_ALLOC_MEM_FLAGS_VRAM),
            ("GTT", k::KFD_IOC_ALLOC_MEM_FLAGS_GTT),
            ("USERPTR", k::KFD_IOC_ALLOC_MEM_FLAGS_USERPTR),
            ("DOORBELL", k::KFD_IOC_ALLOC_MEM_FLAGS_DOORBELL),
            ("MMIO_REMAP", k::KFD_IOC_ALLOC_MEM_FLAGS_MMIO_REMAP),
            ("WRITABLE", k::KFD_IOC_ALLOC_MEM_FLAGS_WRITABLE),
            ("EXECUTABLE", k::KFD_IOC_ALLOC_MEM_FLAGS_EXECUTABLE),
            ("PUBLIC", k::KFD_IOC_ALLOC_MEM_FLAGS_PUBLIC),
            ("NO_SUBSTITUTE", k::KFD_IOC_ALLOC_MEM_FLAGS_NO_SUBSTITUTE),
            ("AQL_QUEUE_MEM", k::KFD_IOC_ALLOC_MEM_FLAGS_AQL_QUEUE_MEM),
            ("COHERENT", k::KFD_IOC_ALLOC_MEM_FLAGS_COHERENT),
            ("UNCACHED", k::KFD_IOC_ALLOC_MEM_FLAGS_UNCACHED),
            ("EXT_COHERENT", k::KFD_IOC_ALLOC_MEM_FLAGS_EXT_COHERENT),
            ("CONTIGUOUS", k::KFD_IOC_ALLOC_MEM_FLAGS_CONTIGUOUS),
        ]);
        same_bits::<KfdRuntimeMode>(&[
            ("ENABLE", k::KFD_RUNTIME_ENABLE_MODE_ENABLE_MASK),
            ("TTMP_SAVE", k::KFD_RUNTIME_ENABLE_MODE_TTMP_SAVE_MASK),
        ]);
        same_bits::<AmdQueueProperties>(&[
            (
                "ENABLE_TRAP_HANDLER",
                h::AMD_QUEUE_PROPERTIES_ENABLE_TRAP_HANDLER,
            ),
            ("IS_PTR64", h::AMD_QUEUE_PROPERTIES_IS_PTR64),
            ("ENABLE_PROFILING", h::AMD_QUEUE_PROPERTIES_ENABLE_PROFILING),
        ]);
        same_bits::<UdmabufFlags>(&[("CLOEXEC", crate::sys::udmabuf::UDMABUF_FLAGS_CLOEXEC)]);
        same_bits::<DmabufFdFlags>(&[
            ("CLOEXEC", libc::O_CLOEXEC as u32),
            ("RDWR", libc::O_RDWR as u32),
        ]);
        same_bits::<SyncobjWaitFlags>(&[
            ("WAIT_ALL", x::DRM_SYNCOBJ_WAIT_FLAGS_WAIT_ALL),
            ("WAIT_FOR_SUBMIT", x::DRM_SYNCOBJ_WAIT_FLAGS_WAIT_FOR_SUBMIT),
            ("WAIT_AVAILABLE", x::DRM_SYNCOBJ_WAIT_FLAGS_WAIT_AVAILABLE),
            ("WAIT_DEADLINE", x::DRM_SYNCOBJ_WAIT_FLAGS_WAIT_DEADLINE),
        ]);
    }

    /// raw → typed → raw is the identity for every 32-bit pattern class: no flag, each
    /// single bit (named or not), all bits.
    fn round_trips<F: Flags<Bits = u32>>() {
        let mut words = vec![0u32, u32::MAX, F::all().bits(), !F::all().bits()];
        words.extend((0..32).map(|b| 1u32 << b));
        words.extend(F::FLAGS.iter().map(|f| f.value().bits() | 1 << 21));
        for raw in words {
            assert_eq!(
                F::from_bits_retain(raw).bits(),
                raw,
                "{} {raw:#x}",
                std::any::type_name::<F>()
            );
        }
    }

    #[test]
    fn raw_typed_raw_is_identity_including_unknown_bits() {
        round_trips::<KfdAllocFlags>();
        round_trips::<KfdRuntimeMode>();
        round_trips::<AmdQueueProperties>();
        round_trips::<UdmabufFlags>();
        round_trips::<DmabufFdFlags>();
        round_trips::<SyncobjWaitFlags>();
    }

    #[test]
    fn unknown_bits_are_shown_not_dropped() {
        // Bit 22 is KFD_IOC_ALLOC_MEM_FLAGS_USERPTR_BATCH in a proposed uapi; this build
        // has no name for it.
        let raw =
            kfd::KFD_IOC_ALLOC_MEM_FLAGS_GTT | kfd::KFD_IOC_ALLOC_MEM_FLAGS_WRITABLE | 1 << 22;
        let f = KfdAllocFlags::from_bits_retain(raw);
        assert_eq!(f.to_string(), "GTT | WRITABLE | 0x400000");
        assert_eq!(f.domain(), KfdAllocFlags::GTT);
        let e = known_flags::<KfdAllocFlags>("KFD alloc flags", raw).unwrap_err();
        assert_eq!(e.raw, raw as u64);
        assert_eq!(e.unknown, 1 << 22);
        let msg = e.to_string();
        assert!(
            msg.contains("0x400000") && msg.contains("KFD alloc flags"),
            "{msg}"
        );
        assert_eq!(
            known_flags::<UdmabufFlags>("udmabuf flags", 1).unwrap(),
            UdmabufFlags::CLOEXEC
        );
        assert_eq!(UdmabufFlags::empty().to_string(), "0");
        assert_eq!(
            (SyncobjWaitFlags::WAIT_ALL | SyncobjWaitFlags::WAIT_FOR_SUBMIT).to_string(),
            "WAIT_ALL | WAIT_FOR_SUBMIT"
        );
    }
}
