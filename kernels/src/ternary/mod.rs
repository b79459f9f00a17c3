//! Ternary weights × int8 activations.
//!
//! Layout (the I2_S block layout of bitnet.cpp, so I2_S files are used straight from the
//! mmap): each output row holds its `cols` codes (`w + 1` ∈ {0, 1, 2}) in blocks of 128
//! elements → 32 bytes; byte `j` of a block holds element `j` in bits 7:6, `j + 32` in 5:4,
//! `j + 64` in 3:2 and `j + 96` in 1:0. Rows whose length is not a multiple of 128 are
//! padded with code 1 (weight 0); activations are padded with zeros.
//!
//! Result per row: `y = (Σ code·q − Σ q) / act_scale × w_scale`, all sums in i32. Codes are
//! unsigned and activations signed, which is exactly the operand order of `vpmaddubsw`
//! (AVX2) and `vpdpbusd` (AVX-512 VNNI), so the kernels never decode to −1/0/+1.
//!
//! The kernels work on tiles of up to 4 weight rows × 4 activation rows: each weight block
//! is loaded and unpacked once per tile and used for every activation row of the tile, which
//! is what makes the prefill GEMM compute-bound instead of load-bound.

#[cfg(target_arch = "x86_64")]
mod avx2;
#[cfg(target_arch = "x86_64")]
mod avx512;
pub mod colsparse;
mod isa;

#[cfg(target_arch = "x86_64")]
pub(crate) use avx512::{lane_sums16, store_lane_sums};
pub use isa::Isa;

use crate::act_quant::ActScale;
use crate::parallel;
use crate::parallel::OutPtr;
use crate::walk::Walk;

pub const BLOCK_ELEMS: usize = 128;
pub const BLOCK_BYTES: usize = 32;

/// Columns rounded up to the block.
pub const fn padded_cols(cols: usize) -> usize {
    cols.div_ceil(BLOCK_ELEMS) * BLOCK_ELEMS
}

/// Bytes of one packed row.
pub const fn row_bytes(cols: usize) -> usize {
    padded_cols(cols) / 4
}

/// A packed ternary matrix `[rows, cols]` borrowed from its storage.
#[derive(Clone, Copy, Debug)]
pub struct TernaryView<'a> {
    pub rows: usize,
    pub cols: usize,
    pub data: &'a [u8],
}

impl<'a> TernaryView<'a> {
    /// Checks that `data` holds exactly `rows` packed rows.
    pub fn new(rows: usize, cols: usize, data: &'a [u8]) -> Option<Self> {
        (data.len() == rows * row_bytes(cols)).then_some(Self { rows, cols, data })
    }

    pub fn row(&self, r: usize) -> &'a [u8] {
        let rb = row_bytes(self.cols);
        &self.data[r * rb..(r + 1) * rb]
    }

    /// The code (`w + 1`) at `(r, c)`.
    pub fn code(&self, r: usize, c: usize) -> u8 {
        let row = self.row(r);
        let (block, within) = (c / BLOCK_ELEMS, c % BLOCK_ELEMS);
        let (group, j) = (within / 32, within % 32);
        (row[block * BLOCK_BYTES + j] >> (6 - 2 * group)) & 3
    }
}

/// Packs codes given by `code(r, c)` (each in {0, 1, 2}) into the block layout.
pub fn pack(rows: usize, cols: usize, mut code: impl FnMut(usize, usize) -> u8) -> Vec<u8> {
    let rb = row_bytes(cols);
    let mut out = vec![0u8; rows * rb];
    for r in 0..rows {
        pack_row(&mut out[r * rb..(r + 1) * rb], cols, |c| code(r, c));
    }
    out
}

/// Packs one row (`out.len() == row_bytes(cols)`, zeroed) from `code(c)`.
pub fn pack_row(out: &mut [u8], cols: usize, mut code: impl FnMut(usize) -> u8) {
    debug_assert_eq!(out.len(), row_bytes(cols));
    for c in 0..padded_cols(cols) {
        let v = if c < cols { code(c) } else { 1 };
        debug_assert!(v <= 2, "ternary code out of range");
        let (block, within) = (c / BLOCK_ELEMS, c % BLOCK_ELEMS);
        let (group, j) = (within / 32, within % 32);
        out[block * BLOCK_BYTES + j] |= (v & 3) << (6 - 2 * group);
    }
}

/// Scalar reference: Σ code·q over one packed row (`q.len() == padded_cols`).
pub fn dot_codes_ref(row: &[u8], q: &[i8]) -> i32 {
    let mut acc = 0i32;
    for (b, block) in row.chunks_exact(BLOCK_BYTES).enumerate() {
        let qb = &q[b * BLOCK_ELEMS..(b + 1) * BLOCK_ELEMS];
        for (j, &byte) in block.iter().enumerate() {
            for g in 0..4 {
                let code = i32::from((byte >> (6 - 2 * g)) & 3);
                acc += code * i32::from(qb[g * 32 + j]);
            }
        }
    }
    acc
}

/// The float result of one integer dot.
#[inline]
pub fn epilogue(dot: i32, act: ActScale, w_scale: f32) -> f32 {
    (dot - act.sum) as f32 / act.scale * w_scale
}

/// An integer dot parked in its output's f32 slot (as bits) until [`finish_parked`] runs the
/// epilogue over the whole run: one scalar division per dot cost the decode-batch tiles 7 %
/// (`tilebench`, 256×2560, n = 4 and 8, on a Xeon of family 6, model 207).
#[inline]
pub(crate) fn park(dot: i32) -> f32 {
    f32::from_bits(dot as u32)
}

/// The epilogue over a run of parked dots. The loop vectorizes, and a vector division rounds
/// exactly as the scalar one, so each float is [`epilogue`]'s bit for bit. With AVX-512 it
/// divides 16 lanes at a time instead of the baseline build's 4: a prefill's 16-row items
/// hand it one run of 16 per token, and the 4-wide divisions were 5 % of pp4096 on a Zen 4
/// (family 25, model 17).
pub(crate) fn finish_parked(out: &mut [f32], act: ActScale, w_scale: f32) {
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx512f") {
        // SAFETY: the CPU has AVX-512F (checked just above).
        unsafe { finish_parked_avx512(out, act, w_scale) };
        return;
    }
    finish_parked_portable(out, act, w_scale)
}

#[inline(always)]
fn finish_parked_portable(out: &mut [f32], act: ActScale, w_scale: f32) {
    for o in out {
        *o = epilogue(o.to_bits() as i32, act, w_scale);
    }
}

/// [`finish_parked_portable`] compiled for AVX-512F (the caller checks the CPU has it).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
fn finish_parked_avx512(out: &mut [f32], act: ActScale, w_scale: f32) {
    finish_parked_portable(out, act, w_scale)
}

/// Scalar reference GEMV: `out[r] = W[r]·x` for one quantized activation row.
pub fn gemv_ref(w: TernaryView<'_>, q: &[i8], act: ActScale, w_scale: f32, out: &mut [f32]) {
    assert_eq!(q.len(), padded_cols(w.cols), "gemv: activation length");
    assert_eq!(out.len(), w.rows, "gemv: output length");
    for (r, o) in out.iter_mut().enumerate() {
        *o = epilogue(dot_codes_ref(w.row(r), q), act, w_scale);
    }
}

/// Σ code·q over one row with the best instructions this CPU has.
#[inline]
pub fn dot_codes(row: &[u8], q: &[i8]) -> i32 {
    assert_eq!(q.len(), row.len() * 4, "dot_codes: activation length");
    let mut d = [0i32; 1];
    dots(
        Isa::best(),
        row,
        row.len(),
        0..1,
        q,
        q.len(),
        1,
        &mut |_, _, v| d[0] = v,
    );
    d[0]
}

/// Integer dots of weight rows `rows` (of `w`, `rb` bytes each) against `n` activation rows
/// (`q`, `k` apart), handed to `sink(row, token, dot)`. The tile loop of every ISA.
#[allow(clippy::too_many_arguments)]
fn dots(
    isa: Isa,
    w: &[u8],
    rb: usize,
    rows: std::ops::Range<usize>,
    q: &[i8],
    k: usize,
    n: usize,
    sink: &mut impl FnMut(usize, usize, i32),
) {
    assert_eq!(k, rb * 4, "activation stride must match the packed row");
    assert!(rows.end * rb <= w.len(), "rows outside the weights");
    assert!(n * k <= q.len(), "activations shorter than {n} rows");
    let blocks = rb / BLOCK_BYTES;
    if n == 1 && isa != Isa::Scalar {
        gemv_rows(isa, w, rb, rows, q, blocks, sink);
        return;
    }
    // Tiles of 4 rows a quarter of the range apart, as the decode GEMV walks (four
    // sequential streams in four different pages, which the L2 streamer prefetches; four
    // consecutive rows read at about half the bandwidth), then the rows left over one by one.
    // Tokens go 4 at a time over a block of tiles, so that the activations in use stay in L1
    // (all of a prefill's rows, up to 1.5 MB, do not) while the block's weights stay in L1/L2.
    let len = rows.len();
    let quarter = len / 4;
    let mut tile = |first: usize, rt: usize, stride: usize, t: usize| {
        let tt = (n - t).min(4);
        let mut acc = [[0i32; 4]; 4];
        // SAFETY: rows first + i·stride (i < rt) lie inside `rows`, hence inside `w`, and
        // tokens t..t+tt inside `q` (asserted above); each row is `blocks` whole blocks;
        // the ISA was checked by `Isa::best` or by the caller of `*_with`.
        unsafe {
            let wp = w.as_ptr().add(first * rb);
            let qp = q.as_ptr().add(t * k);
            let rs = stride * rb;
            match isa {
                #[cfg(target_arch = "x86_64")]
                Isa::Avx512Vnni => avx512::tile(rt, tt, wp, rs, qp, k, blocks, &mut acc),
                #[cfg(target_arch = "x86_64")]
                Isa::Avx2 => avx2::tile(rt, tt, wp, rs, qp, k, blocks, &mut acc),
                _ => tile_ref(rt, tt, wp, rs, qp, k, blocks, &mut acc),
            }
        }
        for (i, row) in acc.iter().enumerate().take(rt) {
            for (j, &d) in row.iter().enumerate().take(tt) {
                sink(first + i * stride, t + j, d);
            }
        }
    };
    for g0 in (0..quarter).step_by(TILE_BLOCK) {
        for t in (0..n).step_by(4) {
            for g in g0..(g0 + TILE_BLOCK).min(quarter) {
                tile(rows.start + g, 4, quarter, t);
            }
        }
    }
    for r in rows.start + 4 * quarter..rows.end {
        for t in (0..n).step_by(4) {
            tile(r, 1, 1, t);
        }
    }
}

/// How the decode GEMV walks the weights (`ONEBIT_GEMV`, for measuring). Measured on a
/// 2-thread Sapphire Rapids slice, 6912×2560: rows4 12 GB/s, rows1 11 GB/s, quarters 21 GB/s
/// (= the machine's read bandwidth). Four sequential streams in four different pages are
/// what the L2 streamer prefetches well; four streams interleaved inside one region are not.
/// Software prefetch (512–2048 B ahead) only lowered throughput, so there is none. Eight
/// streams (AVX-512, 32 registers) beat four by ~3 % end to end (tg64 19.5 vs 18.9 t/s).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum GemvWalk {
    /// 4 consecutive rows at once (4 interleaved streams inside one region).
    Rows4,
    /// 4 rows a quarter of the range apart: 4 streams, each sequential over its own pages.
    Quarters,
    /// One row at a time: a single sequential stream.
    Rows1,
    /// 8 rows an eighth of the range apart (AVX-512 only): 8 streams.
    Eighths,
}

fn gemv_walk() -> GemvWalk {
    static W: std::sync::OnceLock<GemvWalk> = std::sync::OnceLock::new();
    *W.get_or_init(|| match std::env::var("ONEBIT_GEMV").as_deref() {
        Ok("rows4") => GemvWalk::Rows4,
        Ok("rows1") => GemvWalk::Rows1,
        Ok("quarters") => GemvWalk::Quarters,
        _ => GemvWalk::Eighths,
    })
}

/// Decode GEMV dots over `rows` (one activation row).
fn gemv_rows(
    isa: Isa,
    w: &[u8],
    rb: usize,
    rows: std::ops::Range<usize>,
    q: &[i8],
    blocks: usize,
    sink: &mut impl FnMut(usize, usize, i32),
) {
    let walk = gemv_walk();
    let len = rows.len();
    #[cfg(target_arch = "x86_64")]
    if isa == Isa::Avx512Vnni && walk == GemvWalk::Eighths {
        let stride = len / 8;
        for g in 0..stride {
            let first = rows.start + g;
            // SAFETY: rows first + j·stride (j < 8) lie inside `rows`, hence inside `w`
            // (asserted by `dots`); `q` holds one full activation row; AVX-512 VNNI is
            // available (the caller checked the ISA).
            let d = unsafe {
                avx512::rows8_gemv(w.as_ptr().add(first * rb), stride * rb, q.as_ptr(), blocks)
            };
            for (j, v) in d.iter().enumerate() {
                sink(first + j * stride, 0, *v);
            }
        }
        let rest = rows.start + 8 * stride..rows.end;
        return gemv_rows_walk(isa, w, rb, rest, q, blocks, sink, GemvWalk::Quarters);
    }
    gemv_rows_walk(isa, w, rb, rows, q, blocks, sink, walk)
}

#[allow(clippy::too_many_arguments)]
fn gemv_rows_walk(
    isa: Isa,
    w: &[u8],
    rb: usize,
    rows: std::ops::Range<usize>,
    q: &[i8],
    blocks: usize,
    sink: &mut impl FnMut(usize, usize, i32),
    walk: GemvWalk,
) {
    let tile = |rt: usize, first: usize, stride_rows: usize, acc: &mut [[i32; 4]; 4]| {
        // SAFETY: rows first + j·stride_rows (j < rt) lie inside `rows`, hence inside `w`
        // (asserted by `dots`), and `q` holds one full activation row.
        unsafe {
            let wp = w.as_ptr().add(first * rb);
            match isa {
                #[cfg(target_arch = "x86_64")]
                Isa::Avx512Vnni => {
                    avx512::tile(rt, 1, wp, stride_rows * rb, q.as_ptr(), 0, blocks, acc)
                }
                #[cfg(target_arch = "x86_64")]
                Isa::Avx2 => avx2::tile(rt, 1, wp, stride_rows * rb, q.as_ptr(), 0, blocks, acc),
                _ => tile_ref(rt, 1, wp, stride_rows * rb, q.as_ptr(), 0, blocks, acc),
            }
        }
    };
    let order = match walk {
        GemvWalk::Quarters | GemvWalk::Eighths => Walk::Quarters,
        GemvWalk::Rows4 => Walk::Fours,
        GemvWalk::Rows1 => Walk::Ones,
    };
    let mut acc = [[0i32; 4]; 4];
    for g in crate::walk::groups(rows, order) {
        tile(g.count, g.first, g.stride, &mut acc);
        for (r, a) in g.rows().zip(&acc) {
            sink(r, 0, a[0]);
        }
    }
}

/// Portable tile (the scalar reference per element).
///
/// # Safety
/// `w` must hold `rt` rows of `rb` bytes, `q` must hold `tt` rows `k` apart of `blocks·128`.
#[allow(clippy::too_many_arguments)]
unsafe fn tile_ref(
    rt: usize,
    tt: usize,
    w: *const u8,
    rb: usize,
    q: *const i8,
    k: usize,
    blocks: usize,
    acc: &mut [[i32; 4]; 4],
) {
    for (i, row_acc) in acc.iter_mut().enumerate().take(rt) {
        // SAFETY: the caller guarantees these ranges are inside the buffers.
        let row = unsafe { std::slice::from_raw_parts(w.add(i * rb), blocks * BLOCK_BYTES) };
        for (j, a) in row_acc.iter_mut().enumerate().take(tt) {
            // SAFETY: as above.
            let qr = unsafe { std::slice::from_raw_parts(q.add(j * k), blocks * BLOCK_ELEMS) };
            *a = dot_codes_ref(row, qr);
        }
    }
}

/// Tiles whose weights (at most 55 KB at k = 6912) are reused by every 4-token panel of the
/// activations. On one Xeon thread (family 6, model 207), 224 tokens against 3456×2560 /
/// 1280×6912 from DRAM (`tilebench`) ran 180 / 200 GMAC/s when each tile took all tokens in
/// turn and 244 / 257 GMAC/s in panels; decode batches (n ≤ 16) did not change.
pub(crate) const TILE_BLOCK: usize = 8;

/// Rows per work item handed to a thread: big enough to amortize the hand-off, small
/// enough to balance two threads on the smallest projection (k/v, 640 rows).
const GEMV_CHUNK: usize = 64;

/// Rows per work item of a decode GEMV over `rows` rows: two items per thread, so a
/// descheduled thread is still balanced, yet long streams for the prefetchers
/// (`ONEBIT_GEMV_SPLIT` items per thread, for measuring). 2B-4T tg64 on 2 Sapphire Rapids
/// threads by items per thread: 1 → 17.8 t/s, 2 → 17.7, 4 → 16.0–16.4, 8 → 16.7.
fn gemv_chunk(rows: usize) -> usize {
    static SPLIT: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    let split = *SPLIT.get_or_init(|| {
        std::env::var("ONEBIT_GEMV_SPLIT")
            .ok()
            .and_then(|v| v.parse().ok())
            .filter(|v| *v > 0)
            .unwrap_or(2)
    });
    rows.div_ceil(parallel::threads() * split).max(GEMV_CHUNK)
}

/// Weight rows per work item of a GEMM over `n` activation rows (ternary and Sherry). A
/// decode batch or speculative pass (n ≤ 16) is bound by the weight stream, which wants the
/// GEMV's long runs per thread: 16-row items cut each of a tile's four streams into 2.5 KB
/// pieces. On 2 Xeon threads (family 6, model 207), 6912×2560 from DRAM (`kbench`),
/// n = 2 / 4 / 8 / 16 took 0.31 / 0.40 / 0.62 / 1.14 ms with 16-row items and
/// 0.17 / 0.20 / 0.38 / 0.79 ms with these. Prefill keeps 16-row items (n = 128: 330
/// GMAC/s with them, 243–267 with GEMV-sized ones).
pub(crate) fn gemm_chunk(rows: usize, n: usize) -> usize {
    if n <= 16 {
        gemv_chunk(rows)
    } else {
        16
    }
}

/// GEMV over all rows, split across the thread pool.
pub fn gemv(w: TernaryView<'_>, q: &[i8], act: ActScale, w_scale: f32, out: &mut [f32]) {
    gemv_with(Isa::best(), w, q, act, w_scale, out)
}

/// [`gemv`] on a chosen instruction set (tests and benchmarks; panics if the CPU lacks it).
pub fn gemv_with(
    isa: Isa,
    w: TernaryView<'_>,
    q: &[i8],
    act: ActScale,
    w_scale: f32,
    out: &mut [f32],
) {
    assert!(isa.available(), "{isa:?} is not available on this CPU");
    assert_eq!(q.len(), padded_cols(w.cols), "gemv: activation length");
    assert_eq!(out.len(), w.rows, "gemv: output length");
    let rb = row_bytes(w.cols);
    parallel::for_rows(out, gemv_chunk(w.rows), |first, chunk| {
        let rows = first..first + chunk.len();
        dots(isa, w.data, rb, rows, q, q.len(), 1, &mut |r, _, d| {
            chunk[r - first] = park(d)
        });
        finish_parked(chunk, act, w_scale);
    });
}

/// One projection of a [`gemv_many`] call.
pub struct GemvJob<'a, 'o> {
    pub w: TernaryView<'a>,
    pub scale: f32,
    pub out: &'o mut [f32],
}

/// Several GEMVs sharing one quantized input (q/k/v, gate/up) in one parallel region, so
/// the threads meet once instead of once per projection.
pub fn gemv_many(q: &[i8], act: ActScale, jobs: &mut [GemvJob<'_, '_>]) {
    let isa = Isa::best();
    let lens: Vec<usize> = jobs
        .iter()
        .map(|j| {
            assert_eq!(
                q.len(),
                padded_cols(j.w.cols),
                "gemv_many: activation length"
            );
            assert_eq!(j.out.len(), j.w.rows, "gemv_many: output length");
            j.w.rows
        })
        .collect();
    let outs: Vec<OutPtr> = jobs
        .iter_mut()
        .map(|j| OutPtr(j.out.as_mut_ptr()))
        .collect();
    let jobs = &*jobs;
    let total = lens.iter().sum();
    parallel::for_job_rows(&lens, gemv_chunk(total), |ji, rows| {
        let (j, out) = (&jobs[ji], outs[ji]);
        dots(
            isa,
            j.w.data,
            row_bytes(j.w.cols),
            rows.clone(),
            q,
            q.len(),
            1,
            &mut |r, _, d| {
                // SAFETY: row r < j.w.rows == out length, and rows are handed to one thread only.
                unsafe { *out.get().add(r) = park(d) };
            },
        );
        // SAFETY: these rows of job ji's output were written above by this thread alone.
        let parked = unsafe { out.rows(rows) };
        finish_parked(parked, act, j.scale);
    });
}

/// GEMM for prefill: the tiles unpack each weight block in registers once per 4 tokens.
/// (Unpacking 4 rows to code bytes in a per-thread buffer first, so the shifts leave the
/// vector port `vpdpbusd` uses, measured slower: 224 vs 290 GMAC/s on 2 Sapphire Rapids
/// threads — the 4× larger code stream no longer fits L1 beside the activations. A 2-row ×
/// 8-token AVX-512 tile, unpacking once per 8 tokens, measured 204 vs 278 GMAC/s.)
///
/// `n` activation rows (each `padded_cols` long) against all weight rows.
/// `out` is `[n, rows]`. Threads split the weight rows; each tile of 4 weight rows is
/// unpacked once per 4 activation rows and read from memory once per call.
pub fn gemm(w: TernaryView<'_>, q: &[i8], acts: &[ActScale], w_scale: f32, out: &mut [f32]) {
    gemm_with(Isa::best(), w, q, acts, w_scale, out)
}

/// [`gemm`] on a chosen instruction set (tests and benchmarks; panics if the CPU lacks it).
pub fn gemm_with(
    isa: Isa,
    w: TernaryView<'_>,
    q: &[i8],
    acts: &[ActScale],
    w_scale: f32,
    out: &mut [f32],
) {
    assert!(isa.available(), "{isa:?} is not available on this CPU");
    let k = padded_cols(w.cols);
    let n = acts.len();
    assert_eq!(q.len(), n * k, "gemm: activation length");
    assert_eq!(out.len(), n * w.rows, "gemm: output length");
    let rb = row_bytes(w.cols);
    let rows = w.rows;
    let o = OutPtr(out.as_mut_ptr());
    parallel::for_range(rows, gemm_chunk(rows, n), |r0, r1| {
        dots(isa, w.data, rb, r0..r1, q, k, n, &mut |r, t, d| {
            // SAFETY: t < n and r < rows, so the index is inside `out`; each weight row is
            // handed to exactly one thread, so no two threads write the same element.
            unsafe { *o.get().add(t * rows + r) = park(d) };
        });
        for (t, act) in acts.iter().enumerate() {
            // SAFETY: rows r0..r1 of token t were written above by this thread alone.
            let parked = unsafe { o.rows(t * rows + r0..t * rows + r1) };
            finish_parked(parked, *act, w_scale);
        }
    });
}

#[cfg(test)]
mod tests;
