//! One forward step as a list of dispatches, and its submission.

use onebit_drv::codeobj::load::dispatch_args;
use onebit_drv::codeobj::Launch;
use onebit_drv::kfd::{Batch, Completion, DispatchArgs, FenceScope, COMPLETION_SIGNALS};
use onebit_kernels::gpu::{
    self, GpuAct, GEMM_TILE, GEMV_ROWS_PER_GROUP, LM_HEAD_BATCH, LM_HEAD_ROWS_PER_GROUP,
};
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

    /// BitLinear on `n` quantized rows already in `q8`/`acts`: GEMV for one token, GEMM
    /// else.
    fn project(&mut self, t: Tern, n: usize, out: u64) -> Result<()> {
        self.project_rows(t, 0, n, out)
    }

    /// [`project`](Self::project) on the quantized rows `row0..row0 + n`.
    fn project_rows(&mut self, t: Tern, row0: usize, n: usize, out: u64) -> Result<()> {
        let w = self.be.weight_va(t.at);
        let (q8, acts) = (
            self.be.work.gpu_va() + self.be.wk.q8 + (row0 * padded_cols(t.cols as usize)) as u64,
            self.be.work.gpu_va() + self.be.wk.acts + (row0 * size_of::<GpuAct>()) as u64,
        );
        let scale = u64::from(t.scale.to_bits());
        // Both formats take the same arguments but the last: I2_S words or Sherry groups.
        let (gemv, gemm, k) = if t.sherry {
            ("gemv_sherry", "gemm_sherry", t.groups())
        } else {
            ("gemv_i2s", "gemm_i2s", t.kwords())
        };
        if n == 1 {
            let groups = t.rows.div_ceil(GEMV_ROWS_PER_GROUP);
            self.op(
                gemv,
                [groups, 1, 1],
                &[w, q8, acts, scale, out, t.rows.into(), k.into()],
            )
        } else {
            let groups = [
                t.rows.div_ceil(GEMM_TILE.0),
                (n as u32).div_ceil(GEMM_TILE.1),
                1,
            ];
            self.op(
                gemm,
                groups,
                &[w, q8, acts, scale, out, t.rows.into(), n as u64, k.into()],
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

/// One sequence's share of a step: `n` new tokens (already in its id area) at position
/// `pos0`; with `head`, the logits of the last one and their argmax are left in its buffer.
pub(super) struct Part {
    pub seq: SeqAddrs,
    pub pos0: usize,
    pub n: usize,
    pub head: bool,
}

/// Records the dispatches of one step over `parts`, whose rows are stacked in the work
/// buffer (at most its `n` in all). Every projection but k and v runs once over all rows,
/// so a step of several decoding sequences reads those weights once; each part's keys and
/// values go straight into its own cache, and rope and attention run per part, at its
/// own position.
pub(super) fn build(be: &mut IgpuBackend, parts: &[Part]) -> Result<Vec<Op>> {
    let c = be.cfg.clone();
    let (hidden, q_dim, kv_dim, hd, ffn) = (
        c.hidden_size,
        c.q_dim(),
        c.kv_dim(),
        c.head_dim,
        c.intermediate_size,
    );
    let n: usize = parts.iter().map(|p| p.n).sum();
    if n == 0 || n > be.wk.n {
        return Err(IgpuError::Input(format!(
            "a step of {n} rows does not fit the work buffer's {}",
            be.wk.n
        )));
    }
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
    let split_len = be.split_len;
    let scale = u64::from((1.0 / (hd as f32).sqrt()).to_bits());
    let rope_groups = |heads: usize| (heads * hd / 2).div_ceil(256) as u32;
    let emb = be.weight_va(be.wl.emb);
    let norm = wb + be.wl.norm;
    let best = wk(be.wk.best);
    // The first work-buffer row of each part.
    let row0: Vec<usize> = parts
        .iter()
        .scan(0, |r, p| {
            let at = *r;
            *r += p.n;
            Some(at)
        })
        .collect();
    let row = |base: u64, r: usize, width: usize| base + (r * width * 4) as u64;

    let (embed_kernel, head_kernel, head_x8_kernel) = be.embed_kernels;
    let mut r = Recorder {
        be,
        ops: Vec::new(),
    };
    for (p, &r0) in parts.iter().zip(&row0) {
        r.op(
            embed_kernel,
            [hidden.div_ceil(256) as u32, p.n as u32, 1],
            &[
                emb,
                p.seq.base + p.seq.layout.ids,
                row(h, r0, hidden),
                hidden as u64,
            ],
        )?;
    }
    for (li, l) in layers.iter().enumerate() {
        r.norm(h, wb + l.input_norm, normed, n, hidden)?;
        r.quant(normed, n, hidden)?;
        r.project(l.q, n, q)?;
        for (p, &r0) in parts.iter().zip(&row0) {
            let (k_off, v_off) = p.seq.layout.layer(li);
            let (kc, vc) = (p.seq.base + k_off, p.seq.base + v_off);
            let slot = (p.pos0 * kv_dim * 4) as u64;
            let (pos0, qp) = (p.pos0 as u64, row(q, r0, q_dim));
            let n_splits = gpu::attn_splits(p.pos0 + p.n, split_len) as u32;
            r.project_rows(l.k, r0, p.n, kc + slot)?;
            r.project_rows(l.v, r0, p.n, vc + slot)?;
            r.op(
                "rope",
                [rope_groups(c.n_heads), p.n as u32, 1],
                &[qp, rope, pos0, c.n_heads as u64, hd as u64],
            )?;
            r.op(
                "rope",
                [rope_groups(c.n_kv_heads), p.n as u32, 1],
                &[kc + slot, rope, pos0, c.n_kv_heads as u64, hd as u64],
            )?;
            // `part` is reused by every part: the barrier bit orders each combine before
            // the next split.
            r.op(
                "attn_split",
                [c.n_heads as u32, n_splits, p.n as u32],
                &[
                    qp,
                    kc,
                    vc,
                    part,
                    c.n_heads as u64,
                    c.n_kv_heads as u64,
                    hd as u64,
                    pos0,
                    split_len as u64,
                    scale,
                ],
            )?;
            r.op(
                "attn_combine",
                [c.n_heads as u32, p.n as u32, 1],
                &[
                    part,
                    row(attn, r0, q_dim),
                    c.n_heads as u64,
                    hd as u64,
                    n_splits.into(),
                ],
            )?;
        }
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
    // The head: the final norm of each part's last row into `normed`, then one pass over
    // the embedding for up to LM_HEAD_BATCH of them, then each part's argmax.
    let heads: Vec<(usize, &Part)> = row0
        .iter()
        .zip(parts)
        .filter(|(_, p)| p.head)
        .map(|(&r0, p)| (r0 + p.n - 1, p))
        .collect();
    let rows = c.vocab_size as u32;
    let head_groups = [rows.div_ceil(LM_HEAD_ROWS_PER_GROUP), 1, 1];
    for batch in heads.chunks(LM_HEAD_BATCH) {
        for (j, &(last, _)) in batch.iter().enumerate() {
            r.norm(
                row(h, last, hidden),
                norm,
                row(normed, j, hidden),
                1,
                hidden,
            )?;
        }
        let logits = |p: &Part| p.seq.base + p.seq.layout.logits;
        if let [(_, p)] = batch {
            r.op(
                head_kernel,
                head_groups,
                &[emb, normed, logits(p), rows.into(), hidden as u64],
            )?;
        } else {
            let mut args = vec![emb, normed, rows.into(), hidden as u64, batch.len() as u64];
            args.extend(batch.iter().map(|(_, p)| logits(p)));
            // Unused outputs are never written; they repeat a real buffer so that every
            // pointer argument names mapped memory.
            args.resize(5 + LM_HEAD_BATCH, logits(batch[0].1));
            r.op(head_x8_kernel, head_groups, &args)?;
        }
        for &(_, p) in batch {
            let token = p.seq.base + p.seq.layout.token;
            r.op(
                "argmax_partial",
                [ARGMAX_PARTS as u32, 1, 1],
                &[logits(p), best, rows.into()],
            )?;
            r.op(
                "argmax_final",
                [1, 1, 1],
                &[best, token, ARGMAX_PARTS as u64],
            )?;
        }
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
        let mut pending = std::collections::VecDeque::with_capacity(ops.len());
        let finish = |be: &mut IgpuBackend, (name, done): (&'static str, Completion)| {
            done.wait(be.timeout)?;
            let (start, end) = done.timestamps();
            be.last_profile.push(OpTime {
                name,
                ticks: end.saturating_sub(start),
            });
            Ok::<(), IgpuError>(())
        };
        for op in ops {
            // A queue has a fixed number of completion signals: past that, the oldest op
            // is waited for before the next goes out.
            if pending.len() == COMPLETION_SIGNALS as usize {
                if let Some(p) = pending.pop_front() {
                    finish(be, p)?;
                }
            }
            // each op signals the host, which may write before the next: system scope
            let a = DispatchArgs {
                acquire: FenceScope::System,
                release: FenceScope::System,
                ..op.args
            };
            pending.push_back((op.name, be.queue.dispatch(&a)?));
        }
        for p in pending {
            finish(be, p)?;
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
