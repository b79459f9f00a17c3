//! `onebit selftest` for the iGPU: every kernel dispatched on random inputs of odd sizes and
//! compared with the CPU reference, then a model end to end against the CPU forward pass.
//! Runs on real hardware or, for CI, on the KFD emulator.

use std::time::{Duration, Instant};

use half::f16;
use onebit_drv::buffer::BufferDescriptor;
use onebit_drv::codeobj::load::{dispatch_args, KernargArena, Program};
use onebit_drv::codeobj::{mach_for, CodeObject, Launch};
use onebit_drv::kfd::{AqlQueue, Device, FenceScope, QueueOptions, SharedGpuBuffer};
use onebit_kernels::act_quant::quantize_row_ref;
use onebit_kernels::embd::{EmbdType, EmbdView};
use onebit_kernels::gpu::{self, GpuAct, GpuBest};
use onebit_kernels::sherry::{self, SherryView};
use onebit_kernels::ternary::{self, padded_cols, TernaryView};
use onebit_kernels::{float, ActScale};

use super::open::Gpu;
use super::{IgpuBackend, IgpuError, IgpuOptions, IgpuSurface, Result};
use crate::backend::Backend;
use crate::forward::{forward, LogitsMode, Session};
use crate::generate::{generate, Options};
use crate::model::Model;
use crate::sampler::SamplingParams;

/// One kernel's outcome.
#[derive(Clone, Debug)]
pub struct KernelReport {
    pub name: &'static str,
    pub ok: bool,
    /// What was compared, or what went wrong.
    pub detail: String,
    /// Host time from submission to completion.
    pub wall: Duration,
    /// CP timestamps, end − start (GPU clock ticks).
    pub gpu_ticks: u64,
}

/// A kernel argument of a case.
#[derive(Clone, Copy, Debug)]
enum Arg {
    Buf(usize),
    U32(u32),
    F32(f32),
}

type Check = Box<dyn Fn(&[Vec<u8>]) -> std::result::Result<String, String>>;

/// Dispatches (in order) over a set of buffers, and how to judge the buffers afterwards.
struct Case {
    name: &'static str,
    buffers: Vec<Vec<u8>>,
    steps: Vec<(&'static str, [u32; 3], Vec<Arg>)>,
    check: Check,
}

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn floats(&mut self, n: usize, amp: f32) -> Vec<f32> {
        (0..n)
            .map(|_| ((self.next() % 20001) as f32 / 10000.0 - 1.0) * amp)
            .collect()
    }
}

fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn to_f32(b: &[u8]) -> Vec<f32> {
    b.chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().expect("4")))
        .collect()
}

fn i8_bytes(v: &[i8]) -> Vec<u8> {
    v.iter().map(|x| *x as u8).collect()
}

fn act_bytes(a: &[ActScale]) -> Vec<u8> {
    a.iter()
        .flat_map(|a| [a.scale.to_le_bytes(), a.sum.to_le_bytes()].concat())
        .collect()
}

fn same(got: &[f32], want: &[f32], rel: f32) -> std::result::Result<String, String> {
    let scale = want.iter().fold(1e-6f32, |m, v| m.max(v.abs()));
    let worst = got
        .iter()
        .zip(want)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max)
        / scale;
    if got.len() == want.len() && worst <= rel {
        Ok(format!("{} values, max rel. error {worst:.1e}", want.len()))
    } else {
        Err(format!(
            "max rel. error {worst:.3e} over {} values (allowed {rel:.0e})",
            want.len()
        ))
    }
}

fn cases(seed: u64) -> Vec<Case> {
    let mut r = Rng(seed | 1);
    let mut out = Vec::new();

    // ternary GEMV / GEMM (exact integer math)
    let (rows, cols) = (301, 700);
    let codes: Vec<u8> = (0..rows * cols).map(|_| (r.next() % 3) as u8).collect();
    let w = ternary::pack(rows, cols, |i, j| codes[i * cols + j]);
    let k = padded_cols(cols);
    let x = r.floats(cols, 3.0);
    let mut q = vec![0i8; k];
    let act = quantize_row_ref(&x, &mut q);
    let mut want = vec![0f32; rows];
    ternary::gemv_ref(
        TernaryView::new(rows, cols, &w).expect("packed"),
        &q,
        act,
        0.61,
        &mut want,
    );
    out.push(gemv_case("gemv_i2s", w.clone(), &q, act, k / 16, want));
    let n = 11;
    let mut qn = vec![0i8; n * k];
    let acts: Vec<ActScale> = (0..n)
        .map(|t| quantize_row_ref(&r.floats(cols, 2.0), &mut qn[t * k..(t + 1) * k]))
        .collect();
    let mut want = vec![0f32; n * rows];
    ternary::gemm(
        TernaryView::new(rows, cols, &w).expect("packed"),
        &qn,
        &acts,
        1.3,
        &mut want,
    );
    out.push(gemm_case("gemm_i2s", w, &qn, &acts, rows, k / 16, want));

    // Sherry 3:4 GEMV / GEMM (exact integer math): one zero per block at a random place
    let sw: Vec<i8> = (0..rows * cols)
        .map(|_| r.next())
        .collect::<Vec<_>>()
        .chunks(4)
        .flat_map(|c| {
            let z = (c[0] % 4) as usize;
            (0..c.len()).map(move |p| match (p == z, c[p] >> 9 & 1) {
                (true, _) => 0,
                (false, 1) => 1,
                _ => -1,
            })
        })
        .collect();
    // whole blocks per row (cols is a multiple of 4), so each block has exactly one zero
    let sp = sherry::pack(rows, cols, |i, j| sw[i * cols + j]).expect("3:4 weights");
    let sv = SherryView::new(rows, cols, &sp).expect("packed");
    let mut want = vec![0f32; rows];
    sherry::gemv_ref(sv, &q, act, 0.61, &mut want);
    out.push(gemv_case("gemv_sherry", sp.clone(), &q, act, k / 128, want));
    let mut want = vec![0f32; n * rows];
    sherry::gemm(sv, &qn, &acts, 1.3, &mut want);
    out.push(gemm_case(
        "gemm_sherry",
        sp,
        &qn,
        &acts,
        rows,
        k / 128,
        want,
    ));

    // activation quantization (exact)
    let (qr, qc) = (3, 999);
    let x = r.floats(qr * qc, 7.0);
    let kq = padded_cols(qc);
    let mut want_q = vec![0i8; qr * kq];
    let want_a: Vec<ActScale> = (0..qr)
        .map(|t| quantize_row_ref(&x[t * qc..(t + 1) * qc], &mut want_q[t * kq..(t + 1) * kq]))
        .collect();
    out.push(Case {
        name: "act_quant",
        buffers: vec![f32_bytes(&x), vec![0x55; qr * kq], vec![0; qr * 8]],
        steps: vec![(
            "act_quant",
            [qr as u32, 1, 1],
            vec![
                Arg::Buf(0),
                Arg::Buf(1),
                Arg::Buf(2),
                Arg::U32(qc as u32),
                Arg::U32(kq as u32),
            ],
        )],
        check: Box::new(move |b| {
            if b[1] != i8_bytes(&want_q) || b[2] != act_bytes(&want_a) {
                return Err("int8 values or scales differ from quantize_row_ref".into());
            }
            Ok(format!("{qr}×{qc} exact"))
        }),
    });

    // RMSNorm
    let (nr, nc) = (2, 1001);
    let x = r.floats(nr * nc, 3.0);
    let wn = r.floats(nc, 1.5);
    let mut want = vec![0f32; nr * nc];
    for t in 0..nr {
        float::rms_norm(
            &x[t * nc..(t + 1) * nc],
            &wn,
            1e-5,
            &mut want[t * nc..(t + 1) * nc],
        );
    }
    out.push(Case {
        name: "rms_norm",
        buffers: vec![f32_bytes(&x), f32_bytes(&wn), vec![0; nr * nc * 4]],
        steps: vec![(
            "rms_norm",
            [nr as u32, 1, 1],
            vec![
                Arg::Buf(0),
                Arg::Buf(1),
                Arg::Buf(2),
                Arg::U32(nc as u32),
                Arg::F32(1e-5),
            ],
        )],
        check: Box::new(move |b| same(&to_f32(&b[2]), &want, 1e-6)),
    });

    // RoPE (the table carries the reference's own cos/sin: exact)
    let (heads, hd, pos0, nt) = (5, 62, 1234, 3);
    let table = gpu::rope_table(hd, 500000.0, pos0 + nt);
    let x = r.floats(nt * heads * hd, 2.0);
    let inv = float::rope_inv_freq(hd, 500000.0);
    let mut want = x.clone();
    for (t, tok) in want.chunks_exact_mut(heads * hd).enumerate() {
        float::rope_rotate_half(tok, hd, pos0 + t, &inv);
    }
    out.push(Case {
        name: "rope",
        buffers: vec![f32_bytes(&x), f32_bytes(&table)],
        steps: vec![(
            "rope",
            [((heads * hd / 2) as u32).div_ceil(256), nt as u32, 1],
            vec![
                Arg::Buf(0),
                Arg::Buf(1),
                Arg::U32(pos0 as u32),
                Arg::U32(heads as u32),
                Arg::U32(hd as u32),
            ],
        )],
        check: Box::new(move |b| same(&to_f32(&b[0]), &want, 0.0)),
    });

    // attention with a 3-way flash-decoding split (exp differs in the last bits on the GPU)
    let (h, kvh, hd, pos0, nt, split) = (6, 2, 64, 40, 2, 16);
    let kv_dim = kvh * hd;
    let n_ctx = pos0 + nt;
    let n_splits = gpu::attn_splits(n_ctx, split);
    let qv = r.floats(nt * h * hd, 2.0);
    let kc = r.floats(n_ctx * kv_dim, 2.0);
    let vc = r.floats(n_ctx * kv_dim, 2.0);
    let want = attention_ref(&qv, &kc, &vc, h, kvh, hd, pos0);
    out.push(Case {
        name: "attention",
        buffers: vec![
            f32_bytes(&qv),
            f32_bytes(&kc),
            f32_bytes(&vc),
            vec![0; nt * h * n_splits * (hd + 2) * 4],
            vec![0; nt * h * hd * 4],
        ],
        steps: vec![
            (
                "attn_split",
                [h as u32, n_splits as u32, nt as u32],
                vec![
                    Arg::Buf(0),
                    Arg::Buf(1),
                    Arg::Buf(2),
                    Arg::Buf(3),
                    Arg::U32(h as u32),
                    Arg::U32(kvh as u32),
                    Arg::U32(hd as u32),
                    Arg::U32(pos0 as u32),
                    Arg::U32(split as u32),
                    Arg::F32(1.0 / (hd as f32).sqrt()),
                ],
            ),
            (
                "attn_combine",
                [h as u32, nt as u32, 1],
                vec![
                    Arg::Buf(3),
                    Arg::Buf(4),
                    Arg::U32(h as u32),
                    Arg::U32(hd as u32),
                    Arg::U32(n_splits as u32),
                ],
            ),
        ],
        check: Box::new(move |b| same(&to_f32(&b[4]), &want, 2e-5)),
    });

    // element-wise (exact)
    let ne = 3001;
    let (g, u) = (r.floats(ne, 3.0), r.floats(ne, 3.0));
    let mut want = g.clone();
    float::relu2_mul(&mut want, &u);
    float::add_inplace(&mut want, &u);
    out.push(Case {
        name: "relu2_mul+add",
        buffers: vec![f32_bytes(&g), f32_bytes(&u)],
        steps: vec![
            (
                "relu2_mul",
                [3, 1, 1],
                vec![Arg::Buf(0), Arg::Buf(1), Arg::U32(ne as u32)],
            ),
            (
                "add",
                [2, 1, 1],
                vec![Arg::Buf(0), Arg::Buf(1), Arg::U32(ne as u32)],
            ),
        ],
        check: Box::new(move |b| same(&to_f32(&b[0]), &want, 0.0)),
    });

    // embedding lookup, LM head, argmax (exact: same summation order as embd.rs)
    let (vocab, hid) = (1037, 200);
    let emb: Vec<u8> = r
        .floats(vocab * hid, 2.0)
        .iter()
        .flat_map(|v| f16::from_f32(*v).to_bits().to_le_bytes())
        .collect();
    let view = EmbdView::new(EmbdType::F16, vocab, hid, &emb).expect("f16 rows");
    let ids = [7u32, 1036, 0];
    let mut want_h = vec![0f32; ids.len() * hid];
    for (t, id) in ids.iter().enumerate() {
        view.row_to_f32(*id as usize, &mut want_h[t * hid..(t + 1) * hid]);
    }
    let hvec = r.floats(hid, 1.0);
    let mut want_logits = vec![0f32; vocab];
    view.matvec(&hvec, &mut want_logits);
    let want_tok = crate::sampler::argmax(&want_logits);
    let id_bytes: Vec<u8> = ids.iter().flat_map(|i| i.to_le_bytes()).collect();
    out.push(Case {
        name: "embed_f16",
        buffers: vec![emb.clone(), id_bytes, vec![0; ids.len() * hid * 4]],
        steps: vec![(
            "embed_f16",
            [1, ids.len() as u32, 1],
            vec![Arg::Buf(0), Arg::Buf(1), Arg::Buf(2), Arg::U32(hid as u32)],
        )],
        check: Box::new(move |b| same(&to_f32(&b[2]), &want_h, 0.0)),
    });
    let parts = 13;
    let emb_x8 = emb.clone();
    // The 8-row head with 3 rows: each row's logits exactly the one-row reference's.
    let hs: Vec<f32> = r.floats(3 * hid, 1.0);
    let want_rows: Vec<Vec<f32>> = hs
        .chunks_exact(hid)
        .map(|h| {
            let mut l = vec![0f32; vocab];
            view.matvec(h, &mut l);
            l
        })
        .collect();
    out.push(Case {
        name: "lm_head_f16+argmax",
        buffers: vec![
            emb,
            f32_bytes(&hvec),
            vec![0; vocab * 4],
            vec![0; parts * 8],
            vec![0; 4],
        ],
        steps: vec![
            (
                "lm_head_f16",
                [groups(vocab, gpu::LM_HEAD_ROWS_PER_GROUP), 1, 1],
                vec![
                    Arg::Buf(0),
                    Arg::Buf(1),
                    Arg::Buf(2),
                    Arg::U32(vocab as u32),
                    Arg::U32(hid as u32),
                ],
            ),
            (
                "argmax_partial",
                [parts as u32, 1, 1],
                vec![Arg::Buf(2), Arg::Buf(3), Arg::U32(vocab as u32)],
            ),
            (
                "argmax_final",
                [1, 1, 1],
                vec![Arg::Buf(3), Arg::Buf(4), Arg::U32(parts as u32)],
            ),
        ],
        check: Box::new(move |b| {
            same(&to_f32(&b[2]), &want_logits, 0.0)?;
            let tok = u32::from_le_bytes(b[4][..4].try_into().expect("4"));
            if tok != want_tok {
                return Err(format!("argmax {tok}, reference {want_tok}"));
            }
            Ok(format!("{vocab} logits exact, argmax {tok}"))
        }),
    });
    let mut args = vec![
        Arg::Buf(0),
        Arg::Buf(1),
        Arg::U32(vocab as u32),
        Arg::U32(hid as u32),
        Arg::U32(3),
    ];
    args.extend([2, 3, 4, 2, 2, 2, 2, 2].map(Arg::Buf));
    out.push(Case {
        name: "lm_head_f16_x8",
        buffers: vec![
            emb_x8,
            f32_bytes(&hs),
            vec![0; vocab * 4],
            vec![0; vocab * 4],
            vec![0; vocab * 4],
        ],
        steps: vec![(
            "lm_head_f16_x8",
            [groups(vocab, gpu::LM_HEAD_ROWS_PER_GROUP), 1, 1],
            args,
        )],
        check: Box::new(move |b| {
            for (j, want) in want_rows.iter().enumerate() {
                same(&to_f32(&b[2 + j]), want, 0.0)?;
            }
            Ok(format!("3 rows of {vocab} logits exact"))
        }),
    });
    // BF16 embeddings: lookup exact, LM head within float rounding (the CPU sums BF16 rows
    // sequentially, the kernel in 8 strided partials)
    let (vocab, hid) = (333, 130);
    let emb: Vec<u8> = r
        .floats(vocab * hid, 2.0)
        .iter()
        .flat_map(|v| half::bf16::from_f32(*v).to_bits().to_le_bytes())
        .collect();
    let view = EmbdView::new(EmbdType::Bf16, vocab, hid, &emb).expect("bf16 rows");
    let mut want_h = vec![0f32; hid];
    view.row_to_f32(5, &mut want_h);
    let hvec = r.floats(hid, 1.0);
    let mut want_logits = vec![0f32; vocab];
    view.matvec(&hvec, &mut want_logits);
    out.push(Case {
        name: "embed+lm_head_bf16",
        buffers: vec![
            emb,
            5u32.to_le_bytes().to_vec(),
            vec![0; hid * 4],
            f32_bytes(&hvec),
            vec![0; vocab * 4],
        ],
        steps: vec![
            (
                "embed_bf16",
                [1, 1, 1],
                vec![Arg::Buf(0), Arg::Buf(1), Arg::Buf(2), Arg::U32(hid as u32)],
            ),
            (
                "lm_head_bf16",
                [groups(vocab, gpu::LM_HEAD_ROWS_PER_GROUP), 1, 1],
                vec![
                    Arg::Buf(0),
                    Arg::Buf(3),
                    Arg::Buf(4),
                    Arg::U32(vocab as u32),
                    Arg::U32(hid as u32),
                ],
            ),
        ],
        check: Box::new(move |b| {
            same(&to_f32(&b[2]), &want_h, 0.0)?;
            same(&to_f32(&b[4]), &want_logits, 1e-5)
        }),
    });
    out.push(Case {
        name: "empty",
        buffers: vec![],
        steps: vec![("empty", [1, 1, 1], vec![])],
        check: Box::new(|_| Ok("ran".into())),
    });
    let _ = (
        std::mem::size_of::<GpuAct>(),
        std::mem::size_of::<GpuBest>(),
    );
    out
}

/// The engine's attention restated (softmax per (token, head) over positions 0..=pos).
fn attention_ref(
    q: &[f32],
    kc: &[f32],
    vc: &[f32],
    h: usize,
    kvh: usize,
    hd: usize,
    pos0: usize,
) -> Vec<f32> {
    let kv_dim = kvh * hd;
    let scale = 1.0 / (hd as f32).sqrt();
    let mut out = vec![0f32; q.len()];
    for (idx, o) in out.chunks_exact_mut(hd).enumerate() {
        let (t, head) = (idx / h, idx % h);
        let off = (head / (h / kvh)) * hd;
        let qh = &q[idx * hd..][..hd];
        let mut s: Vec<f32> = (0..=pos0 + t)
            .map(|p| float::dot_f32(qh, &kc[p * kv_dim + off..][..hd]) * scale)
            .collect();
        float::softmax_inplace(&mut s);
        for (p, w) in s.iter().enumerate() {
            o.iter_mut()
                .zip(&vc[p * kv_dim + off..][..hd])
                .for_each(|(a, b)| *a += w * b);
        }
    }
    out
}

/// Dispatches every kernel case on `dev` (`on_load` sees the loaded program first: the
/// emulator binds its symbols there).
pub fn run_kernels(
    dev: &Device,
    seed: u64,
    on_load: &dyn Fn(&Program),
) -> Result<Vec<KernelReport>> {
    let gfx = dev.node().gfx_name();
    let mach = mach_for(&gfx)
        .ok_or_else(|| IgpuError::Model(format!("GPU {gfx} is not supported by the kernels")))?;
    let co = CodeObject::parse(gpu::CODE_OBJECT, mach)?;
    let program = Program::load(dev, &co)?;
    on_load(&program);
    let queue = AqlQueue::new(dev, QueueOptions::default())?;
    let mut kernargs = KernargArena::new(dev, 64 << 10)?;
    let mut reports = Vec::new();
    for case in cases(seed) {
        reports.push(run_case(dev, &program, &queue, &mut kernargs, case)?);
    }
    Ok(reports)
}

fn run_case(
    dev: &Device,
    program: &Program,
    queue: &AqlQueue,
    kernargs: &mut KernargArena,
    case: Case,
) -> Result<KernelReport> {
    let offsets: Vec<usize> = case
        .buffers
        .iter()
        .scan(0usize, |at, b| {
            let here = *at;
            *at = (here + b.len()).next_multiple_of(256);
            Some(here)
        })
        .collect();
    let total = offsets
        .last()
        .zip(case.buffers.last())
        .map_or(256, |(o, b)| o + b.len().max(1));
    let mut mem = SharedGpuBuffer::new(dev, "onebit-selftest", total, BufferDescriptor::blob())?;
    for (o, b) in offsets.iter().zip(&case.buffers) {
        mem.as_mut_slice()[*o..*o + b.len()].copy_from_slice(b);
    }
    kernargs.reset();
    let mut pending = Vec::new();
    let t0 = Instant::now();
    for (name, groups, args) in &case.steps {
        let spec =
            gpu::spec(name).ok_or_else(|| IgpuError::Model(format!("no spec for `{name}`")))?;
        let (kernel, object) = program.kernel(name)?;
        let words: Vec<u64> = args
            .iter()
            .map(|a| match a {
                Arg::Buf(i) => mem.gpu_va() + offsets[*i] as u64,
                Arg::U32(v) => u64::from(*v),
                Arg::F32(v) => u64::from(v.to_bits()),
            })
            .collect();
        let launch = Launch::groups(*groups, [spec.workgroup as u16, 1, 1]);
        let va = kernargs.push(kernel, &words, &launch)?;
        let mut d = dispatch_args(kernel, object, va, &launch);
        (d.acquire, d.release) = (FenceScope::System, FenceScope::System);
        pending.push(queue.dispatch(&d)?);
    }
    let mut ticks = 0;
    for p in &pending {
        p.wait(Duration::from_secs(10))?;
        let (s, e) = p.timestamps();
        ticks += e.saturating_sub(s);
    }
    let wall = t0.elapsed();
    let outputs: Vec<Vec<u8>> = offsets
        .iter()
        .zip(&case.buffers)
        .map(|(o, b)| mem.as_slice()[*o..*o + b.len()].to_vec())
        .collect();
    let (ok, detail) = match (case.check)(&outputs) {
        Ok(d) => (true, d),
        Err(d) => (false, d),
    };
    Ok(KernelReport {
        name: case.name,
        ok,
        detail,
        wall,
        gpu_ticks: ticks,
    })
}

/// A model end to end on the iGPU against the CPU forward pass.
#[derive(Clone, Debug)]
pub struct ModelReport {
    pub cpu_tokens: Vec<u32>,
    pub gpu_tokens: Vec<u32>,
    /// CPU top-1 minus top-2 logit where the two first disagree.
    pub margin_at_mismatch: Option<f32>,
    pub gpu_time: Duration,
    pub cpu_time: Duration,
}

impl ModelReport {
    /// Equal tokens, or a first disagreement where the CPU's own choice was a near tie
    /// (< 0.1 logit: two correct engines may round there differently).
    pub fn ok(&self) -> bool {
        self.cpu_tokens == self.gpu_tokens || self.margin_at_mismatch.is_some_and(|m| m < 0.1)
    }
}

fn margin(logits: &[f32]) -> f32 {
    let (mut a, mut b) = (f32::NEG_INFINITY, f32::NEG_INFINITY);
    for &v in logits {
        if v > a {
            (a, b) = (v, a);
        } else if v > b {
            b = v;
        }
    }
    a - b
}

/// Greedy `steps` tokens after `prompt`: the CPU forward pass as the reference, the iGPU
/// surface through the one generation loop (`generate`), as `onebit run` drives it.
/// Returns the GPU for more checks.
pub fn run_model(
    gpu: Gpu,
    model: &Model,
    prompt: &[u32],
    steps: usize,
) -> Result<(ModelReport, Gpu)> {
    let max_ctx = (prompt.len() + steps).min(model.config.max_context);
    let t0 = Instant::now();
    let mut s = Session::new(model, max_ctx);
    let mut cpu_tokens = Vec::new();
    let mut margins = Vec::new();
    let mut next: Vec<u32> = prompt.to_vec();
    for _ in 0..steps {
        let logits = forward(model, &mut s, &next, LogitsMode::Last)
            .map_err(|e| IgpuError::Input(e.to_string()))?;
        let tok = crate::sampler::argmax(&logits);
        margins.push(margin(&logits));
        cpu_tokens.push(tok);
        next = vec![tok];
    }
    let cpu_time = t0.elapsed();
    let be = IgpuBackend::new(
        &gpu.dev,
        model,
        &IgpuOptions {
            max_ctx,
            ..IgpuOptions::default()
        },
    )?;
    if let Some(k) = &gpu.kfd {
        super::emulator::bind(k, &be);
    }
    let mut surface = IgpuSurface::new(be, gpu);
    let loop_error = |e: crate::Error| IgpuError::Model(format!("the generation loop: {e}"));
    let mut session = surface
        .new_session(max_ctx)
        .map_err(|e| loop_error(e.into()))?;
    let opts = Options {
        max_new: steps,
        sampling: SamplingParams::greedy(),
        stop_ids: Vec::new(),
        logprobs: None,
    };
    let t0 = Instant::now();
    let mut gpu_tokens = Vec::new();
    generate(&mut surface, &mut session, prompt, &opts, |t| {
        gpu_tokens.push(t);
        true
    })
    .map_err(loop_error)?;
    let gpu_time = t0.elapsed();
    let mismatch = cpu_tokens.iter().zip(&gpu_tokens).position(|(a, b)| a != b);
    let report = ModelReport {
        margin_at_mismatch: mismatch.map(|i| margins[i]),
        cpu_tokens,
        gpu_tokens,
        gpu_time,
        cpu_time,
    };
    drop(session);
    Ok((report, surface.into_parts().1))
}

/// A GEMV case: `kernel` over the packed rows `w` (`words` units of its layout per row,
/// `want.len()` rows) times one quantized activation row, scale 0.61, exact.
fn gemv_case(
    kernel: &'static str,
    w: Vec<u8>,
    q: &[i8],
    act: ActScale,
    words: usize,
    want: Vec<f32>,
) -> Case {
    let rows = want.len();
    Case {
        name: kernel,
        buffers: vec![w, i8_bytes(q), act_bytes(&[act]), vec![0; rows * 4]],
        steps: vec![(
            kernel,
            [groups(rows, gpu::GEMV_ROWS_PER_GROUP), 1, 1],
            vec![
                Arg::Buf(0),
                Arg::Buf(1),
                Arg::Buf(2),
                Arg::F32(0.61),
                Arg::Buf(3),
                Arg::U32(rows as u32),
                Arg::U32(words as u32),
            ],
        )],
        check: Box::new(move |b| same(&to_f32(&b[3]), &want, 0.0)),
    }
}

/// A GEMM case: `kernel` over the packed rows `w` (`rows` rows of `words` units) times the
/// quantized activation rows `q`, scale 1.3, exact.
fn gemm_case(
    kernel: &'static str,
    w: Vec<u8>,
    q: &[i8],
    acts: &[ActScale],
    rows: usize,
    words: usize,
    want: Vec<f32>,
) -> Case {
    let n = acts.len();
    Case {
        name: kernel,
        buffers: vec![w, i8_bytes(q), act_bytes(acts), vec![0; n * rows * 4]],
        steps: vec![(
            kernel,
            [
                groups(rows, gpu::GEMM_TILE.0),
                groups(n, gpu::GEMM_TILE.1),
                1,
            ],
            vec![
                Arg::Buf(0),
                Arg::Buf(1),
                Arg::Buf(2),
                Arg::F32(1.3),
                Arg::Buf(3),
                Arg::U32(rows as u32),
                Arg::U32(n as u32),
                Arg::U32(words as u32),
            ],
        )],
        check: Box::new(move |b| same(&to_f32(&b[3]), &want, 0.0)),
    }
}

/// Work-groups covering `n` items at `per` each.
fn groups(n: usize, per: u32) -> u32 {
    (n as u32).div_ceil(per)
}
