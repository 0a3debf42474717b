// W8A16 kernels (quant_gemm.h). Decode is bandwidth-bound: bytes = out·in (int8) + 4·out, so the
// floor is that over HBM bandwidth; the x rows (n·in bf16) are small and stay in L1/L2.
#include "backend/cuda/cuda_check.h"
#include "backend/cuda/quant_gemm.h"

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <map>
#include <mutex>
#include <tuple>

#include "backend/cuda/gemv_fuse.cuh"
#include "backend/cuda/ld_stream.cuh"
#include "backend/cuda/mma_util.cuh"
#include "backend/cuda/pdl.h"
#include "backend/cuda/rows_choice.h"

namespace ost::cuda {
namespace {

using bf16 = __nv_bfloat16;
constexpr int kThreads = 256;  // per block, splitting `in` in 16-byte chunks (16 weights)
constexpr int kTileRows = 8;   // x rows per launch; larger n runs several tiles (weights re-read from L2)

// One 16-weight chunk c of R rows against N rows of x.
template <int N, int R, int X>
__device__ __forceinline__ void chunk16(const bf16* x, int64_t in, int64_t c, const uint4 (&wq)[R], const bf16* norm_w,
                                        const float (&rn)[N], float (&acc)[N][R]) {
  float wf[R][16];
#pragma unroll
  for (int r = 0; r < R; ++r) {
    i8x4_to_f32(wq[r].x, wf[r]);
    i8x4_to_f32(wq[r].y, wf[r] + 4);
    i8x4_to_f32(wq[r].z, wf[r] + 8);
    i8x4_to_f32(wq[r].w, wf[r] + 12);
  }
#pragma unroll
  for (int n = 0; n < N; ++n) {
    float xf[16];
    fuse::load_x8<X>(x, in, n, 2 * c, norm_w, rn[n], xf);
    fuse::load_x8<X>(x, in, n, 2 * c + 1, norm_w, rn[n], xf + 8);
#pragma unroll
    for (int r = 0; r < R; ++r)
#pragma unroll
      for (int e = 0; e < 16; ++e) acc[n][r] = fmaf(wf[r][e], xf[e], acc[n][r]);
  }
}

// Block = kThreads threads over R output channels and N rows of x (from row m0); thread t takes
// the chunks t, t + kThreads, ... of every channel, two per iteration so 2·R weight loads are in
// flight; the warps' partial sums meet in shared memory.
template <int N, int R, int X>
__global__ void __launch_bounds__(kThreads) w8a16_gemv_kernel(W8A16Params p, int64_t m0) {
  pdl_trigger();
  constexpr int RO = X == fuse::kGlu && R > 1 ? R / 2 : R;  // outputs per block (GLU needs R >= 2)
  const int64_t o0 = int64_t(blockIdx.x) * RO;
  const int64_t chunks = p.in / 16;
  const uint4* w4 = reinterpret_cast<const uint4*>(p.w);
  const uint4* wr[R];
#pragma unroll
  for (int r = 0; r < R; ++r) wr[r] = w4 + fuse::block_row<X, R>(o0, r, p.out) * chunks;
  pdl_wait();
  const bf16* x = p.x + m0 * p.in * (X == fuse::kSilu ? 2 : 1);
  float rn[N];
  if constexpr (X == fuse::kNorm) fuse::row_rms<N, kThreads>(x, p.in, p.fuse.eps, rn);
  float acc[N][R];
#pragma unroll
  for (int n = 0; n < N; ++n)
#pragma unroll
    for (int r = 0; r < R; ++r) acc[n][r] = 0.0f;
  int64_t c = threadIdx.x;
  for (; c + kThreads < chunks; c += 2 * kThreads) {
    uint4 qa[R], qb[R];
#pragma unroll
    for (int r = 0; r < R; ++r) {
      qa[r] = ld_stream(wr[r] + c);
      qb[r] = ld_stream(wr[r] + c + kThreads);
    }
    chunk16<N, R, X>(x, p.in, c, qa, p.fuse.norm_w, rn, acc);
    chunk16<N, R, X>(x, p.in, c + kThreads, qb, p.fuse.norm_w, rn, acc);
  }
  if (c < chunks) {
    uint4 qa[R];
#pragma unroll
    for (int r = 0; r < R; ++r) qa[r] = ld_stream(wr[r] + c);
    chunk16<N, R, X>(x, p.in, c, qa, p.fuse.norm_w, rn, acc);
  }
  __shared__ float red[kThreads / 32][N * R];
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
#pragma unroll
  for (int n = 0; n < N; ++n)
#pragma unroll
    for (int r = 0; r < R; ++r) {
      float v = acc[n][r];
#pragma unroll
      for (int off = 16; off > 0; off >>= 1) v += __shfl_xor_sync(0xffffffffu, v, off);
      if (lane == 0) red[warp][n * R + r] = v;
    }
  __syncthreads();
  if constexpr (X == fuse::kGlu) {
    if (threadIdx.x < N * RO) {
      const int n = threadIdx.x / RO, r = threadIdx.x % RO;
      const int64_t o = o0 + r;
      if (o < p.out) {
        float g = 0.0f, u = 0.0f;
#pragma unroll
        for (int w = 0; w < kThreads / 32; ++w) g += red[w][n * R + r], u += red[w][n * R + r + RO];
        g = g * p.scale[o] + (p.bias ? __bfloat162float(p.bias[o]) : 0.0f);
        u = u * p.scale[p.out + o] + (p.bias ? __bfloat162float(p.bias[p.out + o]) : 0.0f);
        p.y[(m0 + n) * p.out + o] = fuse::glu(g, u);
      }
    }
  } else if (threadIdx.x < N * R) {
    const int n = threadIdx.x / R, r = threadIdx.x % R;
    const int64_t o = o0 + r;
    if (o < p.out) {
      float v = 0.0f;
#pragma unroll
      for (int w = 0; w < kThreads / 32; ++w) v += red[w][n * R + r];
      const float b = p.bias ? __bfloat162float(p.bias[o]) : 0.0f;
      const int64_t i = (m0 + n) * p.out + o;
      p.y[i] = fuse::epilogue(v * p.scale[o] + b, p.fuse.residual, i);
    }
  }
}

// Larger tiles (5..8 x rows, plain product): one warp per kRowsPerWarp output channels, lanes
// striding over 16-input chunks. Faster there than the block kernel above, whose x unpacking per
// row of x is no longer hidden behind the weight stream (INT8 batch 8 on the H100, 2026-11-25:
// 942 vs 821 tok/s).
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
__global__ void __launch_bounds__(kWarps * 32) w8a16_warp_kernel(const bf16* __restrict__ x, const int8_t* __restrict__ w,
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

template <int M>
void launch_warp_tile(const W8A16Params& p, int64_t m0, cudaStream_t s) {
  const int64_t rows_per_block = kWarps * kRowsPerWarp;
  const unsigned blocks = unsigned((p.out + rows_per_block - 1) / rows_per_block);
  w8a16_warp_kernel<M><<<blocks, kWarps * 32, 0, s>>>(p.x, p.w, p.scale, p.bias, p.y, p.out, p.in, m0, p.n);
}

// Tiles of 8 rows, then 4 + the rest.
Status launch_warp(const W8A16Params& p, cudaStream_t s) {
  int64_t m0 = 0;
  for (; m0 + 8 <= p.n; m0 += 8) launch_warp_tile<8>(p, m0, s);
  switch (p.n - m0) {
    case 0: break;
    case 1: launch_warp_tile<1>(p, m0, s); break;
    case 2: launch_warp_tile<2>(p, m0, s); break;
    case 3: launch_warp_tile<3>(p, m0, s); break;
    case 4: launch_warp_tile<4>(p, m0, s); break;
    default:  // 5..7
      launch_warp_tile<4>(p, m0, s);
      if (p.n - m0 == 5) launch_warp_tile<1>(p, m0 + 4, s);
      else if (p.n - m0 == 6) launch_warp_tile<2>(p, m0 + 4, s);
      else launch_warp_tile<3>(p, m0 + 4, s);
      break;
  }
  OST_LAUNCH_RET();
  return Status::ok();
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

// The same for cols % 16 == 0 and 16-byte aligned w and dst: each thread widens 16 weights of
// one row (one 16-byte load, two 16-byte stores), the row's scale read once.
__global__ void dequant_int8_vec16_kernel(const int8_t* __restrict__ w, const float* __restrict__ scale,
                                          bf16* __restrict__ dst, int64_t rows, int64_t cols) {
  const int64_t chunks = rows * cols / 16, per_row = cols / 16;
  for (int64_t c = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; c < chunks; c += int64_t(gridDim.x) * blockDim.x) {
    const int4 q = __ldcs(reinterpret_cast<const int4*>(w) + c);
    const float sc = __ldg(scale + c / per_row);
    const int8_t* b = reinterpret_cast<const int8_t*>(&q);
    alignas(16) bf16 out[16];
#pragma unroll
    for (int j = 0; j < 16; ++j) out[j] = __float2bfloat16(float(b[j]) * sc);
    int4* d = reinterpret_cast<int4*>(dst) + c * 2;
    d[0] = reinterpret_cast<const int4*>(out)[0];
    d[1] = reinterpret_cast<const int4*>(out)[1];
  }
}

template <int N, int X>
Status launch_tile(const W8A16Params& p, int R, int64_t m0, bool pdl, cudaStream_t s) {
  const auto blocks = [&](int r) {
    const int ro = X == fuse::kGlu ? r / 2 : r;
    return dim3(unsigned((p.out + ro - 1) / ro));
  };
  if (X == fuse::kGlu && R < 2) return make_error("w8a16_gemv: the GLU epilogue needs 2 or more rows per block");
  switch (R) {
    case 1: OST_CUDA_RET(launch_pdl(pdl, w8a16_gemv_kernel<N, 1, X>, blocks(1), dim3(kThreads), 0, s, p, m0)); break;
    case 2: OST_CUDA_RET(launch_pdl(pdl, w8a16_gemv_kernel<N, 2, X>, blocks(2), dim3(kThreads), 0, s, p, m0)); break;
    case 4: OST_CUDA_RET(launch_pdl(pdl, w8a16_gemv_kernel<N, 4, X>, blocks(4), dim3(kThreads), 0, s, p, m0)); break;
    default: return make_error("w8a16_gemv: %d rows per block is not a variant", R);
  }
  return Status::ok();
}

template <int X>
Status launch_rows(const W8A16Params& p, int n, int R, int64_t m0, bool pdl, cudaStream_t s) {
  switch (n) {
    case 1: return launch_tile<1, X>(p, R, m0, pdl, s);
    case 2: return launch_tile<2, X>(p, R, m0, pdl, s);
    case 3: return launch_tile<3, X>(p, R, m0, pdl, s);
    case 4: return launch_tile<4, X>(p, R, m0, pdl, s);
    case 5: return launch_tile<5, X>(p, R, m0, pdl, s);
    case 6: return launch_tile<6, X>(p, R, m0, pdl, s);
    case 7: return launch_tile<7, X>(p, R, m0, pdl, s);
    default: return launch_tile<8, X>(p, R, m0, pdl, s);
  }
}

// Rows per block when the caller does not choose: OST_W8_ROWS (1, 2, 4) for A/B runs; else the
// faster of 2 and 4, timed per shape and fusion on the first call outside graph capture (on the
// call's own operands: x is read, y written; not with a residual, which y may alias), 4 until then.
Status launch_all(const W8A16Params& p, int R, bool pdl, cudaStream_t s);

int forced_rows() {
  static const int forced = env_choice("OST_W8_ROWS", {1, 2, 4});
  return forced;
}

Result<int> pick_rows(const W8A16Params& p, cudaStream_t s) {
  if (forced_rows()) return forced_rows();
  static RowsChoice choice;
  const int mode = p.fuse.glu ? 3 : p.fuse.norm_w ? 1 : p.fuse.silu ? 2 : 0;
  return choice.pick({p.n, p.out, p.in, mode}, {2, 4}, 4, !p.fuse.residual, s,
                     [&](int r) { return launch_all(p, r, false, s); });
}

// From 2 rows of x: the tensor cores (mma.sync m16n8k16, bf16 in, fp32 sums). A block of
// kMmaWarps warps owns 16 output channels; warp w takes the 64-input slices w, w + kMmaWarps, ...
// The int8 weights become exact bf16 (through the exact f32 of i8x4_to_f32); up to 32 rows of x
// are 1..4 column tiles of 8 sharing each A fragment, so the weights are read once. A dot product
// does not care in which order k runs: in mma step s of a slice, lane (g = lane / 4, t = lane % 4)
// feeds bytes 4s .. 4s+3 of the 16 it loaded from weight rows g and g + 8 (inputs 16t + 4s ..)
// as fragment k (2t, 2t+1) and (2t+8, 2t+9), and the same inputs of x row g of each tile as B.
constexpr int kMmaWarps = 8;

template <int NT>
__global__ void __launch_bounds__(kMmaWarps * 32) w8a16_mma_kernel(W8A16Params p) {
  pdl_trigger();
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, t = lane % 4;
  const int64_t o0 = int64_t(blockIdx.x) * 16;
  const int64_t ra = min(o0 + g, p.out - 1), rb = min(o0 + g + 8, p.out - 1);
  const int8_t* wa = p.w + ra * p.in + 16 * t;
  const int8_t* wb = p.w + rb * p.in + 16 * t;
  const int64_t slices = p.in / 64;
  pdl_wait();
  float d[NT][4];
#pragma unroll
  for (int j = 0; j < NT; ++j) d[j][0] = d[j][1] = d[j][2] = d[j][3] = 0.0f;
  auto slice = [&](int64_t k0, uint4 qa, uint4 qb) {
    uint4 x0[NT], x1[NT];
#pragma unroll
    for (int j = 0; j < NT; ++j) {
      const int64_t m = int64_t(j) * 8 + g;
      x0[j] = x1[j] = make_uint4(0, 0, 0, 0);
      if (m < p.n) {
        const bf16* xr = p.x + m * p.in + k0 + 16 * t;
        x0[j] = *reinterpret_cast<const uint4*>(xr);
        x1[j] = *reinterpret_cast<const uint4*>(xr + 8);
      }
    }
    const uint32_t aw[4] = {qa.x, qa.y, qa.z, qa.w}, bw[4] = {qb.x, qb.y, qb.z, qb.w};
#pragma unroll
    for (int st = 0; st < 4; ++st) {
      float fa[4], fb[4];
      i8x4_to_f32(aw[st], fa);
      i8x4_to_f32(bw[st], fb);
      const uint32_t a0 = bf16x2_of(fa[0], fa[1]), a1 = bf16x2_of(fb[0], fb[1]);
      const uint32_t a2 = bf16x2_of(fa[2], fa[3]), a3 = bf16x2_of(fb[2], fb[3]);
#pragma unroll
      for (int j = 0; j < NT; ++j) {
        const uint32_t xw[8] = {x0[j].x, x0[j].y, x0[j].z, x0[j].w, x1[j].x, x1[j].y, x1[j].z, x1[j].w};
        asm volatile(
            "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
            "{%0,%1,%2,%3};\n"
            : "+f"(d[j][0]), "+f"(d[j][1]), "+f"(d[j][2]), "+f"(d[j][3])
            : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(xw[2 * st]), "r"(xw[2 * st + 1]));
      }
    }
  };
  int64_t sl = warp;
  for (; sl + kMmaWarps < slices; sl += 2 * kMmaWarps) {  // two slices' weights in flight
    const uint4 qa0 = ld_stream(wa + sl * 64), qb0 = ld_stream(wb + sl * 64);
    const uint4 qa1 = ld_stream(wa + (sl + kMmaWarps) * 64), qb1 = ld_stream(wb + (sl + kMmaWarps) * 64);
    slice(sl * 64, qa0, qb0);
    slice((sl + kMmaWarps) * 64, qa1, qb1);
  }
  if (sl < slices) slice(sl * 64, ld_stream(wa + sl * 64), ld_stream(wb + sl * 64));

  __shared__ float red[kMmaWarps][NT][32][4];
#pragma unroll
  for (int j = 0; j < NT; ++j)
#pragma unroll
    for (int i = 0; i < 4; ++i) red[warp][j][lane][i] = d[j][i];
  __syncthreads();
  if (warp < NT) {  // warp j sums tile j
    const int j = warp;
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      float v = 0.0f;
#pragma unroll
      for (int w = 0; w < kMmaWarps; ++w) v += red[w][j][lane][i];
      const int64_t o = o0 + g + (i >= 2 ? 8 : 0), m = int64_t(j) * 8 + 2 * t + (i % 2);
      if (o < p.out && m < p.n)
        p.y[m * p.out + o] = __float2bfloat16(v * p.scale[o] + (p.bias ? __bfloat162float(p.bias[o]) : 0.0f));
    }
  }
}

Status launch_mma(const W8A16Params& p, cudaStream_t s) {
  const dim3 grid(unsigned((p.out + 15) / 16)), block(kMmaWarps * 32);
  const int nt = int((p.n + 7) / 8);
  switch (nt) {
    case 1: OST_CUDA_RET(launch_pdl(w8a16_mma_kernel<1>, grid, block, 0, s, p)); break;
    case 2: OST_CUDA_RET(launch_pdl(w8a16_mma_kernel<2>, grid, block, 0, s, p)); break;
    case 3: OST_CUDA_RET(launch_pdl(w8a16_mma_kernel<3>, grid, block, 0, s, p)); break;
    default: OST_CUDA_RET(launch_pdl(w8a16_mma_kernel<4>, grid, block, 0, s, p)); break;
  }
  return Status::ok();
}

// OST_W8_GEMV=block: no tensor-core kernel (A/B runs).
bool mma_enabled() {
  static const bool on = [] {
    const char* e = std::getenv("OST_W8_GEMV");
    return !(e && std::strcmp(e, "block") == 0);
  }();
  return on;
}

// Tiles of up to kTileRows x rows: every tile re-reads the weights (from L2 when they fit).
Status launch_all(const W8A16Params& p, int R, bool pdl, cudaStream_t s) {
  for (int64_t m0 = 0; m0 < p.n; m0 += kTileRows) {
    const int n = int(std::min<int64_t>(kTileRows, p.n - m0));
    if (p.fuse.glu) OST_TRY(launch_rows<fuse::kGlu>(p, n, R, m0, pdl, s));
    else if (p.fuse.norm_w) OST_TRY(launch_rows<fuse::kNorm>(p, n, R, m0, pdl, s));
    else if (p.fuse.silu) OST_TRY(launch_rows<fuse::kSilu>(p, n, R, m0, pdl, s));
    else OST_TRY(launch_rows<fuse::kPlain>(p, n, R, m0, pdl, s));
  }
  OST_LAUNCH_RET();
  return Status::ok();
}

}  // namespace

Status launch_w8a16_gemv(const W8A16Params& p, cudaStream_t s) {
  if (p.n <= 0 || p.out <= 0) return Status::ok();
  if (p.in % 16 != 0 || (reinterpret_cast<uintptr_t>(p.w) & 15) || (reinterpret_cast<uintptr_t>(p.x) & 15))
    return make_error("w8a16_gemv: inputs (%lld) must be a multiple of 16 and rows 16-byte aligned", (long long)p.in);
  if (p.n > kW8GemvMaxRows) return make_error("w8a16_gemv: %lld rows > %lld", (long long)p.n, (long long)kW8GemvMaxRows);
  const bool fused = p.fuse.norm_w || p.fuse.silu || p.fuse.residual || p.fuse.glu;
  if (fused && p.n > kTileRows) return make_error("w8a16_gemv: fusions need n <= %d", kTileRows);
  if (int(p.fuse.norm_w != nullptr) + int(p.fuse.silu) + int(p.fuse.glu) > 1 || (p.fuse.glu && p.fuse.residual))
    return make_error("w8a16_gemv: fusions that do not go together");
  if (p.fuse.norm_w && (reinterpret_cast<uintptr_t>(p.fuse.norm_w) & 15)) return make_error("w8a16_gemv: norm_w alignment");
  int R = p.rows_per_block;
  if (R <= 0 && !fused && p.n >= 2 && p.in % 64 == 0 && !forced_rows() && mma_enabled()) return launch_mma(p, s);
  if (R <= 0 && !fused && p.n >= 5 && !forced_rows()) return launch_warp(p, s);
  if (R <= 0) {
    auto r = pick_rows(p, s);
    OST_TRY(r.status());
    R = *r;
  }
  return launch_all(p, R, pdl_enabled(), s);
}

Status launch_dequant_int8(const DequantInt8Params& p, cudaStream_t s) {
  if (p.rows <= 0 || p.cols <= 0) return Status::ok();
  const int64_t total = p.rows * p.cols;
  const bool vec = p.cols % 16 == 0 && reinterpret_cast<uintptr_t>(p.w) % 16 == 0 &&
                   reinterpret_cast<uintptr_t>(p.dst) % 16 == 0;
  if (vec) {
    const unsigned blocks = unsigned(std::min<int64_t>((total / 16 + 255) / 256, int64_t(132) * 16));
    dequant_int8_vec16_kernel<<<blocks, 256, 0, s>>>(p.w, p.scale, p.dst, p.rows, p.cols);
  } else {
    const unsigned blocks = unsigned(std::min<int64_t>((total / 4 + 255) / 256, 1 << 16));
    dequant_int8_kernel<<<blocks, 256, 0, s>>>(p.w, p.scale, p.dst, p.rows, p.cols);
  }
  OST_LAUNCH_RET();
  return Status::ok();
}

}  // namespace ost::cuda
