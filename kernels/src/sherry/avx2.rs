//! AVX2 tiles. A group's 32 indices become 32 bytes (low nibbles, then high nibbles); four
//! `vpshufb` with one 16-entry table per position in the block give the codes of that
//! position for all 32 blocks, four more from the flipped tables, and the sign bits pick
//! between them (`vpblendvb`). The activations come transposed to match
//! (`[position][block]`, see `prepare`), so `vpmaddubsw` multiplies codes by activations
//! with no further shuffles. Its i16 sums cannot saturate: |2·q + 2·q| ≤ 512, and four
//! positions add up to at most 2048 before `vpmaddwd` widens them.

use super::{CODES, CODES_FLIPPED, GROUP_BYTES, GROUP_ELEMS, INDEX_BYTES};
use std::arch::x86_64::*;

/// # Safety
/// The CPU must have AVX2; `w` must hold `rt` rows `rb` bytes apart and `q` `tt` transposed
/// rows `k` apart, each at least `groups` groups long; `rt ∈ {1, 4}`, `tt ∈ 1..=4`.
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx2")]
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
    for (r, acc) in acc.iter_mut().enumerate().take(rt) {
        // SAFETY: forwarded from the caller's contract, one row at a time.
        unsafe {
            let row = w.add(r * rb);
            match tt {
                1 => row_n::<1>(row, q, k, groups, acc),
                2 => row_n::<2>(row, q, k, groups, acc),
                3 => row_n::<3>(row, q, k, groups, acc),
                4 => row_n::<4>(row, q, k, groups, acc),
                _ => unreachable!("tile of {tt} tokens"),
            }
        }
    }
}

/// The byte tables of the four positions: entry `i` of table `p` is the code of weight `p`
/// of index `i`, repeated in both 128-bit lanes (`vpshufb` looks up within a lane).
const fn position_tables(words: &[u32; 16]) -> [[u8; 32]; 4] {
    let mut t = [[0u8; 32]; 4];
    let mut p = 0;
    while p < 4 {
        let mut i = 0;
        while i < 16 {
            let b = (words[i] >> (8 * p)) as u8;
            t[p][i] = b;
            t[p][i + 16] = b;
            i += 1;
        }
        p += 1;
    }
    t
}

const TABLES: [[u8; 32]; 4] = position_tables(&CODES);
const TABLES_FLIPPED: [[u8; 32]; 4] = position_tables(&CODES_FLIPPED);

/// One weight row against `T` activation rows.
#[target_feature(enable = "avx2")]
unsafe fn row_n<const T: usize>(
    w: *const u8,
    q: *const i8,
    k: usize,
    groups: usize,
    acc: &mut [i32; 4],
) {
    let load = |t: &[u8; 32]| {
        // SAFETY: a 32-byte array is exactly one ymm.
        unsafe { _mm256_loadu_si256(t.as_ptr().cast()) }
    };
    let tables: [__m256i; 4] = std::array::from_fn(|p| load(&TABLES[p]));
    let flipped: [__m256i; 4] = std::array::from_fn(|p| load(&TABLES_FLIPPED[p]));
    let nibble = _mm_set1_epi8(15);
    // Byte b of the sign mask tests bit b % 8 of sign byte b / 8.
    let spread = _mm256_setr_epi8(
        0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3,
        3, 3,
    );
    let bits = _mm256_set1_epi64x(0x8040_2010_0804_0201u64 as i64);
    let ones = _mm256_set1_epi16(1);
    let mut a = [_mm256_setzero_si256(); T];
    for g in 0..groups {
        // SAFETY: group g of the row is inside `w`.
        let (packed, signs) = unsafe {
            let p = w.add(g * GROUP_BYTES);
            (
                _mm_loadu_si128(p.cast()),
                p.add(INDEX_BYTES).cast::<i32>().read_unaligned(),
            )
        };
        let lo = _mm_and_si128(packed, nibble);
        let hi = _mm_and_si128(_mm_srli_epi16::<4>(packed), nibble);
        let index = _mm256_set_m128i(hi, lo);
        let mask = _mm256_shuffle_epi8(_mm256_set1_epi32(signs), spread);
        let mask = _mm256_cmpeq_epi8(_mm256_and_si256(mask, bits), bits);
        let codes: [__m256i; 4] = std::array::from_fn(|p| {
            _mm256_blendv_epi8(
                _mm256_shuffle_epi8(tables[p], index),
                _mm256_shuffle_epi8(flipped[p], index),
                mask,
            )
        });
        for (t, a) in a.iter_mut().enumerate() {
            // SAFETY: group g of transposed activation row t is inside `q`.
            let qp = unsafe { q.add(t * k + g * GROUP_ELEMS) };
            let mut s = _mm256_setzero_si256();
            for (p, c) in codes.iter().enumerate() {
                // SAFETY: as above, 32 bytes per position.
                let qv = unsafe { _mm256_loadu_si256(qp.add(32 * p).cast()) };
                s = _mm256_add_epi16(s, _mm256_maddubs_epi16(*c, qv));
            }
            *a = _mm256_add_epi32(*a, _mm256_madd_epi16(s, ones));
        }
    }
    for (t, v) in a.iter().enumerate() {
        let s = _mm_add_epi32(
            _mm256_castsi256_si128(*v),
            _mm256_extracti128_si256::<1>(*v),
        );
        let s = _mm_add_epi32(s, _mm_shuffle_epi32::<0b01_00_11_10>(s));
        let s = _mm_add_epi32(s, _mm_shuffle_epi32::<0b10_11_00_01>(s));
        acc[t] = _mm_cvtsi128_si32(s);
    }
}
