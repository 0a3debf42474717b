// W4A16 kernels (int4_gemm.h). Decode is bandwidth-bound: bytes = out·in / 2 (nibbles) plus
// 3·out·in / G (f16 scales and u8 zero points), the x rows being small and staying in L1/L2. Per
// weight byte the scalar kernel spends about 8 instructions (unpack, convert, FMA per x row); the
// tensor-core kernel about 4, whatever the number of x rows.
#include "backend/cuda/int4_gemm.h"

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <mutex>
#include <string>
#include <tuple>
#include <vector>

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
  asm volatile("ld.global.nc.L1::no_allocate.v4.u32 {%0,%1,%2,%3}, [%4];\n"
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
    ch[r].s = __half2float(__ldg(p.scale + row[r] * ng + g));
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

// ---- tensor-core kernel ------------------------------------------------------------------
// Lane (g = lane / 4, t = lane % 4) of a warp holds, per 128-input span s and m-tile, the 16
// bytes t of span s (inputs 128s + 32t .. + 31) of two weight rows: A rows g and g + 8 of the
// m16n8k16 product, and the same 32 inputs of x row g (the B column g; rows past the tile are
// zero). An mma consumes 4 inputs of each lane for each of its rows: from 32-bit word j of the
// lane's 16 bytes (inputs 8j .. 8j + 7, nibble k at bits 4k) the pairs (k, k + 4), k = 0 .. 3,
// which (w >> 4k) & 0x000F000F places in the low mantissa bits of a bf16 pair of 128.0; x is
// paired the same way with byte permutes. Word j gives two mmas (k = 0, 1 and k = 2, 3).
// C row g / g + 8, column 2t, 2t + 1: the lane's fp32 sums of rows g, g + 8 for x rows 2t, 2t + 1.

// (q_k - z, q_{k+4} - z) as bf16 pair bits from w >> 4k; zz = bf16 pair (128 + z, 128 + z).
__device__ __forceinline__ uint32_t q_minus_z(uint32_t w, uint32_t zz) {
  const uint32_t v = (w & 0x000F000Fu) | 0x43004300u;  // (128 + q_k, 128 + q_{k+4}), exact
  __nv_bfloat162 r = __hsub2(*reinterpret_cast<const __nv_bfloat162*>(&v), *reinterpret_cast<const __nv_bfloat162*>(&zz));
  return *reinterpret_cast<const uint32_t*>(&r);
}

__device__ __forceinline__ void mma_bf16(float (&d)[4], uint32_t a0, uint32_t a1, uint32_t a2, uint32_t a3, uint32_t b0,
                                         uint32_t b1) {
  asm("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
      "{%0,%1,%2,%3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
}

__device__ __forceinline__ uint32_t word(const uint4& v, int j) { return j == 0 ? v.x : j == 1 ? v.y : j == 2 ? v.z : v.w; }

// One span's weights of the lane's 2·MT rows (index 2·mt + h: row g + 8h of m-tile mt).
template <int MT>
struct Span {
  uint4 q[2 * MT];
  uint32_t zz[2 * MT];
  float s[2 * MT];
};

template <int MT>
__device__ __forceinline__ void load_span(Span<MT>& a, const uint4* const (&wr)[2 * MT], const __half* const (&sr)[2 * MT],
                                          const uint8_t* const (&zr)[2 * MT], int64_t span, int64_t spans_per_group) {
  // 32-bit division, skipped for G = 128 (spans and groups are far below 2^31)
  const int64_t gi = spans_per_group == 1 ? span : int64_t(uint32_t(span) / uint32_t(spans_per_group));
#pragma unroll
  for (int i = 0; i < 2 * MT; ++i) {
    a.q[i] = ld_stream(wr[i] + span * 4);
    a.s[i] = __half2float(__ldg(sr[i] + gi));
    a.zz[i] = 0x43004300u + 0x00010001u * uint32_t(__ldg(zr[i] + gi));
  }
}

template <int MT>
__device__ __forceinline__ void mma_span(const Span<MT>& a, const bf16* xg, int64_t span, int t, float (&acc)[MT][4]) {
  uint32_t X[16];
  if (xg) {
    const uint4* xp = reinterpret_cast<const uint4*>(xg + span * 128 + t * 32);
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      const uint4 v = __ldg(xp + j);
      X[4 * j] = v.x, X[4 * j + 1] = v.y, X[4 * j + 2] = v.z, X[4 * j + 3] = v.w;
    }
  } else {
#pragma unroll
    for (int j = 0; j < 16; ++j) X[j] = 0u;
  }
  float part[MT][4];
#pragma unroll
  for (int mt = 0; mt < MT; ++mt)
#pragma unroll
    for (int e = 0; e < 4; ++e) part[mt][e] = 0.0f;
#pragma unroll
  for (int j = 0; j < 4; ++j) {
    // x pairs (k, k + 4) of inputs 8j .. 8j + 7: X[4j + i] holds inputs 8j + 2i, 8j + 2i + 1.
    const uint32_t b0 = __byte_perm(X[4 * j], X[4 * j + 2], 0x5410), b1 = __byte_perm(X[4 * j], X[4 * j + 2], 0x7632);
    const uint32_t b2 = __byte_perm(X[4 * j + 1], X[4 * j + 3], 0x5410),
                   b3 = __byte_perm(X[4 * j + 1], X[4 * j + 3], 0x7632);
#pragma unroll
    for (int mt = 0; mt < MT; ++mt) {
      const uint32_t lo = word(a.q[2 * mt], j), hi = word(a.q[2 * mt + 1], j);
      const uint32_t zl = a.zz[2 * mt], zh = a.zz[2 * mt + 1];
      mma_bf16(part[mt], q_minus_z(lo, zl), q_minus_z(hi, zh), q_minus_z(lo >> 4, zl), q_minus_z(hi >> 4, zh), b0, b1);
      mma_bf16(part[mt], q_minus_z(lo >> 8, zl), q_minus_z(hi >> 8, zh), q_minus_z(lo >> 12, zl), q_minus_z(hi >> 12, zh),
               b2, b3);
    }
  }
#pragma unroll
  for (int mt = 0; mt < MT; ++mt) {
    acc[mt][0] = fmaf(a.s[2 * mt], part[mt][0], acc[mt][0]);
    acc[mt][1] = fmaf(a.s[2 * mt], part[mt][1], acc[mt][1]);
    acc[mt][2] = fmaf(a.s[2 * mt + 1], part[mt][2], acc[mt][2]);
    acc[mt][3] = fmaf(a.s[2 * mt + 1], part[mt][3], acc[mt][3]);
  }
}

// A block of W warps owns 16·MT weight rows (GLU: 8·MT gate rows and their up rows, A rows g of
// an m-tile the gate and g + 8 the up rows); warp w takes spans w, w + W, ... (two in flight,
// the first two loaded before pdl_wait). nt <= 8 x rows from m0.
template <int MT, int W, bool GLU>
__global__ void __launch_bounds__(W * 32) w4a16_mma_kernel(W4A16Params p, int64_t m0, int nt) {
  pdl_trigger();
  constexpr int RB = GLU ? 8 * MT : 16 * MT;  // outputs per block
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, t = lane % 4;
  const int64_t o0 = int64_t(blockIdx.x) * RB;
  const int64_t spans = p.in / 128, ng = p.in / p.group, spg = p.group / 128, row_u4 = p.in / 32;
  const uint4* wr[2 * MT];
  const __half* sr[2 * MT];
  const uint8_t* zr[2 * MT];
#pragma unroll
  for (int mt = 0; mt < MT; ++mt)
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const int64_t row = GLU ? std::min(o0 + 8 * mt + g, p.out - 1) + (h ? p.out : 0)
                              : std::min(o0 + 16 * mt + g + 8 * h, p.out - 1);
      wr[2 * mt + h] = reinterpret_cast<const uint4*>(p.w) + row * row_u4 + t;
      sr[2 * mt + h] = p.scale + row * ng;
      zr[2 * mt + h] = p.zero + row * ng;
    }
  float acc[MT][4];
#pragma unroll
  for (int mt = 0; mt < MT; ++mt)
#pragma unroll
    for (int e = 0; e < 4; ++e) acc[mt][e] = 0.0f;
  Span<MT> a, b;
  int64_t s = warp;
  if (s < spans) load_span<MT>(a, wr, sr, zr, s, spg);
  if (s + W < spans) load_span<MT>(b, wr, sr, zr, s + W, spg);
  pdl_wait();
  const bf16* xg = g < nt ? p.x + (m0 + g) * p.in : nullptr;
  for (; s < spans; s += 2 * W) {
    mma_span<MT>(a, xg, s, t, acc);
    if (s + 2 * W < spans) load_span<MT>(a, wr, sr, zr, s + 2 * W, spg);
    if (s + W < spans) {
      mma_span<MT>(b, xg, s + W, t, acc);
      if (s + 3 * W < spans) load_span<MT>(b, wr, sr, zr, s + 3 * W, spg);
    }
  }
  __shared__ float red[W][MT][4][32];
#pragma unroll
  for (int mt = 0; mt < MT; ++mt)
#pragma unroll
    for (int e = 0; e < 4; ++e) red[warp][mt][e][lane] = acc[mt][e];
  __syncthreads();
  if constexpr (GLU) {
    for (int it = threadIdx.x; it < MT * 64; it += W * 32) {
      const int mt = it / 64, e = (it / 32) % 2, ln = it % 32;
      const int m = 2 * (ln % 4) + e;
      const int64_t o = o0 + 8 * mt + ln / 4;
      if (m >= nt || o >= p.out) continue;
      float gs = 0.0f, us = 0.0f;
#pragma unroll
      for (int w = 0; w < W; ++w) gs += red[w][mt][e][ln], us += red[w][mt][e + 2][ln];
      if (p.bias) gs += __bfloat162float(p.bias[o]), us += __bfloat162float(p.bias[p.out + o]);
      p.y[(m0 + m) * p.out + o] = fuse::glu(gs, us);
    }
  } else {
    for (int it = threadIdx.x; it < MT * 128; it += W * 32) {
      const int mt = it / 128, e = (it / 32) % 4, ln = it % 32;
      const int m = 2 * (ln % 4) + (e & 1);
      const int64_t o = o0 + 16 * mt + ln / 4 + 8 * (e >> 1);
      if (m >= nt || o >= p.out) continue;
      float v = 0.0f;
#pragma unroll
      for (int w = 0; w < W; ++w) v += red[w][mt][e][ln];
      if (p.bias) v += __bfloat162float(p.bias[o]);
      p.y[(m0 + m) * p.out + o] = __float2bfloat16(v);
    }
  }
}

// One thread per 32-weight chunk: 16 bytes in, 64 bytes of bf16 out.
__global__ void dequant_int4_kernel(DequantInt4Params p) {
  const int64_t cpr = p.cols / 32, total = p.rows * cpr, ng = p.cols / p.group;
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < total; i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t r = i / cpr, c = i % cpr, g = r * ng + c * 32 / p.group;
    const uint4 q = ld_stream(reinterpret_cast<const uint4*>(p.w) + i);
    const float s = __half2float(p.scale[g]), zb = 8388608.0f + float(p.zero[g]);
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

template <int MT, int W, bool GLU>
Status launch_mma(const W4A16Params& p, int64_t m0, int nt, bool pdl, cudaStream_t s) {
  constexpr int rb = GLU ? 8 * MT : 16 * MT;
  const dim3 blocks(unsigned((p.out + rb - 1) / rb));
  OST_CUDA_RET(launch_pdl(pdl, w4a16_mma_kernel<MT, W, GLU>, blocks, dim3(W * 32), 0, s, p, m0, nt));
  return Status::ok();
}

template <bool GLU>
Status launch_mma_variant(const W4A16Params& p, int v, int64_t m0, int nt, bool pdl, cudaStream_t s) {
  switch (v) {
    case kW4Mma16x4: return launch_mma<1, 4, GLU>(p, m0, nt, pdl, s);
    case kW4Mma16x8: return launch_mma<1, 8, GLU>(p, m0, nt, pdl, s);
    case kW4Mma32x4: return launch_mma<2, 4, GLU>(p, m0, nt, pdl, s);
    case kW4Mma32x8: return launch_mma<2, 8, GLU>(p, m0, nt, pdl, s);
    default: return make_error("w4a16_gemv: %d is not a variant", v);
  }
}

bool is_scalar(int v) { return v == kW4Scalar2 || v == kW4Scalar4; }

Status launch_all(const W4A16Params& p, int v, bool pdl, cudaStream_t s) {
  for (int64_t m0 = 0; m0 < p.n; m0 += kTileRows) {
    const int n = int(std::min<int64_t>(kTileRows, p.n - m0));
    if (is_scalar(v)) {
      if (p.glu) OST_TRY(launch_rows<true>(p, n, v, m0, pdl, s));
      else OST_TRY(launch_rows<false>(p, n, v, m0, pdl, s));
    } else {
      if (p.glu) OST_TRY(launch_mma_variant<true>(p, v, m0, n, pdl, s));
      else OST_TRY(launch_mma_variant<false>(p, v, m0, n, pdl, s));
    }
  }
  OST_LAUNCH_RET();
  return Status::ok();
}

// The fastest variant, timed per shape on the first call outside graph capture (on the call's
// own operands): the tensor-core ones and the scalar one with 4 rows where the tensor-core
// kernel applies, else the scalar ones. OST_W4_ROWS=<variant> forces one (where it applies);
// OST_INT4_GEMV=old keeps to the scalar kernel.
std::atomic<int> g_forced{0};  // w4a16_force_variant

Result<int> pick_variant(const W4A16Params& p, cudaStream_t s) {
  static const int env_forced =
      env_choice("OST_W4_ROWS", {kW4Scalar2, kW4Scalar4, kW4Mma16x4, kW4Mma16x8, kW4Mma32x4, kW4Mma32x8});
  const int hook = g_forced.load(std::memory_order_relaxed);
  const int forced = hook ? hook : env_forced;
  static const bool old = [] {
    const char* e = std::getenv("OST_INT4_GEMV");
    return e && std::string(e) == "old";
  }();
  const bool mma = !old && w4a16_mma_ok(p.in, p.group);
  if (forced && (is_scalar(forced) || mma)) return forced;
  static RowsChoice scalar_choice, mma_choice;
  static const bool log = std::getenv("OST_W4_LOG") != nullptr;
  const RowsChoice::Key key{p.n, p.out, p.in, (p.glu ? 1 : 0) + 2 * (p.group / 128)};
  auto launch = [&](int v) { return launch_all(p, v, false, s); };
  std::vector<std::pair<int, float>> times;
  auto r = mma ? mma_choice.pick(key, {kW4Scalar4, kW4Mma16x4, kW4Mma16x8, kW4Mma32x4, kW4Mma32x8}, kW4Mma16x8, true, s,
                                 launch, log ? &times : nullptr)
               : scalar_choice.pick(key, {kW4Scalar2, kW4Scalar4}, kW4Scalar4, true, s, launch, log ? &times : nullptr);
  if (log && !times.empty()) {  // OST_W4_LOG: each timed variant with the weight bytes it streamed
    const int64_t rows = p.glu ? 2 * p.out : p.out;
    const double bytes = double(rows) * double(p.in) / 2 * double((p.n + kTileRows - 1) / kTileRows) +
                         3.0 * double(rows) * double(p.in / p.group);
    std::fprintf(stderr, "w4a16 n=%lld out=%lld in=%lld g=%d glu=%d:", (long long)p.n, (long long)rows,
                 (long long)p.in, p.group, int(p.glu));
    for (auto [v, ms] : times) std::fprintf(stderr, " %d %.1f us (%.0f GB/s);", v, ms * 1e3, bytes / (ms * 1e-3) / 1e9);
    std::fprintf(stderr, " -> %d\n", r.is_ok() ? *r : -1);
  }
  return r;
}

}  // namespace

bool w4a16_mma_ok(int64_t in, int group) { return group > 0 && group % 128 == 0 && in % group == 0; }

void w4a16_force_variant(int v) { g_forced.store(v, std::memory_order_relaxed); }

Status launch_w4a16_gemv(const W4A16Params& p, cudaStream_t s) {
  if (p.n <= 0 || p.out <= 0) return Status::ok();
  if (p.in % 32 != 0 || p.group <= 0 || p.group % 32 != 0 || p.in % p.group != 0 ||
      (reinterpret_cast<uintptr_t>(p.w) & 15) || (reinterpret_cast<uintptr_t>(p.x) & 15))
    return make_error("w4a16_gemv: inputs (%lld) and group (%d) must be multiples of 32 and rows 16-byte aligned",
                      (long long)p.in, p.group);
  if (p.n > kW4GemvMaxRows) return make_error("w4a16_gemv: %lld rows > %lld", (long long)p.n, (long long)kW4GemvMaxRows);
  if (p.glu && p.n > kTileRows) return make_error("w4a16_gemv: the GLU epilogue needs n <= %d", kTileRows);
  int v = p.variant;
  if (v <= 0) {
    auto r = pick_variant(p, s);
    OST_TRY(r.status());
    v = *r;
  }
  if (!is_scalar(v) && !w4a16_mma_ok(p.in, p.group))
    return make_error("w4a16_gemv: variant %d needs inputs and group multiples of 128 (%lld, %d)", v, (long long)p.in,
                      p.group);
  return launch_all(p, v, pdl_enabled(), s);
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
