//! Projecting dense ternary weights onto Sherry's 3:4 sparsity (`onebit convert --format
//! sherry`).
//!
//! Per block of four weights of a row, exactly one must be zero:
//! - one zero already: the block is kept;
//! - no zero: the weight whose removal hurts least is zeroed. Removing `w_c` changes the
//!   output by `w_c·x_c`, whose expected square is the input channel's energy `E[x_c²]`
//!   (`|w_c| = 1`), so the weight on the input with the least energy goes;
//! - two or more zeros: all but one become ±1, and filling `w_c` adds the same `E[x_c²]`, so
//!   the zero on the input with the most energy stays and the others are filled. A filled
//!   weight takes the sign opposite to the sum of the block's kept weights (+1 when that sum
//!   is ≤ 0), so the row's sum moves as little as it can.
//!
//! The energies come from a calibration text run through the model
//! ([`Calibration::measure`]); without one every channel counts the same and ties go to the
//! lowest column (zero the first weight, keep the first zero). The per-tensor scale is kept.

use crate::backend::Need;
use crate::forward::{forward_with, Projector, Session};
use crate::model::{Bytes, Layer, Model, TernaryTensor};
use crate::Result;
use onebit_kernels::act_quant::ActScale;
use onebit_kernels::sherry;
use onebit_kernels::ternary::padded_cols;
use std::collections::HashMap;
use std::sync::Mutex;

/// Calibration windows read at most (enough for stable energies on small models; bounds
/// the time on big ones).
pub const MAX_WINDOWS: usize = 16;

/// Per projection, the energy `Σ x_c²` of every input channel over a calibration text.
#[derive(Default)]
pub struct Calibration {
    energy: HashMap<usize, Vec<f64>>,
}

/// Collects the energies while the CPU computes every projection itself.
#[derive(Default)]
struct EnergyTap {
    energy: Mutex<HashMap<usize, Vec<f64>>>,
}

/// Identifies a projection of the model being measured (it stays put while measured).
fn key(w: &TernaryTensor) -> usize {
    w as *const TernaryTensor as usize
}

impl Projector for EnergyTap {
    fn project(&self, w: &TernaryTensor, quant: &[i8], acts: &[ActScale], _: &mut [f32]) -> bool {
        let k = padded_cols(w.cols);
        let mut map = self.energy.lock().unwrap_or_else(|e| e.into_inner());
        let e = map.entry(key(w)).or_insert_with(|| vec![0.0; w.cols]);
        for (row, act) in quant.chunks_exact(k).zip(acts) {
            let inv = 1.0 / f64::from(act.scale);
            for (acc, &q) in e.iter_mut().zip(row) {
                let x = f64::from(q) * inv;
                *acc += x * x;
            }
        }
        false
    }
}

impl Calibration {
    /// Runs `ids` (BOS first) through `model` on the CPU, in windows of the model's
    /// context (each after BOS, at most [`MAX_WINDOWS`] of them) and chunks of at most 256
    /// tokens, and records the energy of every projection's input.
    pub fn measure(model: &Model, ids: &[u32]) -> Result<Self> {
        let tap = EnergyTap::default();
        let (bos, text) = ids
            .split_first()
            .map_or((None, ids), |(b, t)| (Some(*b), t));
        let window = model.config.max_context.saturating_sub(1).max(1);
        for part in text.chunks(window).take(MAX_WINDOWS) {
            let ids: Vec<u32> = bos.into_iter().chain(part.iter().copied()).collect();
            let mut session = Session::new(model, ids.len());
            for chunk in ids.chunks(256) {
                forward_with(
                    model,
                    &mut [&mut session],
                    &[chunk],
                    &[Need::Nothing],
                    None,
                    Some(&tap),
                )?;
            }
        }
        Ok(Self {
            energy: tap.energy.into_inner().unwrap_or_else(|e| e.into_inner()),
        })
    }

    fn of(&self, w: &TernaryTensor) -> Option<&[f64]> {
        self.energy.get(&key(w)).map(Vec::as_slice)
    }
}

/// What [`project_model`] changed.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Projection {
    pub blocks: u64,
    /// Blocks with no zero, one of whose weights was zeroed.
    pub zeroed: u64,
    /// Blocks with two or more zeros, some of which were filled.
    pub filled: u64,
}

impl Projection {
    /// The share of blocks that changed.
    pub fn changed_share(&self) -> f64 {
        (self.zeroed + self.filled) as f64 / self.blocks.max(1) as f64
    }
}

/// Projects one block's weights (in place) by the rule of the module doc; returns whether
/// it zeroed (`Some(true)`), filled (`Some(false)`) or kept (`None`) it.
pub fn project_block(w: &mut [i8; 4], energy: [f64; 4]) -> Option<bool> {
    let zeros: Vec<usize> = (0..4).filter(|&p| w[p] == 0).collect();
    match zeros.len() {
        1 => None,
        0 => {
            let least = (0..4)
                .min_by(|&a, &b| energy[a].total_cmp(&energy[b]))
                .unwrap_or(0);
            w[least] = 0;
            Some(true)
        }
        _ => {
            let keep = zeros
                .iter()
                .copied()
                .reduce(|a, b| if energy[b] > energy[a] { b } else { a })
                .unwrap_or(zeros[0]);
            let sum: i32 = w.iter().map(|&v| i32::from(v)).sum();
            let fill = if sum <= 0 { 1 } else { -1 };
            for p in zeros.into_iter().filter(|&p| p != keep) {
                w[p] = fill;
            }
            Some(false)
        }
    }
}

/// A Sherry copy of `t` (its weights projected onto 3:4), counting into `stats`.
pub fn project_tensor(
    t: &TernaryTensor,
    energy: Option<&[f64]>,
    stats: &mut Projection,
) -> TernaryTensor {
    if let Some(s) = t.sherry_view() {
        stats.blocks += (t.rows * t.cols.div_ceil(4)) as u64;
        return TernaryTensor::sherry(t.rows, t.cols, t.scale, Bytes::owned(s.data.to_vec()));
    }
    let v = t.view();
    let e = |c: usize| energy.and_then(|e| e.get(c)).copied().unwrap_or(0.0);
    let mut rows = vec![0i8; t.rows * t.cols];
    for (r, row) in rows
        .chunks_exact_mut(t.cols.max(1))
        .enumerate()
        .take(t.rows)
    {
        for (c, w) in row.iter_mut().enumerate() {
            *w = v.code(r, c) as i8 - 1;
        }
        for (b, block) in row.chunks_mut(4).enumerate() {
            if block.len() < 4 {
                // A partial last block (cols % 4 ≠ 0): the padding may take its zero.
                let zeros = block.iter().filter(|&&x| x == 0).count();
                if zeros > 1 {
                    for x in block.iter_mut().filter(|x| **x == 0).skip(1) {
                        *x = 1;
                    }
                    stats.filled += 1;
                }
                stats.blocks += 1;
                continue;
            }
            let mut w = [block[0], block[1], block[2], block[3]];
            let energy = [e(4 * b), e(4 * b + 1), e(4 * b + 2), e(4 * b + 3)];
            match project_block(&mut w, energy) {
                Some(true) => stats.zeroed += 1,
                Some(false) => stats.filled += 1,
                None => {}
            }
            block.copy_from_slice(&w);
            stats.blocks += 1;
        }
    }
    let cols = t.cols;
    let packed = sherry::pack(t.rows, cols, |r, c| rows[r * cols + c])
        .expect("every block was projected onto 3:4");
    TernaryTensor::sherry(t.rows, t.cols, t.scale, Bytes::owned(packed))
}

/// Replaces every projection of `model` by its Sherry projection.
pub fn project_model(model: &mut Model, calibration: Option<&Calibration>) -> Projection {
    let mut stats = Projection::default();
    for t in model.layers.iter_mut().flat_map(Layer::projections_mut) {
        let energy = calibration.and_then(|c| c.of(t));
        *t = project_tensor(t, energy, &mut stats);
    }
    model.provenance.ternary_type = "SHERRY".into();
    stats
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dense_block_loses_its_lowest_energy_weight() {
        let mut w = [1, -1, 1, 1];
        assert_eq!(project_block(&mut w, [3.0, 0.5, 2.0, 1.0]), Some(true));
        assert_eq!(w, [1, 0, 1, 1]);
    }

    #[test]
    fn extra_zeros_are_filled_where_energy_is_lowest() {
        let mut w = [0, 0, 1, 0];
        assert_eq!(project_block(&mut w, [1.0, 9.0, 0.0, 2.0]), Some(false));
        // Keeps the zero on the loudest input (1), fills 0 and 3 against the block's sum.
        assert_eq!(w, [-1, 0, 1, -1]);
        let mut w = [1, 0, -1, 1];
        assert_eq!(project_block(&mut w, [0.0; 4]), None);
    }

    #[test]
    fn without_energies_ties_go_to_the_lowest_column() {
        let mut w = [1, 1, -1, 1];
        project_block(&mut w, [0.0; 4]);
        assert_eq!(w, [0, 1, -1, 1]);
        let mut w = [0, 0, 0, 0];
        project_block(&mut w, [0.0; 4]);
        assert_eq!(w, [0, 1, 1, 1]);
    }
}
