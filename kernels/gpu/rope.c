/* Rotate-half RoPE (kernels/src/float.rs rope_rotate_half). The cos/sin of every position
 * come from a table the host fills with the reference's own f32 math (GPU sin/cos lose
 * accuracy at large angles), so the rotation itself matches the reference bit for bit. */
#include "onebit_gpu.h"

#define ROPE_WG 256

/* x: [n_tokens, n_heads, head_dim], rotated in place; token t is at position pos0 + t.
 * table: [max_pos, head_dim]: cos of the head_dim/2 frequencies, then their sin.
 * Grid: ceil(n_heads·head_dim/2 / 256) × n_tokens work-groups. */
KERNEL(rope, ROPE_WG) GLOBAL float *x, GLOBAL const float *table, u32 pos0, u32 n_heads, u32 head_dim) {
    u32 half = head_dim / 2, t = GROUP_ID(1);
    GLOBAL const float *cs = table + (u64)(pos0 + t) * head_dim;
    GLOBAL float *xt = x + (u64)t * n_heads * head_dim;
    FOR_LANES(l, ROPE_WG) {
        u32 i = GROUP_ID(0) * ROPE_WG + l;
        if (i < n_heads * half) {
            u32 head = i / half, k = i % half;
            GLOBAL float *h = xt + head * head_dim;
            float a = h[k], b = h[k + half], c = cs[k], s = cs[half + k];
            h[k] = a * c - b * s;
            h[k + half] = b * c + a * s;
        }
    }
}
