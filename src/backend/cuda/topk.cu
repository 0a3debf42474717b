// The logit transform and the per-row top-K (see topk.h).
//
// Top-K: one block of 1024 threads per row. Each value maps to an order-preserving 32-bit key;
// four histogram passes over 8-bit digits (most significant first) find the key of the K-th
// largest value and how many values equal to it are taken; the first pass also finds the row
// max and the second the sum of exp(x - max). A last pass collects, in id order, every value
// above that key and the first ones equal to it (the lowest ids), and a bitonic sort of (key,
// ~id) orders them.
#include <algorithm>
#include <cfloat>
#include <cmath>

#include "backend/cuda/cuda_check.h"
#include "backend/cuda/sampling.h"
#include "backend/cuda/topk.h"

namespace ost::cuda {
namespace {

constexpr int kThreads = 1024;
constexpr int kWarps = kThreads / 32;
constexpr double kExpFloor = -46.0;  // e^-46 · 151936 < 2e-15: below the sum's rounding bound

// As penalize_logit (model/candidates.cpp), one IEEE operation at a time.
__device__ float penalize(float x, const RowTransformDev& p, int32_t generated) {
  if (p.repetition != 1.0f) x = x > 0.0f ? __fdiv_rn(x, p.repetition) : __fmul_rn(x, p.repetition);
  if (generated > 0 && (p.presence != 0.0f || p.frequency != 0.0f))
    x = __fsub_rn(x, __fmaf_rn(p.frequency, float(generated), p.presence));
  return x;
}

__device__ float temper(float x, float temperature) {
  return temperature > 0.0f ? __fdiv_rn(x, temperature) : x;
}

// Every id: x / T. Grid (chunks, rows).
__global__ void transform_all_kernel(const bf16* x, int64_t d, const RowTransformDev* params, float* t) {
  const int64_t row = blockIdx.y;
  const float T = params[row].temperature;
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < d; i += int64_t(gridDim.x) * blockDim.x)
    t[row * d + i] = temper(__bfloat162float(x[row * d + i]), T);
}

// Then the seen ids (penalties) and the excluded ids of each row. One block per row.
__global__ void transform_listed_kernel(const bf16* x, int64_t d, const RowTransformDev* params,
                                        const SeenTokenDev* seen, const int32_t* excluded, float* t) {
  const int64_t row = blockIdx.x;
  const RowTransformDev p = params[row];
  for (int32_t j = p.seen_begin + int32_t(threadIdx.x); j < p.seen_end; j += blockDim.x) {
    const SeenTokenDev s = seen[j];
    if (s.id < 0 || s.id >= d) continue;
    t[row * d + s.id] = temper(penalize(__bfloat162float(x[row * d + s.id]), p, s.generated), p.temperature);
  }
  __syncthreads();  // an excluded id that was also seen ends at -inf
  const int n_ex = min(max(excluded[0], 0), kMaxExcludedTokens);
  if (int(threadIdx.x) < n_ex) {
    const int32_t id = excluded[1 + threadIdx.x];
    if (id >= 0 && id < d) t[row * d + id] = -INFINITY;
  }
}

__device__ float load(const float* p, int64_t i) { return p[i]; }
__device__ float load(const bf16* p, int64_t i) { return __bfloat162float(p[i]); }

// Larger value, larger key; -0 and +0 one key; NaN above +inf or below -inf by its sign.
__device__ unsigned key_of(float v) {
  const unsigned u = __float_as_uint(v == 0.0f ? 0.0f : v);
  return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}

// (key, ~id): larger first means larger value first, then lower id.
__device__ unsigned long long compose(unsigned key, int64_t id) {
  return (static_cast<unsigned long long>(key) << 32) | (0xFFFFFFFFu - unsigned(id));
}

// Block-wide reductions (every thread gets the result); `sh` holds kWarps entries.
__device__ float block_max(float v, float* sh) {
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xFFFFFFFFu, v, o));
  __syncthreads();
  if ((threadIdx.x & 31) == 0) sh[threadIdx.x >> 5] = v;
  __syncthreads();
  v = sh[threadIdx.x & 31];
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xFFFFFFFFu, v, o));
  return v;
}

template <typename V>
__device__ V block_sum(V v, V* sh) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xFFFFFFFFu, v, o);
  __syncthreads();
  if ((threadIdx.x & 31) == 0) sh[threadIdx.x >> 5] = v;
  __syncthreads();
  v = sh[threadIdx.x & 31];
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xFFFFFFFFu, v, o);
  return v;
}

template <typename T>
__global__ void __launch_bounds__(kThreads) topk_kernel(const T* x, const bf16* raw, int64_t d, const int32_t* kreq,
                                                        int kmax, TopkEntry* out, TopkStats* stats) {
  __shared__ unsigned hist[256];
  __shared__ unsigned long long buf[kMaxTopK];
  __shared__ float red_f[kWarps];
  __shared__ double red_d[kWarps];
  __shared__ int red_i[kWarps];
  __shared__ int cnt_gt[kWarps], cnt_eq[kWarps];
  __shared__ unsigned s_prefix;
  __shared__ int s_remaining, s_base_gt, s_base_eq, s_tot_gt, s_tot_eq;

  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int64_t row = blockIdx.x;
  const T* xr = x + row * d;
  const int k = int(min(min(int64_t(max(kreq[row], 0)), int64_t(kmax)), d));
  if (tid == 0) {
    s_prefix = 0;
    s_remaining = k;
  }

  // Passes over the digits of the keys; pass 0 also finds the max, pass 1 the sum.
  float mx = -INFINITY;
  double sum = 0.0;
  int nans = 0;
  for (int pass = 0; pass < 4; ++pass) {
    const int shift = 24 - 8 * pass;
    if (tid < 256) hist[tid] = 0;
    __syncthreads();
    const unsigned prefix = s_prefix;
    const unsigned mask = pass == 0 ? 0u : 0xFFFFFFFFu << (shift + 8);
    for (int64_t base = 0; base < d; base += kThreads) {  // uniform trip count: whole warps below
      const int64_t i = base + tid;
      const bool valid = i < d;
      const float v = valid ? load(xr, i) : 0.0f;
      if (valid && pass == 0) {
        if (isnan(v)) ++nans;
        else mx = fmaxf(mx, v);
      }
      if (valid && pass == 1) {
        const double e = double(v) - double(mx);
        if (e >= kExpFloor) sum += exp(e);
      }
      if (k > 0) {
        const unsigned key = key_of(v);
        const bool counted = valid && (key & mask) == prefix;
        const unsigned bucket = counted ? (key >> shift) & 255u : 256u;
        const unsigned peers = __match_any_sync(0xFFFFFFFFu, bucket);
        if (counted && lane == __ffs(peers) - 1) atomicAdd(&hist[bucket], unsigned(__popc(peers)));
      }
    }
    if (pass == 0) {
      mx = block_max(mx, red_f);
      nans = block_sum(nans, red_i);
    }
    if (pass == 1) sum = block_sum(sum, red_d);
    __syncthreads();
    if (k > 0 && warp == 0) {  // the digit of the K-th largest: lanes cover 8 buckets each, top first
      const unsigned remaining = unsigned(s_remaining);
      unsigned c[8], tot = 0;
      for (int j = 0; j < 8; ++j) tot += c[j] = hist[255 - 8 * lane - j];
      unsigned incl = tot;
      for (int o = 1; o < 32; o <<= 1) {
        const unsigned n = __shfl_up_sync(0xFFFFFFFFu, incl, o);
        if (lane >= o) incl += n;
      }
      unsigned acc = incl - tot;
      if (acc < remaining && remaining <= incl)
        for (int j = 0; j < 8; ++j) {
          if (acc + c[j] >= remaining) {
            s_prefix = prefix | (unsigned(255 - 8 * lane - j) << shift);
            s_remaining = int(remaining - acc);
            break;
          }
          acc += c[j];
        }
    }
    __syncthreads();
    if (k == 0 && pass == 1) break;
  }

  if (k > 0) {
    // Every key above the threshold, and the first `need` equal to it in id order.
    const unsigned thr = s_prefix;
    const int need = s_remaining, n_gt = k - need;
    if (tid == 0) s_base_gt = s_base_eq = 0;
    __syncthreads();
    const unsigned below = (1u << lane) - 1u;
    for (int64_t base = 0; base < d; base += kThreads) {
      const int64_t i = base + tid;
      const unsigned key = i < d ? key_of(load(xr, i)) : 0u;
      const bool gt = i < d && key > thr, eq = i < d && key == thr;
      const unsigned bg = __ballot_sync(0xFFFFFFFFu, gt), be = __ballot_sync(0xFFFFFFFFu, eq);
      if (lane == 0) cnt_gt[warp] = __popc(bg), cnt_eq[warp] = __popc(be);
      __syncthreads();
      if (warp == 0) {  // exclusive scan over the warps
        const int cg = cnt_gt[lane], ce = cnt_eq[lane];
        int ig = cg, ie = ce;
        for (int o = 1; o < 32; o <<= 1) {
          const int ng = __shfl_up_sync(0xFFFFFFFFu, ig, o), ne = __shfl_up_sync(0xFFFFFFFFu, ie, o);
          if (lane >= o) ig += ng, ie += ne;
        }
        cnt_gt[lane] = ig - cg;
        cnt_eq[lane] = ie - ce;
        if (lane == 31) s_tot_gt = ig, s_tot_eq = ie;
      }
      __syncthreads();
      if (gt) buf[s_base_gt + cnt_gt[warp] + __popc(bg & below)] = compose(key, i);
      if (eq) {
        const int pos = s_base_eq + cnt_eq[warp] + __popc(be & below);
        if (pos < need) buf[n_gt + pos] = compose(key, i);
      }
      __syncthreads();
      if (tid == 0) s_base_gt += s_tot_gt, s_base_eq += s_tot_eq;
      __syncthreads();
      if (s_base_gt >= n_gt && s_base_eq >= need) break;  // the same for every thread
    }
    // Bitonic sort, descending, of the k entries padded with zeros to a power of two.
    int P = 1;
    while (P < k) P <<= 1;
    for (int j = k + tid; j < P; j += kThreads) buf[j] = 0ull;
    __syncthreads();
    for (int size = 2; size <= P; size <<= 1)
      for (int stride = size >> 1; stride > 0; stride >>= 1) {
        for (int t = tid; t < P / 2; t += kThreads) {
          const int pos = 2 * t - (t & (stride - 1)), partner = pos + stride;
          const bool desc = (pos & size) == 0;
          const unsigned long long a = buf[pos], b = buf[partner];
          if ((a < b) == desc) buf[pos] = b, buf[partner] = a;
        }
        __syncthreads();
      }
    for (int j = tid; j < k; j += kThreads) {
      const int64_t id = int64_t(0xFFFFFFFFu - unsigned(buf[j] & 0xFFFFFFFFull));
      TopkEntry e;
      e.value = load(xr, id);
      e.raw = raw ? __bfloat162float(raw[row * d + id]) : e.value;
      e.id = int32_t(id);
      out[row * kmax + j] = e;
    }
  }
  if (tid == 0) {
    TopkStats st;
    st.sum = sum;
    st.max = mx;
    st.nan_count = nans;
    stats[row] = st;
  }
}

}  // namespace

Status launch_logit_transform(const bf16* x, int64_t rows, int64_t d, const RowTransformDev* params,
                              const SeenTokenDev* seen, const int32_t* excluded, float* t, cudaStream_t s) {
  if (rows == 0 || d == 0) return Status::ok();
  const unsigned chunks = unsigned(std::min<int64_t>((d + 2047) / 2048, 64));
  transform_all_kernel<<<dim3(chunks, unsigned(rows)), 256, 0, s>>>(x, d, params, t);
  OST_LAUNCH_RET();
  transform_listed_kernel<<<unsigned(rows), 256, 0, s>>>(x, d, params, seen, excluded, t);
  OST_LAUNCH_RET();
  return Status::ok();
}

template <typename T>
Status launch_topk(const T* x, const bf16* raw, int64_t rows, int64_t d, const int32_t* k, int kmax,
                   TopkEntry* out, TopkStats* stats, cudaStream_t s) {
  if (rows == 0) return Status::ok();
  if (kmax < 1 || kmax > kMaxTopK || d < 1 || d > (int64_t(1) << 31))
    return make_error("topk: kmax %d (1 .. %d), row width %lld", kmax, kMaxTopK, (long long)d);
  topk_kernel<T><<<unsigned(rows), kThreads, 0, s>>>(x, raw, d, k, kmax, out, stats);
  OST_LAUNCH_RET();
  return Status::ok();
}

template Status launch_topk<float>(const float*, const bf16*, int64_t, int64_t, const int32_t*, int, TopkEntry*,
                                   TopkStats*, cudaStream_t);
template Status launch_topk<bf16>(const bf16*, const bf16*, int64_t, int64_t, const int32_t*, int, TopkEntry*,
                                  TopkStats*, cudaStream_t);

}  // namespace ost::cuda
