// Greedy choice with excluded ids (see sampling.h). One block of 1024 threads per row: each
// thread keeps the log-sum-exp pair (max, Σ exp(x - max)) over all its strided elements and the
// best allowed (value, index); the block merges them.
#include <cfloat>
#include <cmath>

#include "backend/cuda/cuda_check.h"
#include "backend/cuda/pdl.h"
#include "backend/cuda/sampling.h"

namespace ost::cuda {
namespace {

constexpr int kThreads = 1024;

__global__ void argmax_logprob_excluding_kernel(const bf16* x, int64_t d, const int32_t* excluded, int32_t* out,
                                                float* logprob) {
  pdl_trigger();
  pdl_wait();
  __shared__ int32_t ex[kMaxExcludedTokens];
  __shared__ int n_ex;
  if (threadIdx.x == 0) n_ex = min(max(excluded[0], 0), kMaxExcludedTokens);
  __syncthreads();
  if (int(threadIdx.x) < n_ex) ex[threadIdx.x] = excluded[1 + threadIdx.x];
  __syncthreads();
  const int ne = n_ex;
  const bf16* row = x + int64_t(blockIdx.x) * d;
  float mx = -INFINITY, sum = 0.0f, best = -INFINITY;
  int64_t bi = -1;
  for (int64_t k = threadIdx.x; k < d; k += kThreads) {
    const float v = __bfloat162float(row[k]);
    if (v > mx) {
      sum = sum * expf(mx - v) + 1.0f;
      mx = v;
    } else {
      sum += expf(v - mx);
    }
    bool allowed = true;
    for (int e = 0; e < ne; ++e) allowed = allowed && ex[e] != int32_t(k);
    if (allowed && (bi < 0 || v > best)) best = v, bi = k;  // strided: the first index wins ties
  }
  __shared__ float sm[kThreads], ss[kThreads], sb[kThreads];
  __shared__ int64_t si[kThreads];
  sm[threadIdx.x] = mx;
  ss[threadIdx.x] = sum;
  sb[threadIdx.x] = best;
  si[threadIdx.x] = bi;
  __syncthreads();
  for (int o = kThreads / 2; o > 0; o >>= 1) {
    if (int(threadIdx.x) < o) {
      const int t = threadIdx.x, u = t + o;
      const float M = fmaxf(sm[t], sm[u]);
      if (M > -INFINITY) {
        ss[t] = (sm[t] > -INFINITY ? ss[t] * expf(sm[t] - M) : 0.0f) +
                (sm[u] > -INFINITY ? ss[u] * expf(sm[u] - M) : 0.0f);
        sm[t] = M;
      }
      const int64_t i1 = si[t], i2 = si[u];
      if (i2 >= 0 && (i1 < 0 || sb[u] > sb[t] || (sb[u] == sb[t] && i2 < i1))) sb[t] = sb[u], si[t] = i2;
    }
    __syncthreads();
  }
  if (threadIdx.x == 0) {
    out[blockIdx.x] = int32_t(si[0]);
    logprob[blockIdx.x] = si[0] >= 0 ? sb[0] - (sm[0] + logf(ss[0])) : -INFINITY;
  }
}

__global__ void gather_rows_kernel(const bf16* src, const int32_t* idx, int64_t width, bf16* dst) {
  pdl_trigger();
  pdl_wait();
  const bf16* in = src + int64_t(idx[blockIdx.x]) * width;
  bf16* out = dst + int64_t(blockIdx.x) * width;
  for (int64_t k = threadIdx.x; k < width; k += blockDim.x) out[k] = in[k];
}

}  // namespace

Status launch_gather_rows(const bf16* src, const int32_t* idx, int64_t n, int64_t width, bf16* dst,
                          cudaStream_t s) {
  if (n == 0) return Status::ok();
  OST_CUDA_RET(launch_pdl(gather_rows_kernel, dim3(unsigned(n)), dim3(256), 0, s, src, idx, width, dst));
  OST_LAUNCH_RET();
  return Status::ok();
}

Status launch_argmax_logprob_excluding(const bf16* x, int64_t rows, int64_t d, const int32_t* excluded,
                                       int32_t* out, float* logprob, cudaStream_t s) {
  if (rows == 0) return Status::ok();
  OST_CUDA_RET(launch_pdl(argmax_logprob_excluding_kernel, dim3(unsigned(rows)), dim3(kThreads), 0, s, x, d,
                          excluded, out, logprob));
  OST_LAUNCH_RET();
  return Status::ok();
}

}  // namespace ost::cuda
