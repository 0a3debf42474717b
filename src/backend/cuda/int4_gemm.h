// Weight-only INT4 linear layers on the GPU (W4A16): y[n, out] = x[n, in] · Wᵀ (+ bias) with
// W[o, i] = (q[o, i] - z[o, i / G]) · s[o, i / G] (quant/format.h: u8 [out, in/2] nibbles, low
// nibble the even input; f16 scales and u8 zero points [out, in/G]), bf16 activations, fp32
// accumulation, bf16 output rounded once.
//   decode (n <= kW4GemvMaxRows), two kernels, x rows in tiles of 8 (the weights are read once
//   per tile), both streaming the packed weights with 16-byte loads (32 weights) that skip L1:
//   * tensor-core kernel (in % 128 == 0 and G % 128 == 0, the layout of the 8B model): each warp
//     owns 16 or 32 output rows and a share of the 128-input spans; a lane holds 16 bytes of two
//     rows per span, turns the nibbles into exact bf16 pairs q - z (the nibble placed in the
//     mantissa of 128.0, 128 + z subtracted by one packed bf16 instruction) and feeds them as
//     the A operand of mma.m16n8k16 (bf16 in, fp32 accumulation, products exact) against the x
//     tile as B; each span's fp32 sums are scaled by the group's scale in fp32. The inputs'
//     order inside an mma is free, so neither the weights nor x are re-laid out in memory. The
//     warps of a block (4 or 8) split the spans and meet in shared memory.
//   * scalar kernel (every in % 32 == 0, G % 32 == 0): each 128-thread block owns 2 or 4 output
//     channels whose inputs its threads split; nibbles become exact floats q - z in the mantissa
//     of 2^23; each 32-weight chunk's sum is scaled once.
//   Which variant runs is timed per shape on first use (rows_choice.h); OST_INT4_GEMV=old keeps
//   to the scalar kernel (A/B runs). Optional GLU epilogue as W8A16.
//   larger n (prefill): launch_dequant_int4 widens the matrix into a bf16 scratch and the caller
//     runs its bf16 GEMM.
// Needs in % 32 == 0 and G % 32 == 0 (the caller widens other INT4 matrices to bf16).
#pragma once
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "core/status.h"

namespace ost::cuda {

constexpr int64_t kW4GemvMaxRows = 32;

// W4A16Params::variant values: the scalar kernel with 2 or 4 output channels per block, or the
// tensor-core kernel with 16 or 32 weight rows per block and 4 or 8 warps (rows · 100 + warps).
enum W4Variant : int {
  kW4Scalar2 = 2,
  kW4Scalar4 = 4,
  kW4Mma16x4 = 1604,
  kW4Mma16x8 = 1608,
  kW4Mma32x4 = 3204,
  kW4Mma32x8 = 3208,
};

struct W4A16Params {
  const __nv_bfloat16* x = nullptr;     // bf16 [n, in], 16-byte aligned
  const uint8_t* w = nullptr;           // u8 [out, in/2], 16-byte aligned
  const __half* scale = nullptr;        // f16 [out, in/G]
  const uint8_t* zero = nullptr;        // u8 [out, in/G]
  const __nv_bfloat16* bias = nullptr;  // bf16 [out] or null
  __nv_bfloat16* y = nullptr;           // bf16 [n, out]
  int64_t n = 0, out = 0, in = 0;
  int group = 128;
  // A W4Variant; 0: OST_W4_ROWS when set to one, else timed per shape on first use (the
  // default until then: kW4Mma16x8 where the tensor-core kernel applies, else kW4Scalar4).
  int variant = 0;
  bool glu = false;  // W has 2·out rows (gate then up); y = SiLU(gate)·up, n <= 8
};
// Whether the tensor-core variants can run this shape (in and group multiples of 128).
bool w4a16_mma_ok(int64_t in, int group);
// Makes every later call with variant 0 run `v` where it applies (0: the timed choice again);
// for tests that run a whole model on one variant.
void w4a16_force_variant(int v);
Status launch_w4a16_gemv(const W4A16Params& p, cudaStream_t s);

// dst bf16 [rows, cols] = (q - z) · s.
struct DequantInt4Params {
  const uint8_t* w = nullptr;
  const __half* scale = nullptr;
  const uint8_t* zero = nullptr;
  __nv_bfloat16* dst = nullptr;
  int64_t rows = 0, cols = 0;
  int group = 128;
};
Status launch_dequant_int4(const DequantInt4Params& p, cudaStream_t s);

}  // namespace ost::cuda
