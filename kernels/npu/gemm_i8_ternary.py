#!/usr/bin/env python3
# IRON design of onebit's prefill GEMM for the Strix Halo NPU (XDNA2 / AIE2P, "NPU2"):
#   out[m][n] (f32) = BitLinear(act[m][k] int8, weights[n][k] ternary I2_S, scales)
# The runtime sequence's parameters are, in order, the manifest's buffers:
#   act (m*k bytes), weights (n*k/4 bytes), scales (8 + 8*m bytes), out (4*m*n bytes).
#
# Dataflow: COLS columns x 4 compute cores. Output tiles of TILE_M x TILE_N are dealt to
# the cores round robin. For each of its tiles a core zeroes an int32 accumulator, then
# for every 128-wide K block receives the activation block [TILE_M][128] (broadcast from
# the column's memory tile) and the weight block [TILE_N][32 bytes], and accumulates
# (gemm_i8_ternary_block); after the last block it applies the epilogue with the scales
# and sends the f32 tile back to the shim. Core code: gemm_i8_ternary.cc.
#
# Usage: python3 gemm_i8_ternary.py M K N [COLS] > design.mlir   (see build.sh)
#
# Written against the mlir-aie IRON API (aie.iron, 2025 wheels) but never compiled in
# onebit's CI, which has no IRON/Peano: expect to adjust names to the release you install.
# The check that matters is `onebit selftest --surface npu` on the machine.

import sys

import numpy as np
from aie.iron import Kernel, ObjectFifo, Program, Runtime, Worker
from aie.iron.device import NPU2
from aie.iron.placers import SequentialPlacer
from aie.helpers.taplib import TensorAccessPattern

TILE_M = 32
TILE_N = 32
BLOCK = 128
BLOCK_BYTES = 32
CORES_PER_COL = 4


def design(m, k, n, cols):
    assert m % TILE_M == 0, "m is a whole number of row tiles (onebit pads chunks)"
    assert k % BLOCK == 0, "k is padded to the 128-element block"
    assert n % TILE_N == 0, "n is a whole number of output tiles"
    n_tiles_n = (n + TILE_N - 1) // TILE_N
    n_tiles_m = m // TILE_M
    k_blocks = k // BLOCK
    workers_n = cols * CORES_PER_COL

    act_ty = np.ndarray[(m * k,), np.dtype[np.int8]]
    w_ty = np.ndarray[(n * k // 4,), np.dtype[np.uint8]]
    sc_ty = np.ndarray[(8 + 8 * m,), np.dtype[np.uint8]]
    out_ty = np.ndarray[(m * n,), np.dtype[np.float32]]

    a_blk = np.ndarray[(TILE_M * BLOCK,), np.dtype[np.int8]]
    w_blk = np.ndarray[(TILE_N * BLOCK_BYTES,), np.dtype[np.uint8]]
    acc_ty = np.ndarray[(TILE_M * TILE_N,), np.dtype[np.int32]]
    o_blk = np.ndarray[(TILE_M * TILE_N,), np.dtype[np.float32]]

    zero = Kernel("gemm_i8_ternary_zero", "gemm_i8_ternary.o", [acc_ty])
    block = Kernel("gemm_i8_ternary_block", "gemm_i8_ternary.o", [a_blk, w_blk, acc_ty])
    epilogue = Kernel(
        "gemm_i8_ternary_epilogue", "gemm_i8_ternary.o", [acc_ty, sc_ty, np.int32, o_blk]
    )

    # Per worker: its activation blocks, weight blocks and scales in, f32 tiles out.
    a_fifos = [ObjectFifo(a_blk, name=f"act{i}", depth=2) for i in range(workers_n)]
    w_fifos = [ObjectFifo(w_blk, name=f"w{i}", depth=2) for i in range(workers_n)]
    s_fifos = [ObjectFifo(sc_ty, name=f"sc{i}", depth=1) for i in range(workers_n)]
    o_fifos = [ObjectFifo(o_blk, name=f"out{i}", depth=2) for i in range(workers_n)]

    def tiles_of(i):
        """(row tile, column tile) pairs worker i computes."""
        all_tiles = [(tm, tn) for tm in range(n_tiles_m) for tn in range(n_tiles_n)]
        return all_tiles[i::workers_n]

    def core(a_in, w_in, s_in, o_out, zero, block, epilogue, my_tiles):
        acc = np.zeros((TILE_M * TILE_N,), dtype=np.int32)  # core-local
        sc = s_in.acquire(1)
        for tm, _tn in my_tiles:
            zero(acc)
            for _ in range(k_blocks):
                a = a_in.acquire(1)
                w = w_in.acquire(1)
                block(a, w, acc)
                a_in.release(1)
                w_in.release(1)
            o = o_out.acquire(1)
            epilogue(acc, sc, tm * TILE_M, o)
            o_out.release(1)
        s_in.release(1)

    workers = [
        Worker(
            core,
            [
                a_fifos[i].cons(),
                w_fifos[i].cons(),
                s_fifos[i].cons(),
                o_fifos[i].prod(),
                zero,
                block,
                epilogue,
                tiles_of(i),
            ],
        )
        for i in range(workers_n)
    ]

    rt = Runtime()
    with rt.sequence(act_ty, w_ty, sc_ty, out_ty) as (act, weights, scales, out):
        rt.start(*workers)
        for i in range(workers_n):
            rt.fill(s_fifos[i].prod(), scales)
            for tm, tn in tiles_of(i):
                # Activation rows tm*TILE_M.., one [TILE_M][128] block per K step.
                a_tap = TensorAccessPattern(
                    (m, k),
                    offset=tm * TILE_M * k,
                    sizes=[1, k_blocks, TILE_M, BLOCK],
                    strides=[0, BLOCK, k, 1],
                )
                # Weight rows tn*TILE_N.., one [TILE_N][32 bytes] block per K step.
                w_tap = TensorAccessPattern(
                    (n, k // 4),
                    offset=tn * TILE_N * (k // 4),
                    sizes=[1, k_blocks, TILE_N, BLOCK_BYTES],
                    strides=[0, BLOCK_BYTES, k // 4, 1],
                )
                o_tap = TensorAccessPattern(
                    (m, n),
                    offset=tm * TILE_M * n + tn * TILE_N,
                    sizes=[1, 1, TILE_M, TILE_N],
                    strides=[0, 0, n, 1],
                )
                rt.fill(a_fifos[i].prod(), act, a_tap)
                rt.fill(w_fifos[i].prod(), weights, w_tap)
                rt.drain(o_fifos[i].cons(), out, o_tap, wait=True)

    return Program(NPU2(), rt).resolve_program(SequentialPlacer())


if __name__ == "__main__":
    if len(sys.argv) < 4:
        sys.exit("usage: gemm_i8_ternary.py M K N [COLS]")
    m, k, n = (int(a) for a in sys.argv[1:4])
    cols = int(sys.argv[4]) if len(sys.argv) > 4 else 4
    if n % TILE_N:
        sys.exit(
            f"n = {n} is not a multiple of {TILE_N}: this design has no masked tail yet; "
            "every BitNet projection (2B-4T: 640, 2560, 6912) is one"
        )
    print(design(m, k, n, cols))
