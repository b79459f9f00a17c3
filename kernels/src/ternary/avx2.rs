//! AVX2 tiles: `vpmaddubsw` (unsigned codes × signed int8 → i16 pairs), summed over the four
//! 32-element groups of a block in i16, then `vpmaddwd` by 1 into i32.
//!
//! No i16 overflow: a code is ≤ 2 and |q| ≤ 128, so one pair is ≤ 512 and the sum of the
//! four groups ≤ 2048, far inside i16 and never saturating `vpmaddubsw`.

use super::{BLOCK_BYTES, BLOCK_ELEMS};
use std::arch::x86_64::*;

/// # Safety
/// The CPU must have AVX2; `w` must hold `rt` rows of `rb` bytes and `q` `tt` rows `k`
/// apart, each at least `blocks` blocks long; `rt ≤ 4`, `tt ∈ 1..=4`.
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx2")]
pub unsafe fn tile(
    rt: usize,
    tt: usize,
    w: *const u8,
    rb: usize,
    q: *const i8,
    k: usize,
    blocks: usize,
    acc: &mut [[i32; 4]; 4],
) {
    for (r, row_acc) in acc.iter_mut().enumerate().take(rt) {
        // SAFETY: forwarded from the caller's contract, one weight row at a time.
        unsafe {
            let wr = w.add(r * rb);
            match tt {
                1 => row_n::<1>(wr, q, k, blocks, row_acc),
                2 => row_n::<2>(wr, q, k, blocks, row_acc),
                3 => row_n::<3>(wr, q, k, blocks, row_acc),
                4 => row_n::<4>(wr, q, k, blocks, row_acc),
                _ => unreachable!("tile width {tt}"),
            }
        }
    }
}

/// One weight row unpacked once per block, used for `T` activation rows.
#[target_feature(enable = "avx2")]
unsafe fn row_n<const T: usize>(
    w: *const u8,
    q: *const i8,
    k: usize,
    blocks: usize,
    acc: &mut [i32; 4],
) {
    let mask = _mm256_set1_epi8(3);
    let ones = _mm256_set1_epi16(1);
    let mut a = [_mm256_setzero_si256(); T];
    for b in 0..blocks {
        // SAFETY: block b of the row is inside `w`.
        let v = unsafe { _mm256_loadu_si256(w.add(b * BLOCK_BYTES).cast()) };
        let c0 = _mm256_and_si256(_mm256_srli_epi16::<6>(v), mask);
        let c1 = _mm256_and_si256(_mm256_srli_epi16::<4>(v), mask);
        let c2 = _mm256_and_si256(_mm256_srli_epi16::<2>(v), mask);
        let c3 = _mm256_and_si256(v, mask);
        for (t, acc_t) in a.iter_mut().enumerate() {
            // SAFETY: block b of activation row t is inside `q`.
            let (q0, q1, q2, q3) = unsafe {
                let p = q.add(t * k + b * BLOCK_ELEMS);
                (
                    _mm256_loadu_si256(p.cast()),
                    _mm256_loadu_si256(p.add(32).cast()),
                    _mm256_loadu_si256(p.add(64).cast()),
                    _mm256_loadu_si256(p.add(96).cast()),
                )
            };
            let s01 = _mm256_add_epi16(_mm256_maddubs_epi16(c0, q0), _mm256_maddubs_epi16(c1, q1));
            let s23 = _mm256_add_epi16(_mm256_maddubs_epi16(c2, q2), _mm256_maddubs_epi16(c3, q3));
            *acc_t = _mm256_add_epi32(*acc_t, _mm256_madd_epi16(_mm256_add_epi16(s01, s23), ones));
        }
    }
    for (t, v) in a.iter().enumerate() {
        acc[t] = hsum(*v);
    }
}

#[inline]
#[target_feature(enable = "avx2")]
fn hsum(v: __m256i) -> i32 {
    let s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256::<1>(v));
    let s = _mm_add_epi32(s, _mm_shuffle_epi32::<0b01_00_11_10>(s));
    let s = _mm_add_epi32(s, _mm_shuffle_epi32::<0b10_11_00_01>(s));
    _mm_cvtsi128_si32(s)
}
