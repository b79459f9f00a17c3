//! Zero-skipping GEMV for inputs with many exact zeros (BitNet's down_proj input is
//! `relu²(gate)·up`, quantized to int8: often more than half of it is 0).
//!
//! A zero `q[c]` adds nothing to `Σ code·q` nor to `Σ q`, so summing over the nonzero
//! columns only gives the same i32 as the dense kernels and, through the same epilogue, the
//! same f32 bit for bit. To skip a column's bytes at all the weights must be input-channel
//! major, hence [`ColumnTernary`], repacked once at load.
//!
//! Layout: rows are cut into tiles of [`TILE_ROWS`]; a tile's codes of one column are one
//! 64-byte line (2 bits per row), and a tile's lines follow in column order, so the walk
//! over a tile's nonzero columns runs forward through one 64·`cols`-byte region. (Two tiles
//! sharing a 128-byte span per column measured 5–15 % slower at 0–60 % zeros and alike
//! above.) The layout is the same for every ISA, so a matrix is packed once at load.
//!
//! Within a line, byte `b = 16l + 4u + j` holds in bits `2k+1:2k` the code of tile row
//! `64u + 16k + 4l + j`: the order in which the AVX-512 byte interleave of four columns
//! (`unpack{lo,hi}_epi8`, then `_epi16`) puts rows `16a..16a+16` (`a = 4u + k`) into dword
//! lanes 0..15, so its 16 accumulators come out in natural row order.

#[cfg(target_arch = "x86_64")]
mod avx2;
#[cfg(target_arch = "x86_64")]
mod avx512;
mod pack;
mod walk;

use super::{epilogue, padded_cols, Isa, TernaryView};
use crate::act_quant::ActScale;
use crate::parallel;
use crate::parallel::OutPtr;
use walk::{groups, tiles_dots, Ahead, Group};

/// Rows per tile: one 64-byte line of 2-bit codes per column.
pub const TILE_ROWS: usize = 256;
const LINE: usize = 64;

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
    tiles: usize,
    /// The lines start at `data[start]`, 64-byte aligned: a line straddling two cache lines
    /// would double the traffic.
    data: Vec<u8>,
    start: usize,
}

impl ColumnTernary {
    /// Repacks a row-major (I2_S block) matrix; runs on the thread pool.
    pub fn from_rows(w: TernaryView<'_>) -> Self {
        let pcols = padded_cols(w.cols);
        let tiles = w.rows.div_ceil(TILE_ROWS);
        let len = tiles * pcols * LINE;
        let mut data = vec![0u8; len + LINE];
        let start = data.as_ptr().align_offset(LINE);
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

    /// The row-major I2_S blocks again, exactly the bytes [`from_rows`](Self::from_rows)
    /// was given (on the thread pool).
    pub fn to_rows(&self) -> Vec<u8> {
        pack::unpack(self.lines(), self.rows, self.cols, self.pcols)
    }

    /// Memory it holds.
    pub fn bytes(&self) -> usize {
        self.data.len()
    }

    fn lines(&self) -> &[u8] {
        &self.data[self.start..self.start + self.tiles * self.pcols * LINE]
    }

    /// Byte offset of tile `t`'s line of column 0; column `c` is `c * LINE` further.
    #[inline]
    fn tile_offset(&self, t: usize) -> usize {
        t * self.pcols * LINE
    }

    /// The code (`w + 1`) at `(r, c)`.
    pub fn code(&self, r: usize, c: usize) -> u8 {
        assert!(
            r < self.rows && c < self.pcols,
            "code: ({r}, {c}) outside the matrix"
        );
        let (b, shift) = location(r % TILE_ROWS);
        (self.lines()[self.tile_offset(r / TILE_ROWS) + c * LINE + b] >> shift) & 3
    }

    fn check(&self, q_len: usize, what: &str) {
        assert_eq!(
            q_len, self.pcols,
            "{what}: activation length must be padded_cols(cols)"
        );
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
/// [`super::gemv`] on `isa`, both reading their weights from memory. Measured with
/// `examples/sparse_bench.rs` on 2 Sapphire Rapids threads, 30 matrices of 2560×6912, zeros
/// at random positions, sparse/dense time: AVX-512 1.36 at 0 % zeros, 1.08 at 50 %, 0.90 at
/// 60 %, 0.68 at 70 %, 0.51 at 80 %, 0.26 at 90 %; AVX2 0.97 at 0 %, 0.59 at 50 %; scalar
/// 1.09 at 50 %, 0.85 at 60 %. The sparse walk is bound by the line fill buffers its
/// prefetches hold, well below the bandwidth of the dense streams, hence AVX-512's late
/// crossover; the AVX2 dense kernel is compute-bound, hence its early one.
pub fn sparse_gemv_threshold(isa: Isa) -> f32 {
    match isa {
        Isa::Avx512Vnni => 0.45,
        Isa::Avx2 => 0.9,
        Isa::Scalar => 0.45,
    }
}

/// Like [`sparse_gemv_threshold`] for [`gemm_sparse`] over `n` rows against [`super::gemm`]:
/// the dense tiles unpack each weight once per 4 rows and read it from memory once per
/// call, the sparse walk goes once per row. From `sparse_bench` (2 Xeon threads, family 6
/// model 207, zeros at random positions; the zero share where sparse starts to win), AVX-512
/// with GFNI: n = 2 at 82 %, n = 4, 8, 16 not even at 90 % (sparse/dense 1.2–1.5 there),
/// n = 128 at 68 %; AVX2: n = 2 at 60 %, 4 at 78 %, 8 at 70 %, 16 at 63 %, 128 at 56 %.
/// On a 2-vCPU AMD EPYC Zen 4 (family 25, model 17; `ISA=avx512 REPS=5`), AVX-512: n = 8
/// at 89 %, 16 at 88 %, 128 at 47 % (sparse/dense 0.83 at 60 %, 0.70 at 70 %). Prefill's
/// threshold sits between the two CPUs, at 60 % zeros: relu² leaves about two thirds of
/// down_proj's inputs zero, where the sparse walk gains 30 % on the Zen 4 and about breaks
/// even on the Xeon. (I2_S takes the sparse walk anyway once its row-major copy is dropped;
/// Sherry keeps its rows, so this decides its prefill: pp128 of the 2B-4T shape on the Zen 4
/// 122–132 tok/s dense, 140–141 sparse.)
/// Compare it with the mean nonzero share of the rows.
pub fn sparse_gemm_threshold(isa: Isa, n: usize) -> f32 {
    match (isa, n) {
        (Isa::Avx512Vnni, 0..=2) => 0.18,
        (Isa::Avx512Vnni, 3..=16) => 0.05,
        (Isa::Avx512Vnni, _) => 0.40,
        (Isa::Avx2, 0..=16) => 0.3,
        (Isa::Avx2, _) => 0.44,
        (Isa::Scalar, _) => 0.5,
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

#[cfg(test)]
mod tests;
