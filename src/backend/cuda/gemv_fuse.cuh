// The decode fusions shared by the GEMV kernels of gemv.cu (bf16 weights) and quant_gemm.cu
// (INT8 weights), see GemvFusion in gemv.h. Device code; include from .cu files only.
#pragma once
#include <cuda_bf16.h>

#include <algorithm>
#include <cstdint>

#include "backend/cuda/gemv.h"

namespace ost::cuda::fuse {

// How the kernel reads its input x: as is, as the RMSNorm of the residual stream, or as
// SiLU(gate)·up of the gate_up product.
__device__ __forceinline__ float rb(float v) { return __bfloat162float(__float2bfloat16(v)); }

// kGlu: x as is, the block's rows pair gate rows with up rows and it writes SiLU(gate)·up.
enum XMode { kPlain = 0, kNorm = 1, kSilu = 2, kGlu = 3 };

// Output row r (of R) of a block starting at o0: with the GLU epilogue the first R/2 rows are
// gate rows o0 .. and the rest the matching up rows out + o0 .. (W has 2·out rows); rows past
// the end re-read the last.
template <int X, int R>
__device__ __forceinline__ int64_t block_row(int64_t o0, int r, int64_t out) {
  if constexpr (X == kGlu) {
    constexpr int RH = R > 1 ? R / 2 : 1;  // R = 1 is never launched
    return std::min(o0 + r % RH, out - 1) + (r >= RH ? out : 0);
  } else {
    return std::min(o0 + r, out - 1);
  }
}

// SiLU(g)·u from the bf16-rounded products, as launch_silu_mul computes it from gate_up.
__device__ __forceinline__ __nv_bfloat16 glu(float g, float u) {
  g = rb(g);
  u = rb(u);
  return __float2bfloat16(rb(g / (1.0f + expf(-g))) * u);
}

__device__ __forceinline__ void bf16x8(const uint4& u, float* f) {
  const uint32_t v[4] = {u.x, u.y, u.z, u.w};
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    f[2 * i] = __uint_as_float(v[i] << 16);
    f[2 * i + 1] = __uint_as_float(v[i] & 0xffff0000u);
  }
}

// The 8 inputs 8c .. 8c + 7 of x row n as floats. kNorm: x is the residual stream [n, in] and
// rn its row's 1 / rms: bf16(bf16(x · rn) · norm_w) as launch_add_rms_norm writes it. kSilu: x is
// gate_up [n, 2·in]: bf16(bf16(silu(g)) · u) as launch_silu_mul writes it.
template <int MODE>
__device__ __forceinline__ void load_x8(const __nv_bfloat16* x, int64_t in, int n, int64_t c,
                                        const __nv_bfloat16* norm_w, float rn, float* f) {
  if constexpr (MODE == kPlain || MODE == kGlu) {
    bf16x8(__ldg(reinterpret_cast<const uint4*>(x + n * in) + c), f);
  } else if constexpr (MODE == kNorm) {
    float w[8];
    bf16x8(__ldg(reinterpret_cast<const uint4*>(x + n * in) + c), f);
    bf16x8(__ldg(reinterpret_cast<const uint4*>(norm_w) + c), w);
#pragma unroll
    for (int k = 0; k < 8; ++k) f[k] = rb(rb(f[k] * rn) * w[k]);
  } else {
    float u[8];
    const __nv_bfloat16* g = x + n * 2 * in;
    bf16x8(__ldg(reinterpret_cast<const uint4*>(g) + c), f);
    bf16x8(__ldg(reinterpret_cast<const uint4*>(g + in) + c), u);
#pragma unroll
    for (int k = 0; k < 8; ++k) f[k] = rb(rb(f[k] / (1.0f + expf(-f[k]))) * u[k]);
  }
}

// kNorm: 1 / rms of the N rows of x (every thread gets them), as launch_add_rms_norm computes
// it (the sum of squares in another order). Uses __syncthreads; call from all threads.
template <int N, int THREADS>
__device__ __forceinline__ void row_rms(const __nv_bfloat16* x, int64_t in, float eps, float (&rn)[N]) {
  __shared__ float part[THREADS / 32][N];
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
#pragma unroll
  for (int n = 0; n < N; ++n) {
    float ss = 0.0f;
    for (int64_t c = threadIdx.x; c < in / 8; c += THREADS) {
      float v[8];
      bf16x8(__ldg(reinterpret_cast<const uint4*>(x + n * in) + c), v);
#pragma unroll
      for (int k = 0; k < 8; ++k) ss += v[k] * v[k];
    }
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) ss += __shfl_xor_sync(0xffffffffu, ss, o);
    if (lane == 0) part[warp][n] = ss;
  }
  __syncthreads();
#pragma unroll
  for (int n = 0; n < N; ++n) {
    float ss = 0.0f;
#pragma unroll
    for (int w = 0; w < THREADS / 32; ++w) ss += part[w][n];
    rn[n] = 1.0f / sqrtf(ss / float(in) + eps);
  }
}

// The output element: v (fp32, bias and scale applied) rounded to bf16, then with a residual
// bf16(residual + that) as launch_add_rms_norm adds it.
__device__ __forceinline__ __nv_bfloat16 epilogue(float v, const __nv_bfloat16* residual, int64_t idx) {
  __nv_bfloat16 y = __float2bfloat16(v);
  if (residual) y = __float2bfloat16(__bfloat162float(residual[idx]) + __bfloat162float(y));
  return y;
}

}  // namespace ost::cuda::fuse
