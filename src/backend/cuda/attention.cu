// The kernels of attention.h.
//
// Flash attention: a block owns BM = 16·WARPS query rows of one query head; each warp owns 16
// of them. K and V tiles of 64 keys are double-buffered in shared memory through cp.async; Q
// fragments stay in registers. S = Q·Kᵀ and O += P·V run on mma.sync m16n8k16 (bf16 in, fp32
// accumulate) with operands from ldmatrix (V through ldmatrix.trans). Head sizes that are not a
// multiple of 16 (72 in the vision tower) are zero-padded in shared memory up to the next 16,
// so the last k-step of Q·Kᵀ adds zeros and the padded output columns are never stored.
//
// Decode: a block owns one (row, kv head, chunk) with 4 warps. head_dim/8 lanes share a key
// (16-byte loads, 8 dims per lane); the other lanes of the warp take other keys, so a warp
// reads 2 keys of 128 dims per load. Each key stream keeps an online softmax for the G query
// heads of the kv head, 4 keys per iteration so 8 loads are in flight per lane; the streams are
// merged in shared memory and the chunk's (max, sum, unnormalised output) is stored; the last
// block of the row to finish merges the chunks (a row that fits one chunk is written directly).
#include <algorithm>
#include <cfloat>
#include <cmath>
#include <cstdlib>
#include <cstring>

#include "backend/cuda/attention.h"
#include "backend/cuda/cuda_check.h"
#include "backend/cuda/kv_fp8.cuh"
#include "backend/cuda/mma_util.cuh"
#include "backend/cuda/pdl.h"
#include "backend/cuda/vision_attention.h"

namespace ost::cuda {
namespace {

constexpr float kLog2e = 1.4426950408889634f;

__device__ __forceinline__ void ldsm_x4(uint32_t& r0, uint32_t& r1, uint32_t& r2, uint32_t& r3,
                                        const void* p) {
  const unsigned a = unsigned(__cvta_generic_to_shared(p));
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r0), "=r"(r1), "=r"(r2), "=r"(r3)
               : "r"(a));
}
__device__ __forceinline__ void ldsm_x4_t(uint32_t& r0, uint32_t& r1, uint32_t& r2, uint32_t& r3,
                                          const void* p) {
  const unsigned a = unsigned(__cvta_generic_to_shared(p));
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r0), "=r"(r1), "=r"(r2), "=r"(r3)
               : "r"(a));
}

// d += a·b, a 16×16 (row), b 16×8 (col), bf16 in, f32 accumulators.
__device__ __forceinline__ void mma_bf16(float* d, const uint32_t* a, uint32_t b0, uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
      "{%0,%1,%2,%3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

__device__ __forceinline__ uint32_t pack_bf16(float lo, float hi) {
  __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
  return *reinterpret_cast<uint32_t*>(&v);
}

constexpr int kBN = 64;  // keys per tile

template <int HD, int WARPS>
constexpr size_t flash_smem_bytes() {
  constexpr int HDP = (HD + 15) / 16 * 16, LD = HDP + 8;
  return size_t(WARPS * 16 + 4 * kBN) * LD * 2;
}

// F8 (paged only): the cache holds e4m3 codes + scales; load_kv dequantizes them to bf16 with
// plain loads and shared stores instead of cp.async (the wait for tile kt+1's loads is not
// overlapped with tile kt's math as cp.async overlaps it).
template <int HD, int WARPS, bool PAGED, bool F8 = false>
__global__ void __launch_bounds__(WARPS * 32) flash_attention_kernel(FlashAttentionParams p) {
  pdl_trigger();
  pdl_wait();
  constexpr int HDP = (HD + 15) / 16 * 16;  // padded to the mma k-step
  constexpr int LD = HDP + 8;               // shared row stride: 16-byte aligned, no bank conflicts
  constexpr int BM = WARPS * 16;
  constexpr int CH = HD / 8;  // 16-byte chunks per row
  constexpr int NT = WARPS * 32;
  extern __shared__ __align__(16) unsigned char smem_raw[];
  bf16* sQ = reinterpret_cast<bf16*>(smem_raw);  // [BM][LD]
  bf16* sK = sQ + BM * LD;                       // [2][kBN][LD]
  bf16* sV = sK + 2 * kBN * LD;                  // [2][kBN][LD]
  const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32;
  const int gq = lane / 4, tq = lane % 4;  // mma fragment row group and column pair
  const int h = blockIdx.y, g = h / (p.n_heads / p.n_kv);

  // The tile: query rows q0 .. q0+q_rows-1, keys k_begin .. k_end-1.
  int64_t q0 = 0, k_begin = 0, k_end = 0, causal_base = 0;
  int q_rows = 0;
  if (PAGED) {
    q0 = int64_t(blockIdx.x) * BM;
    q_rows = int(min(int64_t(BM), p.n - q0));
    k_end = p.past + q0 + q_rows;
    causal_base = p.past + q0;
  } else {
    int t = int(blockIdx.x);
    for (int s = 0; s < p.n_segments; ++s) {
      const int len = p.cu_seqlens[s + 1] - p.cu_seqlens[s];
      const int nt = (len + BM - 1) / BM;
      if (t < nt) {
        q0 = p.cu_seqlens[s] + int64_t(t) * BM;
        q_rows = min(BM, len - t * BM);
        k_begin = p.cu_seqlens[s];
        k_end = p.cu_seqlens[s + 1];
        break;
      }
      t -= nt;
    }
    if (q_rows <= 0) return;
  }

  if (HDP > HD) {  // zero the padding columns once; cp.async never writes them
    for (int r = tid; r < BM + 4 * kBN; r += NT)
#pragma unroll
      for (int c = HD; c < HDP; ++c) sQ[r * LD + c] = __float2bfloat16(0.0f);
  }

  for (int c = tid; c < BM * CH; c += NT) {
    const int r = c / CH, cc = c % CH;
    const bool ok = r < q_rows;
    const bf16* src = p.q + (ok ? (q0 + r) * p.q_stride + int64_t(h) * HD + cc * 8 : 0);
    cp_async16(sQ + r * LD + cc * 8, src, ok);
  }
  auto load_kv = [&](int kt, int buf) {
    const int64_t kb = k_begin + int64_t(kt) * kBN;
    if constexpr (F8) {
      // Every chunk's codes and scales are loaded first (all loads in flight), then each chunk
      // is dequantized to bf16 and stored; keys past the end are zeros.
      constexpr int NC = (kBN * CH + NT - 1) / NT;  // chunks per thread
      uint2 kq[NC], vq[NC];
      float ks[NC], vs[NC];
#pragma unroll
      for (int it = 0; it < NC; ++it) {
        const int c = tid + it * NT, r = c / CH, cc = c % CH;
        const int64_t j = kb + r;
        kq[it] = vq[it] = make_uint2(0, 0);
        ks[it] = vs[it] = 0.0f;
        if (c < kBN * CH && j < k_end) {
          const int64_t slot = int64_t(p.block_table[j / p.block_size]) * p.block_size + j % p.block_size;
          const int64_t vec = slot * p.n_kv + g, off = vec * HD + cc * 8;
          kq[it] = __ldg(reinterpret_cast<const uint2*>(p.k8 + off));
          vq[it] = __ldg(reinterpret_cast<const uint2*>(p.v8 + off));
          ks[it] = __ldg(p.k_scale + vec);
          vs[it] = __ldg(p.v_scale + vec);
        }
      }
#pragma unroll
      for (int it = 0; it < NC; ++it) {
        const int c = tid + it * NT, r = c / CH, cc = c % CH;
        if (c >= kBN * CH) continue;
        *reinterpret_cast<uint4*>(sK + (buf * kBN + r) * LD + cc * 8) = e4m3x8_to_bf16x8(kq[it], ks[it]);
        *reinterpret_cast<uint4*>(sV + (buf * kBN + r) * LD + cc * 8) = e4m3x8_to_bf16x8(vq[it], vs[it]);
      }
    } else {
      for (int c = tid; c < kBN * CH; c += NT) {
        const int r = c / CH, cc = c % CH;
        const int64_t j = kb + r;
        const bool ok = j < k_end;
        int64_t off = 0;
        if (ok) {
          if (PAGED) {
            const int64_t slot = int64_t(p.block_table[j / p.block_size]) * p.block_size + j % p.block_size;
            off = (slot * p.n_kv + g) * HD + cc * 8;
          } else {
            off = j * p.kv_stride + int64_t(g) * HD + cc * 8;
          }
        }
        cp_async16(sK + (buf * kBN + r) * LD + cc * 8, p.k + off, ok);
        cp_async16(sV + (buf * kBN + r) * LD + cc * 8, p.v + off, ok);
      }
    }
  };
  const int n_kt = int((k_end - k_begin + kBN - 1) / kBN);
  load_kv(0, 0);
  cp_async_commit();

  const float sl = p.scale * kLog2e;
  uint32_t qf[HDP / 16][4];
  float o[HDP / 8][4];
#pragma unroll
  for (int i = 0; i < HDP / 8; ++i) o[i][0] = o[i][1] = o[i][2] = o[i][3] = 0.0f;
  float m[2] = {-INFINITY, -INFINITY}, l[2] = {0.0f, 0.0f};
  const int64_t row_lim0 = causal_base + warp * 16 + gq;  // last key of this thread's row gq

  for (int kt = 0; kt < n_kt; ++kt) {
    const int buf = kt & 1;
    if (kt + 1 < n_kt) {
      load_kv(kt + 1, buf ^ 1);
      cp_async_commit();
      cp_async_wait<1>();
    } else {
      cp_async_wait<0>();
    }
    __syncthreads();
    if (kt == 0) {
#pragma unroll
      for (int ks = 0; ks < HDP / 16; ++ks)
        ldsm_x4(qf[ks][0], qf[ks][1], qf[ks][2], qf[ks][3],
                sQ + (warp * 16 + (lane % 8) + 8 * ((lane / 8) % 2)) * LD + ks * 16 + 8 * (lane / 16));
    }

    // S = Q·Kᵀ for this warp's 16 rows and the tile's 64 keys.
    float s[kBN / 8][4];
#pragma unroll
    for (int nt = 0; nt < kBN / 8; ++nt) s[nt][0] = s[nt][1] = s[nt][2] = s[nt][3] = 0.0f;
    const bf16* kbuf = sK + buf * kBN * LD;
#pragma unroll
    for (int np = 0; np < kBN / 16; ++np) {
#pragma unroll
      for (int ks = 0; ks < HDP / 16; ++ks) {
        uint32_t b0, b1, b2, b3;
        ldsm_x4(b0, b1, b2, b3,
                kbuf + (np * 16 + (lane % 8) + 8 * (lane / 16)) * LD + ks * 16 + 8 * ((lane / 8) % 2));
        mma_bf16(s[2 * np], qf[ks], b0, b1);
        mma_bf16(s[2 * np + 1], qf[ks], b2, b3);
      }
    }

    // Scale, mask, online softmax (rows gq and gq + 8 of the warp; a row's 4 threads agree).
    const int64_t kb = k_begin + int64_t(kt) * kBN;
    const bool need_mask = kb + kBN > k_end || (PAGED && kb + kBN - 1 > causal_base + warp * 16);
#pragma unroll
    for (int nt = 0; nt < kBN / 8; ++nt)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        float v = s[nt][e] * sl;
        if (need_mask) {
          const int64_t j = kb + nt * 8 + 2 * tq + (e & 1);
          const bool ok = j < k_end && (!PAGED || j <= row_lim0 + (e >> 1) * 8);
          if (!ok) v = -INFINITY;
        }
        s[nt][e] = v;
      }
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      float mx = -INFINITY;
#pragma unroll
      for (int nt = 0; nt < kBN / 8; ++nt) mx = fmaxf(mx, fmaxf(s[nt][2 * r], s[nt][2 * r + 1]));
      mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
      mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
      const float m_new = fmaxf(m[r], mx);
      const float m_use = m_new == -INFINITY ? 0.0f : m_new;
      const float corr = exp2f(m[r] - m_use);
      m[r] = m_new;
      float sum = 0.0f;
#pragma unroll
      for (int nt = 0; nt < kBN / 8; ++nt) {
        const float p0 = exp2f(s[nt][2 * r] - m_use), p1 = exp2f(s[nt][2 * r + 1] - m_use);
        s[nt][2 * r] = p0;
        s[nt][2 * r + 1] = p1;
        sum += p0 + p1;
      }
      l[r] = l[r] * corr + sum;
#pragma unroll
      for (int dt = 0; dt < HDP / 8; ++dt) {
        o[dt][2 * r] *= corr;
        o[dt][2 * r + 1] *= corr;
      }
    }

    // O += P·V.
    const bf16* vbuf = sV + buf * kBN * LD;
#pragma unroll
    for (int kk = 0; kk < kBN / 16; ++kk) {
      const uint32_t a[4] = {pack_bf16(s[2 * kk][0], s[2 * kk][1]), pack_bf16(s[2 * kk][2], s[2 * kk][3]),
                             pack_bf16(s[2 * kk + 1][0], s[2 * kk + 1][1]),
                             pack_bf16(s[2 * kk + 1][2], s[2 * kk + 1][3])};
#pragma unroll
      for (int dp = 0; dp < HDP / 16; ++dp) {
        uint32_t b0, b1, b2, b3;
        ldsm_x4_t(b0, b1, b2, b3,
                  vbuf + (kk * 16 + (lane % 8) + 8 * ((lane / 8) % 2)) * LD + dp * 16 + 8 * (lane / 16));
        mma_bf16(o[2 * dp], a, b0, b1);
        mma_bf16(o[2 * dp + 1], a, b2, b3);
      }
    }
    __syncthreads();  // the buffer is refilled two iterations on
  }

#pragma unroll
  for (int r = 0; r < 2; ++r) {
    float L = l[r];
    L += __shfl_xor_sync(0xffffffffu, L, 1);
    L += __shfl_xor_sync(0xffffffffu, L, 2);
    const float inv = L > 0.0f ? 1.0f / L : 0.0f;
    const int row = warp * 16 + gq + 8 * r;
    if (row >= q_rows) continue;
    bf16* dst = p.out + (q0 + row) * p.out_stride + int64_t(h) * HD;
#pragma unroll
    for (int dt = 0; dt < HD / 8; ++dt)
      *reinterpret_cast<__nv_bfloat162*>(dst + dt * 8 + 2 * tq) =
          __floats2bfloat162_rn(o[dt][2 * r] * inv, o[dt][2 * r + 1] * inv);
  }
}

template <int HD, int WARPS, bool PAGED, bool F8 = false>
Status run_flash(const FlashAttentionParams& p, unsigned tiles, cudaStream_t s) {
  constexpr size_t smem = flash_smem_bytes<HD, WARPS>();
  static bool configured = false;  // one attribute call per instantiation
  if (!configured) {
    OST_CUDA_RET(cudaFuncSetAttribute(flash_attention_kernel<HD, WARPS, PAGED, F8>,
                                      cudaFuncAttributeMaxDynamicSharedMemorySize, int(smem)));
    configured = true;
  }
  OST_CUDA_RET(launch_pdl(flash_attention_kernel<HD, WARPS, PAGED, F8>, dim3(tiles, unsigned(p.n_heads)),
                          dim3(WARPS * 32), smem, s, p));
  OST_LAUNCH_RET();
  return Status::ok();
}

template <int HD>
Status flash_dispatch(const FlashAttentionParams& p, cudaStream_t s) {
  if (p.block_table) {
    const unsigned tiles = unsigned((p.n + 63) / 64);
    if (p.k8) return run_flash<HD, 4, true, true>(p, tiles, s);
    return run_flash<HD, 4, true>(p, tiles, s);
  }
  // Dense: 4 warps (64 query rows per block; 3 blocks per SM by registers at head size 72). The
  // 8-warp shape (128 rows, half the K/V traffic per row, one block per SM) measured slower on
  // the vision tower at 1280x960 on the H100 (18.7 vs 17.1 ms, 2026-11-25); OST_FLASH_WARPS=8
  // selects it where there are enough tiles for two blocks per SM.
  int dev = 0, sms = 132;
  if (cudaGetDevice(&dev) == cudaSuccess) cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev);
  int64_t t64 = 0, t128 = 0;
  for (int i = 0; i < p.n_segments; ++i) {
    const int64_t len = p.cu_seqlens_host[i + 1] - p.cu_seqlens_host[i];
    t64 += (len + 63) / 64;
    t128 += (len + 127) / 128;
  }
  if (t64 == 0) return Status::ok();
  static const int forced = [] {
    const char* e = std::getenv("OST_FLASH_WARPS");
    return e ? std::atoi(e) : 0;
  }();
  const bool eight = forced == 8 && t128 * p.n_heads >= 2 * int64_t(sms);
  if (eight) return run_flash<HD, 8, false>(p, unsigned(t128), s);
  return run_flash<HD, 4, false>(p, unsigned(t64), s);
}

// ---- decode ----

constexpr int kDecodeWarps = 4;
constexpr int kDecodeUnroll = 4;
constexpr int kMinChunk = 32;

__device__ __forceinline__ int decode_chunk(int len, int splits) {
  return max(kMinChunk, (len + splits - 1) / splits);
}

struct alignas(16) Bf8 {
  __nv_bfloat162 h[4];
};

__device__ __forceinline__ void bf8_to_f32(const uint4& u, float* f) {
  const Bf8 b = *reinterpret_cast<const Bf8*>(&u);
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const float2 t = __bfloat1622float2(b.h[i]);
    f[2 * i] = t.x;
    f[2 * i + 1] = t.y;
  }
}

__device__ __forceinline__ float rbf(float x) { return __bfloat162float(__float2bfloat16(x)); }

// Per-head RMSNorm then M-RoPE of one head (as qk_norm_rope_kernel, kernels.cu) in the decode
// layout: each of the HD/8 lanes of a key group holds dims d0 .. d0+7 of the head; the rope
// partner of dim j < HD/2 is j + HD/2, held by the lane HD/16 further on. cs, sn: the row's
// bf16-rounded cos and sin per j (shared memory). Returns the bf16-rounded results as floats.
// Every lane of the warp must call it.
template <int HD>
__device__ __forceinline__ void norm_rope8(const uint4& raw, const bf16* w, const float* cs, const float* sn,
                                           float eps, int d0, float* y) {
  constexpr int LPK = HD / 8, half = HD / 2;
  float x[8], partner[8];
  bf8_to_f32(raw, x);
  float ss = 0.0f;
#pragma unroll
  for (int e = 0; e < 8; ++e) ss += x[e] * x[e];
#pragma unroll
  for (int o = LPK / 2; o > 0; o >>= 1) ss += __shfl_xor_sync(0xffffffffu, ss, o);
#pragma unroll
  for (int e = 0; e < 8; ++e) partner[e] = __shfl_xor_sync(0xffffffffu, x[e], LPK / 2);
  const float r = 1.0f / sqrtf(ss / float(HD) + eps);
  const bool first = d0 < half;
#pragma unroll
  for (int e = 0; e < 8; ++e) {
    const int j = (d0 + e) % half;
    const float x0 = first ? x[e] : partner[e], x1 = first ? partner[e] : x[e];
    const float n0 = rbf(rbf(x0 * r) * __bfloat162float(w[j]));
    const float n1 = rbf(rbf(x1 * r) * __bfloat162float(w[j + half]));
    const float c = cs[j], si = sn[j];
    y[e] = rbf(first ? rbf(n0 * c) - rbf(n1 * si) : rbf(n1 * c) + rbf(n0 * si));
  }
}

__device__ __forceinline__ uint4 f32_to_bf8(const float* f) {
  Bf8 b;
#pragma unroll
  for (int k = 0; k < 4; ++k) b.h[k] = __floats2bfloat162_rn(f[2 * k], f[2 * k + 1]);
  return *reinterpret_cast<const uint4*>(&b);
}

// F8: the cache holds e4m3 codes + scales (8 codes per lane per key, one 8-byte load each).
template <int HD, int G, bool F8 = false>
__global__ void __launch_bounds__(kDecodeWarps * 32) decode_attention_kernel(DecodeAttentionParams p) {
  pdl_trigger();
  pdl_wait();
  constexpr int LPK = HD / 8;            // lanes per key
  constexpr int KPW = 32 / LPK;          // keys per warp and load
  constexpr int S = kDecodeWarps * KPW;  // key streams in the block
  constexpr int U = kDecodeUnroll;
  const int64_t i = blockIdx.x;
  const int g = blockIdx.y, z = blockIdx.z;
  const int len = p.row_len[i];
  const int chunk = decode_chunk(len, p.splits);
  const int begin = z * chunk;
  if (begin >= len) return;
  const int end = min(len, begin + chunk);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int stream = warp * KPW + lane / LPK, d0 = (lane % LPK) * 8;

  float q[G][8];
  const float sl = p.scale * kLog2e;
  const bf16* raw = !F8 && p.qkv ? p.qkv + i * int64_t(p.n_heads + 2 * p.n_kv) * HD
                                  : nullptr;  // this row's projection (fused input, bf16 cache only)
  __shared__ float rope_c[HD / 2], rope_s[HD / 2];
  if (raw) {  // the row's rope angles, once per block: fp32 angle, cos/sin in fp64, rounded to bf16
    for (int j = threadIdx.x; j < HD / 2; j += kDecodeWarps * 32) {
      const float a = float(p.pos[int64_t(p.axis[j]) * p.pos_stride + i]) * p.inv_freq[j];
      rope_c[j] = rbf(float(cos(double(a))));
      rope_s[j] = rbf(float(sin(double(a))));
    }
    __syncthreads();
  }
#pragma unroll
  for (int hh = 0; hh < G; ++hh) {
    if (raw) {
      norm_rope8<HD>(*reinterpret_cast<const uint4*>(raw + int64_t(g * G + hh) * HD + d0), p.q_norm, rope_c,
                     rope_s, p.eps, d0, q[hh]);
    } else {
      const uint4 u = *reinterpret_cast<const uint4*>(p.q + i * p.q_stride + int64_t(g * G + hh) * HD + d0);
      bf8_to_f32(u, q[hh]);
    }
#pragma unroll
    for (int e = 0; e < 8; ++e) q[hh][e] *= sl;
  }
  // The new token's key and value (fused input): made here by the block that reads them.
  const int last = len - 1;
  const bool makes_last = raw && last >= begin && last < end;
  uint4 k_last = make_uint4(0, 0, 0, 0), v_last = make_uint4(0, 0, 0, 0);
  if (makes_last) {
    float kf[8];
    norm_rope8<HD>(*reinterpret_cast<const uint4*>(raw + int64_t(p.n_heads + g) * HD + d0), p.k_norm, rope_c,
                   rope_s, p.eps, d0, kf);
    k_last = f32_to_bf8(kf);
    v_last = *reinterpret_cast<const uint4*>(raw + int64_t(p.n_heads + p.n_kv + g) * HD + d0);
    if (stream == 0) {
      const int64_t off = (int64_t(p.slot[i]) * p.n_kv + g) * HD + d0;
      *reinterpret_cast<uint4*>(p.k_store + off) = k_last;
      *reinterpret_cast<uint4*>(p.v_store + off) = v_last;
    }
  }
  float acc[G][8], m[G], l[G];
#pragma unroll
  for (int hh = 0; hh < G; ++hh) {
    m[hh] = -INFINITY;
    l[hh] = 0.0f;
#pragma unroll
    for (int e = 0; e < 8; ++e) acc[hh][e] = 0.0f;
  }
  const int32_t* table = p.block_table + int64_t(p.row_seq[i]) * p.table_width;

  for (int jb = begin; jb < end; jb += S * U) {  // uniform trip count: the shuffles need every lane
    uint4 kr[U], vr[U];
    uint2 kq[U], vq[U];   // F8: codes
    float ks[U], vs[U];   // F8: scales
    bool ok[U];
#pragma unroll
    for (int u = 0; u < U; ++u) {
      const int j = jb + u * S + stream;
      ok[u] = j < end;
      int64_t off = 0;
      if (makes_last && j == last) {
        kr[u] = k_last;
        vr[u] = v_last;
      } else if (ok[u]) {
        const int64_t slot = int64_t(table[j / p.block_size]) * p.block_size + j % p.block_size;
        const int64_t vec = slot * p.n_kv + g;
        off = vec * HD + d0;
        if constexpr (F8) {
          kq[u] = __ldg(reinterpret_cast<const uint2*>(p.k8 + off));
          vq[u] = __ldg(reinterpret_cast<const uint2*>(p.v8 + off));
          ks[u] = __ldg(p.k_scale + vec);
          vs[u] = __ldg(p.v_scale + vec);
        } else {
          kr[u] = __ldg(reinterpret_cast<const uint4*>(p.k + off));
          vr[u] = __ldg(reinterpret_cast<const uint4*>(p.v + off));
        }
      } else {
        kr[u] = vr[u] = make_uint4(0, 0, 0, 0);
        kq[u] = vq[u] = make_uint2(0, 0);
        ks[u] = vs[u] = 0.0f;
      }
    }
    float sc[U][G];
#pragma unroll
    for (int u = 0; u < U; ++u) {
      float kf[8];
      if constexpr (F8) e4m3x8_to_f32(kq[u], kf);
      else bf8_to_f32(kr[u], kf);
#pragma unroll
      for (int hh = 0; hh < G; ++hh) {
        float d = 0.0f;
#pragma unroll
        for (int e = 0; e < 8; ++e) d += q[hh][e] * kf[e];
#pragma unroll
        for (int o = LPK / 2; o > 0; o >>= 1) d += __shfl_xor_sync(0xffffffffu, d, o);
        if constexpr (F8) d *= ks[u];
        sc[u][hh] = ok[u] ? d : -INFINITY;
      }
    }
    if (!ok[0]) continue;  // this stream has no key in this round (u = 0 is its first)
#pragma unroll
    for (int hh = 0; hh < G; ++hh) {
      float mx = sc[0][hh];
#pragma unroll
      for (int u = 1; u < U; ++u) mx = fmaxf(mx, sc[u][hh]);
      const float m_new = fmaxf(m[hh], mx);
      const float corr = exp2f(m[hh] - m_new);
      m[hh] = m_new;
      l[hh] *= corr;
#pragma unroll
      for (int e = 0; e < 8; ++e) acc[hh][e] *= corr;
#pragma unroll
      for (int u = 0; u < U; ++u) {
        const float pj = exp2f(sc[u][hh] - m_new);  // 0 for keys past the end
        l[hh] += pj;
        float vf[8];
        float pv = pj;
        if constexpr (F8) {
          e4m3x8_to_f32(vq[u], vf);
          pv = pj * vs[u];
        } else {
          bf8_to_f32(vr[u], vf);
        }
#pragma unroll
        for (int e = 0; e < 8; ++e) acc[hh][e] += pv * vf[e];
      }
    }
  }

  __shared__ float sm_m[S][G], sm_l[S][G];
  __shared__ float sm_acc[S][G][HD];
#pragma unroll
  for (int hh = 0; hh < G; ++hh) {
    if (lane % LPK == 0) {
      sm_m[stream][hh] = m[hh];
      sm_l[stream][hh] = l[hh];
    }
#pragma unroll
    for (int e = 0; e < 8; ++e) sm_acc[stream][hh][d0 + e] = acc[hh][e];
  }
  __syncthreads();
  const int ns = (len + chunk - 1) / chunk;  // chunks of this row
  float* ml = p.partial + int64_t(p.n) * p.n_heads * p.splits * HD;
  for (int idx = threadIdx.x; idx < G * HD; idx += kDecodeWarps * 32) {
    const int hh = idx / HD, d = idx % HD;
    float M = -INFINITY;
#pragma unroll
    for (int t = 0; t < S; ++t) M = fmaxf(M, sm_m[t][hh]);
    float L = 0.0f, A = 0.0f;
#pragma unroll
    for (int t = 0; t < S; ++t) {
      if (sm_m[t][hh] == -INFINITY) continue;
      const float f = exp2f(sm_m[t][hh] - M);
      L += sm_l[t][hh] * f;
      A += sm_acc[t][hh][d] * f;
    }
    if (ns == 1) {  // the whole row in this block
      p.out[i * p.out_stride + int64_t(g * G + hh) * HD + d] = __float2bfloat16(L > 0.0f ? A / L : 0.0f);
      continue;
    }
    const int64_t part = (i * p.n_heads + g * G + hh) * p.splits + z;
    p.partial[part * HD + d] = A;
    if (d == 0) {
      ml[2 * part] = M;
      ml[2 * part + 1] = L;
    }
  }
  if (ns == 1) return;

  // The last block of this (row, kv head) to finish merges the chunks (threadfence reduction:
  // every thread's partial stores are made visible before the count is taken).
  __shared__ bool is_last;
  __threadfence();
  __syncthreads();
  if (threadIdx.x == 0) is_last = atomicAdd(p.counters + i * p.n_kv + g, 1) == ns - 1;
  __syncthreads();
  if (!is_last) return;
  __threadfence();
  for (int idx = threadIdx.x; idx < G * HD; idx += kDecodeWarps * 32) {
    const int hh = idx / HD, d = idx % HD;
    const int64_t base = (i * p.n_heads + g * G + hh) * p.splits;
    float M = -INFINITY;
    for (int c = 0; c < ns; ++c) M = fmaxf(M, __ldcg(ml + 2 * (base + c)));
    float L = 0.0f, A = 0.0f;
    for (int c = 0; c < ns; ++c) {
      const float f = exp2f(__ldcg(ml + 2 * (base + c)) - M);
      L += __ldcg(ml + 2 * (base + c) + 1) * f;
      A += __ldcg(p.partial + (base + c) * HD + d) * f;
    }
    p.out[i * p.out_stride + int64_t(g * G + hh) * HD + d] = __float2bfloat16(L > 0.0f ? A / L : 0.0f);
  }
  if (threadIdx.x == 0) p.counters[i * p.n_kv + g] = 0;  // ready for the next launch
}

template <int HD, int G>
Status run_decode(const DecodeAttentionParams& p, cudaStream_t s) {
  const dim3 grid(unsigned(p.n), unsigned(p.n_kv), unsigned(p.splits));
  if (p.k8) OST_CUDA_RET(launch_pdl(decode_attention_kernel<HD, G, true>, grid, dim3(kDecodeWarps * 32), 0, s, p));
  else OST_CUDA_RET(launch_pdl(decode_attention_kernel<HD, G>, grid, dim3(kDecodeWarps * 32), 0, s, p));
  OST_LAUNCH_RET();
  return Status::ok();
}

template <int HD>
Status decode_dispatch_group(const DecodeAttentionParams& p, cudaStream_t s) {
  switch (p.n_heads / p.n_kv) {
    case 1:
      return run_decode<HD, 1>(p, s);
    case 2:
      return run_decode<HD, 2>(p, s);
    case 4:
      return run_decode<HD, 4>(p, s);
    case 8:
      return run_decode<HD, 8>(p, s);
    default:
      return make_error("decode attention: group %d is not supported", p.n_heads / p.n_kv);
  }
}

}  // namespace

bool flash_attention_supports(int head_dim) {
  switch (head_dim) {
    case 16:
    case 32:
    case 64:
    case 72:
    case 80:
    case 96:
    case 128:
      return true;
    default:
      return false;
  }
}

Status launch_flash_attention(const FlashAttentionParams& p, cudaStream_t s) {
  if (p.n_kv <= 0 || p.n_heads % p.n_kv != 0)
    return make_error("flash attention: %d heads over %d kv heads", p.n_heads, p.n_kv);
  if (!p.block_table && (!p.cu_seqlens || !p.cu_seqlens_host))
    return make_error("flash attention: no key addressing given");
  if (p.k8 && (!p.block_table || !p.v8 || !p.k_scale || !p.v_scale))
    return make_error("flash attention: an fp8 cache needs the paged layout, its v codes and scales");
  if (p.block_table && p.n == 0) return Status::ok();
  static const bool fa2_dense = [] {  // OST_VISION_ATTN=fa2: the 16-row kernel below (A/B runs)
    const char* e = std::getenv("OST_VISION_ATTN");
    return e && std::strcmp(e, "fa2") == 0;
  }();
  if (!p.block_table && !fa2_dense && vision_attention_supports(p.head_dim)) return launch_vision_attention(p, s);
  switch (p.head_dim) {
    case 16:
      return flash_dispatch<16>(p, s);
    case 32:
      return flash_dispatch<32>(p, s);
    case 64:
      return flash_dispatch<64>(p, s);
    case 72:
      return flash_dispatch<72>(p, s);
    case 80:
      return flash_dispatch<80>(p, s);
    case 96:
      return flash_dispatch<96>(p, s);
    case 128:
      return flash_dispatch<128>(p, s);
    default:
      return make_error("flash attention: head_dim %d is not supported", p.head_dim);
  }
}

bool decode_attention_supports(int head_dim, int group) {
  const bool hd = head_dim == 32 || head_dim == 64 || head_dim == 128 || head_dim == 256;
  return hd && (group == 1 || group == 2 || group == 4 || group == 8);
}

int decode_attention_splits(int64_t rows, int n_kv, int sm_count) {
  const int64_t base = std::max<int64_t>(1, rows * n_kv);
  const int64_t want = (2 * int64_t(sm_count) + base - 1) / base;
  return int(std::min<int64_t>(kMaxDecodeSplits, std::max<int64_t>(1, want)));
}

size_t decode_attention_partial_floats(int64_t rows, int n_heads, int head_dim, int splits) {
  return size_t(rows) * size_t(n_heads) * size_t(splits) * size_t(head_dim + 2);
}

Status launch_decode_attention(const DecodeAttentionParams& p, cudaStream_t s) {
  if (p.n_kv <= 0 || p.n_heads % p.n_kv != 0 || !decode_attention_supports(p.head_dim, p.n_heads / p.n_kv))
    return make_error("decode attention: %d heads over %d kv heads of %d dims is not supported", p.n_heads,
                      p.n_kv, p.head_dim);
  if (p.splits < 1 || p.splits > kMaxDecodeSplits) return make_error("decode attention: %d splits", p.splits);
  if (!p.partial || !p.counters || !p.block_table)
    return make_error("decode attention: no workspace or block table");
  if (p.qkv &&
      (!p.q_norm || !p.k_norm || !p.pos || !p.inv_freq || !p.axis || !p.slot || !p.k_store || !p.v_store))
    return make_error("decode attention: fused input without its norms, rope tables or cache slots");
  if (p.k8 && (p.qkv || !p.v8 || !p.k_scale || !p.v_scale))
    return make_error("decode attention: an fp8 cache needs its v codes and scales (and no fused input)");
  if (p.n == 0) return Status::ok();
  switch (p.head_dim) {
    case 32:
      return decode_dispatch_group<32>(p, s);
    case 64:
      return decode_dispatch_group<64>(p, s);
    case 128:
      return decode_dispatch_group<128>(p, s);
    case 256:
      return decode_dispatch_group<256>(p, s);
    default:
      return make_error("decode attention: head_dim %d is not supported", p.head_dim);
  }
}

}  // namespace ost::cuda
