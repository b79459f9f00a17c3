//! The walk over nonzero columns: the list of them, four at a time, and the tile loop that
//! feeds it to a kernel with the lines prefetched ahead.

use super::location;
#[cfg(target_arch = "x86_64")]
use super::{avx2, avx512};
use super::{ColumnTernary, Isa, LINE, TILE_ROWS};

/// Four nonzero columns and their activations as the 4 bytes of one dword (the `vpdpbusd`
/// operand); a short last group repeats a column with activation 0.
#[derive(Clone, Copy, Debug, Default)]
#[repr(C)]
pub(crate) struct Group {
    pub(super) cols: [u32; 4],
    pub(super) q: i32,
}

/// The nonzero columns of `q`, four at a time. Eight columns per step: a word's nonzero
/// bytes become a bit mask, walked bit by bit (a branch per column would mispredict on
/// every other one at 50 % zeros).
pub(super) fn groups(q: &[i8], out: &mut Vec<Group>) {
    const LOW7: u64 = 0x7f7f_7f7f_7f7f_7f7f;
    out.clear();
    out.reserve(q.len() / 4 + 1);
    let mut cur = Group::default();
    let mut fill = 0;
    let words = q.chunks_exact(8);
    let mut tail = [0u8; 8];
    for (b, &v) in tail.iter_mut().zip(words.remainder()) {
        *b = v as u8;
    }
    let words = words.map(|c| std::array::from_fn(|i| c[i] as u8));
    for (w, bytes) in words.chain(std::iter::once(tail)).enumerate() {
        let x = u64::from_le_bytes(bytes);
        // Bit 8i+7 set where byte i is nonzero.
        let mut m = (((x & LOW7) + LOW7) | x) & !LOW7;
        while m != 0 {
            let i = m.trailing_zeros() as usize / 8;
            m &= m - 1;
            cur.cols[fill] = (8 * w + i) as u32;
            cur.q |= i32::from(bytes[i]) << (8 * fill);
            fill += 1;
            if fill == 4 {
                out.push(cur);
                cur = Group::default();
                fill = 0;
            }
        }
    }
    if fill > 0 {
        // A short last group repeats its first column with activation 0.
        for i in fill..4 {
            cur.cols[i] = cur.cols[0];
        }
        out.push(cur);
    }
}

/// Lines a kernel prefetches (into L2) while it walks its groups: at step `i` those of
/// `groups[i]` (the 64-byte line at `base + c·span` per column). The
/// hardware prefetchers cannot follow a stream with random gaps; the group list says exactly
/// which lines come next. Without it the DRAM-bound GEMV ran 1.3–2× slower at 0–90 % zeros.
#[derive(Clone, Copy)]
pub(crate) struct Ahead<'a> {
    base: *const u8,
    groups: &'a [Group],
}

impl Ahead<'_> {
    const NONE: Ahead<'static> = Ahead {
        base: std::ptr::null(),
        groups: &[],
    };

    #[inline(always)]
    pub(super) fn prefetch(&self, i: usize, span: usize) {
        #[cfg(target_arch = "x86_64")]
        if let Some(g) = self.groups.get(i) {
            use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T1};
            for &c in &g.cols {
                // A prefetch never faults, so the address need not be valid.
                let a = self.base.wrapping_add(c as usize * span);
                // SAFETY: SSE is part of x86-64; a prefetch never faults.
                unsafe { _mm_prefetch::<_MM_HINT_T1>(a.cast()) };
            }
        }
    }
}

/// How far ahead (in groups) the lines are prefetched, into L2: into L1 (`T0`) measured
/// 10–30 % slower (the prefetches then hold L1 fill buffers the loads need); 16–64 groups
/// measured alike on one Sapphire Rapids thread.
const PREFETCH_GROUPS: usize = 32;

/// Adds `Σ code·q` over `groups` to tile `t`'s accumulators (natural row order).
fn tile_dots(
    isa: Isa,
    w: &ColumnTernary,
    t: usize,
    groups: &[Group],
    ahead: Ahead<'_>,
    acc: &mut [i32; TILE_ROWS],
) {
    let base = w.tile_offset(t);
    let lines = w.lines();
    assert!(
        base + w.pcols * LINE <= lines.len(),
        "tile outside the matrix"
    );
    debug_assert!(groups
        .iter()
        .all(|g| g.cols.iter().all(|&c| (c as usize) < w.pcols)));
    // SAFETY: every group column is < pcols (built from `q`, whose length was checked to be
    // pcols), so each line read lies inside `data` (asserted above); the ISA was checked.
    unsafe {
        let p = lines.as_ptr().add(base);
        match isa {
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512Vnni => avx512::tile_dots(p, LINE, groups, ahead, acc),
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => avx2::tile_dots(p, LINE, groups, ahead, acc),
            _ => tile_dots_scalar(p, LINE, groups, acc),
        }
    }
}

/// Portable kernel: sums in line order (`4·byte + k`, so the inner loop is straight and
/// vectorizes), put in row order once at the end.
///
/// # Safety
/// Each group column `c` must have a 64-byte line at `p + c·span`.
unsafe fn tile_dots_scalar(
    p: *const u8,
    span: usize,
    groups: &[Group],
    acc: &mut [i32; TILE_ROWS],
) {
    let mut by_slot = [0i32; TILE_ROWS];
    for g in groups {
        for (i, &c) in g.cols.iter().enumerate() {
            let qv = i32::from((g.q >> (8 * i)) as i8);
            // SAFETY: the caller guarantees the line is readable.
            let line = unsafe { std::slice::from_raw_parts(p.add(c as usize * span), LINE) };
            for (slots, &byte) in by_slot.chunks_exact_mut(4).zip(line) {
                for (k, s) in slots.iter_mut().enumerate() {
                    *s += i32::from((byte >> (2 * k)) & 3) * qv;
                }
            }
        }
    }
    for (r, a) in acc.iter_mut().enumerate() {
        let (b, shift) = location(r);
        *a += by_slot[4 * b + shift as usize / 2];
    }
}

/// Dots of the tiles `t0..t1` against one group list, handed to `sink(tile, acc)`; with
/// `prefetch`, each tile's lines are prefetched [`PREFETCH_GROUPS`] ahead.
pub(super) fn tiles_dots(
    isa: Isa,
    w: &ColumnTernary,
    t0: usize,
    t1: usize,
    groups: &[Group],
    prefetch: bool,
    sink: &mut impl FnMut(usize, &[i32; TILE_ROWS]),
) {
    for t in t0..t1 {
        let ahead = match prefetch {
            true => Ahead {
                base: w.lines().as_ptr().wrapping_add(w.tile_offset(t)),
                groups: &groups[PREFETCH_GROUPS.min(groups.len())..],
            },
            false => Ahead::NONE,
        };
        let mut acc = [0i32; TILE_ROWS];
        tile_dots(isa, w, t, groups, ahead, &mut acc);
        sink(t, &acc);
    }
}
