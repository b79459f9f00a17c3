//! Int8 rows times a float vector: the screen's inner loop.

/// `out[i] = Σ q_i · h` (f32) for consecutive int8 rows; scalar reference.
pub fn rows_ref(q: &[i8], h: &[f32], out: &mut [f32]) {
    for (o, row) in out.iter_mut().zip(q.chunks_exact(h.len())) {
        *o = row.iter().zip(h).map(|(a, b)| f32::from(*a) * b).sum();
    }
}

/// `out[i] = Σ q_i · h` for consecutive int8 rows, with the widest vectors available.
pub fn rows(q: &[i8], h: &[f32], out: &mut [f32]) {
    assert_eq!(q.len(), out.len() * h.len(), "int8 rows: sizes");
    #[cfg(target_arch = "x86_64")]
    {
        if h.len().is_multiple_of(16) && std::is_x86_feature_detected!("avx512f") {
            // SAFETY: AVX-512F present; sizes checked above, cols % 16 == 0.
            unsafe { rows_avx512(q, h, out) };
            return;
        }
        if h.len().is_multiple_of(8) && std::is_x86_feature_detected!("avx2") {
            // SAFETY: AVX2 present; sizes checked above, cols % 8 == 0.
            unsafe { rows_avx2(q, h, out) };
            return;
        }
    }
    rows_ref(q, h, out);
}

/// The AVX2 form of [`rows_avx512`]: 8 lanes, multiply then add (the bound holds for any
/// summation order, so the lanes need not match the reference's).
///
/// # Safety
/// AVX2; `q.len() == out.len() · h.len()`, `h.len() % 8 == 0`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
pub(super) unsafe fn rows_avx2(q: &[i8], h: &[f32], out: &mut [f32]) {
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
pub(super) unsafe fn rows_avx512(q: &[i8], h: &[f32], out: &mut [f32]) {
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

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn screen_kernels_stay_within_rounding_of_the_reference(rows in 1usize..40, c8 in 1usize..40, seed in any::<u64>()) {
            let cols = c8 * 8;
            let q: Vec<i8> = (0..rows * cols)
                .map(|i| ((i as u64 * 2654435761 + seed) % 255) as i32 as i8)
                .collect();
            let h: Vec<f32> = (0..cols).map(|i| ((i as u64 + seed % 97) as f32 * 0.3).sin()).collect();
            let mut want = vec![0f32; rows];
            rows_ref(&q, &h, &mut want);
            // The screen's bound allows any order: within n·2⁻²³ of Σ|q·h| of the exact dot.
            let slack = |row: &[i8]| -> f32 {
                let abs: f32 = row.iter().zip(&h).map(|(a, b)| (f32::from(*a) * b).abs()).sum();
                2.0 * cols as f32 * f32::EPSILON * abs + f32::MIN_POSITIVE
            };
            let mut got = vec![0f32; rows];
            super::rows(&q, &h, &mut got);
            #[cfg(target_arch = "x86_64")]
            let mut avx2 = vec![0f32; rows];
            #[cfg(target_arch = "x86_64")]
            if std::is_x86_feature_detected!("avx2") {
                // SAFETY: AVX2 present; sizes match, cols % 8 == 0.
                unsafe { rows_avx2(&q, &h, &mut avx2) };
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
        super::rows(&q, &h, &mut a);
        rows_ref(&q, &h, &mut b);
        for (x, y) in a.iter().zip(&b) {
            assert!((x - y).abs() <= 1e-4 * y.abs().max(1.0), "{x} vs {y}");
        }
    }
}
