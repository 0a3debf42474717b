// The kernel of gemv.h. Block = 256 threads over R output rows; thread t takes the 8-element
// chunks t, t + 256, ... of `in`, two chunks per iteration so 2·R loads of W are in flight
// before the first FMA. x (n rows) is read through L1, once per chunk for all R rows.
#include <algorithm>
#include <cstdlib>
#include <cstring>

#include "backend/cuda/cuda_check.h"
#include "backend/cuda/gemv.h"
#include "backend/cuda/gemv_fuse.cuh"
#include "backend/cuda/ld_stream.cuh"
#include "backend/cuda/pdl.h"

namespace ost::cuda {
namespace {

constexpr int kThreads = 256;


__device__ __forceinline__ void to_f32(const uint4& u, float* f) {
  const __nv_bfloat162* h = reinterpret_cast<const __nv_bfloat162*>(&u);
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const float2 t = __bfloat1622float2(h[i]);
    f[2 * i] = t.x;
    f[2 * i + 1] = t.y;
  }
}

template <int N, int R, int X>
__device__ __forceinline__ void gemv_chunk(const GemvParams& p, int64_t c, const uint4 (&wv)[R], const float (&rn)[N],
                                           float (&acc)[N][R]) {
#pragma unroll
  for (int n = 0; n < N; ++n) {
    float xf[8];
    fuse::load_x8<X>(p.x, p.in, n, c, p.fuse.norm_w, rn[n], xf);
#pragma unroll
    for (int r = 0; r < R; ++r) {
      float wf[8];
      to_f32(wv[r], wf);
#pragma unroll
      for (int e = 0; e < 8; ++e) acc[n][r] += xf[e] * wf[e];
    }
  }
}

template <int N, int R, int X>
__global__ void __launch_bounds__(kThreads) gemv_kernel(GemvParams p) {
  pdl_trigger();
  constexpr int RO = X == fuse::kGlu && R > 1 ? R / 2 : R;  // outputs per block (GLU needs R >= 2)
  const int64_t o0 = int64_t(blockIdx.x) * RO;
  const int64_t chunks = p.in / 8;
  const uint4* w4 = reinterpret_cast<const uint4*>(p.w);
  const uint4* wr[R];
#pragma unroll
  for (int r = 0; r < R; ++r) wr[r] = w4 + fuse::block_row<X, R>(o0, r, p.out) * chunks;
  // The weights do not depend on the kernels before: the first iteration's loads are issued
  // before waiting for x (programmatic dependent launch), so the DRAM latency of the first
  // chunks overlaps the end of the kernel before.
  int64_t c = threadIdx.x;
  uint4 wa[R], wb[R];
  bool loaded = p.preload && c + kThreads < chunks;
  if (loaded)
#pragma unroll
    for (int r = 0; r < R; ++r) {
      wa[r] = ld_stream(wr[r] + c);
      wb[r] = ld_stream(wr[r] + c + kThreads);
    }
  pdl_wait();
  float rn[N];
  if constexpr (X == fuse::kNorm) fuse::row_rms<N, kThreads>(p.x, p.in, p.fuse.eps, rn);
  float acc[N][R];
#pragma unroll
  for (int n = 0; n < N; ++n)
#pragma unroll
    for (int r = 0; r < R; ++r) acc[n][r] = 0.0f;

  for (; c + kThreads < chunks; c += 2 * kThreads, loaded = false) {
    if (!loaded)
#pragma unroll
      for (int r = 0; r < R; ++r) {
        wa[r] = ld_stream(wr[r] + c);
        wb[r] = ld_stream(wr[r] + c + kThreads);
      }
    gemv_chunk<N, R, X>(p, c, wa, rn, acc);
    gemv_chunk<N, R, X>(p, c + kThreads, wb, rn, acc);
  }
  if (c < chunks) {
#pragma unroll
    for (int r = 0; r < R; ++r) wa[r] = ld_stream(wr[r] + c);
    gemv_chunk<N, R, X>(p, c, wa, rn, acc);
  }

  __shared__ float red[kThreads / 32][N * R];
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
#pragma unroll
  for (int n = 0; n < N; ++n)
#pragma unroll
    for (int r = 0; r < R; ++r) {
      float v = acc[n][r];
#pragma unroll
      for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
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
        if (p.bias) g += __bfloat162float(p.bias[o]), u += __bfloat162float(p.bias[p.out + o]);
        p.y[int64_t(n) * p.out + o] = fuse::glu(g, u);
      }
    }
  } else if (threadIdx.x < N * R) {
    const int n = threadIdx.x / R, r = threadIdx.x % R;
    const int64_t o = o0 + r;
    if (o < p.out) {
      float v = 0.0f;
#pragma unroll
      for (int w = 0; w < kThreads / 32; ++w) v += red[w][n * R + r];
      if (p.bias) v += __bfloat162float(p.bias[o]);
      p.y[int64_t(n) * p.out + o] = fuse::epilogue(v, p.fuse.residual, int64_t(n) * p.out + o);
    }
  }
}

template <int N, int X>
Status launch_n(const GemvParams& p, int R, bool pdl, cudaStream_t s) {
  const auto blocks = [&](int r) {
    const int ro = X == fuse::kGlu ? r / 2 : r;
    return unsigned((p.out + ro - 1) / ro);
  };
  if (X == fuse::kGlu && R < 2) return make_error("gemv: the GLU epilogue needs 2 or more rows per block");
  switch (R) {
    case 1:
      OST_CUDA_RET(launch_pdl(pdl, gemv_kernel<N, 1, X>, dim3(blocks(1)), dim3(kThreads), 0, s, p));
      break;
    case 2:
      OST_CUDA_RET(launch_pdl(pdl, gemv_kernel<N, 2, X>, dim3(blocks(2)), dim3(kThreads), 0, s, p));
      break;
    case 4:
      OST_CUDA_RET(launch_pdl(pdl, gemv_kernel<N, 4, X>, dim3(blocks(4)), dim3(kThreads), 0, s, p));
      break;
    case 8:
      if constexpr (N <= 4) {
        OST_CUDA_RET(launch_pdl(pdl, gemv_kernel<N, 8, X>, dim3(blocks(8)), dim3(kThreads), 0, s, p));
        break;
      }
      [[fallthrough]];
    default:
      return make_error("gemv: %d rows per block is not a variant for n = %d", R, N);
  }
  OST_LAUNCH_RET();
  return Status::ok();
}

}  // namespace

// OST_GEMV_PRELOAD=0: no weight loads before the wait (A/B runs). Pulling a GEMV's whole matrix
// into L2 before the wait (prefetch.global.L2) measured slower on the H100 (2026-11-25: the
// prefetches of the next GEMV compete with the running one for DRAM and L2).
bool gemv_preload_enabled() {
  static const bool on = [] {
    const char* e = std::getenv("OST_GEMV_PRELOAD");
    return !(e && std::strcmp(e, "0") == 0);
  }();
  return on;
}

bool gemv_supports(int64_t n, int64_t in, const void* x, const void* w) {
  return n >= 1 && n <= kGemvMaxRows && in % 8 == 0 && in > 0 && reinterpret_cast<uintptr_t>(x) % 16 == 0 &&
         reinterpret_cast<uintptr_t>(w) % 16 == 0;
}

int gemv_variants(int64_t n, int* rows_per_block) {
  int k = 0;
  for (int r : {1, 2, 4, 8})
    if (r < 8 || n <= 4) rows_per_block[k++] = r;
  return k;
}

Status launch_gemv(const GemvParams& params, int R, cudaStream_t s, bool allow_pdl) {
  const bool pdl = allow_pdl && pdl_enabled();
  GemvParams p = params;
  p.preload = pdl && gemv_preload_enabled();  // only useful while an earlier kernel still runs
  if (p.out <= 0) return Status::ok();
  if (int(p.fuse.norm_w != nullptr) + int(p.fuse.silu) + int(p.fuse.glu) > 1 || (p.fuse.glu && p.fuse.residual))
    return make_error("gemv: fusions that do not go together");
  if (!gemv_supports(p.n, p.in, p.x, p.w) || (p.fuse.norm_w && reinterpret_cast<uintptr_t>(p.fuse.norm_w) % 16))
    return make_error("gemv: n = %d, in = %lld is not supported", p.n, (long long)p.in);
  const int X = p.fuse.glu ? fuse::kGlu : p.fuse.norm_w ? fuse::kNorm : p.fuse.silu ? fuse::kSilu : fuse::kPlain;
  switch (X * 8 + p.n - 1) {
#define OST_GEMV_CASE(x, n) \
  case x * 8 + n - 1:       \
    return launch_n<n, x>(p, R, pdl, s);
#define OST_GEMV_CASES(x) \
  OST_GEMV_CASE(x, 1)     \
  OST_GEMV_CASE(x, 2)     \
  OST_GEMV_CASE(x, 3)     \
  OST_GEMV_CASE(x, 4)     \
  OST_GEMV_CASE(x, 5)     \
  OST_GEMV_CASE(x, 6)     \
  OST_GEMV_CASE(x, 7)     \
  OST_GEMV_CASE(x, 8)
    OST_GEMV_CASES(0)
    OST_GEMV_CASES(1)
    OST_GEMV_CASES(2)
    OST_GEMV_CASES(3)
#undef OST_GEMV_CASES
#undef OST_GEMV_CASE
    default:
      return make_error("gemv: n = %d", p.n);
  }
}

int fused_gemv_rows(int64_t n) {
  static const int env = [] {
    const char* e = std::getenv("OST_FUSED_ROWS");
    return e ? std::atoi(e) : 0;
  }();
  if (env == 1 || env == 2 || env == 4 || (env == 8 && n <= 4)) return env;
  return 4;
}

}  // namespace ost::cuda
