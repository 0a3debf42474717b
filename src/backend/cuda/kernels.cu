// The CUDA kernels of kernels.h. Row kernels use one block per row and 16-byte accesses where
// the row length allows. The generic attention keeps one warp per key stream and merges the
// warps at the end; it is the fallback for head sizes the kernels of attention.h do not cover.
// Every kernel is launched through launch_pdl (pdl.h).
#include <cfloat>
#include <cmath>
#include <cstdlib>
#include <cstring>

#include <cuda_fp8.h>

#include "backend/cuda/cuda_check.h"
#include "backend/cuda/pdl.h"
#include "backend/cuda/kernels.h"
#include "backend/cuda/kv_fp8.cuh"

namespace ost::cuda {
namespace {

__device__ __forceinline__ float rb(float x) { return __bfloat162float(__float2bfloat16(x)); }

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

// Sum over the block; every thread gets the result. blockDim.x must be a multiple of 32.
__device__ float block_sum(float v) {
  __shared__ float part[32];
  __shared__ float total;
  v = warp_sum(v);
  const int w = threadIdx.x / 32, l = threadIdx.x % 32;
  if (l == 0) part[w] = v;
  __syncthreads();
  if (w == 0) {
    float t = l < int(blockDim.x / 32) ? part[l] : 0.0f;
    t = warp_sum(t);
    if (l == 0) total = t;
  }
  __syncthreads();
  const float r = total;
  __syncthreads();  // part/total may be reused by the next call
  return r;
}

struct alignas(16) Pack8 {
  __nv_bfloat162 h[4];
};

// FP8 activation quantization of 8 consecutive bf16-valued floats per lane, 16 lanes per block of
// 128 inputs (lane groups 0-15 and 16-31 of a warp are separate blocks); the rounding of
// fp8_act_quant_kernel: s = amax / 448 (1 when amax is 0), code = e4m3(v · (1/s)). Every lane of
// the warp must call it (lanes without data pass zeros). Returns s; codes[i] holds bytes 4i..4i+3.
__device__ __forceinline__ float quant8_block128(const float (&v)[8], uint32_t (&codes)[2]) {
  float amax = 0.0f;
#pragma unroll
  for (int k = 0; k < 8; ++k) amax = fmaxf(amax, fabsf(v[k]));
#pragma unroll
  for (int o = 8; o > 0; o >>= 1) amax = fmaxf(amax, __shfl_xor_sync(0xffffffffu, amax, o));
  const float s = amax > 0.0f ? __fdiv_rn(amax, 448.0f) : 1.0f;
  const float inv = __frcp_rn(s);
#pragma unroll
  for (int i = 0; i < 2; ++i) {
    uint32_t c = 0;
#pragma unroll
    for (int k = 0; k < 4; ++k)
      c |= uint32_t(__nv_cvt_float_to_fp8(__fmul_rn(v[4 * i + k], inv), __NV_SATFINITE, __NV_E4M3)) << (8 * k);
    codes[i] = c;
  }
  return s;
}

__device__ __forceinline__ void unpack8(const Pack8& p, float* f) {
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    float2 t = __bfloat1622float2(p.h[i]);
    f[2 * i] = t.x;
    f[2 * i + 1] = t.y;
  }
}
__device__ __forceinline__ Pack8 pack8(const float* f) {
  Pack8 p;
#pragma unroll
  for (int i = 0; i < 4; ++i) p.h[i] = __floats2bfloat162_rn(f[2 * i], f[2 * i + 1]);
  return p;
}

__global__ void embedding_kernel(EmbeddingParams p) {
  pdl_trigger();
  pdl_wait();
  const int64_t i = blockIdx.x;
  const bf16* src = p.table + int64_t(p.ids[i]) * p.d;
  bf16* dst = p.out + i * p.d;
  if (p.d % 8 == 0) {
    for (int64_t c = threadIdx.x; c < p.d / 8; c += blockDim.x)
      reinterpret_cast<Pack8*>(dst)[c] = reinterpret_cast<const Pack8*>(src)[c];
  } else {
    for (int64_t c = threadIdx.x; c < p.d; c += blockDim.x) dst[c] = src[c];
  }
}

__global__ void scatter_rows_kernel(ScatterRowsParams p) {
  pdl_trigger();
  pdl_wait();
  const int64_t r = blockIdx.x;
  bf16* dst = p.dst + int64_t(p.idx[r]) * p.d;
  const bf16* src = p.src + r * p.d;
  for (int64_t c = threadIdx.x; c < p.d; c += blockDim.x)
    dst[c] = p.add ? __float2bfloat16(__bfloat162float(dst[c]) + __bfloat162float(src[c])) : src[c];
}

__global__ void add_rms_norm_kernel(AddRmsNormParams p) {
  pdl_trigger();
  pdl_wait();
  const int64_t row = blockIdx.x;
  bf16* x = p.x + row * p.d;
  const bf16* dl = p.delta ? p.delta + row * p.d : nullptr;
  const int nc = p.d / 8;
  float ss = 0.0f;
  for (int c = threadIdx.x; c < nc; c += blockDim.x) {
    float v[8];
    unpack8(reinterpret_cast<const Pack8*>(x)[c], v);
    if (dl) {
      float d[8];
      unpack8(reinterpret_cast<const Pack8*>(dl)[c], d);
#pragma unroll
      for (int k = 0; k < 8; ++k) v[k] = rb(v[k] + d[k]);
      reinterpret_cast<Pack8*>(x)[c] = pack8(v);
    }
#pragma unroll
    for (int k = 0; k < 8; ++k) ss += v[k] * v[k];
  }
  ss = block_sum(ss);
  const float r = 1.0f / sqrtf(ss / float(p.d) + p.eps);
  bf16* y = p.y + row * p.d;
  for (int c0 = 0; c0 < nc; c0 += blockDim.x) {  // uniform: the quantization shuffles
    const int c = c0 + int(threadIdx.x);
    float v[8] = {0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f};
    if (c < nc) {
      float w[8];
      unpack8(reinterpret_cast<const Pack8*>(x)[c], v);
      unpack8(reinterpret_cast<const Pack8*>(p.w)[c], w);
#pragma unroll
      for (int k = 0; k < 8; ++k) v[k] = rb(rb(v[k] * r) * w[k]);
      reinterpret_cast<Pack8*>(y)[c] = pack8(v);
    }
    if (p.q8) {
      uint32_t codes[2];
      const float s = quant8_block128(v, codes);
      if (c < nc) {
        reinterpret_cast<uint2*>(p.q8 + row * p.d)[c] = make_uint2(codes[0], codes[1]);
        if (c % 16 == 0) p.q8_scale[int64_t(c / 16) * p.n + row] = s;
      }
    }
  }
}

// delta != nullptr: the residual add first, x = bf16(x + delta) written back (each thread
// re-reads only the chunks it wrote).
__global__ void layer_norm_kernel(LayerNormParams p, bf16* x_rw, const bf16* delta) {
  pdl_trigger();
  pdl_wait();
  const int64_t row = blockIdx.x;
  const bf16* x = (delta ? x_rw : p.x) + row * p.d;
  const int nc = p.d / 8;
  float s = 0.0f;
  for (int c = threadIdx.x; c < nc; c += blockDim.x) {
    float v[8];
    unpack8(reinterpret_cast<const Pack8*>(x)[c], v);
    if (delta) {
      float dl[8];
      unpack8(reinterpret_cast<const Pack8*>(delta + row * p.d)[c], dl);
#pragma unroll
      for (int k = 0; k < 8; ++k) v[k] = rb(v[k] + dl[k]);
      reinterpret_cast<Pack8*>(x_rw + row * p.d)[c] = pack8(v);
    }
#pragma unroll
    for (int k = 0; k < 8; ++k) s += v[k];
  }
  const float mean = block_sum(s) / float(p.d);
  float ss = 0.0f;
  for (int c = threadIdx.x; c < nc; c += blockDim.x) {
    float v[8];
    unpack8(reinterpret_cast<const Pack8*>(x)[c], v);
#pragma unroll
    for (int k = 0; k < 8; ++k) ss += (v[k] - mean) * (v[k] - mean);
  }
  const float rstd = 1.0f / sqrtf(block_sum(ss) / float(p.d) + p.eps);
  bf16* y = p.y + row * p.d;
  for (int c = threadIdx.x; c < nc; c += blockDim.x) {
    float v[8], w[8], b[8];
    unpack8(reinterpret_cast<const Pack8*>(x)[c], v);
    unpack8(reinterpret_cast<const Pack8*>(p.w)[c], w);
    unpack8(reinterpret_cast<const Pack8*>(p.b)[c], b);
#pragma unroll
    for (int k = 0; k < 8; ++k) v[k] = (v[k] - mean) * rstd * w[k] + b[k];
    reinterpret_cast<Pack8*>(y)[c] = pack8(v);
  }
}

// One warp per (token, head) over the q, k and v heads; lane handles the rope pairs
// (j, j + hd/2) for j = lane + 32·t.
constexpr int kMaxPairsPerLane = 4;  // head_dim <= 256
__global__ void qk_norm_rope_kernel(QkNormRopeParams p) {
  pdl_trigger();
  pdl_wait();
  const int heads_all = p.n_heads + 2 * p.n_kv;
  const int64_t wid = (int64_t(blockIdx.x) * blockDim.x + threadIdx.x) / 32;
  const int lane = threadIdx.x % 32;
  if (wid >= p.n * heads_all) return;
  const int64_t i = wid / heads_all;
  const int hh = int(wid % heads_all);
  const int hd = p.head_dim, half = hd / 2;
  const bf16* src = p.qkv + i * int64_t(heads_all) * hd + int64_t(hh) * hd;
  const bool fp8 = p.k_cache8 != nullptr;
  if (hh >= p.n_heads + p.n_kv) {  // v: copied into the cache as is
    const int64_t vec = int64_t(p.slot[i]) * p.n_kv + (hh - p.n_heads - p.n_kv);
    if (fp8) {  // the warp quantizes the head: lane holds dims lane + 32·t
      float x[2 * kMaxPairsPerLane];
      float amax = 0.0f;
#pragma unroll
      for (int t = 0; t < 2 * kMaxPairsPerLane; ++t) {
        const int d = lane + 32 * t;
        x[t] = d < hd ? __bfloat162float(src[d]) : 0.0f;
        amax = fmaxf(amax, fabsf(x[t]));
      }
      const float sc = kv_fp8_scale(warp_max_f32(amax)), inv = __frcp_rn(sc);
      uint8_t* dst = p.v_cache8 + vec * hd;
#pragma unroll
      for (int t = 0; t < 2 * kMaxPairsPerLane; ++t)
        if (lane + 32 * t < hd) dst[lane + 32 * t] = kv_fp8_code(x[t], inv);
      if (lane == 0) p.v_scale[vec] = sc;
      return;
    }
    bf16* dst = p.v_cache + vec * hd;
    for (int d = lane; d < hd; d += 32) dst[d] = src[d];
    return;
  }
  const bool is_q = hh < p.n_heads;
  const bool k8 = fp8 && !is_q;  // a key into the fp8 cache: rounded to bf16, then quantized
  const int64_t kvec = int64_t(p.slot[i]) * p.n_kv + (hh - p.n_heads);
  const bf16* w = is_q ? p.q_norm : p.k_norm;
  bf16* dst = is_q ? p.q_out + (i * p.n_heads + hh) * hd : k8 ? nullptr : p.k_cache + kvec * hd;
  float x0[kMaxPairsPerLane], x1[kMaxPairsPerLane];
  float ss = 0.0f;
#pragma unroll
  for (int t = 0; t < kMaxPairsPerLane; ++t) {
    const int j = lane + 32 * t;
    x0[t] = x1[t] = 0.0f;
    if (j < half) {
      x0[t] = __bfloat162float(src[j]);
      x1[t] = __bfloat162float(src[j + half]);
      ss += x0[t] * x0[t] + x1[t] * x1[t];
    }
  }
  ss = warp_sum(ss);
  const float r = 1.0f / sqrtf(ss / float(hd) + p.eps);
  float amax = 0.0f;  // fp8 key: of the bf16-rounded results, kept in x0 / x1
#pragma unroll
  for (int t = 0; t < kMaxPairsPerLane; ++t) {
    const int j = lane + 32 * t;
    if (j >= half) continue;
    const float n0 = rb(rb(x0[t] * r) * __bfloat162float(w[j]));
    const float n1 = rb(rb(x1[t] * r) * __bfloat162float(w[j + half]));
    const float a = float(p.pos[int64_t(p.axis[j]) * (p.pos_stride ? p.pos_stride : p.n) + i]) * p.inv_freq[j];  // fp32 angle
    const float c = rb(float(cos(double(a)))), s = rb(float(sin(double(a))));
    const bf16 y0 = __float2bfloat16(rb(n0 * c) - rb(n1 * s));
    const bf16 y1 = __float2bfloat16(rb(n1 * c) + rb(n0 * s));
    if (k8) {
      x0[t] = __bfloat162float(y0);
      x1[t] = __bfloat162float(y1);
      amax = fmaxf(amax, fmaxf(fabsf(x0[t]), fabsf(x1[t])));
    } else {
      dst[j] = y0;
      dst[j + half] = y1;
    }
  }
  if (k8) {
    const float sc = kv_fp8_scale(warp_max_f32(amax)), inv = __frcp_rn(sc);
    uint8_t* d8 = p.k_cache8 + kvec * hd;
#pragma unroll
    for (int t = 0; t < kMaxPairsPerLane; ++t) {
      const int j = lane + 32 * t;
      if (j >= half) continue;
      d8[j] = kv_fp8_code(x0[t], inv);
      d8[j + half] = kv_fp8_code(x1[t], inv);
    }
    if (lane == 0) p.k_scale[kvec] = sc;
  }
}

__global__ void silu_mul_kernel(SiluMulParams p) {
  pdl_trigger();
  pdl_wait();
  const int64_t total = p.n * p.inter;
  for (int64_t k = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; k < total;
       k += int64_t(gridDim.x) * blockDim.x) {
    const int64_t r = k / p.inter, c = k % p.inter;
    const float g = __bfloat162float(p.gu[r * 2 * p.inter + c]);
    const float u = __bfloat162float(p.gu[r * 2 * p.inter + p.inter + c]);
    p.y[k] = __float2bfloat16(rb(g / (1.0f + expf(-g))) * u);
  }
}

// silu_mul with the FP8 quantization of y: one thread per 8 outputs, 16 threads per block of 128.
__global__ void silu_mul_q8_kernel(SiluMulParams p) {
  pdl_trigger();
  pdl_wait();
  const int64_t per_row = p.inter / 8, total = p.n * per_row;  // chunks of 8 over [n, inter]
  for (int64_t k0 = int64_t(blockIdx.x) * blockDim.x; k0 < total; k0 += int64_t(gridDim.x) * blockDim.x) {
    const int64_t k = k0 + threadIdx.x;  // uniform loop: the quantization shuffles
    const bool live = k < total;
    const int64_t r = live ? k / per_row : 0, c = live ? k % per_row : 0;
    float v[8] = {0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f};
    if (live) {
      float g[8], u[8];
      unpack8(reinterpret_cast<const Pack8*>(p.gu + r * 2 * p.inter)[c], g);
      unpack8(reinterpret_cast<const Pack8*>(p.gu + r * 2 * p.inter + p.inter)[c], u);
#pragma unroll
      for (int j = 0; j < 8; ++j) v[j] = rb(rb(g[j] / (1.0f + expf(-g[j]))) * u[j]);
      if (p.y) reinterpret_cast<Pack8*>(p.y + r * p.inter)[c] = pack8(v);
    }
    uint32_t codes[2];
    const float s = quant8_block128(v, codes);
    if (live) {
      reinterpret_cast<uint2*>(p.q8 + r * p.inter)[c] = make_uint2(codes[0], codes[1]);
      if (c % 16 == 0) p.q8_scale[(c / 16) * p.n + r] = s;
    }
  }
}

__global__ void add_kernel(bf16* x, const bf16* d, int64_t n) {
  pdl_trigger();
  pdl_wait();
  for (int64_t k = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; k < n;
       k += int64_t(gridDim.x) * blockDim.x)
    x[k] = __float2bfloat16(__bfloat162float(x[k]) + __bfloat162float(d[k]));
}

__global__ void gelu_kernel(bf16* x, int64_t n, bool erf_form) {
  pdl_trigger();
  pdl_wait();
  for (int64_t k = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; k < n;
       k += int64_t(gridDim.x) * blockDim.x) {
    const float v = __bfloat162float(x[k]);
    float y;
    if (erf_form) {
      y = 0.5f * v * (1.0f + erff(v * 0.70710678118654752f));
    } else {
      const float u = 0.7978845608028654f * (v + 0.044715f * v * v * v);
      y = 0.5f * v * (1.0f + tanhf(u));
    }
    x[k] = __float2bfloat16(y);
  }
}

// One thread per rope pair (row, head, j): consecutive threads take consecutive j of a head,
// so a warp's loads are contiguous whatever the head size.
__global__ void rope_kernel(RopeParams p) {
  pdl_trigger();
  pdl_wait();
  const int half = p.head_dim / 2;
  const int64_t per_row = int64_t(p.n_heads) * half, total = p.n * per_row;
  for (int64_t k = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; k < total;
       k += int64_t(gridDim.x) * blockDim.x) {
    const int64_t r = k / per_row;
    const int h = int((k % per_row) / half), j = int(k % half);
    bf16* x = p.x + r * p.row_stride + int64_t(h) * p.head_dim;
    const float a = __bfloat162float(x[j]), b = __bfloat162float(x[j + half]);
    const float c = p.cos[r * half + j], s = p.sin[r * half + j];
    x[j] = __float2bfloat16(a * c - b * s);
    x[j + half] = __float2bfloat16(b * c + a * s);
  }
}

// Attention: block = (query row, kv head), kAttnWarps warps splitting the keys; each warp keeps an online
// softmax for the G query heads of its kv head; the warps merge through shared memory. Lane owns
// dims lane·E .. lane·E + E - 1 (E = ceil(hd / 32)).
constexpr int kAttnWarps = 8;  // 8 key streams: decode rows need the parallelism
constexpr int kMaxGroup = 8;
template <int E>
__global__ void __launch_bounds__(kAttnWarps * 32) attention_kernel(AttentionParams p) {
  pdl_trigger();
  pdl_wait();
  const int64_t i = blockIdx.x;
  const int g = blockIdx.y;
  const int G = p.n_heads / p.n_kv;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int hd = p.head_dim;
  const int len = p.row_len[i];

  float q[kMaxGroup][E], acc[kMaxGroup][E], m[kMaxGroup], l[kMaxGroup];
#pragma unroll
  for (int h = 0; h < kMaxGroup; ++h) {
    m[h] = -INFINITY;
    l[h] = 0.0f;
#pragma unroll
    for (int e = 0; e < E; ++e) {
      const int d = lane * E + e;
      acc[h][e] = 0.0f;
      q[h][e] = (h < G && d < hd)
                    ? __bfloat162float(p.q[i * p.q_stride + int64_t(g * G + h) * hd + d]) * p.scale
                    : 0.0f;
    }
  }
  const int32_t* table = p.block_table ? p.block_table + int64_t(p.row_seq[i]) * p.table_width : nullptr;
  const int64_t start = p.block_table ? 0 : p.row_start[i];
  for (int j = warp; j < len; j += kAttnWarps) {
    int64_t off;
    if (table) {
      const int64_t slot = int64_t(table[j / p.block_size]) * p.block_size + j % p.block_size;
      off = (slot * p.n_kv + g) * hd;
    } else {
      off = (start + j) * p.kv_stride + int64_t(g) * hd;
    }
    float kf[E], vf[E];
#pragma unroll
    for (int e = 0; e < E; ++e) {
      const int d = lane * E + e;
      kf[e] = d < hd ? __bfloat162float(p.k[off + d]) : 0.0f;
      vf[e] = d < hd ? __bfloat162float(p.v[off + d]) : 0.0f;
    }
#pragma unroll
    for (int h = 0; h < kMaxGroup; ++h) {
      if (h >= G) break;
      float s = 0.0f;
#pragma unroll
      for (int e = 0; e < E; ++e) s += q[h][e] * kf[e];
      s = warp_sum(s);
      const float mn = fmaxf(m[h], s);
      const float corr = __expf(m[h] - mn), pj = __expf(s - mn);
      l[h] = l[h] * corr + pj;
#pragma unroll
      for (int e = 0; e < E; ++e) acc[h][e] = acc[h][e] * corr + pj * vf[e];
      m[h] = mn;
    }
  }

  __shared__ float sm_m[kAttnWarps][kMaxGroup], sm_l[kAttnWarps][kMaxGroup];
  __shared__ float sm_acc[kAttnWarps][kMaxGroup][E * 32];
#pragma unroll
  for (int h = 0; h < kMaxGroup; ++h) {
    if (lane == 0) {
      sm_m[warp][h] = m[h];
      sm_l[warp][h] = l[h];
    }
#pragma unroll
    for (int e = 0; e < E; ++e) sm_acc[warp][h][lane * E + e] = acc[h][e];
  }
  __syncthreads();
  for (int idx = threadIdx.x; idx < G * hd; idx += blockDim.x) {
    const int h = idx / hd, d = idx % hd;
    float M = -INFINITY;
    for (int w = 0; w < kAttnWarps; ++w) M = fmaxf(M, sm_m[w][h]);
    float L = 0.0f, A = 0.0f;
    for (int w = 0; w < kAttnWarps; ++w) {
      if (sm_m[w][h] == -INFINITY) continue;
      const float f = __expf(sm_m[w][h] - M);
      L += sm_l[w][h] * f;
      A += sm_acc[w][h][d] * f;
    }
    p.out[i * p.out_stride + int64_t(g * G + h) * hd + d] = __float2bfloat16(L > 0.0f ? A / L : 0.0f);
  }
}

__global__ void bf16_to_f32_kernel(const bf16* x, float* y, int64_t n) {
  pdl_trigger();
  pdl_wait();
  for (int64_t k = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; k < n;
       k += int64_t(gridDim.x) * blockDim.x)
    y[k] = __bfloat162float(x[k]);
}

__global__ void argmax_kernel(const bf16* x, int64_t d, int32_t* out) {
  pdl_trigger();
  pdl_wait();
  const bf16* row = x + int64_t(blockIdx.x) * d;
  float best = -INFINITY;
  int64_t bi = -1;
  for (int64_t k = threadIdx.x; k < d; k += blockDim.x) {
    const float v = __bfloat162float(row[k]);
    if (bi < 0 || v > best) best = v, bi = k;  // strided scan: first index wins ties per thread
  }
  __shared__ float sv[1024];
  __shared__ int64_t si[1024];
  sv[threadIdx.x] = best;
  si[threadIdx.x] = bi;
  __syncthreads();
  for (int o = blockDim.x / 2; o > 0; o >>= 1) {
    if (int(threadIdx.x) < o) {
      const float v2 = sv[threadIdx.x + o];
      const int64_t i2 = si[threadIdx.x + o];
      const float v1 = sv[threadIdx.x];
      const int64_t i1 = si[threadIdx.x];
      if (i2 >= 0 && (i1 < 0 || v2 > v1 || (v2 == v1 && i2 < i1))) {
        sv[threadIdx.x] = v2;
        si[threadIdx.x] = i2;
      }
    }
    __syncthreads();
  }
  if (threadIdx.x == 0) out[blockIdx.x] = int32_t(si[0]);
}

// One block per row: each thread keeps (max, Σ exp(x - max), first index of the max) over its
// strided elements; the block merges the triples.
__global__ void argmax_logprob_kernel(const bf16* x, int64_t d, int32_t* out, float* logprob) {
  pdl_trigger();
  pdl_wait();
  const bf16* row = x + int64_t(blockIdx.x) * d;
  float mx = -INFINITY, sum = 0.0f;
  int64_t bi = -1;
  for (int64_t k = threadIdx.x; k < d; k += blockDim.x) {
    const float v = __bfloat162float(row[k]);
    if (bi < 0 || v > mx) {
      sum = (bi < 0 ? 0.0f : sum * expf(mx - v)) + 1.0f;
      mx = v;
      bi = k;
    } else {
      sum += expf(v - mx);
    }
  }
  __shared__ float sv[1024], ss[1024];
  __shared__ int64_t si[1024];
  sv[threadIdx.x] = mx;
  ss[threadIdx.x] = sum;
  si[threadIdx.x] = bi;
  __syncthreads();
  for (int o = blockDim.x / 2; o > 0; o >>= 1) {
    if (int(threadIdx.x) < o) {
      const float v1 = sv[threadIdx.x], v2 = sv[threadIdx.x + o];
      const int64_t i1 = si[threadIdx.x], i2 = si[threadIdx.x + o];
      if (i2 >= 0) {
        if (i1 < 0) {
          sv[threadIdx.x] = v2, ss[threadIdx.x] = ss[threadIdx.x + o], si[threadIdx.x] = i2;
        } else {
          const float M = fmaxf(v1, v2);
          ss[threadIdx.x] = ss[threadIdx.x] * expf(v1 - M) + ss[threadIdx.x + o] * expf(v2 - M);
          if (v2 > v1 || (v2 == v1 && i2 < i1)) sv[threadIdx.x] = v2, si[threadIdx.x] = i2;
        }
      }
    }
    __syncthreads();
  }
  if (threadIdx.x == 0) {
    out[blockIdx.x] = int32_t(si[0]);
    logprob[blockIdx.x] = -logf(ss[0]);
  }
}

__global__ void f32_to_bf16_kernel(const float* x, bf16* y, int64_t n) {
  pdl_trigger();
  pdl_wait();
  for (int64_t k = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; k < n;
       k += int64_t(gridDim.x) * blockDim.x)
    y[k] = __float2bfloat16(x[k]);
}

// One block per patch; threads over 8-element chunks of the hidden size.
__global__ void vision_pos_embed_kernel(VisionPosEmbedParams p) {
  pdl_trigger();
  pdl_wait();
  const int64_t r = blockIdx.x;
  const int4 pt = reinterpret_cast<const int4*>(p.patch)[r];
  const int ng = p.grid;
  auto axis = [ng](int i, int len, int& lo, int& hi, float& frac) {
    const float src = float(i) * float(ng - 1) / float(max(len - 1, 1));
    lo = int(src);
    hi = min(lo + 1, ng - 1);
    frac = src - float(lo);
  };
  int hl, hh, wl, wh;
  float dh, dw;
  axis(pt.x, pt.z, hl, hh, dh);
  axis(pt.y, pt.w, wl, wh, dw);
  const float wt[4] = {(1 - dh) * (1 - dw), (1 - dh) * dw, dh * (1 - dw), dh * dw};
  const int64_t idx[4] = {int64_t(hl) * ng + wl, int64_t(hl) * ng + wh, int64_t(hh) * ng + wl,
                          int64_t(hh) * ng + wh};
  bf16* x = p.x + r * p.hidden;
  for (int c = threadIdx.x; c < p.hidden / 8; c += blockDim.x) {
    float acc[8], t[8], xv[8];
#pragma unroll
    for (int k = 0; k < 8; ++k) acc[k] = 0.0f;
#pragma unroll
    for (int q = 0; q < 4; ++q) {
      unpack8(reinterpret_cast<const Pack8*>(p.table + idx[q] * p.hidden)[c], t);
#pragma unroll
      for (int k = 0; k < 8; ++k) acc[k] += wt[q] * t[k];
    }
    unpack8(reinterpret_cast<const Pack8*>(x)[c], xv);
#pragma unroll
    for (int k = 0; k < 8; ++k) xv[k] = xv[k] + rb(acc[k]);
    reinterpret_cast<Pack8*>(x)[c] = pack8(xv);
  }
}

// One block per patch row, threads over its columns.
__global__ void vision_patchify_kernel(VisionPatchifyParams p) {
  pdl_trigger();
  pdl_wait();
  const int64_t r = blockIdx.x;
  const int P = p.patch_size, PP = P * P, cols = 3 * p.temporal * PP;
  const int y0 = p.patch[4 * r] * P, x0 = p.patch[4 * r + 1] * P;
  bf16* out = p.out + r * cols;
  for (int k = threadIdx.x; k < cols; k += blockDim.x) {
    const int c = k / (p.temporal * PP), q = k % PP;
    const int y = y0 + q / P, x = x0 + q % P;
    out[k] = __float2bfloat16(p.lut[c * 256 + p.rgb[(int64_t(y) * p.width + x) * 3 + c]]);
  }
}

__global__ void vision_rope_tables_kernel(const int32_t* patch, const float* inv, int64_t n, int quarter,
                                          float* cs, float* sn) {
  pdl_trigger();
  pdl_wait();
  const int64_t total = n * 2 * quarter;
  for (int64_t k = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; k < total;
       k += int64_t(gridDim.x) * blockDim.x) {
    const int64_t r = k / (2 * quarter);
    const int slot = int(k % (2 * quarter));
    const int pos = slot < quarter ? patch[4 * r] : patch[4 * r + 1];
    const float a = float(pos) * inv[slot % quarter];
    cs[k] = float(cos(double(a)));
    sn[k] = float(sin(double(a)));
  }
}

int grid_for(int64_t n, int threads) {
  const int64_t b = (n + threads - 1) / threads;
  return int(b < 65536 ? (b > 0 ? b : 1) : 65536);
}

int row_threads(int64_t chunks) {
  int t = 32;
  while (t < 256 && t < chunks) t *= 2;
  return t;
}

}  // namespace

bool pdl_enabled() {
  static const bool on = [] {
    const char* e = std::getenv("OST_PDL");
    return !(e && std::strcmp(e, "0") == 0);
  }();
  return on;
}

Status launch_embedding(const EmbeddingParams& p, cudaStream_t s) {
  if (p.n == 0) return Status::ok();
  OST_CUDA_RET(launch_pdl(embedding_kernel, dim3(unsigned(p.n)), dim3(128), 0, s, p));
  OST_LAUNCH_RET();
  return Status::ok();
}

Status launch_scatter_rows(const ScatterRowsParams& p, cudaStream_t s) {
  if (p.n == 0) return Status::ok();
  OST_CUDA_RET(launch_pdl(scatter_rows_kernel, dim3(unsigned(p.n)), dim3(256), 0, s, p));
  OST_LAUNCH_RET();
  return Status::ok();
}

Status launch_add_rms_norm(const AddRmsNormParams& p, cudaStream_t s) {
  if (p.d % 8 != 0) return make_error("add_rms_norm: d = %d is not a multiple of 8", p.d);
  if (p.q8 && (p.d % 128 != 0 || !p.q8_scale))
    return make_error("add_rms_norm: FP8 output needs d a multiple of 128 (d = %d) and a scale buffer", p.d);
  if (p.n == 0) return Status::ok();
  OST_CUDA_RET(launch_pdl(add_rms_norm_kernel, dim3(unsigned(p.n)), dim3(row_threads(p.d / 8)), 0, s, p));
  OST_LAUNCH_RET();
  return Status::ok();
}

Status launch_layer_norm(const LayerNormParams& p, cudaStream_t s) {
  if (p.d % 8 != 0) return make_error("layer_norm: d = %d is not a multiple of 8", p.d);
  if (p.n == 0) return Status::ok();
  OST_CUDA_RET(launch_pdl(layer_norm_kernel, dim3(unsigned(p.n)), dim3(row_threads(p.d / 8)), 0, s, p,
                          static_cast<bf16*>(nullptr), static_cast<const bf16*>(nullptr)));
  OST_LAUNCH_RET();
  return Status::ok();
}

Status launch_add_layer_norm(const AddLayerNormParams& a, cudaStream_t s) {
  if (a.d % 8 != 0) return make_error("add_layer_norm: d = %d is not a multiple of 8", a.d);
  if (a.n == 0) return Status::ok();
  const LayerNormParams p{a.x, a.w, a.b, a.y, a.n, a.d, a.eps};
  OST_CUDA_RET(launch_pdl(layer_norm_kernel, dim3(unsigned(p.n)), dim3(row_threads(p.d / 8)), 0, s, p, a.x,
                          a.delta));
  OST_LAUNCH_RET();
  return Status::ok();
}

Status launch_qk_norm_rope(const QkNormRopeParams& p, cudaStream_t s) {
  if (p.head_dim % 2 != 0 || p.head_dim > 64 * kMaxPairsPerLane)
    return make_error("qk_norm_rope: head_dim %d is not supported", p.head_dim);
  if (p.k_cache8 && (!p.v_cache8 || !p.k_scale || !p.v_scale))
    return make_error("qk_norm_rope: fp8 cache without its v codes or scales");
  if (p.n == 0) return Status::ok();
  const int64_t warps = p.n * (p.n_heads + 2 * p.n_kv);
  OST_CUDA_RET(launch_pdl(qk_norm_rope_kernel, dim3(unsigned((warps * 32 + 127) / 128)), dim3(128), 0, s, p));
  OST_LAUNCH_RET();
  return Status::ok();
}

Status launch_silu_mul(const SiluMulParams& p, cudaStream_t s) {
  if (p.n == 0) return Status::ok();
  if (p.q8) {
    if (p.inter % 128 != 0 || !p.q8_scale)
      return make_error("silu_mul: FP8 output needs inter a multiple of 128 (inter = %lld) and a scale buffer",
                        (long long)p.inter);
    OST_CUDA_RET(launch_pdl(silu_mul_q8_kernel, dim3(grid_for(p.n * p.inter / 8, 256)), dim3(256), 0, s, p));
    OST_LAUNCH_RET();
    return Status::ok();
  }
  if (!p.y) return make_error("silu_mul: no output");
  OST_CUDA_RET(launch_pdl(silu_mul_kernel, dim3(grid_for(p.n * p.inter, 256)), dim3(256), 0, s, p));
  OST_LAUNCH_RET();
  return Status::ok();
}

Status launch_add(bf16* x, const bf16* d, int64_t n, cudaStream_t s) {
  if (n == 0) return Status::ok();
  OST_CUDA_RET(launch_pdl(add_kernel, dim3(grid_for(n, 256)), dim3(256), 0, s, x, d, n));
  OST_LAUNCH_RET();
  return Status::ok();
}

Status launch_gelu(bf16* x, int64_t n, bool erf, cudaStream_t s) {
  if (n == 0) return Status::ok();
  OST_CUDA_RET(launch_pdl(gelu_kernel, dim3(grid_for(n, 256)), dim3(256), 0, s, x, n, erf));
  OST_LAUNCH_RET();
  return Status::ok();
}

Status launch_rope(const RopeParams& p, cudaStream_t s) {
  if (p.n == 0) return Status::ok();
  OST_CUDA_RET(
      launch_pdl(rope_kernel, dim3(grid_for(p.n * p.n_heads * (p.head_dim / 2), 256)), dim3(256), 0, s, p));
  OST_LAUNCH_RET();
  return Status::ok();
}

Status launch_attention(const AttentionParams& p, cudaStream_t s) {
  if (p.n_kv <= 0 || p.n_heads % p.n_kv != 0 || p.n_heads / p.n_kv > kMaxGroup)
    return make_error("attention: %d heads over %d kv heads is not supported", p.n_heads, p.n_kv);
  if (!p.block_table && !p.row_start) return make_error("attention: no key addressing given");
  if (p.n == 0) return Status::ok();
  const dim3 grid(unsigned(p.n), unsigned(p.n_kv));
  const int E = (p.head_dim + 31) / 32;
  switch (E) {
    case 1: OST_CUDA_RET(launch_pdl(attention_kernel<1>, dim3(grid), dim3(kAttnWarps * 32), 0, s, p)); break;
    case 2: OST_CUDA_RET(launch_pdl(attention_kernel<2>, dim3(grid), dim3(kAttnWarps * 32), 0, s, p)); break;
    case 3: OST_CUDA_RET(launch_pdl(attention_kernel<3>, dim3(grid), dim3(kAttnWarps * 32), 0, s, p)); break;
    case 4: OST_CUDA_RET(launch_pdl(attention_kernel<4>, dim3(grid), dim3(kAttnWarps * 32), 0, s, p)); break;
    default: return make_error("attention: head_dim %d is not supported", p.head_dim);
  }
  OST_LAUNCH_RET();
  return Status::ok();
}

Status launch_bf16_to_f32(const bf16* x, float* y, int64_t n, cudaStream_t s) {
  if (n == 0) return Status::ok();
  OST_CUDA_RET(launch_pdl(bf16_to_f32_kernel, dim3(grid_for(n, 256)), dim3(256), 0, s, x, y, n));
  OST_LAUNCH_RET();
  return Status::ok();
}

Status launch_argmax_logprob(const bf16* x, int64_t rows, int64_t d, int32_t* out, float* logprob,
                             cudaStream_t s) {
  if (rows == 0) return Status::ok();
  OST_CUDA_RET(launch_pdl(argmax_logprob_kernel, dim3(unsigned(rows)), dim3(1024), 0, s, x, d, out, logprob));
  OST_LAUNCH_RET();
  return Status::ok();
}

Status launch_f32_to_bf16(const float* x, bf16* y, int64_t n, cudaStream_t s) {
  if (n == 0) return Status::ok();
  OST_CUDA_RET(launch_pdl(f32_to_bf16_kernel, dim3(grid_for(n, 256)), dim3(256), 0, s, x, y, n));
  OST_LAUNCH_RET();
  return Status::ok();
}

Status launch_vision_pos_embed(const VisionPosEmbedParams& p, cudaStream_t s) {
  if (p.hidden % 8 != 0) return make_error("vision_pos_embed: hidden %d is not a multiple of 8", p.hidden);
  if (p.n == 0) return Status::ok();
  OST_CUDA_RET(
      launch_pdl(vision_pos_embed_kernel, dim3(unsigned(p.n)), dim3(row_threads(p.hidden / 8)), 0, s, p));
  OST_LAUNCH_RET();
  return Status::ok();
}

Status launch_vision_patchify(const VisionPatchifyParams& p, cudaStream_t s) {
  if (p.n == 0) return Status::ok();
  OST_CUDA_RET(launch_pdl(vision_patchify_kernel, dim3(unsigned(p.n)), dim3(256), 0, s, p));
  OST_LAUNCH_RET();
  return Status::ok();
}

Status launch_vision_rope_tables(const int32_t* patch, const float* inv_freq, int64_t n, int quarter,
                                 float* cos, float* sin, cudaStream_t s) {
  if (n == 0) return Status::ok();
  OST_CUDA_RET(launch_pdl(vision_rope_tables_kernel, dim3(grid_for(n * 2 * quarter, 256)), dim3(256), 0, s,
                          patch, inv_freq, n, quarter, cos, sin));
  OST_LAUNCH_RET();
  return Status::ok();
}

Status launch_argmax(const bf16* x, int64_t rows, int64_t d, int32_t* out, cudaStream_t s) {
  if (rows == 0) return Status::ok();
  OST_CUDA_RET(launch_pdl(argmax_kernel, dim3(unsigned(rows)), dim3(1024), 0, s, x, d, out));
  OST_LAUNCH_RET();
  return Status::ok();
}

}  // namespace ost::cuda
