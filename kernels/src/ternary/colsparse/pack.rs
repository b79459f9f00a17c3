//! Repacking row-major I2_S blocks into the column-tile layout of [`super::ColumnTernary`].
//!
//! The unit of work is a 4 × 4 square of codes: the 4 rows that share a line byte `b` (rows
//! `row(b, k)`, k = 0..3) by the 4 columns that share an I2_S byte `j` of a block (columns
//! `j + 32g`). Its 4 input bytes (one per row, column `g` at bits `7−2g`) become its 4 output
//! bytes (one per column, row `k` at bits `2k`) by a transpose of a 4 × 4 matrix of 2-bit
//! fields inside one u32: two masked swaps. ~20 operations per 16 codes.

use super::{location, LINE, TILE_ROWS};
use crate::parallel;
use crate::ternary::{row_bytes, TernaryView, BLOCK_BYTES, BLOCK_ELEMS};

/// Fills `data` (`tiles · pcols · 64` bytes) from `w`.
pub(super) fn repack(w: TernaryView<'_>, pcols: usize, data: &mut [u8]) {
    let tile_bytes = pcols * LINE;
    if tile_bytes == 0 {
        return;
    }
    // rows_of[b][k]: the tile row whose code sits in line byte b at bits 2k.
    let mut rows_of = [[0usize; 4]; LINE];
    for r in 0..TILE_ROWS {
        let (b, shift) = location(r);
        rows_of[b][shift as usize / 2] = r;
    }
    let rb = row_bytes(w.cols);
    // Rows past the matrix read as code 1 (weight 0) everywhere.
    let pad = vec![0x55u8; rb];
    parallel::for_rows_strided(data, tile_bytes, 1, |first, chunk| {
        for (i, lines) in chunk.chunks_exact_mut(tile_bytes).enumerate() {
            let t = first + i;
            {
                let src = rows_of.map(|rows| {
                    rows.map(|r| match t * TILE_ROWS + r {
                        row if row < w.rows => &w.data[row * rb..(row + 1) * rb],
                        _ => &pad[..],
                    })
                });
                // Block by block, so that the 128 lines written stay in L1.
                for blk in 0..pcols / BLOCK_ELEMS {
                    for (b, rows) in src.iter().enumerate() {
                        let [s0, s1, s2, s3] =
                            rows.map(|s| &s[blk * BLOCK_BYTES..(blk + 1) * BLOCK_BYTES]);
                        for j in 0..BLOCK_BYTES {
                            let x = u32::from_le_bytes([s0[j], s1[j], s2[j], s3[j]]);
                            let y = transpose4x4(x);
                            for g in 0..4 {
                                let c = blk * BLOCK_ELEMS + j + 32 * (3 - g);
                                lines[c * LINE + b] = (y >> (8 * g)) as u8;
                            }
                        }
                    }
                }
            }
        }
    });
}

/// The inverse of [`repack`]: the row-major I2_S blocks of the `rows` rows (`row_bytes(cols)`
/// each) from `data`, the same 4 × 4 squares transposed back (the transpose is its own
/// inverse). Parallel over tiles; each tile writes only its own rows.
pub(super) fn unpack(data: &[u8], rows: usize, cols: usize, pcols: usize) -> Vec<u8> {
    let rb = row_bytes(cols);
    let tile_bytes = pcols * LINE;
    if tile_bytes == 0 || rb == 0 {
        return vec![0u8; rows * rb];
    }
    let mut out = vec![0u8; rows * rb];
    let mut rows_of = [[0usize; 4]; LINE];
    for r in 0..TILE_ROWS {
        let (b, shift) = location(r);
        rows_of[b][shift as usize / 2] = r;
    }
    parallel::for_rows_strided(&mut out, TILE_ROWS * rb, 1, |first, chunk| {
        // The last tile may hold fewer than TILE_ROWS rows (its lines' padding rows are
        // skipped).
        for (i, dst) in chunk.chunks_mut(TILE_ROWS * rb).enumerate() {
            let t = first + i;
            let lines = &data[t * tile_bytes..(t + 1) * tile_bytes];
            let here = dst.len() / rb;
            for blk in 0..pcols / BLOCK_ELEMS {
                for (b, rows) in rows_of.iter().enumerate() {
                    for j in 0..BLOCK_BYTES {
                        let mut y = 0u32;
                        for g in 0..4 {
                            let c = blk * BLOCK_ELEMS + j + 32 * (3 - g);
                            y |= u32::from(lines[c * LINE + b]) << (8 * g);
                        }
                        let x = transpose4x4(y).to_le_bytes();
                        for (&r, &byte) in rows.iter().zip(&x).filter(|(r, _)| **r < here) {
                            dst[r * rb + blk * BLOCK_BYTES + j] = byte;
                        }
                    }
                }
            }
        }
    });
    out
}

/// Transposes a 4 × 4 matrix of 2-bit fields, field (k, g) at bits `8k + 2g` → `8g + 2k`:
/// swap the off-diagonal 2 × 2 blocks (12 bits apart), then the off-diagonal fields inside
/// each block (6 bits apart).
#[inline]
fn transpose4x4(x: u32) -> u32 {
    let t = ((x >> 12) ^ x) & 0x0000_f0f0;
    let x = x ^ t ^ (t << 12);
    let t = ((x >> 6) ^ x) & 0x00cc_00cc;
    x ^ t ^ (t << 6)
}

#[cfg(test)]
mod tests {
    use super::transpose4x4;

    #[test]
    fn transpose_moves_every_field() {
        for k in 0..4 {
            for g in 0..4 {
                for v in 1..4u32 {
                    let x = v << (8 * k + 2 * g);
                    assert_eq!(transpose4x4(x), v << (8 * g + 2 * k), "({k}, {g})");
                }
            }
        }
    }
}
