//! AVX-512 VNNI tiles, over the lane layout ([`tile_lanes`], what the engine runs) or the
//! file's groups ([`tile`], and the lane rows' trailing groups). A file-layout group (128
//! weights, 32 blocks) decodes with two `vpermd`: the 16 index bytes widen to 16 dword lanes
//! (`vpmovzxbd`), whose low nibble picks blocks 0..15 and, shifted right by 4, blocks
//! 16..31; the sign word, as two write masks, negates the flipped blocks. Either way each
//! dword lane ends up holding the four codes of one block, in column order, so the
//! activations are read straight and `vpdpbusd` sums one block per lane.

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
        // SAFETY: group g of every row and activation row is inside `w` and `q`.
        unsafe { add_group(w, rb, g * GROUP_BYTES, q, k, g * GROUP_ELEMS, table, &mut a) };
    }
    crate::ternary::store_lane_sums(a, acc);
}

/// Adds to `a` the dots of the file-layout group `at` bytes into each of `R` rows `rb`
/// apart with activations `from..from + 128` of `T` rows `k` apart.
///
/// # Safety
/// Those bytes and activations must be readable, and the CPU must have AVX-512 F/BW/VNNI.
#[allow(clippy::too_many_arguments)]
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
unsafe fn add_group<const R: usize, const T: usize>(
    w: *const u8,
    rb: usize,
    at: usize,
    q: *const i8,
    k: usize,
    from: usize,
    table: __m512i,
    a: &mut [[__m512i; T]; R],
) {
    let mut c = [(_mm512_setzero_si512(), _mm512_setzero_si512()); R];
    for (r, c) in c.iter_mut().enumerate() {
        // SAFETY: the caller guarantees the group of row r is readable.
        *c = unsafe { decode(w.add(r * rb + at), table) };
    }
    #[allow(clippy::needless_range_loop)] // t indexes both `q` rows and `a` columns
    for t in 0..T {
        // SAFETY: the caller guarantees these activations of row t are readable.
        let (q0, q1) = unsafe {
            let p = q.add(t * k + from);
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

/// [`tile`] over the lane layout (`super::lanes`): `units` units of six 16-block vectors,
/// then `tail` file-layout groups.
///
/// # Safety
/// The CPU must have AVX-512 F/BW/VNNI; `w` must hold `rt` lane rows `rb` bytes apart of
/// `units` units and `tail` groups, and `q` `tt` rows `k` apart, each covering them;
/// `rt ∈ {1, 4}`, `tt ∈ 1..=4`.
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
pub unsafe fn tile_lanes(
    rt: usize,
    tt: usize,
    w: *const u8,
    rb: usize,
    q: *const i8,
    k: usize,
    units: usize,
    tail: usize,
    acc: &mut [[i32; 4]; 4],
) {
    // SAFETY: forwarded from the caller's contract.
    unsafe {
        match (rt, tt) {
            (4, 1) => tile_lanes_n::<4, 1>(w, rb, q, k, units, tail, acc),
            (4, 2) => tile_lanes_n::<4, 2>(w, rb, q, k, units, tail, acc),
            (4, 3) => tile_lanes_n::<4, 3>(w, rb, q, k, units, tail, acc),
            (4, 4) => tile_lanes_n::<4, 4>(w, rb, q, k, units, tail, acc),
            (1, 1) => tile_lanes_n::<1, 1>(w, rb, q, k, units, tail, acc),
            (1, 2) => tile_lanes_n::<1, 2>(w, rb, q, k, units, tail, acc),
            (1, 3) => tile_lanes_n::<1, 3>(w, rb, q, k, units, tail, acc),
            (1, 4) => tile_lanes_n::<1, 4>(w, rb, q, k, units, tail, acc),
            _ => unreachable!("tile shape {rt}x{tt}"),
        }
    }
}

/// `R` lane rows decoded once per vector, used for `T` activation rows. A vector's codes
/// are bits 4:0 of each lane after shifting the unit right by 5 per vector; `vpermt2d`
/// ignores the bits above and takes bit 4, the sign, as its table select.
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
unsafe fn tile_lanes_n<const R: usize, const T: usize>(
    w: *const u8,
    rb: usize,
    q: *const i8,
    k: usize,
    units: usize,
    tail: usize,
    acc: &mut [[i32; 4]; 4],
) {
    use super::lanes::{UNIT_BYTES, UNIT_GROUPS, UNIT_VECTORS};
    // SAFETY: both tables are 16 u32, exactly one zmm each.
    let (table, flipped) = unsafe {
        (
            _mm512_loadu_si512(CODES.as_ptr().cast()),
            _mm512_loadu_si512(super::CODES_FLIPPED.as_ptr().cast()),
        )
    };
    let mut a = [[_mm512_setzero_si512(); T]; R];
    for u in 0..units {
        // SAFETY: unit u of row r is inside `w`.
        let mut x: [__m512i; R] = std::array::from_fn(|r| unsafe {
            _mm512_loadu_si512(w.add(r * rb + u * UNIT_BYTES).cast())
        });
        for f in 0..UNIT_VECTORS {
            let c: [__m512i; R] =
                std::array::from_fn(|r| _mm512_permutex2var_epi32(table, x[r], flipped));
            #[allow(clippy::needless_range_loop)] // t indexes both `q` rows and `a` columns
            for t in 0..T {
                // SAFETY: vector 6u + f of activation row t is inside `q`.
                let qv = unsafe {
                    _mm512_loadu_si512(q.add(t * k + (UNIT_VECTORS * u + f) * 64).cast())
                };
                for r in 0..R {
                    a[r][t] = _mm512_dpbusd_epi32(a[r][t], c[r], qv);
                }
            }
            for x in x.iter_mut() {
                *x = _mm512_srli_epi32::<5>(*x);
            }
        }
    }
    let first = units * UNIT_GROUPS;
    for j in 0..tail {
        let (at, from) = (
            units * UNIT_BYTES + j * GROUP_BYTES,
            (first + j) * GROUP_ELEMS,
        );
        // SAFETY: tail group j of every row, and its activations, are inside `w` and `q`.
        unsafe { add_group(w, rb, at, q, k, from, table, &mut a) };
    }
    crate::ternary::store_lane_sums(a, acc);
}
