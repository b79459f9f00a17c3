#!/usr/bin/env python3
"""Measure the shipped model with onebit and write engine/models/onebit-tiny/eval.json.

Runs the `onebit` binary on the shipped GGUF (`perplexity --json` on heldout.txt, greedy
`run --json` on the prompts the training code sampled), then scores onebit's greedy trajectory
with the training code's exact-numerics forward (`evaluate.ExactBitNet`, teacher-forced: its
argmax and top-1 minus top-2 margin at every step), and records everything with the training
run's own numbers (tools/train/runs/<run>/eval.json, hparams.json). The test
tests/tests/embedded_model.rs checks the embedded model against this file.
"""

import argparse
import json
import os
import subprocess

import torch

from evaluate import ExactBitNet

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.normpath(os.path.join(HERE, "../.."))


def onebit_json(cmd):
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--onebit", required=True, help="the onebit binary")
    ap.add_argument("--model-dir", default=os.path.join(ROOT, "engine/models/onebit-tiny"))
    ap.add_argument("--run", default=os.path.join(HERE, "runs/h200-seed1234"))
    args = ap.parse_args()

    d = args.model_dir
    gguf = os.path.join(d, "onebit-tiny.i2_s.gguf")
    heldout = os.path.join(d, "heldout.txt")
    cfg = json.load(open(os.path.join(d, "hf/config.json")))
    ctx = cfg["max_position_embeddings"]
    trained = json.load(open(os.path.join(args.run, "eval.json")))
    hp = json.load(open(os.path.join(args.run, "hparams.json")))

    ppl = onebit_json([args.onebit, "perplexity", "-m", gguf, "-f", heldout, "--ctx", str(ctx), "--json"])
    print("onebit perplexity:", ppl)
    ts = trained["heldout_shipped"]
    assert ppl["n_scored"] == ts["n_scored"], (ppl, ts)

    exact = ExactBitNet(os.path.join(d, "hf"), "cpu")
    greedy = []
    for g in trained["greedy"]:
        n = g["max_new_tokens"]
        r = onebit_json([args.onebit, "run", "-m", gguf, "-p", g["prompt"], "-n", str(n), "--temp", "0", "--json"])
        assert r["prompt_tokens"] == g["prompt_ids"], (r["prompt_tokens"], g["prompt_ids"])
        seq = r["prompt_tokens"] + r["tokens"]
        logits = exact.logits(seq[:ctx])
        p = len(r["prompt_tokens"])
        steps = logits[p - 1: p - 1 + len(r["tokens"])]
        top = steps.topk(2, dim=-1)
        greedy.append({
            "prompt": g["prompt"],
            "prompt_ids": g["prompt_ids"],
            "tokens_onebit": r["tokens"],
            "text_onebit": r["text"],
            "tokens_training_code": top.indices[:, 0].tolist(),
            "margins_training_code": [round(float(m), 5) for m in (top.values[:, 0] - top.values[:, 1])],
            "free_running_training_code": {"tokens": g["tokens"], "text": g["text"]},
        })
        agree = sum(a == b for a, b in zip(greedy[-1]["tokens_onebit"], greedy[-1]["tokens_training_code"]))
        print(f"{g['prompt']!r}: onebit {len(r['tokens'])} tokens, training code agrees on {agree}")

    rec = {
        "model": "onebit-tiny",
        "file": "onebit-tiny.i2_s.gguf",
        "config": {k: cfg[k] for k in ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
                                       "num_key_value_heads", "head_dim", "vocab_size", "max_position_embeddings")},
        "heldout": {
            "file": "heldout.txt",
            "ctx": ctx,
            "n_scored": ts["n_scored"],
            "training_code": {k: ts[k] for k in ("perplexity", "nll_mean", "n_scored")},
            "onebit": ppl,
            "relative_difference": abs(ppl["perplexity"] - ts["perplexity"]) / ts["perplexity"],
            "unigram_perplexity": ts["unigram_perplexity"],
        },
        "heldout_split": dict(trained["heldout_split"], note="the whole 2 % test split (63 k tokens) in "
                              "context-sized windows, BOS + 1023 tokens each; training code"),
        "greedy": greedy,
        "training": {k: hp[k] for k in ("seed", "steps_taken", "best_step", "best_val_loss", "train_seconds", "params",
                                        "ternary_params", "tokens_seen", "train_tokens", "device", "torch")},
    }
    with open(os.path.join(d, "eval.json"), "w") as f:
        json.dump(rec, f, indent=1)
        f.write("\n")
    print(json.dumps(rec["heldout"], indent=1))


if __name__ == "__main__":
    torch.set_grad_enabled(False)
    main()
