//! What the emulated CP knows about caches: the emulator shares one memory between the host
//! and the "GPU", so without these rules it would answer programs that on hardware read
//! stale data. The rules follow the HSA packet header's acquire/release fence scopes as the
//! CP applies them on gfx11 (HSA Platform System Architecture spec, "Memory model";
//! LLVM AMDGPUUsage, "Memory Model GFX11"):
//! - an acquire at agent scope invalidates the scalar cache (K$) and the GL0/GL1 vector
//!   caches; at system scope it also invalidates non-coherent L2 lines, so host writes
//!   become visible; acquire `None` invalidates nothing;
//! - a release at system scope writes L2 back so the host sees the kernel's writes; at agent
//!   scope the writes may stay in L2.
//!
//! The emulator cannot watch host stores, so it reasons per queue from the packet stream:
//! the host may have written new inputs at the start and after every completion signal it
//! could have seen, and it reads results at every completion signal.

use crate::sys::hsa::*;

/// Per-queue cache state the rules need.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Coherence {
    /// The host may have written memory that no system-scope acquire has yet made visible
    /// (true before a queue's first packet and after each completion signal).
    host_writes_pending: bool,
    /// A kernel ran and no acquire of at least agent scope has followed it: its outputs may
    /// be stale in the scalar cache.
    kernel_writes_unacquired: bool,
    /// A kernel ran and no system-scope release has followed it.
    kernel_writes_unreleased: bool,
}

/// Fence scopes of a packet header.
fn scopes(header: u16) -> (u16, u16) {
    (
        (header >> HSA_PACKET_HEADER_SCACQUIRE_FENCE_SCOPE) & 3,
        (header >> HSA_PACKET_HEADER_SCRELEASE_FENCE_SCOPE) & 3,
    )
}

fn scope_name(s: u16) -> &'static str {
    match s {
        HSA_FENCE_SCOPE_NONE => "none",
        HSA_FENCE_SCOPE_AGENT => "agent",
        HSA_FENCE_SCOPE_SYSTEM => "system",
        _ => "reserved",
    }
}

impl Coherence {
    /// A fresh queue: whatever the host wrote before is not yet acquired.
    pub(crate) fn new() -> Coherence {
        Coherence {
            host_writes_pending: true,
            ..Coherence::default()
        }
    }

    /// The packet's acquire fence, before it runs. `kernel` is whether it is a dispatch
    /// (whose scalar loads read K$).
    pub(crate) fn acquire(&mut self, index: u64, header: u16, kernel: bool) -> Result<(), String> {
        let (acq, _) = scopes(header);
        if acq == HSA_FENCE_SCOPE_SYSTEM {
            self.host_writes_pending = false;
        }
        if acq >= HSA_FENCE_SCOPE_AGENT {
            self.kernel_writes_unacquired = false;
        }
        if !kernel {
            return Ok(());
        }
        if self.host_writes_pending {
            return Err(format!(
                "packet {index}: dispatch with acquire scope {} after host writes that no \
                 system-scope acquire has made visible (the queue's first packet, or the first \
                 after a completion signal): on the GPU it could read stale L2 lines; acquire at \
                 system scope (FenceScope::System)",
                scope_name(acq)
            ));
        }
        if self.kernel_writes_unacquired {
            return Err(format!(
                "packet {index}: dispatch with acquire scope none after another kernel: its \
                 scalar loads would read the scalar cache, stale for the previous dispatch's \
                 outputs; acquire at agent scope at least"
            ));
        }
        Ok(())
    }

    /// A kernel ran.
    pub(crate) fn kernel_ran(&mut self) {
        self.kernel_writes_unacquired = true;
        self.kernel_writes_unreleased = true;
    }

    /// The packet's release fence, after it ran; `signal` is whether the CP then decrements
    /// a completion signal (which the host may wait on and then read results).
    pub(crate) fn release(&mut self, index: u64, header: u16, signal: bool) -> Result<(), String> {
        let (_, rel) = scopes(header);
        if rel == HSA_FENCE_SCOPE_SYSTEM {
            self.kernel_writes_unreleased = false;
        }
        if !signal {
            return Ok(());
        }
        if self.kernel_writes_unreleased {
            return Err(format!(
                "packet {index}: completion signal after a release at scope {}: the host could \
                 see the signal before the kernels' writes leave the GPU's L2; release at \
                 system scope on a packet that signals the host",
                scope_name(rel)
            ));
        }
        self.host_writes_pending = true;
        Ok(())
    }
}

/// LDS the kernel descriptor at `kd` (its first u32, `group_segment_fixed_size`) says the
/// kernel uses, against what the packet allocates. The CP sizes LDS from the packet, not
/// from the descriptor (AMDGPUUsage: COMPUTE_PGM_RSRC2.GRANULATED_LDS_SIZE "must be 0, CP
/// uses the rounded value from the dispatch packet"), so a smaller packet value leaves the
/// kernel's LDS accesses out of range.
pub(crate) fn check_group_segment(index: u64, kd_fixed: u32, packet: u32) -> Result<(), String> {
    if packet < kd_fixed {
        return Err(format!(
            "packet {index}: group_segment_size {packet} is smaller than the {kd_fixed} bytes of \
             LDS the kernel descriptor declares; the CP allocates what the packet says, so pass \
             the code object's group_segment_fixed_size (plus any dynamic LDS)"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hdr(acq: u16, rel: u16) -> u16 {
        (HSA_PACKET_TYPE_KERNEL_DISPATCH << HSA_PACKET_HEADER_TYPE)
            | (acq << HSA_PACKET_HEADER_SCACQUIRE_FENCE_SCOPE)
            | (rel << HSA_PACKET_HEADER_SCRELEASE_FENCE_SCOPE)
    }
    const N: u16 = HSA_FENCE_SCOPE_NONE;
    const A: u16 = HSA_FENCE_SCOPE_AGENT;
    const S: u16 = HSA_FENCE_SCOPE_SYSTEM;

    /// Runs packets (acquire, release, signals) through the rules; the first refusal.
    fn stream(packets: &[(u16, u16, bool)]) -> Result<(), String> {
        let mut c = Coherence::new();
        for (i, &(acq, rel, sig)) in packets.iter().enumerate() {
            c.acquire(i as u64, hdr(acq, rel), true)?;
            c.kernel_ran();
            c.release(i as u64, hdr(acq, rel), sig)?;
        }
        Ok(())
    }

    #[test]
    fn a_chain_acquiring_and_releasing_at_system_scope_at_its_ends_passes() {
        stream(&[(S, A, false), (A, A, false), (A, S, true), (S, S, true)]).unwrap();
    }

    #[test]
    fn host_writes_need_a_system_acquire() {
        assert!(stream(&[(A, S, true)]).unwrap_err().contains("stale L2"));
        // after the host saw a completion it may have written new inputs
        assert!(stream(&[(S, S, true), (A, S, true)])
            .unwrap_err()
            .contains("packet 1"));
    }

    #[test]
    fn acquire_none_after_a_kernel_is_refused() {
        let e = stream(&[(S, A, false), (N, S, true)]).unwrap_err();
        assert!(e.contains("scalar cache"), "{e}");
    }

    #[test]
    fn a_signal_after_an_agent_release_is_refused() {
        let e = stream(&[(S, A, false), (A, A, true)]).unwrap_err();
        assert!(e.contains("release at system scope"), "{e}");
    }

    #[test]
    fn a_barrier_packet_can_carry_the_fences() {
        let mut c = Coherence::new();
        c.acquire(0, hdr(S, N), false).unwrap();
        c.acquire(1, hdr(A, A), true).unwrap();
        c.kernel_ran();
        c.release(1, hdr(A, A), false).unwrap();
        c.acquire(2, hdr(A, S), false).unwrap();
        c.release(2, hdr(A, S), true).unwrap();
    }

    #[test]
    fn lds_smaller_than_the_descriptor_is_refused() {
        check_group_segment(0, 2052, 2052).unwrap();
        check_group_segment(0, 0, 0).unwrap();
        assert!(check_group_segment(3, 2052, 0)
            .unwrap_err()
            .contains("2052 bytes"));
    }
}
