//! Float kernels of the forward pass: RMSNorm, rotate-half RoPE, softmax, ReLU²·up.

/// `out = x / sqrt(mean(x²) + eps) * weight`, accumulated in f64 for a stable mean.
pub fn rms_norm(x: &[f32], weight: &[f32], eps: f32, out: &mut [f32]) {
    assert!(
        x.len() == weight.len() && out.len() == x.len(),
        "rms_norm: length mismatch"
    );
    let inv = inverse_rms(x, eps);
    for ((o, v), w) in out.iter_mut().zip(x).zip(weight) {
        *o = v * inv * w;
    }
}

/// In-place RMSNorm.
pub fn rms_norm_inplace(x: &mut [f32], weight: &[f32], eps: f32) {
    assert_eq!(x.len(), weight.len(), "rms_norm: length mismatch");
    let inv = inverse_rms(x, eps);
    for (v, w) in x.iter_mut().zip(weight) {
        *v = *v * inv * w;
    }
}

/// `1 / sqrt(mean(x²) + eps)`, the sum of squares in f64 over 8 interleaved partial sums
/// (element i goes to sum i mod 8, the sums are added in a fixed tree at the end). One
/// running f64 sum is a chain of dependent adds, 4 cycles an element, which made RMSNorm
/// 1.3 % of an 8-stream decode step; independent lanes vectorize on every ISA, and the
/// fixed order keeps the result the same on all of them.
fn inverse_rms(x: &[f32], eps: f32) -> f32 {
    const LANES: usize = 8;
    let mut lanes = [0f64; LANES];
    let chunks = x.chunks_exact(LANES);
    let tail = chunks.remainder();
    for c in chunks {
        for (s, v) in lanes.iter_mut().zip(c) {
            *s += f64::from(*v) * f64::from(*v);
        }
    }
    for (s, v) in lanes.iter_mut().zip(tail) {
        *s += f64::from(*v) * f64::from(*v);
    }
    let quads = [
        lanes[0] + lanes[4],
        lanes[1] + lanes[5],
        lanes[2] + lanes[6],
        lanes[3] + lanes[7],
    ];
    let ss = (quads[0] + quads[2]) + (quads[1] + quads[3]);
    1.0 / ((ss / x.len() as f64) as f32 + eps).sqrt()
}

/// Inverse frequencies of rotate-half RoPE: `theta^(-2i/head_dim)` for i in 0..head_dim/2,
/// computed as transformers does (f32 from an f64-free integer exponent).
pub fn rope_inv_freq(head_dim: usize, theta: f32) -> Vec<f32> {
    (0..head_dim / 2)
        .map(|i| 1.0 / theta.powf((2 * i) as f32 / head_dim as f32))
        .collect()
}

/// Applies rotate-half RoPE at `pos` to every head in `x` (`[n_heads * head_dim]`).
/// `x' = x·cos + rotate_half(x)·sin`, `rotate_half(x) = [-x[d/2..], x[..d/2]]`.
pub fn rope_rotate_half(x: &mut [f32], head_dim: usize, pos: usize, inv_freq: &[f32]) {
    let half = head_dim / 2;
    assert_eq!(inv_freq.len(), half, "rope: inv_freq length");
    for head in x.chunks_exact_mut(head_dim) {
        for i in 0..half {
            let angle = pos as f32 * inv_freq[i];
            let (sin, cos) = angle.sin_cos();
            let (a, b) = (head[i], head[i + half]);
            head[i] = a * cos - b * sin;
            head[i + half] = b * cos + a * sin;
        }
    }
}

/// The cos/sin of every rotary frequency at `pos` (the angles [`rope_rotate_half`] uses).
pub fn rope_cos_sin(pos: usize, inv_freq: &[f32], cos: &mut [f32], sin: &mut [f32]) {
    for ((f, c), s) in inv_freq.iter().zip(cos.iter_mut()).zip(sin.iter_mut()) {
        (*s, *c) = (pos as f32 * f).sin_cos();
    }
}

/// [`rope_rotate_half`] with the angles' cos/sin computed once per position (every head of
/// every layer shares them); bit-identical to it.
pub fn rope_rotate_half_cached(x: &mut [f32], head_dim: usize, cos: &[f32], sin: &[f32]) {
    let half = head_dim / 2;
    assert!(cos.len() == half && sin.len() == half, "rope: table length");
    for head in x.chunks_exact_mut(head_dim) {
        let (lo, hi) = head.split_at_mut(half);
        for i in 0..half {
            let (a, b) = (lo[i], hi[i]);
            lo[i] = a * cos[i] - b * sin[i];
            hi[i] = b * cos[i] + a * sin[i];
        }
    }
}

/// Numerically stable softmax in place.
pub fn softmax_inplace(x: &mut [f32]) {
    let max = x.iter().fold(f32::NEG_INFINITY, |m, v| m.max(*v));
    let mut sum = 0.0f32;
    for v in x.iter_mut() {
        *v = (*v - max).exp();
        sum += *v;
    }
    let inv = 1.0 / sum;
    x.iter_mut().for_each(|v| *v *= inv);
}

/// `gate = relu(gate)² · up`, in place in `gate`.
pub fn relu2_mul(gate: &mut [f32], up: &[f32]) {
    assert_eq!(gate.len(), up.len(), "relu2_mul: length mismatch");
    for (g, u) in gate.iter_mut().zip(up) {
        let r = g.max(0.0);
        *g = r * r * u;
    }
}

/// `gate = silu(gate) · up` (`silu(x) = x / (1 + e^-x)`), in place in `gate`.
pub fn silu_mul(gate: &mut [f32], up: &[f32]) {
    assert_eq!(gate.len(), up.len(), "silu_mul: length mismatch");
    for (g, u) in gate.iter_mut().zip(up) {
        *g = *g / (1.0 + (-*g).exp()) * u;
    }
}

/// `acc += x`.
pub fn add_inplace(acc: &mut [f32], x: &[f32]) {
    assert_eq!(acc.len(), x.len(), "add: length mismatch");
    acc.iter_mut().zip(x).for_each(|(a, b)| *a += b);
}

pub fn dot_f32(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// Σ a·b in 16 lanes (lane `l` sums elements ≡ `l` mod 16, multiply then add), lanes
/// folded pairwise, then the tail: an order the compiler vectorizes, unlike [`dot_f32`]'s
/// single running sum. Attention's q·k uses it.
pub fn dot_f32_lanes(a: &[f32], b: &[f32]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    {
        if std::is_x86_feature_detected!("avx2") {
            // SAFETY: AVX2 is present (checked just above).
            return unsafe { dot_f32_lanes_avx2(a, b) };
        }
    }
    dot_f32_lanes_body(a, b)
}

/// The same source compiled for 256-bit vectors; Rust never fuses the multiply and add,
/// so the result is bit-identical to the portable build.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn dot_f32_lanes_avx2(a: &[f32], b: &[f32]) -> f32 {
    dot_f32_lanes_body(a, b)
}

#[inline(always)]
fn dot_f32_lanes_body(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let mut acc = [0f32; 16];
    let (ca, cb) = (a.chunks_exact(16), b.chunks_exact(16));
    let (ta, tb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for l in 0..16 {
            acc[l] += x[l] * y[l];
        }
    }
    let mut w = 8;
    while w > 0 {
        for l in 0..w {
            acc[l] += acc[l + w];
        }
        w /= 2;
    }
    let mut s = acc[0];
    for (x, y) in ta.iter().zip(tb) {
        s += x * y;
    }
    s
}

/// [`dot_f32_lanes`] of `a` with four vectors at once, each bit-identical to its own call:
/// the four keys of attention share the loads of `a` and run as independent chains.
pub fn dot_f32_lanes_x4(a: &[f32], b: [&[f32]; 4]) -> [f32; 4] {
    #[cfg(target_arch = "x86_64")]
    {
        if std::is_x86_feature_detected!("avx2") {
            // SAFETY: AVX2 is present (checked just above).
            return unsafe { dot_f32_lanes_x4_avx2(a, b) };
        }
    }
    dot_f32_lanes_x4_body(a, b)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn dot_f32_lanes_x4_avx2(a: &[f32], b: [&[f32]; 4]) -> [f32; 4] {
    dot_f32_lanes_x4_body(a, b)
}

#[inline(always)]
fn dot_f32_lanes_x4_body(a: &[f32], b: [&[f32]; 4]) -> [f32; 4] {
    let n = b.iter().fold(a.len(), |n, v| n.min(v.len()));
    if b.iter().any(|v| v.len() != n) || a.len() != n {
        // Unequal lengths: each dot on its own (same results, no shared loop).
        return b.map(|v| dot_f32_lanes_body(a, v));
    }
    let full = n / 16 * 16;
    let (mut a0, mut a1, mut a2, mut a3) = ([0f32; 16], [0f32; 16], [0f32; 16], [0f32; 16]);
    let chunks = a[..full]
        .chunks_exact(16)
        .zip(b[0][..full].chunks_exact(16))
        .zip(b[1][..full].chunks_exact(16))
        .zip(b[2][..full].chunks_exact(16))
        .zip(b[3][..full].chunks_exact(16));
    for ((((x, y0), y1), y2), y3) in chunks {
        for l in 0..16 {
            a0[l] += x[l] * y0[l];
            a1[l] += x[l] * y1[l];
            a2[l] += x[l] * y2[l];
            a3[l] += x[l] * y3[l];
        }
    }
    let mut acc = [a0, a1, a2, a3];
    let mut out = [0f32; 4];
    for ((o, acc), v) in out.iter_mut().zip(acc.iter_mut()).zip(&b) {
        let mut w = 8;
        while w > 0 {
            for l in 0..w {
                acc[l] += acc[l + w];
            }
            w /= 2;
        }
        let mut s = acc[0];
        for (x, y) in a[full..].iter().zip(&v[full..]) {
            s += x * y;
        }
        *o = s;
    }
    out
}

/// Scalar reference of [`dot_f32_lanes`] (the same order, written out).
pub fn dot_f32_lanes_ref(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    let full = n / 16 * 16;
    let mut acc = [0f32; 16];
    for i in 0..full {
        acc[i % 16] += a[i] * b[i];
    }
    for w in [8, 4, 2, 1] {
        for l in 0..w {
            acc[l] += acc[l + w];
        }
    }
    let mut s = acc[0];
    for i in full..n {
        s += a[i] * b[i];
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn silu_mul_matches_its_definition_in_f64() {
        let gate: Vec<f32> = (0..37).map(|i| (i as f32 - 18.0) * 0.7).collect();
        let up: Vec<f32> = (0..37).map(|i| 1.0 + (i % 5) as f32 * 0.25).collect();
        let mut out = gate.clone();
        silu_mul(&mut out, &up);
        for ((g, u), o) in gate.iter().zip(&up).zip(&out) {
            let (g, u) = (f64::from(*g), f64::from(*u));
            let want = g / (1.0 + (-g).exp()) * u;
            assert!(
                (f64::from(*o) - want).abs() <= 1e-6 * want.abs().max(1.0),
                "{o} vs {want}"
            );
        }
        // Large negative inputs go to zero, not NaN.
        let mut big = vec![-200.0f32, 200.0];
        silu_mul(&mut big, &[1.0, 1.0]);
        assert_eq!(big, [0.0, 200.0]);
    }

    #[test]
    fn rope_at_zero_is_identity_and_preserves_norm() {
        let inv = rope_inv_freq(8, 10000.0);
        let orig: Vec<f32> = (0..16).map(|i| i as f32 - 3.0).collect();
        let mut x = orig.clone();
        rope_rotate_half(&mut x, 8, 0, &inv);
        assert_eq!(x, orig);
        rope_rotate_half(&mut x, 8, 17, &inv);
        let n0: f32 = orig.iter().map(|v| v * v).sum();
        let n1: f32 = x.iter().map(|v| v * v).sum();
        assert!((n0 - n1).abs() < 1e-3);
    }

    #[test]
    fn cached_rope_is_bit_identical() {
        let inv = rope_inv_freq(128, 500000.0);
        let orig: Vec<f32> = (0..640).map(|i| (i as f32 * 0.37).sin() * 3.0).collect();
        for pos in [0usize, 1, 17, 999, 4095] {
            let mut a = orig.clone();
            rope_rotate_half(&mut a, 128, pos, &inv);
            let (mut c, mut s) = (vec![0f32; 64], vec![0f32; 64]);
            rope_cos_sin(pos, &inv, &mut c, &mut s);
            let mut b = orig.clone();
            rope_rotate_half_cached(&mut b, 128, &c, &s);
            assert_eq!(a, b, "pos {pos}");
        }
    }

    #[test]
    fn rms_norm_unit_weight_gives_unit_rms() {
        let x = [3.0f32, -4.0, 0.0, 5.0];
        let mut o = [0.0; 4];
        rms_norm(&x, &[1.0; 4], 0.0, &mut o);
        let ms: f32 = o.iter().map(|v| v * v).sum::<f32>() / 4.0;
        assert!((ms - 1.0).abs() < 1e-5);
    }

    proptest::proptest! {
        #[test]
        fn lane_sums_of_squares_match_one_running_sum(n in 1usize..3000, seed in 0u32..1000) {
            let x: Vec<f32> = (0..n).map(|i| ((i as u32 * 13 + seed) as f32 * 0.29).sin() * 7.0).collect();
            let w: Vec<f32> = (0..n).map(|i| 1.0 + (i % 5) as f32 * 0.25).collect();
            let ss: f64 = x.iter().map(|v| f64::from(*v) * f64::from(*v)).sum();
            let inv = 1.0 / ((ss / n as f64) as f32 + 1e-6).sqrt();
            let mut inplace = x.clone();
            rms_norm_inplace(&mut inplace, &w, 1e-6);
            let mut out = vec![0f32; n];
            rms_norm(&x, &w, 1e-6, &mut out);
            proptest::prop_assert_eq!(&inplace, &out);
            for ((o, v), w) in out.iter().zip(&x).zip(&w) {
                // only the f64 sum's order differs: at most one f32 step of `inv` apart
                let want = v * inv * w;
                proptest::prop_assert!((o - want).abs() <= want.abs() * 4e-7, "{o} vs {want}");
            }
        }

        #[test]
        fn dot_lanes_matches_reference(n in 0usize..300, seed in 0u32..1000) {
            let a: Vec<f32> = (0..n).map(|i| ((i as u32 * 31 + seed) as f32 * 0.37).sin()).collect();
            let b: Vec<f32> = (0..n).map(|i| ((i as u32 * 17 + seed) as f32 * 0.11).cos() * 5.0).collect();
            proptest::prop_assert_eq!(dot_f32_lanes(&a, &b).to_bits(), dot_f32_lanes_ref(&a, &b).to_bits());
            let exact: f64 = a.iter().zip(&b).map(|(x, y)| f64::from(*x) * f64::from(*y)).sum();
            proptest::prop_assert!((f64::from(dot_f32_lanes(&a, &b)) - exact).abs() < 1e-3);
        }

        #[test]
        fn dot_lanes_x4_matches_four_calls(n in 0usize..300, seed in 0u32..1000, short in 0usize..5) {
            let v = |k: u32, len: usize| -> Vec<f32> {
                (0..len).map(|i| ((i as u32 * (13 + k) + seed) as f32 * 0.29).sin() * (k + 1) as f32).collect()
            };
            let a = v(0, n);
            // One key may be shorter, which takes the one-at-a-time path.
            let keys: Vec<Vec<f32>> = (1..5u32).map(|k| v(k, if k as usize == short { n / 2 } else { n })).collect();
            let got = dot_f32_lanes_x4(&a, [&keys[0], &keys[1], &keys[2], &keys[3]]);
            for (g, k) in got.iter().zip(&keys) {
                proptest::prop_assert_eq!(g.to_bits(), dot_f32_lanes_ref(&a, k).to_bits());
            }
        }
    }

    #[test]
    fn relu2_zeroes_negative_gates() {
        let mut g = [-1.0f32, 2.0, 0.0];
        relu2_mul(&mut g, &[5.0, 3.0, 7.0]);
        assert_eq!(g, [0.0, 12.0, 0.0]);
    }
}
