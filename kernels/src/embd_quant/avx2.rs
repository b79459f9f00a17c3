//! AVX2 kernels. Q8_0: `vpmaddubsw` needs one unsigned operand, so the weights' signs move
//! onto the activations (`|w| · sign(w)·q`; `|w| ≤ 128`, `|q| ≤ 127`, so a pair sum stays
//! below 2¹⁵), then eight blocks' lanes are reduced to one i32 per block with `vphaddd`.
//! Q6_K: the 6-bit codes are already unsigned; the `−32` offset is `32 · Σ_j sc_j · Σq_j`,
//! taken once per super-block from the precomputed sums of 16.

use super::{HiddenQ8, HiddenQ8K, LANES, Q6K_BYTES, Q6K_ELEMS, Q8_0_BYTES, Q8_0_ELEMS};
use std::arch::x86_64::*;

/// Block sums of 8 consecutive Q8_0 blocks at `w` (stride 34) against `q` (256 values).
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn isum8(w: *const u8, q: *const i8) -> __m256i {
    // SAFETY: the caller guarantees 8 blocks at `w` and 256 values at `q`.
    unsafe {
        let ones = _mm256_set1_epi16(1);
        let mut v = [_mm256_setzero_si256(); 8];
        for (j, vj) in v.iter_mut().enumerate() {
            let wv = _mm256_loadu_si256(w.add(j * Q8_0_BYTES + 2).cast());
            let qv = _mm256_loadu_si256(q.add(j * Q8_0_ELEMS).cast());
            let p = _mm256_maddubs_epi16(_mm256_abs_epi8(wv), _mm256_sign_epi8(qv, wv));
            *vj = _mm256_madd_epi16(p, ones);
        }
        let h01 = _mm256_hadd_epi32(v[0], v[1]);
        let h23 = _mm256_hadd_epi32(v[2], v[3]);
        let h45 = _mm256_hadd_epi32(v[4], v[5]);
        let h67 = _mm256_hadd_epi32(v[6], v[7]);
        // [b0 b1 b2 b3 | b0 b1 b2 b3] partials (low / high 128-bit halves of each block)
        let a = _mm256_hadd_epi32(h01, h23);
        let b = _mm256_hadd_epi32(h45, h67);
        _mm256_add_epi32(
            _mm256_permute2x128_si256::<0x20>(a, b),
            _mm256_permute2x128_si256::<0x31>(a, b),
        )
    }
}

/// The f16 scales of 8 consecutive Q8_0 blocks at `w`, as f32.
#[inline]
#[target_feature(enable = "avx2,f16c")]
unsafe fn scales8(w: *const u8) -> __m256 {
    // SAFETY: the caller guarantees 8 blocks at `w`; each gather reads 4 bytes at a block
    // start, inside the 8 · 34 bytes.
    unsafe {
        let off = _mm256_setr_epi32(0, 34, 68, 102, 136, 170, 204, 238);
        let g = _mm256_i32gather_epi32::<1>(w.cast(), off);
        // low 16 bits of each dword → 8 u16 in the low 128 bits
        let ctl = _mm256_setr_epi8(
            0, 1, 4, 5, 8, 9, 12, 13, -1, -1, -1, -1, -1, -1, -1, -1, 0, 1, 4, 5, 8, 9, 12, 13, -1,
            -1, -1, -1, -1, -1, -1, -1,
        );
        let p = _mm256_permute4x64_epi64::<0b1000>(_mm256_shuffle_epi8(g, ctl));
        _mm256_cvtph_ps(_mm256_castsi256_si128(p))
    }
}

/// # Safety
/// AVX2 and F16C; `rows.len() == out.len() · h.d.len() · 34`.
#[target_feature(enable = "avx2,f16c")]
pub unsafe fn rows_q8_0(rows: &[u8], h: &HiddenQ8, out: &mut [f32]) {
    let nb = h.d.len();
    let rb = nb * Q8_0_BYTES;
    let groups = nb / LANES * 2;
    for (o, row) in out.iter_mut().zip(rows.chunks_exact(rb)) {
        let mut acc = [_mm256_setzero_ps(); 2];
        for g in 0..groups {
            // SAFETY: g·8 + 8 ≤ nb blocks, so 8 blocks of the row and 256 values of h.
            unsafe {
                let w = row.as_ptr().add(g * 8 * Q8_0_BYTES);
                let isum = isum8(w, h.q.as_ptr().add(g * 8 * Q8_0_ELEMS));
                let dh = _mm256_loadu_ps(h.d.as_ptr().add(g * 8));
                let scale = _mm256_mul_ps(scales8(w), dh);
                let t = _mm256_mul_ps(scale, _mm256_cvtepi32_ps(isum));
                acc[g % 2] = _mm256_add_ps(acc[g % 2], t);
            }
        }
        let mut lanes = [0f32; LANES];
        // SAFETY: `lanes` holds 16 floats.
        unsafe {
            _mm256_storeu_ps(lanes.as_mut_ptr(), acc[0]);
            _mm256_storeu_ps(lanes.as_mut_ptr().add(8), acc[1]);
        }
        *o = super::q8_0_finish(lanes, row, h);
    }
}

/// `[s_{2m} × 8 | s_{2m+1} × 8]` (i16) from the 16 sub-block scales `sc` (i16).
#[inline]
#[target_feature(enable = "avx2")]
fn scale_pair(sc: __m256i, m: i32) -> __m256i {
    let pair = _mm256_permutevar8x32_epi32(sc, _mm256_set1_epi32(m));
    let ctl = _mm256_setr_epi8(
        0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 2, 3, 2, 3, 2, 3, 2, 3, 2, 3, 2, 3, 2, 3,
        2, 3,
    );
    _mm256_shuffle_epi8(pair, ctl)
}

/// `sumi` of one Q6_K super-block at `b` against 256 values at `q` and their 16 sums `s16`.
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn q6k_sumi(b: *const u8, q: *const i8, s16: *const i16) -> i32 {
    // SAFETY: the caller guarantees 210 bytes at `b`, 256 values at `q`, 16 sums at `s16`.
    unsafe {
        let m4 = _mm256_set1_epi8(0x0F);
        let m2 = _mm256_set1_epi8(0x30);
        let sc = _mm256_cvtepi8_epi16(_mm_loadu_si128(b.add(192).cast()));
        let mut acc = _mm256_setzero_si256();
        for half in 0..2 {
            let ql0 = _mm256_loadu_si256(b.add(64 * half).cast());
            let ql1 = _mm256_loadu_si256(b.add(64 * half + 32).cast());
            let qh = _mm256_loadu_si256(b.add(128 + 32 * half).cast());
            let codes = [
                _mm256_or_si256(
                    _mm256_and_si256(ql0, m4),
                    _mm256_and_si256(_mm256_slli_epi16::<4>(qh), m2),
                ),
                _mm256_or_si256(
                    _mm256_and_si256(ql1, m4),
                    _mm256_and_si256(_mm256_slli_epi16::<2>(qh), m2),
                ),
                _mm256_or_si256(
                    _mm256_and_si256(_mm256_srli_epi16::<4>(ql0), m4),
                    _mm256_and_si256(qh, m2),
                ),
                _mm256_or_si256(
                    _mm256_and_si256(_mm256_srli_epi16::<4>(ql1), m4),
                    _mm256_and_si256(_mm256_srli_epi16::<2>(qh), m2),
                ),
            ];
            for (k, c) in codes.iter().enumerate() {
                let qv = _mm256_loadu_si256(q.add(128 * half + 32 * k).cast());
                let p = _mm256_maddubs_epi16(*c, qv);
                let s = scale_pair(sc, (4 * half + k) as i32);
                acc = _mm256_add_epi32(acc, _mm256_madd_epi16(p, s));
            }
        }
        let sums = _mm256_loadu_si256(s16.cast());
        let corr = _mm256_slli_epi32::<5>(_mm256_madd_epi16(sc, sums));
        let v = _mm256_sub_epi32(acc, corr);
        let x = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256::<1>(v));
        let x = _mm_add_epi32(x, _mm_shuffle_epi32::<0b01_00_11_10>(x));
        let x = _mm_add_epi32(x, _mm_shuffle_epi32::<0b10_11_00_01>(x));
        _mm_cvtsi128_si32(x)
    }
}

/// # Safety
/// AVX2 and F16C; `rows.len() == out.len() · h.d.len() · 210`.
#[target_feature(enable = "avx2,f16c")]
pub unsafe fn rows_q6k(rows: &[u8], h: &HiddenQ8K, out: &mut [f32]) {
    let rb = h.d.len() * Q6K_BYTES;
    for (o, row) in out.iter_mut().zip(rows.chunks_exact(rb)) {
        let mut s = 0f32;
        for (b, blk) in row.chunks_exact(Q6K_BYTES).enumerate() {
            // SAFETY: block `b` of the row is 210 bytes; h holds 256 values and 16 sums
            // for it.
            let sumi = unsafe {
                q6k_sumi(
                    blk.as_ptr(),
                    h.q.as_ptr().add(b * Q6K_ELEMS),
                    h.sum16.as_ptr().add(b * 16),
                )
            };
            s += super::q6k_term(super::f16c_at(blk, 208), sumi, h.d[b]);
        }
        *o = s;
    }
}
