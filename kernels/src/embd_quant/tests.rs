use super::*;
use crate::embd::{dequant_row, quantize_q6k, quantize_q8_0, EmbdType};
use proptest::prelude::*;

/// xorshift64*: reproducible random bytes and floats without a dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| (self.next() >> 56) as u8).collect()
    }
    /// Roughly normal (sum of 4 uniforms), scaled.
    fn normal(&mut self, n: usize, scale: f32) -> Vec<f32> {
        (0..n)
            .map(|_| {
                let s: f32 = (0..4)
                    .map(|_| (self.next() >> 40) as f32 / (1u64 << 24) as f32)
                    .sum();
                (s - 2.0) * scale
            })
            .collect()
    }
}

/// A finite f16 with a random sign and exponent (the kernels must not depend on the
/// magnitude of the block scales).
fn finite_f16(r: &mut Rng) -> [u8; 2] {
    loop {
        let b = (r.next() >> 48) as u16;
        if f16::from_bits(b).is_finite() {
            return b.to_le_bytes();
        }
    }
}

/// Random Q8_0 rows: every weight byte (−128 included) and finite scales.
fn random_q8_0(r: &mut Rng, rows: usize, nb: usize) -> Vec<u8> {
    let mut data = r.bytes(rows * nb * Q8_0_BYTES);
    for blk in data.chunks_exact_mut(Q8_0_BYTES) {
        blk[..2].copy_from_slice(&finite_f16(r));
    }
    data
}

/// Random Q6_K rows: every code and scale byte, finite `d`.
fn random_q6k(r: &mut Rng, rows: usize, nsb: usize) -> Vec<u8> {
    let mut data = r.bytes(rows * nsb * Q6K_BYTES);
    for blk in data.chunks_exact_mut(Q6K_BYTES) {
        blk[208..].copy_from_slice(&finite_f16(r));
    }
    data
}

fn simd_isas() -> Vec<Isa> {
    Isa::ALL
        .into_iter()
        .filter(|i| *i != Isa::Scalar && simd_ok(*i))
        .collect()
}

#[test]
fn q6k_codes_match_the_dequantizer() {
    let mut r = Rng(7);
    let blk = random_q6k(&mut r, 1, 1);
    let mut y = vec![0f32; 256];
    dequant_row(EmbdType::Q6K, &blk, &mut y);
    let d = f16_at(&blk, 208);
    for (i, v) in y.iter().enumerate() {
        let sc = f32::from(blk[192 + i / 16] as i8);
        assert_eq!(*v, d * sc * (q6k_code(&blk, i) - 32) as f32, "value {i}");
    }
}

#[test]
fn hidden_quantization_rounds_half_away_from_zero() {
    // absmax 127 → d = 1, so x · (1/d) = x exactly
    let mut h = vec![0f32; 32];
    h[0] = 127.0;
    h[1] = 2.5;
    h[2] = -2.5;
    h[3] = 0.49;
    let q = HiddenQ8::new(&h);
    assert_eq!(q.d, [1.0]);
    assert_eq!(&q.q[..4], &[127, 3, -3, 0]);
    assert_eq!(q.bias, [128 * (127 + 3 - 3)]);
    let zero = HiddenQ8K::new(&[0f32; 256]);
    assert_eq!(zero.d, [0.0]);
    assert!(zero.q.iter().all(|v| *v == 0));
}

proptest! {
    #[test]
    fn q8_0_kernels_match_reference(rows in 1usize..13, nb in 1usize..70, seed in any::<u64>()) {
        let mut r = Rng(seed | 1);
        let data = random_q8_0(&mut r, rows, nb);
        let h = HiddenQ8::new(&r.normal(nb * 32, 3.0));
        let want: Vec<u32> = data
            .chunks_exact(nb * Q8_0_BYTES)
            .map(|row| dot_q8_0_ref(row, &h).to_bits())
            .collect();
        for isa in simd_isas() {
            let mut got = vec![0f32; rows];
            rows_q8_0(isa, &data, &h, &mut got);
            let got: Vec<u32> = got.iter().map(|v| v.to_bits()).collect();
            prop_assert_eq!(&got, &want, "{}", isa.name());
        }
    }

    #[test]
    fn q6k_kernels_match_reference(rows in 1usize..9, nsb in 1usize..6, seed in any::<u64>()) {
        let mut r = Rng(seed | 1);
        let data = random_q6k(&mut r, rows, nsb);
        let h = HiddenQ8K::new(&r.normal(nsb * 256, 3.0));
        let want: Vec<u32> = data
            .chunks_exact(nsb * Q6K_BYTES)
            .map(|row| dot_q6k_ref(row, &h).to_bits())
            .collect();
        for isa in simd_isas() {
            let mut got = vec![0f32; rows];
            rows_q6k(isa, &data, &h, &mut got);
            let got: Vec<u32> = got.iter().map(|v| v.to_bits()).collect();
            prop_assert_eq!(&got, &want, "{}", isa.name());
        }
    }
}

/// Extreme inputs where the integer sums are largest: every weight/code at its extreme
/// against activations at ±127 — no saturation anywhere.
#[test]
fn extreme_values_do_not_saturate() {
    let nb = 16;
    let mut row = vec![0u8; nb * Q8_0_BYTES];
    for blk in row.chunks_exact_mut(Q8_0_BYTES) {
        blk[..2].copy_from_slice(&f16::from_f32(1.0).to_bits().to_le_bytes());
        blk[2..].fill(0x80); // −128
    }
    let h = HiddenQ8::new(&vec![-1f32; nb * 32]);
    let close = |a: f32, b: f64| (f64::from(a) - b).abs() <= 1e-5 * b.abs();
    assert!(close(dot_q8_0_ref(&row, &h), (nb * 32 * 128) as f64));
    let mut q6 = vec![0u8; Q6K_BYTES]; // every code 0 → −32
    q6[192..208].fill(0x80); // scales −128
    q6[208..].copy_from_slice(&f16::from_f32(1.0).to_bits().to_le_bytes());
    let hk = HiddenQ8K::new(&[1f32; 256]);
    assert!(close(dot_q6k_ref(&q6, &hk), 256.0 * 32.0 * 128.0));
    for isa in simd_isas() {
        let mut a = [0f32; 1];
        rows_q8_0(isa, &row, &h, &mut a);
        assert_eq!(a[0], dot_q8_0_ref(&row, &h), "{}", isa.name());
        rows_q6k(isa, &q6, &hk, &mut a);
        assert_eq!(a[0], dot_q6k_ref(&q6, &hk), "{}", isa.name());
    }
}

/// Exact `Σ dequant(row) · h` in f64, and the bound of the hidden-vector quantization:
/// `|Σ w·(x − d·q)| ≤ Σ_b (d_b / 2) · Σ_{i∈b} |w_i|`.
fn exact_and_bound(kind: EmbdType, row: &[u8], h: &[f32], d: &[f32], block: usize) -> (f64, f64) {
    let mut w = vec![0f32; h.len()];
    dequant_row(kind, row, &mut w);
    let exact = w
        .iter()
        .zip(h)
        .map(|(a, b)| f64::from(*a) * f64::from(*b))
        .sum();
    let bound = w
        .chunks_exact(block)
        .zip(d)
        .map(|(c, db)| f64::from(*db) / 2.0 * c.iter().map(|v| f64::from(v.abs())).sum::<f64>())
        .sum();
    (exact, bound)
}

/// The quantized head against the exact product of the dequantized head and the float `h`:
/// each row within the quantization bound above plus 1e-4 relative float slack (f32
/// rounding of `n` terms is far below that), and over all rows a relative L2 error below
/// 2% on normal-like data (the expected value is about 0.5% for blocks of 32, 0.7% for
/// 256: the rounding noise `d/√12` against a block absmax of 2–3 σ).
#[test]
fn quantized_heads_stay_close_to_the_exact_product() {
    let mut r = Rng(99);
    let (rows, cols) = (200, 2560);
    let x = r.normal(rows * cols, 0.05);
    let hf = r.normal(cols, 1.5);
    for kind in [EmbdType::Q8_0, EmbdType::Q6K] {
        let data: Vec<u8> = x
            .chunks_exact(cols)
            .flat_map(|c| {
                if kind == EmbdType::Q8_0 {
                    quantize_q8_0(c)
                } else {
                    quantize_q6k(c)
                }
            })
            .collect();
        let rb = data.len() / rows;
        let mut got = vec![0f32; rows];
        let (block, d) = if kind == EmbdType::Q8_0 {
            let h = HiddenQ8::new(&hf);
            rows_q8_0(isa(), &data, &h, &mut got);
            (32, h.d)
        } else {
            let h = HiddenQ8K::new(&hf);
            rows_q6k(isa(), &data, &h, &mut got);
            (256, h.d)
        };
        let (mut err2, mut norm2) = (0f64, 0f64);
        for (row, g) in data.chunks_exact(rb).zip(&got) {
            let (exact, bound) = exact_and_bound(kind, row, &hf, &d, block);
            let e = (f64::from(*g) - exact).abs();
            assert!(
                e <= bound + 1e-4 * bound.max(exact.abs()),
                "{kind:?}: error {e} > bound {bound}"
            );
            err2 += e * e;
            norm2 += exact * exact;
        }
        let rel = (err2 / norm2).sqrt();
        eprintln!("{kind:?} head: relative L2 error {rel:.4} from quantizing h");
        assert!(rel < 0.02, "{kind:?}: relative error {rel}");
    }
}
