//! The tensor set every format must provide, with its names in each format and the shape
//! the configuration implies; loaders fetch tensors through [`Source`] and get a
//! [`Layer`] list back, so shape checks live in one place.

use crate::model::{Config, Layer, TernaryTensor};
use crate::Result;

/// A tensor's names in each format.
#[derive(Clone, Debug)]
pub struct Names {
    pub gguf: String,
    pub hf: String,
}

/// Per-layer tensors in `Layer` field order: (gguf suffix, HF suffix).
pub const LAYER_NAMES: [(&str, &str); 11] = [
    ("attn_norm", "input_layernorm"),
    ("attn_q", "self_attn.q_proj"),
    ("attn_k", "self_attn.k_proj"),
    ("attn_v", "self_attn.v_proj"),
    ("attn_sub_norm", "self_attn.attn_sub_norm"),
    ("attn_output", "self_attn.o_proj"),
    ("ffn_norm", "post_attention_layernorm"),
    ("ffn_gate", "mlp.gate_proj"),
    ("ffn_up", "mlp.up_proj"),
    ("ffn_sub_norm", "mlp.ffn_sub_norm"),
    ("ffn_down", "mlp.down_proj"),
];

pub const GGUF_EMBD: &str = "token_embd.weight";
pub const GGUF_NORM: &str = "output_norm.weight";
pub const GGUF_OUTPUT: &str = "output.weight";
pub const HF_EMBD: &str = "model.embed_tokens.weight";
pub const HF_NORM: &str = "model.norm.weight";
pub const HF_HEAD: &str = "lm_head.weight";

/// Older HF spellings of the sub-norms: 1bitLLM's `BitnetForCausalLM` checkpoints name
/// them `inner_attn_ln` and `ffn_layernorm` (as gguf-py's tensor map does).
pub const HF_ALIASES: [(&str, &str); 2] = [
    (
        "self_attn.attn_sub_norm.weight",
        "self_attn.inner_attn_ln.weight",
    ),
    ("mlp.ffn_sub_norm.weight", "mlp.ffn_layernorm.weight"),
];

/// `name` in its older spelling, if it has one.
pub fn hf_alias(name: &str) -> Option<String> {
    HF_ALIASES
        .iter()
        .find(|(new, _)| name.ends_with(new))
        .map(|(new, old)| format!("{}{old}", &name[..name.len() - new.len()]))
}

/// Names of tensor `k` (index into [`LAYER_NAMES`]) of layer `i`.
pub fn names(i: usize, k: usize) -> Names {
    let (g, h) = LAYER_NAMES[k];
    Names {
        gguf: format!("blk.{i}.{g}.weight"),
        hf: format!("model.layers.{i}.{h}.weight"),
    }
}

/// A format's way of producing tensors; `len`/`rows`/`cols` are what the config requires.
pub trait Source {
    fn norm(&mut self, names: &Names, len: usize) -> Result<Vec<f32>>;
    fn ternary(&mut self, names: &Names, rows: usize, cols: usize) -> Result<TernaryTensor>;
}

/// Loads every layer through `src`, checking each tensor against the shapes `c` implies;
/// the sub-norms only where the block has them.
pub fn build_layers(c: &Config, src: &mut impl Source) -> Result<Vec<Layer>> {
    let (h, q, kv, f) = (c.hidden_size, c.q_dim(), c.kv_dim(), c.intermediate_size);
    let sub = c.block.has_sub_norms();
    (0..c.n_layers)
        .map(|i| {
            // Fetched in field order, so that the first bad tensor is the one reported.
            Ok(Layer {
                input_layernorm: src.norm(&names(i, 0), h)?,
                q_proj: src.ternary(&names(i, 1), q, h)?,
                k_proj: src.ternary(&names(i, 2), kv, h)?,
                v_proj: src.ternary(&names(i, 3), kv, h)?,
                attn_sub_norm: sub.then(|| src.norm(&names(i, 4), q)).transpose()?,
                o_proj: src.ternary(&names(i, 5), h, q)?,
                post_attention_layernorm: src.norm(&names(i, 6), h)?,
                gate_proj: src.ternary(&names(i, 7), f, h)?,
                up_proj: src.ternary(&names(i, 8), f, h)?,
                ffn_sub_norm: sub.then(|| src.norm(&names(i, 9), f)).transpose()?,
                down_proj: src.ternary(&names(i, 10), h, f)?,
            })
        })
        .collect()
}

/// A layer's tensors in [`LAYER_NAMES`] order, for writers.
pub enum LayerTensor<'a> {
    Norm(&'a [f32]),
    Ternary(&'a TernaryTensor),
    /// A sub-norm the block does not have.
    Absent,
}

pub fn layer_tensors(l: &Layer) -> [LayerTensor<'_>; 11] {
    use LayerTensor::{Absent, Norm, Ternary};
    fn optional(v: &Option<Vec<f32>>) -> LayerTensor<'_> {
        v.as_deref().map_or(Absent, Norm)
    }
    [
        Norm(&l.input_layernorm),
        Ternary(&l.q_proj),
        Ternary(&l.k_proj),
        Ternary(&l.v_proj),
        optional(&l.attn_sub_norm),
        Ternary(&l.o_proj),
        Norm(&l.post_attention_layernorm),
        Ternary(&l.gate_proj),
        Ternary(&l.up_proj),
        optional(&l.ffn_sub_norm),
        Ternary(&l.down_proj),
    ]
}
