//! Where everything lives in the iGPU backend's shared buffers: the model's weights
//! (uploaded once, then only read by kernels), the per-step work areas, and each
//! sequence's own buffer (KV cache, token ids in, logits and token out).

use onebit_kernels::gpu::GpuAct;
use onebit_kernels::ternary::padded_cols;

use crate::model::{Bytes, Config, Model, TernaryTensor};

/// Bump allocator of byte offsets, 256-byte aligned (a full cache line pair; the I2_S rows
/// and the dot4 loads only need 4).
#[derive(Default)]
pub(super) struct Arena {
    pub size: u64,
}

impl Arena {
    pub fn take(&mut self, bytes: usize) -> u64 {
        let at = self.size.next_multiple_of(256);
        self.size = at + bytes.max(1) as u64;
        at
    }
}

/// A ternary projection inside the weight buffer.
#[derive(Clone, Copy, Debug)]
pub(super) struct Tern {
    pub off: u64,
    pub rows: u32,
    pub cols: u32,
    pub scale: f32,
    /// Sherry 3:4 weights (the `*_sherry` kernels) rather than I2_S.
    pub sherry: bool,
}

impl Tern {
    fn place(a: &mut Arena, t: &TernaryTensor) -> Tern {
        Tern {
            off: a.take(t.byte_len()),
            rows: t.rows as u32,
            cols: t.cols as u32,
            scale: t.scale,
            sherry: t.sherry_view().is_some(),
        }
    }
    /// u32 words per packed I2_S row.
    pub fn kwords(&self) -> u32 {
        (padded_cols(self.cols as usize) / 16) as u32
    }
    /// 128-weight groups per packed Sherry row.
    pub fn groups(&self) -> u32 {
        (padded_cols(self.cols as usize) / 128) as u32
    }
}

#[derive(Clone, Copy, Debug)]
pub(super) struct LayerOffsets {
    pub input_norm: u64,
    pub q: Tern,
    pub k: Tern,
    pub v: Tern,
    pub attn_norm: u64,
    pub o: Tern,
    pub post_norm: u64,
    pub gate: Tern,
    pub up: Tern,
    pub ffn_norm: u64,
    pub down: Tern,
}

/// Offsets of the weight buffer.
pub(super) struct WeightLayout {
    pub emb: u64,
    pub layers: Vec<LayerOffsets>,
    pub norm: u64,
    pub rope: u64,
    pub size: u64,
}

impl WeightLayout {
    pub fn new(model: &Model, rope_floats: usize) -> WeightLayout {
        let mut a = Arena::default();
        let emb = a.take(model.embed_tokens.data.len());
        let f32s = |a: &mut Arena, v: &[f32]| a.take(v.len() * 4);
        let layers = model
            .layers
            .iter()
            .map(|l| LayerOffsets {
                input_norm: f32s(&mut a, &l.input_layernorm),
                q: Tern::place(&mut a, &l.q_proj),
                k: Tern::place(&mut a, &l.k_proj),
                v: Tern::place(&mut a, &l.v_proj),
                attn_norm: f32s(&mut a, &l.attn_sub_norm),
                o: Tern::place(&mut a, &l.o_proj),
                post_norm: f32s(&mut a, &l.post_attention_layernorm),
                gate: Tern::place(&mut a, &l.gate_proj),
                up: Tern::place(&mut a, &l.up_proj),
                ffn_norm: f32s(&mut a, &l.ffn_sub_norm),
                down: Tern::place(&mut a, &l.down_proj),
            })
            .collect();
        let norm = f32s(&mut a, &model.norm);
        let rope = a.take(rope_floats * 4);
        WeightLayout {
            emb,
            layers,
            norm,
            rope,
            size: a.size,
        }
    }

    /// Copies the model into `dst` (the weight buffer's bytes). With `discard_sources`, the
    /// model's file bytes are freed for good as they are copied (a sealed memfd's pages are
    /// punched out): the caller then reads the weights only from `dst`.
    pub fn write(&self, model: &Model, rope_table: &[f32], dst: &mut [u8], discard_sources: bool) {
        let put = |dst: &mut [u8], off: u64, bytes: &[u8]| {
            dst[off as usize..off as usize + bytes.len()].copy_from_slice(bytes)
        };
        let put_f32 = |dst: &mut [u8], off: u64, v: &[f32]| {
            for (i, x) in v.iter().enumerate() {
                dst[off as usize + 4 * i..off as usize + 4 * i + 4]
                    .copy_from_slice(&x.to_le_bytes());
            }
        };
        // Each file window's pages are handed back as soon as they are copied, a few MiB at a
        // time, so the upload never holds the file and the buffer in memory at once (the F16
        // head alone is 657 MB on 2B-4T). A mapped file's pages can always go (they are
        // re-read on demand); a sealed memfd's hold the only copy, so they go only when the
        // caller gives up the model's bytes (`discard_sources`).
        let copy_releasing = |dst: &mut [u8], off: u64, src: &Bytes| {
            const CHUNK: usize = 8 << 20;
            let bytes = src.as_slice();
            for start in (0..bytes.len()).step_by(CHUNK) {
                let end = (start + CHUNK).min(bytes.len());
                put(dst, off + start as u64, &bytes[start..end]);
                if discard_sources {
                    src.discard_range(start..end);
                } else {
                    src.release_range(start..end);
                }
            }
        };
        copy_releasing(dst, self.emb, &model.embed_tokens.data);
        let tern = |dst: &mut [u8], off: u64, t: &TernaryTensor| {
            if t.columns.is_none() {
                copy_releasing(dst, off, &t.data);
            } else if let Some(s) = t.sherry_view() {
                // Sherry rows stay beside their input-major copy (never parked).
                put(dst, off, s.data);
            } else {
                put(dst, off, t.view().data);
            }
        };
        for (l, o) in model.layers.iter().zip(&self.layers) {
            put_f32(dst, o.input_norm, &l.input_layernorm);
            tern(dst, o.q.off, &l.q_proj);
            tern(dst, o.k.off, &l.k_proj);
            tern(dst, o.v.off, &l.v_proj);
            put_f32(dst, o.attn_norm, &l.attn_sub_norm);
            tern(dst, o.o.off, &l.o_proj);
            put_f32(dst, o.post_norm, &l.post_attention_layernorm);
            tern(dst, o.gate.off, &l.gate_proj);
            tern(dst, o.up.off, &l.up_proj);
            put_f32(dst, o.ffn_norm, &l.ffn_sub_norm);
            tern(dst, o.down.off, &l.down_proj);
        }
        put_f32(dst, self.norm, &model.norm);
        put_f32(dst, self.rope, rope_table);
    }
}

/// Offsets of the work buffer, sized for `n` tokens per step.
pub(super) struct WorkLayout {
    pub n: usize,
    pub h: u64,
    pub normed: u64,
    pub q8: u64,
    pub acts: u64,
    pub q: u64,
    pub attn: u64,
    pub part: u64,
    pub proj: u64,
    pub gate: u64,
    pub up: u64,
    pub best: u64,
    pub size: u64,
}

/// Work-groups of the first argmax stage.
pub(super) const ARGMAX_PARTS: usize = 64;

impl WorkLayout {
    pub fn new(model: &Model, n: usize, n_splits: usize) -> WorkLayout {
        let c = &model.config;
        let wide = c.hidden_size.max(c.q_dim()).max(c.intermediate_size);
        let mut a = Arena::default();
        let f = |a: &mut Arena, count: usize| a.take(count * 4);
        WorkLayout {
            n,
            h: f(&mut a, n * c.hidden_size),
            normed: f(&mut a, n * c.hidden_size.max(c.q_dim())),
            q8: a.take(n * padded_cols(wide)),
            acts: a.take(n * std::mem::size_of::<GpuAct>()),
            q: f(&mut a, n * c.q_dim()),
            attn: f(&mut a, n * c.q_dim()),
            part: f(&mut a, n * c.n_heads * n_splits * (c.head_dim + 2)),
            proj: f(&mut a, n * c.hidden_size),
            gate: f(&mut a, n * c.intermediate_size),
            up: f(&mut a, n * c.intermediate_size),
            best: a.take(ARGMAX_PARTS * 8),
            size: a.size,
        }
    }
}

/// Offsets of one sequence's buffer: per layer the keys then the values, `[max_ctx,
/// kv_dim]` f32 each (the CPU session's layout, so the CPU can take a cache over), then the
/// ids the host writes and the logits and greedy token the GPU writes.
#[derive(Clone, Copy, Debug)]
pub(super) struct SeqLayout {
    pub max_ctx: usize,
    /// Bytes of one layer's keys (or values).
    pub cache_bytes: u64,
    pub ids: u64,
    pub logits: u64,
    pub token: u64,
    pub size: u64,
}

impl SeqLayout {
    /// A sequence of `max_ctx` tokens fed at most `n` at a time.
    pub fn new(c: &Config, max_ctx: usize, n: usize) -> SeqLayout {
        let cache_bytes = (max_ctx * c.kv_dim() * 4) as u64;
        let mut a = Arena {
            size: 2 * c.n_layers as u64 * cache_bytes,
        };
        SeqLayout {
            max_ctx,
            cache_bytes,
            ids: a.take(n * 4),
            logits: a.take(c.vocab_size * 4),
            token: a.take(4),
            size: a.size,
        }
    }

    /// Byte offsets of layer `l`'s keys and values.
    pub fn layer(&self, l: usize) -> (u64, u64) {
        let k = 2 * l as u64 * self.cache_bytes;
        (k, k + self.cache_bytes)
    }
}
