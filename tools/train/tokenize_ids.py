#!/usr/bin/env python3
"""Tokenize a text with a model's own tokenizer.json into raw little-endian int16 ids (what
train_medusa.py reads), so that the GPU machine needs neither `tokenizers` nor the text.

    python3 tokenize_ids.py --hf ../../engine/models/onebit-tiny/hf data/train.txt data/medusa/train.bin
"""

import argparse
import os

import numpy
from tokenizers import Tokenizer


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--hf", required=True, help="model directory with tokenizer.json")
    ap.add_argument("text")
    ap.add_argument("out")
    args = ap.parse_args()
    tok = Tokenizer.from_file(os.path.join(args.hf, "tokenizer.json"))
    ids = tok.encode(open(args.text).read(), add_special_tokens=False).ids
    assert max(ids) < 32768
    os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
    numpy.asarray(ids, dtype="<i2").tofile(args.out)
    print(f"{len(ids)} tokens -> {args.out}")


if __name__ == "__main__":
    main()
