// W4A16 kernels (int4_gemm.h). Decode is bandwidth-bound: bytes = out·in / 2 (nibbles) plus
// 5·out·in / G (scales and zero points), the x rows being small and staying in L1/L2.
#include "backend/cuda/int4_gemm.h"

#include <algorithm>
#include <cstdlib>
#include <map>
#include <mutex>
#include <tuple>

#include "backend/cuda/cuda_check.h"
#include "backend/cuda/gemv_fuse.cuh"
#include "backend/cuda/pdl.h"
#include "backend/cuda/rows_choice.h"

namespace ost::cuda {
namespace {

using bf16 = __nv_bfloat16;
constexpr int kThreads = 128;  // per block, splitting `in` in 16-byte chunks (32 weights)
constexpr int kTileRows = 8;   // x rows per launch; larger n runs several tiles

__device__ __forceinline__ uint4 ld_stream(const uint4* p) {
  uint4 r;
  asm("ld.global.nc.L1::no_allocate.v4.u32 {%0,%1,%2,%3}, [%4];\n"
      : "=r"(r.x), "=r"(r.y), "=r"(r.z), "=r"(r.w)
      : "l"(p));
  return r;
}

// The 8 nibbles of a word (inputs 0..7 of it: low nibble of byte k is input 2k, high 2k + 1) as
// the exact floats q - z: each nibble is placed in the mantissa of 2^23 and 2^23 + z subtracted.
__device__ __forceinline__ void u4x8_to_f32(uint32_t w, float zb, float* f) {
  const uint32_t lo = w & 0x0F0F0F0Fu, hi = (w >> 4) & 0x0F0F0F0Fu;
  f[0] = __uint_as_float(__byte_perm(lo, 0x4B000000u, 0x7440)) - zb;
  f[1] = __uint_as_float(__byte_perm(hi, 0x4B000000u, 0x7440)) - zb;
  f[2] = __uint_as_float(__byte_perm(lo, 0x4B000000u, 0x7441)) - zb;
  f[3] = __uint_as_float(__byte_perm(hi, 0x4B000000u, 0x7441)) - zb;
  f[4] = __uint_as_float(__byte_perm(lo, 0x4B000000u, 0x7442)) - zb;
  f[5] = __uint_as_float(__byte_perm(hi, 0x4B000000u, 0x7442)) - zb;
  f[6] = __uint_as_float(__byte_perm(lo, 0x4B000000u, 0x7443)) - zb;
  f[7] = __uint_as_float(__byte_perm(hi, 0x4B000000u, 0x7443)) - zb;
}

struct Chunk {
  uint4 q;
  float s, zb;  // scale, 2^23 + zero point
};

template <int R>
__device__ __forceinline__ void load_chunk(const uint4* const (&wr)[R], const int64_t (&row)[R], const W4A16Params& p,
                                           int64_t ng, int64_t c, Chunk (&ch)[R]) {
  const int64_t g = c * 32 / p.group;
#pragma unroll
  for (int r = 0; r < R; ++r) {
    ch[r].q = ld_stream(wr[r] + c);
    ch[r].s = __ldg(p.scale + row[r] * ng + g);
    ch[r].zb = 8388608.0f + float(__ldg(p.zero + row[r] * ng + g));
  }
}

// One 32-weight chunk c of R rows against N rows of x: acc += s · Σ (q - z)·x.
template <int N, int R>
__device__ __forceinline__ void chunk32(const bf16* x, int64_t in, int64_t c, const Chunk (&ch)[R],
                                        float (&acc)[N][R]) {
  float part[N][R];
#pragma unroll
  for (int n = 0; n < N; ++n)
#pragma unroll
    for (int r = 0; r < R; ++r) part[n][r] = 0.0f;
#pragma unroll
  for (int j = 0; j < 4; ++j) {
    float xf[N][8];
#pragma unroll
    for (int n = 0; n < N; ++n) fuse::bf16x8(__ldg(reinterpret_cast<const uint4*>(x + n * in) + 4 * c + j), xf[n]);
#pragma unroll
    for (int r = 0; r < R; ++r) {
      const uint32_t wv = j == 0 ? ch[r].q.x : j == 1 ? ch[r].q.y : j == 2 ? ch[r].q.z : ch[r].q.w;
      float wf[8];
      u4x8_to_f32(wv, ch[r].zb, wf);
#pragma unroll
      for (int n = 0; n < N; ++n)
#pragma unroll
        for (int e = 0; e < 8; ++e) part[n][r] = fmaf(wf[e], xf[n][e], part[n][r]);
    }
  }
#pragma unroll
  for (int n = 0; n < N; ++n)
#pragma unroll
    for (int r = 0; r < R; ++r) acc[n][r] = fmaf(ch[r].s, part[n][r], acc[n][r]);
}

template <int N, int R, bool GLU>
__global__ void __launch_bounds__(kThreads) w4a16_gemv_kernel(W4A16Params p, int64_t m0) {
  pdl_trigger();
  constexpr int X = GLU ? fuse::kGlu : fuse::kPlain;
  constexpr int RO = GLU ? R / 2 : R;  // outputs per block
  const int64_t o0 = int64_t(blockIdx.x) * RO;
  const int64_t chunks = p.in / 32, ng = p.in / p.group;
  const uint4* w4 = reinterpret_cast<const uint4*>(p.w);
  const uint4* wr[R];
  int64_t row[R];
#pragma unroll
  for (int r = 0; r < R; ++r) {
    row[r] = fuse::block_row<X, R>(o0, r, p.out);
    wr[r] = w4 + row[r] * chunks;
  }
  pdl_wait();
  const bf16* x = p.x + m0 * p.in;
  float acc[N][R];
#pragma unroll
  for (int n = 0; n < N; ++n)
#pragma unroll
    for (int r = 0; r < R; ++r) acc[n][r] = 0.0f;
  int64_t c = threadIdx.x;
  for (; c + kThreads < chunks; c += 2 * kThreads) {
    Chunk a[R], b[R];
    load_chunk<R>(wr, row, p, ng, c, a);
    load_chunk<R>(wr, row, p, ng, c + kThreads, b);
    chunk32<N, R>(x, p.in, c, a, acc);
    chunk32<N, R>(x, p.in, c + kThreads, b, acc);
  }
  if (c < chunks) {
    Chunk a[R];
    load_chunk<R>(wr, row, p, ng, c, a);
    chunk32<N, R>(x, p.in, c, a, acc);
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
  if (threadIdx.x < N * RO) {
    const int n = threadIdx.x / RO, r = threadIdx.x % RO;
    const int64_t o = o0 + r;
    if (o < p.out) {
      float v = 0.0f;
#pragma unroll
      for (int w = 0; w < kThreads / 32; ++w) v += red[w][n * R + r];
      v += p.bias ? __bfloat162float(p.bias[o]) : 0.0f;
      if constexpr (GLU) {
        float u = 0.0f;
#pragma unroll
        for (int w = 0; w < kThreads / 32; ++w) u += red[w][n * R + r + RO];
        u += p.bias ? __bfloat162float(p.bias[p.out + o]) : 0.0f;
        p.y[(m0 + n) * p.out + o] = fuse::glu(v, u);
      } else {
        p.y[(m0 + n) * p.out + o] = __float2bfloat16(v);
      }
    }
  }
}

// One thread per 32-weight chunk: 16 bytes in, 64 bytes of bf16 out.
__global__ void dequant_int4_kernel(DequantInt4Params p) {
  const int64_t cpr = p.cols / 32, total = p.rows * cpr, ng = p.cols / p.group;
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < total; i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t r = i / cpr, c = i % cpr, g = r * ng + c * 32 / p.group;
    const uint4 q = ld_stream(reinterpret_cast<const uint4*>(p.w) + i);
    const float s = p.scale[g], zb = 8388608.0f + float(p.zero[g]);
    const uint32_t ws[4] = {q.x, q.y, q.z, q.w};
    uint4* dst = reinterpret_cast<uint4*>(p.dst + r * p.cols + c * 32);
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      float f[8];
      u4x8_to_f32(ws[j], zb, f);
      uint32_t o[4];
#pragma unroll
      for (int k = 0; k < 4; ++k) {
        const __nv_bfloat162 h = __floats2bfloat162_rn(f[2 * k] * s, f[2 * k + 1] * s);
        o[k] = *reinterpret_cast<const uint32_t*>(&h);
      }
      dst[j] = make_uint4(o[0], o[1], o[2], o[3]);
    }
  }
}

template <int N, bool GLU>
Status launch_tile(const W4A16Params& p, int R, int64_t m0, bool pdl, cudaStream_t s) {
  const int ro = GLU ? R / 2 : R;
  const dim3 blocks(unsigned((p.out + ro - 1) / ro));
  switch (R) {
    case 2: OST_CUDA_RET(launch_pdl(pdl, w4a16_gemv_kernel<N, 2, GLU>, blocks, dim3(kThreads), 0, s, p, m0)); break;
    case 4: OST_CUDA_RET(launch_pdl(pdl, w4a16_gemv_kernel<N, 4, GLU>, blocks, dim3(kThreads), 0, s, p, m0)); break;
    default: return make_error("w4a16_gemv: %d rows per block is not a variant", R);
  }
  return Status::ok();
}

template <bool GLU>
Status launch_rows(const W4A16Params& p, int n, int R, int64_t m0, bool pdl, cudaStream_t s) {
  switch (n) {
    case 1: return launch_tile<1, GLU>(p, R, m0, pdl, s);
    case 2: return launch_tile<2, GLU>(p, R, m0, pdl, s);
    case 3: return launch_tile<3, GLU>(p, R, m0, pdl, s);
    case 4: return launch_tile<4, GLU>(p, R, m0, pdl, s);
    case 5: return launch_tile<5, GLU>(p, R, m0, pdl, s);
    case 6: return launch_tile<6, GLU>(p, R, m0, pdl, s);
    case 7: return launch_tile<7, GLU>(p, R, m0, pdl, s);
    default: return launch_tile<8, GLU>(p, R, m0, pdl, s);
  }
}

Status launch_all(const W4A16Params& p, int R, bool pdl, cudaStream_t s) {
  for (int64_t m0 = 0; m0 < p.n; m0 += kTileRows) {
    const int n = int(std::min<int64_t>(kTileRows, p.n - m0));
    if (p.glu) OST_TRY(launch_rows<true>(p, n, R, m0, pdl, s));
    else OST_TRY(launch_rows<false>(p, n, R, m0, pdl, s));
  }
  OST_LAUNCH_RET();
  return Status::ok();
}

// The faster of 2 and 4 rows per block, timed per shape on the first call outside graph capture
// (on the call's own operands), 4 until then; OST_W4_ROWS=2|4 forces one.
Result<int> pick_rows(const W4A16Params& p, cudaStream_t s) {
  static const int forced = env_choice("OST_W4_ROWS", {2, 4});
  if (forced) return forced;
  static RowsChoice choice;
  return choice.pick({p.n, p.out, p.in, p.glu ? 1 : 0}, {2, 4}, 4, true, s,
                     [&](int r) { return launch_all(p, r, false, s); });
}

}  // namespace

Status launch_w4a16_gemv(const W4A16Params& p, cudaStream_t s) {
  if (p.n <= 0 || p.out <= 0) return Status::ok();
  if (p.in % 32 != 0 || p.group <= 0 || p.group % 32 != 0 || p.in % p.group != 0 ||
      (reinterpret_cast<uintptr_t>(p.w) & 15) || (reinterpret_cast<uintptr_t>(p.x) & 15))
    return make_error("w4a16_gemv: inputs (%lld) and group (%d) must be multiples of 32 and rows 16-byte aligned",
                      (long long)p.in, p.group);
  if (p.n > kW4GemvMaxRows) return make_error("w4a16_gemv: %lld rows > %lld", (long long)p.n, (long long)kW4GemvMaxRows);
  if (p.glu && p.n > kTileRows) return make_error("w4a16_gemv: the GLU epilogue needs n <= %d", kTileRows);
  int R = p.rows_per_block;
  if (R <= 0) {
    auto r = pick_rows(p, s);
    OST_TRY(r.status());
    R = *r;
  }
  return launch_all(p, R, pdl_enabled(), s);
}

Status launch_dequant_int4(const DequantInt4Params& p, cudaStream_t s) {
  if (p.rows <= 0 || p.cols <= 0) return Status::ok();
  if (p.cols % 32 != 0 || p.group <= 0 || p.group % 32 != 0 || p.cols % p.group != 0)
    return make_error("dequant_int4: cols (%lld) and group (%d) must be multiples of 32", (long long)p.cols, p.group);
  const int64_t total = p.rows * p.cols / 32;
  const unsigned blocks = unsigned(std::min<int64_t>((total + 255) / 256, 1 << 16));
  dequant_int4_kernel<<<blocks, 256, 0, s>>>(p);
  OST_LAUNCH_RET();
  return Status::ok();
}

}  // namespace ost::cuda
