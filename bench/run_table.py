#!/usr/bin/env python3
"""The table of bench/run.sh: every test of every engine, means over the rounds, and onebit's
ratio to the best peer on each row. Reads the JSON files run.sh left in --dir; prints the
table and writes it (markdown) to --table."""
import argparse
import glob
import json
import os
import statistics


def mean(xs):
    return statistics.mean(xs) if xs else None


def peer_rates(directory, engine, rounds):
    """(kind, n, depth) -> llama-bench avg_ts of each round. ik_llama.cpp's -gp rows (both
    n_prompt and n_gen set) are tg after n_prompt tokens: depth n_prompt."""
    rates = {}
    for r in range(1, rounds + 1):
        for path in (f"{directory}/{engine}-r{r}.json", f"{directory}/{engine}-depth-r{r}.json"):
            if not os.path.exists(path):
                continue
            for row in json.load(open(path)):
                if row["n_gen"] and row["n_prompt"]:
                    key = ("tg", row["n_gen"], row["n_prompt"])
                elif row["n_gen"]:
                    key = ("tg", row["n_gen"], row.get("n_depth", 0))
                else:
                    key = ("pp", row["n_prompt"], row.get("n_depth", 0))
                rates.setdefault(key, []).append(row["avg_ts"])
    return rates


def onebit_rows(directory, name, rounds):
    """test name -> that row of each round's `onebit bench` JSON, and the bandwidths."""
    rows, bandwidth = {}, []
    for r in range(1, rounds + 1):
        for path in (f"{directory}/onebit-{name}-r{r}.json", f"{directory}/onebit-{name}-depth-r{r}.json"):
            if not os.path.exists(path):
                continue
            d = json.load(open(path))
            if d.get("bandwidth_gbs"):
                bandwidth.append(d["bandwidth_gbs"])
            for row in d["results"]:
                rows.setdefault(row["test"], []).append(row)
    return rows, bandwidth


def fmt(x, digits=1):
    return "–" if x is None else f"{x:.{digits}f}"


def roofline(rows):
    """Mean fraction of the roofline, or the probe error where a round went above it."""
    errors = [r["roofline_probe_error"] for r in rows if r.get("roofline_probe_error")]
    if errors:
        return f"probe error ({100 * max(errors):.0f} %)"
    fractions = [r["roofline_fraction"] for r in rows if r.get("roofline_fraction")]
    return f"{100 * mean(fractions):.0f} %" if fractions else "–"


def main():
    ap = argparse.ArgumentParser()
    for flag in ("--dir", "--cpu", "--commit", "--preset", "--table"):
        ap.add_argument(flag, required=True)
    for flag in ("--rounds", "--pp", "--long-pp", "--tg", "--depth", "--threads", "--reps"):
        ap.add_argument(flag, type=int, required=True)
    a = ap.parse_args()

    peers = {"llama.cpp TQ2_0": peer_rates(a.dir, "llama", a.rounds)}
    ik = peer_rates(a.dir, "ik", a.rounds)
    if ik:
        peers["ik_llama.cpp IQ2_BN"] = ik
    names = sorted({os.path.basename(p)[len("onebit-"):].rsplit("-r", 1)[0].removesuffix("-depth")
                    for p in glob.glob(f"{a.dir}/onebit-*-r*.json")})
    # I2_S first: onebit's own format.
    names.sort(key=lambda n: not n.endswith("i2s"))
    onebit = {n: onebit_rows(a.dir, n, a.rounds) for n in names}

    # (label, the peers' test, onebit's test name)
    tests = [(f"pp{a.pp}", ("pp", a.pp, 0), f"pp{a.pp}")]
    if a.long_pp:
        tests.append((f"pp{a.long_pp}", ("pp", a.long_pp, 0), f"pp{a.long_pp}"))
    tg = ("tg", a.tg, 0)
    tests += [
        (f"tg{a.tg}, llama.cpp's default sampling (screened head)", tg, f"tg{a.tg}"),
        (f"tg{a.tg}, llama.cpp's default sampling, full F16 head", tg, f"tg{a.tg}, full head"),
        (f"tg{a.tg} greedy, int8-screened head", tg, f"tg{a.tg} greedy, int8-screened head"),
        (f"tg{a.tg}, dense down_proj", tg, f"tg{a.tg} dense down_proj"),
    ]
    if a.depth:
        deep = ("tg", a.tg, a.depth)
        tests += [
            (f"tg{a.tg} @ d{a.depth}, llama.cpp's default sampling", deep, f"tg{a.tg} @ d{a.depth}"),
            (f"tg{a.tg} @ d{a.depth} greedy, int8-screened head", deep,
             f"tg{a.tg} @ d{a.depth} greedy, int8-screened head"),
        ]

    head = ["test", *peers, *[c for n in names for c in (f"onebit {n}", f"{n} / best peer")]]
    if names:
        head.append(f"{names[0]} roofline")
    lines = [
        f"CPU: {a.cpu}; {a.threads} threads; preset {a.preset}; {a.rounds} interleaved rounds of "
        f"{a.reps} repetitions; commit {a.commit}; log `bench/.cache/{os.path.basename(a.dir)}/log`.",
        "",
        "| " + " | ".join(head) + " |",
        "|---|" + "---:|" * (len(head) - 1),
    ]
    for label, peer_test, onebit_test in tests:
        peer = [mean(p.get(peer_test, [])) for p in peers.values()]
        best = max((x for x in peer if x is not None), default=None)
        cells = [label, *[fmt(x) for x in peer]]
        seen = False
        for n in names:
            rows = onebit[n][0].get(onebit_test, [])
            ts = mean([r["ts_mean"] for r in rows])
            seen |= ts is not None
            ratio = f"**{ts / best:.2f}×**" if ts is not None and best else "–"
            cells += [fmt(ts), ratio]
        if names:
            cells.append(roofline(onebit[names[0]][0].get(onebit_test, [])))
        if seen:
            lines.append("| " + " | ".join(cells) + " |")
    for n in names:
        bw = onebit[n][1]
        if bw:
            lines.append(f"\nonebit {n}: read bandwidth {mean(bw):.1f} GB/s (the probe's best pattern, mean of "
                         f"{len(bw)} runs).")
    lines += [
        "",
        "- Peers' tg is llama-bench's: decoding without sampling. onebit's plain tg samples at llama.cpp's",
        "  defaults (temp 0.8, top-k 40, top-p 0.95, min-p 0.05) through the int8-screened head, which scores in",
        "  full every token that could be among the top 40 (the same draws as the full head; the `full F16 head`",
        "  row scores every token); its greedy rows take the argmax through the same screen.",
        f"- tg{a.tg} @ d{a.depth}: generated after {a.depth} cached tokens, the fill untimed (llama.cpp: `-d`; "
        "ik_llama.cpp, whose llama-bench has no `-d`: `-gp DEPTH,TG`; onebit: `bench -d`).",
        "- Roofline: the rate over the measured bandwidth divided by the bytes each token read (down_proj",
        "  columns read, the head used, the KV at its depth). Above 100 % is a probe error, not a result.",
    ]
    table = "\n".join(lines) + "\n"
    print("\n" + table)
    with open(a.table, "w") as f:
        f.write(table)


if __name__ == "__main__":
    main()
