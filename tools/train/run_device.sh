#!/usr/bin/env bash
# The one GPU run that trained onebit-tiny: QAT training, HF export and exact evaluation.
# Run from the repository root on a machine with an NVIDIA GPU and PyTorch, with the tokenized
# corpus in tools/train/data/device (train.bin, val.bin, heldout.bin, tokenizer.json: made by
# prepare_data.py and train_tokenizer.py, then copied there). OUT defaults to ./train-out.
# Extra arguments go to train.py: `run_device.sh --sherry` trained the Sherry 3:4 model.
set -euo pipefail
OUT=${OUT:-train-out}
mkdir -p "$OUT"
cd tools/train
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader || true
PYTHONUNBUFFERED=1 python3 train.py --data data/device --out "$OUT/run" "$@" 2>&1 | tee "$OUT/log.txt"
