#!/usr/bin/env bash
# Builds onebit's NPU prefill kernels on a Strix Halo machine with IRON/MLIR-AIE and Peano
# installed (README.md §3), one artifact directory per projection shape:
#
#   kernels/npu/build.sh OUT_DIR M K:N [K:N ...]
#   e.g. for BitNet b1.58 2B-4T with `onebit roofline`'s chunk of 64 rows:
#   kernels/npu/build.sh ~/npu-artifacts 64 2560:2560 2560:640 2560:6912 6912:2560
#
# K is the input width padded to 128, N the output rows. Then run
#   onebit selftest --surface npu --npu-artifacts OUT_DIR
# and, if it passes, `onebit run --surface npu+igpu --npu-artifacts OUT_DIR`.
#
# Not runnable in onebit's CI (no IRON/Peano there); nothing here has been run yet.
set -euo pipefail

if [ $# -lt 3 ]; then
    echo "usage: $0 OUT_DIR M K:N [K:N ...]" >&2
    exit 2
fi
out=$1
m=$2
shift 2
here=$(cd "$(dirname "$0")" && pwd)
: "${PEANO_INSTALL_DIR:?set PEANO_INSTALL_DIR to the llvm-aie install (README.md §3)}"
command -v aiecc.py >/dev/null || { echo "aiecc.py not found: activate the IRON environment" >&2; exit 1; }
cols=${NPU_COLUMNS:-4}

mkdir -p "$out"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# The core kernel once: no FP contraction, so the epilogue rounds as the CPU's does.
"$PEANO_INSTALL_DIR/bin/clang++" --target=aie2p-none-unknown-elf -O2 -std=c++20 \
    -ffp-contract=off -c "$here/gemm_i8_ternary.cc" -o "$work/gemm_i8_ternary.o"

for shape in "$@"; do
    k=${shape%%:*}
    n=${shape##*:}
    name="gemm_i8_ternary_${m}x${k}x${n}"
    dir="$out/$name"
    echo "== $name"
    mkdir -p "$dir" "$work/$name"
    cp "$work/gemm_i8_ternary.o" "$work/$name/"
    python3 "$here/gemm_i8_ternary.py" "$m" "$k" "$n" "$cols" >"$work/$name/design.mlir"
    (cd "$work/$name" && aiecc.py --aie-generate-xclbin --xclbin-name=final.xclbin \
        --aie-generate-npu-insts --npu-insts-name=insts.bin \
        --xclbin-kernel-name=MLIR_AIE --no-xchesscc --no-xbridge --no-compile-host \
        --peano "$PEANO_INSTALL_DIR" design.mlir)
    cp "$work/$name/final.xclbin" "$work/$name/insts.bin" "$dir/"
    cat >"$dir/manifest.json" <<JSON
{
  "format": "onebit-npu-kernel",
  "version": 1,
  "name": "$name",
  "xclbin": "final.xclbin",
  "instructions": "insts.bin",
  "kernel": "MLIR_AIE",
  "args": [
    {"kind": "u64", "value": 3},
    {"kind": "u64", "value": 0},
    {"kind": "u32", "value": 0},
    {"kind": "buffer", "name": "act", "access": "read", "bytes": $((m * k))},
    {"kind": "buffer", "name": "weights", "access": "read", "bytes": $((n * k / 4))},
    {"kind": "buffer", "name": "scales", "access": "read", "bytes": $((8 + 8 * m))},
    {"kind": "buffer", "name": "out", "access": "write", "bytes": $((4 * m * n))}
  ],
  "op": {"name": "gemm_i8_ternary", "m": $m, "k": $k, "n": $n}
}
JSON
done
echo "artifacts in $out; check them with: onebit selftest --surface npu --npu-artifacts $out"
