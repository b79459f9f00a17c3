//! The LLaMA block with BitLinear layers (HF1BitLLM's Llama3-8B-1.58, tiiuae's Falcon3
//! 1.58-bit and Falcon-E): LLaMA's decoder layer with every projection ternary and its
//! input quantized per token to int8, and nothing else added: no sub-norms, a SiLU MLP.
//!
//! ```text
//! a = input_layernorm(h);  q,k,v = BitLinear(a);  RoPE(q,k);  h += o_proj(attn(q,k,v))
//! f = post_attention_layernorm(h);  h += down_proj(silu(gate_proj(f)) · up_proj(f))
//! ```

use super::{
    add_inplace, attend, bitlinear, gate_up, quantize_rows, silu_mul, LayerAt, Rope, RowPos,
    Scratch, Session, TreeMask,
};

pub(super) fn block(
    at: &LayerAt,
    sessions: &mut [&mut Session],
    rows: (&[RowPos], &[Option<TreeMask>]),
    rope: &Rope,
    h: &mut [f32],
    s: &mut Scratch,
) {
    let (c, layer) = (&at.model.config, at.layer);
    let (hidden, q_dim, ffn, n) = (c.hidden_size, c.q_dim(), c.intermediate_size, s.n);

    attend(at, sessions, rows, rope, h, s);
    quantize_rows(&s.attn[..n * q_dim], q_dim, &mut s.quant, &mut s.acts);
    bitlinear(s.projector, &layer.o_proj, &s.quant, &s.acts, &mut s.proj);
    add_inplace(h, &s.proj[..n * hidden]);

    gate_up(at, h, s);
    let g = &mut s.gate[..n * ffn];
    silu_mul(g, &s.up[..n * ffn]);
    quantize_rows(g, ffn, &mut s.quant, &mut s.acts);
    bitlinear(
        s.projector,
        &layer.down_proj,
        &s.quant,
        &s.acts,
        &mut s.proj,
    );
    add_inplace(h, &s.proj[..n * hidden]);
}
