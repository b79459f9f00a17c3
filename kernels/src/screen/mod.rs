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
//! A batch of two hidden rows or more first takes a coarse pass with the high bytes alone
//! (half the `vpdpbusd` work; see [`Int8Head::coarse_pass`]) and dots the low bytes only
//! for rows that could still pass; it keeps exactly the rows and logits of the full integer
//! screen (`ONEBIT_SCREEN=fine` turns the pass off). On the 2B-4T-shaped model's hidden
//! states at top-k 40 (onebitd, 8 streams), the high bytes rule out 83 % of the rows with
//! the `‖q‖₁` bound alone and 89 % with the Cauchy–Schwarz one beside it; `head_bench 2 3
//! batch` (2-vCPU Xeon, family 6 model 207, four runs of each, interleaved): the screened
//! argmax of 4 / 8 / 16 rows took 22.8–24.4 / 35.8–44.4 / 61.9–69.0 ms without the pass
//! and 18.7–23.8 / 26.4–31.0 / 40.1–42.9 ms with it.
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
    /// Per row, for the coarse pass: `‖q‖₂`, rounded up.
    q_l2: Vec<f32>,
    /// The largest `scale`, for the coarse pass's overflow guard.
    max_scale: f32,
    /// Whether hidden rows are quantized and screened with `vpdpbusd` (AVX-512 VNNI and a
    /// width that is a multiple of 64).
    integer: bool,
    /// Whether the integer screen may take its coarse pass ([`Int8Head::coarse_pass`]).
    coarse: bool,
}

/// A hidden row in 16-bit fixed point for the integer screen: `round(h/t) = 256·hi + lo`,
/// kept as the bytes `hi + 128` and `lo`.
struct HiddenBytes {
    hi: Vec<u8>,
    lo: Vec<u8>,
    t: f32,
    /// `‖lo − 127.5‖₂` (exact up to the square root's rounding), for the coarse pass.
    lo_spread: f64,
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
        let (hi, lo): (Vec<u8>, Vec<u8>) = h
            .iter()
            .map(|v| {
                let fixed = (v * inv).round().clamp(-32767.0, 32767.0) as i32;
                (((fixed >> 8) + 128) as u8, (fixed & 0xff) as u8)
            })
            .unzip();
        let lo_spread = lo
            .iter()
            .map(|&l| (f64::from(l) - 127.5).powi(2))
            .sum::<f64>()
            .sqrt();
        Self {
            hi,
            lo,
            t,
            lo_spread,
        }
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

/// A [`TopK`] as the screen uses it: `include` sorted and without repeats, and the hidden
/// row's bound factor ([`Int8Head::bound_factor`]).
struct Wish {
    k: usize,
    include: Vec<u32>,
    factor: f32,
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
        let mut meta = vec![(0f32, 0f32, 0i32, 0f32, 0f32); rows];
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
                let squares: i64 = out.iter().map(|&v| i64::from(v) * i64::from(v)).sum();
                let l2 = ((squares as f64).sqrt() as f32).next_up();
                *m = (max / 127.0, max, sum, l1, l2);
            }
            done(first * rb..(first + meta.len()) * rb);
        });
        let mut scale = Vec::with_capacity(rows);
        let mut max_abs = Vec::with_capacity(rows);
        let mut q_sum = Vec::with_capacity(rows);
        let mut q_l1 = Vec::with_capacity(rows);
        let mut q_l2 = Vec::with_capacity(rows);
        for (s, m, sum, l1, l2) in meta {
            scale.push(s);
            max_abs.push(m);
            q_sum.push(sum);
            q_l1.push(l1);
            q_l2.push(l2);
        }
        // `ONEBIT_SCREEN=float` keeps the float screen, `fine` the integer screen without
        // its coarse pass (for measuring one against the other).
        let asked = std::env::var("ONEBIT_SCREEN").unwrap_or_default();
        let integer = asked != "float"
            && crate::ternary::Isa::best() == crate::ternary::Isa::Avx512Vnni
            && cols.is_multiple_of(64);
        Some(Self {
            rows,
            cols,
            q,
            max_abs,
            q_sum,
            q_l1,
            q_l2,
            max_scale: scale.iter().fold(0f32, |m, s| m.max(*s)),
            scale,
            integer,
            coarse: asked != "fine",
        })
    }

    /// The float screen even where the integer one would serve (tests run both).
    #[cfg(test)]
    fn float_only(mut self) -> Self {
        self.integer = false;
        self
    }

    /// The integer screen without its coarse pass (tests compare the two).
    #[cfg(test)]
    fn fine_only(mut self) -> Self {
        self.coarse = false;
        self
    }

    pub fn bytes(&self) -> usize {
        self.q.len() + self.scale.len() * 20
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
        assert_eq!(
            wishes.len(),
            hs.len() / self.cols.max(1),
            "screen: one wish per hidden row"
        );
        let wishes = self.prepare(hs, wishes);
        let (approx, steps) = self.approx_batch(head, hs, &wishes);
        // Each row's floor, survivors and exact dots on its own thread: run one row after
        // another on the caller, they left the other threads idle for ~2 % of an 8-stream
        // decode step.
        let mut kept = vec![Vec::new(); wishes.len()];
        let (cols, rows) = (self.cols, self.rows);
        parallel::for_rows(&mut kept, 1, |first, chunk| {
            for (i, out) in chunk.iter_mut().enumerate() {
                let r = first + i;
                *out = self.rescore(
                    head,
                    &hs[r * cols..(r + 1) * cols],
                    steps[r],
                    &approx[r * rows..(r + 1) * rows],
                    &wishes[r],
                );
            }
        });
        kept
    }

    /// Each hidden row's wish as the screen uses it, computed once per step for the
    /// screen and the rescoring alike.
    fn prepare(&self, hs: &[f32], wishes: &[TopK<'_>]) -> Vec<Wish> {
        hs.chunks_exact(self.cols.max(1))
            .zip(wishes)
            .map(|(h, w)| {
                let mut include = w.include.to_vec();
                include.sort_unstable();
                include.dedup();
                Wish {
                    k: w.k,
                    include,
                    factor: self.bound_factor(h),
                }
            })
            .collect()
    }

    /// The screened logits `s · Σ q·h` of every row for each hidden row of `hs`,
    /// `[n, rows]`: each thread screens its tiles of [`SCREEN_TILE`] int8 rows against every
    /// hidden row before the next tile. Beside them, each hidden row's fixed-point step `t`
    /// (0 for the float screen), which its bound needs.
    ///
    /// `None`: a row the integer screen ruled out from the high bytes of the hidden row
    /// alone (see [`Int8Head::coarse_pass`]); the wish's set never holds such a row.
    fn approx_batch(
        &self,
        head: &EmbdView<'_>,
        hs: &[f32],
        wishes: &[Wish],
    ) -> (Vec<Option<f32>>, Vec<f32>) {
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
        let mut approx = vec![None; n * self.rows];
        let bytes: Vec<HiddenBytes> = if self.integer {
            hs.chunks_exact(cols).map(HiddenBytes::new).collect()
        } else {
            Vec::new()
        };
        let steps: Vec<f32> = if self.integer {
            bytes.iter().map(|b| b.t).collect()
        } else {
            vec![0.0; n]
        };
        if self.integer && self.coarse_pass(wishes, &steps) {
            self.screen_coarse_then_fine(&bytes, wishes, &mut approx);
            return (approx, steps);
        }
        let pairs: Vec<(&[u8], &[u8])> = bytes.iter().map(|b| (&b.hi[..], &b.lo[..])).collect();
        parallel::for_columns(&mut approx, self.rows, 1024, |first, parts| {
            let len = parts[0].len();
            let mut dots = vec![(0i32, 0i32); SCREEN_TILE * n];
            let mut out = [0f32; SCREEN_TILE];
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
                            *a = Some(fixed_point(*hi, *sum, i64::from(*lo)) as f32 * (s * hb.t));
                        }
                    }
                } else {
                    for (part, h) in parts.iter_mut().zip(hs.chunks_exact(cols)) {
                        let out = &mut out[..tn];
                        int8::rows(q, h, out);
                        for ((a, o), s) in part[t..t + tn].iter_mut().zip(out.iter()).zip(scale) {
                            *a = Some(o * s);
                        }
                    }
                }
            }
        });
        (approx, steps)
    }

    /// Whether the batch takes the coarse pass: two hidden rows or more, every wish
    /// truncates to few rows (a floor exists), and every hidden row has a finite step small enough that no screened logit
    /// can overflow f32 (so the pass and the fine screen bound the same finite numbers).
    ///
    /// The coarse pass dots each int8 row with the high bytes of the hidden rows only, half
    /// the `vpdpbusd` work: with `hi` alone the fixed-point dot is known to within the
    /// low bytes' share, `Σ q·lo = 127.5 Σ q + Σ q·(lo − 127.5)`, the last term at most
    /// `min(127.5 ‖q‖₁, ‖q‖₂ ‖lo − 127.5‖₂)` in size (each `lo` in 0..=255; Cauchy–Schwarz).
    /// A row whose largest possible screened logit, plus the bound at either end, lies
    /// below the k-th largest lower bound among the rows this thread has already screened
    /// exactly cannot pass the exact screen either (that running floor only rises to the
    /// final one); every other row gets its low-byte dot at once, while it is in L1. The
    /// rows kept, and their logits, are those of the exact screen.
    fn coarse_pass(&self, wishes: &[Wish], steps: &[f32]) -> bool {
        const SAFE: f32 = 1e30 / (127.0 * 65536.0 * 65536.0);
        // One hidden row has no partner for its high bytes: nothing to save.
        self.coarse
            && wishes.len() >= 2
            && wishes
                .iter()
                .all(|w| w.k > 0 && w.k <= self.rows / RESCORE_ALL_SHARE)
            && steps
                .iter()
                .all(|t| *t > 0.0 && t * self.max_scale < SAFE / self.cols as f32)
    }

    /// The coarse-then-fine integer screen of [`coarse_pass`](Self::coarse_pass).
    fn screen_coarse_then_fine(
        &self,
        bytes: &[HiddenBytes],
        wishes: &[Wish],
        approx: &mut [Option<f32>],
    ) {
        let cols = self.cols;
        let n = bytes.len();
        // High bytes two hidden rows to a pair; an odd last row pairs its high bytes with
        // its low ones and so is screened exactly in the same pass.
        let pairs: Vec<(&[u8], &[u8])> = bytes
            .chunks(2)
            .map(|b| match b {
                [x, y] => (&x.hi[..], &y.hi[..]),
                [x] => (&x.hi[..], &x.lo[..]),
                _ => unreachable!("chunks of 1 or 2"),
            })
            .collect();
        let bounds: Vec<_> = wishes
            .iter()
            .zip(bytes)
            .map(|(w, b)| self.bound_of(w.factor, b.t))
            .collect();
        parallel::for_columns(approx, self.rows, 1024, |first, parts| {
            let len = parts[0].len();
            let mut dots = vec![(0i32, 0i32); SCREEN_TILE * pairs.len()];
            let mut floors: Vec<RunningFloor> =
                wishes.iter().map(|w| RunningFloor::new(w.k)).collect();
            let mut survivors: Vec<usize> = Vec::with_capacity(SCREEN_TILE);
            let mut low_dots = [0i32; SCREEN_TILE];
            let (mut highs, mut reach) = ([0i32; SCREEN_TILE], [0f64; SCREEN_TILE]);
            for t in (0..len).step_by(SCREEN_TILE) {
                let tn = (len - t).min(SCREEN_TILE);
                let q = &self.q[(first + t) * cols..(first + t + tn) * cols];
                let dots = &mut dots[..tn * pairs.len()];
                int8::dots_u8_pairs(q, &pairs, dots);
                for (i, part) in parts.iter_mut().enumerate() {
                    let (hb, bound, floor) = (&bytes[i], &bounds[i], &mut floors[i]);
                    // Rows are ruled out against the floor before this tile.
                    let below = floor.floor();
                    let high = |j: usize| {
                        let (x, y) = dots[(i / 2) * tn + j];
                        if i % 2 == 0 {
                            x
                        } else {
                            y
                        }
                    };
                    let mut exact = |j: usize, low: i64| {
                        let r = first + t + j;
                        let st = self.scale[r] * hb.t;
                        let a = fixed_point(high(j), self.q_sum[r], low) as f32 * st;
                        part[t + j] = Some(a);
                        if wishes[i].include.binary_search(&(r as u32)).is_err() {
                            floor.push(a - bound(r, a));
                        }
                    };
                    if i == n - 1 && n % 2 == 1 {
                        for j in 0..tn {
                            exact(j, i64::from(dots[(i / 2) * tn + j].1));
                        }
                        continue;
                    }
                    // How high each row's screened logit plus its bound could reach, in
                    // f64 (exact for the integers, and vectorizable), with a margin of
                    // 1e-6 of the magnitudes over the f32 roundings of the exact screen:
                    // an over-estimate only screens a row exactly that needed not be.
                    let r0 = first + t;
                    for (j, h) in highs[..tn].iter_mut().enumerate() {
                        *h = high(j);
                    }
                    let (t64, factor) = (f64::from(hb.t), f64::from(wishes[i].factor));
                    for ((((((re, h), sum), l1), l2), s), m) in reach[..tn]
                        .iter_mut()
                        .zip(&highs[..tn])
                        .zip(&self.q_sum[r0..r0 + tn])
                        .zip(&self.q_l1[r0..r0 + tn])
                        .zip(&self.q_l2[r0..r0 + tn])
                        .zip(&self.scale[r0..r0 + tn])
                        .zip(&self.max_abs[r0..r0 + tn])
                    {
                        let (sum, l1, s) = (f64::from(*sum), f64::from(*l1), f64::from(*s));
                        let centre = 256.0 * (f64::from(*h) - 128.0 * sum) + 127.5 * sum;
                        let spread = (127.5 * l1).min(f64::from(*l2) * hb.lo_spread);
                        let st = s * t64;
                        let a_up = (centre + spread) * st;
                        let a_lo = (centre - spread) * st;
                        let a_max = a_up.abs().max(a_lo.abs());
                        let b = f64::from(*m) * factor
                            + (s * (t64 / 2.0) * l1 + 4.0 * f64::from(f32::EPSILON) * a_max)
                                * 1.001;
                        *re = a_up + b + (a_max + b) * 1e-6;
                    }
                    let below = f64::from(below);
                    survivors.clear();
                    survivors.extend((0..tn).filter(|&j| reach[j] >= below));
                    let low_dots = &mut low_dots[..survivors.len()];
                    int8::dots_u8_gathered(q, &survivors, &hb.lo, low_dots);
                    for (j, low) in survivors.iter().zip(low_dots.iter()) {
                        exact(*j, i64::from(*low));
                    }
                }
            }
        });
    }

    /// `B(r, a)`: how far the head's f32 logit of row `r` can lie from its screened logit `a`
    /// for a hidden row with bound factor `factor` ([`Int8Head::bound_factor`]), screened
    /// with fixed-point step `t` (the module's bound).
    fn bound_of(&self, factor: f32, t: f32) -> impl Fn(usize, f32) -> f32 + '_ {
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

    /// The factor of `max|e|` in the bound for the hidden row `h`: `‖h‖₁ (1/254 + 2γ)`,
    /// rounded up generously (it is itself computed in f32).
    fn bound_factor(&self, h: &[f32]) -> f32 {
        let l1: f32 = h.iter().map(|v| v.abs()).sum();
        let gamma = self.cols as f32 * f32::EPSILON;
        l1 * (1.0 / 254.0 + 2.0 * gamma) * 1.001 + f32::MIN_POSITIVE
    }

    /// The exact logits of the rows that `approx` (the screened logits of `h`, fixed-point
    /// step `t`; `None` for rows the coarse pass ruled out) cannot rule out for `wish`.
    fn rescore(
        &self,
        head: &EmbdView<'_>,
        h: &[f32],
        t: f32,
        approx: &[Option<f32>],
        wish: &Wish,
    ) -> Vec<(u32, f32)> {
        let bound = self.bound_of(wish.factor, t);
        let include = &wish.include;
        let included = |r: usize| include.binary_search(&(r as u32)).is_ok();
        // A row the coarse pass ruled out lies below the floor of rows screened exactly (at
        // least k of them), so leaving it out changes neither the floor nor the set.
        let screened = || {
            approx
                .iter()
                .enumerate()
                .filter_map(|(r, a)| a.map(|a| (r, a)))
        };
        let lower = screened()
            .filter(|(r, _)| include.is_empty() || !included(*r))
            .map(|(r, a)| a - bound(r, a));
        // The k-th largest lower bound. NaN ranks above everything in `total_cmp` (and
        // `f32::max` skips NaN, so k = 1 checks for it apart): a NaN anywhere makes the
        // floor NaN and keeps every row.
        let floor = match wish.k {
            0 => f32::NEG_INFINITY,
            1 if screened().all(|(_, a)| !a.is_nan()) => lower.fold(f32::NEG_INFINITY, f32::max),
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
                a.is_some_and(|a| {
                    (a + bound(*r, a)).partial_cmp(&floor) != Some(std::cmp::Ordering::Less)
                }) || included(*r)
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

/// The fixed-point dot `Σ q·round(h/t)` from the integer screen's byte dots: `hi` =
/// `Σ q·(hi + 128)`, `sum` = `Σ q`, `lo` = `Σ q·lo` (exact in i64).
fn fixed_point(hi: i32, sum: i32, lo: i64) -> i64 {
    256 * (i64::from(hi) - 128 * i64::from(sum)) + lo
}

/// The k-th largest of the lower bounds seen so far (−∞ until k are seen; a NaN keeps it
/// at −∞ for good, so that nothing is ruled out against it).
struct RunningFloor {
    k: usize,
    /// The k largest so far, smallest on top.
    best: std::collections::BinaryHeap<std::cmp::Reverse<Ordered>>,
    nan: bool,
}

/// An f32 ordered by `total_cmp`, for the heap (NaN never enters it).
#[derive(PartialEq)]
struct Ordered(f32);

impl Eq for Ordered {}

impl PartialOrd for Ordered {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Ordered {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.0.total_cmp(&other.0)
    }
}

impl RunningFloor {
    fn new(k: usize) -> Self {
        Self {
            k,
            best: std::collections::BinaryHeap::with_capacity(k + 1),
            nan: false,
        }
    }

    fn push(&mut self, lower: f32) {
        if lower.is_nan() {
            self.nan = true;
            return;
        }
        if self.best.len() < self.k {
            self.best.push(std::cmp::Reverse(Ordered(lower)));
        } else if self.best.peek().is_some_and(|m| lower > m.0 .0) {
            self.best.pop();
            self.best.push(std::cmp::Reverse(Ordered(lower)));
        }
    }

    fn floor(&self) -> f32 {
        match self.best.peek() {
            Some(m) if !self.nan && self.best.len() >= self.k => m.0 .0,
            _ => f32::NEG_INFINITY,
        }
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
            let every_row = [TopK { k: 0, include: &[] }];
            let wishes = screen.prepare(&h, &every_row);
            let (approx, steps) = screen.approx_batch(&view, &h, &wishes);
            let bound = screen.bound_of(wishes[0].factor, steps[0]);
            let t = HiddenBytes::step(&h);
            for (r, a) in approx.iter().enumerate() {
                let a = &a.expect("k = 0 screens every row exactly");
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

    /// Hidden rows with a few large features (every 37th is 40× with `outliers`).
    fn hidden(n: usize, cols: usize, seed: u64, outliers: bool) -> Vec<f32> {
        (0..n * cols)
            .map(|i| {
                let big = if outliers && i % 37 == 5 { 40.0 } else { 1.0 };
                ((i as u64 * 7 + seed % 1000) as f32 * 0.013).cos()
                    * (1.0 + (i / cols) as f32)
                    * big
            })
            .collect()
    }

    /// The coarse pass does rule rows out (so the equality test below compares two paths).
    #[test]
    fn the_coarse_pass_rules_rows_out() {
        let (rows, cols) = (4096, 256);
        let data = head(rows, cols, 3, false);
        let view = EmbdView::new(EmbdType::F16, rows, cols, &data).unwrap();
        let screen = Int8Head::new(&view).unwrap();
        if !screen.integer {
            eprintln!("skipped: the integer screen needs AVX-512 VNNI");
            return;
        }
        let hs = hidden(3, cols, 5, true);
        let wishes = [TopK { k: 1, include: &[] }; 3];
        let (approx, _) = screen.approx_batch(&view, &hs, &screen.prepare(&hs, &wishes));
        let ruled_out = approx.iter().filter(|a| a.is_none()).count();
        assert!(
            ruled_out > approx.len() / 4,
            "{ruled_out} of {} ruled out",
            approx.len()
        );
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
            let hs = hidden(n, cols, seed, outliers);
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

        /// The coarse pass keeps exactly the rows, with exactly the logits, of the integer
        /// screen without it: odd and even batches, truncations, penalised rows.
        #[test]
        fn coarse_then_fine_keeps_what_the_fine_screen_keeps(
            r64 in 1usize..40,
            c64 in 1usize..5,
            n in 1usize..6,
            k in 1usize..12,
            include in proptest::collection::vec(0u32..2600, 0..6),
            seed in any::<u64>(),
            outliers in any::<bool>(),
        ) {
            let (rows, cols) = (r64 * 64 + 7, c64 * 64);
            let data = head(rows, cols, seed, false);
            let view = EmbdView::new(EmbdType::F16, rows, cols, &data).unwrap();
            let coarse = Int8Head::new(&view).unwrap();
            let fine = Int8Head::new(&view).unwrap().fine_only();
            let hs = hidden(n, cols, seed, outliers);
            let wishes = vec![TopK { k, include: &include }; n];
            prop_assert_eq!(
                coarse.top_k_batch(&view, &hs, &wishes),
                fine.top_k_batch(&view, &hs, &wishes)
            );
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
