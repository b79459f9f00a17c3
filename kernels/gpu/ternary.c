/* Ternary weights (I2_S block layout, see kernels/src/ternary.rs) times int8 activations.
 * A block of 128 weights is 32 bytes; byte j holds elements j, j+32, j+64, j+96 in bits
 * 7:6, 5:4, 3:2, 1:0. So one u32 word of a block gives, per 2-bit group g, four codes of
 * consecutive elements, which meet four consecutive activations in one dot4. Codes are
 * w + 1 in {0, 1, 2}; the epilogue subtracts the activation sum. */
#include "onebit_gpu.h"

/* Σ code·q over words [first, end) stepping by `step` of one packed row. */
static inline i32 ternary_words(GLOBAL const u32 *row, GLOBAL const u32 *q, u32 first, u32 end, u32 step) {
    i32 acc = 0;
    for (u32 wi = first; wi < end; wi += step) {
        u32 w = row[wi];
        /* word wi sits in block wi/8 at byte (wi%8)*4; activation group g starts g*32 later */
        GLOBAL const u32 *qb = q + (wi / 8) * 32 + (wi % 8);
        acc = onebit_dot4_u8i8((w >> 6) & 0x03030303u, qb[0], acc);
        acc = onebit_dot4_u8i8((w >> 4) & 0x03030303u, qb[8], acc);
        acc = onebit_dot4_u8i8((w >> 2) & 0x03030303u, qb[16], acc);
        acc = onebit_dot4_u8i8(w & 0x03030303u, qb[24], acc);
    }
    return acc;
}

static inline float ternary_epilogue(i32 dot, struct onebit_act act, float w_scale) {
    return (float)(dot - act.sum) / act.scale * w_scale;
}

#define GEMV_WG 256
#define GEMV_LANES_PER_ROW 32
#define GEMV_ROWS_PER_WG (GEMV_WG / GEMV_LANES_PER_ROW)
LDS(i32, gemv_red, GEMV_WG);

/* Decode: out[r] = W[r]·q for one activation row. 8 rows per work-group, 32 lanes per row
 * striding over the row's words (so a wave reads 128 contiguous bytes). Grid: ceil(rows/8)
 * work-groups. `kwords` = padded_cols / 16 (u32 words per row). */
KERNEL(gemv_i2s, GEMV_WG) GLOBAL const u32 *w, GLOBAL const u32 *q, GLOBAL const struct onebit_act *act,
    float w_scale, GLOBAL float *out, u32 rows, u32 kwords) {
    u32 row0 = GROUP_ID(0) * GEMV_ROWS_PER_WG;
    FOR_LANES(l, GEMV_WG) {
        u32 r = row0 + l / GEMV_LANES_PER_ROW;
        gemv_red[l] = r < rows ? ternary_words(w + (u64)r * kwords, q, l % GEMV_LANES_PER_ROW, kwords, GEMV_LANES_PER_ROW) : 0;
    }
    TREE_REDUCE(gemv_red, GEMV_WG, GEMV_LANES_PER_ROW, ONEBIT_ADD);
    BARRIER();
    FOR_LANES(l, GEMV_WG) {
        u32 r = row0 + l / GEMV_LANES_PER_ROW;
        if (l % GEMV_LANES_PER_ROW == 0 && r < rows)
            out[r] = ternary_epilogue(gemv_red[l], act[0], w_scale);
    }
}

#define GEMM_WG 256
#define GEMM_TILE_ROWS 32
#define GEMM_TILE_TOKENS (GEMM_WG / GEMM_TILE_ROWS)
#define GEMM_KCHUNK 64 /* u32 words of a row staged in LDS per step (8 blocks) */
LDS(u32, gemm_w, GEMM_TILE_ROWS * GEMM_KCHUNK);
LDS(u32, gemm_q, GEMM_TILE_TOKENS * GEMM_KCHUNK * 4);
LDS(i32, gemm_acc, GEMM_WG);

/* Prefill: out[t, r] = W[r]·q[t] for n activation rows. A 32-row × 8-token tile per
 * work-group; weights and activations of a K chunk are staged in LDS so each is read from
 * memory once per tile. Grid: ceil(rows/32) × ceil(n/8) work-groups. */
KERNEL(gemm_i2s, GEMM_WG) GLOBAL const u32 *w, GLOBAL const u32 *q, GLOBAL const struct onebit_act *acts,
    float w_scale, GLOBAL float *out, u32 rows, u32 n, u32 kwords) {
    u32 row0 = GROUP_ID(0) * GEMM_TILE_ROWS, tok0 = GROUP_ID(1) * GEMM_TILE_TOKENS;
    FOR_LANES(l, GEMM_WG) { gemm_acc[l] = 0; }
    for (u32 k0 = 0; k0 < kwords; k0 += GEMM_KCHUNK) {
        u32 kn = ONEBIT_MIN((u32)GEMM_KCHUNK, kwords - k0);
        BARRIER();
        FOR_LANES(l, GEMM_WG) {
            for (u32 i = l; i < GEMM_TILE_ROWS * GEMM_KCHUNK; i += GEMM_WG) {
                u32 r = row0 + i / GEMM_KCHUNK, k = i % GEMM_KCHUNK;
                gemm_w[i] = (r < rows && k < kn) ? w[(u64)r * kwords + k0 + k] : 0;
            }
            /* activations of the chunk: 4 u32 per weight word (4 element groups) */
            for (u32 i = l; i < GEMM_TILE_TOKENS * GEMM_KCHUNK * 4; i += GEMM_WG) {
                u32 t = tok0 + i / (GEMM_KCHUNK * 4), k = i % (GEMM_KCHUNK * 4);
                gemm_q[i] = (t < n && k < kn * 4) ? q[(u64)t * kwords * 4 + k0 * 4 + k] : 0;
            }
        }
        BARRIER();
        FOR_LANES(l, GEMM_WG) {
            u32 r = l % GEMM_TILE_ROWS, t = l / GEMM_TILE_ROWS;
            i32 acc = gemm_acc[l];
            for (u32 k = 0; k < kn; k++) {
                u32 wv = gemm_w[r * GEMM_KCHUNK + k];
                /* chunk starts on a block boundary (64 words = 8 blocks) */
                u32 qi = t * GEMM_KCHUNK * 4 + (k / 8) * 32 + (k % 8);
                acc = onebit_dot4_u8i8((wv >> 6) & 0x03030303u, gemm_q[qi], acc);
                acc = onebit_dot4_u8i8((wv >> 4) & 0x03030303u, gemm_q[qi + 8], acc);
                acc = onebit_dot4_u8i8((wv >> 2) & 0x03030303u, gemm_q[qi + 16], acc);
                acc = onebit_dot4_u8i8(wv & 0x03030303u, gemm_q[qi + 24], acc);
            }
            gemm_acc[l] = acc;
        }
    }
    BARRIER();
    FOR_LANES(l, GEMM_WG) {
        u32 r = row0 + l % GEMM_TILE_ROWS, t = tok0 + l / GEMM_TILE_ROWS;
        if (r < rows && t < n)
            out[(u64)t * rows + r] = ternary_epilogue(gemm_acc[l], acts[t], w_scale);
    }
}
