//! Sizes of the per-queue buffers the kernel validates (reference §1.6,
//! `kfd_queue_ctx_save_restore_size`).

use crate::topology::Node;

/// EOP buffer size the kernel expects on gfx ≥ 8.
pub const EOP_BUFFER_SIZE: u64 = 4096;
const PAGE: u64 = 4096;
/// `SIZEOF_HSA_USER_CONTEXT_SAVE_AREA_HEADER`.
const CTX_HEADER: u64 = 40;

/// CWSR sizing for one queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CwsrSizes {
    /// `ctl_stack_size` for CREATE_QUEUE.
    pub ctl_stack_size: u32,
    /// `ctx_save_restore_size` for CREATE_QUEUE.
    pub ctx_save_restore_size: u32,
    /// The debugger's per-wave area placed after it.
    pub debug_memory_size: u32,
    /// Bytes the CWSR BO must have: ALIGN((ctx + debug) × num_xcc, PAGE).
    pub bo_size: u64,
    /// The VGPR bytes per CU this was computed with.
    pub vgpr_per_cu: u32,
}

fn align(v: u64, a: u64) -> u64 {
    v.next_multiple_of(a)
}

/// VGPR file per CU the kernel should use for this target (1.5× on gfx1100/1101/1151/12xx).
pub fn vgpr_per_cu(gfx_target_version: u32) -> u32 {
    match gfx_target_version {
        110000 | 110001 | 110501 | 120000 | 120001 => 0x60000,
        _ => 0x40000,
    }
}

impl CwsrSizes {
    /// Sizes for `node` with the given VGPR file per CU.
    pub fn compute(node: &Node, vgpr_per_cu: u32) -> CwsrSizes {
        let gfx = node.gfx_target_version();
        let xcc = node.num_xcc() as u64;
        let cu_num = node.cu_count() as u64 / xcc;
        let wave_num = if gfx >= 100100 {
            cu_num * 32
        } else {
            cu_num * 40
        };
        let mut ctl_stack = align(CTX_HEADER + wave_num * 12 + 8, PAGE);
        if (100000..110000).contains(&gfx) {
            ctl_stack = ctl_stack.min(0x7000);
        }
        let wg_data = align(
            cu_num * (vgpr_per_cu as u64 + 0x4000 + 0x10000 + 0x1000),
            PAGE,
        );
        let cwsr = ctl_stack + wg_data;
        let debug = align(wave_num * 32, 64);
        CwsrSizes {
            ctl_stack_size: ctl_stack as u32,
            ctx_save_restore_size: cwsr as u32,
            debug_memory_size: debug as u32,
            bo_size: align((cwsr + debug) * xcc, PAGE),
            vgpr_per_cu,
        }
    }

    /// What this node should get (gfx1151: 0x60000 VGPR bytes per CU).
    pub fn for_node(node: &Node) -> CwsrSizes {
        Self::compute(node, vgpr_per_cu(node.gfx_target_version()))
    }

    /// The older kernels' value (0x40000 everywhere), for strict-equality kernels that
    /// reject the larger size.
    pub fn legacy(node: &Node) -> CwsrSizes {
        Self::compute(node, 0x40000)
    }
}
