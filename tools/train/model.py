"""BitNet b1.58 (the bitnet-b1.58-2B-4T graph) at toy size, for quantization-aware training.

Every projection is a BitLinear: per-token absmax int8 activations and absmean ternary weights,
both with a straight-through estimator. The forward value is computed as the integer product
(int8 activations x ternary codes, exact in bf16 inputs with f32 accumulation) times
gamma / s, so training sees the same numbers inference computes.
"""

from dataclasses import asdict, dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F


@dataclass
class Config:
    vocab_size: int = 4096
    hidden_size: int = 384
    intermediate_size: int = 1024
    num_hidden_layers: int = 8
    num_attention_heads: int = 6
    num_key_value_heads: int = 2
    head_dim: int = 64
    max_position_embeddings: int = 1024
    rope_theta: float = 500000.0
    rms_norm_eps: float = 1e-5
    dropout: float = 0.0
    init_std: float = 0.02

    def to_dict(self):
        return asdict(self)


def act_quant_int(x):
    """Per-token absmax int8: returns (integer-valued x*s with STE, s)."""
    x = x.float()
    s = 127.0 / x.abs().amax(dim=-1, keepdim=True).clamp(min=1e-5)
    s = s.detach()
    xs = x * s
    q = xs.round().clamp(-128, 127)  # torch.round: half to even, as the reference
    return xs + (q - xs).detach(), s


def weight_quant_ternary(w):
    """Absmean ternary: returns (ternary-valued w/gamma with STE, gamma)."""
    gamma = w.abs().mean().clamp(min=1e-5).detach()
    wg = w / gamma
    t = wg.round().clamp(-1, 1)
    return wg + (t - wg).detach(), gamma


def sherry_mask(w):
    """3:4 sparsity: per block of four consecutive input weights, False at the one with the
    smallest magnitude (the one whose zeroing moves the weights least), True elsewhere."""
    out, inp = w.shape
    blocks = w.detach().abs().view(out, inp // 4, 4)
    smallest = blocks.argmin(dim=-1, keepdim=True)
    return torch.ones_like(blocks, dtype=torch.bool).scatter_(-1, smallest, False).view(out, inp)


def weight_quant_sherry(w, anneal=1.0):
    """3:4 sparse ternary (Sherry): returns (w/gamma with STE to the quantized value, gamma).

    Hard form (anneal = 1): per block of four the smallest-magnitude weight is 0 and the other
    three are sign(w); gamma is the mean magnitude of the kept weights (the L2-optimal scale
    for that sign pattern). While anneal < 1 the forward value is the blend
    anneal * sherry + (1 - anneal) * dense absmean ternary, in sherry's units: the dense path
    is a residual that fades out, so early on the weights that the 3:4 mask zeroes still shape
    the loss and can grow past a neighbour and swap places, instead of being trapped at zero
    by a mask fixed too early. The gradient reaches every latent weight (STE) throughout.
    """
    mask = sherry_mask(w)
    gamma = (w.abs() * mask).sum().div(mask.sum()).clamp(min=1e-5).detach()
    wg = w / gamma
    t = torch.sign(wg) * mask
    if anneal < 1.0:
        dense, gamma_d = weight_quant_ternary(w)
        t = anneal * t + (1.0 - anneal) * dense.detach() * (gamma_d / gamma)
    return wg + (t - wg).detach(), gamma


class BitLinear(nn.Module):
    def __init__(self, in_features, out_features, std):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(out_features, in_features))
        nn.init.normal_(self.weight, std=std)
        # None: dense ternary (BitNet b1.58); a float in [0, 1]: Sherry 3:4 with that anneal.
        self.sherry = None

    def forward(self, x):
        xq, s = act_quant_int(x)
        if self.sherry is None:
            wt, gamma = weight_quant_ternary(self.weight)
        else:
            wt, gamma = weight_quant_sherry(self.weight, self.sherry)
        dt = torch.bfloat16 if x.is_cuda else torch.float32
        y = F.linear(xq.to(dt), wt.to(dt)).float()
        return y * (gamma / s)


class RMSNorm(nn.Module):
    def __init__(self, dim, eps):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x):
        x = x.float()
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


def rope_tables(cfg, n, device):
    inv_freq = 1.0 / (cfg.rope_theta ** (torch.arange(0, cfg.head_dim, 2, dtype=torch.float32, device=device) / cfg.head_dim))
    freqs = torch.outer(torch.arange(n, dtype=torch.float32, device=device), inv_freq)
    emb = torch.cat([freqs, freqs], dim=-1)
    return emb.cos(), emb.sin()


def rotate_half(x):
    h = x.shape[-1] // 2
    return torch.cat([-x[..., h:], x[..., :h]], dim=-1)


def apply_rope(x, cos, sin):
    return x * cos + rotate_half(x) * sin


class Attention(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.cfg = cfg
        d, hd = cfg.hidden_size, cfg.head_dim
        self.q_proj = BitLinear(d, cfg.num_attention_heads * hd, cfg.init_std)
        self.k_proj = BitLinear(d, cfg.num_key_value_heads * hd, cfg.init_std)
        self.v_proj = BitLinear(d, cfg.num_key_value_heads * hd, cfg.init_std)
        self.o_proj = BitLinear(cfg.num_attention_heads * hd, d, cfg.init_std)
        self.attn_sub_norm = RMSNorm(cfg.num_attention_heads * hd, cfg.rms_norm_eps)

    def forward(self, x, cos, sin):
        b, t, _ = x.shape
        c = self.cfg
        q = self.q_proj(x).view(b, t, c.num_attention_heads, c.head_dim).transpose(1, 2)
        k = self.k_proj(x).view(b, t, c.num_key_value_heads, c.head_dim).transpose(1, 2)
        v = self.v_proj(x).view(b, t, c.num_key_value_heads, c.head_dim).transpose(1, 2)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        g = c.num_attention_heads // c.num_key_value_heads
        k, v = k.repeat_interleave(g, dim=1), v.repeat_interleave(g, dim=1)
        dt = torch.bfloat16 if x.is_cuda else torch.float32
        o = F.scaled_dot_product_attention(q.to(dt), k.to(dt), v.to(dt), is_causal=True).float()
        o = o.transpose(1, 2).reshape(b, t, c.num_attention_heads * c.head_dim)
        return self.o_proj(self.attn_sub_norm(o))


class MLP(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        d, f = cfg.hidden_size, cfg.intermediate_size
        self.gate_proj = BitLinear(d, f, cfg.init_std)
        self.up_proj = BitLinear(d, f, cfg.init_std)
        self.down_proj = BitLinear(f, d, cfg.init_std)
        self.ffn_sub_norm = RMSNorm(f, cfg.rms_norm_eps)

    def forward(self, x):
        # gate and up share one quantized input, like the inference engines do.
        g = F.relu(self.gate_proj(x)).square() * self.up_proj(x)
        return self.down_proj(self.ffn_sub_norm(g))


class Layer(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.input_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.self_attn = Attention(cfg)
        self.post_attention_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.mlp = MLP(cfg)
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, h, cos, sin):
        h = h + self.drop(self.self_attn(self.input_layernorm(h), cos, sin))
        return h + self.drop(self.mlp(self.post_attention_layernorm(h)))


class BitNet(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.cfg = cfg
        self.embed_tokens = nn.Embedding(cfg.vocab_size, cfg.hidden_size)
        nn.init.normal_(self.embed_tokens.weight, std=cfg.init_std)
        self.layers = nn.ModuleList(Layer(cfg) for _ in range(cfg.num_hidden_layers))
        self.norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)

    def forward(self, ids):
        t = ids.shape[1]
        cos, sin = rope_tables(self.cfg, t, ids.device)
        h = self.embed_tokens(ids).float()
        for layer in self.layers:
            h = layer(h, cos, sin)
        h = self.norm(h)
        # Tied embeddings: the LM head is the embedding matrix.
        return F.linear(h, self.embed_tokens.weight.float())

    def set_sherry(self, anneal):
        """Every projection to Sherry 3:4 with this anneal (None: back to dense ternary)."""
        for m in self.modules():
            if isinstance(m, BitLinear):
                m.sherry = anneal

    def hf_state(self):
        """Parameters under their Hugging Face names (`model.` prefix, no lm_head: tied)."""
        return {f"model.{k}": v for k, v in self.state_dict().items()}
