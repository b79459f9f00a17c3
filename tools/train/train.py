#!/usr/bin/env python3
"""Quantization-aware training of onebit-tiny, then export (HF packed) and exact evaluation.

Reproduce: prepare_data.py, train_tokenizer.py, then this script on a GPU (see README.md and
run_device.sh). Hyperparameters are the defaults below; the run writes them, with the number of
steps actually taken, to hparams.json.
"""

import argparse
import json
import math
import os
import random
import subprocess
import sys
import time

import torch
import torch.nn.functional as F

import export_hf
from model import BitNet, Config

HERE = os.path.dirname(os.path.abspath(__file__))


def read_ids(path, device):
    raw = open(path, "rb").read()
    return torch.frombuffer(bytearray(raw), dtype=torch.int16).long().to(device)


def batch(tokens, bs, ctx, bos, gen, device):
    off = torch.randint(0, len(tokens) - ctx, (bs,), generator=gen).to(device)
    idx = off[:, None] + torch.arange(ctx, device=device)[None]
    y = tokens[idx]
    x = torch.cat([torch.full((bs, 1), bos, device=device, dtype=torch.long), y[:, :-1]], 1)
    return x, y


def windows(tokens, ctx, bos):
    """Non-overlapping evaluation windows: BOS + ctx-1 tokens, predicting those tokens."""
    step = ctx - 1
    n = (len(tokens) - 1) // step
    y = tokens[: n * step].view(n, step)
    x = torch.cat([torch.full((n, 1), bos, device=tokens.device, dtype=torch.long), y[:, :-1]], 1)
    return x, y


@torch.no_grad()
def val_loss(model, x, y, chunk=16):
    model.eval()
    tot, cnt = 0.0, 0
    for i in range(0, len(x), chunk):
        logits = model(x[i:i + chunk])
        tot += F.cross_entropy(logits.flatten(0, 1), y[i:i + chunk].flatten(), reduction="sum").item()
        cnt += y[i:i + chunk].numel()
    model.train()
    return tot / cnt


def lr_at(step, total, peak, warmup, final_frac):
    if step < warmup:
        return peak * (step + 1) / warmup
    p = min(1.0, (step - warmup) / max(1, total - warmup))
    return peak * (final_frac + (1 - final_frac) * 0.5 * (1 + math.cos(math.pi * p)))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default=os.path.join(HERE, "data"))
    ap.add_argument("--out", required=True)
    ap.add_argument("--heldout-text", default=os.path.join(HERE, "../../engine/models/onebit-tiny/heldout.txt"))
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--steps", type=int, default=1500)
    ap.add_argument("--time-budget", type=float, default=390.0, help="seconds; caps the steps")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--lr", type=float, default=2.5e-3)
    ap.add_argument("--warmup", type=int, default=100)
    ap.add_argument("--final-lr-frac", type=float, default=0.1)
    ap.add_argument("--weight-decay", type=float, default=0.1)
    ap.add_argument("--dropout", type=float, default=0.1)
    ap.add_argument("--eval-every", type=int, default=100)
    ap.add_argument("--tiny", action="store_true", help="a toy config for a CPU smoke test")
    ap.add_argument("--sherry", action="store_true", help="3:4 sparse ternary QAT (Sherry), annealed")
    ap.add_argument("--anneal-start", type=float, default=0.1,
                    help="Sherry: fraction of the steps after which the dense residual starts to fade")
    ap.add_argument("--anneal-end", type=float, default=0.5,
                    help="Sherry: fraction of the steps from which the 3:4 masks are hard")
    args = ap.parse_args()

    torch.manual_seed(args.seed)
    random.seed(args.seed)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    torch.backends.cuda.matmul.allow_tf32 = True
    os.makedirs(args.out, exist_ok=True)

    cfg = Config(dropout=args.dropout)
    if args.tiny:
        cfg = Config(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=2,
                     num_key_value_heads=1, head_dim=32, max_position_embeddings=128, dropout=args.dropout)
    ctx, bos = cfg.max_position_embeddings, 0
    train = read_ids(os.path.join(args.data, "train.bin"), device)
    vx, vy = windows(read_ids(os.path.join(args.data, "val.bin"), device), ctx, bos)
    assert int(train.max()) < cfg.vocab_size

    model = BitNet(cfg).to(device)
    n_params = sum(p.numel() for p in model.parameters())
    n_ternary = sum(p.numel() for n, p in model.named_parameters() if n.endswith("_proj.weight"))
    print(f"device {device} ({torch.cuda.get_device_name() if device == 'cuda' else 'cpu'}), torch {torch.__version__}")
    print(f"params {n_params} (ternary {n_ternary}), train tokens {len(train)}, val windows {len(vx)}")

    decay = [p for n, p in model.named_parameters() if n.endswith(("_proj.weight", "embed_tokens.weight"))]
    no_decay = [p for n, p in model.named_parameters() if not n.endswith(("_proj.weight", "embed_tokens.weight"))]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": args.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}],
                            lr=args.lr, betas=(0.9, 0.95), eps=1e-8, fused=(device == "cuda"))
    gen = torch.Generator().manual_seed(args.seed)

    total = args.steps
    log, best = [], (float("inf"), -1, None)
    t0 = time.time()
    step = 0
    def anneal_at(step):
        """Sherry's blend factor: 0 (dense ternary) until anneal_start, then a cosine ramp to
        1 (hard 3:4) at anneal_end, 1 after."""
        a, b = args.anneal_start * total, args.anneal_end * total
        if step <= a:
            return 0.0
        if step >= b:
            return 1.0
        return 0.5 * (1 - math.cos(math.pi * (step - a) / (b - a)))

    while step < total:
        lr = lr_at(step, total, args.lr, args.warmup, args.final_lr_frac)
        anneal = anneal_at(step) if args.sherry else None
        model.set_sherry(anneal)
        for g in opt.param_groups:
            g["lr"] = lr
        x, y = batch(train, args.batch, ctx, bos, gen, device)
        loss = F.cross_entropy(model(x).flatten(0, 1), y.flatten())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        gnorm = torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        step += 1
        if step == 20:
            if device == "cuda":
                torch.cuda.synchronize()
            per_step = (time.time() - t0) / step
            budget_steps = int(args.time_budget / per_step)
            if budget_steps < total:
                print(f"time budget: {per_step * 1000:.0f} ms/step -> {budget_steps} steps instead of {total}")
                total = budget_steps
        if step % 25 == 0 or step == total:
            el = time.time() - t0
            print(f"step {step}/{total} loss {loss.item():.4f} lr {lr:.2e} gnorm {gnorm:.2f} "
                  + (f"anneal {anneal:.3f} " if args.sherry else "") +
                  f"{step * args.batch * ctx / el / 1e3:.0f} ktok/s {el:.0f}s", flush=True)
        if step % args.eval_every == 0 or step == total:
            vl = val_loss(model, vx, vy)
            entry = {"step": step, "train_loss": loss.item(), "val_loss": vl, "val_ppl": math.exp(vl),
                     "lr": lr, "seconds": time.time() - t0}
            if args.sherry:
                entry["anneal"] = anneal
            log.append(entry)
            print("  val", json.dumps(entry), flush=True)
            # A Sherry checkpoint counts only once its masks are hard: that is what ships.
            if vl < best[0] and (not args.sherry or anneal == 1.0):
                best = (vl, step, {k: v.detach().clone() for k, v in model.state_dict().items()})
    train_seconds = time.time() - t0

    print(f"best val loss {best[0]:.4f} at step {best[1]}; training took {train_seconds:.0f}s")
    model.load_state_dict(best[2])
    hf_dir = os.path.join(args.out, "hf")
    export_hf.export(model, os.path.join(args.data, "tokenizer.json"), hf_dir, sherry=args.sherry)

    hp = dict(vars(args), steps_scheduled=total, steps_taken=step, best_step=best[1], best_val_loss=best[0],
              train_seconds=train_seconds, params=n_params, ternary_params=n_ternary,
              tokens_seen=step * args.batch * ctx, train_tokens=len(train), config=cfg.to_dict(),
              device=torch.cuda.get_device_name() if device == "cuda" else "cpu", torch=torch.__version__)
    hp.pop("out")
    with open(os.path.join(args.out, "hparams.json"), "w") as f:
        json.dump(hp, f, indent=1)
    with open(os.path.join(args.out, "train_log.json"), "w") as f:
        json.dump(log, f, indent=1)

    subprocess.run([sys.executable, os.path.join(HERE, "evaluate.py"), "--hf", hf_dir, "--data", args.data,
                    "--heldout-text", args.heldout_text, "--out", os.path.join(args.out, "eval.json")],
                   check=True)


if __name__ == "__main__":
    main()
