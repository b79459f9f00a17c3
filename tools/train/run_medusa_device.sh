#!/usr/bin/env bash
# The GPU run that trained onebit-tiny's Medusa heads: a CPU smoke run of the same script
# first (a few steps, tiny batch), then the real run. Run from the repository root on a
# machine with PyTorch (and an NVIDIA GPU), with the ids from tokenize_ids.py in
# tools/train/data/medusa (train.bin, heldout.bin). OUT defaults to ./medusa-out.
set -euo pipefail
OUT=${OUT:-medusa-out}
mkdir -p "$OUT"
cd tools/train
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader || true
HF=../../engine/models/onebit-tiny/hf
PYTHONUNBUFFERED=1 python3 train_medusa.py --hf $HF --ids data/medusa/train.bin --out "$OUT/smoke" \
  --device cpu --steps 3 --batch 2 --ctx 64 --heads 2 2>&1 | tee "$OUT/smoke_log.txt"
PYTHONUNBUFFERED=1 python3 train_medusa.py --hf $HF --ids data/medusa/train.bin \
  --heldout-ids data/medusa/heldout.bin --out "$OUT/run" "$@" 2>&1 | tee "$OUT/log.txt"
