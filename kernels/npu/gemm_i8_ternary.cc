// AIE2P core kernels of onebit's prefill GEMM: int8 activations x ternary weights -> f32.
//
// The same numbers as onebit_kernels::ternary::gemm (the CPU), bit for bit:
//   y[t][r] = (float)(sum_c code[r][c] * q[t][c] - act_sum[t]) / act_scale[t] * w_scale
// with code = w + 1 in {0, 1, 2}, the integer sum in int32, then one IEEE division and one
// multiplication in that order (no fused multiply-add). `onebit selftest --surface npu`
// checks exactly this on the device.
//
// Weight layout (I2_S blocks, as the CPU reads them): per output row, blocks of 128
// elements in 32 bytes; byte j of a block holds element j in bits 7:6, j+32 in 5:4, j+64
// in 3:2, j+96 in 1:0. Rows are padded with code 1 (weight 0), activations with zeros.
//
// One call works on one tile: TILE_M activation rows x TILE_N output rows x one 128-wide
// K block, accumulating into an int32 tile that stays in the core's memory across the
// K blocks (gemm_i8_ternary_zero, then gemm_i8_ternary_block per block, then
// gemm_i8_ternary_epilogue). Written in plain C++ so that Peano compiles it as is; the
// inner loop is where an aie::mmul<4, 8, 8, int8, int8> version goes once this one has
// passed the selftest on hardware.
//
// Not compiled in onebit's CI: it needs the Peano (llvm-aie) compiler. See README.md.

#include <stdint.h>

#ifndef TILE_M
#define TILE_M 32
#endif
#ifndef TILE_N
#define TILE_N 32
#endif
#define BLOCK 128
#define BLOCK_BYTES 32

extern "C" {

// acc[TILE_M][TILE_N] = 0
void gemm_i8_ternary_zero(int32_t *acc) {
  for (int i = 0; i < TILE_M * TILE_N; i++)
    acc[i] = 0;
}

// acc[t][r] += sum over the block's 128 columns of code[r][c] * act[t][c]
//   act:     [TILE_M][BLOCK] int8 (this K block of each activation row)
//   weights: [TILE_N][BLOCK_BYTES] packed codes (this K block of each weight row)
void gemm_i8_ternary_block(const int8_t *act, const uint8_t *weights, int32_t *acc) {
  for (int r = 0; r < TILE_N; r++) {
    int8_t codes[BLOCK];
    const uint8_t *w = weights + r * BLOCK_BYTES;
    for (int j = 0; j < BLOCK_BYTES; j++) {
      codes[j] = (w[j] >> 6) & 3;
      codes[j + 32] = (w[j] >> 4) & 3;
      codes[j + 64] = (w[j] >> 2) & 3;
      codes[j + 96] = w[j] & 3;
    }
    for (int t = 0; t < TILE_M; t++) {
      const int8_t *q = act + t * BLOCK;
      int32_t s = 0;
      for (int c = 0; c < BLOCK; c++)
        s += (int32_t)codes[c] * (int32_t)q[c];
      acc[t * TILE_N + r] += s;
    }
  }
}

// out[t][r] = (acc[t][r] - sum[t]) / scale[t] * w_scale
//   scales: the manifest's "scales" buffer: w_scale (f32), 4 bytes padding, then per
//           activation row of this tile {f32 scale, i32 sum}
//   out:    [TILE_M][TILE_N] f32, row stride TILE_N (the design places it in [m][n])
void gemm_i8_ternary_epilogue(const int32_t *acc, const uint8_t *scales, int row0, float *out) {
  const float w_scale = *(const float *)scales;
  const uint8_t *rows = scales + 8 + 8 * row0;
  for (int t = 0; t < TILE_M; t++) {
    const float a_scale = *(const float *)(rows + 8 * t);
    const int32_t a_sum = *(const int32_t *)(rows + 8 * t + 4);
    for (int r = 0; r < TILE_N; r++) {
      float d = (float)(acc[t * TILE_N + r] - a_sum);
      d = d / a_scale; // kept apart: a fused d * (w_scale / a_scale) rounds differently
      out[t * TILE_N + r] = d * w_scale;
    }
  }
}

} // extern "C"
