#!/usr/bin/env python3
"""Train Medusa heads on a frozen BitNet (an exported HF directory) from its own hidden states.

Head k (k = 1..K) reads the final normed hidden state h_t of position t and predicts the token
at t + 1 + k through the model's own (tied, frozen) LM head:

    logits_k = (h_t + SiLU(W_k h_t + b_k)) . E^T

W_k starts at zero, so every head starts as the base model's next-token head. The target is the
base model's own distribution at t + k (self-distillation: soft cross-entropy against
softmax(logits_{t+k})), which is what speculative verification accepts against, greedy or
sampled. The base forward is evaluate.py's exact-numerics pass (int8 activations, ternary
weights), batched.

Output (in --out): medusa.safetensors (medusa.{k}.weight [H, H] f16, medusa.{k}.bias [H] f32,
k from 0; metadata medusa.head_count, medusa.kind = residual_silu) and medusa_log.json
(seed, data, steps, time, per-head top-1 agreement with the base model on held-out windows).

    python3 tokenize_ids.py --hf ../../engine/models/onebit-tiny/hf data/train.txt data/medusa/train.bin
    python3 train_medusa.py --hf ../../engine/models/onebit-tiny/hf --ids data/medusa/train.bin \
        --heldout-ids data/medusa/heldout.bin --out OUT   # on the GPU
"""

import argparse
import json
import math
import os
import time

import torch
import torch.nn.functional as F

from evaluate import ExactBitNet


class BatchedBitNet(ExactBitNet):
    """ExactBitNet over a batch: final normed hidden states [B, T, H] and logits [B, T, V]."""

    @torch.no_grad()
    def hidden(self, ids):
        c, hd = self.cfg, self.hd
        b, n = ids.shape
        nh, nkv = c["num_attention_heads"], c["num_key_value_heads"]
        h = self.w["model.embed_tokens.weight"][ids]
        cos, sin = self.cos[:n], self.sin[:n]

        def rope(x):
            x1, x2 = x[..., : hd // 2], x[..., hd // 2:]
            return x * cos + torch.cat([-x2, x1], -1) * sin

        for i in range(c["num_hidden_layers"]):
            p = f"model.layers.{i}."
            a = self.norm(h, p + "input_layernorm.weight")
            q = self.linear(a, p + "self_attn.q_proj.weight").view(b, n, nh, hd).transpose(1, 2)
            k = self.linear(a, p + "self_attn.k_proj.weight").view(b, n, nkv, hd).transpose(1, 2)
            v = self.linear(a, p + "self_attn.v_proj.weight").view(b, n, nkv, hd).transpose(1, 2)
            q, k = rope(q), rope(k)
            g = nh // nkv
            k, v = k.repeat_interleave(g, 1), v.repeat_interleave(g, 1)
            o = F.scaled_dot_product_attention(q, k, v, is_causal=True)
            o = o.transpose(1, 2).reshape(b, n, nh * hd)
            o = self.norm(o, p + "self_attn.attn_sub_norm.weight")
            h = h + self.linear(o, p + "self_attn.o_proj.weight")
            f = self.norm(h, p + "post_attention_layernorm.weight")
            gu = torch.relu(self.linear(f, p + "mlp.gate_proj.weight")).square() * self.linear(f, p + "mlp.up_proj.weight")
            gu = self.norm(gu, p + "mlp.ffn_sub_norm.weight")
            h = h + self.linear(gu, p + "mlp.down_proj.weight")
        return self.norm(h, "model.norm.weight")


class MedusaHeads(torch.nn.Module):
    def __init__(self, n_heads, hidden):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(n_heads, hidden, hidden))
        self.b = torch.nn.Parameter(torch.zeros(n_heads, hidden))

    def forward(self, h, embed):
        # h [B, T, H] -> logits [K, B, T, V]
        z = torch.einsum("kij,btj->kbti", self.w, h) + self.b[:, None, None, :]
        return (h[None] + F.silu(z)) @ embed.T


def batch(tokens, bs, ctx, bos, gen, device):
    off = torch.randint(0, len(tokens) - ctx, (bs,), generator=gen)
    idx = off[:, None] + torch.arange(ctx - 1)[None]
    y = tokens[idx]
    return torch.cat([torch.full((bs, 1), bos, dtype=torch.long), y], 1).to(device)


def losses(model, heads, ids):
    """Soft cross-entropy of each head against the base model's distribution k steps later,
    and each head's top-1 agreement with the base model's greedy token there."""
    h = model.hidden(ids)
    embed = model.w["model.embed_tokens.weight"]
    with torch.no_grad():
        base = (h @ embed.T).float()
    out = heads(h, embed)
    total, agree = 0.0, []
    for k in range(out.shape[0]):
        shift = k + 1
        pred = out[k][:, :-shift].float()
        tgt = base[:, shift:]
        loss = -(F.softmax(tgt, -1) * F.log_softmax(pred, -1)).sum(-1).mean()
        total = total + loss
        agree.append((pred.argmax(-1) == tgt.argmax(-1)).float().mean().item())
    return total, agree


@torch.no_grad()
def sample_corpus(model, n_seq, ctx, bos, seed):
    """Self-distillation data: n_seq sequences of ctx tokens sampled (temperature 1) from the
    base model after BOS, concatenated (with their BOS) into one id stream."""
    gen = torch.Generator(device=model.dev).manual_seed(seed)
    ids = torch.full((n_seq, 1), bos, dtype=torch.long, device=model.dev)
    embed = model.w["model.embed_tokens.weight"]
    for _ in range(ctx - 1):
        p = torch.softmax(model.hidden(ids)[:, -1] @ embed.T, -1)
        ids = torch.cat([ids, torch.multinomial(p, 1, generator=gen)], 1)
    print(f"sampled {n_seq} sequences of {ctx} tokens from the base model", flush=True)
    return ids.flatten().cpu()


def read_ids(path):
    raw = open(path, "rb").read()
    return torch.frombuffer(bytearray(raw), dtype=torch.int16).long()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--hf", required=True, help="the frozen base model (HF directory)")
    ap.add_argument("--ids", help="int16 token ids of the training text (default: sample --generate "
                    "sequences from the base model itself)")
    ap.add_argument("--generate", type=int, default=512, help="sequences to sample when there is no --ids")
    ap.add_argument("--heldout-ids", help="int16 ids of held-out text for the agreement report")
    ap.add_argument("--out", default="medusa-out")
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--steps", type=int, default=1200)
    ap.add_argument("--time-budget", type=float, default=300.0, help="seconds; caps the steps")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--ctx", type=int, default=512)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = ap.parse_args()

    torch.manual_seed(args.seed)
    torch.backends.cuda.matmul.allow_tf32 = False
    os.makedirs(args.out, exist_ok=True)
    model = BatchedBitNet(args.hf, args.device)
    hidden = model.cfg["hidden_size"]
    bos = model.cfg["bos_token_id"]
    heads = MedusaHeads(args.heads, hidden).to(args.device)
    opt = torch.optim.AdamW(heads.parameters(), lr=args.lr, weight_decay=0.0)
    train = read_ids(args.ids) if args.ids else sample_corpus(model, args.generate, args.ctx, bos, args.seed)
    gen = torch.Generator().manual_seed(args.seed)
    print(f"device {args.device}, torch {torch.__version__}, train tokens {len(train)}, heads {args.heads}",
          flush=True)

    t0, log, step = time.time(), [], 0
    while step < args.steps and time.time() - t0 < args.time_budget:
        lr = args.lr * min(1.0, (step + 1) / 50) * 0.5 * (1 + math.cos(math.pi * step / args.steps))
        for g in opt.param_groups:
            g["lr"] = lr
        loss, agree = losses(model, heads, batch(train, args.batch, args.ctx, bos, gen, args.device))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        step += 1
        if step % 50 == 0 or step == 1:
            row = {"step": step, "loss": loss.item(), "agree": agree, "seconds": time.time() - t0}
            log.append(row)
            print(json.dumps(row), flush=True)
    seconds = time.time() - t0

    heldout = {}
    if args.heldout_ids:
        ids = read_ids(args.heldout_ids)
        n = (len(ids) // (args.ctx - 1)) * (args.ctx - 1)
        windows = ids[:n].view(-1, args.ctx - 1)[:32]
        x = torch.cat([torch.full((len(windows), 1), bos, dtype=torch.long), windows], 1).to(args.device)
        with torch.no_grad():
            _, agree = losses(model, heads, x)
        heldout = {"windows": len(windows), "agree_top1": agree}
        print("held-out top-1 agreement per head:", agree)

    from safetensors.torch import save_file

    tensors = {}
    for k in range(args.heads):
        tensors[f"medusa.{k}.weight"] = heads.w[k].detach().to(torch.float16).cpu().contiguous()
        tensors[f"medusa.{k}.bias"] = heads.b[k].detach().float().cpu().contiguous()
    save_file(tensors, os.path.join(args.out, "medusa.safetensors"),
              metadata={"medusa.head_count": str(args.heads), "medusa.kind": "residual_silu"})
    with open(os.path.join(args.out, "medusa_log.json"), "w") as f:
        json.dump({"args": vars(args), "steps": step, "seconds": seconds, "log": log, "heldout": heldout,
                   "device_name": torch.cuda.get_device_name() if args.device == "cuda" else "cpu"}, f, indent=1)
        f.write("\n")


if __name__ == "__main__":
    main()
