//! The SIMT host build (one thread per work-item, real barriers, LDS poisoned with 0xFF)
//! against the serial host build, which `tests.rs` checks against the Rust references: the
//! same bits on every kernel under every schedule, at tiny and at BitNet-2B-like shapes; and
//! deleting a barrier the data flow needs (by fault injection) is caught.

use super::host::{self, AttnShape, Mode, Schedule};
use super::tests::{f16_bytes, floats, sherry_weights, ternary};
use crate::act_quant::quantize_row_ref;
use crate::embd::EmbdType;
use crate::sherry::SherryView;
use crate::ternary::{padded_cols, TernaryView};

/// Problem sizes for one pass over every kernel.
struct Shape {
    rows: usize,
    cols: usize,
    tokens: usize,
    ffn: usize,
    attn: AttnShape,
    lm_rows: usize,
    vocab: usize,
    parts: usize,
}

const TINY: Shape = Shape {
    rows: 37,
    cols: 300,
    tokens: 3,
    ffn: 700,
    attn: AttnShape {
        n_heads: 4,
        n_kv_heads: 2,
        head_dim: 24,
        pos0: 40,
        split_len: 16,
    },
    lm_rows: 45,
    vocab: 1000,
    parts: 5,
};

/// BitNet b1.58 2B-4T's widths (hidden 2560, FFN 6912, 20 heads of 128 over 5 KV heads,
/// vocabulary 128256); the LM head and the GEMM use a slice of the rows so the test stays
/// within seconds.
const TWO_B: Shape = Shape {
    rows: 2560,
    cols: 2560,
    tokens: 5,
    ffn: 6912,
    attn: AttnShape {
        n_heads: 20,
        n_kv_heads: 5,
        head_dim: 128,
        pos0: 300,
        split_len: 128,
    },
    lm_rows: 96,
    vocab: 128256,
    parts: 16,
};

fn bits(x: &[f32]) -> Vec<u32> {
    x.iter().map(|v| v.to_bits()).collect()
}

/// Every kernel's output on `s`, as bits, labelled.
fn all_outputs(s: &Shape, seed: u64) -> Vec<(&'static str, Vec<u32>)> {
    let mut out = Vec::new();
    let data = ternary(s.rows, s.cols, seed);
    let w = TernaryView::new(s.rows, s.cols, &data).expect("packed ternary");
    let k = padded_cols(s.cols);
    let x = floats(s.tokens * s.cols, seed ^ 1, 3.0);
    let mut q = vec![0i8; s.tokens * k];
    let acts = host::act_quant(&x, s.cols, &mut q);
    out.push(("act_quant q", q.iter().map(|v| *v as u8 as u32).collect()));
    out.push((
        "act_quant scales",
        acts.iter()
            .flat_map(|a| [a.scale.to_bits(), a.sum as u32])
            .collect(),
    ));
    let mut y = vec![0f32; s.rows];
    host::gemv_i2s(w, &q[..k], acts[0], 0.37, &mut y);
    out.push(("gemv_i2s", bits(&y)));
    let gemm_rows = s.rows.min(160);
    let gw = TernaryView::new(
        gemm_rows,
        s.cols,
        &data[..crate::ternary::row_bytes(s.cols) * gemm_rows],
    )
    .expect("a slice of whole rows");
    let mut y = vec![0f32; s.tokens * gemm_rows];
    let qs: Vec<_> = (0..s.tokens)
        .map(|t| quantize_row_ref(&x[t * s.cols..][..s.cols], &mut vec![0i8; k]))
        .collect();
    host::gemm_i2s(gw, &q, &qs, 1.25, &mut y);
    out.push(("gemm_i2s", bits(&y)));
    let sd = sherry_weights(gemm_rows, s.cols, seed ^ 7);
    let sw = SherryView::new(gemm_rows, s.cols, &sd).expect("packed Sherry");
    let mut y = vec![0f32; gemm_rows];
    host::gemv_sherry(sw, &q[..k], acts[0], 0.37, &mut y);
    out.push(("gemv_sherry", bits(&y)));
    let mut y = vec![0f32; s.tokens * gemm_rows];
    host::gemm_sherry(sw, &q, &qs, 1.25, &mut y);
    out.push(("gemm_sherry", bits(&y)));
    let nw = floats(s.cols, seed ^ 2, 1.5);
    let mut y = vec![0f32; x.len()];
    host::rms_norm(&x, &nw, 1e-5, &mut y);
    out.push(("rms_norm", bits(&y)));
    let a = s.attn;
    let (width, kv_dim) = (a.n_heads * a.head_dim, a.n_kv_heads * a.head_dim);
    let mut qh = floats(s.tokens * width, seed ^ 3, 2.0);
    let table = super::rope_table(a.head_dim, 500000.0, a.pos0 + s.tokens);
    host::rope(&mut qh, &table, a.pos0, a.n_heads, a.head_dim);
    out.push(("rope", bits(&qh)));
    let n_ctx = a.pos0 + s.tokens;
    let kc = floats(n_ctx * kv_dim, seed ^ 4, 2.0);
    let vc = floats(n_ctx * kv_dim, seed ^ 5, 2.0);
    let mut o = vec![0f32; qh.len()];
    host::attention(a, &qh, &kc, &vc, &mut o);
    out.push(("attention", bits(&o)));
    let mut gate = floats(s.ffn, seed ^ 6, 3.0);
    let up = floats(s.ffn, seed ^ 7, 3.0);
    host::relu2_mul(&mut gate, &up);
    out.push(("relu2_mul", bits(&gate)));
    host::add(&mut gate, &up);
    out.push(("add", bits(&gate)));
    let emb = f16_bytes(&floats(s.lm_rows * s.cols, seed ^ 8, 1.0));
    let ids = [3u32 % s.lm_rows as u32, (s.lm_rows - 1) as u32];
    let mut h = vec![0f32; ids.len() * s.cols];
    host::embed(EmbdType::F16, &emb, s.cols, &ids, &mut h);
    out.push(("embed_f16", bits(&h)));
    let mut logits = vec![0f32; s.lm_rows];
    host::lm_head(EmbdType::F16, &emb, &h[..s.cols], &mut logits);
    out.push(("lm_head_f16", bits(&logits)));
    let (mut l0, mut l1) = (vec![0f32; s.lm_rows], vec![0f32; s.lm_rows]);
    host::lm_head_x8(EmbdType::F16, &emb, &h, &mut [&mut l0, &mut l1]);
    l0.extend_from_slice(&l1);
    out.push(("lm_head_f16_x8", bits(&l0)));
    let mut big = floats(s.vocab, seed ^ 9, 10.0);
    big.iter_mut().for_each(|v| *v = v.round()); // ties: the lowest index must win
    out.push(("argmax", vec![host::argmax(&big, s.parts)]));
    out
}

fn simt_agrees(s: &Shape, schedules: &[Schedule]) {
    let want = all_outputs(s, 11);
    for &sched in schedules {
        let got = host::with_mode(Mode::simt(sched), || all_outputs(s, 11));
        for ((name, a), (_, b)) in want.iter().zip(&got) {
            assert!(
                a == b,
                "{name}: the SIMT build ({sched:?}) differs from the serial one"
            );
        }
    }
}

#[test]
fn simt_lds_is_every_kernels_arrays() {
    // attention 2052 + ternary 18432 + sherry 15360 + quant 2048 + norm 2048 + head 3072 +
    // 8192 (the 8-row head) bytes, each array aligned to 16 (so the whole block is
    // poisoned, and nothing else is)
    let declared = 2052 + 18432 + 15360 + 2048 + 2048 + 3072 + 8192;
    let got = host::simt_lds_bytes();
    assert!(
        (declared..declared + 16 * 10).contains(&got),
        "{got} bytes of SIMT LDS, the sources declare {declared}"
    );
}

#[test]
fn simt_matches_serial_at_tiny_shapes() {
    simt_agrees(
        &TINY,
        &[Schedule::Concurrent, Schedule::Forward, Schedule::Reverse],
    );
}

#[test]
fn simt_matches_serial_at_2b_shapes() {
    simt_agrees(&TWO_B, &[Schedule::Concurrent]);
}

/// Which barriers of a kernel, skipped by every work-item, change its output under the
/// forward or the reverse schedule.
fn barriers_caught(n_barriers: u32, run: impl Fn() -> Vec<u32>) -> Vec<u32> {
    let want = run();
    (1..=n_barriers + 1)
        .filter(|&k| {
            [Schedule::Forward, Schedule::Reverse]
                .iter()
                .any(|&schedule| {
                    let mode = Mode::Simt {
                        schedule,
                        skip_barrier: Some(k),
                    };
                    host::with_mode(mode, &run) != want
                })
        })
        .collect()
}

#[test]
fn a_missing_barrier_in_attention_is_caught() {
    let a = AttnShape {
        n_heads: 2,
        n_kv_heads: 1,
        head_dim: 40,
        pos0: 70,
        split_len: 32,
    };
    let q = floats(2 * 40, 1, 2.0);
    let (kc, vc) = (floats(71 * 40, 2, 2.0), floats(71 * 40, 3, 2.0));
    let run = || {
        let mut o = vec![0f32; q.len()];
        host::attention(a, &q, &kc, &vc, &mut o);
        bits(&o)
    };
    // attn_split has four barriers (q staged, scores, max, exponentials); each is needed
    assert_eq!(barriers_caught(4, run), [1, 2, 3, 4]);
}

#[test]
fn a_missing_barrier_in_the_ternary_kernels_is_caught() {
    let (rows, cols) = (40, 2048); // 128 words per row: two K chunks in the GEMM
    let data = ternary(rows, cols, 5);
    let w = TernaryView::new(rows, cols, &data).expect("packed ternary");
    let k = padded_cols(cols);
    let x = floats(2 * cols, 6, 3.0);
    let mut q = vec![0i8; 2 * k];
    let acts: Vec<_> = (0..2)
        .map(|t| quantize_row_ref(&x[t * cols..][..cols], &mut q[t * k..][..k]))
        .collect();
    let gemv = || {
        let mut y = vec![0f32; rows];
        host::gemv_i2s(w, &q[..k], acts[0], 0.5, &mut y);
        bits(&y)
    };
    // five tree steps need their barriers; the sixth only orders a lane's read of its
    // own last write
    assert_eq!(barriers_caught(6, gemv), [1, 2, 3, 4, 5]);
    let gemm = || {
        let mut y = vec![0f32; 2 * rows];
        host::gemm_i2s(w, &q, &acts, 0.5, &mut y);
        bits(&y)
    };
    // per chunk: the barrier before staging (overwrites what others still read: needed
    // from the second chunk on) and after it (reads what others staged); the last one
    // again orders only a lane's own accumulator
    assert_eq!(barriers_caught(5, gemm), [2, 3, 4]);
}

#[test]
fn source_workgroup_sizes_match_the_spec() {
    for k in super::KERNELS {
        assert_eq!(
            host::source_workgroup(k.name),
            Some(k.workgroup),
            "kernel `{}`: its C source's work-group size and KERNELS disagree",
            k.name
        );
    }
}

#[test]
fn a_wrong_workgroup_size_traps_in_both_host_builds() {
    let mut acc = [1f32];
    let x = [2f32];
    let args = [acc.as_mut_ptr() as u64, x.as_ptr() as u64, 1];
    for mode in [Mode::Serial, Mode::simt(Schedule::Concurrent)] {
        // SAFETY: one-element buffers for n = 1; the kernel traps before touching them.
        let r = unsafe { host::run_as("add", [1, 1, 1], 128, &args, mode) };
        assert_eq!(
            r,
            Err(host::HostError::WorkgroupTrap {
                kernel: "add",
                source: 256,
                packet: 128
            }),
            "{mode:?}"
        );
    }
    assert_eq!(acc, [1.0], "a trapped kernel wrote its output");
}

/// Run only by `.ci/tsan-simt.sh`, in a build where the SIMT runner is compiled with
/// ThreadSanitizer (`ONEBIT_TSAN=1`) and `halt_on_error=1`: the work-items race on LDS once
/// a barrier of `attn_split` is gone, so TSan must stop the process before the end. The
/// script checks that it did, and that its report names a data race.
#[cfg(onebit_tsan)]
#[test]
#[ignore = "run by .ci/tsan-simt.sh, which expects ThreadSanitizer to stop it"]
fn tsan_stops_a_run_with_a_missing_barrier() {
    let a = AttnShape {
        n_heads: 1,
        n_kv_heads: 1,
        head_dim: 64,
        pos0: 20,
        split_len: 32,
    };
    let q = floats(64, 1, 2.0);
    let (kc, vc) = (floats(21 * 64, 2, 2.0), floats(21 * 64, 3, 2.0));
    let mut o = vec![0f32; q.len()];
    let mode = Mode::Simt {
        schedule: Schedule::Concurrent,
        skip_barrier: Some(1),
    };
    host::with_mode(mode, || host::attention(a, &q, &kc, &vc, &mut o));
    panic!("ThreadSanitizer did not report the race of a missing barrier");
}
