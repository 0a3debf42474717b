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

// Decode fusions (the runner's decode step; Gemm never sets them). At most one of norm_w and
// silu; residual with either or alone:
//   norm_w: x is the residual stream and the product reads bf16(bf16(x · rsqrt(mean(x²) + eps))
//           · norm_w) (launch_add_rms_norm without delta), each block computing the rms itself;
//   silu:   x is gate_up bf16 [n, 2·in] and the product reads bf16(bf16(silu(g)) · u)
//           (launch_silu_mul);
//   residual: y = bf16(residual + bf16(W·x (+ bias))), the residual add of launch_add_rms_norm;
//           y may be residual (in place);
//   glu:    W is gate_up [2·out, in] (bias [2·out]) and y [n, out] = bf16(bf16(silu(g)) · u) of
//           the bf16-rounded products g, u (gate_up GEMM + launch_silu_mul): each block pairs
//           gate rows with their up rows (2 or more rows per block). Alone only.
struct GemvFusion {
  const __nv_bfloat16* norm_w = nullptr;  // bf16 [in]
  float eps = 1e-6f;
  bool silu = false;
  const __nv_bfloat16* residual = nullptr;  // bf16 [n, out]
  bool glu = false;
};

struct GemvParams {
  const __nv_bfloat16* x = nullptr;     // bf16 [n, in]
  const __nv_bfloat16* w = nullptr;     // bf16 [out, in]
  const __nv_bfloat16* bias = nullptr;  // bf16 [out] or null
  __nv_bfloat16* y = nullptr;           // bf16 [n, out]
  int n = 0;
  int64_t out = 0, in = 0;
  bool preload = false;  // set by launch_gemv: the first weight loads are issued before waiting for x
  GemvFusion fuse;
};

constexpr int kGemvMaxRows = 8;
// Whether the decode GEMVs (bf16, FP8 warp kernel) issue their first weight loads before waiting for the
// kernel before them (programmatic dependent launch). On unless OST_GEMV_PRELOAD=0.
bool gemv_preload_enabled();
// in must be a multiple of 8 and x, w 16-byte aligned (with fuse.silu, the rows of x are 2·in long).
bool gemv_supports(int64_t n, int64_t in, const void* x, const void* w);
// The variants: output rows per block (1, 2, 4; 8 when n <= 4).
int gemv_variants(int64_t n, int* rows_per_block);
// allow_pdl = false: a plain launch even when programmatic dependent launch is on (timing).
Status launch_gemv(const GemvParams& p, int rows_per_block, cudaStream_t s, bool allow_pdl = true);
// Rows per block of the fused decode launches (not tuned): OST_FUSED_ROWS (1, 2, 4, 8 when
// n <= 4), else 4.
int fused_gemv_rows(int64_t n);

}  // namespace ost::cuda
