//! The lane layout: Sherry rows repacked at load for the AVX-512 kernels.
//!
//! The file layout keeps a block's index nibble and its sign bit apart, so the AVX-512
//! decode spends a widening shuffle, a shift, two mask moves and a masked subtraction on
//! every 32 blocks beside the two table lookups. Here each block's 5-bit code
//! (`index | sign << 4`) sits whole in a dword lane, so one shift and one two-table
//! `vpermt2d` (bit 4 picks the flipped table) decode 16 blocks: on one Zen 4 core 2.5
//! cycles per 128 weights and row instead of 3.9 (a C replica of both loops, weights in L1).
//!
//! **Layout.** Vector `v` of a row is its blocks `16v..16v + 16` (activations
//! `64v..64v + 64`). A row of `V` vectors is `V / 6` **units** of 64 bytes, then the
//! `V mod 6` vectors left (0, 2 or 4: rows are whole 128-weight groups) as file-layout
//! groups of 20 bytes. In unit `u`, the little-endian u32 at byte `4i` holds in bits
//! `5f..5f + 5` the code of block `16(6u + f) + i`, for `f` in 0..6; bits 30 and 31 are 0.
//! So a 2560-wide row is 6 units and 2 groups, 424 bytes (1.325 bits per weight) against
//! the file's 400, and a 6912-wide row 18 units, 1152 bytes (1.333).

use super::{block_bits, row_bytes, set_block_bits, SherryView, GROUP_BYTES, GROUP_ELEMS};
use crate::parallel;
use crate::ternary::padded_cols;

/// Bytes of one unit: 16 dword lanes.
pub const UNIT_BYTES: usize = 64;
/// 16-block vectors per unit: six 5-bit codes per dword lane.
pub const UNIT_VECTORS: usize = 6;
const UNIT_BLOCKS: usize = 16 * UNIT_VECTORS;
/// File-layout groups a unit replaces (two vectors each).
pub(super) const UNIT_GROUPS: usize = UNIT_VECTORS / 2;

/// Full units and trailing file-layout groups of a row of `cols` weights.
pub const fn shape(cols: usize) -> (usize, usize) {
    let vectors = padded_cols(cols) / GROUP_ELEMS * 2;
    (vectors / UNIT_VECTORS, vectors % UNIT_VECTORS / 2)
}

/// Bytes of one row in the lane layout.
pub const fn lane_row_bytes(cols: usize) -> usize {
    let (units, tail) = shape(cols);
    units * UNIT_BYTES + tail * GROUP_BYTES
}

/// The rows of `w` in the lane layout (`rows × lane_row_bytes(cols)` bytes), repacked on
/// the thread pool.
pub fn to_lanes(w: &SherryView<'_>) -> Vec<u8> {
    let (rb, lb) = (row_bytes(w.cols), lane_row_bytes(w.cols));
    let (units, _) = shape(w.cols);
    let mut out = vec![0u8; w.rows * lb];
    if lb == 0 {
        return out;
    }
    let data = w.data;
    parallel::for_rows_strided(&mut out, lb, 64, |first, chunk| {
        for (r, dst) in chunk.chunks_exact_mut(lb).enumerate() {
            let r = first + r;
            lane_row(&data[r * rb..(r + 1) * rb], units, dst);
        }
    });
    out
}

/// One row: the blocks of the first `units` units moved into their lanes, the rest copied.
fn lane_row(row: &[u8], units: usize, dst: &mut [u8]) {
    let (body, tail) = dst.split_at_mut(units * UNIT_BYTES);
    for (u, unit) in body.chunks_exact_mut(UNIT_BYTES).enumerate() {
        for (i, lane) in unit.chunks_exact_mut(4).enumerate() {
            let mut word = 0u32;
            for f in 0..UNIT_VECTORS {
                let (index, sign) = block_bits(row, UNIT_BLOCKS * u + 16 * f + i);
                word |= u32::from(index | u8::from(sign) << 4) << (5 * f);
            }
            lane.copy_from_slice(&word.to_le_bytes());
        }
    }
    tail.copy_from_slice(&row[units * UNIT_GROUPS * GROUP_BYTES..]);
}

/// Index and sign bit of block `b` of a lane-layout row with `units` units.
pub(super) fn lane_block_bits(row: &[u8], units: usize, b: usize) -> (u8, bool) {
    if b >= units * UNIT_BLOCKS {
        return block_bits(&row[units * UNIT_BYTES..], b - units * UNIT_BLOCKS);
    }
    let (u, v, i) = (b / UNIT_BLOCKS, b % UNIT_BLOCKS / 16, b % 16);
    let at = u * UNIT_BYTES + 4 * i;
    let word = u32::from_le_bytes([row[at], row[at + 1], row[at + 2], row[at + 3]]);
    let code = (word >> (5 * v)) as u8 & 31;
    (code & 15, code >> 4 == 1)
}

/// Scalar reference: Σ code·q over one lane-layout row (`q.len()` its padded width).
pub fn dot_codes_lanes_ref(row: &[u8], q: &[i8]) -> i32 {
    let (units, _) = shape(q.len());
    super::dot_blocks(q, |b| lane_block_bits(row, units, b))
}

/// The rows of a lane-layout matrix back in the file's layout (`rows × row_bytes(cols)`).
pub fn from_lanes(rows: usize, cols: usize, lanes: &[u8]) -> Vec<u8> {
    let (rb, lb) = (row_bytes(cols), lane_row_bytes(cols));
    let (units, _) = shape(cols);
    let mut out = vec![0u8; rows * rb];
    if rb == 0 {
        return out;
    }
    parallel::for_rows_strided(&mut out, rb, 64, |first, chunk| {
        for (r, dst) in chunk.chunks_exact_mut(rb).enumerate() {
            let row = &lanes[(first + r) * lb..(first + r + 1) * lb];
            for b in 0..units * UNIT_BLOCKS {
                let (index, sign) = lane_block_bits(row, units, b);
                set_block_bits(dst, b, index, sign);
            }
            dst[units * UNIT_GROUPS * GROUP_BYTES..].copy_from_slice(&row[units * UNIT_BYTES..]);
        }
    });
    out
}
