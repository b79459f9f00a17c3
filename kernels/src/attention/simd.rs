//! The vector operations flash attention needs, for AVX-512, AVX2+FMA and plain scalars:
//! one generic kernel body instantiated per instruction set.

use half::f16;

/// A vector of `W` f32 lanes. Every function is `unsafe`: callers run it only where the
/// instruction set is present, and pointers must cover `W` valid f32s.
pub(crate) trait Simd: Copy {
    const W: usize;
    type V: Copy;
    unsafe fn splat(x: f32) -> Self::V;
    unsafe fn load(p: *const f32) -> Self::V;
    /// `W` f16s widened (F16C / AVX-512 conversions; the x86 impls need F16C too).
    unsafe fn load_f16(p: *const f16) -> Self::V;
    unsafe fn store(p: *mut f32, v: Self::V);
    /// `a · b + c`.
    unsafe fn fma(a: Self::V, b: Self::V, c: Self::V) -> Self::V;
    unsafe fn mul(a: Self::V, b: Self::V) -> Self::V;
    unsafe fn add(a: Self::V, b: Self::V) -> Self::V;
    unsafe fn max(a: Self::V, b: Self::V) -> Self::V;
    unsafe fn reduce_max(v: Self::V) -> f32;
    unsafe fn reduce_add(v: Self::V) -> f32;
    /// `e^x` within a few ulp for x in [-87, 88] (inputs are clamped to that range).
    unsafe fn exp(x: Self::V) -> Self::V;
}

#[derive(Clone, Copy)]
pub(crate) struct Scalar;

impl Simd for Scalar {
    const W: usize = 1;
    type V = f32;
    unsafe fn splat(x: f32) -> f32 {
        x
    }
    unsafe fn load(p: *const f32) -> f32 {
        // SAFETY: the caller guarantees `p` points at a valid f32.
        unsafe { *p }
    }
    unsafe fn load_f16(p: *const f16) -> f32 {
        // SAFETY: the caller guarantees `p` points at a valid f16.
        unsafe { (*p).to_f32() }
    }
    unsafe fn store(p: *mut f32, v: f32) {
        // SAFETY: the caller guarantees `p` points at a writable f32.
        unsafe { *p = v }
    }
    unsafe fn fma(a: f32, b: f32, c: f32) -> f32 {
        a * b + c
    }
    unsafe fn mul(a: f32, b: f32) -> f32 {
        a * b
    }
    unsafe fn add(a: f32, b: f32) -> f32 {
        a + b
    }
    unsafe fn max(a: f32, b: f32) -> f32 {
        a.max(b)
    }
    unsafe fn reduce_max(v: f32) -> f32 {
        v
    }
    unsafe fn reduce_add(v: f32) -> f32 {
        v
    }
    unsafe fn exp(x: f32) -> f32 {
        x.exp()
    }
}

/// Cephes' expf: e^x = 2^n · e^r with |r| ≤ ln2/2, e^r by a degree-6 polynomial.
macro_rules! exp_body {
    ($x:expr, $splat:ident, $fma:ident, $mul:ident, $add:ident, $round:expr, $pow2n:expr) => {{
        let x = $x;
        let n = $round($mul(x, $splat(std::f32::consts::LOG2_E)));
        let r = $fma(n, $splat(-0.693_359_4), x);
        let r = $fma(n, $splat(2.121_944_4e-4), r);
        let mut p = $splat(1.987_569_1e-4);
        p = $fma(p, r, $splat(1.398_199_9e-3));
        p = $fma(p, r, $splat(8.333_452e-3));
        p = $fma(p, r, $splat(4.166_579_6e-2));
        p = $fma(p, r, $splat(1.666_666_5e-1));
        p = $fma(p, r, $splat(0.5));
        let r2 = $mul(r, r);
        let e = $add($fma(p, r2, r), $splat(1.0));
        $mul(e, $pow2n(n))
    }};
}

#[cfg(target_arch = "x86_64")]
pub(crate) use x86::{Avx2, Avx512};

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::Simd;
    use half::f16;
    use std::arch::x86_64::*;

    #[derive(Clone, Copy)]
    pub(crate) struct Avx512;

    // SAFETY (all methods): callers run these only with AVX-512F present (the trait's
    // contract) and pass pointers to 16 valid f32s (or f16s).
    impl Simd for Avx512 {
        const W: usize = 16;
        type V = __m512;
        #[inline(always)]
        unsafe fn splat(x: f32) -> __m512 {
            // SAFETY: see the impl's comment.
            unsafe { _mm512_set1_ps(x) }
        }
        #[inline(always)]
        unsafe fn load(p: *const f32) -> __m512 {
            // SAFETY: see the impl's comment.
            unsafe { _mm512_loadu_ps(p) }
        }
        #[inline(always)]
        unsafe fn load_f16(p: *const f16) -> __m512 {
            // SAFETY: see the impl's comment (16 f16s: 32 bytes).
            unsafe { _mm512_cvtph_ps(_mm256_loadu_si256(p.cast())) }
        }
        #[inline(always)]
        unsafe fn store(p: *mut f32, v: __m512) {
            // SAFETY: see the impl's comment.
            unsafe { _mm512_storeu_ps(p, v) }
        }
        #[inline(always)]
        unsafe fn fma(a: __m512, b: __m512, c: __m512) -> __m512 {
            // SAFETY: see the impl's comment.
            unsafe { _mm512_fmadd_ps(a, b, c) }
        }
        #[inline(always)]
        unsafe fn mul(a: __m512, b: __m512) -> __m512 {
            // SAFETY: see the impl's comment.
            unsafe { _mm512_mul_ps(a, b) }
        }
        #[inline(always)]
        unsafe fn add(a: __m512, b: __m512) -> __m512 {
            // SAFETY: see the impl's comment.
            unsafe { _mm512_add_ps(a, b) }
        }
        #[inline(always)]
        unsafe fn max(a: __m512, b: __m512) -> __m512 {
            // SAFETY: see the impl's comment.
            unsafe { _mm512_max_ps(a, b) }
        }
        #[inline(always)]
        unsafe fn reduce_max(v: __m512) -> f32 {
            // SAFETY: see the impl's comment.
            unsafe { _mm512_reduce_max_ps(v) }
        }
        #[inline(always)]
        unsafe fn reduce_add(v: __m512) -> f32 {
            // SAFETY: see the impl's comment.
            unsafe { _mm512_reduce_add_ps(v) }
        }
        #[inline(always)]
        unsafe fn exp(x: __m512) -> __m512 {
            // SAFETY: see the impl's comment.
            unsafe {
                let x = _mm512_max_ps(x, _mm512_set1_ps(-87.0));
                let x = _mm512_min_ps(x, _mm512_set1_ps(88.0));
                let round = |v| _mm512_roundscale_ps::<{ _MM_FROUND_TO_NEAREST_INT }>(v);
                let pow2n = |n: __m512| {
                    let i = _mm512_add_epi32(_mm512_cvtps_epi32(n), _mm512_set1_epi32(127));
                    _mm512_castsi512_ps(_mm512_slli_epi32::<23>(i))
                };
                exp_body!(x, splat, fma, mul, add, round, pow2n)
            }
        }
    }

    #[inline(always)]
    unsafe fn splat(x: f32) -> __m512 {
        // SAFETY: only called from `Avx512::exp`, where AVX-512F is present.
        unsafe { _mm512_set1_ps(x) }
    }
    #[inline(always)]
    unsafe fn fma(a: __m512, b: __m512, c: __m512) -> __m512 {
        // SAFETY: as `splat`.
        unsafe { _mm512_fmadd_ps(a, b, c) }
    }
    #[inline(always)]
    unsafe fn mul(a: __m512, b: __m512) -> __m512 {
        // SAFETY: as `splat`.
        unsafe { _mm512_mul_ps(a, b) }
    }
    #[inline(always)]
    unsafe fn add(a: __m512, b: __m512) -> __m512 {
        // SAFETY: as `splat`.
        unsafe { _mm512_add_ps(a, b) }
    }

    #[derive(Clone, Copy)]
    pub(crate) struct Avx2;

    #[inline(always)]
    unsafe fn splat8(x: f32) -> __m256 {
        // SAFETY: only called from `Avx2` methods, where AVX2 and FMA are present.
        unsafe { _mm256_set1_ps(x) }
    }
    #[inline(always)]
    unsafe fn fma8(a: __m256, b: __m256, c: __m256) -> __m256 {
        // SAFETY: as `splat8`.
        unsafe { _mm256_fmadd_ps(a, b, c) }
    }
    #[inline(always)]
    unsafe fn mul8(a: __m256, b: __m256) -> __m256 {
        // SAFETY: as `splat8`.
        unsafe { _mm256_mul_ps(a, b) }
    }
    #[inline(always)]
    unsafe fn add8(a: __m256, b: __m256) -> __m256 {
        // SAFETY: as `splat8`.
        unsafe { _mm256_add_ps(a, b) }
    }

    // SAFETY (all methods): callers run these only with AVX2, FMA and F16C present (the
    // trait's contract) and pass pointers to 8 valid f32s (or f16s).
    impl Simd for Avx2 {
        const W: usize = 8;
        type V = __m256;
        #[inline(always)]
        unsafe fn splat(x: f32) -> __m256 {
            // SAFETY: see the impl's comment.
            unsafe { _mm256_set1_ps(x) }
        }
        #[inline(always)]
        unsafe fn load(p: *const f32) -> __m256 {
            // SAFETY: see the impl's comment.
            unsafe { _mm256_loadu_ps(p) }
        }
        #[inline(always)]
        unsafe fn load_f16(p: *const f16) -> __m256 {
            // SAFETY: see the impl's comment (8 f16s: 16 bytes; F16C present too).
            unsafe { _mm256_cvtph_ps(_mm_loadu_si128(p.cast())) }
        }
        #[inline(always)]
        unsafe fn store(p: *mut f32, v: __m256) {
            // SAFETY: see the impl's comment.
            unsafe { _mm256_storeu_ps(p, v) }
        }
        #[inline(always)]
        unsafe fn fma(a: __m256, b: __m256, c: __m256) -> __m256 {
            // SAFETY: see the impl's comment.
            unsafe { _mm256_fmadd_ps(a, b, c) }
        }
        #[inline(always)]
        unsafe fn mul(a: __m256, b: __m256) -> __m256 {
            // SAFETY: see the impl's comment.
            unsafe { _mm256_mul_ps(a, b) }
        }
        #[inline(always)]
        unsafe fn add(a: __m256, b: __m256) -> __m256 {
            // SAFETY: see the impl's comment.
            unsafe { _mm256_add_ps(a, b) }
        }
        #[inline(always)]
        unsafe fn max(a: __m256, b: __m256) -> __m256 {
            // SAFETY: see the impl's comment.
            unsafe { _mm256_max_ps(a, b) }
        }
        #[inline(always)]
        unsafe fn reduce_max(v: __m256) -> f32 {
            // SAFETY: see the impl's comment.
            unsafe {
                let m = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
                let m = _mm_max_ps(m, _mm_movehl_ps(m, m));
                let m = _mm_max_ss(m, _mm_shuffle_ps::<1>(m, m));
                _mm_cvtss_f32(m)
            }
        }
        #[inline(always)]
        unsafe fn reduce_add(v: __m256) -> f32 {
            // SAFETY: see the impl's comment.
            unsafe {
                let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
                let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
                let s = _mm_add_ss(s, _mm_shuffle_ps::<1>(s, s));
                _mm_cvtss_f32(s)
            }
        }
        #[inline(always)]
        unsafe fn exp(x: __m256) -> __m256 {
            // SAFETY: see the impl's comment.
            unsafe {
                let x = _mm256_max_ps(x, _mm256_set1_ps(-87.0));
                let x = _mm256_min_ps(x, _mm256_set1_ps(88.0));
                let round =
                    |v| _mm256_round_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(v);
                let pow2n = |n: __m256| {
                    let i = _mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127));
                    _mm256_castsi256_ps(_mm256_slli_epi32::<23>(i))
                };
                exp_body!(x, splat8, fma8, mul8, add8, round, pow2n)
            }
        }
    }
}

/// An element a cache row holds, loaded `W` at a time as f32 lanes: attention reads f32
/// tiles it widened itself, or an f16 cache in place.
pub(crate) trait Elem: Copy {
    /// # Safety
    /// As [`Simd::load`]: `S`'s instruction set present, `W` valid elements at `p`.
    unsafe fn load<S: Simd>(p: *const Self) -> S::V;
}

impl Elem for f32 {
    #[inline(always)]
    unsafe fn load<S: Simd>(p: *const f32) -> S::V {
        // SAFETY: the caller's contract is `S::load`'s.
        unsafe { S::load(p) }
    }
}

impl Elem for f16 {
    #[inline(always)]
    unsafe fn load<S: Simd>(p: *const f16) -> S::V {
        // SAFETY: the caller's contract is `S::load_f16`'s.
        unsafe { S::load_f16(p) }
    }
}
