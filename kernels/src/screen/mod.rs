//! Exact decoding with a fraction of the LM-head bytes: an int8 copy of a float head (F16,
//! BF16 or F32) screens all rows, and only the rows that could still be the argmax — or among
//! the k largest, for a sampler that truncates to its top k — are scored with the head's own
//! kernel.
//!
//! Per row `r` with float values `e` and int8 copy `q = round(e / s)`, `s = max|e| / 127`:
//! the approximate logit `a = s · Σ q·h` is computed in f32. With `ℓ` the exact real dot
//! `Σ e·h` and `ℓ̂` the head's f32 result (what the full head gives):
//!
//! - quantization: `|Σ e·h − s Σ q·h| ≤ (s/2) ‖h‖₁ = max|e| ‖h‖₁ / 254`;
//! - float rounding of `a` and of `ℓ̂`: each within `γ · max|e| · ‖h‖₁`, where
//!   `γ = n · 2⁻²³` over-bounds the classic `n·u / (1 − n·u)` for any summation order.
//!
//! So `|ℓ̂ − a| ≤ B = max|e| · ‖h‖₁ · (1/254 + 2γ)`. A row is kept unless its upper bound
//! `a + B` lies below the k-th largest lower bound `a − B`: at least k rows reach that floor,
//! so a row below it cannot be among the k largest whatever ties are broken by (see
//! [`Int8Head::top_k_batch`]); greedy decoding is k = 1. The rows kept are scored with the
//! very kernel of the full head, so the sampler sees the same numbers.
//!
//! A 4-bit screen (the high nibbles of `q`, then the low ones for the rows they keep) was
//! tried: its rigorous bound, `8/127` instead of `1/254`, kept every row of the 2B-4T-shaped
//! model, so one int8 pass it is.

mod int8;

use crate::embd::{dequant_row, dot_f16_ref, EmbdType, EmbdView};
use crate::parallel;

/// The int8 screening copy of a float (F16, BF16, F32) head.
pub struct Int8Head {
    pub rows: usize,
    pub cols: usize,
    /// `rows × cols` int8 values.
    q: Vec<i8>,
    /// Per row: the scale `s` and `max|e|` (the bound's factor).
    scale: Vec<f32>,
    max_abs: Vec<f32>,
}

/// What [`Int8Head::top_k_batch`] must score exactly for one hidden row.
#[derive(Clone, Copy, Debug)]
pub struct TopK<'a> {
    /// The `k` largest logits (0: every row).
    pub k: usize,
    /// Rows scored whatever their screen says (tokens a sampler's penalties may move).
    pub include: &'a [u32],
}

/// Above `rows / RESCORE_ALL_SHARE` survivors, one row at a time loses to the full head.
const RESCORE_ALL_SHARE: usize = 8;

/// Int8 rows screened against every hidden row before the next tile: 32 rows of 2B-4T are
/// 80 KB, which stay in L2 while the batch's hidden rows pass.
const SCREEN_TILE: usize = 32;

impl Int8Head {
    /// Builds the copy (one pass over the head, in parallel); `None` for a quantized head.
    pub fn new(head: &EmbdView<'_>) -> Option<Self> {
        Self::new_releasing(head, &|_| {})
    }

    /// Like [`new`](Self::new), calling `done(bytes)` with each byte range of `head.data`
    /// as soon as it has been read, so a caller whose head is a file mapping can hand those
    /// pages back: screened decoding then reads only the few float rows it rescores, and
    /// the copy costs no memory beyond the file's.
    pub fn new_releasing(
        head: &EmbdView<'_>,
        done: &(dyn Fn(std::ops::Range<usize>) + Sync),
    ) -> Option<Self> {
        if !matches!(head.kind, EmbdType::F16 | EmbdType::Bf16 | EmbdType::F32) {
            return None;
        }
        let (rows, cols) = (head.rows, head.cols);
        let mut q = vec![0i8; rows * cols];
        let mut meta = vec![(0f32, 0f32); rows];
        let (data, kind) = (head.data, head.kind);
        let rb = kind.row_bytes(cols)?;
        parallel::for_rows2(&mut q, cols, &mut meta, 1, 256, |first, chunk, meta| {
            for (i, (out, m)) in chunk
                .chunks_exact_mut(cols)
                .zip(meta.iter_mut())
                .enumerate()
            {
                let row = &data[(first + i) * rb..(first + i + 1) * rb];
                let max = quantize_row(kind, row, out);
                *m = (max / 127.0, max);
            }
            done(first * rb..(first + meta.len()) * rb);
        });
        let (scale, max_abs) = meta.into_iter().unzip();
        Some(Self {
            rows,
            cols,
            q,
            scale,
            max_abs,
        })
    }

    pub fn bytes(&self) -> usize {
        self.q.len() + self.scale.len() * 8
    }

    /// The argmax of `head · h`, identical to `argmax(matvec(h))` on the float head, and
    /// how many rows were scored exactly.
    pub fn argmax(&self, head: &EmbdView<'_>, h: &[f32]) -> (u32, usize) {
        self.argmax_batch(head, h)[0]
    }

    /// [`argmax`](Self::argmax) of every hidden row of `hs` (`[n, cols]`, n ≥ 1), with one
    /// pass over the copy for all of them (top-1, lowest row on ties, NaN never wins).
    pub fn argmax_batch(&self, head: &EmbdView<'_>, hs: &[f32]) -> Vec<(u32, usize)> {
        let n = hs.len() / self.cols.max(1);
        let wishes = vec![TopK { k: 1, include: &[] }; n];
        self.top_k_batch(head, hs, &wishes)
            .into_iter()
            .map(|cand| {
                let mut best: Option<(u32, f32)> = None;
                for &(r, v) in &cand {
                    if best.is_none_or(|(_, b)| v > b || b.is_nan()) {
                        best = Some((r, v));
                    }
                }
                (best.map_or(0, |b| b.0), cand.len())
            })
            .collect()
    }

    /// For each hidden row of `hs` and its [`TopK`] wish: the exact logits — the very bits
    /// the full head gives — of a set of rows that holds the wish's `k` largest logits and
    /// every row it names in `include`, sorted by row. One pass over the int8 copy serves
    /// the whole batch.
    ///
    /// Why the set is enough: with `L` the k-th largest lower bound `a − B` among the rows
    /// not in `include`, at least k rows have a logit ≥ `L`, so the k-th largest logit of
    /// the whole head — after any change to the `include` rows alone, such as a sampler's
    /// penalties — is ≥ `L`. A row left out has a logit ≤ `a + B < L`: it ranks below k
    /// rows whatever ties are broken by. A row that cannot be bounded (NaN) is kept.
    pub fn top_k_batch(
        &self,
        head: &EmbdView<'_>,
        hs: &[f32],
        wishes: &[TopK<'_>],
    ) -> Vec<Vec<(u32, f32)>> {
        let approx = self.approx_batch(head, hs);
        assert_eq!(
            wishes.len(),
            approx.len() / self.rows,
            "screen: one wish per hidden row"
        );
        hs.chunks_exact(self.cols)
            .zip(approx.chunks_exact(self.rows))
            .zip(wishes)
            .map(|((h, approx), wish)| self.rescore(head, h, approx, wish))
            .collect()
    }

    /// The screened logits `s · Σ q·h` of every row for each hidden row of `hs`,
    /// `[n, rows]`: each thread screens its tiles of [`SCREEN_TILE`] int8 rows against every
    /// hidden row before the next tile.
    fn approx_batch(&self, head: &EmbdView<'_>, hs: &[f32]) -> Vec<f32> {
        let cols = self.cols;
        assert!(
            cols > 0 && !hs.is_empty() && hs.len().is_multiple_of(cols),
            "screen: hidden rows"
        );
        assert_eq!(
            (head.rows, head.cols),
            (self.rows, self.cols),
            "screen: head shape"
        );
        let n = hs.len() / cols;
        let mut approx = vec![0f32; n * self.rows];
        parallel::for_columns(&mut approx, self.rows, 1024, |first, parts| {
            let len = parts[0].len();
            for t in (0..len).step_by(SCREEN_TILE) {
                let tn = (len - t).min(SCREEN_TILE);
                let q = &self.q[(first + t) * cols..(first + t + tn) * cols];
                for (part, h) in parts.iter_mut().zip(hs.chunks_exact(cols)) {
                    let out = &mut part[t..t + tn];
                    int8::rows(q, h, out);
                    for (a, s) in out.iter_mut().zip(&self.scale[first + t..]) {
                        *a *= s;
                    }
                }
            }
        });
        approx
    }

    /// The exact logits of the rows that `approx` (the screened logits of `h`) cannot rule
    /// out for `wish`.
    fn rescore(
        &self,
        head: &EmbdView<'_>,
        h: &[f32],
        approx: &[f32],
        wish: &TopK<'_>,
    ) -> Vec<(u32, f32)> {
        let l1: f32 = h.iter().map(|v| v.abs()).sum();
        // Round the bound's factor up generously: it is itself computed in f32.
        let gamma = self.cols as f32 * f32::EPSILON;
        let factor = l1 * (1.0 / 254.0 + 2.0 * gamma) * 1.001 + f32::MIN_POSITIVE;
        let mut include = wish.include.to_vec();
        include.sort_unstable();
        include.dedup();
        let included = |r: usize| include.binary_search(&(r as u32)).is_ok();
        let lower = approx
            .iter()
            .zip(&self.max_abs)
            .enumerate()
            .filter(|(r, _)| include.is_empty() || !included(*r))
            .map(|(_, (a, m))| a - m * factor);
        // The k-th largest lower bound. NaN ranks above everything in `total_cmp` (and
        // `f32::max` skips NaN, so k = 1 checks for it apart): a NaN anywhere makes the
        // floor NaN and keeps every row.
        let floor = match wish.k {
            0 => f32::NEG_INFINITY,
            1 if approx.iter().all(|a| !a.is_nan()) => lower.fold(f32::NEG_INFINITY, f32::max),
            k => {
                let mut lower: Vec<f32> = lower.collect();
                if k > lower.len() {
                    f32::NEG_INFINITY
                } else {
                    *lower.select_nth_unstable_by(k - 1, |a, b| b.total_cmp(a)).1
                }
            }
        };
        let keep: Vec<u32> = approx
            .iter()
            .zip(&self.max_abs)
            .enumerate()
            // Kept unless provably below the floor: a NaN bound or floor keeps the row.
            .filter(|(r, (a, m))| {
                (*a + *m * factor).partial_cmp(&floor) != Some(std::cmp::Ordering::Less)
                    || included(*r)
            })
            .map(|(r, _)| r as u32)
            .collect();
        if keep.len() > self.rows / RESCORE_ALL_SHARE {
            // So many survivors that the parallel full head is faster; same bits per row.
            let mut all = vec![0f32; self.rows];
            head.matvec(h, &mut all);
            return keep.into_iter().map(|r| (r, all[r as usize])).collect();
        }
        keep.into_iter()
            .map(|r| (r, head.row_dot(r as usize, h)))
            .collect()
    }
}

/// Quantizes one float row (F16, BF16 or F32) to int8 with scale `max|e| / 127`; returns
/// `max|e|`.
fn quantize_row(kind: EmbdType, row: &[u8], out: &mut [i8]) -> f32 {
    let mut values = vec![0f32; out.len()];
    dequant_row(kind, row, &mut values);
    let max = values.iter().fold(0f32, |m, v| m.max(v.abs()));
    let inv = if max > 0.0 { 127.0 / max } else { 0.0 };
    for (o, v) in out.iter_mut().zip(&values) {
        *o = (v * inv).round().clamp(-127.0, 127.0) as i8;
    }
    max
}

/// Scalar reference of the whole screened argmax: the plain F16 head and its argmax.
pub fn argmax_ref(head: &EmbdView<'_>, h: &[f32]) -> u32 {
    let rb = head.cols * 2;
    let mut best = (0u32, f32::NEG_INFINITY);
    for r in 0..head.rows {
        let v = dot_f16_ref(&head.data[r * rb..(r + 1) * rb], h);
        if v > best.1 {
            best = (r as u32, v);
        }
    }
    best.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use half::{bf16, f16};
    use proptest::prelude::*;

    fn head(rows: usize, cols: usize, seed: u64, ties: bool) -> Vec<u8> {
        (0..rows * cols)
            .flat_map(|i| {
                let r = if ties { i % cols } else { i };
                let v = ((r as u64 * 2654435761 + seed) % 10007) as f32 / 10007.0 - 0.5;
                f16::from_f32(v * 0.1).to_bits().to_le_bytes()
            })
            .collect()
    }

    proptest! {
        #[test]
        fn screened_argmax_equals_f16_argmax(rows in 1usize..300, c16 in 1usize..12, seed in any::<u64>(), ties in any::<bool>()) {
            let cols = c16 * 16;
            let data = head(rows, cols, seed, ties);
            let view = EmbdView::new(EmbdType::F16, rows, cols, &data).unwrap();
            let screen = Int8Head::new(&view).unwrap();
            let h: Vec<f32> = (0..cols).map(|i| ((i as u64 * 7 + seed % 1000) as f32 * 0.013).cos() * 2.0).collect();
            let (got, rescored) = screen.argmax(&view, &h);
            let mut logits = vec![0f32; rows];
            view.matvec(&h, &mut logits);
            let want = logits.iter().enumerate().fold(0usize, |b, (i, v)| if *v > logits[b] { i } else { b });
            prop_assert_eq!(got as usize, want);
            prop_assert_eq!(argmax_ref(&view, &h) as usize, want);
            prop_assert!(rescored >= 1);
        }

        #[test]
        fn top_k_holds_the_exact_top_k_and_the_included_rows(
            rows in 1usize..300,
            c16 in 1usize..12,
            n in 1usize..4,
            k in 0usize..60,
            include in proptest::collection::vec(0u32..320, 0..8),
            seed in any::<u64>(),
            ties in any::<bool>(),
            is_bf16 in any::<bool>(),
        ) {
            let cols = c16 * 16;
            let (kind, data) = if is_bf16 {
                // The same values as BF16 (onebit-tiny's head type).
                let data: Vec<u8> = head(rows, cols, seed, ties)
                    .chunks_exact(2)
                    .flat_map(|b| bf16::from_f32(f16::from_le_bytes([b[0], b[1]]).to_f32()).to_le_bytes())
                    .collect();
                (EmbdType::Bf16, data)
            } else {
                (EmbdType::F16, head(rows, cols, seed, ties))
            };
            let view = EmbdView::new(kind, rows, cols, &data).unwrap();
            let screen = Int8Head::new(&view).unwrap();
            let hs: Vec<f32> = (0..n * cols)
                .map(|i| ((i as u64 * 7 + seed % 1000) as f32 * 0.013).cos() * (1.0 + (i / cols) as f32))
                .collect();
            let wishes = vec![TopK { k, include: &include }; n];
            let got = screen.top_k_batch(&view, &hs, &wishes);
            for (h, got) in hs.chunks_exact(cols).zip(&got) {
                let mut exact = vec![0f32; rows];
                view.matvec(h, &mut exact);
                // Scored exactly: the very bits of the full head, in row order.
                for w in got.windows(2) {
                    prop_assert!(w[0].0 < w[1].0);
                }
                for (r, v) in got {
                    prop_assert_eq!(v.to_bits(), exact[*r as usize].to_bits());
                }
                let has = |r: u32| got.binary_search_by_key(&r, |g| g.0).is_ok();
                for r in include.iter().filter(|r| (**r as usize) < rows) {
                    prop_assert!(has(*r), "included row {} missing", r);
                }
                // Every row among the k largest (any tie order) is there.
                let mut order: Vec<u32> = (0..rows as u32).collect();
                order.sort_by(|a, b| exact[*b as usize].total_cmp(&exact[*a as usize]));
                let k = if k == 0 { rows } else { k.min(rows) };
                let kth = exact[order[k - 1] as usize];
                for r in 0..rows as u32 {
                    if exact[r as usize] >= kth {
                        prop_assert!(has(r), "row {} (logit {}, k-th {}) missing", r, exact[r as usize], kth);
                    }
                }
            }
        }

        #[test]
        fn batched_screen_equals_one_row_at_a_time(rows in 1usize..300, c16 in 1usize..12, n in 1usize..20, seed in any::<u64>(), ties in any::<bool>()) {
            let cols = c16 * 16;
            let data = head(rows, cols, seed, ties);
            let view = EmbdView::new(EmbdType::F16, rows, cols, &data).unwrap();
            let screen = Int8Head::new(&view).unwrap();
            let hs: Vec<f32> = (0..n * cols)
                .map(|i| ((i as u64 * 7 + seed % 1000) as f32 * 0.013).cos() * (1.0 + (i / cols) as f32))
                .collect();
            let got = screen.argmax_batch(&view, &hs);
            prop_assert_eq!(got.len(), n);
            for (h, g) in hs.chunks_exact(cols).zip(&got) {
                prop_assert_eq!(*g, screen.argmax(&view, h));
                prop_assert_eq!(g.0, argmax_ref(&view, h));
            }
        }
    }
}
