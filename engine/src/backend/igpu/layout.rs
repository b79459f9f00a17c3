//! Where everything lives in the iGPU backend's shared buffers: the model's weights
//! (uploaded once, then only read by kernels), the per-step work areas, and each
//! sequence's own buffer (KV cache, token ids in, logits and token out).

use onebit_kernels::gpu::GpuAct;
use onebit_kernels::ternary::padded_cols;

use std::sync::Arc;

use crate::model::{Bytes, Config, Model, SealedFile, TernaryTensor};

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

/// Where a large weight lies for the GPU.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum At {
    /// At this offset of the model file's own sealed memfd, exported to the GPU as it is:
    /// the CPU and the GPU read the same pages, and nothing is copied.
    File(u64),
    /// At this offset of the backend's weight buffer, copied there at upload (the model
    /// was not loaded into a memfd, or the tensor is not in the kernels' layout in it).
    Side(u64),
}

/// Places a tensor whose bytes are `data`: in the file when they are a window of `file`
/// at an offset the kernels' loads allow (4 bytes), else in the side buffer.
fn place(a: &mut Arena, file: Option<&Arc<SealedFile>>, data: Option<&Bytes>, len: usize) -> At {
    if let (
        Some(file),
        Some(Bytes::Sealed {
            file: of,
            offset,
            len: l,
        }),
    ) = (file, data)
    {
        if Arc::ptr_eq(file, of) && *l == len && offset.is_multiple_of(4) {
            return At::File(*offset as u64);
        }
    }
    At::Side(a.take(len))
}

/// A ternary projection for the GPU.
#[derive(Clone, Copy, Debug)]
pub(super) struct Tern {
    pub at: At,
    pub rows: u32,
    pub cols: u32,
    pub scale: f32,
    /// Sherry 3:4 weights (the `*_sherry` kernels) rather than I2_S.
    pub sherry: bool,
}

impl Tern {
    fn place(a: &mut Arena, file: Option<&Arc<SealedFile>>, t: &TernaryTensor) -> Tern {
        // An input-major copy (sparse down_proj) may have parked the I2_S row-major pages;
        // those bytes are then copied from its view.
        // Sherry rows are never parked, so they are read in place either way.
        let in_place = (t.columns.is_none() || t.is_sherry()).then_some(&t.data);
        Tern {
            at: place(a, file, in_place, t.byte_len()),
            rows: t.rows as u32,
            cols: t.cols as u32,
            scale: t.scale,
            sherry: t.is_sherry(),
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

/// Where the weights lie: the large tensors in the model file's memfd where it can give
/// them in place, everything else (norms, the RoPE table) at offsets of the side buffer.
pub(super) struct WeightLayout {
    pub emb: At,
    pub layers: Vec<LayerOffsets>,
    pub norm: u64,
    pub rope: u64,
    pub size: u64,
}

impl WeightLayout {
    /// `file`: the sealed memfd the model was loaded into, when the GPU can import it.
    pub fn new(model: &Model, rope_floats: usize, file: Option<&Arc<SealedFile>>) -> WeightLayout {
        let mut a = Arena::default();
        let emb_bytes = &model.embed_tokens.data;
        let emb = place(&mut a, file, Some(emb_bytes), emb_bytes.len());
        let f32s = |a: &mut Arena, v: &[f32]| a.take(v.len() * 4);
        // IgpuBackend::new admits only blocks with sub-norms.
        let sub = |v: &Option<Vec<f32>>| v.as_deref().unwrap_or_default().len();
        let layers = model
            .layers
            .iter()
            .map(|l| LayerOffsets {
                input_norm: f32s(&mut a, &l.input_layernorm),
                q: Tern::place(&mut a, file, &l.q_proj),
                k: Tern::place(&mut a, file, &l.k_proj),
                v: Tern::place(&mut a, file, &l.v_proj),
                attn_norm: a.take(sub(&l.attn_sub_norm) * 4),
                o: Tern::place(&mut a, file, &l.o_proj),
                post_norm: f32s(&mut a, &l.post_attention_layernorm),
                gate: Tern::place(&mut a, file, &l.gate_proj),
                up: Tern::place(&mut a, file, &l.up_proj),
                ffn_norm: a.take(sub(&l.ffn_sub_norm) * 4),
                down: Tern::place(&mut a, file, &l.down_proj),
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

    /// Bytes of the large tensors read in place from the model file.
    pub fn in_place_bytes(&self, model: &Model) -> usize {
        let mut n = 0;
        if matches!(self.emb, At::File(_)) {
            n += model.embed_tokens.data.len();
        }
        for (l, o) in model.layers.iter().zip(&self.layers) {
            for (t, at) in [
                (&l.q_proj, o.q),
                (&l.k_proj, o.k),
                (&l.v_proj, o.v),
                (&l.o_proj, o.o),
                (&l.gate_proj, o.gate),
                (&l.up_proj, o.up),
                (&l.down_proj, o.down),
            ] {
                if matches!(at.at, At::File(_)) {
                    n += t.byte_len();
                }
            }
        }
        n
    }

    /// Copies into `dst` (the side buffer's bytes) what the model file cannot give in
    /// place. With `discard_sources`, the source bytes of each copy are freed for good as
    /// they are copied (a sealed memfd's pages are punched out): the caller then reads
    /// those weights only from `dst`. Tensors read in place are left alone.
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
        if let At::Side(off) = self.emb {
            copy_releasing(dst, off, &model.embed_tokens.data);
        }
        let tern = |dst: &mut [u8], at: At, t: &TernaryTensor| {
            let At::Side(off) = at else {
                return;
            };
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
            tern(dst, o.q.at, &l.q_proj);
            tern(dst, o.k.at, &l.k_proj);
            tern(dst, o.v.at, &l.v_proj);
            put_f32(
                dst,
                o.attn_norm,
                l.attn_sub_norm.as_deref().unwrap_or_default(),
            );
            tern(dst, o.o.at, &l.o_proj);
            put_f32(dst, o.post_norm, &l.post_attention_layernorm);
            tern(dst, o.gate.at, &l.gate_proj);
            tern(dst, o.up.at, &l.up_proj);
            put_f32(
                dst,
                o.ffn_norm,
                l.ffn_sub_norm.as_deref().unwrap_or_default(),
            );
            tern(dst, o.down.at, &l.down_proj);
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
