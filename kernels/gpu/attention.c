/* Causal attention with GQA and a flash-decoding split over the KV cache.
 *
 * attn_split: work-group (head, split, token) scores its slice of positions, softmaxes it
 * locally and writes the normalized partial output with the slice's max m and sum l.
 * attn_combine: merges the slices of one (token, head) with weights l·exp(m − M).
 * With a single split the weight ratio is exactly 1 and the dot order and sequential sums are
 * the reference's plain softmax (engine/src/forward.rs attention). So the host build, where
 * __builtin_expf is the C library's expf (what the reference's f32::exp calls too), equals
 * it bit for bit. On the GPU __builtin_expf lowers to a v_exp_f32 sequence that is not
 * glibc's correctly-rounded-in-practice expf, so GPU results agree only to rounding. */
#include "onebit_gpu.h"

#define ATTN_WG 128
#define ATTN_SPLIT_MAX 256
#define ATTN_HEAD_DIM_MAX 256
LDS(float, attn_q, ATTN_HEAD_DIM_MAX);
LDS(float, attn_w, ATTN_SPLIT_MAX);
LDS(float, attn_m, 1);

/* q: [n_tokens, n_heads, head_dim]; kc, vc: [ctx, kv_dim] (kv head j at j·head_dim);
 * token t sits at position pos0 + t and sees positions 0..=pos0+t.
 * part: [n_tokens, n_heads, n_splits, head_dim + 2] (o…, m, l).
 * Grid: n_heads × n_splits × n_tokens work-groups; split_len ≤ 256, head_dim ≤ 256. */
KERNEL(attn_split, ATTN_WG) GLOBAL const float *q, GLOBAL const float *kc, GLOBAL const float *vc,
    GLOBAL float *part, u32 n_heads, u32 n_kv_heads, u32 head_dim, u32 pos0, u32 split_len, float scale) {
    u32 head = GROUP_ID(0), split = GROUP_ID(1), t = GROUP_ID(2), n_splits = NUM_GROUPS(1);
    u32 kv_dim = n_kv_heads * head_dim, kv_off = (head / (n_heads / n_kv_heads)) * head_dim;
    u32 n_ctx = pos0 + t + 1, p0 = split * split_len;
    u32 p1 = ONEBIT_MIN(p0 + split_len, n_ctx);
    u32 np = p1 > p0 ? p1 - p0 : 0;
    GLOBAL float *dst = part + ((u64)(t * n_heads + head) * n_splits + split) * (head_dim + 2);
    FOR_LANES(l, ATTN_WG) {
        for (u32 d = l; d < head_dim; d += ATTN_WG)
            attn_q[d] = q[((u64)t * n_heads + head) * head_dim + d];
    }
    BARRIER();
    FOR_LANES(l, ATTN_WG) {
        for (u32 i = l; i < np; i += ATTN_WG) {
            GLOBAL const float *k = kc + (u64)(p0 + i) * kv_dim + kv_off;
            float s = 0.0f;
            for (u32 d = 0; d < head_dim; d++)
                s += attn_q[d] * k[d];
            attn_w[i] = s * scale;
        }
    }
    BARRIER();
    FOR_LANES(l, ATTN_WG) {
        if (l == 0) {
            float m = -__builtin_inff();
            for (u32 i = 0; i < np; i++)
                m = attn_w[i] > m ? attn_w[i] : m;
            attn_m[0] = m;
        }
    }
    BARRIER();
    FOR_LANES(l, ATTN_WG) {
        for (u32 i = l; i < np; i += ATTN_WG)
            attn_w[i] = __builtin_expf(attn_w[i] - attn_m[0]);
    }
    BARRIER();
    FOR_LANES(l, ATTN_WG) {
        /* every lane sums the same values in the same order: no reduction tree, no drift */
        float sum = 0.0f;
        for (u32 i = 0; i < np; i++)
            sum += attn_w[i];
        float inv = 1.0f / sum;
        for (u32 d = l; d < head_dim; d += ATTN_WG) {
            float o = 0.0f;
            for (u32 i = 0; i < np; i++)
                o += attn_w[i] * inv * vc[(u64)(p0 + i) * kv_dim + kv_off + d];
            dst[d] = np ? o : 0.0f;
        }
        if (l == 0) {
            dst[head_dim] = attn_m[0];
            dst[head_dim + 1] = np ? sum : 0.0f;
        }
    }
}

/* out: [n_tokens, n_heads, head_dim]. Grid: n_heads × n_tokens work-groups. */
KERNEL(attn_combine, ATTN_WG) GLOBAL const float *part, GLOBAL float *out, u32 n_heads, u32 head_dim,
    u32 n_splits) {
    u32 head = GROUP_ID(0), t = GROUP_ID(1), stride = head_dim + 2;
    GLOBAL const float *p = part + (u64)(t * n_heads + head) * n_splits * stride;
    FOR_LANES(l, ATTN_WG) {
        float big = -__builtin_inff(), total = 0.0f;
        for (u32 s = 0; s < n_splits; s++)
            if (p[s * stride + head_dim + 1] > 0.0f)
                big = p[s * stride + head_dim] > big ? p[s * stride + head_dim] : big;
        for (u32 s = 0; s < n_splits; s++) {
            float l_s = p[s * stride + head_dim + 1];
            if (l_s > 0.0f)
                total += l_s * __builtin_expf(p[s * stride + head_dim] - big);
        }
        for (u32 d = l; d < head_dim; d += ATTN_WG) {
            float o = 0.0f;
            for (u32 s = 0; s < n_splits; s++) {
                float l_s = p[s * stride + head_dim + 1];
                if (l_s > 0.0f)
                    o += p[s * stride + d] * (l_s * __builtin_expf(p[s * stride + head_dim] - big) / total);
            }
            out[((u64)t * n_heads + head) * head_dim + d] = o;
        }
    }
}
