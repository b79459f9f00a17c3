//! AVX-512 VNNI kernels: `vpdpbusd` multiplies unsigned by signed bytes into i32 with no
//! saturation. Q8_0 weights are signed, so they enter as `w + 128` (a byte xor) and the
//! per-block bias `128·Σq` is subtracted afterwards; 16 blocks' lanes are then reduced to
//! one i32 per block by three rounds of even/odd lane permutes. Q6_K codes are unsigned
//! already; the accumulators start at `−32·Σq` per 4 values, so they hold `Σ (c − 32)·q`
//! and only need the sub-block scales (`vpmulld`) before the final sum.

use super::{HiddenQ8, HiddenQ8K, LANES, Q6K_BYTES, Q6K_ELEMS, Q8_0_BYTES, Q8_0_ELEMS};
use std::arch::x86_64::*;

/// Lanes `(2i, 2i + 1)` of `[a, b]` summed: blocks keep their order, lanes per block halve.
#[inline]
#[target_feature(enable = "avx512f")]
fn pair_sum(a: __m512i, b: __m512i) -> __m512i {
    let even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
    let odd = _mm512_setr_epi32(1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31);
    _mm512_add_epi32(
        _mm512_permutex2var_epi32(a, even, b),
        _mm512_permutex2var_epi32(a, odd, b),
    )
}

/// Raw block sums `Σ (w + 128)·q` of 16 consecutive Q8_0 blocks at `w` (stride 34).
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
unsafe fn raw16(w: *const u8, q: *const i8) -> __m512i {
    // SAFETY: the caller guarantees 16 blocks at `w` and 512 values at `q`.
    unsafe {
        let flip = _mm512_set1_epi8(-128);
        let mut v = [_mm512_setzero_si512(); 8];
        for (j, vj) in v.iter_mut().enumerate() {
            let lo = _mm256_loadu_si256(w.add(2 * j * Q8_0_BYTES + 2).cast());
            let hi = _mm256_loadu_si256(w.add((2 * j + 1) * Q8_0_BYTES + 2).cast());
            let wv = _mm512_inserti64x4::<1>(_mm512_castsi256_si512(lo), hi);
            let qv = _mm512_loadu_si512(q.add(j * 2 * Q8_0_ELEMS).cast());
            *vj = _mm512_dpbusd_epi32(_mm512_setzero_si512(), _mm512_xor_si512(wv, flip), qv);
        }
        let c0 = pair_sum(v[0], v[1]);
        let c1 = pair_sum(v[2], v[3]);
        let c2 = pair_sum(v[4], v[5]);
        let c3 = pair_sum(v[6], v[7]);
        pair_sum(pair_sum(c0, c1), pair_sum(c2, c3))
    }
}

/// # Safety
/// AVX-512 F/BW/VNNI; `rows.len() == out.len() · h.d.len() · 34`.
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
pub unsafe fn rows_q8_0(rows: &[u8], h: &HiddenQ8, out: &mut [f32]) {
    let rb = h.d.len() * Q8_0_BYTES;
    let mut r = 0;
    while r + 4 <= out.len() {
        // SAFETY: AVX-512 F/BW/VNNI per our contract; 4 whole rows and 4 outputs.
        unsafe { tile_q8_0::<4>(&rows[r * rb..(r + 4) * rb], h, &mut out[r..r + 4]) };
        r += 4;
    }
    while r < out.len() {
        // SAFETY: as above, for one row.
        unsafe { tile_q8_0::<1>(&rows[r * rb..(r + 1) * rb], h, &mut out[r..r + 1]) };
        r += 1;
    }
}

/// `R` consecutive rows side by side: each group's hidden values, biases and scales serve
/// all of them, and `R` interleaved streams keep more DRAM reads in flight (as the F16
/// head's 4-row kernel does). Each row keeps its own accumulator, so its order is the
/// reference's.
///
/// # Safety
/// AVX-512 F/BW/VNNI; `rows.len() == R · h.d.len() · 34`, `out.len() == R`.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
unsafe fn tile_q8_0<const R: usize>(rows: &[u8], h: &HiddenQ8, out: &mut [f32]) {
    let nb = h.d.len();
    let rb = nb * Q8_0_BYTES;
    let off = _mm512_setr_epi32(
        0, 34, 68, 102, 136, 170, 204, 238, 272, 306, 340, 374, 408, 442, 476, 510,
    );
    let mut acc = [_mm512_setzero_ps(); R];
    for g in 0..nb / LANES {
        // SAFETY: g·16 + 16 ≤ nb, so 16 blocks of each row, 512 values and 16 scales and
        // biases of h; each gather reads 4 bytes at a block start.
        unsafe {
            let q = h.q.as_ptr().add(g * LANES * Q8_0_ELEMS);
            let bias = _mm512_loadu_si512(h.bias.as_ptr().add(g * LANES).cast());
            let dh = _mm512_loadu_ps(h.d.as_ptr().add(g * LANES));
            for (i, a) in acc.iter_mut().enumerate() {
                let w = rows.as_ptr().add(i * rb + g * LANES * Q8_0_BYTES);
                let isum = _mm512_sub_epi32(raw16(w, q), bias);
                let d16 = _mm512_cvtepi32_epi16(_mm512_i32gather_epi32::<1>(off, w.cast()));
                let scale = _mm512_mul_ps(_mm512_cvtph_ps(d16), dh);
                *a = _mm512_add_ps(*a, _mm512_mul_ps(scale, _mm512_cvtepi32_ps(isum)));
            }
        }
    }
    for (i, a) in acc.iter().enumerate() {
        let mut lanes = [0f32; LANES];
        // SAFETY: `lanes` holds 16 floats.
        unsafe { _mm512_storeu_ps(lanes.as_mut_ptr(), *a) };
        out[i] = super::q8_0_finish(lanes, &rows[i * rb..(i + 1) * rb], h);
    }
}

/// `sumi` of one Q6_K super-block at `b` against 256 values at `q` with corrections `c4`.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
unsafe fn q6k_sumi(b: *const u8, q: *const i8, c4: *const i32) -> i32 {
    // SAFETY: the caller guarantees 210 bytes at `b`, 256 values at `q`, 64 i32 at `c4`.
    unsafe {
        let m4 = _mm512_set1_epi8(0x0F);
        let m2 = _mm512_set1_epi8(0x30);
        let sc = _mm512_cvtepi8_epi32(_mm_loadu_si128(b.add(192).cast()));
        let mut acc = _mm512_setzero_si512();
        for half in 0..2 {
            let ql = _mm512_loadu_si512(b.add(64 * half).cast());
            let qh = _mm256_loadu_si256(b.add(128 + 32 * half).cast());
            // [qh, qh >> 2]: the high bits of values 0..64 of the half sit at bits 0..1 of
            // each byte, those of values 64..128 at bits 4..5.
            let qh2 =
                _mm512_inserti64x4::<1>(_mm512_castsi256_si512(qh), _mm256_srli_epi16::<2>(qh));
            let lo = _mm512_or_si512(
                _mm512_and_si512(ql, m4),
                _mm512_and_si512(_mm512_slli_epi16::<4>(qh2), m2),
            );
            let hi = _mm512_or_si512(
                _mm512_and_si512(_mm512_srli_epi16::<4>(ql), m4),
                _mm512_and_si512(qh2, m2),
            );
            for (k, c) in [lo, hi].into_iter().enumerate() {
                let at = 128 * half + 64 * k;
                let qv = _mm512_loadu_si512(q.add(at).cast());
                let start = _mm512_loadu_si512(c4.add(at / 4).cast());
                let part = _mm512_dpbusd_epi32(start, c, qv);
                // lanes of sub-block j are 4 apart: lane l gets scale (at/16) + l/4
                let j0 = (at / 16) as i32;
                let idx = _mm512_add_epi32(
                    _mm512_set1_epi32(j0),
                    _mm512_setr_epi32(0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3),
                );
                let s = _mm512_permutexvar_epi32(idx, sc);
                acc = _mm512_add_epi32(acc, _mm512_mullo_epi32(part, s));
            }
        }
        _mm512_reduce_add_epi32(acc)
    }
}

/// # Safety
/// AVX-512 F/BW/VNNI and F16C; `rows.len() == out.len() · h.d.len() · 210`.
#[target_feature(enable = "avx512f,avx512bw,avx512vnni,f16c")]
pub unsafe fn rows_q6k(rows: &[u8], h: &HiddenQ8K, out: &mut [f32]) {
    let rb = h.d.len() * Q6K_BYTES;
    let mut r = 0;
    while r + 4 <= out.len() {
        // SAFETY: AVX-512 F/BW/VNNI and F16C per our contract; 4 whole rows and 4 outputs.
        unsafe { tile_q6k::<4>(&rows[r * rb..(r + 4) * rb], h, &mut out[r..r + 4]) };
        r += 4;
    }
    while r < out.len() {
        // SAFETY: as above, for one row.
        unsafe { tile_q6k::<1>(&rows[r * rb..(r + 1) * rb], h, &mut out[r..r + 1]) };
        r += 1;
    }
}

/// `R` consecutive rows side by side (4 DRAM streams, as for Q8_0); each row still adds
/// its super-blocks in order.
///
/// # Safety
/// AVX-512 F/BW/VNNI and F16C; `rows.len() == R · h.d.len() · 210`, `out.len() == R`.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vnni,f16c")]
unsafe fn tile_q6k<const R: usize>(rows: &[u8], h: &HiddenQ8K, out: &mut [f32]) {
    let rb = h.d.len() * Q6K_BYTES;
    let mut s = [0f32; R];
    for (b, dh) in h.d.iter().enumerate() {
        for (i, si) in s.iter_mut().enumerate() {
            let blk = &rows[i * rb + b * Q6K_BYTES..i * rb + (b + 1) * Q6K_BYTES];
            // SAFETY: `blk` is 210 bytes; h holds 256 values and 64 corrections for
            // super-block `b`.
            let sumi = unsafe {
                q6k_sumi(
                    blk.as_ptr(),
                    h.q.as_ptr().add(b * Q6K_ELEMS),
                    h.corr4.as_ptr().add(b * Q6K_ELEMS / 4),
                )
            };
            *si += super::q6k_term(super::f16c_at(blk, 208), sumi, *dh);
        }
    }
    out.copy_from_slice(&s);
}
