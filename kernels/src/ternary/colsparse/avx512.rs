//! AVX-512 VNNI column kernel: four nonzero columns per step, one `vpdpbusd` per 16 rows.
//!
//! The four columns' lines are byte-interleaved (`unpack{lo,hi}_epi8` of columns 0/1 and
//! 2/3, then `unpack{lo,hi}_epi16`), so each dword holds the four columns' 2-bit fields of
//! one line byte; masking with `3 << 2k` leaves the four codes of one row, times `4^k`, as
//! the dword's bytes (at most 192, still a valid unsigned operand), which `vpdpbusd`
//! multiplies by the four activations broadcast as one dword. The sums are shifted back by
//! `2k` once at the end (exact: every term is a multiple of `4^k`), which keeps the shifts
//! off port 0, where `vpdpbusd` runs. No overflow: 1728 groups (6912 columns) · 4 · 192 ·
//! 128 < 2^28.
//!
//! The line layout (see the parent module) makes accumulator `a` hold rows `16a..16a+16`
//! in order. 16 accumulators + 4 lines + 4 interleaved + temps fit the 32 zmm.

use super::{Ahead, Group, TILE_ROWS};
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
    ahead: Ahead<'_>,
    acc: &mut [i32; TILE_ROWS],
) {
    let m = [0x03u8, 0x0c, 0x30, 0xc0].map(|b| _mm512_set1_epi8(b as i8));
    let mut a = [_mm512_setzero_si512(); 16];
    for (i, g) in groups.iter().enumerate() {
        ahead.prefetch(i, span);
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
            for (k, mk) in m.iter().enumerate() {
                let ck = _mm512_and_si512(x, *mk);
                a[4 * u + k] = _mm512_dpbusd_epi32(a[4 * u + k], ck, qb);
            }
        }
    }
    for (i, v) in a.iter().enumerate() {
        let shift = _mm512_set1_epi64(2 * (i % 4) as i64);
        // SAFETY: acc holds 256 i32, i.e. 16 vectors of 16.
        unsafe {
            let d = acc.as_mut_ptr().add(16 * i).cast();
            let sum = _mm512_add_epi32(
                _mm512_loadu_si512(d),
                _mm512_sra_epi32(*v, _mm512_castsi512_si128(shift)),
            );
            _mm512_storeu_si512(d, sum);
        }
    }
}
