#!/usr/bin/env python3
"""Train the byte-level BPE tokenizer (LLaMA-3 pre-tokenizer) and tokenize the corpus.

Writes (in --data): tokenizer.json, {train,val,heldout}.bin: raw little-endian int16 token ids
(no BOS; the trainer adds one per window).
"""

import argparse
import os
import re

import numpy as np
from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors, trainers

HERE = os.path.dirname(os.path.abspath(__file__))
VOCAB_SIZE = 4096
SPECIALS = ["<|begin_of_text|>", "<|end_of_text|>", "<|eot_id|>"]
# The LLaMA-3 pre-tokenizer pattern, as in its tokenizer.json.
LLAMA3_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)


def build(train_txt):
    tok = Tokenizer(models.BPE(unk_token=None, fuse_unk=False, byte_fallback=False))
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(LLAMA3_PATTERN), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        min_frequency=2,
        special_tokens=SPECIALS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train([train_txt], trainer)
    # Same as the LLaMA-3 tokenizer: encoding with special tokens adds <|begin_of_text|>.
    tok.post_processor = processors.TemplateProcessing(
        single="<|begin_of_text|> $A", pair="$A $B:1", special_tokens=[("<|begin_of_text|>", 0)]
    )
    for i, s in enumerate(SPECIALS):
        assert tok.token_to_id(s) == i, (s, tok.token_to_id(s))
    return tok


def encode_file(tok, path):
    text = open(path).read()
    ids = []
    # Encode line by line in batches (fast); a newline followed by a letter is always a boundary
    # of the LLaMA-3 pre-tokenizer, so this equals encoding the whole text at once.
    blocks = re.split(r"(?<=\n)(?=[A-Za-z])", text)
    for enc in tok.encode_batch(blocks, add_special_tokens=False):
        ids.extend(enc.ids)
    return np.array(ids, dtype=np.uint16), text


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default=os.path.join(HERE, "data"))
    args = ap.parse_args()
    tok = build(os.path.join(args.data, "train.txt"))
    tok.save(os.path.join(args.data, "tokenizer.json"))
    for split in ("train", "val", "heldout"):
        ids, text = encode_file(tok, os.path.join(args.data, f"{split}.txt"))
        ids.astype("<i2").tofile(os.path.join(args.data, f"{split}.bin"))
        print(f"{split}: {len(text)} chars, {len(ids)} tokens, {len(text) / len(ids):.2f} chars/token")


if __name__ == "__main__":
    main()
