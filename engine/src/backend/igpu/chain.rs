//! One forward step as a list of dispatches, and its submission.

use onebit_drv::codeobj::load::dispatch_args;
use onebit_drv::codeobj::Launch;
use onebit_drv::kfd::{Batch, DispatchArgs, FenceScope};
use onebit_kernels::gpu::{self, GEMM_TILE, GEMV_ROWS_PER_GROUP, LM_HEAD_ROWS_PER_GROUP};
use onebit_kernels::ternary::padded_cols;

use super::layout::{SeqLayout, Tern, ARGMAX_PARTS};
use super::{IgpuBackend, IgpuError, OpTime, Result};

/// A recorded dispatch.
pub(super) struct Op {
    pub name: &'static str,
    pub args: DispatchArgs,
}

/// Upper bound of dispatches in one step (sizes the ring and the kernarg arena).
pub(super) fn ops_per_step(n_layers: usize) -> usize {
    1 + n_layers * 22 + 4
}

struct Recorder<'a> {
    be: &'a mut IgpuBackend,
    ops: Vec<Op>,
}

impl Recorder<'_> {
    fn op(&mut self, name: &'static str, groups: [u32; 3], args: &[u64]) -> Result<()> {
        let spec = gpu::spec(name)
            .ok_or_else(|| IgpuError::Model(format!("kernel `{name}` has no spec")))?;
        let (kernel, object) = self.be.program.kernel(name)?;
        let launch = Launch::groups(groups, [spec.workgroup as u16, 1, 1]);
        let va = self.be.kernargs.push(kernel, args, &launch)?;
        self.ops.push(Op {
            name,
            args: dispatch_args(kernel, object, va, &launch),
        });
        Ok(())
    }

    /// BitLinear on quantized rows already in `q8`/`acts`: GEMV for one token, GEMM else.
    fn project(&mut self, t: Tern, n: usize, out: u64) -> Result<()> {
        let w = self.be.weights.gpu_va() + t.off;
        let (q8, acts) = (
            self.be.work.gpu_va() + self.be.wk.q8,
            self.be.work.gpu_va() + self.be.wk.acts,
        );
        let scale = u64::from(t.scale.to_bits());
        if n == 1 {
            let groups = t.rows.div_ceil(GEMV_ROWS_PER_GROUP);
            self.op(
                "gemv_i2s",
                [groups, 1, 1],
                &[w, q8, acts, scale, out, t.rows.into(), t.kwords().into()],
            )
        } else {
            let groups = [
                t.rows.div_ceil(GEMM_TILE.0),
                (n as u32).div_ceil(GEMM_TILE.1),
                1,
            ];
            self.op(
                "gemm_i2s",
                groups,
                &[
                    w,
                    q8,
                    acts,
                    scale,
                    out,
                    t.rows.into(),
                    n as u64,
                    t.kwords().into(),
                ],
            )
        }
    }

    fn norm(&mut self, x: u64, weight: u64, out: u64, rows: usize, width: usize) -> Result<()> {
        let eps = u64::from(self.be.cfg.rms_norm_eps.to_bits());
        self.op(
            "rms_norm",
            [rows as u32, 1, 1],
            &[x, weight, out, width as u64, eps],
        )
    }

    fn quant(&mut self, x: u64, rows: usize, cols: usize) -> Result<()> {
        let (q8, acts) = (
            self.be.work.gpu_va() + self.be.wk.q8,
            self.be.work.gpu_va() + self.be.wk.acts,
        );
        self.op(
            "act_quant",
            [rows as u32, 1, 1],
            &[x, q8, acts, cols as u64, padded_cols(cols) as u64],
        )
    }

    fn elementwise(&mut self, name: &'static str, a: u64, b: u64, n: usize) -> Result<()> {
        let groups = n.div_ceil(gpu::ELEMENTWISE_GROUP as usize).clamp(1, 1024) as u32;
        self.op(name, [groups, 1, 1], &[a, b, n as u64])
    }
}

/// Where a sequence's buffer sits for the GPU.
pub(super) struct SeqAddrs {
    pub base: u64,
    pub layout: SeqLayout,
}

/// Records the dispatches of `n` new tokens (already in the sequence's id area) at
/// position `pos0` of the sequence `seq`.
pub(super) fn build(
    be: &mut IgpuBackend,
    seq: &SeqAddrs,
    pos0: usize,
    n: usize,
    with_head: bool,
) -> Result<Vec<Op>> {
    let c = be.cfg.clone();
    let (hidden, q_dim, kv_dim, hd, ffn) = (
        c.hidden_size,
        c.q_dim(),
        c.kv_dim(),
        c.head_dim,
        c.intermediate_size,
    );
    let (wb, wkb) = (be.weights.gpu_va(), be.work.gpu_va());
    let wk = |off: u64| wkb + off;
    let (h, normed, q, attn, part, proj) = (
        wk(be.wk.h),
        wk(be.wk.normed),
        wk(be.wk.q),
        wk(be.wk.attn),
        wk(be.wk.part),
        wk(be.wk.proj),
    );
    let (gate, up) = (wk(be.wk.gate), wk(be.wk.up));
    let rope = wb + be.wl.rope;
    let layers = be.wl.layers.clone();
    let n_splits = gpu::attn_splits(pos0 + n, be.split_len) as u32;
    let split_len = be.split_len as u64;
    let scale = u64::from((1.0 / (hd as f32).sqrt()).to_bits());
    let rope_groups = |heads: usize| (heads * hd / 2).div_ceil(256) as u32;
    let emb = wb + be.wl.emb;
    let norm = wb + be.wl.norm;
    let (logits, best, ids, token) = (
        seq.base + seq.layout.logits,
        wk(be.wk.best),
        seq.base + seq.layout.ids,
        seq.base + seq.layout.token,
    );

    let (embed_kernel, head_kernel) = be.embed_kernels;
    let mut r = Recorder {
        be,
        ops: Vec::new(),
    };
    r.op(
        embed_kernel,
        [hidden.div_ceil(256) as u32, n as u32, 1],
        &[emb, ids, h, hidden as u64],
    )?;
    for (li, l) in layers.iter().enumerate() {
        let (k_off, v_off) = seq.layout.layer(li);
        let (kc, vc) = (seq.base + k_off, seq.base + v_off);
        let slot = (pos0 * kv_dim * 4) as u64;
        r.norm(h, wb + l.input_norm, normed, n, hidden)?;
        r.quant(normed, n, hidden)?;
        r.project(l.q, n, q)?;
        r.project(l.k, n, kc + slot)?;
        r.project(l.v, n, vc + slot)?;
        r.op(
            "rope",
            [rope_groups(c.n_heads), n as u32, 1],
            &[q, rope, pos0 as u64, c.n_heads as u64, hd as u64],
        )?;
        r.op(
            "rope",
            [rope_groups(c.n_kv_heads), n as u32, 1],
            &[kc + slot, rope, pos0 as u64, c.n_kv_heads as u64, hd as u64],
        )?;
        r.op(
            "attn_split",
            [c.n_heads as u32, n_splits, n as u32],
            &[
                q,
                kc,
                vc,
                part,
                c.n_heads as u64,
                c.n_kv_heads as u64,
                hd as u64,
                pos0 as u64,
                split_len,
                scale,
            ],
        )?;
        r.op(
            "attn_combine",
            [c.n_heads as u32, n as u32, 1],
            &[part, attn, c.n_heads as u64, hd as u64, n_splits.into()],
        )?;
        r.norm(attn, wb + l.attn_norm, attn, n, q_dim)?;
        r.quant(attn, n, q_dim)?;
        r.project(l.o, n, proj)?;
        r.elementwise("add", h, proj, n * hidden)?;
        r.norm(h, wb + l.post_norm, normed, n, hidden)?;
        r.quant(normed, n, hidden)?;
        r.project(l.gate, n, gate)?;
        r.project(l.up, n, up)?;
        r.elementwise("relu2_mul", gate, up, n * ffn)?;
        r.norm(gate, wb + l.ffn_norm, gate, n, ffn)?;
        r.quant(gate, n, ffn)?;
        r.project(l.down, n, proj)?;
        r.elementwise("add", h, proj, n * hidden)?;
    }
    if with_head {
        let last = h + ((n - 1) * hidden * 4) as u64;
        r.norm(last, norm, normed, 1, hidden)?;
        let rows = c.vocab_size as u32;
        r.op(
            head_kernel,
            [rows.div_ceil(LM_HEAD_ROWS_PER_GROUP), 1, 1],
            &[emb, normed, logits, rows.into(), hidden as u64],
        )?;
        r.op(
            "argmax_partial",
            [ARGMAX_PARTS as u32, 1, 1],
            &[logits, best, rows.into()],
        )?;
        r.op(
            "argmax_final",
            [1, 1, 1],
            &[best, token, ARGMAX_PARTS as u64],
        )?;
    }
    let mut ops = r.ops;
    // The CPU wrote ids and kernargs before: the first op acquires at system scope; the CPU
    // reads logits and the token after: the last op releases at system scope.
    if let Some(first) = ops.first_mut() {
        first.args.acquire = FenceScope::System;
    }
    if let Some(last) = ops.last_mut() {
        last.args.release = FenceScope::System;
    }
    Ok(ops)
}

/// Submits a step: one batch with one completion signal, or (profile) one signal per op,
/// all queued before the first wait.
pub(super) fn submit(be: &mut IgpuBackend, ops: &[Op]) -> Result<()> {
    if be.profile {
        let mut pending = Vec::with_capacity(ops.len());
        for op in ops {
            // each op signals the host, which may write before the next: system scope
            let a = DispatchArgs {
                acquire: FenceScope::System,
                release: FenceScope::System,
                ..op.args
            };
            pending.push((op.name, be.queue.dispatch(&a)?));
        }
        for (name, done) in pending {
            done.wait(be.timeout)?;
            let (start, end) = done.timestamps();
            be.last_profile.push(OpTime {
                name,
                ticks: end.saturating_sub(start),
            });
        }
        return Ok(());
    }
    let mut batch = Batch::new();
    for op in ops {
        batch = batch.dispatch(&op.args)?;
    }
    be.queue.submit(batch)?.wait(be.timeout)?;
    Ok(())
}
