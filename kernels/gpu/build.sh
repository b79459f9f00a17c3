#!/bin/sh
# Builds the gfx1151 code object from the kernel sources with Debian's clang-19 + lld-19,
# no ROCm. `build.sh` writes bin/onebit-gfx1151.co; `build.sh --check` rebuilds into a
# temporary file and fails if it differs from the committed one (CI, when clang-19 exists).
set -eu
cd "$(dirname "$0")"
CLANG=${CLANG:-clang-19}
SOURCES="onebit.c"  # includes every kernel source
OUT=bin/onebit-gfx1151.co

if ! command -v "$CLANG" >/dev/null 2>&1; then
    echo "build.sh: $CLANG not found; install clang-19 and lld-19 (apt-get install clang-19 lld-19)" >&2
    exit 2
fi

build() {
    # -ffile-prefix-map and a fixed source order keep the output byte-identical across trees.
    "$CLANG" -target amdgcn-amd-amdhsa -mcpu=gfx1151 -nogpulib -ffreestanding -std=c11 -O3 \
        -ffp-contract=off -fno-ident -ffile-prefix-map="$PWD"=. -fuse-ld=lld -Wall -Wextra -Werror \
        -Wno-unused-parameter $SOURCES -o "$1"
}

case "${1:-}" in
--check)
    tmp=$(mktemp)
    trap 'rm -f "$tmp"' EXIT
    build "$tmp"
    if cmp -s "$tmp" "$OUT"; then
        echo "build.sh: $OUT is up to date"
    else
        echo "build.sh: $OUT is stale; run kernels/gpu/build.sh and commit the result" >&2
        exit 1
    fi
    ;;
"")
    build "$OUT"
    echo "build.sh: wrote $OUT ($(wc -c <"$OUT") bytes)"
    ;;
*)
    echo "usage: build.sh [--check]" >&2
    exit 2
    ;;
esac
