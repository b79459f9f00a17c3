#!/usr/bin/env python3
"""Runs the zoo's synthetic checkpoints through Hugging Face transformers and records its logits.

make_fixtures.py writes each family's checkpoint the way the family's published checkpoints
store their weights, and its golden outputs come from an independent float64 forward written
from the model definitions. This script is the other half of the check: it loads the same
`hf/` folders with transformers' own classes (`BitNetForCausalLM` for model_type bitnet,
`LlamaForCausalLM` with `quantization_config: {quant_method: bitnet}` for the LLaMA-layout
families, which transformers' BitLinear unpacks) and runs the same cases, in float64 and in
float32. It writes, per family:

- `transformers.safetensors`: logits of every case (float32 run), so the Rust tests can hold
  onebit against transformers too;
- `transformers.json`: the transformers version, its greedy tokens and perplexity, and how
  far each run is from the float64 reference (NMSE, largest difference, argmax agreement and,
  where an argmax differs, the reference's top-two margin there).

1bitLLM's checkpoints need their repository's own modeling code (`trust_remote_code`), which
cannot be fetched here and which transformers does not ship, so that family is skipped.

Run on a machine with torch and transformers (the device machine has both):
    python3 tools/zoo/check_transformers.py --zoo tests/fixtures/zoo --out OUT
"""

import argparse
import json
import math
import os
import sys

import numpy as np
import torch
import transformers
from safetensors.numpy import load_file, save_file
from transformers import AutoModelForCausalLM, AutoTokenizer

FAMILIES = ["bitnet-2b4t", "llama3", "falcon3", "falcon-e"]
SKIPPED = {"1bitllm": "needs its repository's remote modeling code (BitnetForCausalLM), not in transformers"}


def logits_of(model, ids):
    with torch.no_grad():
        x = torch.tensor([ids], dtype=torch.long)
        return model(input_ids=x).logits[0].double().numpy()


def compare(got, want, margins):
    """NMSE, largest difference and argmax agreement of two [positions, vocab] arrays."""
    d = got - want
    nmse = float((d * d).sum() / (want * want).sum())
    ga, wa = got.argmax(-1), want.argmax(-1)
    differ = [
        {"pos": int(p), "transformers": int(ga[p]), "reference": int(wa[p]), "reference_margin": float(margins[p])}
        for p in np.nonzero(ga != wa)[0]
    ]
    return {
        "nmse": nmse,
        "max_abs": float(np.abs(d).max()),
        "max_abs_logit": float(np.abs(want).max()),
        "argmax_agree": int((ga == wa).sum()),
        "positions": int(len(wa)),
        "argmax_differs": differ,
    }


def greedy(model, prompt_ids, n):
    ids = list(prompt_ids)
    for _ in range(n):
        ids.append(int(logits_of(model, ids)[-1].argmax()))
    return ids[len(prompt_ids):]


def perplexity(model, ids):
    lg = torch.tensor(logits_of(model, ids)[:-1])
    nll = torch.nn.functional.cross_entropy(lg, torch.tensor(ids[1:]), reduction="mean")
    return float(nll), math.exp(float(nll))


def check_family(zoo, family, out):
    folder = os.path.join(zoo, family)
    ref = json.load(open(os.path.join(folder, "reference.json")))
    ref_logits = load_file(os.path.join(folder, "reference.safetensors"))
    tok = AutoTokenizer.from_pretrained(os.path.join(folder, "hf"))
    eval_text = open(os.path.join(folder, ref["perplexity"]["text_file"])).read()
    eval_ids = tok(eval_text, add_special_tokens=False)["input_ids"]
    if ref["perplexity"]["bos"]:
        eval_ids = [tok.bos_token_id] + eval_ids
    record = {
        "model": family,
        "transformers": transformers.__version__,
        "torch": torch.__version__,
        "device": "cpu",
        "eval_tokens": len(eval_ids),
        "eval_tokens_reference": ref["perplexity"]["n_tokens"],
        "runs": {},
    }
    tensors = {}
    for dtype in (torch.float64, torch.float32):
        name = str(dtype).removeprefix("torch.")
        model = AutoModelForCausalLM.from_pretrained(os.path.join(folder, "hf"), dtype=dtype)
        model.eval()
        run = {"class": type(model).__name__, "cases": {}}
        for case, c in ref["cases"].items():
            got = logits_of(model, c["ids"])
            want = ref_logits[f"logits.{case}"].astype(np.float64)
            run["cases"][case] = compare(got, want, c["margin"])
            if dtype == torch.float32:
                tensors[f"logits.{case}"] = got.astype(np.float32)
        g = ref["greedy"]["greedy_prompt"]
        new = greedy(model, g["prompt_ids"], len(g["new_ids"]))
        run["greedy"] = {"new_ids": new, "matches_reference": new == g["new_ids"]}
        nll, ppl = perplexity(model, eval_ids)
        run["perplexity"] = {"nll_mean": nll, "perplexity": ppl, "reference": ref["perplexity"]["perplexity"]}
        record["runs"][name] = run
        print(family, name, json.dumps({k: v for k, v in run.items() if k != "cases"}), flush=True)
        for case, r in run["cases"].items():
            print(f"  {case}: nmse {r['nmse']:.3e} max_abs {r['max_abs']:.3e} argmax {r['argmax_agree']}/{r['positions']}", flush=True)
    dest = os.path.join(out, family)
    os.makedirs(dest, exist_ok=True)
    save_file(tensors, os.path.join(dest, "transformers.safetensors"))
    with open(os.path.join(dest, "transformers.json"), "w") as f:
        json.dump(record, f, indent=1)
        f.write("\n")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--zoo", default="tests/fixtures/zoo")
    ap.add_argument("--out", default="tests/fixtures/zoo")
    args = ap.parse_args()
    torch.set_num_threads(min(8, os.cpu_count() or 1))
    failed = []
    for family in FAMILIES:
        try:
            check_family(args.zoo, family, args.out)
        except Exception as e:  # record every family's failure, then report them all
            print(f"{family}: FAILED: {type(e).__name__}: {e}", flush=True)
            failed.append(family)
    for family, why in SKIPPED.items():
        print(f"{family}: skipped: {why}")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
