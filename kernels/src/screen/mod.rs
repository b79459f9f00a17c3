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
//! With AVX-512 VNNI the hidden row is written in 16-bit fixed point too,
//! `h = t·(256·hi + lo) + d` with `t = max|h| / 32767`, `|d| ≤ t/2`, `hi` a signed and `lo` an
//! unsigned byte, so that `vpdpbusd` forms `Σ q·(hi + 128)` and `Σ q·lo` exactly in integers
//! and `a = s·t·(256·(Σ q·(hi + 128) − 128 Σ q) + Σ q·lo)`. A batch of hidden rows then costs
//! two integer dots per head byte instead of three float instructions per 16, which is what
//! kept a batched screen compute-bound. The bound gains the hidden row's rounding,
//! `s · (t/2) · Σ|q|` (1/258 of the head's term or less), and the f32 roundings of `a`,
//! `4·2⁻²⁴·|a|`; the integer sums themselves are exact. (One byte for the hidden row was
//! tried first: its rounding doubled the bound on the 2B-4T-shaped model and kept 8 % of
//! the rows instead of 0.3 %.)
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
    /// Per row, for the integer screen: `Σ q` and `Σ |q|`.
    q_sum: Vec<i32>,
    q_l1: Vec<f32>,
    /// Whether hidden rows are quantized and screened with `vpdpbusd` (AVX-512 VNNI and a
    /// width that is a multiple of 64).
    integer: bool,
}

/// A hidden row in 16-bit fixed point for the integer screen: `round(h/t) = 256·hi + lo`,
/// kept as the bytes `hi + 128` and `lo`.
struct HiddenBytes {
    hi: Vec<u8>,
    lo: Vec<u8>,
    t: f32,
}

impl HiddenBytes {
    /// `t`: the step of the fixed point (0 for a zero or non-finite row, whose bound is then
    /// exact or NaN anyway).
    fn step(h: &[f32]) -> f32 {
        let max = h.iter().fold(0f32, |m, v| m.max(v.abs()));
        if max > 0.0 && max.is_finite() {
            max / 32767.0
        } else {
            0.0
        }
    }

    fn new(h: &[f32]) -> Self {
        let t = Self::step(h);
        let inv = if t > 0.0 { 1.0 / t } else { 0.0 };
        let (hi, lo) = h
            .iter()
            .map(|v| {
                let fixed = (v * inv).round().clamp(-32767.0, 32767.0) as i32;
                (((fixed >> 8) + 128) as u8, (fixed & 0xff) as u8)
            })
            .unzip();
        Self { hi, lo, t }
    }
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
        let mut meta = vec![(0f32, 0f32, 0i32, 0f32); rows];
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
                let sum = out.iter().map(|&v| i32::from(v)).sum();
                let l1 = out.iter().map(|&v| i32::from(v).abs()).sum::<i32>() as f32;
                *m = (max / 127.0, max, sum, l1);
            }
            done(first * rb..(first + meta.len()) * rb);
        });
        let mut scale = Vec::with_capacity(rows);
        let mut max_abs = Vec::with_capacity(rows);
        let mut q_sum = Vec::with_capacity(rows);
        let mut q_l1 = Vec::with_capacity(rows);
        for (s, m, sum, l1) in meta {
            scale.push(s);
            max_abs.push(m);
            q_sum.push(sum);
            q_l1.push(l1);
        }
        // `ONEBIT_SCREEN=float` keeps the float screen (for measuring one against the other).
        let float_asked = std::env::var("ONEBIT_SCREEN").is_ok_and(|v| v == "float");
        let integer = !float_asked
            && crate::ternary::Isa::best() == crate::ternary::Isa::Avx512Vnni
            && cols.is_multiple_of(64);
        Some(Self {
            rows,
            cols,
            q,
            scale,
            max_abs,
            q_sum,
            q_l1,
            integer,
        })
    }

    /// The float screen even where the integer one would serve (tests run both).
    #[cfg(test)]
    fn float_only(mut self) -> Self {
        self.integer = false;
        self
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
        let (approx, steps) = self.approx_batch(head, hs);
        assert_eq!(
            wishes.len(),
            approx.len() / self.rows,
            "screen: one wish per hidden row"
        );
        hs.chunks_exact(self.cols)
            .zip(approx.chunks_exact(self.rows))
            .zip(wishes.iter().zip(&steps))
            .map(|((h, approx), (wish, t))| self.rescore(head, h, *t, approx, wish))
            .collect()
    }

    /// The screened logits `s · Σ q·h` of every row for each hidden row of `hs`,
    /// `[n, rows]`: each thread screens its tiles of [`SCREEN_TILE`] int8 rows against every
    /// hidden row before the next tile. Beside them, each hidden row's fixed-point step `t`
    /// (0 for the float screen), which its bound needs.
    fn approx_batch(&self, head: &EmbdView<'_>, hs: &[f32]) -> (Vec<f32>, Vec<f32>) {
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
        let bytes: Vec<HiddenBytes> = if self.integer {
            hs.chunks_exact(cols).map(HiddenBytes::new).collect()
        } else {
            Vec::new()
        };
        let pairs: Vec<(&[u8], &[u8])> = bytes.iter().map(|b| (&b.hi[..], &b.lo[..])).collect();
        parallel::for_columns(&mut approx, self.rows, 1024, |first, parts| {
            let len = parts[0].len();
            let mut dots = vec![(0i32, 0i32); SCREEN_TILE * n];
            for t in (0..len).step_by(SCREEN_TILE) {
                let tn = (len - t).min(SCREEN_TILE);
                let q = &self.q[(first + t) * cols..(first + t + tn) * cols];
                let scale = &self.scale[first + t..first + t + tn];
                if self.integer {
                    let dots = &mut dots[..tn * n];
                    int8::dots_u8_pairs(q, &pairs, dots);
                    let sums = &self.q_sum[first + t..first + t + tn];
                    for ((part, hb), dots) in
                        parts.iter_mut().zip(&bytes).zip(dots.chunks_exact(tn))
                    {
                        for (((a, (hi, lo)), s), sum) in
                            part[t..t + tn].iter_mut().zip(dots).zip(scale).zip(sums)
                        {
                            let exact =
                                256 * (i64::from(*hi) - 128 * i64::from(*sum)) + i64::from(*lo);
                            *a = exact as f32 * (s * hb.t);
                        }
                    }
                } else {
                    for (part, h) in parts.iter_mut().zip(hs.chunks_exact(cols)) {
                        let out = &mut part[t..t + tn];
                        int8::rows(q, h, out);
                        for (a, s) in out.iter_mut().zip(scale) {
                            *a *= s;
                        }
                    }
                }
            }
        });
        let steps = if self.integer {
            bytes.iter().map(|b| b.t).collect()
        } else {
            vec![0.0; n]
        };
        (approx, steps)
    }

    /// `B(r, a)`: how far the head's f32 logit of row `r` can lie from its screened logit `a`
    /// for the hidden row `h`, screened with fixed-point step `t` (the module's bound).
    fn bound_of(&self, h: &[f32], t: f32) -> impl Fn(usize, f32) -> f32 + '_ {
        let l1: f32 = h.iter().map(|v| v.abs()).sum();
        // Round the bound's factor up generously: it is itself computed in f32.
        let gamma = self.cols as f32 * f32::EPSILON;
        let factor = l1 * (1.0 / 254.0 + 2.0 * gamma) * 1.001 + f32::MIN_POSITIVE;
        // The integer screen's extra terms: the hidden row's rounding and that of `a`.
        move |r: usize, a: f32| -> f32 {
            let b = self.max_abs[r] * factor;
            if self.integer {
                b + (self.scale[r] * (t / 2.0) * self.q_l1[r] + 4.0 * f32::EPSILON * a.abs())
                    * 1.001
            } else {
                b
            }
        }
    }

    /// The exact logits of the rows that `approx` (the screened logits of `h`, fixed-point
    /// step `t`) cannot rule out for `wish`.
    fn rescore(
        &self,
        head: &EmbdView<'_>,
        h: &[f32],
        t: f32,
        approx: &[f32],
        wish: &TopK<'_>,
    ) -> Vec<(u32, f32)> {
        let bound = self.bound_of(h, t);
        let mut include = wish.include.to_vec();
        include.sort_unstable();
        include.dedup();
        let included = |r: usize| include.binary_search(&(r as u32)).is_ok();
        let lower = approx
            .iter()
            .enumerate()
            .filter(|(r, _)| include.is_empty() || !included(*r))
            .map(|(r, a)| a - bound(r, *a));
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
            .enumerate()
            // Kept unless provably below the floor: a NaN bound or floor keeps the row.
            .filter(|(r, a)| {
                (*a + bound(*r, **a)).partial_cmp(&floor) != Some(std::cmp::Ordering::Less)
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

    /// The screen as built (integer where AVX-512 VNNI and the width allow it) or the float one.
    fn pick(screen: Int8Head, float: bool) -> Int8Head {
        if float {
            screen.float_only()
        } else {
            screen
        }
    }

    /// Hidden states with one large feature, as real ones have: the bound holds every row
    /// in both screens, and the integer screen computes exactly the fixed-point dot its bound
    /// is written for, `s·t·Σ q·round(h/t)`, up to the f32 roundings of `a`.
    #[test]
    fn the_bound_holds_every_row_and_the_integer_screen_is_the_fixed_point_dot() {
        let (rows, cols) = (64, 256);
        let data = head(rows, cols, 7, false);
        let view = EmbdView::new(EmbdType::F16, rows, cols, &data).unwrap();
        let mut h: Vec<f32> = (0..cols).map(|i| (i as f32 * 0.37).cos()).collect();
        h[3] = 1000.0;
        h[200] = -0.3;
        for screen in [
            Int8Head::new(&view).unwrap(),
            Int8Head::new(&view).unwrap().float_only(),
        ] {
            let (approx, steps) = screen.approx_batch(&view, &h);
            let bound = screen.bound_of(&h, steps[0]);
            let t = HiddenBytes::step(&h);
            for (r, a) in approx.iter().enumerate() {
                let exact = f64::from(dot_f16_ref(&data[r * cols * 2..(r + 1) * cols * 2], &h));
                let err = (exact - f64::from(*a)).abs();
                assert!(
                    err <= f64::from(bound(r, *a)),
                    "row {r}: |{exact} - {a}| > {}",
                    bound(r, *a)
                );
                if screen.integer {
                    let q = &screen.q[r * cols..(r + 1) * cols];
                    let fixed: f64 = q
                        .iter()
                        .zip(&h)
                        .map(|(q, v)| f64::from(*q) * f64::from((v / t).round()))
                        .sum();
                    let want = fixed * f64::from(screen.scale[r]) * f64::from(t);
                    let slack =
                        4.0 * f64::from(f32::EPSILON) * want.abs() + f64::from(f32::MIN_POSITIVE);
                    assert!(
                        (want - f64::from(*a)).abs() <= slack,
                        "row {r}: {a} vs fixed point {want}"
                    );
                }
            }
        }
    }

    #[test]
    fn the_integer_screen_serves_where_vnni_and_the_width_allow() {
        let data = head(8, 128, 1, false);
        let view = EmbdView::new(EmbdType::F16, 8, 128, &data).unwrap();
        let vnni = crate::ternary::Isa::best() == crate::ternary::Isa::Avx512Vnni;
        assert_eq!(Int8Head::new(&view).unwrap().integer, vnni);
        let data = head(8, 80, 1, false);
        let view = EmbdView::new(EmbdType::F16, 8, 80, &data).unwrap();
        assert!(!Int8Head::new(&view).unwrap().integer);
    }

    proptest! {
        #[test]
        fn screened_argmax_equals_f16_argmax(rows in 1usize..300, c16 in 1usize..20, seed in any::<u64>(), ties in any::<bool>(), float in any::<bool>()) {
            let cols = c16 * 16;
            let data = head(rows, cols, seed, ties);
            let view = EmbdView::new(EmbdType::F16, rows, cols, &data).unwrap();
            let screen = pick(Int8Head::new(&view).unwrap(), float);
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
            c16 in 1usize..20,
            n in 1usize..4,
            k in 0usize..60,
            include in proptest::collection::vec(0u32..320, 0..8),
            seed in any::<u64>(),
            ties in any::<bool>(),
            is_bf16 in any::<bool>(),
            float in any::<bool>(),
            outliers in any::<bool>(),
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
            let screen = pick(Int8Head::new(&view).unwrap(), float);
            // Hidden states have a few large features: with `outliers`, every 37th is 40×.
            let hs: Vec<f32> = (0..n * cols)
                .map(|i| {
                    let big = if outliers && i % 37 == 5 { 40.0 } else { 1.0 };
                    ((i as u64 * 7 + seed % 1000) as f32 * 0.013).cos() * (1.0 + (i / cols) as f32) * big
                })
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
        fn batched_screen_equals_one_row_at_a_time(rows in 1usize..300, c16 in 1usize..20, n in 1usize..20, seed in any::<u64>(), ties in any::<bool>(), float in any::<bool>()) {
            let cols = c16 * 16;
            let data = head(rows, cols, seed, ties);
            let view = EmbdView::new(EmbdType::F16, rows, cols, &data).unwrap();
            let screen = pick(Int8Head::new(&view).unwrap(), float);
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
