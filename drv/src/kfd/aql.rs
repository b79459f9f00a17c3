//! AQL packets, built by pure functions (reference §3.1–3.2). Building is safe; only
//! publishing into a ring is not.

use super::KfdError;
use crate::sys::hsa::*;

/// Memory fence scope of a packet's acquire or release.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FenceScope {
    /// No fence.
    None,
    /// This GPU's caches.
    Agent,
    /// Whole system: write back / invalidate GPU L2 so the CPU and NPU see the data.
    #[default]
    System,
}

impl FenceScope {
    /// The 2-bit `hsa_fence_scope_t` value.
    pub const fn bits(self) -> u16 {
        match self {
            FenceScope::None => HSA_FENCE_SCOPE_NONE,
            FenceScope::Agent => HSA_FENCE_SCOPE_AGENT,
            FenceScope::System => HSA_FENCE_SCOPE_SYSTEM,
        }
    }

    /// The scope a 2-bit field names; `Err(value)` for the reserved value 3.
    pub const fn from_bits(v: u16) -> Result<FenceScope, u16> {
        match v {
            HSA_FENCE_SCOPE_NONE => Ok(FenceScope::None),
            HSA_FENCE_SCOPE_AGENT => Ok(FenceScope::Agent),
            HSA_FENCE_SCOPE_SYSTEM => Ok(FenceScope::System),
            other => Err(other),
        }
    }
}

/// Width mask of a fence-scope field.
const SCOPE_MASK: u16 = 0b11;
/// Bits 0..8: the packet type.
const TYPE_MASK: u16 = 0xff;
/// The bits `hsa.h` names (type, barrier, both scopes); bits 13..16 are reserved.
const KNOWN_BITS: u16 = TYPE_MASK
    | 1 << HSA_PACKET_HEADER_BARRIER
    | SCOPE_MASK << HSA_PACKET_HEADER_SCACQUIRE_FENCE_SCOPE
    | SCOPE_MASK << HSA_PACKET_HEADER_SCRELEASE_FENCE_SCOPE;

/// The AQL packet header (u16 at offset 0 of every packet): packet type (bits 0..8),
/// barrier (bit 8), acquire fence scope (bits 9..11), release fence scope (bits 11..13).
/// The scopes are 2-bit fields, not flags, so this is a typed builder with field
/// accessors rather than a `bitflags` word. A header read back from a ring keeps every
/// bit ([`AqlHeader::from_bits_retain`]); the accessors report reserved values instead of
/// hiding them.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct AqlHeader(u16);

impl AqlHeader {
    /// A header of `packet_type` (`HSA_PACKET_TYPE_*`), no barrier, both scopes None.
    pub const fn new(packet_type: u16) -> AqlHeader {
        AqlHeader((packet_type & TYPE_MASK) << HSA_PACKET_HEADER_TYPE)
    }

    /// Wraps a header as read from memory, keeping bits this build has no name for.
    pub const fn from_bits_retain(bits: u16) -> AqlHeader {
        AqlHeader(bits)
    }

    /// The u16 the CP reads.
    pub const fn bits(self) -> u16 {
        self.0
    }

    /// Sets or clears the barrier bit (wait for all earlier packets of the queue).
    pub const fn with_barrier(self, on: bool) -> AqlHeader {
        let bit = 1 << HSA_PACKET_HEADER_BARRIER;
        AqlHeader(if on { self.0 | bit } else { self.0 & !bit })
    }

    /// Sets the acquire fence scope.
    pub const fn with_acquire(self, s: FenceScope) -> AqlHeader {
        self.with_field(HSA_PACKET_HEADER_SCACQUIRE_FENCE_SCOPE, s)
    }

    /// Sets the release fence scope.
    pub const fn with_release(self, s: FenceScope) -> AqlHeader {
        self.with_field(HSA_PACKET_HEADER_SCRELEASE_FENCE_SCOPE, s)
    }

    const fn with_field(self, shift: u16, s: FenceScope) -> AqlHeader {
        AqlHeader((self.0 & !(SCOPE_MASK << shift)) | s.bits() << shift)
    }

    /// `HSA_PACKET_TYPE_*` (bits 0..8).
    pub const fn packet_type(self) -> u16 {
        (self.0 >> HSA_PACKET_HEADER_TYPE) & TYPE_MASK
    }

    /// Whether the barrier bit is set.
    pub const fn barrier(self) -> bool {
        self.0 & 1 << HSA_PACKET_HEADER_BARRIER != 0
    }

    /// The acquire scope; `Err(3)` for the reserved value.
    pub const fn acquire(self) -> Result<FenceScope, u16> {
        FenceScope::from_bits((self.0 >> HSA_PACKET_HEADER_SCACQUIRE_FENCE_SCOPE) & SCOPE_MASK)
    }

    /// The release scope; `Err(3)` for the reserved value.
    pub const fn release(self) -> Result<FenceScope, u16> {
        FenceScope::from_bits((self.0 >> HSA_PACKET_HEADER_SCRELEASE_FENCE_SCOPE) & SCOPE_MASK)
    }

    /// Bits outside every named field (bits 13..16, reserved in `hsa.h`).
    pub const fn unknown_bits(self) -> u16 {
        self.0 & !KNOWN_BITS
    }
}

impl std::fmt::Debug for AqlHeader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut d = f.debug_struct("AqlHeader");
        d.field("type", &self.packet_type())
            .field("barrier", &self.barrier());
        match self.acquire() {
            Ok(s) => d.field("acquire", &s),
            Err(v) => d.field("acquire", &format_args!("reserved({v})")),
        };
        match self.release() {
            Ok(s) => d.field("release", &s),
            Err(v) => d.field("release", &format_args!("reserved({v})")),
        };
        if self.unknown_bits() != 0 {
            d.field("unknown", &format_args!("{:#06x}", self.unknown_bits()));
        }
        d.finish()
    }
}

/// The packet header (u16 at offset 0).
pub fn header(packet_type: u16, barrier: bool, acquire: FenceScope, release: FenceScope) -> u16 {
    AqlHeader::new(packet_type)
        .with_barrier(barrier)
        .with_acquire(acquire)
        .with_release(release)
        .bits()
}

/// One kernel launch. Addresses are GPU VAs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DispatchArgs {
    /// VA of the 64-byte kernel descriptor (`<name>.kd`).
    pub kernel_object: u64,
    /// VA of the kernarg segment (16-byte aligned; must live until completion).
    pub kernarg_address: u64,
    /// Work-items per dimension (not work-groups); unused dimensions 1.
    pub grid: [u32; 3],
    /// Work-group size per dimension; unused dimensions 1.
    pub workgroup: [u16; 3],
    /// LDS bytes (static + dynamic).
    pub group_segment_size: u32,
    /// Scratch bytes per work-item.
    pub private_segment_size: u32,
    /// Acquire scope (System: see CPU/NPU writes made before the dispatch).
    pub acquire: FenceScope,
    /// Release scope (System: results visible to the CPU/NPU at completion).
    pub release: FenceScope,
    /// Wait for all earlier packets of the queue before starting.
    pub barrier: bool,
}

impl DispatchArgs {
    /// A 1-D launch with system-scope fences and the barrier bit set.
    pub fn linear(
        kernel_object: u64,
        kernarg_address: u64,
        items: u32,
        workgroup: u16,
    ) -> DispatchArgs {
        DispatchArgs {
            kernel_object,
            kernarg_address,
            grid: [items, 1, 1],
            workgroup: [workgroup, 1, 1],
            group_segment_size: 0,
            private_segment_size: 0,
            acquire: FenceScope::System,
            release: FenceScope::System,
            barrier: true,
        }
    }

    /// Number of dimensions in use (1..=3).
    pub fn dimensions(&self) -> u16 {
        if self.grid[2] > 1 || self.workgroup[2] > 1 {
            3
        } else if self.grid[1] > 1 || self.workgroup[1] > 1 {
            2
        } else {
            1
        }
    }

    /// Checks what the packet processor would choke on.
    pub fn validate(&self) -> Result<(), KfdError> {
        let bad = |m: String| Err(KfdError::Invalid(m));
        if self.kernel_object == 0 {
            return bad("dispatch without a kernel object (kernel descriptor VA is 0)".into());
        }
        if !self.kernel_object.is_multiple_of(64) {
            return bad(format!(
                "kernel descriptor VA {:#x} is not 64-byte aligned",
                self.kernel_object
            ));
        }
        if !self.kernarg_address.is_multiple_of(16) {
            return bad(format!(
                "kernarg VA {:#x} is not 16-byte aligned",
                self.kernarg_address
            ));
        }
        if self.grid.contains(&0) || self.workgroup.contains(&0) {
            return bad(format!(
                "zero-sized grid {:?} or work-group {:?}",
                self.grid, self.workgroup
            ));
        }
        let wg: u32 = self.workgroup.iter().map(|&w| w as u32).product();
        if wg > 1024 {
            return bad(format!("work-group of {wg} work-items exceeds 1024"));
        }
        Ok(())
    }
}

/// A packet ready to be published (header kept apart: it is stored last).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Packet {
    /// Kernel dispatch.
    Dispatch(hsa_kernel_dispatch_packet_t),
    /// Barrier-AND.
    BarrierAnd(hsa_barrier_and_packet_t),
}

impl Packet {
    /// The 64 bytes as the CP reads them.
    pub fn to_bytes(&self) -> [u8; 64] {
        let mut out = [0u8; 64];
        match self {
            Packet::Dispatch(p) => {
                out[0..2].copy_from_slice(&p.header.to_le_bytes());
                out[2..4].copy_from_slice(&p.setup.to_le_bytes());
                out[4..6].copy_from_slice(&p.workgroup_size_x.to_le_bytes());
                out[6..8].copy_from_slice(&p.workgroup_size_y.to_le_bytes());
                out[8..10].copy_from_slice(&p.workgroup_size_z.to_le_bytes());
                out[12..16].copy_from_slice(&p.grid_size_x.to_le_bytes());
                out[16..20].copy_from_slice(&p.grid_size_y.to_le_bytes());
                out[20..24].copy_from_slice(&p.grid_size_z.to_le_bytes());
                out[24..28].copy_from_slice(&p.private_segment_size.to_le_bytes());
                out[28..32].copy_from_slice(&p.group_segment_size.to_le_bytes());
                out[32..40].copy_from_slice(&p.kernel_object.to_le_bytes());
                out[40..48].copy_from_slice(&p.kernarg_address.to_le_bytes());
                out[56..64].copy_from_slice(&p.completion_signal.to_le_bytes());
            }
            Packet::BarrierAnd(p) => {
                out[0..2].copy_from_slice(&p.header.to_le_bytes());
                for (i, d) in p.dep_signal.iter().enumerate() {
                    out[8 + i * 8..16 + i * 8].copy_from_slice(&d.to_le_bytes());
                }
                out[56..64].copy_from_slice(&p.completion_signal.to_le_bytes());
            }
        }
        out
    }

    /// The completion signal handle (0 = none).
    pub fn completion_signal(&self) -> u64 {
        match self {
            Packet::Dispatch(p) => p.completion_signal,
            Packet::BarrierAnd(p) => p.completion_signal,
        }
    }

    /// Replaces the completion signal.
    pub fn with_completion_signal(mut self, signal: u64) -> Packet {
        match &mut self {
            Packet::Dispatch(p) => p.completion_signal = signal,
            Packet::BarrierAnd(p) => p.completion_signal = signal,
        }
        self
    }
}

/// A kernel-dispatch packet for `a` completing `completion_signal` (0 = none).
pub fn dispatch_packet(a: &DispatchArgs, completion_signal: u64) -> Result<Packet, KfdError> {
    a.validate()?;
    Ok(Packet::Dispatch(hsa_kernel_dispatch_packet_t {
        header: header(
            HSA_PACKET_TYPE_KERNEL_DISPATCH,
            a.barrier,
            a.acquire,
            a.release,
        ),
        setup: a.dimensions() << HSA_KERNEL_DISPATCH_PACKET_SETUP_DIMENSIONS,
        workgroup_size_x: a.workgroup[0],
        workgroup_size_y: a.workgroup[1],
        workgroup_size_z: a.workgroup[2],
        reserved0: 0,
        grid_size_x: a.grid[0],
        grid_size_y: a.grid[1],
        grid_size_z: a.grid[2],
        private_segment_size: a.private_segment_size,
        group_segment_size: a.group_segment_size,
        kernel_object: a.kernel_object,
        kernarg_address: a.kernarg_address,
        reserved2: 0,
        completion_signal,
    }))
}

/// A barrier-AND packet: waits until every non-zero signal in `deps` (≤ 5) reaches 0.
pub fn barrier_and_packet(
    deps: &[u64],
    completion_signal: u64,
    acquire: FenceScope,
    release: FenceScope,
) -> Result<Packet, KfdError> {
    if deps.len() > 5 {
        return Err(KfdError::Invalid(format!(
            "a barrier-AND packet holds 5 signals, got {}",
            deps.len()
        )));
    }
    let mut dep_signal = [0u64; 5];
    dep_signal[..deps.len()].copy_from_slice(deps);
    Ok(Packet::BarrierAnd(hsa_barrier_and_packet_t {
        header: header(HSA_PACKET_TYPE_BARRIER_AND, true, acquire, release),
        reserved0: 0,
        reserved1: 0,
        dep_signal,
        reserved2: 0,
        completion_signal,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_fields_sit_at_the_hsa_h_shifts() {
        let h = AqlHeader::new(HSA_PACKET_TYPE_KERNEL_DISPATCH)
            .with_barrier(true)
            .with_acquire(FenceScope::Agent)
            .with_release(FenceScope::System);
        assert_eq!(
            h.bits(),
            HSA_PACKET_TYPE_KERNEL_DISPATCH << HSA_PACKET_HEADER_TYPE
                | 1 << HSA_PACKET_HEADER_BARRIER
                | HSA_FENCE_SCOPE_AGENT << HSA_PACKET_HEADER_SCACQUIRE_FENCE_SCOPE
                | HSA_FENCE_SCOPE_SYSTEM << HSA_PACKET_HEADER_SCRELEASE_FENCE_SCOPE
        );
        assert_eq!(h.packet_type(), HSA_PACKET_TYPE_KERNEL_DISPATCH);
        assert!(h.barrier());
        assert_eq!(h.acquire(), Ok(FenceScope::Agent));
        assert_eq!(h.release(), Ok(FenceScope::System));
        // Setting a field again replaces it rather than OR-ing into it.
        let h = h.with_barrier(false).with_acquire(FenceScope::None);
        assert!(!h.barrier());
        assert_eq!(h.acquire(), Ok(FenceScope::None));
        assert_eq!(h.release(), Ok(FenceScope::System));
    }

    #[test]
    fn every_raw_header_round_trips_and_rebuilds_from_its_fields() {
        for raw in 0..=u16::MAX {
            let h = AqlHeader::from_bits_retain(raw);
            assert_eq!(h.bits(), raw);
            // Headers without reserved values rebuild exactly from their accessors plus
            // the unknown bits.
            if let (Ok(a), Ok(r)) = (h.acquire(), h.release()) {
                let rebuilt = AqlHeader::new(h.packet_type())
                    .with_barrier(h.barrier())
                    .with_acquire(a)
                    .with_release(r)
                    .bits()
                    | h.unknown_bits();
                assert_eq!(rebuilt, raw, "{h:?}");
            }
        }
    }

    #[test]
    fn reserved_scope_and_unknown_bits_are_reported() {
        let raw =
            HSA_PACKET_TYPE_BARRIER_AND | 3 << HSA_PACKET_HEADER_SCRELEASE_FENCE_SCOPE | 1 << 14;
        let h = AqlHeader::from_bits_retain(raw);
        assert_eq!(h.release(), Err(3));
        assert_eq!(h.unknown_bits(), 1 << 14);
        let shown = format!("{h:?}");
        assert!(
            shown.contains("reserved(3)") && shown.contains("0x4000"),
            "{shown}"
        );
    }
}
