"""Export a trained BitNet to the Hugging Face packed layout of microsoft/bitnet-b1.58-2B-4T.

Projections: uint8 [out/4, in], code = w + 1, bits 2i..2i+1 of packed row r hold output row
r + i*out/4, plus a one-element bf16 `weight_scale` (effective weight = ternary * weight_scale).
Embedding and norms: bf16. The embedding is rounded so that every value is also exact in f16,
so a GGUF with an F16 token_embd holds exactly the same numbers.
"""

import json
import os
import shutil

import torch
from safetensors.torch import save_file

PROJ_SUFFIXES = ("q_proj.weight", "k_proj.weight", "v_proj.weight", "o_proj.weight",
                 "gate_proj.weight", "up_proj.weight", "down_proj.weight")


def ternarize(w):
    """(ternary codes -1/0/1 as int8, bf16 scale) exactly as the exported file stores them."""
    gamma = w.float().abs().mean().clamp(min=1e-5).to(torch.bfloat16)
    t = (w.float() / gamma.float()).round().clamp(-1, 1).to(torch.int8)
    return t, gamma


def ternarize_sherry(w):
    """The same for 3:4 sparse ternary (model.weight_quant_sherry's hard form)."""
    from model import sherry_mask

    mask = sherry_mask(w.float())
    gamma = ((w.float().abs() * mask).sum() / mask.sum()).clamp(min=1e-5).to(torch.bfloat16)
    t = (torch.sign(w.float()) * mask).to(torch.int8)
    return t, gamma


def pack_rows(t):
    out = t.shape[0]
    if out % 4:
        raise ValueError(f"output dim {out} is not a multiple of 4")
    codes = (t.to(torch.int16) + 1).to(torch.uint8)
    r = out // 4
    return codes[:r] | (codes[r:2 * r] << 2) | (codes[2 * r:3 * r] << 4) | (codes[3 * r:] << 6)


def unpack_rows(packed):
    parts = [((packed >> (2 * i)) & 3).to(torch.int8) - 1 for i in range(4)]
    return torch.cat(parts, dim=0)


def both_half_exact(x):
    """Round to bf16, then to values exact in both bf16 and f16."""
    return x.float().to(torch.bfloat16).to(torch.float16).to(torch.bfloat16)


def hf_config(cfg, bos=0, eos=1):
    return {
        "architectures": ["BitNetForCausalLM"],
        "model_type": "bitnet",
        "hidden_act": "relu2",
        "hidden_size": cfg.hidden_size,
        "intermediate_size": cfg.intermediate_size,
        "num_hidden_layers": cfg.num_hidden_layers,
        "num_attention_heads": cfg.num_attention_heads,
        "num_key_value_heads": cfg.num_key_value_heads,
        "head_dim": cfg.head_dim,
        "vocab_size": cfg.vocab_size,
        "max_position_embeddings": cfg.max_position_embeddings,
        "rms_norm_eps": cfg.rms_norm_eps,
        "rope_theta": cfg.rope_theta,
        "tie_word_embeddings": True,
        "bos_token_id": bos,
        "eos_token_id": eos,
        "torch_dtype": "bfloat16",
        "attention_bias": False,
        "initializer_range": cfg.init_std,
        "quantization_config": {
            "quant_method": "bitnet",
            "linear_class": "autobitlinear",
            "quantization_mode": "offline",
        },
    }


def export(model, tokenizer_json, out_dir, sherry=False):
    os.makedirs(out_dir, exist_ok=True)
    tensors = {}
    for name, w in model.hf_state().items():
        w = w.detach().cpu()
        if name.endswith(PROJ_SUFFIXES):
            t, gamma = ternarize_sherry(w) if sherry else ternarize(w)
            tensors[name] = pack_rows(t).contiguous()
            tensors[name + "_scale"] = gamma.reshape(1)
        elif name.endswith("embed_tokens.weight"):
            tensors[name] = both_half_exact(w).contiguous()
        else:
            tensors[name] = w.float().to(torch.bfloat16).contiguous()
    save_file(tensors, os.path.join(out_dir, "model.safetensors"), metadata={"format": "pt"})
    with open(os.path.join(out_dir, "config.json"), "w") as f:
        json.dump(hf_config(model.cfg), f, indent=2)
        f.write("\n")
    with open(os.path.join(out_dir, "generation_config.json"), "w") as f:
        json.dump({"bos_token_id": 0, "eos_token_id": [1, 2], "do_sample": False}, f, indent=2)
        f.write("\n")
    shutil.copyfile(tokenizer_json, os.path.join(out_dir, "tokenizer.json"))
