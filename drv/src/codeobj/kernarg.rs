//! Kernarg segments: explicit arguments at the metadata's offsets, then the v5 hidden
//! block the runtime (not the CP) must fill (reference §4.6). Pure functions.

use super::{CodeObjectError, KernelInfo};

/// One `.args` entry's `.value_kind`, reduced to what the host must do with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArgKind {
    /// An explicit argument (by_value, global_buffer, dynamic_shared_pointer, ...).
    Explicit,
    BlockCount(usize),
    GroupSize(usize),
    Remainder(usize),
    GlobalOffset(usize),
    GridDims,
    DynamicLdsSize,
    /// Present in the layout, left zero (none, private/shared base on gfx11 which has
    /// aperture registers, queue_ptr which gfx11 code never reads through kernargs).
    Zero,
    /// A runtime service onebit does not provide (printf, hostcall, heap, device enqueue).
    Unsupported,
}

impl ArgKind {
    pub fn from_value_kind(kind: &str) -> ArgKind {
        match kind {
            "hidden_block_count_x" => ArgKind::BlockCount(0),
            "hidden_block_count_y" => ArgKind::BlockCount(1),
            "hidden_block_count_z" => ArgKind::BlockCount(2),
            "hidden_group_size_x" => ArgKind::GroupSize(0),
            "hidden_group_size_y" => ArgKind::GroupSize(1),
            "hidden_group_size_z" => ArgKind::GroupSize(2),
            "hidden_remainder_x" => ArgKind::Remainder(0),
            "hidden_remainder_y" => ArgKind::Remainder(1),
            "hidden_remainder_z" => ArgKind::Remainder(2),
            "hidden_global_offset_x" => ArgKind::GlobalOffset(0),
            "hidden_global_offset_y" => ArgKind::GlobalOffset(1),
            "hidden_global_offset_z" => ArgKind::GlobalOffset(2),
            "hidden_grid_dims" => ArgKind::GridDims,
            "hidden_dynamic_lds_size" => ArgKind::DynamicLdsSize,
            "hidden_none" | "hidden_private_base" | "hidden_shared_base" | "hidden_queue_ptr" => {
                ArgKind::Zero
            }
            "hidden_printf_buffer"
            | "hidden_hostcall_buffer"
            | "hidden_multigrid_sync_arg"
            | "hidden_heap_v1"
            | "hidden_default_queue"
            | "hidden_completion_action" => ArgKind::Unsupported,
            k if k.starts_with("hidden_") => ArgKind::Unsupported,
            _ => ArgKind::Explicit,
        }
    }
}

/// Launch geometry the hidden arguments describe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Launch {
    /// Work-items per dimension (as in the AQL packet).
    pub grid: [u32; 3],
    pub workgroup: [u16; 3],
    /// Dynamic LDS bytes on top of the static size.
    pub dynamic_lds: u32,
}

impl Launch {
    /// `groups` work-groups of `workgroup` items (the grid the kernels here think in).
    pub fn groups(groups: [u32; 3], workgroup: [u16; 3]) -> Launch {
        let grid = [0, 1, 2].map(|d| groups[d].saturating_mul(u32::from(workgroup[d])));
        Launch {
            grid,
            workgroup,
            dynamic_lds: 0,
        }
    }

    /// Dimensions in use (1..=3).
    pub fn dims(&self) -> u16 {
        if self.grid[2] > 1 || self.workgroup[2] > 1 {
            3
        } else if self.grid[1] > 1 || self.workgroup[1] > 1 {
            2
        } else {
            1
        }
    }
}

fn put(buf: &mut [u8], offset: usize, size: usize, value: u64) {
    buf[offset..offset + size].copy_from_slice(&value.to_le_bytes()[..size]);
}

/// Builds the kernarg bytes (`kernarg_segment_size` long) for `kernel`: `explicit[i]` is the
/// i-th explicit argument's value, written in its metadata size (4 or 8 bytes).
pub fn build(
    kernel: &KernelInfo,
    explicit: &[u64],
    launch: &Launch,
) -> Result<Vec<u8>, CodeObjectError> {
    let err = |what: String| CodeObjectError::Kernarg {
        kernel: kernel.name.clone(),
        what,
    };
    if launch.grid.contains(&0) || launch.workgroup.contains(&0) {
        return Err(err(format!(
            "empty launch: grid {:?}, work-group {:?}",
            launch.grid, launch.workgroup
        )));
    }
    let n_explicit = kernel
        .args
        .iter()
        .filter(|a| a.kind == ArgKind::Explicit)
        .count();
    if explicit.len() != n_explicit {
        return Err(err(format!(
            "{} explicit arguments given, the kernel takes {n_explicit}",
            explicit.len()
        )));
    }
    let mut buf = vec![0u8; kernel.kernarg_size as usize];
    let mut next = explicit.iter();
    for a in &kernel.args {
        let (off, size) = (a.offset as usize, a.size as usize);
        let value = match a.kind {
            ArgKind::Explicit => {
                let v = *next.next().expect("counted above");
                if size > 8 {
                    return Err(err(format!("argument at offset {off} is {size} bytes; only ≤ 8-byte arguments are supported")));
                }
                if size < 8 && v >> (8 * size) != 0 {
                    return Err(err(format!(
                        "value {v:#x} does not fit the {size}-byte argument at offset {off}"
                    )));
                }
                v
            }
            ArgKind::BlockCount(d) => {
                u64::from(launch.grid[d].div_ceil(u32::from(launch.workgroup[d])))
            }
            ArgKind::GroupSize(d) => u64::from(launch.workgroup[d]),
            ArgKind::Remainder(d) => u64::from(launch.grid[d] % u32::from(launch.workgroup[d])),
            ArgKind::GlobalOffset(_) | ArgKind::Zero => 0,
            ArgKind::GridDims => u64::from(launch.dims()),
            ArgKind::DynamicLdsSize => u64::from(launch.dynamic_lds),
            ArgKind::Unsupported => {
                return Err(err(format!(
                "needs the runtime service `{}`, which onebit does not provide (printf, hostcall, \
                     device heap and enqueue are not available to onebit kernels)",
                a.value_kind
            )))
            }
        };
        put(&mut buf, off, size.min(8), value);
    }
    Ok(buf)
}
