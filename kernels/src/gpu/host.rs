//! Host builds of the GPU kernels: the C sources compiled by `build.rs` with
//! `-DONEBIT_HOST`, run as a dispatch would run them.
//!
//! [`run`] is the raw entry the KFD emulator uses: a kernel name, the work-group grid and
//! each explicit argument as the 64-bit word it holds in the kernarg segment (pointer
//! address, or the u32/f32 bits). [`run_as`] also takes the packet's work-group size and a
//! [`Mode`]: the serial build (a kernel body runs once per work-group and each phase loops
//! over the lanes) or the SIMT build (one thread per work-item with real barriers and
//! poisoned LDS, `kernels/gpu/host_simt.c`). The typed functions below wrap it for tests
//! and `onebit selftest`; they copy inputs into aligned buffers the way a device upload
//! would, and run in the mode [`with_mode`] sets (serial by default).

use super::{spec, GpuAct, GpuBest, ATTN_HEAD_DIM_MAX, ATTN_SPLIT_MAX};
use crate::embd::EmbdType;
use crate::sherry::SherryView;
use crate::ternary::{padded_cols, TernaryView};
use crate::ActScale;
use std::cell::Cell;
use std::ffi::c_void;
use std::fmt;

/// Where a host work-item is in the grid (`struct onebit_dispatch`).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
struct Dispatch {
    group_id: [u32; 3],
    num_groups: [u32; 3],
    workgroup_size: u32,
    local_id: u32,
    trap: *mut u32,
    simt: *mut c_void,
}
const _: () = assert!(std::mem::size_of::<Dispatch>() == 48);

type P = *const u8;
type M = *mut u8;

/// An argument word as the C parameter type it is passed as.
trait FromWord {
    fn from_word(w: u64) -> Self;
}
impl FromWord for P {
    fn from_word(w: u64) -> Self {
        w as usize as P
    }
}
impl FromWord for M {
    fn from_word(w: u64) -> Self {
        w as usize as M
    }
}
impl FromWord for u32 {
    fn from_word(w: u64) -> Self {
        w as u32
    }
}
impl FromWord for f32 {
    fn from_word(w: u64) -> Self {
        f32::from_bits(w as u32)
    }
}

/// Declares each kernel of both host builds (`onebit_host_<name>` serial, `onebit_simt_<name>`
/// SIMT) and the work-group size the source exports (`onebit_wg_<name>`), and one `invoke`
/// that calls kernel `name` of either build with its argument words.
macro_rules! host_kernels {
    ($($name:ident($($arg:ident: $ty:ty),*);)*) => {
        mod serial {
            use super::*;
            extern "C" {
                $(
                    #[link_name = concat!("onebit_host_", stringify!($name))]
                    pub fn $name(d: *const Dispatch $(, $arg: $ty)*);
                )*
            }
        }
        mod simt {
            use super::*;
            extern "C" {
                $(
                    #[link_name = concat!("onebit_simt_", stringify!($name))]
                    pub fn $name(d: *const Dispatch $(, $arg: $ty)*);
                )*
            }
        }
        mod exported_wg {
            extern "C" {
                $(
                    #[link_name = concat!("onebit_wg_", stringify!($name))]
                    pub static $name: u32;
                )*
            }
        }

        /// The work-group size kernel `name`'s C source is written for (its `*_WG`).
        pub fn source_workgroup(name: &str) -> Option<u32> {
            match name {
                // SAFETY: each is a `const u32` the host build defines and never changes.
                $(stringify!($name) => Some(unsafe { exported_wg::$name }),)*
                _ => None,
            }
        }

        /// # Safety
        /// `args` has the kernel's argument count, its pointers valid as [`run`] requires.
        unsafe fn invoke(simt_build: bool, name: &str, d: *const Dispatch, args: &[u64]) -> bool {
            match name {
                $(stringify!($name) => {
                    let mut words = args.iter().copied();
                    #[allow(unused_mut, unused_variables)]
                    let mut next = || words.next().unwrap_or(0);
                    $(let $arg = <$ty as FromWord>::from_word(next());)*
                    // SAFETY: the caller's promise; `d` is live for the call.
                    unsafe {
                        if simt_build {
                            simt::$name(d $(, $arg)*)
                        } else {
                            serial::$name(d $(, $arg)*)
                        }
                    }
                    true
                })*
                _ => false,
            }
        }
    };
}

host_kernels! {
    gemv_i2s(w: P, q: P, act: P, w_scale: f32, out: M, rows: u32, kwords: u32);
    gemm_i2s(w: P, q: P, acts: P, w_scale: f32, out: M, rows: u32, n: u32, kwords: u32);
    gemv_sherry(w: P, q: P, act: P, w_scale: f32, out: M, rows: u32, groups: u32);
    gemm_sherry(w: P, q: P, acts: P, w_scale: f32, out: M, rows: u32, n: u32, groups: u32);
    act_quant(x: P, q: M, act: M, cols: u32, kpad: u32);
    rms_norm(x: P, weight: P, out: M, n: u32, eps: f32);
    rope(x: M, table: P, pos0: u32, n_heads: u32, head_dim: u32);
    attn_split(q: P, kc: P, vc: P, part: M, n_heads: u32, n_kv_heads: u32, head_dim: u32, pos0: u32, split_len: u32, scale: f32);
    attn_combine(part: P, out: M, n_heads: u32, head_dim: u32, n_splits: u32);
    relu2_mul(gate: M, up: P, n: u32);
    add(acc: M, x: P, n: u32);
    embed_f16(emb: P, ids: P, h: M, cols: u32);
    embed_bf16(emb: P, ids: P, h: M, cols: u32);
    lm_head_f16(emb: P, h: P, logits: M, rows: u32, cols: u32);
    lm_head_bf16(emb: P, h: P, logits: M, rows: u32, cols: u32);
    lm_head_f16_x8(emb: P, h: P, rows: u32, cols: u32, n: u32, out0: M, out1: M, out2: M, out3: M, out4: M, out5: M, out6: M, out7: M);
    lm_head_bf16_x8(emb: P, h: P, rows: u32, cols: u32, n: u32, out0: M, out1: M, out2: M, out3: M, out4: M, out5: M, out6: M, out7: M);
    argmax_partial(x: P, best: M, n: u32);
    argmax_final(best: P, token: M, n_parts: u32);
    empty();
}

type SimtBody = unsafe extern "C" fn(d: *const Dispatch, ctx: *mut c_void);

extern "C" {
    fn onebit_simt_launch(
        groups: *const u32,
        wg: u32,
        order: u32,
        skip_barrier: u32,
        body: SimtBody,
        ctx: *mut c_void,
        trap: *mut u32,
        barriers: *mut u32,
    ) -> i32;
    fn onebit_simt_lds_bytes() -> usize;
}

/// Bytes of LDS the SIMT build declares across all kernels (poisoned before each group).
pub fn simt_lds_bytes() -> usize {
    // SAFETY: reads two linker-defined addresses.
    unsafe { onebit_simt_lds_bytes() }
}

/// In which order the SIMT build's work-item threads run between barriers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Schedule {
    /// All threads at once, synchronised only by the barriers (what ThreadSanitizer checks).
    Concurrent,
    /// One work-item at a time in lane order, each up to its next barrier (deterministic).
    Forward,
    /// One at a time in reverse lane order.
    Reverse,
}

/// How a host dispatch runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// The serial build: each phase is a loop over the lanes; barriers are no-ops.
    Serial,
    /// The SIMT build: one thread per work-item, real barriers, LDS poisoned with 0xFF.
    Simt {
        schedule: Schedule,
        /// Fault injection for tests: every work-item skips this barrier (1-based, per
        /// work-group) as if it were deleted from the source.
        skip_barrier: Option<u32>,
    },
}

impl Mode {
    /// SIMT with no barrier skipped.
    pub const fn simt(schedule: Schedule) -> Mode {
        Mode::Simt {
            schedule,
            skip_barrier: None,
        }
    }
}

/// Why a host dispatch was refused or failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostError {
    UnknownKernel(String),
    ArgCount {
        kernel: &'static str,
        expected: usize,
        got: usize,
    },
    EmptyGrid {
        kernel: &'static str,
    },
    /// The kernel trapped: launched with a work-group size its source is not written for.
    WorkgroupTrap {
        kernel: &'static str,
        source: u32,
        packet: u32,
    },
    /// The SIMT runner could not start its threads.
    Threads {
        kernel: &'static str,
        errno: i32,
    },
}

impl fmt::Display for HostError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::UnknownKernel(n) => write!(
                f,
                "no host build of kernel `{n}` (see onebit_kernels::gpu::KERNELS)"
            ),
            Self::ArgCount {
                kernel,
                expected,
                got,
            } => {
                write!(f, "kernel `{kernel}` takes {expected} arguments, got {got}")
            }
            Self::EmptyGrid { kernel } => {
                write!(f, "kernel `{kernel}` dispatched with an empty grid")
            }
            Self::WorkgroupTrap {
                kernel,
                source,
                packet,
            } => write!(
                f,
                "kernel `{kernel}` trapped: dispatched with work-group size {packet}, its source \
                 is written for {source} (dispatch with the spec's workgroup)"
            ),
            Self::Threads { kernel, errno } => write!(
                f,
                "kernel `{kernel}`: the SIMT runner could not start its work-item threads \
                 (errno {errno}); lower the thread limit pressure or use the serial mode"
            ),
        }
    }
}

impl std::error::Error for HostError {}

/// Runs kernel `name` serially over `groups` work-groups (x, y, z) of the size its source
/// is written for.
///
/// # Safety
/// Every `Ptr` argument must be the address of memory laid out as the kernel's source
/// says, large enough for the grid, valid (and writable where the kernel writes) for the
/// whole call, and aligned to its element type.
pub unsafe fn run(name: &str, groups: [u32; 3], args: &[u64]) -> Result<(), HostError> {
    let wg = spec(name).map_or(0, |s| s.workgroup);
    // SAFETY: the caller's promise.
    unsafe { run_as(name, groups, wg, args, Mode::Serial) }.map(|_| ())
}

struct SimtCall<'a> {
    name: &'static str,
    args: &'a [u64],
}

unsafe extern "C" fn simt_body(d: *const Dispatch, ctx: *mut c_void) {
    // SAFETY: `ctx` is the `SimtCall` that `run_as` keeps alive across the launch.
    let call = unsafe { &*(ctx as *const SimtCall<'_>) };
    // SAFETY: `run_as` checked the name and argument count; the pointers are its caller's.
    unsafe { invoke(true, call.name, d, call.args) };
}

/// Runs kernel `name` over `groups` work-groups of `workgroup` work-items (the packet's
/// `workgroup_size_x`) in `mode`. Returns how many barriers each work-group passed in SIMT
/// mode (a skipped one included), 0 in serial mode.
///
/// # Safety
/// As [`run`].
pub unsafe fn run_as(
    name: &str,
    groups: [u32; 3],
    workgroup: u32,
    args: &[u64],
    mode: Mode,
) -> Result<u32, HostError> {
    let spec = spec(name).ok_or_else(|| HostError::UnknownKernel(name.to_string()))?;
    if args.len() != spec.args.len() {
        return Err(HostError::ArgCount {
            kernel: spec.name,
            expected: spec.args.len(),
            got: args.len(),
        });
    }
    if groups.contains(&0) {
        return Err(HostError::EmptyGrid { kernel: spec.name });
    }
    let (mut trap, mut barriers) = (0u32, 0u32);
    match mode {
        Mode::Serial => {
            for z in 0..groups[2] {
                for y in 0..groups[1] {
                    for x in 0..groups[0] {
                        let d = Dispatch {
                            group_id: [x, y, z],
                            num_groups: groups,
                            workgroup_size: workgroup,
                            local_id: 0,
                            trap: &mut trap,
                            simt: std::ptr::null_mut(),
                        };
                        // SAFETY: the argument words are what the kernel expects (checked
                        // count; the pointers' validity is the caller's promise); `d` and
                        // `trap` live across the call.
                        unsafe { invoke(false, spec.name, &d, args) };
                    }
                }
            }
        }
        Mode::Simt {
            schedule,
            skip_barrier,
        } => {
            let call = SimtCall {
                name: spec.name,
                args,
            };
            let order = match schedule {
                Schedule::Concurrent => 0,
                Schedule::Forward => 1,
                Schedule::Reverse => 2,
            };
            // SAFETY: `groups` is 3 u32; `call`, `trap` and `barriers` outlive the launch, which joins
            // every thread before returning; `simt_body` only reads `call`.
            let rc = unsafe {
                onebit_simt_launch(
                    groups.as_ptr(),
                    workgroup,
                    order,
                    skip_barrier.unwrap_or(0),
                    simt_body,
                    &call as *const SimtCall<'_> as *mut c_void,
                    &mut trap,
                    &mut barriers,
                )
            };
            if rc != 0 {
                return Err(HostError::Threads {
                    kernel: spec.name,
                    errno: rc,
                });
            }
        }
    }
    if trap != 0 {
        return Err(HostError::WorkgroupTrap {
            kernel: spec.name,
            source: trap,
            packet: workgroup,
        });
    }
    Ok(barriers)
}

thread_local! {
    static MODE: Cell<Mode> = const { Cell::new(Mode::Serial) };
}

/// Runs `f` with the typed wrappers below dispatching in `mode` on this thread.
pub fn with_mode<R>(mode: Mode, f: impl FnOnce() -> R) -> R {
    let old = MODE.with(|m| m.replace(mode));
    struct Restore(Mode);
    impl Drop for Restore {
        fn drop(&mut self) {
            MODE.with(|m| m.set(self.0));
        }
    }
    let _restore = Restore(old);
    f()
}

fn addr<T>(s: &[T]) -> u64 {
    s.as_ptr() as u64
}

fn addr_mut<T>(s: &mut [T]) -> u64 {
    s.as_mut_ptr() as u64
}

fn words(bytes: &[u8]) -> Vec<u32> {
    let mut w = vec![0u32; bytes.len().div_ceil(4)];
    for (dst, chunk) in w.iter_mut().zip(bytes.chunks(4)) {
        let mut b = [0u8; 4];
        b[..chunk.len()].copy_from_slice(chunk);
        *dst = u32::from_le_bytes(b);
    }
    w
}

fn i8_words(q: &[i8]) -> Vec<u32> {
    let bytes: Vec<u8> = q.iter().map(|v| *v as u8).collect();
    words(&bytes)
}

fn halves(bytes: &[u8]) -> Vec<u16> {
    bytes
        .chunks_exact(2)
        .map(|c| u16::from_le_bytes([c[0], c[1]]))
        .collect()
}

fn call(name: &str, groups: [u32; 3], args: &[u64]) {
    let wg = spec(name).map_or(0, |s| s.workgroup);
    // SAFETY: every typed wrapper below passes buffers it owns or borrows, sized for the
    // grid it computes, with the element types the kernel source declares.
    let r = unsafe { run_as(name, groups, wg, args, MODE.with(Cell::get)) }.map(|_| ());
    r.unwrap_or_else(|e| panic!("host dispatch: {e}"));
}

fn n32(v: usize) -> u32 {
    u32::try_from(v).expect("size fits the kernels' u32 arguments")
}

/// `out[r] = W[r]·q` (decode GEMV); same contract as [`crate::ternary::gemv_ref`].
pub fn gemv_i2s(w: TernaryView<'_>, q: &[i8], act: ActScale, w_scale: f32, out: &mut [f32]) {
    assert_eq!(q.len(), padded_cols(w.cols), "gemv: activation length");
    assert_eq!(out.len(), w.rows, "gemv: output length");
    let (wd, qd, a) = (words(w.data), i8_words(q), [GpuAct::from(act)]);
    let kwords = padded_cols(w.cols) / 16;
    let groups = n32(w.rows.div_ceil(super::GEMV_ROWS_PER_GROUP as usize));
    let args = [
        addr(&wd),
        addr(&qd),
        addr(&a),
        u64::from(w_scale.to_bits()),
        addr_mut(out),
        n32(w.rows).into(),
        n32(kwords).into(),
    ];
    call("gemv_i2s", [groups, 1, 1], &args);
}

/// Prefill GEMM; same contract as [`crate::ternary::gemm`] (`out` is `[n, rows]`).
pub fn gemm_i2s(w: TernaryView<'_>, q: &[i8], acts: &[ActScale], w_scale: f32, out: &mut [f32]) {
    let (k, n) = (padded_cols(w.cols), acts.len());
    assert_eq!(q.len(), n * k, "gemm: activation length");
    assert_eq!(out.len(), n * w.rows, "gemm: output length");
    let (wd, qd) = (words(w.data), i8_words(q));
    let a: Vec<GpuAct> = acts.iter().map(|a| GpuAct::from(*a)).collect();
    let (tr, tt) = super::GEMM_TILE;
    let groups = [
        n32(w.rows.div_ceil(tr as usize)),
        n32(n.div_ceil(tt as usize)),
        1,
    ];
    let args = [
        addr(&wd),
        addr(&qd),
        addr(&a),
        u64::from(w_scale.to_bits()),
        addr_mut(out),
        n32(w.rows).into(),
        n32(n).into(),
        n32(k / 16).into(),
    ];
    call("gemm_i2s", groups, &args);
}

/// Sherry decode GEMV; same contract as [`crate::sherry::gemv_ref`].
pub fn gemv_sherry(w: SherryView<'_>, q: &[i8], act: ActScale, w_scale: f32, out: &mut [f32]) {
    assert_eq!(q.len(), padded_cols(w.cols), "gemv: activation length");
    assert_eq!(out.len(), w.rows, "gemv: output length");
    let (wd, qd, a) = (words(w.data), i8_words(q), [GpuAct::from(act)]);
    let groups = n32(w.rows.div_ceil(super::GEMV_ROWS_PER_GROUP as usize));
    let args = [
        addr(&wd),
        addr(&qd),
        addr(&a),
        u64::from(w_scale.to_bits()),
        addr_mut(out),
        n32(w.rows).into(),
        n32(padded_cols(w.cols) / 128).into(),
    ];
    call("gemv_sherry", [groups, 1, 1], &args);
}

/// Sherry prefill GEMM; same contract as [`crate::sherry::gemm`] (`out` is `[n, rows]`).
pub fn gemm_sherry(w: SherryView<'_>, q: &[i8], acts: &[ActScale], w_scale: f32, out: &mut [f32]) {
    let (k, n) = (padded_cols(w.cols), acts.len());
    assert_eq!(q.len(), n * k, "gemm: activation length");
    assert_eq!(out.len(), n * w.rows, "gemm: output length");
    let (wd, qd) = (words(w.data), i8_words(q));
    let a: Vec<GpuAct> = acts.iter().map(|a| GpuAct::from(*a)).collect();
    let (tr, tt) = super::GEMM_TILE;
    let groups = [
        n32(w.rows.div_ceil(tr as usize)),
        n32(n.div_ceil(tt as usize)),
        1,
    ];
    let args = [
        addr(&wd),
        addr(&qd),
        addr(&a),
        u64::from(w_scale.to_bits()),
        addr_mut(out),
        n32(w.rows).into(),
        n32(n).into(),
        n32(k / 128).into(),
    ];
    call("gemm_sherry", groups, &args);
}

/// Quantizes `x` (`[rows, cols]`) into `q` (`[rows, padded_cols(cols)]`); returns the scales.
pub fn act_quant(x: &[f32], cols: usize, q: &mut [i8]) -> Vec<ActScale> {
    assert!(
        cols > 0 && x.len().is_multiple_of(cols),
        "act_quant: x is not whole rows"
    );
    let (rows, kpad) = (x.len() / cols, padded_cols(cols));
    assert_eq!(q.len(), rows * kpad, "act_quant: output length");
    let mut acts = vec![GpuAct::default(); rows];
    let args = [
        addr(x),
        addr_mut(q),
        addr_mut(&mut acts),
        n32(cols).into(),
        n32(kpad).into(),
    ];
    call("act_quant", [n32(rows), 1, 1], &args);
    acts.into_iter().map(ActScale::from).collect()
}

/// RMSNorm of every `weight.len()`-wide row of `x` into `out`.
pub fn rms_norm(x: &[f32], weight: &[f32], eps: f32, out: &mut [f32]) {
    let n = weight.len();
    assert!(
        n > 0 && x.len().is_multiple_of(n) && out.len() == x.len(),
        "rms_norm: length mismatch"
    );
    let args = [
        addr(x),
        addr(weight),
        addr_mut(out),
        n32(n).into(),
        u64::from(eps.to_bits()),
    ];
    call("rms_norm", [n32(x.len() / n), 1, 1], &args);
}

/// Rotate-half RoPE in place on `[n_tokens, n_heads, head_dim]`, token t at `pos0 + t`,
/// using a table from [`super::rope_table`].
pub fn rope(x: &mut [f32], table: &[f32], pos0: usize, n_heads: usize, head_dim: usize) {
    let width = n_heads * head_dim;
    assert!(
        width > 0 && x.len().is_multiple_of(width),
        "rope: x is not whole tokens"
    );
    let n_tokens = x.len() / width;
    assert!(
        table.len() >= (pos0 + n_tokens) * head_dim,
        "rope: table too short for the positions"
    );
    let groups = [
        n32((n_heads * head_dim / 2).div_ceil(256)),
        n32(n_tokens),
        1,
    ];
    let args = [
        addr_mut(x),
        addr(table),
        n32(pos0).into(),
        n32(n_heads).into(),
        n32(head_dim).into(),
    ];
    call("rope", groups, &args);
}

/// Shape of an attention call.
#[derive(Clone, Copy, Debug)]
pub struct AttnShape {
    pub n_heads: usize,
    pub n_kv_heads: usize,
    pub head_dim: usize,
    /// Position of the first query token.
    pub pos0: usize,
    /// KV positions per split (≤ 256).
    pub split_len: usize,
}

/// Causal GQA attention of `q` (`[n_tokens, n_heads·head_dim]`) over the caches
/// (`[≥ pos0 + n_tokens, kv_dim]`) into `out`, through `attn_split` + `attn_combine`.
pub fn attention(s: AttnShape, q: &[f32], kc: &[f32], vc: &[f32], out: &mut [f32]) {
    let (width, kv_dim) = (s.n_heads * s.head_dim, s.n_kv_heads * s.head_dim);
    assert!(
        width > 0 && q.len().is_multiple_of(width) && out.len() == q.len(),
        "attention: q/out length"
    );
    assert!(
        s.split_len > 0 && s.split_len <= ATTN_SPLIT_MAX as usize,
        "attention: split_len out of range"
    );
    assert!(
        s.head_dim <= ATTN_HEAD_DIM_MAX as usize,
        "attention: head_dim too large"
    );
    let n_tokens = q.len() / width;
    let n_ctx = s.pos0 + n_tokens;
    assert!(
        kc.len() >= n_ctx * kv_dim && vc.len() >= n_ctx * kv_dim,
        "attention: cache too short"
    );
    let n_splits = super::attn_splits(n_ctx, s.split_len);
    let mut part = vec![0f32; n_tokens * s.n_heads * n_splits * (s.head_dim + 2)];
    let scale = 1.0 / (s.head_dim as f32).sqrt();
    let args = [
        addr(q),
        addr(kc),
        addr(vc),
        addr_mut(&mut part),
        n32(s.n_heads).into(),
        n32(s.n_kv_heads).into(),
        n32(s.head_dim).into(),
        n32(s.pos0).into(),
        n32(s.split_len).into(),
        u64::from(scale.to_bits()),
    ];
    call(
        "attn_split",
        [n32(s.n_heads), n32(n_splits), n32(n_tokens)],
        &args,
    );
    let args = [
        addr(&part),
        addr_mut(out),
        n32(s.n_heads).into(),
        n32(s.head_dim).into(),
        n32(n_splits).into(),
    ];
    call("attn_combine", [n32(s.n_heads), n32(n_tokens), 1], &args);
}

fn ew_groups(n: usize) -> u32 {
    // a few groups on purpose: the grid-stride loop and the hidden block count get exercised
    n32(n.div_ceil(super::ELEMENTWISE_GROUP as usize).clamp(1, 3))
}

/// `gate = relu(gate)² · up`.
pub fn relu2_mul(gate: &mut [f32], up: &[f32]) {
    assert_eq!(gate.len(), up.len(), "relu2_mul: length mismatch");
    let n = gate.len();
    call(
        "relu2_mul",
        [ew_groups(n), 1, 1],
        &[addr_mut(gate), addr(up), n32(n).into()],
    );
}

/// `acc += x`.
pub fn add(acc: &mut [f32], x: &[f32]) {
    assert_eq!(acc.len(), x.len(), "add: length mismatch");
    let n = acc.len();
    call(
        "add",
        [ew_groups(n), 1, 1],
        &[addr_mut(acc), addr(x), n32(n).into()],
    );
}

/// The kernel suffix of a 16-bit embedding type (`f16`, `bf16`).
fn half_kind(kind: EmbdType) -> &'static str {
    match kind {
        EmbdType::F16 => "f16",
        EmbdType::Bf16 => "bf16",
        other => panic!(
            "no GPU kernel reads {} embeddings (only F16 and BF16)",
            other.name()
        ),
    }
}

/// `h[t] = row ids[t]` of an F16/BF16 embedding (`rows × cols`, little-endian bytes).
pub fn embed(kind: EmbdType, emb: &[u8], cols: usize, ids: &[u32], h: &mut [f32]) {
    let name = if half_kind(kind) == "f16" {
        "embed_f16"
    } else {
        "embed_bf16"
    };
    assert_eq!(h.len(), ids.len() * cols, "embed: output length");
    assert!(
        ids.iter()
            .all(|&i| (i as usize + 1) * cols * 2 <= emb.len()),
        "embed: id out of range"
    );
    let e = halves(emb);
    let groups = [n32(cols.div_ceil(256)), n32(ids.len()), 1];
    call(
        name,
        groups,
        &[addr(&e), addr(ids), addr_mut(h), n32(cols).into()],
    );
}

/// `logits[r] = row r · h` over an F16/BF16 embedding of `logits.len()` rows.
pub fn lm_head(kind: EmbdType, emb: &[u8], h: &[f32], logits: &mut [f32]) {
    let name = if half_kind(kind) == "f16" {
        "lm_head_f16"
    } else {
        "lm_head_bf16"
    };
    let (rows, cols) = (logits.len(), h.len());
    assert_eq!(emb.len(), rows * cols * 2, "lm_head: embedding size");
    let e = halves(emb);
    let groups = [
        n32(rows.div_ceil(super::LM_HEAD_ROWS_PER_GROUP as usize)),
        1,
        1,
    ];
    call(
        name,
        groups,
        &[
            addr(&e),
            addr(h),
            addr_mut(logits),
            n32(rows).into(),
            n32(cols).into(),
        ],
    );
}

/// [`lm_head`] for up to 8 hidden rows in one pass over the embedding: `logits[j]` gets
/// row `j` of `h` (`logits.len()` rows of `h.len() / logits.len()` columns).
pub fn lm_head_x8(kind: EmbdType, emb: &[u8], h: &[f32], logits: &mut [&mut [f32]]) {
    let name = if half_kind(kind) == "f16" {
        "lm_head_f16_x8"
    } else {
        "lm_head_bf16_x8"
    };
    let n = logits.len();
    assert!(
        (1..=super::LM_HEAD_BATCH).contains(&n),
        "lm_head_x8: 1..=8 rows"
    );
    let (rows, cols) = (logits[0].len(), h.len() / n);
    assert_eq!(h.len(), n * cols, "lm_head_x8: hidden rows");
    assert!(
        logits.iter().all(|l| l.len() == rows),
        "lm_head_x8: logits lengths"
    );
    assert_eq!(emb.len(), rows * cols * 2, "lm_head_x8: embedding size");
    let e = halves(emb);
    let groups = [
        n32(rows.div_ceil(super::LM_HEAD_ROWS_PER_GROUP as usize)),
        1,
        1,
    ];
    let mut args = vec![
        addr(&e),
        addr(h),
        n32(rows).into(),
        n32(cols).into(),
        n32(n).into(),
    ];
    args.extend(logits.iter_mut().map(|l| addr_mut(l)));
    // unused outputs are never written; they repeat a real one, as the engine passes them
    args.resize(5 + super::LM_HEAD_BATCH, args[5]);
    call(name, groups, &args);
}

/// Greedy argmax (lowest index on ties) in two stages over `parts` work-groups.
pub fn argmax(x: &[f32], parts: usize) -> u32 {
    let parts = parts.max(1);
    let mut best = vec![GpuBest::default(); parts];
    call(
        "argmax_partial",
        [n32(parts), 1, 1],
        &[addr(x), addr_mut(&mut best), n32(x.len()).into()],
    );
    let mut token = [0u32];
    call(
        "argmax_final",
        [1, 1, 1],
        &[addr(&best), addr_mut(&mut token), n32(parts).into()],
    );
    token[0]
}

/// The empty kernel, for dispatch-latency probes.
pub fn empty() {
    call("empty", [1, 1, 1], &[]);
}
