/* RMSNorm (kernels/src/float.rs rms_norm): out = x / sqrt(mean(x²) + eps) · weight, the sum
 * of squares in f64 as the reference does, so both round the mean the same way. */
#include "onebit_gpu.h"

#define NORM_WG 256
LDS(double, norm_ss, NORM_WG);

/* x, out: [rows, n] (out may alias x); weight: [n]. Grid: rows work-groups. */
KERNEL(rms_norm, NORM_WG) GLOBAL const float *x, GLOBAL const float *weight, GLOBAL float *out, u32 n,
    float eps) {
    u64 base = (u64)GROUP_ID(0) * n;
    FOR_LANES(l, NORM_WG) {
        double ss = 0.0;
        for (u32 i = l; i < n; i += NORM_WG) {
            double v = (double)x[base + i];
            ss += v * v;
        }
        norm_ss[l] = ss;
    }
    TREE_REDUCE(norm_ss, NORM_WG, NORM_WG, ONEBIT_ADD);
    BARRIER();
    FOR_LANES(l, NORM_WG) {
        float inv = 1.0f / __builtin_sqrtf((float)(norm_ss[0] / (double)n) + eps);
        for (u32 i = l; i < n; i += NORM_WG)
            out[base + i] = x[base + i] * inv * weight[i];
    }
}
