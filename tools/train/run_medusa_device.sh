#!/usr/bin/env bash
# The GPU run that trained onebit-tiny's Medusa heads (tools/train/runs/medusa-h200-seed1234):
# a CPU smoke run of the same script first (3 steps, tiny batch, 2 heads), then the real run.
# The training data is the frozen model's own text: 512 sequences of 384 tokens sampled
# (temperature 1) after BOS, so the machine needs only the repository (engine/models/
# onebit-tiny/hf) and PyTorch. To train on a corpus instead, pass --ids with ids from
# tokenize_ids.py. Run from the repository root; OUT defaults to ./medusa-out.
set -euo pipefail
OUT=${OUT:-medusa-out}
mkdir -p "$OUT"
cd tools/train
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader || true
HF=../../engine/models/onebit-tiny/hf
export PYTHONUNBUFFERED=1
python3 train_medusa.py --hf $HF --out "$OUT/smoke" --device cpu --generate 2 --ctx 32 --steps 3 \
  --batch 2 --heads 2 2>&1 | tee "$OUT/smoke_log.txt"
python3 train_medusa.py --hf $HF --out "$OUT/run" --generate 512 --ctx 384 --steps 3000 \
  --time-budget 170 --batch 32 --heads 4 "$@" 2>&1 | tee "$OUT/log.txt"
