//! The LM head of a Q8_0 or Q6_K embedding matrix, computed the ggml way: the hidden
//! vector is quantized to int8 once per matvec, each row's dot product is taken in exact
//! integers per block, and only the block results are combined in f32. These heads are
//! lossy on purpose (`--embd q8_0|q6_k`, like bitnet.cpp's `--quant-embd`); quantizing `h`
//! adds a relative error of about 0.5% on top, and the head becomes bound by its bytes
//! instead of by dequantizing them to floats (3–7× faster on 2B-4T, see
//! `examples/head_bench.rs`).
//!
//! Numerics (every kernel reproduces the scalar reference bit for bit):
//!
//! - `h` is quantized in blocks (32 values for a Q8_0 head, 256 for Q6_K, like ggml's
//!   Q8_0 / Q8_K): `d = absmax / 127` (f32), `q = round(x · (1/d))` rounded half away from
//!   zero (C `roundf`, ggml's reference rule), clamped to ±127; an all-zero block has
//!   `d = 0` and `q = 0`.
//! - Q8_0 row: per block `b`, `isum_b = Σ w·q` (i32, exact) and
//!   `t_b = (d_w[b] · d_h[b]) · f32(isum_b)` (two f32 multiplies, no FMA). Blocks
//!   `0 .. 16⌊nb/16⌋` go to 16 lanes (lane `b mod 16`, added in order); the lanes are
//!   folded pairwise (`l += l + 8`, then 4, 2, 1), then the remaining blocks are added in
//!   order.
//! - Q6_K row: per super-block, `sumi = Σ_j sc_j · Σ_{16 values of j} (c − 32)·q` (i32,
//!   exact: at most 256·32·127·128 < 2³¹), `t = (d_w · d_h) · f32(sumi)`, and the `t` are
//!   added in order (2B-4T has 10 super-blocks a row: float work is negligible here).

#[cfg(target_arch = "x86_64")]
mod avx2;
#[cfg(target_arch = "x86_64")]
mod avx512;
#[cfg(test)]
mod tests;

use crate::ternary::Isa;
use half::f16;

/// Bytes and values of one Q8_0 block.
const Q8_0_BYTES: usize = 34;
const Q8_0_ELEMS: usize = 32;
/// Bytes and values of one Q6_K super-block.
const Q6K_BYTES: usize = 210;
const Q6K_ELEMS: usize = 256;
/// f32 lanes of the Q8_0 row sum.
const LANES: usize = 16;

/// `h` quantized for a Q8_0 head: blocks of 32.
#[derive(Clone, Debug)]
pub struct HiddenQ8 {
    pub q: Vec<i8>,
    /// One scale per block.
    pub d: Vec<f32>,
    /// `128 · Σq` per block: the AVX-512 kernel multiplies `w + 128` (unsigned, as
    /// `vpdpbusd` wants its first operand) and subtracts this.
    pub bias: Vec<i32>,
}

/// `h` quantized for a Q6_K head: blocks of 256 (ggml's Q8_K).
#[derive(Clone, Debug)]
pub struct HiddenQ8K {
    pub q: Vec<i8>,
    /// One scale per block of 256.
    pub d: Vec<f32>,
    /// `−32 · Σq` per 4 values: the AVX-512 accumulators start there, so `vpdpbusd` of the
    /// unsigned 6-bit codes `c` directly yields `Σ (c − 32)·q`.
    pub corr4: Vec<i32>,
    /// `Σq` per 16 values (fits i16: at most 16·127): the AVX2 kernel's offset correction.
    pub sum16: Vec<i16>,
}

/// Quantizes `x` in blocks of `block` values; returns the values and one scale per block.
fn quantize_blocks(x: &[f32], block: usize) -> (Vec<i8>, Vec<f32>) {
    assert!(
        x.len().is_multiple_of(block),
        "hidden length {} is not a multiple of {block}",
        x.len()
    );
    let mut q = vec![0i8; x.len()];
    let mut d = Vec::with_capacity(x.len() / block);
    for (xb, qb) in x.chunks_exact(block).zip(q.chunks_exact_mut(block)) {
        let amax = xb.iter().fold(0f32, |m, v| m.max(v.abs()));
        let s = amax / 127.0;
        let inv = if s != 0.0 { 1.0 / s } else { 0.0 };
        for (o, v) in qb.iter_mut().zip(xb) {
            *o = (v * inv).round().clamp(-127.0, 127.0) as i8;
        }
        d.push(s);
    }
    (q, d)
}

fn block_sums(q: &[i8], n: usize) -> impl Iterator<Item = i32> + '_ {
    q.chunks_exact(n)
        .map(|c| c.iter().map(|v| i32::from(*v)).sum::<i32>())
}

impl HiddenQ8 {
    pub fn new(h: &[f32]) -> Self {
        let (q, d) = quantize_blocks(h, Q8_0_ELEMS);
        let bias = block_sums(&q, Q8_0_ELEMS).map(|s| 128 * s).collect();
        Self { q, d, bias }
    }
}

impl HiddenQ8K {
    pub fn new(h: &[f32]) -> Self {
        let (q, d) = quantize_blocks(h, Q6K_ELEMS);
        let corr4 = block_sums(&q, 4).map(|s| -32 * s).collect();
        let sum16 = block_sums(&q, 16).map(|s| s as i16).collect();
        Self { q, d, corr4, sum16 }
    }
}

fn f16_at(b: &[u8], i: usize) -> f32 {
    f16::from_bits(u16::from_le_bytes([b[i], b[i + 1]])).to_f32()
}

/// [`f16_at`] with the F16C instruction, inlined into the kernels (`half` converts with
/// the same instruction, behind a runtime check and a call that cost more than a whole
/// Q6_K super-block of integer work).
#[cfg(target_arch = "x86_64")]
#[inline]
#[target_feature(enable = "f16c")]
fn f16c_at(b: &[u8], i: usize) -> f32 {
    use std::arch::x86_64::{_mm_cvtph_ps, _mm_cvtsi32_si128, _mm_cvtss_f32};
    let bits = u16::from_le_bytes([b[i], b[i + 1]]);
    _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(i32::from(bits))))
}

/// `t_b` of one Q8_0 block (34 bytes) against its 32 quantized hidden values.
fn q8_0_term(blk: &[u8], q: &[i8], dh: f32) -> f32 {
    let isum: i32 = blk[2..]
        .iter()
        .zip(q)
        .map(|(w, x)| i32::from(*w as i8) * i32::from(*x))
        .sum();
    (f16_at(blk, 0) * dh) * isum as f32
}

/// The pairwise fold of the 16 lanes.
fn fold_lanes(mut acc: [f32; LANES]) -> f32 {
    let mut w = LANES / 2;
    while w > 0 {
        for l in 0..w {
            acc[l] += acc[l + w];
        }
        w /= 2;
    }
    acc[0]
}

/// Adds the blocks past the last full group of 16 to the folded lanes.
#[inline]
fn q8_0_finish(lanes: [f32; LANES], row: &[u8], h: &HiddenQ8) -> f32 {
    let nb = h.d.len();
    let mut s = fold_lanes(lanes);
    for b in nb / LANES * LANES..nb {
        let blk = &row[b * Q8_0_BYTES..(b + 1) * Q8_0_BYTES];
        s += q8_0_term(blk, &h.q[b * Q8_0_ELEMS..(b + 1) * Q8_0_ELEMS], h.d[b]);
    }
    s
}

/// One Q8_0 row (`nb · 34` bytes) · `h`: the scalar reference of the order above.
pub fn dot_q8_0_ref(row: &[u8], h: &HiddenQ8) -> f32 {
    let full = h.d.len() / LANES * LANES;
    let mut acc = [0f32; LANES];
    for b in 0..full {
        let blk = &row[b * Q8_0_BYTES..(b + 1) * Q8_0_BYTES];
        acc[b % LANES] += q8_0_term(blk, &h.q[b * Q8_0_ELEMS..(b + 1) * Q8_0_ELEMS], h.d[b]);
    }
    q8_0_finish(acc, row, h)
}

/// The 6-bit code (0..=63) of value `i` (0..256) of a Q6_K super-block: ggml's layout
/// keeps the low 4 bits in `ql[128]` and the high 2 in `qh[64]`, in two halves of 128
/// values, each half four interleaved runs of 32.
fn q6k_code(blk: &[u8], i: usize) -> i32 {
    let (half, j) = (i / 128, i % 128);
    let (run, l) = (j / 32, j % 32);
    let ql = blk[half * 64 + l + 32 * (run & 1)];
    let lo = if run < 2 { ql & 0xF } else { ql >> 4 };
    let hi = (blk[128 + half * 32 + l] >> (2 * run)) & 3;
    i32::from(lo | (hi << 4))
}

/// `sumi` of one Q6_K super-block (210 bytes) against its 256 quantized hidden values.
fn q6k_sumi_ref(blk: &[u8], q: &[i8]) -> i32 {
    (0..16)
        .map(|j| {
            let sc = i32::from(blk[192 + j] as i8);
            let isum: i32 = (16 * j..16 * j + 16)
                .map(|i| (q6k_code(blk, i) - 32) * i32::from(q[i]))
                .sum();
            sc * isum
        })
        .sum()
}

/// `t` of one super-block from its scale `d`, exact integer sum and hidden scale.
#[inline(always)]
fn q6k_term(d: f32, sumi: i32, dh: f32) -> f32 {
    (d * dh) * sumi as f32
}

/// One Q6_K row (`nsb · 210` bytes) · `h`: the scalar reference.
pub fn dot_q6k_ref(row: &[u8], h: &HiddenQ8K) -> f32 {
    let mut s = 0f32;
    for (b, blk) in row.chunks_exact(Q6K_BYTES).enumerate() {
        let sumi = q6k_sumi_ref(blk, &h.q[b * Q6K_ELEMS..(b + 1) * Q6K_ELEMS]);
        s += q6k_term(f16_at(blk, 208), sumi, h.d[b]);
    }
    s
}

/// The instruction set these kernels use: [`Isa::best`] (so `ONEBIT_ISA` caps it too), with
/// F16C required besides for the block scales.
pub fn isa() -> Isa {
    let i = Isa::best();
    if simd_ok(i) {
        i
    } else {
        Isa::Scalar
    }
}

/// Whether the kernels of `isa` can run here.
pub(crate) fn simd_ok(isa: Isa) -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        isa.available() && (isa == Isa::Scalar || std::is_x86_feature_detected!("f16c"))
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        isa == Isa::Scalar
    }
}

/// A row kernel: `out[i] = row_i · h` for consecutive rows.
type RowsKernel<H> = unsafe fn(&[u8], &H, &mut [f32]);

/// Runs `rows` (of `rb` bytes each) through the kernel of `isa` (which must be available,
/// see [`Isa::available`]; the SIMD kernels also need F16C), or row by row through `reference`.
fn rows_with<H>(
    isa: Isa,
    rows: &[u8],
    rb: usize,
    h: &H,
    out: &mut [f32],
    simd: [Option<RowsKernel<H>>; 2],
    reference: fn(&[u8], &H) -> f32,
) {
    assert_eq!(rows.len(), out.len() * rb, "embd_quant rows: sizes");
    if rb == 0 {
        out.fill(0.0);
        return;
    }
    let kernel = match isa {
        Isa::Avx512Vnni => simd[0],
        Isa::Avx2 => simd[1],
        Isa::Scalar => None,
    };
    match kernel {
        Some(k) => {
            assert!(simd_ok(isa), "{} with F16C is not available", isa.name());
            // SAFETY: the CPU has the kernel's instructions and F16C (checked just above);
            // the sizes are checked above.
            unsafe { k(rows, h, out) }
        }
        None => {
            for (o, row) in out.iter_mut().zip(rows.chunks_exact(rb)) {
                *o = reference(row, h);
            }
        }
    }
}

/// `out[i] = row_i · h` for consecutive Q8_0 rows with the kernels of `isa` (which must be
/// available, see [`Isa::available`]; the SIMD kernels also need F16C).
pub fn rows_q8_0(isa: Isa, rows: &[u8], h: &HiddenQ8, out: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    let simd: [Option<RowsKernel<HiddenQ8>>; 2] = [Some(avx512::rows_q8_0), Some(avx2::rows_q8_0)];
    #[cfg(not(target_arch = "x86_64"))]
    let simd = [None, None];
    rows_with(
        isa,
        rows,
        h.d.len() * Q8_0_BYTES,
        h,
        out,
        simd,
        dot_q8_0_ref,
    )
}

/// `out[i] = row_i · h` for consecutive Q6_K rows with the kernels of `isa` (see
/// [`rows_q8_0`]).
pub fn rows_q6k(isa: Isa, rows: &[u8], h: &HiddenQ8K, out: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    let simd: [Option<RowsKernel<HiddenQ8K>>; 2] = [Some(avx512::rows_q6k), Some(avx2::rows_q6k)];
    #[cfg(not(target_arch = "x86_64"))]
    let simd = [None, None];
    rows_with(isa, rows, h.d.len() * Q6K_BYTES, h, out, simd, dot_q6k_ref)
}
