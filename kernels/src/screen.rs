//! Exact greedy decoding with half the LM-head bytes: an int8 copy of an F16 head screens
//! all rows, and only the rows that could still be the argmax are rescored in F16.
//!
//! Per row `r` with F16 values `e` and int8 copy `q = round(e / s)`, `s = max|e| / 127`:
//! the approximate logit `a = s · Σ q·h` is computed in f32. With `ℓ` the exact real dot
//! `Σ e·h` and `ℓ̂` the F16 head's float result (what the normal path's argmax sees):
//!
//! - quantization: `|Σ e·h − s Σ q·h| ≤ (s/2) ‖h‖₁ = max|e| ‖h‖₁ / 254`;
//! - float rounding of `a` and of `ℓ̂`: each within `γ · max|e| · ‖h‖₁`, where
//!   `γ = n · 2⁻²³` over-bounds the classic `n·u / (1 − n·u)` for any summation order.
//!
//! So `|ℓ̂ − a| ≤ B = max|e| · ‖h‖₁ · (1/254 + 2γ)`. Every row with `a + B < max(a − B)` has
//! `ℓ̂` strictly below some other row's `ℓ̂` and cannot be the argmax; the survivors are
//! rescored with the very F16 kernel of the normal head, so the winner (ties to the lowest
//! id, as the sampler's argmax) is the same token.

use crate::embd::{dot_f16_ref, dot_f16_rows, EmbdType, EmbdView};
use crate::parallel;
use half::f16;

/// The int8 screening copy of an F16 head.
pub struct Int8Head {
    pub rows: usize,
    pub cols: usize,
    /// `rows × cols` int8 values.
    q: Vec<i8>,
    /// Per row: the scale `s` and `max|e|` (the bound's factor).
    scale: Vec<f32>,
    max_abs: Vec<f32>,
}

impl Int8Head {
    /// Builds the copy (one pass over the head, in parallel); `None` unless the head is F16.
    pub fn new(head: &EmbdView<'_>) -> Option<Self> {
        Self::new_releasing(head, &|_| {})
    }

    /// Like [`new`](Self::new), calling `done(bytes)` with each byte range of `head.data`
    /// as soon as it has been read, so a caller whose head is a file mapping can hand those
    /// pages back: greedy decoding then reads only the few F16 rows it rescores, and the
    /// copy costs no memory beyond the file's.
    pub fn new_releasing(
        head: &EmbdView<'_>,
        done: &(dyn Fn(std::ops::Range<usize>) + Sync),
    ) -> Option<Self> {
        if head.kind != EmbdType::F16 {
            return None;
        }
        let (rows, cols) = (head.rows, head.cols);
        let mut q = vec![0i8; rows * cols];
        let mut meta = vec![(0f32, 0f32); rows];
        let data = head.data;
        let rb = cols * 2;
        parallel::for_rows2(&mut q, cols, &mut meta, 1, 256, |first, chunk, meta| {
            for (i, (out, m)) in chunk
                .chunks_exact_mut(cols)
                .zip(meta.iter_mut())
                .enumerate()
            {
                let row = &data[(first + i) * rb..(first + i + 1) * rb];
                let max = quantize_row(row, out);
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

    /// The argmax of `head · h`, identical to `argmax(matvec(h))` on the F16 head, and how
    /// many rows had to be rescored.
    pub fn argmax(&self, head: &EmbdView<'_>, h: &[f32]) -> (u32, usize) {
        self.argmax_batch(head, h)[0]
    }

    /// [`argmax`](Self::argmax) of every hidden row of `hs` (`[n, cols]`, n ≥ 1), with one
    /// pass over the int8 copy for all of them: each thread screens its tiles of
    /// [`SCREEN_TILE`] int8 rows against every hidden row before the next tile. Each row's
    /// survivors are then rescored exactly, as in the one-row case.
    pub fn argmax_batch(&self, head: &EmbdView<'_>, hs: &[f32]) -> Vec<(u32, usize)> {
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
                    screen_rows(q, h, out);
                    for (a, s) in out.iter_mut().zip(&self.scale[first + t..]) {
                        *a *= s;
                    }
                }
            }
        });
        hs.chunks_exact(cols)
            .zip(approx.chunks_exact(self.rows))
            .map(|(h, approx)| self.rescore(head, h, approx))
            .collect()
    }

    /// The exact argmax among the rows that `approx` (the screened logits of `h`) cannot
    /// rule out, and how many those were.
    fn rescore(&self, head: &EmbdView<'_>, h: &[f32], approx: &[f32]) -> (u32, usize) {
        let l1: f32 = h.iter().map(|v| v.abs()).sum();
        // Round the bound's factor up generously: it is itself computed in f32.
        let gamma = self.cols as f32 * f32::EPSILON;
        let factor = l1 * (1.0 / 254.0 + 2.0 * gamma) * 1.001 + f32::MIN_POSITIVE;
        let floor = approx
            .iter()
            .zip(&self.max_abs)
            .map(|(a, m)| a - m * factor)
            .fold(f32::NEG_INFINITY, f32::max);
        let mut best: Option<(u32, f32)> = None;
        let mut rescored = 0;
        let rb = self.cols * 2;
        for (r, (a, m)) in approx.iter().zip(&self.max_abs).enumerate() {
            if a + m * factor < floor {
                continue;
            }
            rescored += 1;
            let mut v = [0f32; 1];
            dot_f16_rows(&head.data[r * rb..(r + 1) * rb], h, &mut v);
            if best.is_none_or(|(_, b)| v[0] > b) {
                best = Some((r as u32, v[0]));
            }
        }
        (best.map_or(0, |b| b.0), rescored)
    }
}

/// Int8 rows screened against every hidden row before the next tile: 32 rows of 2B-4T are
/// 80 KB, which stay in L2 while the batch's hidden rows pass.
const SCREEN_TILE: usize = 32;

fn f16_values(row: &[u8]) -> impl Iterator<Item = f32> + '_ {
    row.chunks_exact(2)
        .map(|b| f16::from_bits(u16::from_le_bytes([b[0], b[1]])).to_f32())
}

/// Quantizes one F16 row to int8 with scale `max|e| / 127`; returns `max|e|`.
fn quantize_row(row: &[u8], out: &mut [i8]) -> f32 {
    let max = f16_values(row).fold(0f32, |m, v| m.max(v.abs()));
    let inv = if max > 0.0 { 127.0 / max } else { 0.0 };
    for (o, v) in out.iter_mut().zip(f16_values(row)) {
        *o = (v * inv).round().clamp(-127.0, 127.0) as i8;
    }
    max
}

/// `out[i] = Σ q_i · h` (f32) for consecutive int8 rows; scalar reference.
pub fn screen_rows_ref(q: &[i8], h: &[f32], out: &mut [f32]) {
    for (o, row) in out.iter_mut().zip(q.chunks_exact(h.len())) {
        *o = row.iter().zip(h).map(|(a, b)| f32::from(*a) * b).sum();
    }
}

/// `out[i] = Σ q_i · h` for consecutive int8 rows, with the widest vectors available.
pub fn screen_rows(q: &[i8], h: &[f32], out: &mut [f32]) {
    assert_eq!(q.len(), out.len() * h.len(), "screen_rows: sizes");
    #[cfg(target_arch = "x86_64")]
    {
        if h.len().is_multiple_of(16) && std::is_x86_feature_detected!("avx512f") {
            // SAFETY: AVX-512F present; sizes checked above, cols % 16 == 0.
            unsafe { screen_avx512(q, h, out) };
            return;
        }
        if h.len().is_multiple_of(8) && std::is_x86_feature_detected!("avx2") {
            // SAFETY: AVX2 present; sizes checked above, cols % 8 == 0.
            unsafe { screen_avx2(q, h, out) };
            return;
        }
    }
    screen_rows_ref(q, h, out);
}

/// The AVX2 form of [`screen_avx512`]: 8 lanes, multiply then add (the bound holds for any
/// summation order, so the lanes need not match the reference's).
///
/// # Safety
/// AVX2; `q.len() == out.len() · h.len()`, `h.len() % 8 == 0`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn screen_avx2(q: &[i8], h: &[f32], out: &mut [f32]) {
    use std::arch::x86_64::*;
    let cols = h.len();
    let n = out.len();
    let quarter = n / 4;
    let one = |r: usize, stride: usize, rt: usize, out: &mut [f32]| {
        let mut acc = [_mm256_setzero_ps(); 4];
        let mut c = 0;
        while c < cols {
            // SAFETY: c + 8 ≤ cols; rows r + j·stride (j < rt) are < n.
            unsafe {
                let hv = _mm256_loadu_ps(h.as_ptr().add(c));
                for (j, a) in acc.iter_mut().enumerate().take(rt) {
                    let p = q.as_ptr().add((r + j * stride) * cols + c);
                    let v = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64(p.cast())));
                    *a = _mm256_add_ps(*a, _mm256_mul_ps(v, hv));
                }
            }
            c += 8;
        }
        for (j, a) in acc.iter().enumerate().take(rt) {
            let mut lanes = [0f32; 8];
            // SAFETY: `lanes` holds 8 floats.
            unsafe { _mm256_storeu_ps(lanes.as_mut_ptr(), *a) };
            out[r + j * stride] = lanes.iter().sum();
        }
    };
    for r in 0..quarter {
        one(r, quarter, 4, out);
    }
    for r in 4 * quarter..n {
        one(r, 1, 1, out);
    }
}

/// 4 rows at a time in 4 pages (the access pattern the GEMV measured best with).
///
/// # Safety
/// AVX-512F; `q.len() == out.len() · h.len()`, `h.len() % 16 == 0`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn screen_avx512(q: &[i8], h: &[f32], out: &mut [f32]) {
    use std::arch::x86_64::*;
    let cols = h.len();
    let n = out.len();
    let quarter = n / 4;
    let one = |r: usize, stride: usize, rt: usize, out: &mut [f32]| {
        let mut acc = [_mm512_setzero_ps(); 4];
        let mut c = 0;
        while c < cols {
            // SAFETY: c + 16 ≤ cols; rows r + j·stride (j < rt) are < n.
            unsafe {
                let hv = _mm512_loadu_ps(h.as_ptr().add(c));
                for (j, a) in acc.iter_mut().enumerate().take(rt) {
                    let p = q.as_ptr().add((r + j * stride) * cols + c);
                    let v = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(p.cast())));
                    *a = _mm512_fmadd_ps(v, hv, *a);
                }
            }
            c += 16;
        }
        for (j, a) in acc.iter().enumerate().take(rt) {
            out[r + j * stride] = _mm512_reduce_add_ps(*a);
        }
    };
    for r in 0..quarter {
        one(r, quarter, 4, out);
    }
    for r in 4 * quarter..n {
        one(r, 1, 1, out);
    }
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
        fn screen_kernels_stay_within_rounding_of_the_reference(rows in 1usize..40, c8 in 1usize..40, seed in any::<u64>()) {
            let cols = c8 * 8;
            let q: Vec<i8> = (0..rows * cols)
                .map(|i| ((i as u64 * 2654435761 + seed) % 255) as i32 as i8)
                .collect();
            let h: Vec<f32> = (0..cols).map(|i| ((i as u64 + seed % 97) as f32 * 0.3).sin()).collect();
            let mut want = vec![0f32; rows];
            screen_rows_ref(&q, &h, &mut want);
            // The screen's bound allows any order: within n·2⁻²³ of Σ|q·h| of the exact dot.
            let slack = |row: &[i8]| -> f32 {
                let abs: f32 = row.iter().zip(&h).map(|(a, b)| (f32::from(*a) * b).abs()).sum();
                2.0 * cols as f32 * f32::EPSILON * abs + f32::MIN_POSITIVE
            };
            let mut got = vec![0f32; rows];
            screen_rows(&q, &h, &mut got);
            #[cfg(target_arch = "x86_64")]
            let mut avx2 = vec![0f32; rows];
            #[cfg(target_arch = "x86_64")]
            if std::is_x86_feature_detected!("avx2") {
                // SAFETY: AVX2 present; sizes match, cols % 8 == 0.
                unsafe { screen_avx2(&q, &h, &mut avx2) };
            } else {
                avx2.copy_from_slice(&want);
            }
            for (r, row) in q.chunks_exact(cols).enumerate() {
                prop_assert!((got[r] - want[r]).abs() <= slack(row), "row {}: {} vs {}", r, got[r], want[r]);
                #[cfg(target_arch = "x86_64")]
                prop_assert!((avx2[r] - want[r]).abs() <= slack(row), "avx2 row {}: {} vs {}", r, avx2[r], want[r]);
            }
        }
    }

    #[test]
    fn int8_rows_match_reference() {
        let (rows, cols) = (9, 48);
        let q: Vec<i8> = (0..rows * cols)
            .map(|i| ((i * 37) % 255) as i32 as i8)
            .collect();
        let h: Vec<f32> = (0..cols).map(|i| (i as f32 * 0.3).sin()).collect();
        let (mut a, mut b) = (vec![0f32; rows], vec![0f32; rows]);
        screen_rows(&q, &h, &mut a);
        screen_rows_ref(&q, &h, &mut b);
        for (x, y) in a.iter().zip(&b) {
            assert!((x - y).abs() <= 1e-4 * y.abs().max(1.0), "{x} vs {y}");
        }
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
