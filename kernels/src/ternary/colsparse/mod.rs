//! Zero-skipping GEMV for inputs with many exact zeros (BitNet's down_proj input is
//! `relu²(gate)·up`, quantized to int8: often more than half of it is 0).
//!
//! A zero `q[c]` adds nothing to `Σ code·q` nor to `Σ q`, so summing over the nonzero
//! columns only gives the same i32 as the dense kernels and, through the same epilogue, the
//! same f32 bit for bit. To skip a column's bytes at all the weights must be input-channel
//! major, hence [`ColumnTernary`], repacked once at load.
//!
//! Layout: rows are cut into tiles of [`TILE_ROWS`]; a tile's codes of one column are one
//! 64-byte line (2 bits per row). [`TILES_PER_LINE_PAIR`] tiles share a 128-byte span per
//! column (spans of consecutive columns are contiguous), and one thread walks both: the
//! first tile's pass prefetches the whole span, so each needed column costs one 128-byte
//! region instead of two lines 442 KB apart (measured 5–10 % faster at 80–90 % zeros than
//! one line per column; 128 B is also the pair Intel's spatial prefetcher fetches). The
//! layout is the same for every ISA, so a matrix is packed once at load. Within a line, byte `b = 16l + 4u + j` holds in bits `2k+1:2k` the code of
//! tile row `64u + 16k + 4l + j`: the order in which the AVX-512 byte interleave of four
//! columns (`unpack{lo,hi}_epi8`, then `_epi16`) puts rows `16a..16a+16` (`a = 4u + k`) into
//! dword lanes 0..15, so its 16 accumulators come out in natural row order.

#[cfg(target_arch = "x86_64")]
mod avx2;
#[cfg(target_arch = "x86_64")]
mod avx512;
mod pack;

use super::{epilogue, padded_cols, Isa, TernaryView};
use crate::act_quant::ActScale;
use crate::parallel;

/// Rows per tile: one 64-byte line of 2-bit codes per column.
pub const TILE_ROWS: usize = 256;
const LINE: usize = 64;
/// Tiles whose lines of one column lie side by side (a 128-byte prefetch pair).
pub const TILES_PER_LINE_PAIR: usize = 2;
const SPAN: usize = LINE * TILES_PER_LINE_PAIR;

/// Byte and bit shift (`2k`) of tile row `r` inside its line.
#[inline]
const fn location(r: usize) -> (usize, u32) {
    let (u, k, l, j) = (r / 64, (r / 16) % 4, (r / 4) % 4, r % 4);
    (16 * l + 4 * u + j, 2 * k as u32)
}

/// A ternary matrix repacked input-channel-major for zero-skipping GEMV (down_proj).
pub struct ColumnTernary {
    pub rows: usize,
    pub cols: usize,
    /// Columns including the block padding of the row layout (code 1, like the source).
    pcols: usize,
    /// `tiles` rounded up to whole line pairs.
    tiles: usize,
    /// The lines start at `data[start]`, 128-byte aligned: a line straddling two cache
    /// lines (or a pair straddling two prefetch pairs) would double the traffic.
    data: Vec<u8>,
    start: usize,
}

impl ColumnTernary {
    /// Repacks a row-major (I2_S block) matrix; runs on the thread pool.
    pub fn from_rows(w: TernaryView<'_>) -> Self {
        let pcols = padded_cols(w.cols);
        let tiles = w.rows.div_ceil(TILE_ROWS).div_ceil(TILES_PER_LINE_PAIR) * TILES_PER_LINE_PAIR;
        let len = tiles * pcols * LINE;
        let mut data = vec![0u8; len + SPAN];
        let start = data.as_ptr().align_offset(SPAN);
        pack::repack(w, pcols, &mut data[start..start + len]);
        Self {
            rows: w.rows,
            cols: w.cols,
            pcols,
            tiles,
            data,
            start,
        }
    }

    /// Memory it holds.
    pub fn bytes(&self) -> usize {
        self.data.len()
    }

    fn lines(&self) -> &[u8] {
        &self.data[self.start..self.start + self.tiles * self.pcols * LINE]
    }

    /// Byte offset of tile `t`'s line of column 0; column `c` is `c * SPAN` further.
    #[inline]
    fn tile_offset(&self, t: usize) -> usize {
        (t / TILES_PER_LINE_PAIR) * self.pcols * SPAN + (t % TILES_PER_LINE_PAIR) * LINE
    }

    /// The code (`w + 1`) at `(r, c)`.
    pub fn code(&self, r: usize, c: usize) -> u8 {
        assert!(
            r < self.rows && c < self.pcols,
            "code: ({r}, {c}) outside the matrix"
        );
        let (b, shift) = location(r % TILE_ROWS);
        (self.lines()[self.tile_offset(r / TILE_ROWS) + c * SPAN + b] >> shift) & 3
    }

    fn check(&self, q_len: usize, what: &str) {
        assert_eq!(
            q_len, self.pcols,
            "{what}: activation length must be padded_cols(cols)"
        );
    }
}

/// Four nonzero columns and their activations as the 4 bytes of one dword (the `vpdpbusd`
/// operand); a short last group repeats a column with activation 0.
#[derive(Clone, Copy, Debug, Default)]
#[repr(C)]
pub(crate) struct Group {
    cols: [u32; 4],
    q: i32,
}

/// The nonzero columns of `q`, four at a time. Eight columns per step: a word's nonzero
/// bytes become a bit mask, walked bit by bit (a branch per column would mispredict on
/// every other one at 50 % zeros).
fn groups(q: &[i8], out: &mut Vec<Group>) {
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
/// `groups[i]` (`lines` consecutive 64-byte lines per column at `base + c·span`). The
/// hardware prefetchers cannot follow a stream with random gaps; the group list says exactly
/// which lines come next. Without it the DRAM-bound GEMV ran 1.3–2× slower at 0–90 % zeros.
#[derive(Clone, Copy)]
pub(crate) struct Ahead<'a> {
    base: *const u8,
    groups: &'a [Group],
    lines: usize,
}

impl Ahead<'_> {
    const NONE: Ahead<'static> = Ahead {
        base: std::ptr::null(),
        groups: &[],
        lines: 0,
    };

    #[inline(always)]
    fn prefetch(&self, i: usize, span: usize) {
        #[cfg(target_arch = "x86_64")]
        if let Some(g) = self.groups.get(i) {
            use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T1};
            for &c in &g.cols {
                for l in 0..self.lines {
                    // A prefetch never faults, so the address need not be valid.
                    let a = self.base.wrapping_add(c as usize * span + l * LINE);
                    // SAFETY: SSE is part of x86-64; a prefetch never faults.
                    unsafe { _mm_prefetch::<_MM_HINT_T1>(a.cast()) };
                }
            }
        }
    }
}

/// Share of nonzero entries in `q` (what decides between [`gemv_sparse`] and the dense GEMV).
pub fn nonzero_fraction(q: &[i8]) -> f32 {
    if q.is_empty() {
        return 0.0;
    }
    let nz: usize = q.iter().map(|&v| usize::from(v != 0)).sum();
    nz as f32 / q.len() as f32
}

/// The nonzero share of the activations below which [`gemv_sparse`] beats the dense
/// [`super::gemv`] on `isa`, both reading their weights from memory (`examples/sparse_bench.rs`
/// on 2 Sapphire Rapids threads, 30 matrices of 2560×6912, zeros at random positions: AVX-512
/// ratio sparse/dense 1.27 at 50 % zeros, 1.01 at 60 %, 0.80 at 70 %, 0.57 at 80 %; AVX2
/// 0.96 at 40 %, 0.83 at 50 %). The sparse walk is bound by the line fill buffers its
/// prefetches occupy, about half the bandwidth of the dense streams.
pub fn sparse_gemv_threshold(isa: Isa) -> f32 {
    match isa {
        Isa::Avx512Vnni => 0.4,
        Isa::Avx2 => 0.65,
        Isa::Scalar => 0.5,
    }
}

/// Like [`sparse_gemv_threshold`] for [`gemm_sparse`] against [`super::gemm`] (n = 128,
/// weights in cache, compute-bound: the dense tiles unpack each weight once per 4 tokens,
/// the sparse walk once per token): sparse/dense 1.25 at 50 % zeros, 0.88 at 70 % (AVX-512),
/// 1.28 and 0.81 (AVX2). Compare it with the mean nonzero share of the tokens.
pub fn sparse_gemm_threshold(isa: Isa) -> f32 {
    match isa {
        Isa::Avx512Vnni | Isa::Avx2 => 0.35,
        Isa::Scalar => 0.5,
    }
}

/// Groups per kernel call while two tiles of a line pair are walked in turn: their lines
/// (`4 · 64 · 128` B) stay in L1/L2 between the two tiles.
const CHUNK_GROUPS: usize = 64;
/// How far ahead (in groups) the lines are prefetched, into L2: into L1 (`T0`) measured
/// 10–30 % slower (the prefetches then hold L1 fill buffers the loads need); 16–64 groups
/// measured alike on a 2-thread Sapphire Rapids slice.
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
        base + w.pcols.saturating_sub(1) * SPAN + LINE <= lines.len(),
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
            Isa::Avx512Vnni => avx512::tile_dots(p, SPAN, groups, ahead, acc),
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => avx2::tile_dots(p, SPAN, groups, ahead, acc),
            _ => tile_dots_scalar(p, SPAN, groups, acc),
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

/// Dots of the tiles `t0..t1` against one group list, handed to `sink(tile, acc)`. The
/// tiles of a line pair are walked chunk by chunk together: with `prefetch`, the first one's
/// pass prefetches the pair's lines [`PREFETCH_GROUPS`] ahead, the second one finds them in
/// cache.
fn tiles_dots(
    isa: Isa,
    w: &ColumnTernary,
    t0: usize,
    t1: usize,
    groups: &[Group],
    prefetch: bool,
    sink: &mut impl FnMut(usize, &[i32; TILE_ROWS]),
) {
    let mut t = t0;
    while t < t1 {
        let end = ((t / TILES_PER_LINE_PAIR + 1) * TILES_PER_LINE_PAIR).min(t1);
        let base = w.lines().as_ptr().wrapping_add(w.tile_offset(t));
        let mut acc = [[0i32; TILE_ROWS]; TILES_PER_LINE_PAIR];
        for (ci, chunk) in groups.chunks(CHUNK_GROUPS).enumerate() {
            let next = (ci * CHUNK_GROUPS + PREFETCH_GROUPS).min(groups.len());
            for (i, a) in acc.iter_mut().enumerate().take(end - t) {
                let ahead = match i {
                    0 if prefetch => Ahead {
                        base,
                        groups: &groups[next..],
                        lines: end - t,
                    },
                    _ => Ahead::NONE,
                };
                tile_dots(isa, w, t + i, chunk, ahead, a);
            }
        }
        for (i, a) in acc.iter().enumerate().take(end - t) {
            sink(t + i, a);
        }
        t = end;
    }
}

/// Writes one tile's results (`out` is its rows, at most [`TILE_ROWS`]).
fn store(acc: &[i32; TILE_ROWS], out: &mut [f32], act: ActScale, w_scale: f32) {
    for (o, &d) in out.iter_mut().zip(acc) {
        *o = epilogue(d, act, w_scale);
    }
}

/// Tiles per work item: one item per thread, so that each thread walks long runs of lines.
fn tiles_per_item(w: &ColumnTernary) -> usize {
    let used = w.rows.div_ceil(TILE_ROWS);
    used.div_ceil(parallel::threads()).max(1)
}

/// Identical (bit for bit) to [`super::gemv`] on the same matrix; reads only the columns
/// where `q != 0`.
pub fn gemv_sparse(w: &ColumnTernary, q: &[i8], act: ActScale, w_scale: f32, out: &mut [f32]) {
    gemv_sparse_with(Isa::best(), w, q, act, w_scale, out)
}

/// [`gemv_sparse`] on a chosen instruction set (tests and benchmarks; panics if the CPU
/// lacks it).
pub fn gemv_sparse_with(
    isa: Isa,
    w: &ColumnTernary,
    q: &[i8],
    act: ActScale,
    w_scale: f32,
    out: &mut [f32],
) {
    assert!(isa.available(), "{isa:?} is not available on this CPU");
    w.check(q.len(), "gemv_sparse");
    assert_eq!(out.len(), w.rows, "gemv_sparse: output length");
    let mut g = Vec::with_capacity(q.len() / 4 + 1);
    groups(q, &mut g);
    let used = w.rows.div_ceil(TILE_ROWS);
    let per = tiles_per_item(w);
    let o = OutPtr(out.as_mut_ptr());
    let rows = w.rows;
    parallel::for_range(used, per, |t0, t1| {
        tiles_dots(isa, w, t0, t1, &g, true, &mut |t, acc| {
            let r0 = t * TILE_ROWS;
            let n = (r0 + TILE_ROWS).min(rows) - r0;
            // SAFETY: tile t's rows r0..r0+n are inside `out` (n is clipped to rows) and each
            // tile is handed to exactly one thread.
            let dst = unsafe { std::slice::from_raw_parts_mut(o.get().add(r0), n) };
            store(acc, dst, act, w_scale);
        });
    });
}

/// `n` tokens (`q` is `n · padded_cols`, `out` is `[n, rows]`); identical to
/// [`super::gemm`].
pub fn gemm_sparse(w: &ColumnTernary, q: &[i8], acts: &[ActScale], w_scale: f32, out: &mut [f32]) {
    gemm_sparse_with(Isa::best(), w, q, acts, w_scale, out)
}

/// [`gemm_sparse`] on a chosen instruction set (tests and benchmarks; panics if the CPU
/// lacks it).
pub fn gemm_sparse_with(
    isa: Isa,
    w: &ColumnTernary,
    q: &[i8],
    acts: &[ActScale],
    w_scale: f32,
    out: &mut [f32],
) {
    assert!(isa.available(), "{isa:?} is not available on this CPU");
    let n = acts.len();
    assert_eq!(
        q.len(),
        n * w.pcols,
        "gemm_sparse: activation length must be n * padded_cols(cols)"
    );
    assert_eq!(out.len(), n * w.rows, "gemm_sparse: output length");
    let lists: Vec<Vec<Group>> = (0..n)
        .map(|t| {
            let mut g = Vec::new();
            groups(&q[t * w.pcols..(t + 1) * w.pcols], &mut g);
            g
        })
        .collect();
    let used = w.rows.div_ceil(TILE_ROWS);
    let rows = w.rows;
    let o = OutPtr(out.as_mut_ptr());
    // One tile per item: a tile's lines (pcols · 64 B) stay in L2 across the tokens, so only
    // the first token's walk prefetches.
    parallel::for_range(used, 1, |t0, t1| {
        for (tok, g) in lists.iter().enumerate() {
            tiles_dots(isa, w, t0, t1, g, tok == 0, &mut |t, acc| {
                let r0 = t * TILE_ROWS;
                let len = (r0 + TILE_ROWS).min(rows) - r0;
                // SAFETY: token tok's rows r0..r0+len are inside `out` ([n, rows]) and each
                // tile is handed to exactly one thread.
                let dst =
                    unsafe { std::slice::from_raw_parts_mut(o.get().add(tok * rows + r0), len) };
                store(acc, dst, acts[tok], w_scale);
            });
        }
    });
}

/// Scalar reference: `Σ code·q` over the nonzero columns, through [`ColumnTernary::code`].
pub fn gemv_sparse_ref(w: &ColumnTernary, q: &[i8], act: ActScale, w_scale: f32, out: &mut [f32]) {
    w.check(q.len(), "gemv_sparse_ref");
    assert_eq!(out.len(), w.rows, "gemv_sparse_ref: output length");
    let mut dots = vec![0i32; w.rows];
    for (c, &v) in q.iter().enumerate().filter(|(_, v)| **v != 0) {
        for (r, d) in dots.iter_mut().enumerate() {
            *d += i32::from(w.code(r, c)) * i32::from(v);
        }
    }
    for (o, d) in out.iter_mut().zip(dots) {
        *o = epilogue(d, act, w_scale);
    }
}

#[derive(Clone, Copy)]
struct OutPtr(*mut f32);

impl OutPtr {
    /// Through a method, so closures capture the whole (Sync) wrapper, not its field.
    fn get(self) -> *mut f32 {
        self.0
    }
}
// SAFETY: threads write disjoint elements (each tile is handed out once).
unsafe impl Send for OutPtr {}
// SAFETY: as above.
unsafe impl Sync for OutPtr {}

#[cfg(test)]
mod tests;
