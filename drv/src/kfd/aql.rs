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
    fn bits(self) -> u16 {
        match self {
            FenceScope::None => HSA_FENCE_SCOPE_NONE,
            FenceScope::Agent => HSA_FENCE_SCOPE_AGENT,
            FenceScope::System => HSA_FENCE_SCOPE_SYSTEM,
        }
    }
}

/// The packet header (u16 at offset 0).
pub fn header(packet_type: u16, barrier: bool, acquire: FenceScope, release: FenceScope) -> u16 {
    (packet_type << HSA_PACKET_HEADER_TYPE)
        | ((barrier as u16) << HSA_PACKET_HEADER_BARRIER)
        | (acquire.bits() << HSA_PACKET_HEADER_SCACQUIRE_FENCE_SCOPE)
        | (release.bits() << HSA_PACKET_HEADER_SCRELEASE_FENCE_SCOPE)
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
