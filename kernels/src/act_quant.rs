//! Per-token absmax int8 activation quantization, exactly as BitNet b1.58 defines it:
//! `s = 127 / max(|x|, 1e-5)`, `q = clamp(round_half_even(x * s), -128, 127)`, in f32.

/// The scale and the sum of one quantized row. `sum` is what the ternary epilogue subtracts
/// because weights are stored as codes `w + 1`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ActScale {
    pub scale: f32,
    pub sum: i32,
}

/// Scalar reference. `q` may be longer than `x` (padding to a block); the tail is zeroed.
pub fn quantize_row_ref(x: &[f32], q: &mut [i8]) -> ActScale {
    assert!(
        q.len() >= x.len(),
        "quantize_row: output shorter than input"
    );
    let max = x.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    let scale = 127.0f32 / max.max(1e-5);
    let mut sum = 0i32;
    for (dst, &v) in q.iter_mut().zip(x) {
        let r = (v * scale).round_ties_even().clamp(-128.0, 127.0) as i8;
        sum += i32::from(r);
        *dst = r;
    }
    q[x.len()..].fill(0);
    ActScale { scale, sum }
}

/// Dispatching entry point (AVX2 where the CPU has it).
pub fn quantize_row(x: &[f32], q: &mut [i8]) -> ActScale {
    #[cfg(target_arch = "x86_64")]
    {
        if std::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU supports AVX2, checked just above.
            return unsafe { avx2::quantize_row(x, q) };
        }
    }
    quantize_row_ref(x, q)
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use super::ActScale;
    use std::arch::x86_64::*;

    /// # Safety
    /// The CPU must support AVX2.
    #[target_feature(enable = "avx2")]
    pub unsafe fn quantize_row(x: &[f32], q: &mut [i8]) -> ActScale {
        assert!(
            q.len() >= x.len(),
            "quantize_row: output shorter than input"
        );
        let n = x.len();
        let chunks = n / 8;
        let sign_mask = _mm256_set1_ps(-0.0);
        let mut vmax = _mm256_setzero_ps();
        for i in 0..chunks {
            // SAFETY: i*8+8 <= n, so the 8 loaded floats are inside `x`.
            let v = unsafe { _mm256_loadu_ps(x.as_ptr().add(i * 8)) };
            vmax = _mm256_max_ps(vmax, _mm256_andnot_ps(sign_mask, v));
        }
        let mut lanes = [0f32; 8];
        // SAFETY: `lanes` holds exactly 8 floats.
        unsafe { _mm256_storeu_ps(lanes.as_mut_ptr(), vmax) };
        let mut max = lanes.iter().fold(0.0f32, |m, v| m.max(*v));
        for &v in &x[chunks * 8..] {
            max = max.max(v.abs());
        }
        let scale = 127.0f32 / max.max(1e-5);
        let vs = _mm256_set1_ps(scale);
        let lo = _mm256_set1_ps(-128.0);
        let hi = _mm256_set1_ps(127.0);
        let mut vsum = _mm256_setzero_si256();
        for i in 0..chunks {
            // SAFETY: as above, the 8 floats are inside `x`.
            let v = unsafe { _mm256_loadu_ps(x.as_ptr().add(i * 8)) };
            let r = _mm256_round_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(
                _mm256_mul_ps(v, vs),
            );
            let r = _mm256_min_ps(_mm256_max_ps(r, lo), hi);
            let ri = _mm256_cvtps_epi32(r);
            vsum = _mm256_add_epi32(vsum, ri);
            let mut tmp = [0i32; 8];
            // SAFETY: `tmp` holds exactly 8 i32.
            unsafe { _mm256_storeu_si256(tmp.as_mut_ptr().cast(), ri) };
            for (k, t) in tmp.iter().enumerate() {
                q[i * 8 + k] = *t as i8;
            }
        }
        let mut sums = [0i32; 8];
        // SAFETY: `sums` holds exactly 8 i32.
        unsafe { _mm256_storeu_si256(sums.as_mut_ptr().cast(), vsum) };
        let mut sum: i32 = sums.iter().sum();
        for i in chunks * 8..n {
            let r = (x[i] * scale).round_ties_even().clamp(-128.0, 127.0) as i8;
            sum += i32::from(r);
            q[i] = r;
        }
        q[n..].fill(0);
        ActScale { scale, sum }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn ties_round_to_even() {
        // max 127 gives scale exactly 1, so x*s is x itself.
        let x = [127.0, 0.5, 1.5, 2.5, -0.5, -1.5];
        let mut q = [0i8; 6];
        let s = quantize_row_ref(&x, &mut q);
        assert_eq!(q, [127, 0, 2, 2, 0, -2]);
        assert_eq!(s.sum, 129);
    }

    #[test]
    fn all_zero_row_uses_floor_scale() {
        let mut q = [1i8; 4];
        let s = quantize_row(&[0.0; 3], &mut q);
        assert_eq!(s.scale, 127.0 / 1e-5);
        assert_eq!(q, [0; 4]);
    }

    proptest! {
        #[test]
        fn simd_matches_reference(x in proptest::collection::vec(-50.0f32..50.0, 0..300), pad in 0usize..40) {
            let mut a = vec![0i8; x.len() + pad];
            let mut b = vec![7i8; x.len() + pad];
            let sa = quantize_row_ref(&x, &mut a);
            let sb = quantize_row(&x, &mut b);
            prop_assert_eq!(a, b);
            prop_assert_eq!(sa, sb);
        }
    }
}
