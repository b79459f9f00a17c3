#!/usr/bin/env python3
"""Evaluate an exported HF-packed BitNet with the inference engine's numerics.

Ternary weights x weight_scale, per-token int8 activations (s = 127 / max(|x|, 1e-5), round half
to even, clamp [-128, 127]) at the input of every projection, the integer dot product, then
dot / s * scale; everything else in f32. Perplexity is onebit's definition (`onebit perplexity
--json`): BOS + the text's tokens, truncated to the context, every token after BOS scored.

Writes eval.json: perplexity of the shipped held-out file (onebit's definition), perplexity over
the whole held-out split in context-sized windows, the unigram baseline on the same tokens, and a
greedy sample.
"""

import argparse
import json
import math
import os

import torch
from safetensors.torch import load_file
from tokenizers import Tokenizer

from export_hf import unpack_rows

PROMPTS = ["ROMEO.\nO, she doth teach", "And God said unto Moses,", "Of Man's first disobedience"]


class ExactBitNet:
    def __init__(self, hf_dir, device="cpu"):
        cfg = json.load(open(os.path.join(hf_dir, "config.json")))
        self.cfg = cfg
        st = load_file(os.path.join(hf_dir, "model.safetensors"))
        self.dev = device
        self.w = {}
        for k, v in st.items():
            if k.endswith("_scale"):
                continue
            if v.dtype == torch.uint8:
                self.w[k] = (unpack_rows(v).float().to(device), st[k + "_scale"].float().item())
            else:
                self.w[k] = v.float().to(device)
        self.hd = cfg.get("head_dim", cfg["hidden_size"] // cfg["num_attention_heads"])
        inv = 1.0 / (cfg["rope_theta"] ** (torch.arange(0, self.hd, 2, dtype=torch.float32) / self.hd))
        freqs = torch.outer(torch.arange(cfg["max_position_embeddings"], dtype=torch.float32), inv)
        emb = torch.cat([freqs, freqs], -1)
        self.cos, self.sin = emb.cos().to(device), emb.sin().to(device)

    def norm(self, x, name):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.cfg["rms_norm_eps"]) * self.w[name]

    def linear(self, x, name):
        t, scale = self.w[name]
        s = 127.0 / x.abs().amax(-1, keepdim=True).clamp(min=1e-5)
        q = (x * s).round().clamp(-128, 127)
        # Integer-valued f32 operands: the dot product is exact (|sum| < 2^24).
        return (q @ t.T) / s * scale

    @torch.no_grad()
    def logits(self, ids):
        c, hd = self.cfg, self.hd
        n = len(ids)
        nh, nkv = c["num_attention_heads"], c["num_key_value_heads"]
        h = self.w["model.embed_tokens.weight"][torch.tensor(ids, device=self.dev)]
        cos, sin = self.cos[:n], self.sin[:n]
        mask = torch.full((n, n), float("-inf"), device=self.dev).triu(1)

        def rope(x):
            x1, x2 = x[..., : hd // 2], x[..., hd // 2:]
            return x * cos + torch.cat([-x2, x1], -1) * sin

        for i in range(c["num_hidden_layers"]):
            p = f"model.layers.{i}."
            a = self.norm(h, p + "input_layernorm.weight")
            q = self.linear(a, p + "self_attn.q_proj.weight").view(n, nh, hd).transpose(0, 1)
            k = self.linear(a, p + "self_attn.k_proj.weight").view(n, nkv, hd).transpose(0, 1)
            v = self.linear(a, p + "self_attn.v_proj.weight").view(n, nkv, hd).transpose(0, 1)
            q, k = rope(q), rope(k)
            g = nh // nkv
            k, v = k.repeat_interleave(g, 0), v.repeat_interleave(g, 0)
            att = torch.softmax(q @ k.transpose(1, 2) / math.sqrt(hd) + mask, dim=-1)
            o = (att @ v).transpose(0, 1).reshape(n, nh * hd)
            o = self.norm(o, p + "self_attn.attn_sub_norm.weight")
            h = h + self.linear(o, p + "self_attn.o_proj.weight")
            f = self.norm(h, p + "post_attention_layernorm.weight")
            gu = torch.relu(self.linear(f, p + "mlp.gate_proj.weight")).square() * self.linear(f, p + "mlp.up_proj.weight")
            gu = self.norm(gu, p + "mlp.ffn_sub_norm.weight")
            h = h + self.linear(gu, p + "mlp.down_proj.weight")
        h = self.norm(h, "model.norm.weight")
        return h @ self.w["model.embed_tokens.weight"].T

    def nll(self, ids):
        """Summed NLL (f64) of ids[1:] given the prefix; ids[0] is BOS."""
        lp = torch.log_softmax(self.logits(ids)[:-1].double(), -1)
        tgt = torch.tensor(ids[1:], device=self.dev)
        return -lp.gather(1, tgt[:, None]).sum().item(), len(ids) - 1

    def greedy(self, ids, n_new, stop=(1, 2)):
        """Greedy tokens and, per step, the top-1 minus top-2 logit (how decisive it was)."""
        ids, out, margins = list(ids), [], []
        for _ in range(n_new):
            last = self.logits(ids[-self.cfg["max_position_embeddings"]:])[-1]
            top = last.topk(2)
            nxt = int(top.indices[0])
            out.append(nxt)
            margins.append(float(top.values[0] - top.values[1]))
            if nxt in stop:
                break
            ids.append(nxt)
        return out, margins


def unigram_nll(counts, ids):
    total = counts.sum().item()
    p = (counts.double() + 1) / (total + len(counts))  # add-one smoothing
    return -p.log()[torch.tensor(ids)].sum().item()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--hf", required=True, help="exported HF directory")
    ap.add_argument("--data", required=True, help="folder with train.bin and heldout.bin")
    ap.add_argument("--heldout-text", required=True, help="the shipped held-out text")
    ap.add_argument("--out", required=True, help="eval.json to write")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--full-windows", type=int, default=0, help="limit whole-split windows (0: all, -1: none)")
    ap.add_argument("--gen-tokens", type=int, default=64)
    args = ap.parse_args()
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False

    m = ExactBitNet(args.hf, args.device)
    tok = Tokenizer.from_file(os.path.join(args.hf, "tokenizer.json"))
    ctx = m.cfg["max_position_embeddings"]
    bos = m.cfg["bos_token_id"]
    vocab = m.cfg["vocab_size"]

    def read_ids(name):
        raw = open(os.path.join(args.data, name), "rb").read()
        return torch.frombuffer(bytearray(raw), dtype=torch.int16).long()

    counts = torch.bincount(read_ids("train.bin"), minlength=vocab)

    text = open(args.heldout_text).read()
    ids = [bos] + tok.encode(text, add_special_tokens=False).ids
    ids = ids[:ctx]
    nll, n = m.nll(ids)
    shipped = {"perplexity": math.exp(nll / n), "nll_mean": nll / n, "n_scored": n,
               "unigram_perplexity": math.exp(unigram_nll(counts, ids[1:]) / n), "ctx": ctx}
    print("shipped held-out:", json.dumps(shipped))

    held = read_ids("heldout.bin").tolist()
    step = ctx - 1
    windows = [held[i:i + step] for i in range(0, len(held) - step + 1, step)]
    if args.full_windows:
        windows = windows[: max(0, args.full_windows)]
    tot, cnt, uni = 0.0, 0, 0.0
    for w in windows:
        a, b = m.nll([bos] + w)
        tot, cnt = tot + a, cnt + b
        uni += unigram_nll(counts, w)
    full = {"perplexity": math.exp(tot / max(cnt, 1)), "nll_mean": tot / max(cnt, 1), "n_scored": cnt,
            "windows": len(windows), "unigram_perplexity": math.exp(uni / max(cnt, 1))}
    print("whole held-out split:", json.dumps(full))

    samples = []
    for p in PROMPTS:
        pid = [bos] + tok.encode(p, add_special_tokens=False).ids
        gen, margins = m.greedy(pid, args.gen_tokens)
        samples.append({"prompt": p, "prompt_ids": pid, "max_new_tokens": args.gen_tokens,
                        "tokens": gen, "margins": margins, "text": tok.decode(gen, skip_special_tokens=False)})
        print(f"--- {p!r} ->\n{p}{samples[-1]['text']}")

    with open(args.out, "w") as f:
        json.dump({"heldout_shipped": shipped, "heldout_split": full, "greedy": samples}, f, indent=1)
        f.write("\n")


if __name__ == "__main__":
    main()
