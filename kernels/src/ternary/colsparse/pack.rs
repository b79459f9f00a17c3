//! Repacking row-major I2_S blocks into the column-tile layout of [`super::ColumnTernary`].
//!
//! Works on 256-row × 128-column squares (one I2_S block per row, one line per column): the
//! rows are decoded into a small code-byte buffer already in line order, then each line is
//! packed from four consecutive bytes at a time.

use super::{location, LINE, SPAN, TILES_PER_LINE_PAIR, TILE_ROWS};
use crate::parallel;
use crate::ternary::{TernaryView, BLOCK_BYTES, BLOCK_ELEMS};

/// Fills `data` (zeroed, `tiles · pcols · 64` bytes) from `w`.
pub(super) fn repack(w: TernaryView<'_>, pcols: usize, data: &mut [u8]) {
    let pair_bytes = pcols * SPAN;
    if pair_bytes == 0 {
        return;
    }
    parallel::for_rows_strided(data, pair_bytes, 1, |first, chunk| {
        let mut tmp = vec![0u8; BLOCK_ELEMS * TILE_ROWS];
        for (p, span) in chunk.chunks_exact_mut(pair_bytes).enumerate() {
            for i in 0..TILES_PER_LINE_PAIR {
                let t = (first + p) * TILES_PER_LINE_PAIR + i;
                for cb in 0..pcols / BLOCK_ELEMS {
                    decode_square(w, t, cb, &mut tmp);
                    for cc in 0..BLOCK_ELEMS {
                        let c = cb * BLOCK_ELEMS + cc;
                        let line = &mut span[c * SPAN + i * LINE..][..LINE];
                        let codes = &tmp[cc * TILE_ROWS..][..TILE_ROWS];
                        for (o, x) in line.iter_mut().zip(codes.chunks_exact(4)) {
                            let x = u32::from_le_bytes([x[0], x[1], x[2], x[3]]);
                            *o = (x | x >> 6 | x >> 12 | x >> 18) as u8;
                        }
                    }
                }
            }
        }
    });
}

/// Codes of tile `t`, column block `cb` into `tmp[col][4·byte + k]` (line order); rows past
/// the matrix get code 1 (weight 0).
fn decode_square(w: TernaryView<'_>, t: usize, cb: usize, tmp: &mut [u8]) {
    for r in 0..TILE_ROWS {
        let (b, shift) = location(r);
        let loc = 4 * b + shift as usize / 2;
        let row = t * TILE_ROWS + r;
        if row >= w.rows {
            for cc in 0..BLOCK_ELEMS {
                tmp[cc * TILE_ROWS + loc] = 1;
            }
            continue;
        }
        let block = &w.row(row)[cb * BLOCK_BYTES..][..BLOCK_BYTES];
        for (j, &byte) in block.iter().enumerate() {
            for g in 0..4 {
                tmp[(g * 32 + j) * TILE_ROWS + loc] = (byte >> (6 - 2 * g)) & 3;
            }
        }
    }
}
