//! AVX-512 VNNI tiles. One group (128 weights, 32 blocks) decodes with two `vpermt2d`: the
//! 16 index bytes widen to 16 dword lanes (`vpmovzxbd`), whose low nibble picks blocks
//! 0..15 and, shifted right by 4, blocks 16..31; each block's sign bit, put in bit 4 of its
//! lane, picks the flipped half of the 32-entry table. Each dword lane then holds the four
//! codes of one block, in column order, so the activations are read straight and
//! `vpdpbusd` sums one block per lane.

use super::{CODES, CODES_FLIPPED, GROUP_BYTES, GROUP_ELEMS, INDEX_BYTES};
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

/// Codes of blocks 0..15 and 16..31 of the group at `g`: one two-table `vpermt2d` per half,
/// whose 5-bit lane index is the block's 4-bit index with its sign bit as bit 4 (picking
/// the flipped table). The sign bits reach bit 4 of their lanes by a rotate per lane of the
/// broadcast sign word, so the decode takes 3 shuffle-port µops (the widening and two
/// permutes) where write masks from the sign word took 7 (two `kmov`, four `vpermd`): on one
/// Xeon thread (family 6, model 207) a 4-row GEMV tile went from 7.0 to 11.1 GB/s of
/// weights in cache.
#[inline]
#[target_feature(enable = "avx512f,avx512bw")]
unsafe fn decode(g: *const u8, table: __m512i, flipped: __m512i) -> (__m512i, __m512i) {
    // SAFETY: the caller guarantees GROUP_BYTES readable bytes at `g`.
    let (index, signs) = unsafe {
        (
            _mm512_cvtepu8_epi32(_mm_loadu_si128(g.cast())),
            _mm512_set1_epi32(g.add(INDEX_BYTES).cast::<i32>().read_unaligned()),
        )
    };
    // Lane j: rotate sign bit j (blocks 0..15), then 16 + j (blocks 16..31), to bit 4.
    let to_bit4_lo = _mm512_setr_epi32(4, 3, 2, 1, 0, 31, 30, 29, 28, 27, 26, 25, 24, 23, 22, 21);
    let to_bit4_hi = _mm512_setr_epi32(20, 19, 18, 17, 16, 15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5);
    let nibble = _mm512_set1_epi32(15);
    // Bits 3:0 from the index nibble, the rest from the rotated signs (`nibble ? index :
    // signs`); `vpermt2d` reads bits 4:0 only.
    const SELECT: i32 = 0xCA;
    let lo =
        _mm512_ternarylogic_epi32::<SELECT>(nibble, index, _mm512_rolv_epi32(signs, to_bit4_lo));
    let hi = _mm512_ternarylogic_epi32::<SELECT>(
        nibble,
        _mm512_srli_epi32::<4>(index),
        _mm512_rolv_epi32(signs, to_bit4_hi),
    );
    (
        _mm512_permutex2var_epi32(table, lo, flipped),
        _mm512_permutex2var_epi32(table, hi, flipped),
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
    // SAFETY: the tables are 16 u32 each, exactly one zmm.
    let (table, flipped) = unsafe {
        (
            _mm512_loadu_si512(CODES.as_ptr().cast()),
            _mm512_loadu_si512(CODES_FLIPPED.as_ptr().cast()),
        )
    };
    let mut a = [[_mm512_setzero_si512(); T]; R];
    for g in 0..groups {
        let mut c = [(_mm512_setzero_si512(), _mm512_setzero_si512()); R];
        for (r, c) in c.iter_mut().enumerate() {
            // SAFETY: group g of row r is inside `w`.
            *c = unsafe { decode(w.add(r * rb + g * GROUP_BYTES), table, flipped) };
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
