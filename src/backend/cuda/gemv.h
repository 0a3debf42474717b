// y[n, out] = x[n, in] · W[out, in]ᵀ (+ bias[out]) for a few rows (n ≤ 8, decode): the product
// is bound by reading W once, so each block streams R rows of W with 16-byte loads that skip
// L1 (x stays there), its 8 warps splitting `in`, fp32 accumulation, bf16 output rounded once
// (bias added before rounding, as the cuBLASLt epilogue does). Gemm times the variants against
// cuBLASLt on first use and keeps the fastest.
#pragma once
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "core/status.h"

namespace ost::cuda {

struct GemvParams {
  const __nv_bfloat16* x = nullptr;     // bf16 [n, in]
  const __nv_bfloat16* w = nullptr;     // bf16 [out, in]
  const __nv_bfloat16* bias = nullptr;  // bf16 [out] or null
  __nv_bfloat16* y = nullptr;           // bf16 [n, out]
  int n = 0;
  int64_t out = 0, in = 0;
  bool prefetch = false;  // set by launch_gemv (OST_GEMV_PREFETCH=1): pull W into L2 before waiting
};

constexpr int kGemvMaxRows = 8;
// in must be a multiple of 8 and x, w 16-byte aligned.
bool gemv_supports(int64_t n, int64_t in, const void* x, const void* w);
// The variants: output rows per block (1, 2, 4; 8 when n <= 4).
int gemv_variants(int64_t n, int* rows_per_block);
// allow_pdl = false: a plain launch even when programmatic dependent launch is on (timing).
Status launch_gemv(const GemvParams& p, int rows_per_block, cudaStream_t s, bool allow_pdl = true);

}  // namespace ost::cuda
