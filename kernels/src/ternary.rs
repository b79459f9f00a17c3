//! Ternary weights × int8 activations.
//!
//! Layout (the I2_S block layout of bitnet.cpp, so I2_S files are used straight from the
//! mmap): each output row holds its `cols` codes (`w + 1` ∈ {0, 1, 2}) in blocks of 128
//! elements → 32 bytes; byte `j` of a block holds element `j` in bits 7:6, `j + 32` in 5:4,
//! `j + 64` in 3:2 and `j + 96` in 1:0. Rows whose length is not a multiple of 128 are
//! padded with code 1 (weight 0); activations are padded with zeros.
//!
//! Result per row: `y = (Σ code·q − Σ q) / act_scale × w_scale`, all sums in i32.

use crate::act_quant::ActScale;
use crate::parallel;

pub const BLOCK_ELEMS: usize = 128;
pub const BLOCK_BYTES: usize = 32;

/// Columns rounded up to the block.
pub const fn padded_cols(cols: usize) -> usize {
    cols.div_ceil(BLOCK_ELEMS) * BLOCK_ELEMS
}

/// Bytes of one packed row.
pub const fn row_bytes(cols: usize) -> usize {
    padded_cols(cols) / 4
}

/// A packed ternary matrix `[rows, cols]` borrowed from its storage.
#[derive(Clone, Copy, Debug)]
pub struct TernaryView<'a> {
    pub rows: usize,
    pub cols: usize,
    pub data: &'a [u8],
}

impl<'a> TernaryView<'a> {
    /// Checks that `data` holds exactly `rows` packed rows.
    pub fn new(rows: usize, cols: usize, data: &'a [u8]) -> Option<Self> {
        (data.len() == rows * row_bytes(cols)).then_some(Self { rows, cols, data })
    }

    pub fn row(&self, r: usize) -> &'a [u8] {
        let rb = row_bytes(self.cols);
        &self.data[r * rb..(r + 1) * rb]
    }

    /// The code (`w + 1`) at `(r, c)`.
    pub fn code(&self, r: usize, c: usize) -> u8 {
        let row = self.row(r);
        let (block, within) = (c / BLOCK_ELEMS, c % BLOCK_ELEMS);
        let (group, j) = (within / 32, within % 32);
        (row[block * BLOCK_BYTES + j] >> (6 - 2 * group)) & 3
    }
}

/// Packs codes given by `code(r, c)` (each in {0, 1, 2}) into the block layout.
pub fn pack(rows: usize, cols: usize, mut code: impl FnMut(usize, usize) -> u8) -> Vec<u8> {
    let rb = row_bytes(cols);
    let mut out = vec![0u8; rows * rb];
    for r in 0..rows {
        let row = &mut out[r * rb..(r + 1) * rb];
        for c in 0..padded_cols(cols) {
            let v = if c < cols { code(r, c) } else { 1 };
            debug_assert!(v <= 2, "ternary code out of range");
            let (block, within) = (c / BLOCK_ELEMS, c % BLOCK_ELEMS);
            let (group, j) = (within / 32, within % 32);
            row[block * BLOCK_BYTES + j] |= (v & 3) << (6 - 2 * group);
        }
    }
    out
}

/// Scalar reference: Σ code·q over one packed row (`q.len() == padded_cols`).
pub fn dot_codes_ref(row: &[u8], q: &[i8]) -> i32 {
    let mut acc = 0i32;
    for (b, block) in row.chunks_exact(BLOCK_BYTES).enumerate() {
        let qb = &q[b * BLOCK_ELEMS..(b + 1) * BLOCK_ELEMS];
        for (j, &byte) in block.iter().enumerate() {
            for g in 0..4 {
                let code = i32::from((byte >> (6 - 2 * g)) & 3);
                acc += code * i32::from(qb[g * 32 + j]);
            }
        }
    }
    acc
}

fn epilogue(dot: i32, act: ActScale, w_scale: f32) -> f32 {
    (dot - act.sum) as f32 / act.scale * w_scale
}

/// Scalar reference GEMV: `out[r] = W[r]·x` for one quantized activation row.
pub fn gemv_ref(w: TernaryView<'_>, q: &[i8], act: ActScale, w_scale: f32, out: &mut [f32]) {
    assert_eq!(q.len(), padded_cols(w.cols), "gemv: activation length");
    assert_eq!(out.len(), w.rows, "gemv: output length");
    for (r, o) in out.iter_mut().enumerate() {
        *o = epilogue(dot_codes_ref(w.row(r), q), act, w_scale);
    }
}

/// Σ code·q over one row with the best instructions this CPU has.
#[inline]
pub fn dot_codes(row: &[u8], q: &[i8]) -> i32 {
    #[cfg(target_arch = "x86_64")]
    {
        if avx2::available() {
            // SAFETY: AVX2 is present (checked by `available`), and `row`/`q` lengths agree
            // (asserted by the callers: row is padded_cols/4 bytes, q is padded_cols).
            return unsafe { avx2::dot_codes(row, q) };
        }
    }
    dot_codes_ref(row, q)
}

/// GEMV over all rows, split across the thread pool.
pub fn gemv(w: TernaryView<'_>, q: &[i8], act: ActScale, w_scale: f32, out: &mut [f32]) {
    assert_eq!(q.len(), padded_cols(w.cols), "gemv: activation length");
    assert_eq!(out.len(), w.rows, "gemv: output length");
    parallel::for_rows(out, 64, |first, chunk| {
        for (i, o) in chunk.iter_mut().enumerate() {
            *o = epilogue(dot_codes(w.row(first + i), q), act, w_scale);
        }
    });
}

/// GEMM for prefill: `n` activation rows (each `padded_cols` long) against all weight rows.
/// `out` is `[n, rows]`. Weight rows are the outer loop so each is read once per call.
pub fn gemm(w: TernaryView<'_>, q: &[i8], acts: &[ActScale], w_scale: f32, out: &mut [f32]) {
    let k = padded_cols(w.cols);
    let n = acts.len();
    assert_eq!(q.len(), n * k, "gemm: activation length");
    assert_eq!(out.len(), n * w.rows, "gemm: output length");
    let mut transposed = vec![0f32; w.rows * n];
    parallel::for_rows_strided(&mut transposed, n, 16, |first_row, chunk| {
        for (i, dst) in chunk.chunks_exact_mut(n).enumerate() {
            let row = w.row(first_row + i);
            for (t, d) in dst.iter_mut().enumerate() {
                *d = epilogue(dot_codes(row, &q[t * k..(t + 1) * k]), acts[t], w_scale);
            }
        }
    });
    for r in 0..w.rows {
        for t in 0..n {
            out[t * w.rows + r] = transposed[r * n + t];
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use super::{BLOCK_BYTES, BLOCK_ELEMS};
    use std::arch::x86_64::*;
    use std::sync::OnceLock;

    pub fn available() -> bool {
        static HAS: OnceLock<bool> = OnceLock::new();
        *HAS.get_or_init(|| std::is_x86_feature_detected!("avx2"))
    }

    /// # Safety
    /// AVX2 must be available; `q.len() == row.len() * 4`.
    #[target_feature(enable = "avx2")]
    pub unsafe fn dot_codes(row: &[u8], q: &[i8]) -> i32 {
        assert_eq!(q.len(), row.len() * 4);
        let mask = _mm256_set1_epi8(3);
        let ones = _mm256_set1_epi16(1);
        let mut acc = _mm256_setzero_si256();
        for b in 0..row.len() / BLOCK_BYTES {
            // SAFETY: block b spans row[b*32..b*32+32] and q[b*128..b*128+128], both in bounds.
            let (w, q0, q1, q2, q3) = unsafe {
                let wp = row.as_ptr().add(b * BLOCK_BYTES);
                let qp = q.as_ptr().add(b * BLOCK_ELEMS);
                (
                    _mm256_loadu_si256(wp.cast()),
                    _mm256_loadu_si256(qp.cast()),
                    _mm256_loadu_si256(qp.add(32).cast()),
                    _mm256_loadu_si256(qp.add(64).cast()),
                    _mm256_loadu_si256(qp.add(96).cast()),
                )
            };
            let c0 = _mm256_and_si256(_mm256_srli_epi16(w, 6), mask);
            let c1 = _mm256_and_si256(_mm256_srli_epi16(w, 4), mask);
            let c2 = _mm256_and_si256(_mm256_srli_epi16(w, 2), mask);
            let c3 = _mm256_and_si256(w, mask);
            // codes ≤ 2, |q| ≤ 128: each i16 pair sum ≤ 512, no saturation.
            let p0 = _mm256_maddubs_epi16(c0, q0);
            let p1 = _mm256_maddubs_epi16(c1, q1);
            let p2 = _mm256_maddubs_epi16(c2, q2);
            let p3 = _mm256_maddubs_epi16(c3, q3);
            let s = _mm256_add_epi16(_mm256_add_epi16(p0, p1), _mm256_add_epi16(p2, p3));
            acc = _mm256_add_epi32(acc, _mm256_madd_epi16(s, ones));
        }
        let lo = _mm256_castsi256_si128(acc);
        let hi = _mm256_extracti128_si256::<1>(acc);
        let s = _mm_add_epi32(lo, hi);
        let s = _mm_add_epi32(s, _mm_shuffle_epi32::<0b01_00_11_10>(s));
        let s = _mm_add_epi32(s, _mm_shuffle_epi32::<0b10_11_00_01>(s));
        _mm_cvtsi128_si32(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::act_quant::quantize_row_ref;
    use proptest::prelude::*;

    fn random_codes(rows: usize, cols: usize, seed: u64) -> Vec<u8> {
        let mut s = seed | 1;
        (0..rows * cols)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                (s % 3) as u8
            })
            .collect()
    }

    #[test]
    fn pack_roundtrips_codes() {
        let (rows, cols) = (3, 300);
        let codes = random_codes(rows, cols, 9);
        let data = pack(rows, cols, |r, c| codes[r * cols + c]);
        let v = TernaryView::new(rows, cols, &data).unwrap();
        for r in 0..rows {
            for c in 0..cols {
                assert_eq!(v.code(r, c), codes[r * cols + c]);
            }
        }
    }

    #[test]
    fn block_layout_matches_i2s_bit_order() {
        // Element 0 → bits 7:6 of byte 0, element 32 → bits 5:4, 64 → 3:2, 96 → 1:0.
        let data = pack(1, 128, |_, c| match c {
            0 => 2,
            32 => 0,
            64 => 2,
            96 => 0,
            _ => 1,
        });
        assert_eq!(data[0], 0b10_00_10_00);
        assert_eq!(data[1], 0b01_01_01_01);
    }

    proptest! {
        #[test]
        fn gemv_matches_reference(rows in 1usize..40, cols in 1usize..700, seed in any::<u64>()) {
            let codes = random_codes(rows, cols, seed);
            let data = pack(rows, cols, |r, c| codes[r * cols + c]);
            let w = TernaryView::new(rows, cols, &data).unwrap();
            let x: Vec<f32> = (0..cols).map(|i| ((i as f32 * 0.37 + seed as f32).sin()) * 3.0).collect();
            let mut q = vec![0i8; padded_cols(cols)];
            let act = quantize_row_ref(&x, &mut q);
            let mut a = vec![0f32; rows];
            let mut b = vec![0f32; rows];
            gemv_ref(w, &q, act, 0.7, &mut a);
            gemv(w, &q, act, 0.7, &mut b);
            prop_assert_eq!(&a, &b);
            // and against plain ternary arithmetic
            for r in 0..rows {
                let exact: i32 = (0..cols).map(|c| (i32::from(codes[r * cols + c]) - 1) * i32::from(q[c])).sum();
                prop_assert_eq!(a[r], exact as f32 / act.scale * 0.7);
            }
        }

        #[test]
        fn gemm_matches_gemv(rows in 1usize..20, cols in 1usize..300, n in 1usize..6, seed in any::<u64>()) {
            let codes = random_codes(rows, cols, seed);
            let data = pack(rows, cols, |r, c| codes[r * cols + c]);
            let w = TernaryView::new(rows, cols, &data).unwrap();
            let k = padded_cols(cols);
            let mut q = vec![0i8; n * k];
            let mut acts = Vec::new();
            for t in 0..n {
                let x: Vec<f32> = (0..cols).map(|i| ((i * (t + 1)) as f32 * 0.11).cos()).collect();
                acts.push(quantize_row_ref(&x, &mut q[t * k..(t + 1) * k]));
            }
            let mut out = vec![0f32; n * rows];
            gemm(w, &q, &acts, 1.5, &mut out);
            for t in 0..n {
                let mut one = vec![0f32; rows];
                gemv_ref(w, &q[t * k..(t + 1) * k], acts[t], 1.5, &mut one);
                prop_assert_eq!(&out[t * rows..(t + 1) * rows], &one[..]);
            }
        }
    }
}
