//! The 64-byte kernel descriptor (`<name>.kd`) the CP reads to launch a kernel
//! (reference §4.4).

/// `kernel_code_properties` bits.
pub const KCP_ENABLE_SGPR_DISPATCH_PTR: u16 = 0x2;
pub const KCP_ENABLE_SGPR_QUEUE_PTR: u16 = 0x4;
pub const KCP_ENABLE_SGPR_KERNARG_SEGMENT_PTR: u16 = 0x8;
pub const KCP_ENABLE_WAVEFRONT_SIZE32: u16 = 0x400;
pub const KCP_USES_DYNAMIC_STACK: u16 = 0x800;
/// `compute_pgm_rsrc2.ENABLE_PRIVATE_SEGMENT`.
pub const RSRC2_ENABLE_PRIVATE_SEGMENT: u32 = 0x1;

/// The descriptor as laid out in memory.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct KernelDescriptor {
    pub group_segment_fixed_size: u32,
    pub private_segment_fixed_size: u32,
    pub kernarg_size: u32,
    pub reserved0: u32,
    pub kernel_code_entry_byte_offset: i64,
    pub reserved1: [u8; 20],
    pub compute_pgm_rsrc3: u32,
    pub compute_pgm_rsrc1: u32,
    pub compute_pgm_rsrc2: u32,
    pub kernel_code_properties: u16,
    pub kernarg_preload: u16,
    pub reserved3: u32,
}
const _: () = assert!(std::mem::size_of::<KernelDescriptor>() == 64);

impl KernelDescriptor {
    /// Decodes 64 little-endian bytes.
    pub fn from_bytes(b: &[u8; 64]) -> KernelDescriptor {
        let u32_at = |o: usize| u32::from_le_bytes(b[o..o + 4].try_into().expect("4"));
        let u16_at = |o: usize| u16::from_le_bytes(b[o..o + 2].try_into().expect("2"));
        KernelDescriptor {
            group_segment_fixed_size: u32_at(0),
            private_segment_fixed_size: u32_at(4),
            kernarg_size: u32_at(8),
            reserved0: u32_at(12),
            kernel_code_entry_byte_offset: i64::from_le_bytes(b[16..24].try_into().expect("8")),
            reserved1: b[24..44].try_into().expect("20"),
            compute_pgm_rsrc3: u32_at(44),
            compute_pgm_rsrc1: u32_at(48),
            compute_pgm_rsrc2: u32_at(52),
            kernel_code_properties: u16_at(56),
            kernarg_preload: u16_at(58),
            reserved3: u32_at(60),
        }
    }

    /// Whether the kernel runs in wave32.
    pub fn wave32(&self) -> bool {
        self.kernel_code_properties & KCP_ENABLE_WAVEFRONT_SIZE32 != 0
    }

    /// Whether the kernel needs scratch (private segment) set up by the queue.
    pub fn needs_scratch(&self) -> bool {
        self.private_segment_fixed_size > 0
            || self.compute_pgm_rsrc2 & RSRC2_ENABLE_PRIVATE_SEGMENT != 0
            || self.kernel_code_properties & KCP_USES_DYNAMIC_STACK != 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_the_documented_gfx1151_example() {
        let mut b = [0u8; 64];
        b[8..12].copy_from_slice(&264u32.to_le_bytes());
        b[16..24].copy_from_slice(&0x1180i64.to_le_bytes());
        b[48..52].copy_from_slice(&0x60af_0000u32.to_le_bytes());
        b[52..56].copy_from_slice(&0x84u32.to_le_bytes());
        b[56..58].copy_from_slice(&0x408u16.to_le_bytes());
        let d = KernelDescriptor::from_bytes(&b);
        assert_eq!(d.kernarg_size, 264);
        assert_eq!(d.kernel_code_entry_byte_offset, 0x1180);
        assert_eq!(d.compute_pgm_rsrc1, 0x60af_0000);
        assert_eq!(d.compute_pgm_rsrc2, 0x84);
        assert!(d.wave32());
        assert!(!d.needs_scratch());
        assert_eq!(
            d.kernel_code_properties & KCP_ENABLE_SGPR_KERNARG_SEGMENT_PTR,
            KCP_ENABLE_SGPR_KERNARG_SEGMENT_PTR
        );
    }
}
