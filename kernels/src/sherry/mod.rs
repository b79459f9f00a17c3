//! Sherry: 3:4 sparse ternary weights × int8 activations, 1.25 bits per weight.
//!
//! In every block of four consecutive weights of a row exactly one is 0 and three are ±1
//! (the format of "Sherry", arXiv 2601.07892). A block has 4 × 8 = 32 states, so it packs
//! into 5 bits:
//!
//! - a 4-bit **index**: bits 1:0 the position `z` of the zero; bit 2 set when the second
//!   nonzero weight (in column order) has the opposite sign of the first, bit 3 the same for
//!   the third;
//! - a **sign bit**: set when the first nonzero weight is −1 (it flips all three).
//!
//! So a block is a 16-entry table lookup plus a sign: exactly what one `vpermd`
//! (`_mm512_permutexvar_epi32`: 16 dword entries, one per block) or four `vpshufb` decode.
//!
//! **Layout.** A row is cut into groups of 128 weights (32 blocks), 20 bytes each: bytes
//! 0..16 hold the indices, byte `j` the index of block `j` in bits 3:0 and of block `j + 16`
//! in bits 7:4; bytes 16..20 are a little-endian u32 whose bit `b` is the sign bit of block
//! `b`. Rows whose length is not a multiple of 128 are padded like the I2_S layout: padding
//! weights may be anything (the packer writes index 0, sign 0) because the activations are
//! padded with zeros. One f32 scale per tensor, as I2_S.
//!
//! **Lanes.** The AVX-512 kernels read a second layout built from this one at load
//! ([`lanes`]): each block's index and sign bit together, six 5-bit codes per dword lane,
//! which one shift and one two-table `vpermt2d` decode per 16 blocks. The engine frees the
//! file's rows once that copy serves its CPU kernels.
//!
//! **Numerics.** The kernels compute `Σ code·q` with `code = w + 1 ∈ {0, 1, 2}`, exactly the
//! integer the I2_S kernels compute for the same ternary weights, and share their epilogue,
//! so a Sherry matrix gives the same f32 outputs bit for bit as the I2_S packing of the same
//! weights (the property tests check both).

#[cfg(target_arch = "x86_64")]
mod avx2;
#[cfg(target_arch = "x86_64")]
mod avx512;
mod codec;
pub mod lanes;

pub use codec::{decode_block, encode_block, BlockError};

use crate::act_quant::ActScale;
use crate::parallel;
use crate::parallel::OutPtr;
use crate::ternary::{self, epilogue, finish_parked, padded_cols, park, Isa, BLOCK_ELEMS};

/// Weights per group (the unit of the row layout); equal to the I2_S block so both formats
/// pad rows, and therefore activations, alike.
pub const GROUP_ELEMS: usize = BLOCK_ELEMS;
/// Bytes per group: 32 blocks × 5 bits.
pub const GROUP_BYTES: usize = 20;
/// Bytes of the index nibbles of a group.
const INDEX_BYTES: usize = 16;

/// Bytes of one packed row.
pub const fn row_bytes(cols: usize) -> usize {
    padded_cols(cols) / GROUP_ELEMS * GROUP_BYTES
}

/// The codes (`w + 1`) of the four weights of every index, unflipped: little-endian bytes
/// of one u32 per index, weight 0 in the low byte.
pub const CODES: [u32; 16] = codes_table(false);
/// The same with the sign bit set (every nonzero weight negated).
pub const CODES_FLIPPED: [u32; 16] = codes_table(true);

const fn codes_table(flip: bool) -> [u32; 16] {
    let mut t = [0u32; 16];
    let mut idx = 0;
    while idx < 16 {
        let w = codec::weights_of(idx as u8, flip);
        let mut word = 0u32;
        let mut p = 0;
        while p < 4 {
            word |= ((w[p] + 1) as u32) << (8 * p);
            p += 1;
        }
        t[idx] = word;
        idx += 1;
    }
    t
}

/// A packed Sherry matrix `[rows, cols]` borrowed from its storage.
#[derive(Clone, Copy, Debug)]
pub struct SherryView<'a> {
    pub rows: usize,
    pub cols: usize,
    pub data: &'a [u8],
    /// The same rows in the [`lanes`] layout, which the AVX-512 kernels read instead when
    /// given (built once at load by [`lanes::to_lanes`]). With lanes, `data` may be empty
    /// (the file's rows dropped): then every ISA reads the lanes.
    pub lanes: Option<&'a [u8]>,
}

impl<'a> SherryView<'a> {
    /// Checks that `data` holds exactly `rows` packed rows.
    pub fn new(rows: usize, cols: usize, data: &'a [u8]) -> Option<Self> {
        (data.len() == rows * row_bytes(cols)).then_some(Self {
            rows,
            cols,
            data,
            lanes: None,
        })
    }

    /// The view with its lane-layout copy; `None` if `lanes` is not `rows` lane rows long.
    pub fn with_lanes(self, lanes: &'a [u8]) -> Option<Self> {
        (lanes.len() == self.rows * lanes::lane_row_bytes(self.cols)).then_some(Self {
            lanes: Some(lanes),
            ..self
        })
    }

    /// A view of the lane layout alone (the file's rows dropped); `None` if `lanes` is not
    /// `rows` lane rows long.
    pub fn lanes_only(rows: usize, cols: usize, lanes: &'a [u8]) -> Option<Self> {
        Self {
            rows,
            cols,
            data: &[],
            lanes: None,
        }
        .with_lanes(lanes)
    }

    /// Whether the kernels on `isa` read the lane layout (and so want it built at load).
    pub fn lanes_pay_off(isa: Isa) -> bool {
        isa == Isa::Avx512Vnni
    }

    /// The lane rows the kernels on `isa` read, if they read those.
    fn lanes_for(&self, isa: Isa) -> Option<&'a [u8]> {
        self.lanes
            .filter(|_| Self::lanes_pay_off(isa) || self.data.is_empty())
    }

    pub fn row(&self, r: usize) -> &'a [u8] {
        let rb = row_bytes(self.cols);
        &self.data[r * rb..(r + 1) * rb]
    }

    /// The weight (−1, 0 or +1) at `(r, c)`.
    pub fn weight(&self, r: usize, c: usize) -> i8 {
        let (index, sign) = block_bits(self.row(r), c / 4);
        codec::weights_of(index, sign)[c % 4]
    }

    /// The same weights in the I2_S layout (for consumers that read only I2_S).
    pub fn to_i2s(&self) -> Vec<u8> {
        let rb = row_bytes(self.cols);
        let ib = ternary::row_bytes(self.cols);
        let mut out = vec![0u8; self.rows * ib];
        for (r, dst) in out.chunks_exact_mut(ib.max(1)).enumerate().take(self.rows) {
            let row = &self.data[r * rb..(r + 1) * rb];
            let mut block = [0i8; 4];
            ternary::pack_row(dst, self.cols, |c| {
                if c % 4 == 0 {
                    let (index, sign) = block_bits(row, c / 4);
                    block = codec::weights_of(index, sign);
                }
                (block[c % 4] + 1) as u8
            });
        }
        out
    }
}

/// Index and sign bit of block `b` of a packed row.
#[inline]
fn block_bits(row: &[u8], b: usize) -> (u8, bool) {
    let (g, j) = (b / 32, b % 32);
    let group = &row[g * GROUP_BYTES..(g + 1) * GROUP_BYTES];
    let index = (group[j % 16] >> (4 * (j / 16))) & 15;
    let signs = u32::from_le_bytes([group[16], group[17], group[18], group[19]]);
    (index, signs >> j & 1 == 1)
}

/// Writes index and sign bit of block `b` into a zeroed packed row.
#[inline]
fn set_block_bits(row: &mut [u8], b: usize, index: u8, sign: bool) {
    let (g, j) = (b / 32, b % 32);
    let group = &mut row[g * GROUP_BYTES..(g + 1) * GROUP_BYTES];
    group[j % 16] |= index << (4 * (j / 16));
    group[INDEX_BYTES + j / 8] |= u8::from(sign) << (j % 8);
}

/// Where a matrix breaks the 3:4 rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PackError {
    pub row: usize,
    pub col: usize,
    pub error: BlockError,
}

impl std::fmt::Display for PackError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (row, col) = (self.row, self.col);
        write!(f, "row {row}, columns {col}..{}: {}", col + 4, self.error)
    }
}

impl std::error::Error for PackError {}

/// Packs ternary weights given by `weight(r, c)` (each −1, 0 or +1, exactly one zero per
/// block of four; a last, partial block of a row may have no zero: the padding takes it).
pub fn pack(
    rows: usize,
    cols: usize,
    mut weight: impl FnMut(usize, usize) -> i8,
) -> Result<Vec<u8>, PackError> {
    let rb = row_bytes(cols);
    let mut out = vec![0u8; rows * rb];
    for r in 0..rows {
        let row = &mut out[r * rb..(r + 1) * rb];
        for b in 0..padded_cols(cols) / 4 {
            let c0 = 4 * b;
            let (index, sign) = if c0 >= cols {
                (0, false)
            } else {
                let mut w = [0i8; 4];
                let real = (cols - c0).min(4);
                for (p, v) in w.iter_mut().enumerate().take(real) {
                    *v = weight(r, c0 + p);
                }
                // A partial block: the first padding position takes the zero if no real
                // weight is zero, the others are +1.
                if real < 4 {
                    let has_zero = w[..real].contains(&0);
                    for (p, v) in w.iter_mut().enumerate().skip(real) {
                        *v = if !has_zero && p == real { 0 } else { 1 };
                    }
                }
                encode_block(w).map_err(|error| PackError {
                    row: r,
                    col: c0,
                    error,
                })?
            };
            set_block_bits(row, b, index, sign);
        }
    }
    Ok(out)
}

/// Scalar reference: Σ code·q over one packed row (`q.len() == padded_cols`).
pub fn dot_codes_ref(row: &[u8], q: &[i8]) -> i32 {
    dot_blocks(q, |b| block_bits(row, b))
}

/// Σ code·q over the blocks of `q`, each block's index and sign bit given by `bits`.
fn dot_blocks(q: &[i8], bits: impl Fn(usize) -> (u8, bool)) -> i32 {
    let mut acc = 0i32;
    for b in 0..q.len() / 4 {
        let (index, sign) = bits(b);
        let w = codec::weights_of(index, sign);
        for p in 0..4 {
            acc += i32::from(w[p] + 1) * i32::from(q[4 * b + p]);
        }
    }
    acc
}

/// Scalar reference GEMV: `out[r] = W[r]·x` for one quantized activation row.
pub fn gemv_ref(w: SherryView<'_>, q: &[i8], act: ActScale, w_scale: f32, out: &mut [f32]) {
    assert_eq!(q.len(), padded_cols(w.cols), "gemv: activation length");
    assert_eq!(out.len(), w.rows, "gemv: output length");
    for (r, o) in out.iter_mut().enumerate() {
        *o = epilogue(dot_codes_ref(w.row(r), q), act, w_scale);
    }
}

/// The activations an ISA's tiles read: AVX2 wants each group's 128 values transposed
/// (`[position in block][block]`), so that one `vpshufb` per position decodes 32 blocks.
fn prepare<'q>(isa: Isa, w: &SherryView<'_>, q: &'q [i8]) -> std::borrow::Cow<'q, [i8]> {
    if isa != Isa::Avx2 || w.lanes_for(isa).is_some() {
        return std::borrow::Cow::Borrowed(q);
    }
    let mut t = vec![0i8; q.len()];
    for (src, dst) in q
        .chunks_exact(GROUP_ELEMS)
        .zip(t.chunks_exact_mut(GROUP_ELEMS))
    {
        for (i, &v) in src.iter().enumerate() {
            dst[(i % 4) * 32 + i / 4] = v;
        }
    }
    std::borrow::Cow::Owned(t)
}

/// Integer dots of weight rows `rows` against `n` prepared activation rows `k` apart,
/// handed to `sink(row, token, dot)`: tiles of up to 4 rows (a quarter of the range apart
/// when decoding, so each streams its own pages) × 4 tokens. AVX-512 reads the lane layout
/// where the view has it.
fn dots(
    isa: Isa,
    w: &SherryView<'_>,
    rows: std::ops::Range<usize>,
    q: &[i8],
    n: usize,
    sink: &mut impl FnMut(usize, usize, i32),
) {
    let k = padded_cols(w.cols);
    let lanes = w.lanes_for(isa);
    let (data, rb) = match lanes {
        Some(l) => (l, lanes::lane_row_bytes(w.cols)),
        None => (w.data, row_bytes(w.cols)),
    };
    assert!(rows.end * rb <= data.len(), "rows outside the weights");
    assert!(n * k <= q.len(), "activations shorter than {n} rows");
    let groups = k / GROUP_ELEMS;
    let len = rows.len();
    let mut acc = [[0i32; 4]; 4];
    let mut tile = |rt: usize, first: usize, stride: usize, t: usize, tt: usize| {
        // SAFETY: rows first + i·stride (i < rt) lie inside `rows`, hence inside `data`, and
        // tokens t..t+tt inside `q` (asserted above); the ISA was checked by the caller.
        unsafe {
            let wp = data.as_ptr().add(first * rb);
            let qp = q.as_ptr().add(t * k);
            let s = stride * rb;
            match isa {
                #[cfg(target_arch = "x86_64")]
                Isa::Avx512Vnni if lanes.is_some() => {
                    let (units, tail) = lanes::shape(w.cols);
                    avx512::tile_lanes(rt, tt, wp, s, qp, k, units, tail, &mut acc)
                }
                _ if lanes.is_some() => {
                    let dot = lanes::dot_codes_lanes_ref;
                    tile_ref(rt, tt, wp, s, rb, qp, k, dot, &mut acc)
                }
                #[cfg(target_arch = "x86_64")]
                Isa::Avx512Vnni => avx512::tile(rt, tt, wp, s, qp, k, groups, &mut acc),
                #[cfg(target_arch = "x86_64")]
                Isa::Avx2 => avx2::tile(rt, tt, wp, s, qp, k, groups, &mut acc),
                _ => tile_ref(rt, tt, wp, s, rb, qp, k, dot_codes_ref, &mut acc),
            }
        }
        for (i, row) in acc.iter().enumerate().take(rt) {
            for (j, &d) in row.iter().enumerate().take(tt) {
                sink(first + i * stride, t + j, d);
            }
        }
    };
    if n == 1 {
        for g in crate::walk::groups(rows, crate::walk::Walk::Quarters) {
            tile(g.count, g.first, g.stride, 0, 1);
        }
        return;
    }
    // Tokens go 4 at a time over a block of tiles, as in the I2_S GEMM: the activations in
    // use stay in L1 while the block's weights stay in L1/L2.
    let tiles = len / 4;
    for g0 in (0..tiles).step_by(ternary::TILE_BLOCK) {
        for t in (0..n).step_by(4) {
            for g in g0..(g0 + ternary::TILE_BLOCK).min(tiles) {
                tile(4, rows.start + 4 * g, 1, t, (n - t).min(4));
            }
        }
    }
    for r in rows.start + 4 * tiles..rows.end {
        for t in (0..n).step_by(4) {
            tile(1, r, 1, t, (n - t).min(4));
        }
    }
}

/// Portable tile (the scalar reference per element): `dot` of each of `rt` rows of
/// `row_len` bytes, `rb` apart (either layout), with each of `tt` activation rows `k` long.
///
/// # Safety
/// `w` must hold `rt` rows `rb` bytes apart of `row_len` bytes and `q` `tt` rows `k` apart.
#[allow(clippy::too_many_arguments)]
unsafe fn tile_ref(
    rt: usize,
    tt: usize,
    w: *const u8,
    rb: usize,
    row_len: usize,
    q: *const i8,
    k: usize,
    dot: fn(&[u8], &[i8]) -> i32,
    acc: &mut [[i32; 4]; 4],
) {
    for (i, row_acc) in acc.iter_mut().enumerate().take(rt) {
        // SAFETY: the caller guarantees these ranges are inside the buffers.
        let row = unsafe { std::slice::from_raw_parts(w.add(i * rb), row_len) };
        for (j, a) in row_acc.iter_mut().enumerate().take(tt) {
            // SAFETY: as above.
            let qr = unsafe { std::slice::from_raw_parts(q.add(j * k), k) };
            *a = dot(row, qr);
        }
    }
}

/// Rows per work item of a decode GEMV: two items per thread, at least 64 rows.
fn gemv_chunk(rows: usize) -> usize {
    rows.div_ceil(parallel::threads() * 2).max(64)
}

/// GEMV over all rows, split across the thread pool.
pub fn gemv(w: SherryView<'_>, q: &[i8], act: ActScale, w_scale: f32, out: &mut [f32]) {
    gemv_with(Isa::best(), w, q, act, w_scale, out)
}

/// [`gemv`] on a chosen instruction set (tests and benchmarks; panics if the CPU lacks it).
pub fn gemv_with(
    isa: Isa,
    w: SherryView<'_>,
    q: &[i8],
    act: ActScale,
    w_scale: f32,
    out: &mut [f32],
) {
    assert!(isa.available(), "{isa:?} is not available on this CPU");
    assert_eq!(q.len(), padded_cols(w.cols), "gemv: activation length");
    assert_eq!(out.len(), w.rows, "gemv: output length");
    let q = prepare(isa, &w, q);
    parallel::for_rows(out, gemv_chunk(w.rows), |first, chunk| {
        let rows = first..first + chunk.len();
        dots(isa, &w, rows, &q, 1, &mut |r, _, d| {
            chunk[r - first] = park(d)
        });
        finish_parked(chunk, act, w_scale);
    });
}

/// One projection of a [`gemv_many`] call.
pub struct GemvJob<'a, 'o> {
    pub w: SherryView<'a>,
    pub scale: f32,
    pub out: &'o mut [f32],
}

/// Several GEMVs sharing one quantized input (q/k/v, gate/up) in one parallel region.
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
    // Each job gets the activations as its tiles read them (AVX2's file layout transposed).
    let file = jobs.iter().find(|j| j.w.lanes_for(isa).is_none());
    let transposed = file.map(|j| prepare(isa, &j.w, q));
    let total = lens.iter().sum();
    parallel::for_job_rows(&lens, gemv_chunk(total), |ji, rows| {
        let (j, out) = (&jobs[ji], outs[ji]);
        let q = match (&transposed, j.w.lanes_for(isa)) {
            (Some(t), None) => t,
            _ => q,
        };
        dots(isa, &j.w, rows.clone(), q, 1, &mut |r, _, d| {
            // SAFETY: row r < j.w.rows == out length, and rows are handed to one thread only.
            unsafe { *out.get().add(r) = park(d) };
        });
        // SAFETY: these rows of job ji's output were written above by this thread alone.
        let parked = unsafe { out.rows(rows) };
        finish_parked(parked, act, j.scale);
    });
}

/// GEMM for prefill: `n` activation rows (each `padded_cols` long) against all weight rows;
/// `out` is `[n, rows]`. Each tile decodes 4 weight rows once per 4 activation rows.
pub fn gemm(w: SherryView<'_>, q: &[i8], acts: &[ActScale], w_scale: f32, out: &mut [f32]) {
    gemm_with(Isa::best(), w, q, acts, w_scale, out)
}

/// [`gemm`] on a chosen instruction set (tests and benchmarks; panics if the CPU lacks it).
pub fn gemm_with(
    isa: Isa,
    w: SherryView<'_>,
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
    let rows = w.rows;
    let q = prepare(isa, &w, q);
    let o = OutPtr(out.as_mut_ptr());
    parallel::for_range(rows, crate::ternary::gemm_chunk(rows, n), |r0, r1| {
        dots(isa, &w, r0..r1, &q, n, &mut |r, t, d| {
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
