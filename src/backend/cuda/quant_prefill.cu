// Prefill GEMMs on INT8 / INT4 weights (quant_prefill.h). A block's 64-input step reads 64 weight
// bytes (INT8; 32 for INT4) per channel and BM·64 bf16 of x for BM·BN·64 multiply-adds, so with
// 64 or 128 rows of x the tensor cores, not the weight stream, set the pace; the widening path
// instead moves 1 + 2 + 2 bytes per weight (read, write bf16, read bf16; INT4: 0.5 + 2 + 2)
// before its GEMM starts.
//
// The k-order trick of the decode kernels: a dot product does not care in which order k runs, so
// in mma step s (inputs 16s .. 16s + 15 of the stage) lane (g = lane / 4, t = lane % 4) feeds as
// fragment k (2t, 2t+1) and (2t+8, 2t+9) the inputs 16s + 4t .. 16s + 4t + 3, for A (x) and B (the
// weights) alike: one 8-byte shared load per x row, one 4-byte (INT8) or 2-byte (INT4) load per
// weight row, and the weight bytes need no shuffling across lanes.
#include "backend/cuda/quant_prefill.h"

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <utility>
#include <vector>

#include "backend/cuda/cuda_check.h"
#include "backend/cuda/mma_util.cuh"
#include "backend/cuda/pdl.h"
#include "backend/cuda/rows_choice.h"

namespace ost::cuda {
namespace {

using bf16 = __nv_bfloat16;
constexpr int kWarps = 4, kThreads = kWarps * 32;
constexpr int kWarpCols = 64;  // output channels per warp
constexpr int kBK = 64;        // inputs per pipeline stage
constexpr int kStages = 3;
// Shared rows are padded so the fragment loads hit 32 distinct banks: x rows of 80 bf16 (160
// bytes: the 8-byte loads of rows g = 0..3 of a half-warp start 8 words apart), weight rows of 80
// bytes (INT8) or 48 (INT4): rows g = 0..7 start 20 (12) words apart, distinct mod 32 with room
// for the lane's 4 (2) bytes.
constexpr int kXStride = kBK + 16;  // bf16
template <bool Q4>
constexpr int kWStride = Q4 ? kBK / 2 + 16 : kBK + 16;  // bytes

struct Args {
  const bf16* x;
  const uint8_t* w;       // int8 [out, in] or u8 nibbles [out, in/2]
  const float* scale8;    // INT8: f32 [out]
  const __half* scale4;   // INT4: f16 [out, in/G]
  const uint8_t* zero;    // INT4: u8 [out, in/G]
  const bf16* bias;
  bf16* y;
  int64_t n, out, in;
  int group;
};

// The block's tile: WN warps across the channels (64 each), 4 / WN down the rows of x (MT m16
// tiles each): BM rows × BN channels, and its shared memory (kStages stages of x and weights).
template <int MT, int WN>
struct Tile {
  static constexpr int BM = kWarps / WN * 16 * MT, BN = WN * kWarpCols;
};
template <int MT, int WN, bool Q4>
constexpr size_t kSmemBytes = size_t(kStages) * (size_t(Tile<MT, WN>::BM) * kXStride * 2 + size_t(Tile<MT, WN>::BN) * kWStride<Q4>);

// Block: BM rows of x from m0 × BN channels from o0; warp (wm, wn) the rows wm·16·MT .. (MT m16
// tiles) and channels wn·64 .. (8 n8 tiles) of it.
template <int MT, int WN, bool Q4>
__global__ void __launch_bounds__(kThreads, 2) quant_gemm_kernel(Args p) {
  pdl_trigger();
  constexpr int BM = Tile<MT, WN>::BM, kBN = Tile<MT, WN>::BN, NT = kWarpCols / 8, WS = kWStride<Q4>;
  constexpr int kXBytes = BM * kXStride * 2, kStageBytes = kXBytes + kBN * WS;
  extern __shared__ __align__(16) uint8_t smem[];
  const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32, g = lane / 4, t = lane % 4;
  const int wm = warp / WN, wn = warp % WN;
  const int64_t m0 = int64_t(blockIdx.x) * BM, o0 = int64_t(blockIdx.y) * kBN;
  const int KT = int(p.in / kBK);
  const int64_t wrow = Q4 ? p.in / 2 : p.in;  // bytes per weight row

  // Stage st <- inputs kt·64 ..: x rows past n and weight rows past out are zero-filled.
  auto load = [&](int st, int kt) {
    const int64_t k0 = int64_t(kt) * kBK;
    bf16* sx = reinterpret_cast<bf16*>(smem + st * kStageBytes);
#pragma unroll
    for (int i = 0; i < BM * 8 / kThreads; ++i) {
      const int c = tid + i * kThreads, r = c / 8, cc = c % 8;
      const bool ok = m0 + r < p.n;
      cp_async16(sx + r * kXStride + cc * 8, ok ? p.x + (m0 + r) * p.in + k0 + cc * 8 : p.x, ok);
    }
    constexpr int WC = Q4 ? 2 : 4;  // 16-byte chunks per weight row of a stage
    uint8_t* sw = smem + st * kStageBytes + kXBytes;
#pragma unroll
    for (int i = 0; i < kBN * WC / kThreads; ++i) {
      const int c = tid + i * kThreads, r = c / WC, cc = c % WC;
      const bool ok = o0 + r < p.out;
      cp_async16(sw + r * WS + cc * 16, ok ? p.w + (o0 + r) * wrow + (Q4 ? k0 / 2 : k0) + cc * 16 : p.w, ok);
    }
  };

  // INT4: the scale and 2^23 + zero point of the block's channels for the current group, in
  // shared memory (two buffers, a group apart); thread tid < BN loads those of channel o0 + tid
  // one group ahead into registers.
  __shared__ float2 grp[Q4 ? 2 : 1][Q4 ? kBN : 1];
  static_assert(kThreads >= kBN, "one channel's group parameters per thread");
  uint32_t pre_s = 0, pre_z = 0;
  const int tiles_per_group = Q4 ? p.group / kBK : 1;
  const int64_t ng = Q4 ? p.in / p.group : 0;
  const int64_t grow = (min(o0 + tid, p.out - 1)) * ng;
  auto load_group = [&](int64_t gi) {
    pre_s = __ldg(reinterpret_cast<const unsigned short*>(p.scale4) + grow + gi);
    pre_z = __ldg(p.zero + grow + gi);
  };

  float acc[MT][NT][4];
#pragma unroll
  for (int mt = 0; mt < MT; ++mt)
#pragma unroll
    for (int nt = 0; nt < NT; ++nt) acc[mt][nt][0] = acc[mt][nt][1] = acc[mt][nt][2] = acc[mt][nt][3] = 0.0f;

  pdl_wait();
  if constexpr (Q4) load_group(0);
#pragma unroll
  for (int st = 0; st < kStages - 1; ++st) {
    if (st < KT) load(st, st);
    cp_async_commit();
  }
  for (int kt = 0; kt < KT; ++kt) {
    if constexpr (Q4) {
      if (kt % tiles_per_group == 0) {  // buffer (gi % 2) last served group gi - 2: free since the last sync
        const int64_t gi = kt / tiles_per_group;
        if (tid < kBN) grp[gi % 2][tid] = make_float2(__half2float(__ushort_as_half((unsigned short)pre_s)), 8388608.0f + float(pre_z));
        if (gi + 1 < ng) load_group(gi + 1);
      }
    }
    cp_async_wait<kStages - 2>();  // stage kt has landed (this thread's copies) ...
    __syncthreads();               // ... everyone's, and stage kt - 1 is free again
    if (kt + kStages - 1 < KT) load((kt + kStages - 1) % kStages, kt + kStages - 1);
    cp_async_commit();
    const float2* gq = Q4 ? grp[(kt / tiles_per_group) % 2] + wn * 64 + g : nullptr;
    const uint8_t* stage = smem + (kt % kStages) * kStageBytes;
    const bf16* xs = reinterpret_cast<const bf16*>(stage) + (wm * 16 * MT + g) * kXStride + 4 * t;
    const uint8_t* ws = stage + kXBytes + (wn * 64 + g) * WS + (Q4 ? 2 * t : 4 * t);
#pragma unroll Q4 ? 2 : 4
    for (int s = 0; s < kBK / 16; ++s) {
      uint32_t b[NT][2];  // B fragments: inputs 16s + 4t + (0, 1) and (2, 3) of channel row g
#pragma unroll
      for (int nt = 0; nt < NT; ++nt) {
        if constexpr (Q4) {
          // 4 nibbles (input j at bits 4j): bytes 0 and 1 of lo hold inputs 0 and 2, of hi 1 and 3
          const uint32_t v = *reinterpret_cast<const uint16_t*>(ws + nt * 8 * WS + 8 * s);
          const uint32_t lo = v & 0x0F0Fu, hi = (v >> 4) & 0x0F0Fu;
          const float2 sz = gq[nt * 8];  // scale, 2^23 + zero point
          const float q0 = __uint_as_float(__byte_perm(lo, 0x4B000000u, 0x7440)) - sz.y;
          const float q1 = __uint_as_float(__byte_perm(hi, 0x4B000000u, 0x7440)) - sz.y;
          const float q2 = __uint_as_float(__byte_perm(lo, 0x4B000000u, 0x7441)) - sz.y;
          const float q3 = __uint_as_float(__byte_perm(hi, 0x4B000000u, 0x7441)) - sz.y;
          b[nt][0] = bf16x2_of(q0 * sz.x, q1 * sz.x);
          b[nt][1] = bf16x2_of(q2 * sz.x, q3 * sz.x);
        } else {
          i8x4_to_bf16x2(*reinterpret_cast<const uint32_t*>(ws + nt * 8 * WS + 16 * s), b[nt][0], b[nt][1]);
        }
      }
#pragma unroll
      for (int mt = 0; mt < MT; ++mt) {
        const uint2 lo = *reinterpret_cast<const uint2*>(xs + mt * 16 * kXStride + 16 * s);
        const uint2 hi = *reinterpret_cast<const uint2*>(xs + (mt * 16 + 8) * kXStride + 16 * s);
        const uint32_t a[4] = {lo.x, hi.x, lo.y, hi.y};
#pragma unroll
        for (int nt = 0; nt < NT; ++nt) mma_k16(acc[mt][nt], a, b[nt][0], b[nt][1]);
      }
    }
  }
  cp_async_wait<0>();

  // C fragment: rows g and g + 8 of each m16 tile, channels 2t and 2t + 1 of each n8 tile.
  const bool pairs = p.out % 2 == 0 && (reinterpret_cast<uintptr_t>(p.y) & 3) == 0;
#pragma unroll
  for (int nt = 0; nt < NT; ++nt) {
    const int64_t col = o0 + wn * 64 + nt * 8 + 2 * t;
    if (col >= p.out) continue;
    const bool two = col + 1 < p.out;
    float s0 = 1.0f, s1 = 1.0f, b0 = 0.0f, b1 = 0.0f;
    if constexpr (!Q4) {
      s0 = p.scale8[col];
      s1 = two ? p.scale8[col + 1] : 0.0f;
    }
    if (p.bias) {
      b0 = __bfloat162float(p.bias[col]);
      b1 = two ? __bfloat162float(p.bias[col + 1]) : 0.0f;
    }
#pragma unroll
    for (int mt = 0; mt < MT; ++mt)
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        const int64_t row = m0 + wm * 16 * MT + mt * 16 + g + 8 * h;
        if (row >= p.n) continue;
        const float v0 = acc[mt][nt][2 * h] * s0 + b0, v1 = acc[mt][nt][2 * h + 1] * s1 + b1;
        bf16* dst = p.y + row * p.out + col;
        if (two && pairs) {
          *reinterpret_cast<uint32_t*>(dst) = bf16x2_of(v0, v1);
        } else {
          dst[0] = __float2bfloat16(v0);
          if (two) dst[1] = __float2bfloat16(v1);
        }
      }
  }
}

template <int MT, int WN, bool Q4>
Status launch_tiles(const Args& a, cudaStream_t s) {
  using T = Tile<MT, WN>;
  constexpr size_t smem = kSmemBytes<MT, WN, Q4>;
  static const cudaError_t attr =
      cudaFuncSetAttribute(quant_gemm_kernel<MT, WN, Q4>, cudaFuncAttributeMaxDynamicSharedMemorySize, int(smem));
  OST_CUDA_RET(attr);
  if ((a.out + T::BN - 1) / T::BN > 65535) return make_error("quant_gemm: %lld outputs", (long long)a.out);
  const dim3 grid(unsigned((a.n + T::BM - 1) / T::BM), unsigned((a.out + T::BN - 1) / T::BN));
  OST_CUDA_RET(launch_pdl(quant_gemm_kernel<MT, WN, Q4>, grid, dim3(kThreads), smem, s, a));
  return Status::ok();
}

template <bool Q4>
Status launch_args(const Args& a, int tile_rows, int tile_cols, cudaStream_t s) {
  if (a.n <= 0 || a.out <= 0) return Status::ok();
  if (tile_rows == 0) tile_rows = a.n <= 64 ? 64 : 128;
  if (tile_cols == 0) tile_cols = 128;
  if (tile_rows == 128 && tile_cols == 128) return launch_tiles<4, 2, Q4>(a, s);
  if (tile_rows == 64 && tile_cols == 128) return launch_tiles<2, 2, Q4>(a, s);
  if (tile_rows == 128 && tile_cols == 64) return launch_tiles<2, 1, Q4>(a, s);
  if (tile_rows == 64 && tile_cols == 64) return launch_tiles<1, 1, Q4>(a, s);
  return make_error("quant_gemm: a %d × %d tile is not a variant (64 or 128 each)", tile_rows, tile_cols);
}

bool aligned16(const void* p) { return (reinterpret_cast<uintptr_t>(p) & 15) == 0; }

bool w8_applies(const W8A16GemmParams& p) {
  return p.in > 0 && p.in % kBK == 0 && aligned16(p.x) && aligned16(p.w);
}

bool w4_applies(const W4A16GemmParams& p) {
  return p.in > 0 && p.in % kBK == 0 && p.group > 0 && p.group % kBK == 0 && p.in % p.group == 0 && aligned16(p.x) &&
         aligned16(p.w);
}

Args args_of(const W8A16GemmParams& p) {
  return {p.x, reinterpret_cast<const uint8_t*>(p.w), p.scale, nullptr, nullptr, p.bias, p.y, p.n, p.out, p.in, 0};
}

Args args_of(const W4A16GemmParams& p) {
  return {p.x, p.w, nullptr, p.scale, p.zero, p.bias, p.y, p.n, p.out, p.in, p.group};
}

std::atomic<int> g_forced{-1};  // -1: not forced (the env switch decides)

int mode() {
  static const int env = [] {
    const char* e = std::getenv("OST_QUANT_GEMM");
    // Until the kernel has been checked and timed on a GPU, widening stays the default.
    if (e && std::strcmp(e, "auto") == 0) return int(kQuantGemmAuto);
    if (e && std::strcmp(e, "mma") == 0) return int(kQuantGemmMma);
    return int(kQuantGemmWiden);
  }();
  const int forced = g_forced.load(std::memory_order_relaxed);
  return forced >= 0 ? forced : env;
}

// n rounded up to a power of two (from 64): the rows a choice is timed for and kept by.
int64_t rows_bucket(int64_t n) {
  int64_t b = 64;
  while (b < n) b *= 2;
  return b;
}

// The kernel's tile sizes (rows · 1000 + channels) and `widen` (0; not in mode kQuantGemmMma),
// timed per (rows bucket, out, in, variant) on the call's own operands the first time outside
// graph capture; until then the widening path (the kernel's largest tile when forced).
// OST_QUANT_GEMM_LOG prints each timing with its TFLOP/s.
template <bool Q4, class P>
Status run_prefill(const P& p, bool applies, int variant, const std::function<Status()>& widen, cudaStream_t s) {
  const int m = mode();
  if (!applies || m == kQuantGemmWiden) return widen();
  const Args a = args_of(p);
  if (p.tile_rows || p.tile_cols) return launch_args<Q4>(a, p.tile_rows, p.tile_cols, s);
  static RowsChoice choice;
  static const bool log = std::getenv("OST_QUANT_GEMM_LOG") != nullptr;
  auto launch = [&](int c) { return c == 0 ? widen() : launch_args<Q4>(a, c / 1000, c % 1000, s); };
  std::vector<std::pair<int, float>> times;
  const RowsChoice::Key key{rows_bucket(p.n), p.out, p.in, variant + (m == kQuantGemmMma ? 1 << 20 : 0)};
  auto r = m == kQuantGemmMma
               ? choice.pick(key, {128128, 64128, 128064, 64064}, 128128, true, s, launch, log ? &times : nullptr)
               : choice.pick(key, {0, 128128, 64128, 128064, 64064}, 0, true, s, launch, log ? &times : nullptr);
  OST_TRY(r.status());
  if (log && !times.empty()) {
    const double flop = 2.0 * double(p.n) * double(p.out) * double(p.in);
    std::fprintf(stderr, "%s prefill n=%lld out=%lld in=%lld:", Q4 ? "w4a16" : "w8a16", (long long)p.n,
                 (long long)p.out, (long long)p.in);
    for (auto [c, ms] : times) {
      if (c) std::fprintf(stderr, " mma %dx%d", c / 1000, c % 1000);
      else std::fprintf(stderr, " widen");
      std::fprintf(stderr, " %.1f us (%.0f TFLOP/s);", ms * 1e3, flop / (ms * 1e-3) / 1e12);
    }
    std::fprintf(stderr, " -> %d\n", *r);
  }
  return launch(*r);
}

}  // namespace

Status launch_w8a16_gemm(const W8A16GemmParams& p, cudaStream_t s) {
  if (!w8_applies(p))
    return make_error("w8a16_gemm: inputs (%lld) must be a multiple of %d, x and w 16-byte aligned", (long long)p.in,
                      kBK);
  return launch_args<false>(args_of(p), p.tile_rows, p.tile_cols, s);
}

Status launch_w4a16_gemm(const W4A16GemmParams& p, cudaStream_t s) {
  if (!w4_applies(p))
    return make_error("w4a16_gemm: inputs (%lld) and group (%d) must be multiples of %d, x and w 16-byte aligned",
                      (long long)p.in, p.group, kBK);
  return launch_args<true>(args_of(p), p.tile_rows, p.tile_cols, s);
}

void quant_gemm_force(QuantGemmMode m) { g_forced.store(int(m), std::memory_order_relaxed); }
void quant_gemm_unforce() { g_forced.store(-1, std::memory_order_relaxed); }

Status run_w8a16_prefill(const W8A16GemmParams& p, const std::function<Status()>& widen, cudaStream_t s) {
  return run_prefill<false>(p, w8_applies(p), 0, widen, s);
}

Status run_w4a16_prefill(const W4A16GemmParams& p, const std::function<Status()>& widen, cudaStream_t s) {
  return run_prefill<true>(p, w4_applies(p), p.group, widen, s);
}

}  // namespace ost::cuda
