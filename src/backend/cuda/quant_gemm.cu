// W8A16 kernels (quant_gemm.h). Decode is bandwidth-bound: bytes = out·in (int8) + 4·out, so the
// floor is that over HBM bandwidth; the x rows (n·in bf16) are small and stay in L1/L2.
#include "backend/cuda/cuda_check.h"
#include "backend/cuda/quant_gemm.h"

#include <algorithm>

namespace ost::cuda {
namespace {

using bf16 = __nv_bfloat16;
constexpr int kWarps = 4;        // per block
constexpr int kRowsPerWarp = 2;  // output channels per warp

// 16 int8 weights · 16 bf16 inputs (two 16-byte loads of x), accumulated into acc.
__device__ __forceinline__ float dot16(const int4 wq, const bf16* __restrict__ xk, float acc) {
  const uint4 x0 = *reinterpret_cast<const uint4*>(xk);
  const uint4 x1 = *reinterpret_cast<const uint4*>(xk + 8);
  const uint32_t xs[8] = {x0.x, x0.y, x0.z, x0.w, x1.x, x1.y, x1.z, x1.w};
  const uint32_t ws[4] = {uint32_t(wq.x), uint32_t(wq.y), uint32_t(wq.z), uint32_t(wq.w)};
#pragma unroll
  for (int j = 0; j < 8; ++j) {
    const uint32_t wv = ws[j / 2] >> ((j % 2) * 16);
    const float w0 = float(int8_t(wv & 0xff)), w1 = float(int8_t((wv >> 8) & 0xff));
    const float2 xf = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(&xs[j]));
    acc = fmaf(w0, xf.x, acc);
    acc = fmaf(w1, xf.y, acc);
  }
  return acc;
}

// One warp: kRowsPerWarp output channels × M rows of x; lanes stride over 16-input chunks.
template <int M>
__global__ void __launch_bounds__(kWarps * 32) w8a16_gemv_kernel(const bf16* __restrict__ x, const int8_t* __restrict__ w,
                                                                 const float* __restrict__ scale,
                                                                 const bf16* __restrict__ bias, bf16* __restrict__ y,
                                                                 int64_t out, int64_t in, int64_t m0, int64_t n) {
  const int lane = threadIdx.x & 31;
  const int64_t o0 = (int64_t(blockIdx.x) * kWarps + threadIdx.x / 32) * kRowsPerWarp;
  if (o0 >= out) return;
  float acc[kRowsPerWarp][M];
#pragma unroll
  for (int r = 0; r < kRowsPerWarp; ++r)
#pragma unroll
    for (int m = 0; m < M; ++m) acc[r][m] = 0.0f;
  const int64_t chunks = in / 16;
  const int4* wr[kRowsPerWarp];
#pragma unroll
  for (int r = 0; r < kRowsPerWarp; ++r)
    wr[r] = reinterpret_cast<const int4*>(w + min(o0 + r, out - 1) * in);
  const bf16* xb = x + m0 * in;
  int64_t c = lane;
  // Two chunks per row in flight per iteration.
  for (; c + 32 < chunks; c += 64) {
    int4 q[kRowsPerWarp][2];
#pragma unroll
    for (int r = 0; r < kRowsPerWarp; ++r) {
      q[r][0] = __ldg(wr[r] + c);
      q[r][1] = __ldg(wr[r] + c + 32);
    }
#pragma unroll
    for (int m = 0; m < M; ++m)
#pragma unroll
      for (int r = 0; r < kRowsPerWarp; ++r) {
        acc[r][m] = dot16(q[r][0], xb + m * in + c * 16, acc[r][m]);
        acc[r][m] = dot16(q[r][1], xb + m * in + (c + 32) * 16, acc[r][m]);
      }
  }
  for (; c < chunks; c += 32) {
#pragma unroll
    for (int r = 0; r < kRowsPerWarp; ++r) {
      const int4 q = __ldg(wr[r] + c);
#pragma unroll
      for (int m = 0; m < M; ++m) acc[r][m] = dot16(q, xb + m * in + c * 16, acc[r][m]);
    }
  }
#pragma unroll
  for (int r = 0; r < kRowsPerWarp; ++r)
#pragma unroll
    for (int m = 0; m < M; ++m) {
      float v = acc[r][m];
#pragma unroll
      for (int off = 16; off > 0; off >>= 1) v += __shfl_xor_sync(0xffffffffu, v, off);
      acc[r][m] = v;
    }
  if (lane == 0) {
#pragma unroll
    for (int r = 0; r < kRowsPerWarp; ++r) {
      const int64_t o = o0 + r;
      if (o >= out) break;
      const float s = scale[o], b = bias ? __bfloat162float(bias[o]) : 0.0f;
#pragma unroll
      for (int m = 0; m < M; ++m)
        y[(m0 + m) * out + o] = __float2bfloat16(acc[r][m] * s + b);
    }
  }
}

__global__ void dequant_int8_kernel(const int8_t* __restrict__ w, const float* __restrict__ scale, bf16* __restrict__ dst,
                                    int64_t rows, int64_t cols) {
  const int64_t total = rows * cols;
  for (int64_t i = (int64_t(blockIdx.x) * blockDim.x + threadIdx.x) * 4; i < total;
       i += int64_t(gridDim.x) * blockDim.x * 4) {
    for (int j = 0; j < 4 && i + j < total; ++j) {
      const int64_t e = i + j;
      dst[e] = __float2bfloat16(float(w[e]) * scale[e / cols]);
    }
  }
}

template <int M>
void launch_tile(const W8A16Params& p, int64_t m0, cudaStream_t s) {
  const int64_t rows_per_block = kWarps * kRowsPerWarp;
  const unsigned blocks = unsigned((p.out + rows_per_block - 1) / rows_per_block);
  w8a16_gemv_kernel<M><<<blocks, kWarps * 32, 0, s>>>(p.x, p.w, p.scale, p.bias, p.y, p.out, p.in, m0, p.n);
}

}  // namespace

Status launch_w8a16_gemv(const W8A16Params& p, cudaStream_t s) {
  if (p.n <= 0 || p.out <= 0) return Status::ok();
  if (p.in % 16 != 0 || (reinterpret_cast<uintptr_t>(p.w) & 15) || (reinterpret_cast<uintptr_t>(p.x) & 15))
    return make_error("w8a16_gemv: inputs (%lld) must be a multiple of 16 and rows 16-byte aligned", (long long)p.in);
  if (p.n > kW8GemvMaxRows) return make_error("w8a16_gemv: %lld rows > %lld", (long long)p.n, (long long)kW8GemvMaxRows);
  // Row tiles of up to 8 x rows: every tile re-reads the weights (from L2 when they fit).
  int64_t m0 = 0;
  for (; m0 + 8 <= p.n; m0 += 8) launch_tile<8>(p, m0, s);
  switch (p.n - m0) {
    case 0: break;
    case 1: launch_tile<1>(p, m0, s); break;
    case 2: launch_tile<2>(p, m0, s); break;
    case 3: launch_tile<3>(p, m0, s); break;
    case 4: launch_tile<4>(p, m0, s); break;
    default:  // 5..7
      launch_tile<4>(p, m0, s);
      if (p.n - m0 == 5) launch_tile<1>(p, m0 + 4, s);
      else if (p.n - m0 == 6) launch_tile<2>(p, m0 + 4, s);
      else launch_tile<3>(p, m0 + 4, s);
      break;
  }
  OST_LAUNCH_RET();
  return Status::ok();
}

Status launch_dequant_int8(const DequantInt8Params& p, cudaStream_t s) {
  if (p.rows <= 0 || p.cols <= 0) return Status::ok();
  const int64_t total = p.rows * p.cols;
  const unsigned blocks = unsigned(std::min<int64_t>((total / 4 + 255) / 256, 1 << 16));
  dequant_int8_kernel<<<blocks, 256, 0, s>>>(p.w, p.scale, p.dst, p.rows, p.cols);
  OST_LAUNCH_RET();
  return Status::ok();
}

}  // namespace ost::cuda
