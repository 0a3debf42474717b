// The kernel of gemv.h. Block = 256 threads over R output rows; thread t takes the 8-element
// chunks t, t + 256, ... of `in`, two chunks per iteration so 2·R loads of W are in flight
// before the first FMA. x (n rows) is read through L1, once per chunk for all R rows.
#include <algorithm>
#include <cstdlib>
#include <cstring>

#include "backend/cuda/cuda_check.h"
#include "backend/cuda/gemv.h"
#include "backend/cuda/pdl.h"

namespace ost::cuda {
namespace {

constexpr int kThreads = 256;

__device__ __forceinline__ uint4 ld_stream(const uint4* p) {
  uint4 r;
  asm("ld.global.nc.L1::no_allocate.v4.u32 {%0,%1,%2,%3}, [%4];\n"
      : "=r"(r.x), "=r"(r.y), "=r"(r.z), "=r"(r.w)
      : "l"(p));
  return r;
}

__device__ __forceinline__ void to_f32(const uint4& u, float* f) {
  const __nv_bfloat162* h = reinterpret_cast<const __nv_bfloat162*>(&u);
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const float2 t = __bfloat1622float2(h[i]);
    f[2 * i] = t.x;
    f[2 * i + 1] = t.y;
  }
}

template <int N, int R>
__device__ __forceinline__ void gemv_chunk(const uint4* x4, int64_t chunks, int64_t c, const uint4 (&wv)[R],
                                           float (&acc)[N][R]) {
#pragma unroll
  for (int n = 0; n < N; ++n) {
    float xf[8];
    to_f32(__ldg(x4 + n * chunks + c), xf);
#pragma unroll
    for (int r = 0; r < R; ++r) {
      float wf[8];
      to_f32(wv[r], wf);
#pragma unroll
      for (int e = 0; e < 8; ++e) acc[n][r] += xf[e] * wf[e];
    }
  }
}

template <int N, int R>
__global__ void __launch_bounds__(kThreads) gemv_kernel(GemvParams p) {
  pdl_trigger();
  const int64_t o0 = int64_t(blockIdx.x) * R;
  const int64_t chunks = p.in / 8;
  const uint4* x4 = reinterpret_cast<const uint4*>(p.x);
  const uint4* w4 = reinterpret_cast<const uint4*>(p.w);
  const uint4* wr[R];
#pragma unroll
  for (int r = 0; r < R; ++r)
    wr[r] = w4 + std::min(o0 + r, p.out - 1) * chunks;  // tail rows re-read the last
  // The weights do not depend on the kernels before: optionally start pulling this thread's
  // share into L2 while they finish (programmatic dependent launch), then wait for x.
  if (p.prefetch)
    for (int64_t c = threadIdx.x; c < chunks; c += kThreads)
#pragma unroll
      for (int r = 0; r < R; ++r) asm volatile("prefetch.global.L2 [%0];\n" ::"l"(wr[r] + c));
  pdl_wait();
  float acc[N][R];
#pragma unroll
  for (int n = 0; n < N; ++n)
#pragma unroll
    for (int r = 0; r < R; ++r) acc[n][r] = 0.0f;

  int64_t c = threadIdx.x;
  for (; c + kThreads < chunks; c += 2 * kThreads) {
    uint4 wa[R], wb[R];
#pragma unroll
    for (int r = 0; r < R; ++r) {
      wa[r] = ld_stream(wr[r] + c);
      wb[r] = ld_stream(wr[r] + c + kThreads);
    }
    gemv_chunk<N, R>(x4, chunks, c, wa, acc);
    gemv_chunk<N, R>(x4, chunks, c + kThreads, wb, acc);
  }
  if (c < chunks) {
    uint4 wa[R];
#pragma unroll
    for (int r = 0; r < R; ++r) wa[r] = ld_stream(wr[r] + c);
    gemv_chunk<N, R>(x4, chunks, c, wa, acc);
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
  if (threadIdx.x < N * R) {
    const int n = threadIdx.x / R, r = threadIdx.x % R;
    const int64_t o = o0 + r;
    if (o < p.out) {
      float v = 0.0f;
#pragma unroll
      for (int w = 0; w < kThreads / 32; ++w) v += red[w][n * R + r];
      if (p.bias) v += __bfloat162float(p.bias[o]);
      p.y[int64_t(n) * p.out + o] = __float2bfloat16(v);
    }
  }
}

template <int N>
Status launch_n(const GemvParams& p, int R, bool pdl, cudaStream_t s) {
  const auto blocks = [&](int r) { return unsigned((p.out + r - 1) / r); };
  switch (R) {
    case 1:
      OST_CUDA_RET(launch_pdl(pdl, gemv_kernel<N, 1>, dim3(blocks(1)), dim3(kThreads), 0, s, p));
      break;
    case 2:
      OST_CUDA_RET(launch_pdl(pdl, gemv_kernel<N, 2>, dim3(blocks(2)), dim3(kThreads), 0, s, p));
      break;
    case 4:
      OST_CUDA_RET(launch_pdl(pdl, gemv_kernel<N, 4>, dim3(blocks(4)), dim3(kThreads), 0, s, p));
      break;
    case 8:
      if constexpr (N <= 4) {
        OST_CUDA_RET(launch_pdl(pdl, gemv_kernel<N, 8>, dim3(blocks(8)), dim3(kThreads), 0, s, p));
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
  // OST_GEMV_PREFETCH=1: pull W into L2 before waiting (measured slower on the H100, 2026-11-25:
  // the prefetches of the next GEMV compete with the running one for DRAM and L2).
  static const bool prefetch = [] {
    const char* e = std::getenv("OST_GEMV_PREFETCH");
    return e && std::strcmp(e, "1") == 0;
  }();
  const bool pdl = allow_pdl && pdl_enabled();
  GemvParams p = params;
  p.prefetch = pdl && prefetch;  // only useful while an earlier kernel still runs
  if (p.out <= 0) return Status::ok();
  if (!gemv_supports(p.n, p.in, p.x, p.w))
    return make_error("gemv: n = %d, in = %lld is not supported", p.n, (long long)p.in);
  switch (p.n) {
    case 1:
      return launch_n<1>(p, R, pdl, s);
    case 2:
      return launch_n<2>(p, R, pdl, s);
    case 3:
      return launch_n<3>(p, R, pdl, s);
    case 4:
      return launch_n<4>(p, R, pdl, s);
    case 5:
      return launch_n<5>(p, R, pdl, s);
    case 6:
      return launch_n<6>(p, R, pdl, s);
    case 7:
      return launch_n<7>(p, R, pdl, s);
    default:
      return launch_n<8>(p, R, pdl, s);
  }
}

}  // namespace ost::cuda
