#!/usr/bin/env python3
"""A small SentencePiece tokenizer set up as LLaMA-2's is, with golden encodings.

1bitLLM's checkpoints ship LLaMA-2's SentencePiece tokenizer, and bitnet.cpp and llama.cpp
write it into GGUF as `tokenizer.ggml.model = "llama"`: the pieces, their scores and their
types. This writes tests/fixtures/spm/:

- tokenizer.model: a SentencePiece BPE model trained on the zoo's corpus with LLaMA-2's
  trainer settings (byte fallback, split digits, a dummy prefix, no normalization, unk/bos/eos
  at ids 0/1/2);
- vocab.gguf: a GGUF holding only that vocabulary's metadata, written by the `gguf` package
  (llama.cpp's own writer) as its SentencePiece converter lays it out;
- tokenizer.json: the same tokenizer as transformers converts it for LLaMA-2 (`LlamaTokenizerFast`);
- cases.json: texts with the ids SentencePiece itself gives them (no BOS), and its decoding.

Run: python3 tools/zoo/make_spm.py [--out tests/fixtures/spm]
(needs sentencepiece, protobuf, gguf and transformers 4.x: 5.x dropped the slow-to-fast
converter this uses).
"""

import argparse
import json
import os
import shutil
import sys
import tempfile

import gguf
import sentencepiece as spm

sys.path.insert(0, os.path.dirname(__file__))
from make_fixtures import CORPUS, EVAL_TEXT  # noqa: E402

CASES = [
    "Hello, world!",
    "The quick brown fox jumps over the lazy dog.",
    " leading space",
    "two  spaces and   three",
    "trailing space ",
    "line one\nline two\n\nline four",
    "tabs\tand\tmore",
    "Numbers 42, 1024 and 3.14159",
    "日本語のテキスト",
    "emoji 🦊 fox",
    "café naïve",
    "<s> is text here, not a token",
    "",
    " ",
    "a",
    EVAL_TEXT,
]

# llama.cpp's token types (gguf.TokenType): what each SentencePiece piece becomes.
def token_type(sp, i):
    if sp.is_unknown(i):
        return gguf.TokenType.UNKNOWN
    if sp.is_control(i):
        return gguf.TokenType.CONTROL
    if sp.is_unused(i):
        return gguf.TokenType.UNUSED
    if sp.is_byte(i):
        return gguf.TokenType.BYTE
    return gguf.TokenType.NORMAL


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="tests/fixtures/spm")
    ap.add_argument("--vocab-size", type=int, default=514)  # the 1bitllm fixture's vocabulary
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)

    # A fixed scratch path: the trainer records its input's path in the model it writes.
    tmp = os.path.join(tempfile.gettempdir(), "onebit-make-spm")
    os.makedirs(tmp, exist_ok=True)
    try:
        corpus = os.path.join(tmp, "corpus.txt")
        with open(corpus, "w") as f:
            f.write(CORPUS + EVAL_TEXT)
        prefix = os.path.join(tmp, "tokenizer")
        spm.SentencePieceTrainer.train(
            input=corpus,
            model_prefix=prefix,
            model_type="bpe",
            vocab_size=args.vocab_size,
            byte_fallback=True,
            split_digits=True,
            add_dummy_prefix=True,
            normalization_rule_name="identity",
            remove_extra_whitespaces=False,
            allow_whitespace_only_pieces=True,
            character_coverage=1.0,
            unk_id=0,
            bos_id=1,
            eos_id=2,
            pad_id=-1,
            num_threads=1,
            minloglevel=2,
        )
        model_bytes = open(prefix + ".model", "rb").read()
    finally:
        shutil.rmtree(tmp)
    model_path = os.path.join(args.out, "tokenizer.model")
    with open(model_path, "wb") as f:
        f.write(model_bytes)
    sp = spm.SentencePieceProcessor(model_file=model_path)
    n = sp.get_piece_size()

    w = gguf.GGUFWriter(os.path.join(args.out, "vocab.gguf"), "llama")
    w.add_name("spm-vocab")
    w.add_tokenizer_model("llama")
    w.add_token_list([sp.id_to_piece(i) for i in range(n)])
    w.add_token_scores([sp.get_score(i) for i in range(n)])
    w.add_token_types([int(token_type(sp, i)) for i in range(n)])
    w.add_bos_token_id(sp.bos_id())
    w.add_eos_token_id(sp.eos_id())
    w.add_unk_token_id(sp.unk_id())
    w.add_add_bos_token(True)
    w.add_add_eos_token(False)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()

    # LLaMA-2's own tokenizer.json is transformers' legacy conversion (a Prepend and Replace
    # normalizer, no pre-tokenizer); transformers 4.x's LlamaConverter makes it from the model.
    from transformers.convert_slow_tokenizer import LlamaConverter

    class Original:
        vocab_file = model_path
        legacy = True
        add_prefix_space = True

        def convert_ids_to_tokens(self, i):
            return sp.id_to_piece(i)

    fast = LlamaConverter(Original()).converted()
    fast.save(os.path.join(args.out, "tokenizer.json"))

    cases = []
    for text in CASES:
        ids = sp.encode(text)
        hf = fast.encode(text, add_special_tokens=False).ids
        cases.append({"text": text, "ids": ids, "decoded": sp.decode(ids), "transformers_ids": hf})
        if hf != ids:
            print(f"transformers differs from sentencepiece on {text[:30]!r}", file=sys.stderr)
    with open(os.path.join(args.out, "cases.json"), "w") as f:
        json.dump(
            {
                "sentencepiece": spm.__version__,
                "vocab_size": n,
                "bos": sp.bos_id(),
                "eos": sp.eos_id(),
                "unk": sp.unk_id(),
                "cases": cases,
            },
            f,
            indent=1,
            ensure_ascii=False,
        )
        f.write("\n")
    print(f"{args.out}: {n} pieces, {len(cases)} cases")


if __name__ == "__main__":
    main()
