#!/usr/bin/env python3
"""Speculative decoding on onebit-tiny, against plain decoding in the same run.

Three task types, prompts cut from the model's held-out text (engine/models/onebit-tiny/
heldout.txt, never trained on):
  continuation  - a passage; the model continues it;
  repetition    - a passage, a blank line, then the passage's first words again: the model
                  quotes it (what prompt lookup is for);
  chat          - a line of the passage as the user's message (--chat).
Every prompt runs greedy with --speculate off, lookup, medusa and auto, the order rotated per
prompt (interleaved, so a slower or busier moment of the machine hits every mode alike), and
the same tokens are checked across modes. Reported per task and mode: decode tok/s (summed
tokens over summed decode seconds), the ratio to off, tokens per pass over the weights,
acceptance, and acceptance per draft position.

Then the verify-cost curve on the 2B-4T-shaped synthetic model (`onebit bench --preset 2b4t`,
built in memory, the same shapes as `onebit synth --preset 2b4t --format i2s`): the time of one
pass over k = 1, 2, 4, 8, 16 new tokens (pp k) against one decode step (tg), and from those and
onebit-tiny's tokens per pass, a projection of the 2B speed-up (labelled as one).

    python3 bench/speculate.py [--onebit target/release/onebit] [--prompts 6] [--n 96] [--no-2b]
"""

import argparse
import json
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
MODES = ["off", "lookup", "medusa", "auto"]


def passages(text, count, chars):
    paras = [p.strip() for p in text.split("\n\n") if len(p.strip()) >= chars // 2]
    step = max(1, len(paras) // count)
    return [paras[i][:chars] for i in range(0, len(paras), step)][:count]


def prompts(text, count):
    out = []
    for p in passages(text, count, 400):
        out.append(("continuation", p, False))
        out.append(("repetition", p + "\n\n" + p[:40], False))
        line = next((l for l in p.split("\n") if len(l) > 20), p[:80])
        out.append(("chat", line, True))
    return out


def run(onebit, prompt, chat, mode, n, threads):
    cmd = [onebit, "run", "-p", prompt, "-n", str(n), "--temp", "0", "--speculate", mode, "--json"]
    if chat:
        cmd.append("--chat")
    if threads:
        cmd += ["-t", str(threads)]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def cpu_name():
    info = {}
    for line in open("/proc/cpuinfo"):
        k, _, v = line.partition(":")
        k = k.strip()
        if k in ("model name", "cpu family", "model") and k not in info:
            info[k] = v.strip()
    return f"{info.get('model name', '?')} (family {info.get('cpu family', '?')}, model {info.get('model', '?')})"


def tiny(a):
    text = open(os.path.join(ROOT, "engine/models/onebit-tiny/heldout.txt")).read()
    agg = {}
    for i, (task, prompt, chat) in enumerate(prompts(text, a.prompts)):
        order = MODES[i % len(MODES):] + MODES[: i % len(MODES)]
        tokens = {}
        for mode in order:
            r = run(a.onebit, prompt, chat, mode, a.n, a.threads)
            tokens[mode] = r["tokens"]
            g = agg.setdefault((task, mode), {"tokens": 0, "seconds": 0.0, "passes": 0, "drafted": 0,
                                               "accepted": 0, "offered_at": [], "accepted_at": []})
            g["tokens"] += len(r["tokens"])
            g["seconds"] += r["decode_seconds"]
            s = r.get("speculate")
            if s:
                g["passes"] += s["passes"]
                g["drafted"] += s["drafted"]
                g["accepted"] += s["accepted"]
                for key in ("offered_at", "accepted_at"):
                    cur = g[key]
                    cur.extend([0] * (len(s[key]) - len(cur)))
                    for j, v in enumerate(s[key]):
                        cur[j] += v
            else:
                g["passes"] += len(r["tokens"])
        bad = [m for m in MODES if tokens[m] != tokens["off"]]
        if bad:
            sys.exit(f"{task} prompt {i}: {bad} gave other tokens than plain greedy decoding")
    print(f"onebit-tiny, greedy, {a.n} new tokens per prompt, {a.prompts} prompts per task; CPU: {cpu_name()}")
    print()
    print("| task | mode | decode tok/s | vs off | tokens/pass | acceptance | acceptance by position (1, 2, 3, ...) |")
    print("| --- | --- | ---: | ---: | ---: | ---: | --- |")
    rows = {}
    for task in ("continuation", "repetition", "chat"):
        base = agg[(task, "off")]
        base_ts = base["tokens"] / max(base["seconds"], 1e-9)
        for mode in MODES:
            g = agg[(task, mode)]
            ts = g["tokens"] / max(g["seconds"], 1e-9)
            tpp = g["tokens"] / max(g["passes"], 1)
            acc = g["accepted"] / g["drafted"] if g["drafted"] else 0.0
            pos = ", ".join(f"{a_ / o:.2f}" for a_, o in zip(g["accepted_at"], g["offered_at"]) if o)
            rows[(task, mode)] = {"ts": ts, "ratio": ts / base_ts, "tokens_per_pass": tpp}
            print(f"| {task} | {mode} | {ts:.0f} | {ts / base_ts:.2f}x | {tpp:.2f} | {acc:.2f} | {pos or '-'} |")
    return rows


def curve(a, rows):
    cmd = [a.onebit, "bench", "--preset", "2b4t", "-p", "1,2,4,8,16", "-n", "16", "-r", str(a.reps),
           "--no-bandwidth", "-o", "json"]
    if a.threads:
        cmd += ["-t", str(a.threads)]
    rep = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout)
    res = rep["results"]
    tg = next(r for r in res if r["n_gen"] > 0 and r["n_prompt"] == 0)["ts_mean"]
    step = 1.0 / tg
    print()
    print(f"2B-4T-shaped synthetic model (in memory), verify cost of k tokens in one pass; CPU: {cpu_name()}")
    print()
    print("| k | pass ms | decode step ms | cost vs one decode step |")
    print("| ---: | ---: | ---: | ---: |")
    cost = {}
    for r in res:
        if r["n_prompt"] > 0:
            k = r["n_prompt"]
            t = k / r["ts_mean"]
            cost[k] = t / step
            print(f"| {k} | {t * 1e3:.1f} | {step * 1e3:.1f} | {cost[k]:.2f} |")
    print()
    print("**Projection** (not a measurement) of the 2B decode speed-up: onebit-tiny's tokens per pass ÷ the")
    print("2B cost of verifying that many tokens (drafts per pass: lookup 6, medusa 6 nodes; cost at k = 8).")
    print()
    print("| task | mode | tokens/pass (tiny, measured) | projected 2B speed-up |")
    print("| --- | --- | ---: | ---: |")
    c8 = cost.get(8, 1.0)
    for (task, mode), r in rows.items():
        if mode in ("lookup", "medusa"):
            print(f"| {task} | {mode} | {r['tokens_per_pass']:.2f} | {r['tokens_per_pass'] / c8:.2f}x |")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--onebit", default=os.path.join(ROOT, "target/release/onebit"))
    ap.add_argument("--prompts", type=int, default=6)
    ap.add_argument("--n", type=int, default=96)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--no-2b", action="store_true")
    a = ap.parse_args()
    rows = tiny(a)
    if not a.no_2b:
        curve(a, rows)


if __name__ == "__main__":
    main()
