// Weight-only INT4 linear layers on the GPU (W4A16): y[n, out] = x[n, in] · Wᵀ (+ bias) with
// W[o, i] = (q[o, i] - z[o, i / G]) · s[o, i / G] (quant/format.h: u8 [out, in/2] nibbles, low
// nibble the even input; f32 scales and u8 zero points [out, in/G]), bf16 activations, fp32
// accumulation, bf16 output rounded once.
//   decode (n <= kW4GemvMaxRows): launch_w4a16_gemv streams the packed weights with 16-byte
//     loads (32 weights) that skip L1; each 128-thread block owns 2 or 4 output channels whose
//     inputs its threads split (two chunks per channel in flight), the sums meeting in shared
//     memory; x rows go in tiles of 8 (the weights are read once per tile). Each 32-weight chunk
//     lies in one group: its sum of (q - z)·x is scaled once. Optional GLU epilogue as W8A16.
//   larger n (prefill): launch_dequant_int4 widens the matrix into a bf16 scratch and the caller
//     runs its bf16 GEMM.
// Needs in % 32 == 0 and G % 32 == 0 (the caller widens other INT4 matrices to bf16).
#pragma once
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "core/status.h"

namespace ost::cuda {

constexpr int64_t kW4GemvMaxRows = 32;

struct W4A16Params {
  const __nv_bfloat16* x = nullptr;     // bf16 [n, in], 16-byte aligned
  const uint8_t* w = nullptr;           // u8 [out, in/2], 16-byte aligned
  const float* scale = nullptr;         // f32 [out, in/G]
  const uint8_t* zero = nullptr;        // u8 [out, in/G]
  const __nv_bfloat16* bias = nullptr;  // bf16 [out] or null
  __nv_bfloat16* y = nullptr;           // bf16 [n, out]
  int64_t n = 0, out = 0, in = 0;
  int group = 128;
  int rows_per_block = 0;  // 2 or 4; 0: OST_W4_ROWS, else timed per shape on first use (4 until then)
  bool glu = false;        // W has 2·out rows (gate then up); y = SiLU(gate)·up, n <= 8
};
Status launch_w4a16_gemv(const W4A16Params& p, cudaStream_t s);

// dst bf16 [rows, cols] = (q - z) · s.
struct DequantInt4Params {
  const uint8_t* w = nullptr;
  const float* scale = nullptr;
  const uint8_t* zero = nullptr;
  __nv_bfloat16* dst = nullptr;
  int64_t rows = 0, cols = 0;
  int group = 128;
};
Status launch_dequant_int4(const DequantInt4Params& p, cudaStream_t s);

}  // namespace ost::cuda
