/* Sherry 3:4 sparse ternary weights (see kernels/src/sherry/mod.rs) times int8 activations.
 * A group of 128 weights is 5 u32 words: words 0..3 hold the 4-bit indices (byte j: block j
 * in bits 3:0, block j+16 in bits 7:4), word 4 the sign bits (bit b: block b). A block's
 * four codes (w + 1, weight 0 in the low byte) are built from its index and sign with a few
 * shifts, then meet the block's four activations, one u32 word, in one dot4. The sums are
 * the I2_S kernels' (Σ code·q), and so is the epilogue. */
#include "onebit_gpu.h"

#define SHERRY_GROUP_WORDS 5

/* The four codes of a block: the three nonzero weights' codes in column order (2 for +1,
 * 0 for −1; the first is −1 when `sign`, the second and third flip against it by index
 * bits 2 and 3), with code 1 (weight 0) inserted at byte `index & 3`. */
static inline u32 sherry_codes(u32 index, u32 sign) {
    u32 z = index & 3;
    u32 c0 = sign ? 0u : 2u;
    u32 c1 = (sign ^ ((index >> 2) & 1)) ? 0u : 2u;
    u32 c2 = (sign ^ ((index >> 3) & 1)) ? 0u : 2u;
    u32 three = c0 | (c1 << 8) | (c2 << 16);
    u32 below = (1u << (8 * z)) - 1u;
    return (three & below) | (1u << (8 * z)) | ((three & ~below) << 8);
}

/* Σ code·q over one group: `g` its 5 words, `qg` its 32 activation words. */
static inline i32 sherry_group(const u32 *g, const u32 *qg, i32 acc) {
    u32 signs = g[4];
    for (u32 j = 0; j < 16; j++) {
        u32 byte = (g[j / 4] >> (8 * (j % 4))) & 0xffu;
        acc = onebit_dot4_u8i8(sherry_codes(byte & 15u, (signs >> j) & 1u), qg[j], acc);
        acc = onebit_dot4_u8i8(sherry_codes(byte >> 4, (signs >> (j + 16)) & 1u), qg[j + 16], acc);
    }
    return acc;
}

static inline float sherry_epilogue(i32 dot, struct onebit_act act, float w_scale) {
    return (float)(dot - act.sum) / act.scale * w_scale;
}

#define SHERRY_GEMV_WG 256
#define SHERRY_GEMV_LANES_PER_ROW 32
#define SHERRY_GEMV_ROWS_PER_WG (SHERRY_GEMV_WG / SHERRY_GEMV_LANES_PER_ROW)
LDS(i32, sherry_gemv_red, SHERRY_GEMV_WG);

/* Decode: out[r] = W[r]·q for one activation row. 8 rows per work-group, 32 lanes per row
 * striding over the row's groups. Grid: ceil(rows/8) work-groups. `groups` = padded_cols /
 * 128 (a row is 5·groups words). */
KERNEL(gemv_sherry, SHERRY_GEMV_WG) GLOBAL const u32 *w, GLOBAL const u32 *q,
    GLOBAL const struct onebit_act *act, float w_scale, GLOBAL float *out, u32 rows, u32 groups) {
    u32 row0 = GROUP_ID(0) * SHERRY_GEMV_ROWS_PER_WG;
    FOR_LANES(l, SHERRY_GEMV_WG) {
        u32 r = row0 + l / SHERRY_GEMV_LANES_PER_ROW;
        i32 acc = 0;
        if (r < rows) {
            GLOBAL const u32 *row = w + (u64)r * groups * SHERRY_GROUP_WORDS;
            for (u32 g = l % SHERRY_GEMV_LANES_PER_ROW; g < groups; g += SHERRY_GEMV_LANES_PER_ROW) {
                u32 words[SHERRY_GROUP_WORDS];
                for (u32 i = 0; i < SHERRY_GROUP_WORDS; i++)
                    words[i] = row[g * SHERRY_GROUP_WORDS + i];
                u32 qw[32];
                for (u32 i = 0; i < 32; i++)
                    qw[i] = q[g * 32 + i];
                acc = sherry_group(words, qw, acc);
            }
        }
        sherry_gemv_red[l] = acc;
    }
    TREE_REDUCE(sherry_gemv_red, SHERRY_GEMV_WG, SHERRY_GEMV_LANES_PER_ROW, ONEBIT_ADD);
    BARRIER();
    FOR_LANES(l, SHERRY_GEMV_WG) {
        u32 r = row0 + l / SHERRY_GEMV_LANES_PER_ROW;
        if (l % SHERRY_GEMV_LANES_PER_ROW == 0 && r < rows)
            out[r] = sherry_epilogue(sherry_gemv_red[l], act[0], w_scale);
    }
}

#define SHERRY_GEMM_WG 256
#define SHERRY_GEMM_TILE_ROWS 32
#define SHERRY_GEMM_TILE_TOKENS (SHERRY_GEMM_WG / SHERRY_GEMM_TILE_ROWS)
#define SHERRY_GEMM_KGROUPS 8 /* groups of a row staged in LDS per step */
LDS(u32, sherry_gemm_w, SHERRY_GEMM_TILE_ROWS * SHERRY_GEMM_KGROUPS * SHERRY_GROUP_WORDS);
LDS(u32, sherry_gemm_q, SHERRY_GEMM_TILE_TOKENS * SHERRY_GEMM_KGROUPS * 32);
LDS(i32, sherry_gemm_acc, SHERRY_GEMM_WG);

/* Prefill: out[t, r] = W[r]·q[t] for n activation rows, a 32-row × 8-token tile per
 * work-group with a K chunk of weights and activations staged in LDS, as gemm_i2s. Grid:
 * ceil(rows/32) × ceil(n/8) work-groups. */
KERNEL(gemm_sherry, SHERRY_GEMM_WG) GLOBAL const u32 *w, GLOBAL const u32 *q,
    GLOBAL const struct onebit_act *acts, float w_scale, GLOBAL float *out, u32 rows, u32 n, u32 groups) {
    u32 row0 = GROUP_ID(0) * SHERRY_GEMM_TILE_ROWS, tok0 = GROUP_ID(1) * SHERRY_GEMM_TILE_TOKENS;
    const u32 wchunk = SHERRY_GEMM_KGROUPS * SHERRY_GROUP_WORDS, qchunk = SHERRY_GEMM_KGROUPS * 32;
    FOR_LANES(l, SHERRY_GEMM_WG) { sherry_gemm_acc[l] = 0; }
    for (u32 g0 = 0; g0 < groups; g0 += SHERRY_GEMM_KGROUPS) {
        u32 gn = ONEBIT_MIN((u32)SHERRY_GEMM_KGROUPS, groups - g0);
        BARRIER();
        FOR_LANES(l, SHERRY_GEMM_WG) {
            for (u32 i = l; i < SHERRY_GEMM_TILE_ROWS * wchunk; i += SHERRY_GEMM_WG) {
                u32 r = row0 + i / wchunk, k = i % wchunk;
                sherry_gemm_w[i] = (r < rows && k < gn * SHERRY_GROUP_WORDS)
                    ? w[(u64)r * groups * SHERRY_GROUP_WORDS + g0 * SHERRY_GROUP_WORDS + k] : 0;
            }
            for (u32 i = l; i < SHERRY_GEMM_TILE_TOKENS * qchunk; i += SHERRY_GEMM_WG) {
                u32 t = tok0 + i / qchunk, k = i % qchunk;
                sherry_gemm_q[i] = (t < n && k < gn * 32) ? q[(u64)t * groups * 32 + g0 * 32 + k] : 0;
            }
        }
        BARRIER();
        FOR_LANES(l, SHERRY_GEMM_WG) {
            u32 r = l % SHERRY_GEMM_TILE_ROWS, t = l / SHERRY_GEMM_TILE_ROWS;
            i32 acc = sherry_gemm_acc[l];
            for (u32 g = 0; g < gn; g++) {
                u32 words[SHERRY_GROUP_WORDS];
                for (u32 i = 0; i < SHERRY_GROUP_WORDS; i++)
                    words[i] = sherry_gemm_w[r * wchunk + g * SHERRY_GROUP_WORDS + i];
                u32 qw[32];
                for (u32 i = 0; i < 32; i++)
                    qw[i] = sherry_gemm_q[t * qchunk + g * 32 + i];
                acc = sherry_group(words, qw, acc);
            }
            sherry_gemm_acc[l] = acc;
        }
    }
    BARRIER();
    FOR_LANES(l, SHERRY_GEMM_WG) {
        u32 r = row0 + l % SHERRY_GEMM_TILE_ROWS, t = tok0 + l / SHERRY_GEMM_TILE_ROWS;
        if (r < rows && t < n)
            out[(u64)t * rows + r] = sherry_epilogue(sherry_gemm_acc[l], acts[t], w_scale);
    }
}
