//! AVX2 column kernel: two columns per `vpmaddubsw`, summed in i16 for up to 64 column
//! pairs, then widened into i32.
//!
//! A line is handled as two 32-byte halves (128 rows each, 8 i16 accumulators of 16 rows),
//! chunk by chunk, the second half re-reading the chunk's lines from L1. `unpack{lo,hi}_epi8` of two columns' lines
//! gives words holding both columns' 2-bit fields of one line byte; shift by `2k` and mask
//! with 3 leave two codes per word, which `vpmaddubsw` multiplies by the two activations.
//!
//! No i16 overflow: one word of `vpmaddubsw` is at most 2·127·2 = 508 and at least
//! 2·(−128)·2 = −512, so 64 of them stay within [−32768, 32512].

use super::{location, Ahead, Group, TILE_ROWS};
use std::arch::x86_64::*;

/// Column pairs summed in i16 before widening.
const FLUSH_GROUPS: usize = 32;

/// Adds `Σ code·q` over `groups` to `acc` (tile rows in natural order).
///
/// # Safety
/// AVX2; each group column `c` has a 64-byte line at `p + c·span`.
#[target_feature(enable = "avx2")]
pub(super) unsafe fn tile_dots(
    p: *const u8,
    span: usize,
    groups: &[Group],
    ahead: Ahead<'_>,
    acc: &mut [i32; TILE_ROWS],
) {
    // wide[h][4·h2 + k][i]: half h of the line, unpack lo/hi h2, shift 2k, word i.
    let mut wide = [[[0i32; 16]; 8]; 2];
    let m = _mm256_set1_epi8(3);
    for (ci, chunk) in groups.chunks(FLUSH_GROUPS).enumerate() {
        // Both halves per chunk: the second finds the chunk's lines in L1.
        for (h, wide_h) in wide.iter_mut().enumerate() {
            // SAFETY: the caller guarantees the lines; byte 32h.. is their half h.
            let ph = unsafe { p.add(32 * h) };
            let mut a = [_mm256_setzero_si256(); 8];
            for (i, g) in chunk.iter().enumerate() {
                if h == 0 {
                    ahead.prefetch(ci * FLUSH_GROUPS + i, span);
                }
                // SAFETY: as above, 32 bytes of each line.
                let [l0, l1, l2, l3] = g
                    .cols
                    .map(|c| unsafe { _mm256_loadu_si256(ph.add(c as usize * span).cast()) });
                let q01 = _mm256_set1_epi16(g.q as i16);
                let q23 = _mm256_set1_epi16((g.q >> 16) as i16);
                let x = [
                    (_mm256_unpacklo_epi8(l0, l1), q01),
                    (_mm256_unpackhi_epi8(l0, l1), q01),
                    (_mm256_unpacklo_epi8(l2, l3), q23),
                    (_mm256_unpackhi_epi8(l2, l3), q23),
                ];
                for (i, &(v, qq)) in x.iter().enumerate() {
                    let h2 = i % 2;
                    let c = [
                        _mm256_and_si256(v, m),
                        _mm256_and_si256(_mm256_srli_epi16::<2>(v), m),
                        _mm256_and_si256(_mm256_srli_epi16::<4>(v), m),
                        _mm256_and_si256(_mm256_srli_epi16::<6>(v), m),
                    ];
                    for (k, &ck) in c.iter().enumerate() {
                        let j = 4 * h2 + k;
                        a[j] = _mm256_add_epi16(a[j], _mm256_maddubs_epi16(ck, qq));
                    }
                }
            }
            for (dst, v) in wide_h.iter_mut().zip(a) {
                let lo = _mm256_cvtepi16_epi32(_mm256_castsi256_si128(v));
                let hi = _mm256_cvtepi16_epi32(_mm256_extracti128_si256::<1>(v));
                // SAFETY: dst holds 16 i32.
                unsafe {
                    let d = dst.as_mut_ptr().cast::<__m256i>();
                    _mm256_storeu_si256(d, _mm256_add_epi32(_mm256_loadu_si256(d), lo));
                    _mm256_storeu_si256(
                        d.add(1),
                        _mm256_add_epi32(_mm256_loadu_si256(d.add(1)), hi),
                    );
                }
            }
        }
    }
    // Word i of (h, h2, k) is line byte 32h + 16·(i / 8) + 8·h2 + i % 8, shifted by 2k.
    for (r, a) in acc.iter_mut().enumerate() {
        let (b, shift) = location(r);
        let (h, lane, h2, w) = (b / 32, (b / 16) % 2, (b / 8) % 2, b % 8);
        *a += wide[h][4 * h2 + shift as usize / 2][8 * lane + w];
    }
}
