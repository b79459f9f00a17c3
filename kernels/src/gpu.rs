//! The iGPU kernels (gfx1151): the committed code object, what each kernel expects, and
//! host builds of the very same C sources (`kernels/gpu/*.c`) for tests and the emulator.
//!
//! The sources are written for a portability header (`kernels/gpu/onebit_gpu.h`) so that
//! `kernels/gpu/build.sh` compiles them with clang-19 for `amdgcn-amd-amdhsa -mcpu=gfx1151`
//! and `build.rs` compiles them for the host. [`host`] runs the host build work-group by
//! work-group, the way a dispatch would; its tests compare every kernel with the Rust
//! references of this crate.

pub mod host;
#[cfg(test)]
mod simt_tests;
#[cfg(test)]
mod tests;

/// The gfx1151 code object (ELF, HSA code object v5) holding every kernel, built by
/// `kernels/gpu/build.sh` and committed so users need no compiler.
pub static CODE_OBJECT: &[u8] = include_bytes!("../gpu/bin/onebit-gfx1151.co");

/// The `amdhsa.target` the code object is built for.
pub const TARGET: &str = "amdgcn-amd-amdhsa--gfx1151";

/// How one explicit kernel argument is passed (each is one kernarg slot).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ArgKind {
    /// A global-memory pointer (8 bytes).
    Ptr,
    /// A 32-bit unsigned integer.
    U32,
    /// A 32-bit float.
    F32,
}

impl ArgKind {
    /// Bytes the argument occupies in the kernarg segment.
    pub const fn size(self) -> usize {
        match self {
            Self::Ptr => 8,
            Self::U32 | Self::F32 => 4,
        }
    }
}

/// What the host must know to dispatch one kernel.
#[derive(Clone, Copy, Debug)]
pub struct KernelSpec {
    /// Kernel symbol (its descriptor is `<name>.kd`).
    pub name: &'static str,
    /// The work-group size the source is written for (1-D); dispatch with exactly this.
    pub workgroup: u32,
    /// Explicit arguments in order.
    pub args: &'static [(&'static str, ArgKind)],
}

use ArgKind::{Ptr, F32, U32};

/// The F16 and BF16 heads' arguments: one hidden row.
const LM_HEAD_ARGS: &[(&str, ArgKind)] = &[
    ("emb", Ptr),
    ("h", Ptr),
    ("logits", Ptr),
    ("rows", U32),
    ("cols", U32),
];

/// The 8-row heads' arguments: `n` hidden rows, the logits of row j to `out<j>`.
const LM_HEAD_X8_ARGS: &[(&str, ArgKind)] = &[
    ("emb", Ptr),
    ("h", Ptr),
    ("rows", U32),
    ("cols", U32),
    ("n", U32),
    ("out0", Ptr),
    ("out1", Ptr),
    ("out2", Ptr),
    ("out3", Ptr),
    ("out4", Ptr),
    ("out5", Ptr),
    ("out6", Ptr),
    ("out7", Ptr),
];

/// Every kernel in [`CODE_OBJECT`].
pub const KERNELS: &[KernelSpec] = &[
    KernelSpec {
        name: "gemv_i2s",
        workgroup: 256,
        args: &[
            ("w", Ptr),
            ("q", Ptr),
            ("act", Ptr),
            ("w_scale", F32),
            ("out", Ptr),
            ("rows", U32),
            ("kwords", U32),
        ],
    },
    KernelSpec {
        name: "gemm_i2s",
        workgroup: 256,
        args: &[
            ("w", Ptr),
            ("q", Ptr),
            ("acts", Ptr),
            ("w_scale", F32),
            ("out", Ptr),
            ("rows", U32),
            ("n", U32),
            ("kwords", U32),
        ],
    },
    KernelSpec {
        name: "gemv_sherry",
        workgroup: 256,
        args: &[
            ("w", Ptr),
            ("q", Ptr),
            ("act", Ptr),
            ("w_scale", F32),
            ("out", Ptr),
            ("rows", U32),
            ("groups", U32),
        ],
    },
    KernelSpec {
        name: "gemm_sherry",
        workgroup: 256,
        args: &[
            ("w", Ptr),
            ("q", Ptr),
            ("acts", Ptr),
            ("w_scale", F32),
            ("out", Ptr),
            ("rows", U32),
            ("n", U32),
            ("groups", U32),
        ],
    },
    KernelSpec {
        name: "act_quant",
        workgroup: 256,
        args: &[
            ("x", Ptr),
            ("q", Ptr),
            ("act", Ptr),
            ("cols", U32),
            ("kpad", U32),
        ],
    },
    KernelSpec {
        name: "rms_norm",
        workgroup: 256,
        args: &[
            ("x", Ptr),
            ("weight", Ptr),
            ("out", Ptr),
            ("n", U32),
            ("eps", F32),
        ],
    },
    KernelSpec {
        name: "rope",
        workgroup: 256,
        args: &[
            ("x", Ptr),
            ("table", Ptr),
            ("pos0", U32),
            ("n_heads", U32),
            ("head_dim", U32),
        ],
    },
    KernelSpec {
        name: "attn_split",
        workgroup: 128,
        args: &[
            ("q", Ptr),
            ("kc", Ptr),
            ("vc", Ptr),
            ("part", Ptr),
            ("n_heads", U32),
            ("n_kv_heads", U32),
            ("head_dim", U32),
            ("pos0", U32),
            ("split_len", U32),
            ("scale", F32),
        ],
    },
    KernelSpec {
        name: "attn_combine",
        workgroup: 128,
        args: &[
            ("part", Ptr),
            ("out", Ptr),
            ("n_heads", U32),
            ("head_dim", U32),
            ("n_splits", U32),
        ],
    },
    KernelSpec {
        name: "relu2_mul",
        workgroup: 256,
        args: &[("gate", Ptr), ("up", Ptr), ("n", U32)],
    },
    KernelSpec {
        name: "add",
        workgroup: 256,
        args: &[("acc", Ptr), ("x", Ptr), ("n", U32)],
    },
    KernelSpec {
        name: "embed_f16",
        workgroup: 256,
        args: &[("emb", Ptr), ("ids", Ptr), ("h", Ptr), ("cols", U32)],
    },
    KernelSpec {
        name: "embed_bf16",
        workgroup: 256,
        args: &[("emb", Ptr), ("ids", Ptr), ("h", Ptr), ("cols", U32)],
    },
    KernelSpec {
        name: "lm_head_f16",
        workgroup: 256,
        args: LM_HEAD_ARGS,
    },
    KernelSpec {
        name: "lm_head_bf16",
        workgroup: 256,
        args: LM_HEAD_ARGS,
    },
    KernelSpec {
        name: "lm_head_f16_x8",
        workgroup: 256,
        args: LM_HEAD_X8_ARGS,
    },
    KernelSpec {
        name: "lm_head_bf16_x8",
        workgroup: 256,
        args: LM_HEAD_X8_ARGS,
    },
    KernelSpec {
        name: "argmax_partial",
        workgroup: 256,
        args: &[("x", Ptr), ("best", Ptr), ("n", U32)],
    },
    KernelSpec {
        name: "argmax_final",
        workgroup: 256,
        args: &[("best", Ptr), ("token", Ptr), ("n_parts", U32)],
    },
    KernelSpec {
        name: "empty",
        workgroup: 64,
        args: &[],
    },
];

/// The spec of kernel `name`.
pub fn spec(name: &str) -> Option<&'static KernelSpec> {
    KERNELS.iter().find(|k| k.name == name)
}

/// Rows of [`gemv`](host::gemv_i2s) output per work-group.
pub const GEMV_ROWS_PER_GROUP: u32 = 8;
/// Output tile of the prefill GEMM: rows × tokens per work-group.
pub const GEMM_TILE: (u32, u32) = (32, 8);
/// Rows of the LM head per work-group.
pub const LM_HEAD_ROWS_PER_GROUP: u32 = 32;

/// Hidden rows one `lm_head_*_x8` dispatch scores against the embedding.
pub const LM_HEAD_BATCH: usize = 8;
/// Longest KV slice one `attn_split` work-group handles.
pub const ATTN_SPLIT_MAX: u32 = 256;
/// Largest head_dim the attention kernels support.
pub const ATTN_HEAD_DIM_MAX: u32 = 256;
/// Element-wise kernels' work-group size.
pub const ELEMENTWISE_GROUP: u32 = 256;

/// The activation scale as the kernels store it (`struct onebit_act`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct GpuAct {
    pub scale: f32,
    pub sum: i32,
}
const _: () = assert!(std::mem::size_of::<GpuAct>() == 8);

impl From<crate::ActScale> for GpuAct {
    fn from(a: crate::ActScale) -> Self {
        Self {
            scale: a.scale,
            sum: a.sum,
        }
    }
}

impl From<GpuAct> for crate::ActScale {
    fn from(a: GpuAct) -> Self {
        Self {
            scale: a.scale,
            sum: a.sum,
        }
    }
}

/// A partial argmax (`struct onebit_best`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct GpuBest {
    pub value: f32,
    pub index: u32,
}
const _: () = assert!(std::mem::size_of::<GpuBest>() == 8);

/// The RoPE table the `rope` kernel reads: per position, the cos of the `head_dim/2`
/// frequencies then their sin, computed exactly as [`crate::float::rope_rotate_half`] does.
pub fn rope_table(head_dim: usize, theta: f32, positions: usize) -> Vec<f32> {
    let inv_freq = crate::float::rope_inv_freq(head_dim, theta);
    let half = head_dim / 2;
    let mut t = vec![0f32; positions * head_dim];
    for (pos, row) in t.chunks_exact_mut(head_dim).enumerate() {
        for (i, f) in inv_freq.iter().enumerate() {
            let (sin, cos) = (pos as f32 * f).sin_cos();
            row[i] = cos;
            row[half + i] = sin;
        }
    }
    t
}

/// Number of KV slices `attn_split` uses for `n_ctx` positions with slices of `split_len`.
pub fn attn_splits(n_ctx: usize, split_len: usize) -> usize {
    n_ctx.div_ceil(split_len.max(1)).max(1)
}
