//! The host builds of the GPU kernels against this crate's Rust references, on random
//! inputs and sizes that are not multiples of any block or work-group.

use super::host;
use crate::act_quant::quantize_row_ref;
use crate::embd::{EmbdType, EmbdView};
use crate::float;
use crate::sherry::{self, SherryView};
use crate::ternary::{self, padded_cols, TernaryView};
use proptest::prelude::*;

pub(super) fn rng(seed: u64) -> impl FnMut() -> u64 {
    let mut s = seed | 1;
    move || {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        s
    }
}

pub(super) fn floats(n: usize, seed: u64, amp: f32) -> Vec<f32> {
    let mut r = rng(seed);
    (0..n)
        .map(|_| ((r() % 20001) as f32 / 10000.0 - 1.0) * amp)
        .collect()
}

pub(super) fn ternary(rows: usize, cols: usize, seed: u64) -> Vec<u8> {
    let mut r = rng(seed);
    let codes: Vec<u8> = (0..rows * cols).map(|_| (r() % 3) as u8).collect();
    ternary::pack(rows, cols, |i, j| codes[i * cols + j])
}

/// Random 3:4 sparse ternary weights, packed as Sherry.
pub(super) fn sherry_weights(rows: usize, cols: usize, seed: u64) -> Vec<u8> {
    let mut r = rng(seed);
    let w: Vec<i8> = (0..rows * cols)
        .map(|i| {
            let v = r();
            // position (i % 4) is the zero when it equals the block's draw
            let zero_at = (v >> 8) as usize % 4;
            if i % 4 == zero_at {
                0
            } else if v.is_multiple_of(2) {
                1
            } else {
                -1
            }
        })
        .collect();
    // each block needs exactly one zero: keep the first, fill the others, add one if none
    let mut w = w;
    for b in w.chunks_mut(cols).flat_map(|row| row.chunks_mut(4)) {
        let mut seen = false;
        for v in b.iter_mut() {
            if *v == 0 && seen {
                *v = 1;
            }
            seen |= *v == 0;
        }
        if !seen && b.len() == 4 {
            b[0] = 0;
        }
    }
    let w = w;
    sherry::pack(rows, cols, |i, j| w[i * cols + j]).expect("3:4 weights")
}

pub(super) fn f16_bytes(x: &[f32]) -> Vec<u8> {
    x.iter()
        .flat_map(|v| half::f16::from_f32(*v).to_bits().to_le_bytes())
        .collect()
}

/// The engine's attention for one token (engine/src/forward.rs), restated as a reference.
fn attention_ref(s: host::AttnShape, q: &[f32], kc: &[f32], vc: &[f32]) -> Vec<f32> {
    let (hd, kv_dim) = (s.head_dim, s.n_kv_heads * s.head_dim);
    let group = s.n_heads / s.n_kv_heads;
    let scale = 1.0 / (hd as f32).sqrt();
    let mut out = vec![0f32; q.len()];
    for (idx, o) in out.chunks_exact_mut(hd).enumerate() {
        let (t, head) = (idx / s.n_heads, idx % s.n_heads);
        let pos = s.pos0 + t;
        let kv_off = (head / group) * hd;
        let qh = &q[idx * hd..][..hd];
        let mut scores: Vec<f32> = (0..=pos)
            .map(|p| float::dot_f32(qh, &kc[p * kv_dim + kv_off..][..hd]) * scale)
            .collect();
        float::softmax_inplace(&mut scores);
        for (p, w) in scores.iter().enumerate() {
            let vr = &vc[p * kv_dim + kv_off..][..hd];
            o.iter_mut().zip(vr).for_each(|(a, b)| *a += w * b);
        }
    }
    out
}

fn argmax_ref(x: &[f32]) -> u32 {
    let mut best = 0usize;
    for (i, v) in x.iter().enumerate() {
        if *v > x[best] || x[best].is_nan() {
            best = i;
        }
    }
    best as u32
}

fn close(a: &[f32], b: &[f32], rel: f32) -> Result<(), TestCaseError> {
    prop_assert_eq!(a.len(), b.len());
    let scale = b.iter().fold(1e-6f32, |m, v| m.max(v.abs()));
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        prop_assert!(
            (x - y).abs() <= rel * scale,
            "element {}: {} vs {} (scale {})",
            i,
            x,
            y,
            scale
        );
    }
    Ok(())
}

/// NaN and infinite activations quantize as the reference does (NaN → 0), in the row sum too.
#[test]
fn act_quant_of_nan_and_inf_matches_reference() {
    for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
        let mut x = floats(300, 3, 2.0);
        x[7] = bad;
        x[290] = bad;
        let k = padded_cols(x.len());
        let (mut got, mut want) = (vec![0i8; k], vec![0i8; k]);
        let a = host::act_quant(&x, x.len(), &mut got);
        let r = quantize_row_ref(&x, &mut want);
        assert_eq!(got, want, "{bad}");
        assert_eq!(a[0].sum, r.sum, "{bad}");
        assert_eq!(a[0].scale.to_bits(), r.scale.to_bits(), "{bad}");
    }
}

#[test]
fn empty_kernel_runs() {
    host::empty();
}

#[test]
fn raw_run_rejects_bad_calls() {
    // SAFETY: every call below is refused before any pointer would be used.
    unsafe {
        assert!(matches!(
            host::run("nope", [1, 1, 1], &[]),
            Err(host::HostError::UnknownKernel(_))
        ));
        assert!(matches!(
            host::run("add", [1, 1, 1], &[0]),
            Err(host::HostError::ArgCount { expected: 3, .. })
        ));
        assert!(matches!(
            host::run("empty", [0, 1, 1], &[]),
            Err(host::HostError::EmptyGrid { .. })
        ));
    }
}

#[test]
fn every_spec_has_a_host_build_and_a_descriptor_symbol() {
    for k in super::KERNELS {
        let sym = format!("{}.kd", k.name);
        assert!(
            super::CODE_OBJECT
                .windows(sym.len())
                .any(|w| w == sym.as_bytes()),
            "{sym} missing from the committed code object; run kernels/gpu/build.sh"
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn gemv_matches_reference(rows in 1usize..70, cols in 1usize..700, seed in any::<u64>()) {
        let data = ternary(rows, cols, seed);
        let w = TernaryView::new(rows, cols, &data).unwrap();
        let x = floats(cols, seed ^ 5, 4.0);
        let mut q = vec![0i8; padded_cols(cols)];
        let act = quantize_row_ref(&x, &mut q);
        let (mut a, mut b) = (vec![0f32; rows], vec![0f32; rows]);
        ternary::gemv_ref(w, &q, act, 0.37, &mut a);
        host::gemv_i2s(w, &q, act, 0.37, &mut b);
        prop_assert_eq!(a, b);
    }

    #[test]
    fn gemm_matches_reference(rows in 1usize..80, cols in 1usize..600, n in 1usize..20, seed in any::<u64>()) {
        let data = ternary(rows, cols, seed);
        let w = TernaryView::new(rows, cols, &data).unwrap();
        let k = padded_cols(cols);
        let mut q = vec![0i8; n * k];
        let acts: Vec<_> = (0..n)
            .map(|t| quantize_row_ref(&floats(cols, seed.wrapping_add(t as u64), 2.0), &mut q[t * k..(t + 1) * k]))
            .collect();
        let (mut a, mut b) = (vec![0f32; n * rows], vec![0f32; n * rows]);
        ternary::gemm(w, &q, &acts, 1.25, &mut a);
        host::gemm_i2s(w, &q, &acts, 1.25, &mut b);
        prop_assert_eq!(a, b);
    }

    #[test]
    fn gemv_sherry_matches_reference(rows in 1usize..70, cols in 1usize..700, seed in any::<u64>()) {
        let data = sherry_weights(rows, cols, seed);
        let w = SherryView::new(rows, cols, &data).unwrap();
        let x = floats(cols, seed ^ 5, 4.0);
        let mut q = vec![0i8; padded_cols(cols)];
        let act = quantize_row_ref(&x, &mut q);
        let (mut a, mut b) = (vec![0f32; rows], vec![0f32; rows]);
        sherry::gemv_ref(w, &q, act, 0.37, &mut a);
        host::gemv_sherry(w, &q, act, 0.37, &mut b);
        prop_assert_eq!(a, b);
    }

    #[test]
    fn gemm_sherry_matches_reference(rows in 1usize..80, cols in 1usize..600, n in 1usize..20, seed in any::<u64>()) {
        let data = sherry_weights(rows, cols, seed);
        let w = SherryView::new(rows, cols, &data).unwrap();
        let k = padded_cols(cols);
        let mut q = vec![0i8; n * k];
        let acts: Vec<_> = (0..n)
            .map(|t| quantize_row_ref(&floats(cols, seed.wrapping_add(t as u64), 2.0), &mut q[t * k..(t + 1) * k]))
            .collect();
        let mut a = vec![0f32; n * rows];
        for t in 0..n {
            sherry::gemv_ref(w, &q[t * k..(t + 1) * k], acts[t], 1.25, &mut a[t * rows..(t + 1) * rows]);
        }
        let mut b = vec![0f32; n * rows];
        host::gemm_sherry(w, &q, &acts, 1.25, &mut b);
        prop_assert_eq!(a, b);
    }

    #[test]
    fn act_quant_matches_reference(rows in 1usize..5, cols in 1usize..900, amp in 0.0f32..80.0, seed in any::<u64>()) {
        let x = floats(rows * cols, seed, amp);
        let k = padded_cols(cols);
        let mut q = vec![7i8; rows * k];
        let acts = host::act_quant(&x, cols, &mut q);
        for r in 0..rows {
            let mut qr = vec![0i8; k];
            let a = quantize_row_ref(&x[r * cols..(r + 1) * cols], &mut qr);
            prop_assert_eq!(&q[r * k..(r + 1) * k], &qr[..]);
            prop_assert_eq!(acts[r], a);
        }
    }

    #[test]
    fn rms_norm_matches_reference(rows in 1usize..4, n in 1usize..1200, seed in any::<u64>()) {
        let x = floats(rows * n, seed, 3.0);
        let w = floats(n, seed ^ 9, 1.5);
        let mut got = vec![0f32; rows * n];
        host::rms_norm(&x, &w, 1e-5, &mut got);
        let mut want = vec![0f32; rows * n];
        for r in 0..rows {
            float::rms_norm(&x[r * n..(r + 1) * n], &w, 1e-5, &mut want[r * n..(r + 1) * n]);
        }
        // the f64 sum of squares only changes order; the f32 results agree to the last bit
        // except where the mean lands on a rounding boundary
        close(&got, &want, 1e-6)?;
    }

    #[test]
    fn rope_matches_reference(n_heads in 1usize..6, half in 1usize..40, pos0 in 0usize..3000, n_tok in 1usize..4, seed in any::<u64>()) {
        let hd = half * 2;
        let table = super::rope_table(hd, 500000.0, pos0 + n_tok);
        let orig = floats(n_tok * n_heads * hd, seed, 2.0);
        let mut got = orig.clone();
        host::rope(&mut got, &table, pos0, n_heads, hd);
        let inv = float::rope_inv_freq(hd, 500000.0);
        let mut want = orig;
        for (t, tok) in want.chunks_exact_mut(n_heads * hd).enumerate() {
            float::rope_rotate_half(tok, hd, pos0 + t, &inv);
        }
        prop_assert_eq!(got, want);
    }

    #[test]
    fn attention_one_split_matches_reference(
        kv_heads in 1usize..3, group in 1usize..3, hd_half in 1usize..40, pos0 in 0usize..200, n_tok in 1usize..4, seed in any::<u64>()
    ) {
        let s = host::AttnShape { n_heads: kv_heads * group, n_kv_heads: kv_heads, head_dim: hd_half * 2, pos0, split_len: 256 };
        let kv_dim = s.n_kv_heads * s.head_dim;
        let n_ctx = pos0 + n_tok;
        let q = floats(n_tok * s.n_heads * s.head_dim, seed, 2.0);
        let kc = floats(n_ctx * kv_dim, seed ^ 1, 2.0);
        let vc = floats(n_ctx * kv_dim, seed ^ 2, 2.0);
        let mut got = vec![0f32; q.len()];
        host::attention(s, &q, &kc, &vc, &mut got);
        prop_assert_eq!(got, attention_ref(s, &q, &kc, &vc));
    }

    #[test]
    fn attention_split_kv_matches_reference(
        split_len in 1usize..64, pos0 in 0usize..400, n_tok in 1usize..3, seed in any::<u64>()
    ) {
        let s = host::AttnShape { n_heads: 4, n_kv_heads: 2, head_dim: 24, pos0, split_len };
        let kv_dim = s.n_kv_heads * s.head_dim;
        let n_ctx = pos0 + n_tok;
        let q = floats(n_tok * s.n_heads * s.head_dim, seed, 3.0);
        let kc = floats(n_ctx * kv_dim, seed ^ 1, 3.0);
        let vc = floats(n_ctx * kv_dim, seed ^ 2, 3.0);
        let mut got = vec![0f32; q.len()];
        host::attention(s, &q, &kc, &vc, &mut got);
        close(&got, &attention_ref(s, &q, &kc, &vc), 2e-5)?;
    }

    #[test]
    fn elementwise_match_reference(n in 1usize..2000, seed in any::<u64>()) {
        let (g, u) = (floats(n, seed, 3.0), floats(n, seed ^ 3, 3.0));
        let (mut a, mut b) = (g.clone(), g.clone());
        float::relu2_mul(&mut a, &u);
        host::relu2_mul(&mut b, &u);
        prop_assert_eq!(&a, &b);
        float::add_inplace(&mut a, &u);
        host::add(&mut b, &u);
        prop_assert_eq!(a, b);
    }

    #[test]
    fn embed_and_lm_head_match_reference(rows in 1usize..100, cols in 1usize..300, bf in any::<bool>(), seed in any::<u64>()) {
        let vals = floats(rows * cols, seed, 2.0);
        let (kind, emb) = if bf {
            (EmbdType::Bf16, vals.iter().flat_map(|v| half::bf16::from_f32(*v).to_bits().to_le_bytes()).collect())
        } else {
            (EmbdType::F16, f16_bytes(&vals))
        };
        let view = EmbdView::new(kind, rows, cols, &emb).unwrap();
        let ids: Vec<u32> = (0..3).map(|i| ((seed as usize + i * 7) % rows) as u32).collect();
        let mut got = vec![0f32; ids.len() * cols];
        host::embed(kind, &emb, cols, &ids, &mut got);
        for (t, id) in ids.iter().enumerate() {
            let mut want = vec![0f32; cols];
            view.row_to_f32(*id as usize, &mut want);
            prop_assert_eq!(&got[t * cols..(t + 1) * cols], &want[..]);
        }
        let h = floats(cols, seed ^ 4, 1.0);
        let (mut a, mut b) = (vec![0f32; rows], vec![0f32; rows]);
        view.matvec(&h, &mut a);
        host::lm_head(kind, &emb, &h, &mut b);
        if bf {
            // the CPU sums BF16 rows sequentially, the kernel in 8 strided partials
            close(&b, &a, 1e-5)?;
        } else {
            prop_assert_eq!(a, b);
        }
    }

    #[test]
    fn lm_head_x8_matches_one_row_at_a_time(rows in 1usize..100, cols in 1usize..300, n in 1usize..=8, bf in any::<bool>(), seed in any::<u64>()) {
        let vals = floats(rows * cols, seed, 2.0);
        let (kind, emb): (EmbdType, Vec<u8>) = if bf {
            (EmbdType::Bf16, vals.iter().flat_map(|v| half::bf16::from_f32(*v).to_bits().to_le_bytes()).collect())
        } else {
            (EmbdType::F16, f16_bytes(&vals))
        };
        let h = floats(n * cols, seed ^ 9, 1.0);
        let mut batched = vec![vec![0f32; rows]; n];
        {
            let mut outs: Vec<&mut [f32]> = batched.iter_mut().map(|v| &mut v[..]).collect();
            host::lm_head_x8(kind, &emb, &h, &mut outs);
        }
        for (j, got) in batched.iter().enumerate() {
            let mut want = vec![0f32; rows];
            host::lm_head(kind, &emb, &h[j * cols..(j + 1) * cols], &mut want);
            prop_assert_eq!(got.iter().map(|v| v.to_bits()).collect::<Vec<_>>(), want.iter().map(|v| v.to_bits()).collect::<Vec<_>>(), "row {}", j);
        }
    }

    #[test]
    fn argmax_matches_reference(n in 1usize..5000, parts in 1usize..40, ties in any::<bool>(), seed in any::<u64>()) {
        let mut x = floats(n, seed, 10.0);
        if ties {
            // coarse values: many ties, the lowest index must win
            x.iter_mut().for_each(|v| *v = v.round());
        }
        prop_assert_eq!(host::argmax(&x, parts), argmax_ref(&x));
    }
}

/// CI's staleness check: where clang-19 is installed, rebuilding the sources must give the
/// committed code object byte for byte. Under CI (`CI=true`) clang-19 must be installed.
#[test]
fn committed_code_object_is_up_to_date() {
    let has_clang = std::process::Command::new("clang-19")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !has_clang {
        // CI installs clang-19 (.ci/run): there a missing compiler is a failure, not a skip
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "clang-19 is not installed under CI, so the committed code object cannot be checked; \
             install clang-19 and lld-19 (apt-get install clang-19 lld-19)"
        );
        eprintln!("SKIP: clang-19 not installed; the committed code object is not rebuilt");
        return;
    }
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/gpu/build.sh");
    let out = std::process::Command::new("sh")
        .arg(script)
        .arg("--check")
        .output()
        .expect("run build.sh");
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
