//! AVX-512 VNNI tiles. One group (128 weights, 32 blocks) decodes with two `vpermd`: the
//! 16 index bytes widen to 16 dword lanes (`vpmovzxbd`), whose low nibble picks blocks
//! 0..15 and, shifted right by 4, blocks 16..31; the sign word, as two write masks, negates
//! the flipped blocks. Each dword lane then holds the four codes of one block, in column
//! order, so the activations are read straight and `vpdpbusd` sums one block per lane.

use super::{CODES, GROUP_BYTES, GROUP_ELEMS, INDEX_BYTES};
use std::arch::x86_64::*;

/// # Safety
/// The CPU must have AVX-512 F/BW/VNNI; `w` must hold `rt` rows `rb` bytes apart and `q`
/// `tt` rows `k` apart, each at least `groups` groups long; `rt ∈ {1, 4}`, `tt ∈ 1..=4`.
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
pub unsafe fn tile(
    rt: usize,
    tt: usize,
    w: *const u8,
    rb: usize,
    q: *const i8,
    k: usize,
    groups: usize,
    acc: &mut [[i32; 4]; 4],
) {
    // SAFETY: forwarded from the caller's contract.
    unsafe {
        match (rt, tt) {
            (4, 1) => tile_n::<4, 1>(w, rb, q, k, groups, acc),
            (4, 2) => tile_n::<4, 2>(w, rb, q, k, groups, acc),
            (4, 3) => tile_n::<4, 3>(w, rb, q, k, groups, acc),
            (4, 4) => tile_n::<4, 4>(w, rb, q, k, groups, acc),
            (1, 1) => tile_n::<1, 1>(w, rb, q, k, groups, acc),
            (1, 2) => tile_n::<1, 2>(w, rb, q, k, groups, acc),
            (1, 3) => tile_n::<1, 3>(w, rb, q, k, groups, acc),
            (1, 4) => tile_n::<1, 4>(w, rb, q, k, groups, acc),
            _ => unreachable!("tile shape {rt}x{tt}"),
        }
    }
}

/// Codes of blocks 0..15 and 16..31 of the group at `g`: one `vpermd` per half picks each
/// block's codes (`w + 1`) by its 4-bit index, and a subtraction from 2 under the sign word
/// as write mask (`2 − (w + 1) = −w + 1`, bytewise without borrows since every code is at
/// most 2) negates the flipped blocks. The sign word goes to two mask registers instead of
/// being rotated into each lane's index: 6 vector µops per group and row where the rotated
/// index and a two-table `vpermt2d` took 8.
///
/// # Safety
/// `g` must point at `GROUP_BYTES` readable bytes, and the CPU must have AVX-512 F/BW.
#[inline]
#[target_feature(enable = "avx512f,avx512bw")]
unsafe fn decode(g: *const u8, table: __m512i) -> (__m512i, __m512i) {
    // SAFETY: the caller guarantees GROUP_BYTES readable bytes at `g`.
    let (index, signs) = unsafe {
        (
            _mm512_cvtepu8_epi32(_mm_loadu_si128(g.cast())),
            g.add(INDEX_BYTES).cast::<u32>().read_unaligned(),
        )
    };
    let twos = _mm512_set1_epi32(0x0202_0202);
    // `vpermd` reads bits 3:0 of each lane: the low nibble, then the high one shifted down.
    let lo = _mm512_permutexvar_epi32(index, table);
    let hi = _mm512_permutexvar_epi32(_mm512_srli_epi32::<4>(index), table);
    (
        _mm512_mask_sub_epi32(lo, _cvtu32_mask16(signs), twos, lo),
        _mm512_mask_sub_epi32(hi, _cvtu32_mask16(signs >> 16), twos, hi),
    )
}

/// `R` weight rows decoded once per group, used for `T` activation rows.
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
unsafe fn tile_n<const R: usize, const T: usize>(
    w: *const u8,
    rb: usize,
    q: *const i8,
    k: usize,
    groups: usize,
    acc: &mut [[i32; 4]; 4],
) {
    // SAFETY: the table is 16 u32, exactly one zmm.
    let table = unsafe { _mm512_loadu_si512(CODES.as_ptr().cast()) };
    let mut a = [[_mm512_setzero_si512(); T]; R];
    for g in 0..groups {
        let mut c = [(_mm512_setzero_si512(), _mm512_setzero_si512()); R];
        for (r, c) in c.iter_mut().enumerate() {
            // SAFETY: group g of row r is inside `w`.
            *c = unsafe { decode(w.add(r * rb + g * GROUP_BYTES), table) };
        }
        #[allow(clippy::needless_range_loop)] // t indexes both `q` rows and `a` columns
        for t in 0..T {
            // SAFETY: group g of activation row t is inside `q`.
            let (q0, q1) = unsafe {
                let p = q.add(t * k + g * GROUP_ELEMS);
                (
                    _mm512_loadu_si512(p.cast()),
                    _mm512_loadu_si512(p.add(64).cast()),
                )
            };
            for r in 0..R {
                a[r][t] = _mm512_dpbusd_epi32(a[r][t], c[r].0, q0);
                a[r][t] = _mm512_dpbusd_epi32(a[r][t], c[r].1, q1);
            }
        }
    }
    let mut all = [_mm512_setzero_si512(); 16];
    for r in 0..R {
        for t in 0..T {
            all[4 * r + t] = a[r][t];
        }
    }
    let sums = crate::ternary::lane_sums16(all);
    for r in 0..R {
        for t in 0..T {
            acc[r][t] = sums[4 * r + t];
        }
    }
}
