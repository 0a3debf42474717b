// FP8 W8A8 kernels and the cuBLASLt block-scaled GEMM (fp8_gemm.h). The arithmetic follows the
// CPU reference exactly up to fp32 summation order: the products of two e4m3 values are exact in
// fp32, the scales are computed with correctly rounded division (this file is built with
// --use_fast_math, so the _rn intrinsics are spelled out).
#include <cuda_fp8.h>

#include <cstdlib>
#include <cstring>

#include "backend/cuda/cuda_check.h"
#include "backend/cuda/fp8_gemm.h"
#include "backend/cuda/gemv.h"
#include "backend/cuda/ld_stream.cuh"
#include "backend/cuda/pdl.h"

namespace ost::cuda {
namespace {

using bf16 = __nv_bfloat16;

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// One warp per (row, block of 128 inputs); lane l holds inputs 4l .. 4l+3 of the block.
// Rows n_valid .. n-1 (padding) come out as zeros with scale 1.
__global__ void fp8_act_quant_kernel(const bf16* __restrict__ x, int64_t n, int64_t n_valid, int64_t in, int64_t nblk,
                                     uint8_t* __restrict__ q, float* __restrict__ scale) {
  pdl_trigger();
  pdl_wait();
  const int64_t warp = (int64_t(blockIdx.x) * blockDim.x + threadIdx.x) / 32;
  const int lane = threadIdx.x & 31;
  if (warp >= n * nblk) return;
  const int64_t m = warp / nblk, b = warp % nblk;
  const int64_t k0 = b * kFp8Block + lane * 4;
  const bf16* xr = x + m * in;
  float v[4] = {0.0f, 0.0f, 0.0f, 0.0f};
  if (m < n_valid) {
    if (k0 + 4 <= in) {  // in % 4 == 0 keeps this 8-byte aligned
      const uint2 raw = *reinterpret_cast<const uint2*>(xr + k0);
      const float2 a = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(&raw.x));
      const float2 b = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(&raw.y));
      v[0] = a.x, v[1] = a.y, v[2] = b.x, v[3] = b.y;
    } else {
#pragma unroll
      for (int j = 0; j < 4; ++j) v[j] = k0 + j < in ? __bfloat162float(xr[k0 + j]) : 0.0f;
    }
  }
  float amax = 0.0f;
#pragma unroll
  for (int j = 0; j < 4; ++j) amax = fmaxf(amax, fabsf(v[j]));
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) amax = fmaxf(amax, __shfl_xor_sync(0xffffffffu, amax, o));
  const float s = amax > 0.0f ? __fdiv_rn(amax, 448.0f) : 1.0f;
  const float inv = __frcp_rn(s);
  uint8_t c[4];
#pragma unroll
  for (int j = 0; j < 4; ++j) c[j] = uint8_t(__nv_cvt_float_to_fp8(__fmul_rn(v[j], inv), __NV_SATFINITE, __NV_E4M3));
  if (k0 + 4 <= in) {
    *reinterpret_cast<uint32_t*>(q + m * in + k0) = uint32_t(c[0]) | uint32_t(c[1]) << 8 | uint32_t(c[2]) << 16 | uint32_t(c[3]) << 24;
  } else {
#pragma unroll
    for (int j = 0; j < 4; ++j)
      if (k0 + j < in) q[m * in + k0 + j] = c[j];
  }
  if (lane == 0) scale[b * n + m] = s;
}

__device__ __forceinline__ float2 fp8x2_to_float2(uint32_t two) {
  const __half2_raw h = __nv_cvt_fp8x2_to_halfraw2(__nv_fp8x2_storage_t(two & 0xffffu), __NV_E4M3);
  return __half22float2(*reinterpret_cast<const __half2*>(&h));
}

// Σ over 16 inputs of q_w · q_x (exact products, fp32 sum).
__device__ __forceinline__ float dot16_fp8(const uint4 w, const uint4 x) {
  const uint32_t ws[4] = {w.x, w.y, w.z, w.w}, xs[4] = {x.x, x.y, x.z, x.w};
  float acc = 0.0f;
#pragma unroll
  for (int j = 0; j < 4; ++j) {
    const float2 w0 = fp8x2_to_float2(ws[j]), w1 = fp8x2_to_float2(ws[j] >> 16);
    const float2 x0 = fp8x2_to_float2(xs[j]), x1 = fp8x2_to_float2(xs[j] >> 16);
    acc = fmaf(w0.x, x0.x, acc);
    acc = fmaf(w0.y, x0.y, acc);
    acc = fmaf(w1.x, x1.x, acc);
    acc = fmaf(w1.y, x1.y, acc);
  }
  return acc;
}

constexpr int kWarps = 4;        // per block
constexpr int kRowsPerWarp = 2;  // output channels per warp

// One warp: kRowsPerWarp output channels × M rows of x; lanes stride over 16-input chunks
// (chunk c lies in block c / 8).
template <int M>
__global__ void __launch_bounds__(kWarps * 32)
    fp8_gemv_kernel(const uint8_t* __restrict__ xq, const float* __restrict__ xs, int64_t n_all, int64_t m0,
                    const uint8_t* __restrict__ w, const float* __restrict__ ws, int64_t ws_ld, int ws_shift,
                    bf16* __restrict__ y, int64_t y_ld, int64_t out, int64_t in, bool preload) {
  pdl_trigger();
  const int lane = threadIdx.x & 31;
  const int64_t o0 = (int64_t(blockIdx.x) * kWarps + threadIdx.x / 32) * kRowsPerWarp;
  if (o0 >= out) return;
  float acc[kRowsPerWarp][M];
#pragma unroll
  for (int r = 0; r < kRowsPerWarp; ++r)
#pragma unroll
    for (int m = 0; m < M; ++m) acc[r][m] = 0.0f;
  const int64_t chunks = in / 16;
  const uint4* wr[kRowsPerWarp];
  const float* sr[kRowsPerWarp];
#pragma unroll
  for (int r = 0; r < kRowsPerWarp; ++r) {
    const int64_t o = min(o0 + r, out - 1);
    wr[r] = reinterpret_cast<const uint4*>(w + o * in);
    sr[r] = ws + (o >> ws_shift) * ws_ld;
  }
  const uint8_t* xb = xq + m0 * in;
  auto step = [&](const uint4 (&q)[kRowsPerWarp], int64_t c) {
    const int64_t b = c >> 3;
#pragma unroll
    for (int m = 0; m < M; ++m) {
      const uint4 xv = *reinterpret_cast<const uint4*>(xb + m * in + c * 16);
      const float sx = xs[b * n_all + m0 + m];
#pragma unroll
      for (int r = 0; r < kRowsPerWarp; ++r) acc[r][m] = fmaf(dot16_fp8(q[r], xv), sx * __ldg(sr[r] + b), acc[r][m]);
    }
  };
  int64_t c = lane;
  uint4 q[4][kRowsPerWarp];
  const auto load4 = [&] {
#pragma unroll
    for (int u = 0; u < 4; ++u)
#pragma unroll
      for (int r = 0; r < kRowsPerWarp; ++r) q[u][r] = __ldg(wr[r] + c + 32 * u);
  };
  bool loaded = preload && c + 96 < chunks;  // the first weights go out before the wait (gemv.cu)
  if (loaded) load4();
  pdl_wait();
  for (; c + 96 < chunks; c += 128, loaded = false) {  // four chunks per row in flight
    if (!loaded) load4();
#pragma unroll
    for (int u = 0; u < 4; ++u) step(q[u], c + 32 * u);
  }
  for (; c < chunks; c += 32) {
    uint4 q[kRowsPerWarp];
#pragma unroll
    for (int r = 0; r < kRowsPerWarp; ++r) q[r] = __ldg(wr[r] + c);
    step(q, c);
  }
#pragma unroll
  for (int r = 0; r < kRowsPerWarp; ++r)
#pragma unroll
    for (int m = 0; m < M; ++m) {
      float v = acc[r][m];
#pragma unroll
      for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
      acc[r][m] = v;
    }
  if (lane == 0) {
#pragma unroll
    for (int r = 0; r < kRowsPerWarp; ++r)
      if (o0 + r < out)
#pragma unroll
        for (int m = 0; m < M; ++m) y[(m0 + m) * y_ld + o0 + r] = __float2bfloat16_rn(acc[r][m]);
  }
}

template <int M>
cudaError_t launch_m(const Fp8GemvParams& p, int64_t m0, int64_t y_ld, cudaStream_t s) {
  const int64_t rows_per_block = int64_t(kWarps) * kRowsPerWarp;
  const dim3 grid(unsigned(ceil_div(p.out, rows_per_block)));
  return launch_pdl(fp8_gemv_kernel<M>, grid, dim3(kWarps * 32), 0, s, p.xq, p.xs, p.n, m0, p.w.w, p.w.scale, p.w.scale_ld,
             p.w.scale_shift, p.y, y_ld, p.out, p.in, m0 == 0 && pdl_enabled() && gemv_preload_enabled());
}

// Decode GEMV on the FP8 tensor cores (mma.sync m16n8k32 e4m3 × e4m3 → f32): a block of
// kMmaWarps warps owns 16 output channels; warp w takes the 128-input blocks w, w + kMmaWarps, ...
// The up to 8 rows of x are the mma's 8 columns (missing rows are zeros). A dot product does not
// care in which order k runs, so each lane feeds the mma the 16 contiguous bytes it loaded (one
// 16-byte load per weight row and x row per 64 inputs) rather than the fragment's k order: in
// mma step s of a 64-input slice, lane (g = lane / 4, t = lane % 4) holds inputs 16t + 8s .. +7,
// bytes 0-3 as fragment k 4t.. and bytes 4-7 as k 16 + 4t.., for A (weight rows g and g + 8) and
// B (x row g) alike. Each 128-block's products are summed on the tensor core, then scaled by
// s_w · s_x into an fp32 total (the CPU reference scales per block the same way).
constexpr int kMmaWarps = 8;

__device__ __forceinline__ void mma_e4m3(float (&d)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k32.row.col.f32.e4m3.e4m3.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
      "{%0,%1,%2,%3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}


// One 64-input slice: the 16 bytes of weight rows g (wa) and g + 8 (wb) and of x row g (xv).
__device__ __forceinline__ void mma_slice(float (&d)[4], uint4 wa, uint4 wb, uint4 xv) {
  const uint32_t a0[4] = {wa.x, wb.x, wa.y, wb.y}, a1[4] = {wa.z, wb.z, wa.w, wb.w};
  mma_e4m3(d, a0, xv.x, xv.y);
  mma_e4m3(d, a1, xv.z, xv.w);
}

__global__ void __launch_bounds__(kMmaWarps * 32) fp8_mma_gemv_kernel(Fp8GemvParams p, int64_t m0, int64_t rows,
                                                                      int64_t y_ld) {
  pdl_trigger();
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, t = lane % 4;
  const int64_t o0 = int64_t(blockIdx.x) * 16;
  const int64_t ra = min(o0 + g, p.out - 1), rb = min(o0 + g + 8, p.out - 1);
  const uint8_t* wa = p.w.w + ra * p.in + 16 * t;
  const uint8_t* wb = p.w.w + rb * p.in + 16 * t;
  const float* sa = p.w.scale + (ra >> p.w.scale_shift) * p.w.scale_ld;
  const float* sb = p.w.scale + (rb >> p.w.scale_shift) * p.w.scale_ld;
  const bool has_x = g < rows;
  const uint8_t* xr = p.xq + (m0 + (has_x ? g : 0)) * p.in + 16 * t;
  const int c0 = 2 * t, c1 = 2 * t + 1;  // the x rows of this lane's outputs
  const int64_t nkb = p.in / kFp8Block;
  pdl_wait();
  float tot[4] = {0.0f, 0.0f, 0.0f, 0.0f};
  struct Slab {
    uint4 w0, w1, v0, v1, x0, x1;
  };
  auto load = [&](int64_t b, Slab& l) {
    const int64_t k = b * kFp8Block;
    l.w0 = ld_stream(wa + k), l.w1 = ld_stream(wa + k + 64);
    l.v0 = ld_stream(wb + k), l.v1 = ld_stream(wb + k + 64);
    l.x0 = l.x1 = make_uint4(0, 0, 0, 0);
    if (has_x) {
      l.x0 = *reinterpret_cast<const uint4*>(xr + k);
      l.x1 = *reinterpret_cast<const uint4*>(xr + k + 64);
    }
  };
  auto use = [&](int64_t b, const Slab& l) {
    float d[4] = {0.0f, 0.0f, 0.0f, 0.0f};
    mma_slice(d, l.w0, l.v0, l.x0);
    mma_slice(d, l.w1, l.v1, l.x1);
    const float swa = __ldg(sa + b), swb = __ldg(sb + b);
    const float sx0 = c0 < rows ? p.xs[b * p.n + m0 + c0] : 0.0f;
    const float sx1 = c1 < rows ? p.xs[b * p.n + m0 + c1] : 0.0f;
    tot[0] = fmaf(d[0], swa * sx0, tot[0]);
    tot[1] = fmaf(d[1], swa * sx1, tot[1]);
    tot[2] = fmaf(d[2], swb * sx0, tot[2]);
    tot[3] = fmaf(d[3], swb * sx1, tot[3]);
  };
  int64_t b = warp;
  for (; b + kMmaWarps < nkb; b += 2 * kMmaWarps) {  // two blocks' loads in flight
    Slab l0, l1;
    load(b, l0);
    load(b + kMmaWarps, l1);
    use(b, l0);
    use(b + kMmaWarps, l1);
  }
  if (b < nkb) {
    Slab l0;
    load(b, l0);
    use(b, l0);
  }
  __shared__ float red[kMmaWarps][32][4];
#pragma unroll
  for (int i = 0; i < 4; ++i) red[warp][lane][i] = tot[i];
  __syncthreads();
  if (warp == 0) {
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      float v = 0.0f;
#pragma unroll
      for (int w = 0; w < kMmaWarps; ++w) v += red[w][lane][i];
      const int64_t o = o0 + g + (i >= 2 ? 8 : 0);
      const int c = i % 2 == 0 ? c0 : c1;
      if (o < p.out && c < rows) p.y[(m0 + c) * y_ld + o] = __float2bfloat16_rn(v);
    }
  }
}

// Decode GEMV with the activation quantization fused in: one block of kFThreads threads owns R
// output channels and splits the inputs in 16-byte chunks (the layout of gemv.cu's bf16 kernel).
// The first chunk of weights is loaded before waiting for the previous kernel (programmatic
// dependent launch: the weights do not depend on it); then the block computes the 1×128 scales of
// its M rows of x into shared memory, and each chunk quantizes its 16 inputs on the fly (the same
// rounding as fp8_act_quant_kernel).
constexpr int kFThreads = 256;
constexpr int kFMaxBlocks = 128;  // in <= 16384


struct FusedParams {
  const bf16* x;  // rows m0 .. m0 + M of [n, in]
  const uint8_t* w;
  const float* ws;
  int64_t ws_ld;
  int ws_shift;
  bf16* y;
  int64_t y_ld, out, in, m0;
};

// 16 bf16 inputs -> their quantized values q·1 (e4m3 codes as floats; the scale is applied later).
__device__ __forceinline__ void quant16(const bf16* __restrict__ xk, float inv, float (&q)[16]) {
  const uint4 a = *reinterpret_cast<const uint4*>(xk), b = *reinterpret_cast<const uint4*>(xk + 8);
  const uint32_t v[8] = {a.x, a.y, a.z, a.w, b.x, b.y, b.z, b.w};
#pragma unroll
  for (int j = 0; j < 8; ++j) {
    const float2 f = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(&v[j]));
    const __nv_fp8x2_storage_t c =
        __nv_cvt_float2_to_fp8x2(make_float2(__fmul_rn(f.x, inv), __fmul_rn(f.y, inv)), __NV_SATFINITE, __NV_E4M3);
    const float2 g = fp8x2_to_float2(c);
    q[2 * j] = g.x;
    q[2 * j + 1] = g.y;
  }
}

template <int M, int R>
__global__ void __launch_bounds__(kFThreads) fp8_gemv_fused_kernel(FusedParams p) {
  pdl_trigger();
  const int64_t o0 = int64_t(blockIdx.x) * R;
  const int64_t chunks = p.in / 16;
  const int nblk = int((p.in + kFp8Block - 1) / kFp8Block);
  const uint4* wr[R];
#pragma unroll
  for (int r = 0; r < R; ++r) wr[r] = reinterpret_cast<const uint4*>(p.w + min(o0 + r, p.out - 1) * p.in);
  int64_t c = threadIdx.x;
  uint4 wv[R];
  if (c < chunks)
#pragma unroll
    for (int r = 0; r < R; ++r) wv[r] = ld_stream(wr[r] + c);
  pdl_wait();

  __shared__ float sx[M][kFMaxBlocks];
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  for (int i = warp; i < M * nblk; i += kFThreads / 32) {
    const int m = i / nblk, b = i % nblk;
    const bf16* xr = p.x + (p.m0 + m) * p.in;
    float amax = 0.0f;
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      const int64_t k = int64_t(b) * kFp8Block + lane * 4 + j;
      if (k < p.in) amax = fmaxf(amax, fabsf(__bfloat162float(xr[k])));
    }
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) amax = fmaxf(amax, __shfl_xor_sync(0xffffffffu, amax, o));
    if (lane == 0) sx[m][b] = amax > 0.0f ? __fdiv_rn(amax, 448.0f) : 1.0f;
  }
  __syncthreads();

  float acc[M][R];
#pragma unroll
  for (int m = 0; m < M; ++m)
#pragma unroll
    for (int r = 0; r < R; ++r) acc[m][r] = 0.0f;
  for (; c < chunks; c += kFThreads) {
    if (c != threadIdx.x)
#pragma unroll
      for (int r = 0; r < R; ++r) wv[r] = ld_stream(wr[r] + c);
    const int64_t b = c >> 3;
    auto widen = [&](int r, float (&wf)[16]) {
      const uint32_t u[4] = {wv[r].x, wv[r].y, wv[r].z, wv[r].w};
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        const float2 lo = fp8x2_to_float2(u[j]), hi = fp8x2_to_float2(u[j] >> 16);
        wf[4 * j] = lo.x, wf[4 * j + 1] = lo.y, wf[4 * j + 2] = hi.x, wf[4 * j + 3] = hi.y;
      }
    };
    float wsb[R];
#pragma unroll
    for (int r = 0; r < R; ++r) wsb[r] = __ldg(p.ws + (min(o0 + r, p.out - 1) >> p.ws_shift) * p.ws_ld + b);
    // Few x rows: quantize them once and widen one weight row at a time; many: the reverse (keeps
    // the live registers to 16 · max(M, R) floats either way).
    if constexpr (M <= 2) {
      float q[M][16], sm[M];
#pragma unroll
      for (int m = 0; m < M; ++m) {
        sm[m] = sx[m][b];
        quant16(p.x + (p.m0 + m) * p.in + c * 16, __frcp_rn(sm[m]), q[m]);
      }
#pragma unroll
      for (int r = 0; r < R; ++r) {
        float wf[16];
        widen(r, wf);
#pragma unroll
        for (int m = 0; m < M; ++m) {
          float d = 0.0f;
#pragma unroll
          for (int e = 0; e < 16; ++e) d = fmaf(wf[e], q[m][e], d);
          acc[m][r] = fmaf(d, wsb[r] * sm[m], acc[m][r]);
        }
      }
    } else {
      float wf[R][16];
#pragma unroll
      for (int r = 0; r < R; ++r) widen(r, wf[r]);
#pragma unroll
      for (int m = 0; m < M; ++m) {
        const float sm = sx[m][b];
        float q[16];
        quant16(p.x + (p.m0 + m) * p.in + c * 16, __frcp_rn(sm), q);
#pragma unroll
        for (int r = 0; r < R; ++r) {
          float d = 0.0f;
#pragma unroll
          for (int e = 0; e < 16; ++e) d = fmaf(wf[r][e], q[e], d);
          acc[m][r] = fmaf(d, wsb[r] * sm, acc[m][r]);
        }
      }
    }
  }

  __shared__ float red[kFThreads / 32][M * R];
#pragma unroll
  for (int m = 0; m < M; ++m)
#pragma unroll
    for (int r = 0; r < R; ++r) {
      float v = acc[m][r];
#pragma unroll
      for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
      if (lane == 0) red[warp][m * R + r] = v;
    }
  __syncthreads();
  if (threadIdx.x < M * R) {
    const int m = threadIdx.x / R, r = threadIdx.x % R;
    const int64_t o = o0 + r;
    if (o < p.out) {
      float v = 0.0f;
#pragma unroll
      for (int w = 0; w < kFThreads / 32; ++w) v += red[w][m * R + r];
      p.y[(p.m0 + m) * p.y_ld + o] = __float2bfloat16_rn(v);
    }
  }
}

template <int M>
Status launch_fused_m(FusedParams fp, cudaStream_t s) {
  constexpr int R = M <= 2 ? 8 : M <= 4 ? 4 : 2;
  OST_CUDA_RET(launch_pdl(fp8_gemv_fused_kernel<M, R>, dim3(unsigned(ceil_div(fp.out, R))), dim3(kFThreads), 0, s, fp));
  return Status::ok();
}

}  // namespace

bool fp8_fused_gemv_supported(int64_t in) { return in % 16 == 0 && in <= int64_t(kFMaxBlocks) * kFp8Block; }

// Off by default: measured slower than the two kernels on the H100 (2026-11-25, seeded 8B, batch 1:
// 188.4 against 223.2 tok/s; batch 8: 140.7 tok/s total, the x quantization repeated by every
// block of M = 8 rows dominates).
// OST_FP8_GEMV=warp: the warp kernel for every n; =mma: the tensor-core kernel also for n = 1
// (A/B runs).
bool fp8_mma_gemv_enabled() {
  static const bool on = [] {
    const char* e = std::getenv("OST_FP8_GEMV");
    return !(e && std::strcmp(e, "warp") == 0);
  }();
  return on;
}

bool fp8_mma_gemv_forced() {
  static const bool on = [] {
    const char* e = std::getenv("OST_FP8_GEMV");
    return e && std::strcmp(e, "mma") == 0;
  }();
  return on;
}

bool fp8_fused_gemv_enabled() {
  static const bool on = [] {
    const char* e = std::getenv("OST_FP8_GEMV");
    return e && std::strcmp(e, "fused") == 0;
  }();
  return on;
}

Status launch_fp8_gemv_fused(const bf16* x, int64_t n, const Fp8Weight& w, bf16* y, int64_t y_ld, int64_t out,
                             int64_t in, cudaStream_t s) {
  if (!fp8_fused_gemv_supported(in)) return make_error("FP8 fused GEMV: in=%lld is not supported", (long long)in);
  for (int64_t m0 = 0; m0 < n; m0 += kFp8GemvMaxRows) {
    const FusedParams fp{x, w.w, w.scale, w.scale_ld, w.scale_shift, y, y_ld > 0 ? y_ld : out, out, in, m0};
    switch (int(std::min<int64_t>(kFp8GemvMaxRows, n - m0))) {
      case 1: OST_TRY(launch_fused_m<1>(fp, s)); break;
      case 2: OST_TRY(launch_fused_m<2>(fp, s)); break;
      case 3: OST_TRY(launch_fused_m<3>(fp, s)); break;
      case 4: OST_TRY(launch_fused_m<4>(fp, s)); break;
      case 5: OST_TRY(launch_fused_m<5>(fp, s)); break;
      case 6: OST_TRY(launch_fused_m<6>(fp, s)); break;
      case 7: OST_TRY(launch_fused_m<7>(fp, s)); break;
      default: OST_TRY(launch_fused_m<8>(fp, s)); break;
    }
  }
  return Status::ok();
}

Status launch_fp8_act_quant(const bf16* x, int64_t n, int64_t in, uint8_t* q, float* scale, cudaStream_t s,
                            int64_t n_valid) {
  if (n == 0) return Status::ok();
  const int64_t nblk = ceil_div(in, kFp8Block);
  const int64_t threads = 256, warps = n * nblk;
  OST_CUDA_RET(launch_pdl(fp8_act_quant_kernel, dim3(unsigned(ceil_div(warps * 32, threads))), dim3(unsigned(threads)),
                          0, s, x, n, n_valid < 0 ? n : n_valid, in, nblk, q, scale));
  return Status::ok();
}

// Rows beyond 8 go through in slices (m0 = first row of the slice; the x scales keep their
// whole-matrix layout).
Status launch_fp8_gemv(const Fp8GemvParams& p, cudaStream_t s) {
  if (p.in % 16 != 0) return make_error("FP8 GEMV: in=%lld is not a multiple of 16", (long long)p.in);
  const int64_t y_ld = p.y_ld > 0 ? p.y_ld : p.out;
  // One row of x: the warp kernel (H100, seeded 8B, batch 1: 4.33 vs 4.43 ms/step with the
  // tensor-core kernel); from two rows the tensor-core kernel (batch 8: 4.73 vs 10.23 ms/step).
  if (p.in % kFp8Block == 0 && fp8_mma_gemv_enabled() && (p.n > 1 || fp8_mma_gemv_forced())) {
    for (int64_t m0 = 0; m0 < p.n; m0 += kFp8GemvMaxRows)
      OST_CUDA_RET(launch_pdl(fp8_mma_gemv_kernel, dim3(unsigned(ceil_div(p.out, 16))), dim3(kMmaWarps * 32), 0, s, p,
                              m0, std::min<int64_t>(kFp8GemvMaxRows, p.n - m0), y_ld));
    return Status::ok();
  }
  for (int64_t m0 = 0; m0 < p.n; m0 += kFp8GemvMaxRows) {
    switch (int(std::min<int64_t>(kFp8GemvMaxRows, p.n - m0))) {
      case 1: OST_CUDA_RET(launch_m<1>(p, m0, y_ld, s)); break;
      case 2: OST_CUDA_RET(launch_m<2>(p, m0, y_ld, s)); break;
      case 3: OST_CUDA_RET(launch_m<3>(p, m0, y_ld, s)); break;
      case 4: OST_CUDA_RET(launch_m<4>(p, m0, y_ld, s)); break;
      case 5: OST_CUDA_RET(launch_m<5>(p, m0, y_ld, s)); break;
      case 6: OST_CUDA_RET(launch_m<6>(p, m0, y_ld, s)); break;
      case 7: OST_CUDA_RET(launch_m<7>(p, m0, y_ld, s)); break;
      default: OST_CUDA_RET(launch_m<8>(p, m0, y_ld, s)); break;
    }
    OST_LAUNCH_RET();
  }
  return Status::ok();
}

Fp8Gemm::~Fp8Gemm() {
  for (auto& [k, p] : plans_) {
    if (p.a) cublasLtMatrixLayoutDestroy(p.a);
    if (p.b) cublasLtMatrixLayoutDestroy(p.b);
    if (p.c) cublasLtMatrixLayoutDestroy(p.c);
    if (p.desc) cublasLtMatmulDescDestroy(p.desc);
  }
  if (workspace_) cudaFree(workspace_);
  if (lt_) cublasLtDestroy(lt_);
}

Status Fp8Gemm::init(size_t workspace_bytes) {
  OST_CUBLAS_RET(cublasLtCreate(&lt_));
  workspace_bytes_ = workspace_bytes;
  OST_CUDA_RET(cudaMalloc(&workspace_, workspace_bytes_));
  const char* g = std::getenv("OST_FP8_GEMM");
  force_gemv_ = g && std::strcmp(g, "gemv") == 0;
  return Status::ok();
}

size_t Fp8Gemm::scratch_bytes(int64_t n, int64_t in) {
  n = padded_rows(n);
  const size_t q = size_t((n * in + 255) / 256 * 256);
  return q + size_t(n * ceil_div(in, kFp8Block)) * 4;
}

// Column-major view as in gemm.cpp: yᵀ [out, n] = W (op T; e4m3 [in, out] column-major, 128×128
// block scales) · xᵀ (op N; e4m3 [in, n], 1×128 scales).
Fp8Gemm::Plan& Fp8Gemm::plan(int64_t n, int64_t out, int64_t in) {
  const Key key{n, out, in};
  auto it = plans_.find(key);
  if (it != plans_.end()) return it->second;
  Plan& p = plans_[key];
  auto fail = [&]() -> Plan& {
    p.ok = false;
    return p;
  };
  if (cublasLtMatmulDescCreate(&p.desc, CUBLAS_COMPUTE_32F, CUDA_R_32F) != CUBLAS_STATUS_SUCCESS) return fail();
  const cublasOperation_t ta = CUBLAS_OP_T, tb = CUBLAS_OP_N;
  const int32_t am = CUBLASLT_MATMUL_MATRIX_SCALE_BLK128x128_32F, bm = CUBLASLT_MATMUL_MATRIX_SCALE_VEC128_32F;
  if (cublasLtMatmulDescSetAttribute(p.desc, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof ta) != CUBLAS_STATUS_SUCCESS ||
      cublasLtMatmulDescSetAttribute(p.desc, CUBLASLT_MATMUL_DESC_TRANSB, &tb, sizeof tb) != CUBLAS_STATUS_SUCCESS ||
      cublasLtMatmulDescSetAttribute(p.desc, CUBLASLT_MATMUL_DESC_A_SCALE_MODE, &am, sizeof am) !=
          CUBLAS_STATUS_SUCCESS ||
      cublasLtMatmulDescSetAttribute(p.desc, CUBLASLT_MATMUL_DESC_B_SCALE_MODE, &bm, sizeof bm) !=
          CUBLAS_STATUS_SUCCESS)
    return fail();
  if (cublasLtMatrixLayoutCreate(&p.a, CUDA_R_8F_E4M3, uint64_t(in), uint64_t(out), in) != CUBLAS_STATUS_SUCCESS ||
      cublasLtMatrixLayoutCreate(&p.b, CUDA_R_8F_E4M3, uint64_t(in), uint64_t(n), in) != CUBLAS_STATUS_SUCCESS ||
      cublasLtMatrixLayoutCreate(&p.c, CUDA_R_16BF, uint64_t(out), uint64_t(n), out) != CUBLAS_STATUS_SUCCESS)
    return fail();
  // Any valid device address for the scale pointers while the heuristic looks (run() sets the real ones).
  const void* any = workspace_;
  cublasLtMatmulDescSetAttribute(p.desc, CUBLASLT_MATMUL_DESC_A_SCALE_POINTER, &any, sizeof any);
  cublasLtMatmulDescSetAttribute(p.desc, CUBLASLT_MATMUL_DESC_B_SCALE_POINTER, &any, sizeof any);
  cublasLtMatmulPreference_t pref;
  if (cublasLtMatmulPreferenceCreate(&pref) != CUBLAS_STATUS_SUCCESS) return fail();
  cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &workspace_bytes_,
                                       sizeof workspace_bytes_);
  constexpr int kCandidates = 8;
  cublasLtMatmulHeuristicResult_t res[kCandidates] = {};
  int found = 0;
  const cublasStatus_t st = cublasLtMatmulAlgoGetHeuristic(lt_, p.desc, p.a, p.b, p.c, p.c, pref, kCandidates, res, &found);
  cublasLtMatmulPreferenceDestroy(pref);
  if (st != CUBLAS_STATUS_SUCCESS || found == 0) return fail();
  p.algo = res[0].algo;
  for (int i = 0; i < found; ++i)
    if (res[i].state == CUBLAS_STATUS_SUCCESS) p.candidates.push_back(res[i].algo);
  p.ok = true;
  return p;
}

bool Fp8Gemm::lt_supported(int64_t n, int64_t out, int64_t in, const Fp8Weight& w) {
  if (force_gemv_ || w.scale_shift != 7 || in % kFp8Block != 0 || out % kFp8Block != 0 || w.scale_ld % 4 != 0)
    return false;
  return plan(n, out, in).ok;
}

Fp8Gemm::ActScratch Fp8Gemm::act_scratch(void* scratch, int64_t n, int64_t in) {
  uint8_t* q = static_cast<uint8_t*>(scratch);
  return {q, reinterpret_cast<float*>(q + (n * in + 255) / 256 * 256)};
}

Status Fp8Gemm::run_quantized(int64_t n, const Fp8Weight& w, int64_t out, int64_t in, bf16* y, void* scratch,
                              cudaStream_t s) {
  if (n > kFp8GemvMaxRows) return make_error("FP8: pre-quantized input is for decode (n <= %lld)", (long long)kFp8GemvMaxRows);
  const auto [xq, xs] = act_scratch(scratch, n, in);
  return launch_fp8_gemv({xq, xs, w, y, n, out, in, 0}, s);
}

Status Fp8Gemm::run(const bf16* x, int64_t n, const Fp8Weight& w, int64_t out, int64_t in, bf16* y, void* scratch,
                    cudaStream_t s) {
  if (n == 0) return Status::ok();
  if (n <= kFp8GemvMaxRows && fp8_fused_gemv_enabled() && fp8_fused_gemv_supported(in))
    return launch_fp8_gemv_fused(x, n, w, y, 0, out, in, s);
  // cuBLASLt's 1×128 scales want a row count that is a multiple of 4: the GEMM runs on zero
  // padding rows (their outputs land in y's rows n .. padded_rows(n) - 1).
  const bool lt = n > kFp8GemvMaxRows && lt_supported(padded_rows(n), out, in, w);
  const int64_t np = lt ? padded_rows(n) : n;
  const auto [xq, xs] = act_scratch(scratch, np, in);
  OST_TRY(launch_fp8_act_quant(x, np, in, xq, xs, s, n));
  if (!lt) return launch_fp8_gemv({xq, xs, w, y, n, out, in, 0}, s);
  Plan& p = plan(np, out, in);
  const void* a_scale = w.scale;
  const void* b_scale = xs;
  OST_CUBLAS_RET(cublasLtMatmulDescSetAttribute(p.desc, CUBLASLT_MATMUL_DESC_A_SCALE_POINTER, &a_scale, sizeof a_scale));
  OST_CUBLAS_RET(cublasLtMatmulDescSetAttribute(p.desc, CUBLASLT_MATMUL_DESC_B_SCALE_POINTER, &b_scale, sizeof b_scale));
  const float alpha = 1.0f, beta = 0.0f;
  cudaStreamCaptureStatus cap = cudaStreamCaptureStatusNone;
  OST_CUDA_RET(cudaStreamIsCapturing(s, &cap));
  if (p.candidates.size() >= 2 && cap == cudaStreamCaptureStatusNone) {
    // First eager call of this shape: time the heuristic's candidates on these operands.
    cudaEvent_t e0, e1;
    OST_CUDA_RET(cudaEventCreate(&e0));
    OST_CUDA_RET(cudaEventCreate(&e1));
    float best = 1e30f;
    for (const cublasLtMatmulAlgo_t& a : p.candidates) {
      if (cublasLtMatmul(lt_, p.desc, &alpha, w.w, p.a, xq, p.b, &beta, y, p.c, y, p.c, &a, workspace_,
                         workspace_bytes_, s) != CUBLAS_STATUS_SUCCESS)
        continue;
      OST_CUDA_RET(cudaEventRecord(e0, s));
      for (int r = 0; r < 3; ++r)
        cublasLtMatmul(lt_, p.desc, &alpha, w.w, p.a, xq, p.b, &beta, y, p.c, y, p.c, &a, workspace_,
                       workspace_bytes_, s);
      OST_CUDA_RET(cudaEventRecord(e1, s));
      OST_CUDA_RET(cudaEventSynchronize(e1));
      float ms = 0;
      OST_CUDA_RET(cudaEventElapsedTime(&ms, e0, e1));
      if (ms < best) best = ms, p.algo = a;
    }
    cudaEventDestroy(e0);
    cudaEventDestroy(e1);
    p.candidates.clear();
  }
  OST_CUBLAS_RET(cublasLtMatmul(lt_, p.desc, &alpha, w.w, p.a, xq, p.b, &beta, y, p.c, y, p.c, &p.algo, workspace_,
                                workspace_bytes_, s));
  return Status::ok();
}

}  // namespace ost::cuda
