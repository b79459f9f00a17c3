//! Embedding / tied LM-head storage types: rows of `cols` values in F32, F16, BF16,
//! Q8_0 or Q6_K (ggml block layouts), read by row (embedding lookup) and as a
//! matrix-vector product (LM head).

use crate::{embd_quant, parallel};
use half::{bf16, f16};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EmbdType {
    F32,
    F16,
    Bf16,
    /// ggml Q8_0: blocks of 32 = f16 scale + 32 × i8 (34 bytes).
    Q8_0,
    /// ggml Q6_K: blocks of 256 = ql[128] + qh[64] + scales[16] (i8) + f16 d (210 bytes).
    Q6K,
}

impl EmbdType {
    /// Elements per block and bytes per block.
    pub const fn block(self) -> (usize, usize) {
        match self {
            Self::F32 => (1, 4),
            Self::F16 | Self::Bf16 => (1, 2),
            Self::Q8_0 => (32, 34),
            Self::Q6K => (256, 210),
        }
    }

    /// Bytes of one row of `cols` values, or None if `cols` is not a multiple of the block.
    pub const fn row_bytes(self, cols: usize) -> Option<usize> {
        let (be, bb) = self.block();
        if !cols.is_multiple_of(be) {
            None
        } else {
            Some(cols / be * bb)
        }
    }

    pub const fn name(self) -> &'static str {
        match self {
            Self::F32 => "F32",
            Self::F16 => "F16",
            Self::Bf16 => "BF16",
            Self::Q8_0 => "Q8_0",
            Self::Q6K => "Q6_K",
        }
    }
}

/// A borrowed `[rows, cols]` embedding matrix.
#[derive(Clone, Copy, Debug)]
pub struct EmbdView<'a> {
    pub kind: EmbdType,
    pub rows: usize,
    pub cols: usize,
    pub data: &'a [u8],
}

impl<'a> EmbdView<'a> {
    pub fn new(kind: EmbdType, rows: usize, cols: usize, data: &'a [u8]) -> Option<Self> {
        let rb = kind.row_bytes(cols)?;
        (data.len() == rows * rb).then_some(Self {
            kind,
            rows,
            cols,
            data,
        })
    }

    fn row_data(&self, r: usize) -> &'a [u8] {
        let rb = self.data.len() / self.rows.max(1);
        &self.data[r * rb..(r + 1) * rb]
    }

    /// Dequantizes row `r` into `out` (`cols` long).
    pub fn row_to_f32(&self, r: usize, out: &mut [f32]) {
        dequant_row(self.kind, self.row_data(r), out);
    }

    /// The bytes of rows `first .. first + n`.
    fn rows_data(&self, first: usize, n: usize) -> &'a [u8] {
        let rb = self.data.len() / self.rows.max(1);
        &self.data[first * rb..(first + n) * rb]
    }

    /// `out[r] = row_r · h` for every row (the LM head), split across threads. Q8_0 and
    /// Q6_K heads quantize `h` to int8 first and take integer block dots (see
    /// [`embd_quant`]); the other types are exact float dots.
    pub fn matvec(&self, h: &[f32], out: &mut [f32]) {
        assert_eq!(h.len(), self.cols, "lm head: hidden length");
        assert_eq!(out.len(), self.rows, "lm head: output length");
        match self.kind {
            EmbdType::F16 => parallel::for_rows(out, 256, |first, chunk| {
                dot_f16_rows(self.rows_data(first, chunk.len()), h, chunk);
            }),
            EmbdType::Q8_0 => {
                let (isa, hq) = (embd_quant::isa(), embd_quant::HiddenQ8::new(h));
                parallel::for_rows(out, 256, |first, chunk| {
                    embd_quant::rows_q8_0(isa, self.rows_data(first, chunk.len()), &hq, chunk);
                });
            }
            EmbdType::Q6K => {
                let (isa, hq) = (embd_quant::isa(), embd_quant::HiddenQ8K::new(h));
                parallel::for_rows(out, 256, |first, chunk| {
                    embd_quant::rows_q6k(isa, self.rows_data(first, chunk.len()), &hq, chunk);
                });
            }
            EmbdType::F32 | EmbdType::Bf16 => parallel::for_rows(out, 256, |first, chunk| {
                let mut tmp = vec![0f32; self.cols];
                for (i, o) in chunk.iter_mut().enumerate() {
                    dequant_row(self.kind, self.row_data(first + i), &mut tmp);
                    *o = crate::float::dot_f32(&tmp, h);
                }
            }),
        }
    }

    /// Row `r`'s logit: the very bits [`matvec`](Self::matvec) gives for it, for one row
    /// (a screened head rescoring its survivors).
    pub fn row_dot(&self, r: usize, h: &[f32]) -> f32 {
        let mut out = [0f32; 1];
        let row = self.row_data(r);
        match self.kind {
            EmbdType::F16 => dot_f16_rows(row, h, &mut out),
            EmbdType::Q8_0 => embd_quant::rows_q8_0(
                embd_quant::isa(),
                row,
                &embd_quant::HiddenQ8::new(h),
                &mut out,
            ),
            EmbdType::Q6K => embd_quant::rows_q6k(
                embd_quant::isa(),
                row,
                &embd_quant::HiddenQ8K::new(h),
                &mut out,
            ),
            EmbdType::F32 | EmbdType::Bf16 => {
                let mut tmp = vec![0f32; self.cols];
                dequant_row(self.kind, row, &mut tmp);
                out[0] = crate::float::dot_f32(&tmp, h);
            }
        }
        out[0]
    }

    /// Scalar reference of [`matvec`](Self::matvec), bit-identical to it.
    pub fn matvec_ref(&self, h: &[f32], out: &mut [f32]) {
        match self.kind {
            EmbdType::Q8_0 => {
                let hq = embd_quant::HiddenQ8::new(h);
                for (r, o) in out.iter_mut().enumerate() {
                    *o = embd_quant::dot_q8_0_ref(self.row_data(r), &hq);
                }
            }
            EmbdType::Q6K => {
                let hq = embd_quant::HiddenQ8K::new(h);
                for (r, o) in out.iter_mut().enumerate() {
                    *o = embd_quant::dot_q6k_ref(self.row_data(r), &hq);
                }
            }
            EmbdType::F16 => {
                for (r, o) in out.iter_mut().enumerate() {
                    *o = dot_f16_ref(self.row_data(r), h);
                }
            }
            EmbdType::F32 | EmbdType::Bf16 => {
                let mut tmp = vec![0f32; self.cols];
                for (r, o) in out.iter_mut().enumerate() {
                    dequant_row(self.kind, self.row_data(r), &mut tmp);
                    *o = crate::float::dot_f32(&tmp, h);
                }
            }
        }
    }
}

/// Hidden rows that one pass over the head serves: their f32 copies (10 KB each for 2B-4T)
/// stay in L2 while every thread streams its share of the head past them. Larger batches
/// go through in blocks of this many rows.
pub const HEAD_BATCH: usize = 16;

/// Head rows a quantized row kernel takes at a time, for each hidden row in turn: the tile
/// (at most 16 · 3.4 KB for 2B-4T) stays in L1/L2 between hidden rows.
const QUANT_TILE: usize = 16;

/// Which kernels the head uses: chosen once from the CPU, or forced by tests.
#[derive(Clone, Copy, Debug)]
struct HeadKernels {
    /// The F16 head's AVX + F16C kernels (else the scalar reference).
    f16c: bool,
    /// The quantized heads' instruction set.
    quant: crate::ternary::Isa,
}

impl HeadKernels {
    fn detect() -> Self {
        #[cfg(target_arch = "x86_64")]
        let f16c = f16_simd::has_f16c();
        #[cfg(not(target_arch = "x86_64"))]
        let f16c = false;
        Self {
            f16c,
            quant: embd_quant::isa(),
        }
    }
}

impl EmbdView<'_> {
    /// `out[j] = head · hs[j]` for `n` hidden rows at once (`hs` is `[n, cols]`, `out`
    /// `[n, rows]`): the LM head as a GEMM that reads each head row once per block of
    /// [`HEAD_BATCH`] hidden rows instead of once per row, with the vocabulary split across
    /// threads. Every output is bit-identical to [`matvec`](Self::matvec) of its row: each
    /// dot product keeps the one-row kernels' lanes and order.
    pub fn matmul(&self, hs: &[f32], out: &mut [f32]) {
        // One row is the one-row head itself: a single stream runs exactly as before.
        if hs.len() == self.cols && out.len() == self.rows {
            self.matvec(hs, out);
        } else {
            self.matmul_with(HeadKernels::detect(), hs, out);
        }
    }

    /// Scalar reference of [`matmul`](Self::matmul): one [`matvec_ref`](Self::matvec_ref)
    /// per hidden row.
    pub fn matmul_ref(&self, hs: &[f32], out: &mut [f32]) {
        let n = self.batch_rows(hs, out);
        for j in 0..n {
            self.matvec_ref(
                &hs[j * self.cols..(j + 1) * self.cols],
                &mut out[j * self.rows..(j + 1) * self.rows],
            );
        }
    }

    /// The number of hidden rows of a [`matmul`](Self::matmul) call, its sizes checked.
    fn batch_rows(&self, hs: &[f32], out: &[f32]) -> usize {
        let n = match (self.rows, self.cols) {
            (0, 0) => 0,
            (0, cols) => hs.len() / cols,
            (rows, _) => out.len() / rows,
        };
        assert_eq!(hs.len(), n * self.cols, "lm head matmul: hidden length");
        assert_eq!(out.len(), n * self.rows, "lm head matmul: output length");
        n
    }

    fn matmul_with(&self, kernels: HeadKernels, hs: &[f32], out: &mut [f32]) {
        let n = self.batch_rows(hs, out);
        if self.rows == 0 {
            return;
        }
        let (rows, cols) = (self.rows, self.cols);
        for first in (0..n).step_by(HEAD_BATCH) {
            let nb = (n - first).min(HEAD_BATCH);
            let hs = &hs[first * cols..(first + nb) * cols];
            let out = &mut out[first * rows..(first + nb) * rows];
            self.matmul_block(kernels, hs, out);
        }
    }

    /// One block of at most [`HEAD_BATCH`] hidden rows.
    fn matmul_block(&self, kernels: HeadKernels, hs: &[f32], out: &mut [f32]) {
        let (rows, cols) = (self.rows, self.cols);
        match self.kind {
            EmbdType::F16 => parallel::for_columns(out, rows, 256, |first, parts| {
                let data = self.rows_data(first, parts[0].len());
                dot_f16_rows_batch_with(kernels.f16c, data, cols, hs, parts);
            }),
            EmbdType::Q8_0 => {
                let hq: Vec<_> = hs
                    .chunks_exact(cols)
                    .map(embd_quant::HiddenQ8::new)
                    .collect();
                parallel::for_columns(out, rows, 256, |first, parts| {
                    self.quant_tiles(first, parts, |tile, j, o| {
                        embd_quant::rows_q8_0(kernels.quant, tile, &hq[j], o);
                    });
                });
            }
            EmbdType::Q6K => {
                let hq: Vec<_> = hs
                    .chunks_exact(cols)
                    .map(embd_quant::HiddenQ8K::new)
                    .collect();
                parallel::for_columns(out, rows, 256, |first, parts| {
                    self.quant_tiles(first, parts, |tile, j, o| {
                        embd_quant::rows_q6k(kernels.quant, tile, &hq[j], o);
                    });
                });
            }
            EmbdType::F32 | EmbdType::Bf16 => {
                parallel::for_columns(out, rows, 256, |first, parts| {
                    let mut tmp = vec![0f32; cols];
                    for i in 0..parts[0].len() {
                        dequant_row(self.kind, self.row_data(first + i), &mut tmp);
                        for (part, h) in parts.iter_mut().zip(hs.chunks_exact(cols)) {
                            part[i] = crate::float::dot_f32(&tmp, h);
                        }
                    }
                })
            }
        }
    }

    /// Runs `kernel(tile_bytes, j, out_j)` over the head rows `first ..` of `parts` in tiles
    /// of [`QUANT_TILE`] rows, every hidden row `j` against a tile before the next tile (one
    /// hidden row takes the whole range at once, as `matvec` does).
    fn quant_tiles(
        &self,
        first: usize,
        parts: &mut [&mut [f32]],
        kernel: impl Fn(&[u8], usize, &mut [f32]),
    ) {
        let len = parts[0].len();
        let tile = if parts.len() == 1 { len } else { QUANT_TILE };
        for t in (0..len).step_by(tile.max(1)) {
            let tn = (len - t).min(tile);
            let tile = self.rows_data(first + t, tn);
            for (j, part) in parts.iter_mut().enumerate() {
                kernel(tile, j, &mut part[t..t + tn]);
            }
        }
    }
}

/// Σ f16(row) · h in a fixed order: 8 lanes (lane `l` sums elements ≡ `l` mod 8 in order,
/// multiply then add, no FMA), the lanes summed in order, then the tail. The SIMD path
/// reproduces this order bit for bit, and so does the iGPU's LM head.
pub fn dot_f16_ref(row: &[u8], h: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let chunks = h.len() / 8;
    for c in 0..chunks {
        for (l, a) in acc.iter_mut().enumerate() {
            let i = c * 8 + l;
            let bits = u16::from_le_bytes([row[2 * i], row[2 * i + 1]]);
            *a += f16::from_bits(bits).to_f32() * h[i];
        }
    }
    finish_f16_dot(acc, row, h, chunks * 8)
}

fn finish_f16_dot(acc: [f32; 8], row: &[u8], h: &[f32], from: usize) -> f32 {
    let mut s: f32 = acc.iter().sum();
    for i in from..h.len() {
        s += f16::from_bits(u16::from_le_bytes([row[2 * i], row[2 * i + 1]])).to_f32() * h[i];
    }
    s
}

/// `out[i] = row_i · h` for consecutive F16 rows (`rows.len() == out.len() · 2 · h.len()`),
/// the decode hot path of an F16 tied head (657 MB per token for 2B-4T), bit-identical to
/// [`dot_f16_ref`] per row.
pub fn dot_f16_rows(rows: &[u8], h: &[f32], out: &mut [f32]) {
    let rb = h.len() * 2;
    assert_eq!(rows.len(), out.len() * rb, "dot_f16_rows: sizes");
    #[cfg(target_arch = "x86_64")]
    {
        if f16_simd::has_f16c() {
            // SAFETY: AVX+F16C are present; sizes are checked above.
            unsafe { f16_simd::rows_f16c(rows, h, out) };
            return;
        }
    }
    for (o, row) in out.iter_mut().zip(rows.chunks_exact(rb)) {
        *o = dot_f16_ref(row, h);
    }
}

/// `outs[j][i] = row_i · h_j` for consecutive F16 rows (`cols` values each) and the hidden
/// rows `hs` (`[outs.len(), cols]`): each head row is read once for all hidden rows, and
/// every output is bit-identical to [`dot_f16_ref`].
pub fn dot_f16_rows_batch(rows: &[u8], cols: usize, hs: &[f32], outs: &mut [&mut [f32]]) {
    #[cfg(target_arch = "x86_64")]
    let f16c = f16_simd::has_f16c();
    #[cfg(not(target_arch = "x86_64"))]
    let f16c = false;
    dot_f16_rows_batch_with(f16c, rows, cols, hs, outs);
}

/// [`dot_f16_rows_batch`] with the AVX + F16C kernel (`f16c`, which must be available) or
/// the scalar reference.
fn dot_f16_rows_batch_with(
    f16c: bool,
    rows: &[u8],
    cols: usize,
    hs: &[f32],
    outs: &mut [&mut [f32]],
) {
    let n = outs.first().map_or(0, |o| o.len());
    assert!(
        outs.iter().all(|o| o.len() == n),
        "f16 head batch: output lengths"
    );
    assert_eq!(hs.len(), outs.len() * cols, "f16 head batch: hidden length");
    assert_eq!(rows.len(), n * cols * 2, "f16 head batch: head rows");
    #[cfg(target_arch = "x86_64")]
    {
        if f16c && cols > 0 {
            assert!(
                f16_simd::has_f16c(),
                "the F16 head's F16C kernel needs AVX and F16C"
            );
            // SAFETY: AVX+F16C are present; sizes are checked above.
            unsafe { f16_simd::rows_f16c_batch(rows, cols, hs, outs) };
            return;
        }
    }
    let _ = f16c;
    for (i, row) in rows.chunks_exact(cols * 2).enumerate() {
        for (o, h) in outs.iter_mut().zip(hs.chunks_exact(cols)) {
            o[i] = dot_f16_ref(row, h);
        }
    }
    if cols == 0 {
        outs.iter_mut().for_each(|o| o.fill(0.0));
    }
}

#[cfg(target_arch = "x86_64")]
mod f16_simd {
    use std::arch::x86_64::*;
    use std::sync::OnceLock;

    pub fn has_f16c() -> bool {
        static HAS: OnceLock<bool> = OnceLock::new();
        *HAS.get_or_init(|| {
            std::is_x86_feature_detected!("avx") && std::is_x86_feature_detected!("f16c")
        })
    }

    /// 4 rows at a time: each load of `h` serves 4 rows, and the 4 independent add chains
    /// hide the add latency. One 8-lane accumulator per row keeps the reference's order.
    /// The 4 rows are a quarter of the range apart, so each is a long sequential stream over
    /// its own pages — what the L2 streamer prefetches well (4 adjacent 5 KB rows are 4
    /// short streams that end before the prefetcher has ramped up). The 2B-4T head on 2
    /// threads (`head_bench`, 3 alternations): 27–29 ms a quarter apart, 34–39 ms adjacent.
    /// A 512-bit variant (16 values per convert, the two halves added in order) measured
    /// no faster: the order-preserving adds then need port 5 that the converts also use.
    ///
    /// # Safety
    /// AVX and F16C; `rows.len() == out.len() · 2 · h.len()`.
    #[target_feature(enable = "avx,f16c")]
    pub unsafe fn rows_f16c(rows: &[u8], h: &[f32], out: &mut [f32]) {
        let n = out.len();
        let quarter = if super::head_walk_quarters() {
            n / 4
        } else {
            0
        };
        for g in 0..quarter {
            let idx = [g, g + quarter, g + 2 * quarter, g + 3 * quarter];
            // SAFETY: every index is < 4·quarter ≤ n; the caller's contract covers the rest.
            let d = unsafe { four_rows(rows, h, idx, 4) };
            for (i, v) in idx.iter().zip(d) {
                out[*i] = v;
            }
        }
        let mut r = 4 * quarter;
        while r < n {
            let rt = (n - r).min(4);
            let idx = [r, r + 1, r + 2, r + 3];
            // SAFETY: the first `rt` indices are < n.
            let d = unsafe { four_rows(rows, h, idx, rt) };
            out[r..r + rt].copy_from_slice(&d[..rt]);
            r += rt;
        }
    }

    /// Dots of rows `idx[..rt]` (bit-identical to `dot_f16_ref` each).
    ///
    /// # Safety
    /// AVX and F16C; `idx[..rt]` are rows of `rows` (`2 · h.len()` bytes each).
    #[target_feature(enable = "avx,f16c")]
    unsafe fn four_rows(rows: &[u8], h: &[f32], idx: [usize; 4], rt: usize) -> [f32; 4] {
        let cols = h.len();
        let rb = cols * 2;
        let chunks = cols / 8;
        let mut acc = [_mm256_setzero_ps(); 4];
        for &r in &idx[..rt] {
            assert!((r + 1) * rb <= rows.len(), "f16 head: row outside the rows");
        }
        for c in 0..chunks {
            // SAFETY: c·8 + 8 ≤ cols, so 8 floats of h and 16 bytes of each row are in
            // bounds (rows checked above).
            unsafe {
                let hv = _mm256_loadu_ps(h.as_ptr().add(c * 8));
                for (i, a) in acc.iter_mut().enumerate().take(rt) {
                    let p = rows.as_ptr().add(idx[i] * rb + c * 16);
                    let w = _mm256_cvtph_ps(_mm_loadu_si128(p.cast()));
                    *a = _mm256_add_ps(*a, _mm256_mul_ps(w, hv));
                }
            }
        }
        let mut out = [0f32; 4];
        for (i, a) in acc.iter().enumerate().take(rt) {
            let mut lanes = [0f32; 8];
            // SAFETY: `lanes` holds 8 floats.
            unsafe { _mm256_storeu_ps(lanes.as_mut_ptr(), *a) };
            let row = &rows[idx[i] * rb..(idx[i] + 1) * rb];
            out[i] = super::finish_f16_dot(lanes, row, h, chunks * 8);
        }
        out
    }

    /// Hidden rows per register tile: 4 head rows × 2 hidden rows are 8 accumulators, with
    /// the 2 hidden vectors and one converted weight vector 11 of the 16 ymm registers.
    const TILE_HIDDEN: usize = 2;

    /// The batched form of [`rows_f16c`]: the same walk over groups of 4 head rows, and per
    /// group every hidden row in tiles of [`TILE_HIDDEN`]; each converted weight vector
    /// serves all hidden rows of a tile. One 8-lane accumulator per (head row, hidden row)
    /// keeps the reference's order.
    ///
    /// # Safety
    /// AVX and F16C; `cols > 0`, `rows.len() == n · 2 · cols` and `hs.len() == outs.len() ·
    /// cols`, with `n` the length of every `outs[j]`.
    #[target_feature(enable = "avx,f16c")]
    pub unsafe fn rows_f16c_batch(rows: &[u8], cols: usize, hs: &[f32], outs: &mut [&mut [f32]]) {
        let n = outs.first().map_or(0, |o| o.len());
        let quarter = if super::head_walk_quarters() {
            n / 4
        } else {
            0
        };
        for g in 0..quarter {
            // SAFETY: every index is < 4·quarter ≤ n; the caller's contract covers the rest.
            unsafe {
                group(
                    rows,
                    cols,
                    [g, g + quarter, g + 2 * quarter, g + 3 * quarter],
                    hs,
                    outs,
                )
            };
        }
        let mut r = 4 * quarter;
        while r + 4 <= n {
            // SAFETY: r + 3 < n.
            unsafe { group(rows, cols, [r, r + 1, r + 2, r + 3], hs, outs) };
            r += 4;
        }
        for r in r..n {
            // SAFETY: r < n.
            unsafe { group(rows, cols, [r], hs, outs) };
        }
    }

    /// Head rows `idx` against every hidden row.
    ///
    /// # Safety
    /// AVX and F16C; `idx` are rows of `rows` (`2 · cols` bytes each) and < every
    /// `outs[j].len()`; `hs.len() == outs.len() · cols`.
    #[inline]
    #[target_feature(enable = "avx,f16c")]
    unsafe fn group<const R: usize>(
        rows: &[u8],
        cols: usize,
        idx: [usize; R],
        hs: &[f32],
        outs: &mut [&mut [f32]],
    ) {
        let mut j = 0;
        while j < outs.len() {
            let tile = (outs.len() - j).min(TILE_HIDDEN);
            let h = &hs[j * cols..(j + tile) * cols];
            if tile == TILE_HIDDEN {
                // SAFETY: the caller's contract; `h` holds TILE_HIDDEN rows.
                let d = unsafe { tile_dots::<R, TILE_HIDDEN>(rows, cols, idx, h) };
                for (b, db) in d.iter().enumerate() {
                    for (r, v) in idx.iter().zip(db) {
                        outs[j + b][*r] = *v;
                    }
                }
            } else {
                for b in 0..tile {
                    // SAFETY: as above, one hidden row.
                    let d =
                        unsafe { tile_dots::<R, 1>(rows, cols, idx, &h[b * cols..(b + 1) * cols]) };
                    for (r, v) in idx.iter().zip(&d[0]) {
                        outs[j + b][*r] = *v;
                    }
                }
            }
            j += tile;
        }
    }

    /// `[b][i] = row idx[i] · h_b` (bit-identical to `dot_f16_ref` each) for the `B` hidden
    /// rows of `hs`.
    ///
    /// # Safety
    /// AVX and F16C; `idx` are rows of `rows` (`2 · cols` bytes each), `hs.len() == B · cols`.
    #[inline]
    #[target_feature(enable = "avx,f16c")]
    unsafe fn tile_dots<const R: usize, const B: usize>(
        rows: &[u8],
        cols: usize,
        idx: [usize; R],
        hs: &[f32],
    ) -> [[f32; R]; B] {
        let rb = cols * 2;
        let chunks = cols / 8;
        assert_eq!(hs.len(), B * cols, "f16 head tile: hidden rows");
        for &r in &idx {
            assert!((r + 1) * rb <= rows.len(), "f16 head: row outside the rows");
        }
        let mut acc = [[_mm256_setzero_ps(); R]; B];
        for c in 0..chunks {
            let mut hv = [_mm256_setzero_ps(); B];
            for (b, v) in hv.iter_mut().enumerate() {
                // SAFETY: c·8 + 8 ≤ cols, inside hidden row b (checked above).
                *v = unsafe { _mm256_loadu_ps(hs.as_ptr().add(b * cols + c * 8)) };
            }
            for (i, &r) in idx.iter().enumerate() {
                // SAFETY: 16 bytes at c·16 of row r, inside the rows (checked above).
                let w = unsafe {
                    _mm256_cvtph_ps(_mm_loadu_si128(rows.as_ptr().add(r * rb + c * 16).cast()))
                };
                for (a, v) in acc.iter_mut().zip(&hv) {
                    a[i] = _mm256_add_ps(a[i], _mm256_mul_ps(w, *v));
                }
            }
        }
        let mut out = [[0f32; R]; B];
        for (b, (ob, ab)) in out.iter_mut().zip(&acc).enumerate() {
            let h = &hs[b * cols..(b + 1) * cols];
            for ((o, a), &r) in ob.iter_mut().zip(ab).zip(&idx) {
                let mut lanes = [0f32; 8];
                // SAFETY: `lanes` holds 8 floats.
                unsafe { _mm256_storeu_ps(lanes.as_mut_ptr(), *a) };
                *o = super::finish_f16_dot(lanes, &rows[r * rb..(r + 1) * rb], h, chunks * 8);
            }
        }
        out
    }
}

/// Whether the F16 head walks 4 far-apart rows (the default) or 4 adjacent ones
/// (`ONEBIT_HEAD_WALK=rows4`, for measuring one against the other).
#[cfg(target_arch = "x86_64")]
fn head_walk_quarters() -> bool {
    static Q: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *Q.get_or_init(|| std::env::var("ONEBIT_HEAD_WALK").as_deref() != Ok("rows4"))
}

/// Dequantizes one row of `kind` (`row.len() == kind.row_bytes(out.len())`).
pub fn dequant_row(kind: EmbdType, row: &[u8], out: &mut [f32]) {
    match kind {
        EmbdType::F32 => {
            for (o, b) in out.iter_mut().zip(row.chunks_exact(4)) {
                *o = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
            }
        }
        EmbdType::F16 => {
            for (o, b) in out.iter_mut().zip(row.chunks_exact(2)) {
                *o = f16::from_bits(u16::from_le_bytes([b[0], b[1]])).to_f32();
            }
        }
        EmbdType::Bf16 => {
            for (o, b) in out.iter_mut().zip(row.chunks_exact(2)) {
                *o = bf16::from_bits(u16::from_le_bytes([b[0], b[1]])).to_f32();
            }
        }
        EmbdType::Q8_0 => {
            for (blk, o) in row.chunks_exact(34).zip(out.chunks_exact_mut(32)) {
                let d = f16::from_bits(u16::from_le_bytes([blk[0], blk[1]])).to_f32();
                for (v, q) in o.iter_mut().zip(&blk[2..]) {
                    *v = d * f32::from(*q as i8);
                }
            }
        }
        EmbdType::Q6K => {
            for (blk, o) in row.chunks_exact(210).zip(out.chunks_exact_mut(256)) {
                dequant_q6k_block(blk, o);
            }
        }
    }
}

fn dequant_q6k_block(blk: &[u8], out: &mut [f32]) {
    let (ql, rest) = blk.split_at(128);
    let (qh, rest) = rest.split_at(64);
    let (scales, d) = rest.split_at(16);
    let d = f16::from_bits(u16::from_le_bytes([d[0], d[1]])).to_f32();
    for half in 0..2 {
        let ql = &ql[half * 64..];
        let qh = &qh[half * 32..];
        let sc = &scales[half * 8..];
        let y = &mut out[half * 128..];
        for l in 0..32 {
            let is = l / 16;
            let q1 = i32::from((ql[l] & 0xF) | ((qh[l] & 3) << 4)) - 32;
            let q2 = i32::from((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) - 32;
            let q3 = i32::from((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32;
            let q4 = i32::from((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32;
            let s = |k: usize| d * f32::from(sc[k] as i8);
            y[l] = s(is) * q1 as f32;
            y[l + 32] = s(is + 2) * q2 as f32;
            y[l + 64] = s(is + 4) * q3 as f32;
            y[l + 96] = s(is + 6) * q4 as f32;
        }
    }
}

/// Quantizes a row to Q8_0 (ggml's reference rule: d = absmax/127, q = round(x/d)).
pub fn quantize_q8_0(x: &[f32]) -> Vec<u8> {
    assert!(
        x.len().is_multiple_of(32),
        "Q8_0 needs a multiple of 32 values"
    );
    let mut out = Vec::with_capacity(x.len() / 32 * 34);
    for blk in x.chunks_exact(32) {
        let amax = blk.iter().fold(0f32, |m, v| m.max(v.abs()));
        let d = amax / 127.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        out.extend_from_slice(&f16::from_f32(d).to_bits().to_le_bytes());
        out.extend(blk.iter().map(|v| (v * id).round() as i8 as u8));
    }
    out
}

/// Quantizes a row to Q6_K: one scale per 16 values (i8, relative to the block's f16 d).
pub fn quantize_q6k(x: &[f32]) -> Vec<u8> {
    assert!(
        x.len().is_multiple_of(256),
        "Q6_K needs a multiple of 256 values"
    );
    let mut out = Vec::with_capacity(x.len() / 256 * 210);
    for blk in x.chunks_exact(256) {
        let mut sub = [0f32; 16];
        for (s, c) in sub.iter_mut().zip(blk.chunks_exact(16)) {
            let amax = c.iter().fold(0f32, |m, v| m.max(v.abs()));
            *s = amax / 31.0;
        }
        let max_sub = sub.iter().fold(0f32, |m, v| m.max(*v));
        let d = max_sub / 127.0;
        let d16 = f16::from_f32(d);
        let d = d16.to_f32();
        let mut scales = [0i8; 16];
        let mut q = [0u8; 256];
        for (k, c) in blk.chunks_exact(16).enumerate() {
            let sc = if d > 0.0 {
                (sub[k] / d).round().clamp(-127.0, 127.0)
            } else {
                0.0
            };
            scales[k] = sc as i8;
            let step = d * sc;
            for (j, v) in c.iter().enumerate() {
                let l = if step != 0.0 {
                    (v / step).round().clamp(-32.0, 31.0)
                } else {
                    0.0
                };
                q[k * 16 + j] = (l as i32 + 32) as u8;
            }
        }
        let mut ql = [0u8; 128];
        let mut qh = [0u8; 64];
        for half in 0..2 {
            let q = &q[half * 128..];
            for l in 0..32 {
                let (q1, q2, q3, q4) = (q[l], q[l + 32], q[l + 64], q[l + 96]);
                ql[half * 64 + l] = (q1 & 0xF) | ((q3 & 0xF) << 4);
                ql[half * 64 + l + 32] = (q2 & 0xF) | ((q4 & 0xF) << 4);
                qh[half * 32 + l] =
                    (q1 >> 4) | ((q2 >> 4) << 2) | ((q3 >> 4) << 4) | ((q4 >> 4) << 6);
            }
        }
        out.extend_from_slice(&ql);
        out.extend_from_slice(&qh);
        out.extend(scales.iter().map(|s| *s as u8));
        out.extend_from_slice(&d16.to_bits().to_le_bytes());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(n: usize) -> Vec<f32> {
        (0..n).map(|i| ((i as f32) * 0.731).sin() * 0.05).collect()
    }

    #[test]
    fn q8_0_roundtrip_is_close() {
        let x = sample(64);
        let q = quantize_q8_0(&x);
        let mut y = vec![0f32; 64];
        dequant_row(EmbdType::Q8_0, &q, &mut y);
        for (a, b) in x.iter().zip(&y) {
            assert!((a - b).abs() < 0.05 / 127.0 + 1e-4, "{a} vs {b}");
        }
    }

    #[test]
    fn q6k_roundtrip_is_close() {
        let x = sample(512);
        let q = quantize_q6k(&x);
        assert_eq!(q.len(), 420);
        let mut y = vec![0f32; 512];
        dequant_row(EmbdType::Q6K, &q, &mut y);
        for (a, b) in x.iter().zip(&y) {
            assert!((a - b).abs() < 0.05 / 31.0 * 0.6 + 1e-4, "{a} vs {b}");
        }
    }

    #[test]
    fn quantized_heads_match_their_reference() {
        let (rows, cols) = (37, 512);
        let x = sample(rows * cols);
        let h: Vec<f32> = (0..cols).map(|i| (i as f32 * 0.07).cos()).collect();
        for kind in [EmbdType::Q8_0, EmbdType::Q6K] {
            let data: Vec<u8> = x
                .chunks_exact(cols)
                .flat_map(|r| {
                    if kind == EmbdType::Q8_0 {
                        quantize_q8_0(r)
                    } else {
                        quantize_q6k(r)
                    }
                })
                .collect();
            let v = EmbdView::new(kind, rows, cols, &data).unwrap();
            let (mut a, mut b) = (vec![0f32; rows], vec![0f32; rows]);
            v.matvec(&h, &mut a);
            v.matvec_ref(&h, &mut b);
            assert_eq!(a, b, "{kind:?}");
        }
    }

    #[test]
    fn matvec_matches_dequantized_dot() {
        let (rows, cols) = (5, 256);
        let x = sample(rows * cols);
        let data: Vec<u8> = x
            .iter()
            .flat_map(|v| f16::from_f32(*v).to_bits().to_le_bytes())
            .collect();
        let v = EmbdView::new(EmbdType::F16, rows, cols, &data).unwrap();
        let h: Vec<f32> = (0..cols).map(|i| i as f32 * 0.01).collect();
        let mut out = vec![0f32; rows];
        v.matvec(&h, &mut out);
        let mut row = vec![0f32; cols];
        for (r, o) in out.iter().enumerate() {
            v.row_to_f32(r, &mut row);
            let e: f32 = row.iter().zip(&h).map(|(a, b)| a * b).sum();
            assert!((o - e).abs() < 1e-4);
        }
    }

    /// A `rows × cols` head of `kind` with values from `seed`, or None when `cols` is not a
    /// whole number of the type's blocks.
    fn head_of(kind: EmbdType, rows: usize, cols: usize, seed: u32) -> Option<Vec<u8>> {
        kind.row_bytes(cols)?;
        let x: Vec<f32> = (0..rows * cols)
            .map(|i| ((i as f32 + seed as f32 * 1.7) * 0.731).sin() * 0.05)
            .collect();
        Some(match kind {
            EmbdType::F32 => x.iter().flat_map(|v| v.to_le_bytes()).collect(),
            EmbdType::F16 => x
                .iter()
                .flat_map(|v| f16::from_f32(*v).to_bits().to_le_bytes())
                .collect(),
            EmbdType::Bf16 => x
                .iter()
                .flat_map(|v| bf16::from_f32(*v).to_bits().to_le_bytes())
                .collect(),
            EmbdType::Q8_0 => x.chunks_exact(cols).flat_map(quantize_q8_0).collect(),
            EmbdType::Q6K => x.chunks_exact(cols).flat_map(quantize_q6k).collect(),
        })
    }

    /// `n` hidden rows with values of mixed magnitude (so rounding differences would show).
    fn hidden_rows(n: usize, cols: usize, seed: u32) -> Vec<f32> {
        (0..n * cols)
            .map(|i| {
                let x = (i * 7 + seed as usize) as f32 * 0.013;
                x.cos() * (1.0 + 30.0 * (x * 3.1).sin().abs().powi(4))
            })
            .collect()
    }

    /// Every kernel choice this CPU can run: the F16 head with and without F16C, the
    /// quantized heads on every instruction set.
    fn every_kernel_choice() -> Vec<HeadKernels> {
        let best = HeadKernels::detect();
        let f16c = [false, best.f16c];
        let isas = crate::ternary::Isa::ALL
            .into_iter()
            .filter(|i| embd_quant::simd_ok(*i));
        isas.flat_map(|quant| f16c.map(|f16c| HeadKernels { f16c, quant }))
            .collect()
    }

    /// `matmul` on every kernel choice against one `matvec` per hidden row, bit for bit.
    fn check_matmul(kind: EmbdType, rows: usize, cols: usize, n: usize, seed: u32) {
        let Some(data) = head_of(kind, rows, cols, seed) else {
            return;
        };
        let v = EmbdView::new(kind, rows, cols, &data).unwrap();
        let hs = hidden_rows(n, cols, seed);
        let mut want = vec![0f32; n * rows];
        for (h, o) in hs
            .chunks_exact(cols.max(1))
            .zip(want.chunks_exact_mut(rows))
        {
            v.matvec(h, o);
        }
        let mut got = vec![f32::NAN; n * rows];
        v.matmul(&hs, &mut got);
        let bits = |x: &[f32]| x.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
        assert_eq!(
            bits(&got),
            bits(&want),
            "{kind:?} {rows}x{cols}, n={n}: matmul"
        );
        v.matmul_ref(&hs, &mut got);
        assert_eq!(
            bits(&got),
            bits(&want),
            "{kind:?} {rows}x{cols}, n={n}: matmul_ref"
        );
        for k in every_kernel_choice() {
            got.fill(f32::NAN);
            v.matmul_with(k, &hs, &mut got);
            assert_eq!(
                bits(&got),
                bits(&want),
                "{kind:?} {rows}x{cols}, n={n}: {k:?}"
            );
        }
    }

    const ALL_KINDS: [EmbdType; 5] = [
        EmbdType::F32,
        EmbdType::F16,
        EmbdType::Bf16,
        EmbdType::Q8_0,
        EmbdType::Q6K,
    ];

    #[test]
    fn matmul_splits_a_long_vocabulary_across_threads_exactly() {
        // Long enough for several column chunks per thread, and more than one block of
        // hidden rows.
        for kind in ALL_KINDS {
            check_matmul(kind, 3001, 256, HEAD_BATCH + 3, 11);
        }
    }

    #[test]
    fn matmul_of_no_rows_is_empty() {
        let data = head_of(EmbdType::F16, 5, 40, 1).unwrap();
        let v = EmbdView::new(EmbdType::F16, 5, 40, &data).unwrap();
        let mut out: Vec<f32> = Vec::new();
        v.matmul(&[], &mut out);
        assert!(out.is_empty());
    }

    proptest::proptest! {
        #[test]
        fn f16_rows_match_reference(rows in 1usize..70, cols in 1usize..300, seed in 0u32..1000) {
            let x: Vec<f32> = (0..rows * cols).map(|i| ((i as f32 + seed as f32) * 0.731).sin() * 0.05).collect();
            let data: Vec<u8> = x.iter().flat_map(|v| f16::from_f32(*v).to_bits().to_le_bytes()).collect();
            let h: Vec<f32> = (0..cols).map(|i| ((i * 7 + seed as usize) as f32 * 0.013).cos() * 3.0).collect();
            let want: Vec<f32> = data.chunks_exact(cols * 2).map(|r| dot_f16_ref(r, &h)).collect();
            let mut got = vec![0f32; rows];
            dot_f16_rows(&data, &h, &mut got);
            for (a, b) in got.iter().zip(&want) {
                proptest::prop_assert_eq!(a.to_bits(), b.to_bits());
            }
            #[cfg(target_arch = "x86_64")]
            {
                if f16_simd::has_f16c() {
                    let mut g2 = vec![0f32; rows];
                    // SAFETY: AVX/F16C checked; sizes match.
                    unsafe { f16_simd::rows_f16c(&data, &h, &mut g2) };
                    for (a, b) in g2.iter().zip(&want) {
                        proptest::prop_assert_eq!(a.to_bits(), b.to_bits());
                    }
                }
            }
            let v = EmbdView::new(EmbdType::F16, rows, cols, &data).unwrap();
            let mut g3 = vec![0f32; rows];
            v.matvec(&h, &mut g3);
            let mut g4 = vec![0f32; rows];
            v.matvec_ref(&h, &mut g4);
            for (a, b) in g3.iter().zip(&g4) {
                proptest::prop_assert_eq!(a.to_bits(), b.to_bits());
            }
        }

        #[test]
        fn float_head_matmul_equals_matvec_per_row(kind in 0usize..3, rows in 1usize..70, cols in 1usize..300, n in 1usize..21, seed in 0u32..1000) {
            check_matmul([EmbdType::F16, EmbdType::F32, EmbdType::Bf16][kind], rows, cols, n, seed);
        }

        #[test]
        fn quantized_head_matmul_equals_matvec_per_row(q6k in proptest::bool::ANY, rows in 1usize..70, blocks in 1usize..12, n in 1usize..21, seed in 0u32..1000) {
            let (kind, cols) = if q6k { (EmbdType::Q6K, 256 * blocks.div_ceil(4)) } else { (EmbdType::Q8_0, 32 * blocks) };
            check_matmul(kind, rows, cols, n, seed);
        }
    }
}
