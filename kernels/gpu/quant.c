/* Per-token absmax int8 activation quantization (kernels/src/act_quant.rs):
 * s = 127 / max(|x|, 1e-5), q = clamp(round_half_even(x·s), -128, 127); the row's sum
 * goes with the scale for the ternary epilogue. One work-group per row. */
#include "onebit_gpu.h"

#define QUANT_WG 256
LDS(float, quant_max, QUANT_WG);
LDS(i32, quant_sum, QUANT_WG);

static inline float absmax2(float a, float b) { return a > b ? a : b; }

/* x: [rows, cols] f32; q: [rows, kpad] i8 (tail zeroed); act: [rows]. Grid: rows work-groups. */
KERNEL(act_quant, QUANT_WG) GLOBAL const float *x, GLOBAL i8 *q, GLOBAL struct onebit_act *act, u32 cols,
    u32 kpad) {
    u32 row = GROUP_ID(0);
    GLOBAL const float *xr = x + (u64)row * cols;
    GLOBAL i8 *qr = q + (u64)row * kpad;
    FOR_LANES(l, QUANT_WG) {
        float m = 0.0f;
        for (u32 i = l; i < cols; i += QUANT_WG) {
            float a = __builtin_fabsf(xr[i]);
            m = a > m ? a : m;
        }
        quant_max[l] = m;
    }
    TREE_REDUCE(quant_max, QUANT_WG, QUANT_WG, absmax2);
    BARRIER();
    FOR_LANES(l, QUANT_WG) {
        float scale = 127.0f / ONEBIT_MAX(quant_max[0], 1e-5f);
        i32 sum = 0;
        for (u32 i = l; i < kpad; i += QUANT_WG) {
            i32 v = 0;
            if (i < cols) {
                float r = __builtin_rintf(xr[i] * scale);
                r = r < -128.0f ? -128.0f : (r > 127.0f ? 127.0f : r);
                /* NaN (from a NaN input, or inf · 0 when the row's max is inf) becomes 0, as
                 * v_cvt_i32_f32 and the reference's `as` give; x86's cvttss2si would give
                 * INT_MIN, and the row sum with it */
                v = r == r ? (i32)r : 0;
            }
            qr[i] = (i8)v;
            sum += v;
        }
        quant_sum[l] = sum;
    }
    TREE_REDUCE(quant_sum, QUANT_WG, QUANT_WG, ONEBIT_ADD);
    BARRIER();
    FOR_LANES(l, QUANT_WG) {
        if (l == 0) {
            act[row].scale = 127.0f / ONEBIT_MAX(quant_max[0], 1e-5f);
            act[row].sum = quant_sum[0];
        }
    }
}
