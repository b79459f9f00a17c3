//! AVX-512 VNNI column kernel: four nonzero columns per step, one `vpdpbusd` per 16 rows.
//!
//! The four columns' lines are byte-interleaved (`unpack{lo,hi}_epi8` of columns 0/1 and
//! 2/3, then `unpack{lo,hi}_epi16`), so each dword holds the four columns' 2-bit fields of
//! one line byte; shifting by `2k` and masking with 3 leaves the four codes of one row as
//! the dword's bytes, which `vpdpbusd` multiplies by the four activations broadcast as one
//! dword. The line layout (see the parent module) makes accumulator `a` hold rows
//! `16a..16a+16` in order. 16 accumulators + 4 lines + 4 interleaved + temps fit the 32 zmm.

use super::{Group, TILE_ROWS};
use std::arch::x86_64::*;

/// Adds `Σ code·q` over `groups` to `acc` (tile rows in natural order).
///
/// # Safety
/// AVX-512 F/BW/VNNI; each group column `c` has a 64-byte line at `p + c·span`.
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
pub(super) unsafe fn tile_dots(
    p: *const u8,
    span: usize,
    groups: &[Group],
    acc: &mut [i32; TILE_ROWS],
) {
    let m = _mm512_set1_epi8(3);
    let mut a = [_mm512_setzero_si512(); 16];
    for (i, v) in a.iter_mut().enumerate() {
        // SAFETY: acc holds 256 i32, i.e. 16 vectors of 16.
        *v = unsafe { _mm512_loadu_si512(acc.as_ptr().add(16 * i).cast()) };
    }
    for g in groups {
        // SAFETY: the caller guarantees the four lines are readable.
        let [l0, l1, l2, l3] = g
            .cols
            .map(|c| unsafe { _mm512_loadu_si512(p.add(c as usize * span).cast()) });
        let (x_lo, x_hi) = (_mm512_unpacklo_epi8(l0, l1), _mm512_unpackhi_epi8(l0, l1));
        let (y_lo, y_hi) = (_mm512_unpacklo_epi8(l2, l3), _mm512_unpackhi_epi8(l2, l3));
        let v = [
            _mm512_unpacklo_epi16(x_lo, y_lo),
            _mm512_unpackhi_epi16(x_lo, y_lo),
            _mm512_unpacklo_epi16(x_hi, y_hi),
            _mm512_unpackhi_epi16(x_hi, y_hi),
        ];
        let qb = _mm512_set1_epi32(g.q);
        for (u, &x) in v.iter().enumerate() {
            let c = [
                _mm512_and_si512(x, m),
                _mm512_and_si512(_mm512_srli_epi16::<2>(x), m),
                _mm512_and_si512(_mm512_srli_epi16::<4>(x), m),
                _mm512_and_si512(_mm512_srli_epi16::<6>(x), m),
            ];
            for (k, &ck) in c.iter().enumerate() {
                a[4 * u + k] = _mm512_dpbusd_epi32(a[4 * u + k], ck, qb);
            }
        }
    }
    for (i, v) in a.iter().enumerate() {
        // SAFETY: as for the loads.
        unsafe { _mm512_storeu_si512(acc.as_mut_ptr().add(16 * i).cast(), *v) };
    }
}
