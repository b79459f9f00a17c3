/* The tied LM head over an F16 embedding and greedy argmax on the device. */
#include "onebit_gpu.h"

#define HEAD_WG 256
#define HEAD_LANES_PER_ROW 8
#define HEAD_ROWS_PER_WG (HEAD_WG / HEAD_LANES_PER_ROW)
LDS(float, head_acc, HEAD_WG);

/* logits[r] = emb[r] · h over F16 or BF16 rows. Lane k of a row sums the elements ≡ k
 * (mod 8) of the 8-aligned body, then lane 0 adds the 8 partials and the tail in order:
 * the summation order of kernels/src/embd.rs dot_f16, so F16 logits match it exactly
 * (BF16 rows are summed the same way; the CPU sums those sequentially).
 * Grid: ceil(rows/32) work-groups. */
#define LM_HEAD_KERNEL(name, convert)                                                           \
    KERNEL(name, HEAD_WG) GLOBAL const u16 *emb, GLOBAL const float *h, GLOBAL float *logits,      \
        u32 rows, u32 cols) {                                                                   \
        u32 row0 = GROUP_ID(0) * HEAD_ROWS_PER_WG, body = cols / 8 * 8;                         \
        FOR_LANES(l, HEAD_WG) {                                                                 \
            u32 r = row0 + l / HEAD_LANES_PER_ROW, k = l % HEAD_LANES_PER_ROW;                  \
            float acc = 0.0f;                                                                   \
            if (r < rows) {                                                                     \
                GLOBAL const u16 *row = emb + (u64)r * cols;                                    \
                for (u32 i = k; i < body; i += 8)                                               \
                    acc += convert(row[i]) * h[i];                                              \
            }                                                                                   \
            head_acc[l] = acc;                                                                  \
        }                                                                                       \
        BARRIER();                                                                              \
        FOR_LANES(l, HEAD_WG) {                                                                 \
            u32 r = row0 + l / HEAD_LANES_PER_ROW;                                              \
            if (l % HEAD_LANES_PER_ROW == 0 && r < rows) {                                      \
                GLOBAL const u16 *row = emb + (u64)r * cols;                                    \
                float s = -0.0f;                                                                \
                for (u32 k = 0; k < HEAD_LANES_PER_ROW; k++)                                    \
                    s += head_acc[l + k];                                                       \
                for (u32 i = body; i < cols; i++)                                               \
                    s += convert(row[i]) * h[i];                                                \
                logits[r] = s;                                                                  \
            }                                                                                   \
        }                                                                                       \
    }
LM_HEAD_KERNEL(lm_head_f16, onebit_f16_to_f32)
LM_HEAD_KERNEL(lm_head_bf16, onebit_bf16_to_f32)

/* The same for up to 8 hidden rows at once (h: n rows of cols, n ≤ 8), so a batched decode
 * step reads the embedding once for every sequence: logits of row j go to out_j. Each
 * row's sum runs in exactly the order of LM_HEAD_KERNEL, so the results are the same bits.
 * Grid: ceil(rows/32) work-groups. */
#define HEAD_BATCH 8
LDS(float, head_acc_x8, HEAD_WG * HEAD_BATCH);
#define LM_HEAD_X8_KERNEL(name, convert)                                                        \
    KERNEL(name, HEAD_WG) GLOBAL const u16 *emb, GLOBAL const float *h, u32 rows, u32 cols,    \
        u32 n, GLOBAL float *out0, GLOBAL float *out1, GLOBAL float *out2, GLOBAL float *out3,  \
        GLOBAL float *out4, GLOBAL float *out5, GLOBAL float *out6, GLOBAL float *out7) {       \
        u32 row0 = GROUP_ID(0) * HEAD_ROWS_PER_WG, body = cols / 8 * 8;                         \
        u32 nb = n < HEAD_BATCH ? n : HEAD_BATCH;                                               \
        FOR_LANES(l, HEAD_WG) {                                                                 \
            u32 r = row0 + l / HEAD_LANES_PER_ROW, k = l % HEAD_LANES_PER_ROW;                  \
            float acc[HEAD_BATCH] = {0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f};         \
            if (r < rows) {                                                                     \
                GLOBAL const u16 *row = emb + (u64)r * cols;                                    \
                for (u32 i = k; i < body; i += 8) {                                             \
                    float w = convert(row[i]);                                                  \
                    for (u32 j = 0; j < nb; j++)                                                \
                        acc[j] += w * h[(u64)j * cols + i];                                     \
                }                                                                               \
            }                                                                                   \
            for (u32 j = 0; j < HEAD_BATCH; j++)                                                \
                head_acc_x8[j * HEAD_WG + l] = acc[j];                                          \
        }                                                                                       \
        BARRIER();                                                                              \
        FOR_LANES(l, HEAD_WG) {                                                                 \
            u32 r = row0 + l / HEAD_LANES_PER_ROW;                                              \
            if (l % HEAD_LANES_PER_ROW == 0 && r < rows) {                                      \
                GLOBAL const u16 *row = emb + (u64)r * cols;                                    \
                GLOBAL float *outs[HEAD_BATCH] = {out0, out1, out2, out3, out4, out5, out6, out7}; \
                for (u32 j = 0; j < nb; j++) {                                                  \
                    GLOBAL const float *hj = h + (u64)j * cols;                                 \
                    float s = -0.0f;                                                            \
                    for (u32 k = 0; k < HEAD_LANES_PER_ROW; k++)                                \
                        s += head_acc_x8[j * HEAD_WG + l + k];                                  \
                    for (u32 i = body; i < cols; i++)                                           \
                        s += convert(row[i]) * hj[i];                                           \
                    outs[j][r] = s;                                                             \
                }                                                                               \
            }                                                                                   \
        }                                                                                       \
    }
LM_HEAD_X8_KERNEL(lm_head_f16_x8, onebit_f16_to_f32)
LM_HEAD_X8_KERNEL(lm_head_bf16_x8, onebit_bf16_to_f32)

#define ARGMAX_WG 256
LDS(struct onebit_best, argmax_best, ARGMAX_WG);

/* The better of two candidates: larger value, lower index on ties, NaN never wins. */
static inline struct onebit_best better(struct onebit_best a, struct onebit_best b) {
    if (b.value != b.value)
        return a;
    if (a.value != a.value)
        return b;
    if (b.value > a.value || (b.value == a.value && b.index < a.index))
        return b;
    return a;
}

/* Stage 1: best[g] = best of the elements work-group g strides over. Grid: any count. */
KERNEL(argmax_partial, ARGMAX_WG) GLOBAL const float *x, GLOBAL struct onebit_best *best, u32 n) {
    u32 g = GROUP_ID(0), stride = NUM_GROUPS(0) * ARGMAX_WG;
    FOR_LANES(l, ARGMAX_WG) {
        struct onebit_best b = {__builtin_nanf(""), 0xffffffffu};
        for (u32 i = g * ARGMAX_WG + l; i < n; i += stride) {
            struct onebit_best c = {x[i], i};
            b = better(b, c);
        }
        argmax_best[l] = b;
    }
    TREE_REDUCE(argmax_best, ARGMAX_WG, ARGMAX_WG, better);
    BARRIER();
    FOR_LANES(l, ARGMAX_WG) {
        if (l == 0)
            best[g] = argmax_best[0];
    }
}

/* Stage 2: *token = index of the best of n_parts candidates. Grid: 1 work-group. */
KERNEL(argmax_final, ARGMAX_WG) GLOBAL const struct onebit_best *best, GLOBAL u32 *token, u32 n_parts) {
    FOR_LANES(l, ARGMAX_WG) {
        struct onebit_best b = {__builtin_nanf(""), 0xffffffffu};
        for (u32 i = l; i < n_parts; i += ARGMAX_WG)
            b = better(b, best[i]);
        argmax_best[l] = b;
    }
    TREE_REDUCE(argmax_best, ARGMAX_WG, ARGMAX_WG, better);
    BARRIER();
    FOR_LANES(l, ARGMAX_WG) {
        if (l == 0)
            token[0] = argmax_best[0].index == 0xffffffffu ? 0 : argmax_best[0].index;
    }
}
