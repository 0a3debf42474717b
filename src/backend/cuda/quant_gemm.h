// Weight-only INT8 linear layers on the GPU (W8A16): y[n, out] = x[n, in] · (q[out, in] · s[out])ᵀ
// (+ bias), bf16 activations, int8 weights with one f32 scale per output channel
// (quant/format.h), fp32 accumulation, bf16 output rounded once.
//   decode (n <= kW8GemvMaxRows): launch_w8a16_gemv streams the weights with 16-byte loads that
//     skip L1, each 256-thread block owning 1, 2 or 4 output channels whose inputs its threads
//     split (two chunks per channel in flight), the sums meeting in shared memory; x rows go in
//     tiles of 8 (the weights are read once per tile); from 2 rows without fusions (and
//     rows_per_block 0, in % 64 == 0) the tensor cores instead (mma.m16n8k16 on the int8 weights
//     made exact bf16, up to 32 rows of x as the columns, weights read once), else from 5 rows a
//     warp per two channels, the lanes splitting the inputs;
//   larger n (prefill): launch_dequant_int8 widens the matrix into a bf16 scratch and the caller
//     runs its bf16 GEMM (the product is compute-bound there, the extra pass is small).
#pragma once
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "backend/cuda/gemv.h"
#include "core/status.h"

namespace ost::cuda {

constexpr int64_t kW8GemvMaxRows = 32;
// Where the runner stops using launch_w8a16_gemv (from 2 rows the tensor-core kernel, which
// reads the weights once for up to 32 rows; the older warp kernel's tiles of 8 re-read them:
// H100, seeded 8B, INT8 batch 32 took 32.85 ms per decode step that way, 18.02 ms with the
// widening + bf16 GEMM).
constexpr int64_t kW8GemvRunnerRows = 32;

struct W8A16Params {
  const __nv_bfloat16* x = nullptr;  // bf16 [n, in]
  const int8_t* w = nullptr;         // int8 [out, in], in % 16 == 0, 16-byte aligned rows
  const float* scale = nullptr;      // f32 [out]
  const __nv_bfloat16* bias = nullptr;  // bf16 [out] or null
  __nv_bfloat16* y = nullptr;        // bf16 [n, out]
  int64_t n = 0, out = 0, in = 0;
  int rows_per_block = 0;            // 1, 2 or 4; 0: OST_W8_ROWS, else timed per shape on first use
                                     // (n >= 5 unfused: the warp kernel)
  GemvFusion fuse;                   // decode fusions as for launch_gemv (n <= 8 only)
};
Status launch_w8a16_gemv(const W8A16Params& p, cudaStream_t s);

// dst bf16 [rows, cols] = q · scale[row].
struct DequantInt8Params {
  const int8_t* w = nullptr;
  const float* scale = nullptr;
  __nv_bfloat16* dst = nullptr;
  int64_t rows = 0, cols = 0;
};
Status launch_dequant_int8(const DequantInt8Params& p, cudaStream_t s);

}  // namespace ost::cuda
