// Scaled dot-product attention on CPU, exact two-pass softmax in fp32.
//
// A work item is one kv head and a block of queries: its rows are the (query, query head) pairs
// that read that kv head (up to kRows), so GQA heads share every key and value load. Per item:
//   1. St[j][r] = q_r · k_j for the keys any row sees: a small GEMM, keys × rows, whose register
//      tile is 6 keys × 8 or 16 rows (the query block, transposed once per item, is the panel);
//   2. per row (a lane of St): scale, max over its visible keys, p = exp(s - max), sum;
//      invisible keys (causal) get p = 0;
//   3. O[r][:] = Σ_j St[j][r] · v_j, a GEMM with tile 6 rows × 16 (or 8) dims; out = O / sum.
// Head dims that are not a multiple of 8 take a plain scalar path.
#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "backend/cpu/convert.h"
#include "backend/ops.h"

namespace ost::ops {
namespace {

constexpr int kRows = 16;  // rows per work item: the widest score tile (two ymm lanes)
constexpr int kMT = 6;     // rows of a register tile

// e^x for 8 lanes (Cephes expf: range reduction by ln 2, degree-5 polynomial; ~1 ulp).
// Inputs below -87.3 give ~1e-38 rather than underflowing (callers mask what must be 0).
inline __m256 exp8(__m256 x) {
  x = _mm256_min_ps(_mm256_max_ps(x, _mm256_set1_ps(-87.3f)), _mm256_set1_ps(88.3f));
  __m256 fx = _mm256_fmadd_ps(x, _mm256_set1_ps(1.44269504088896341f), _mm256_set1_ps(0.5f));
  fx = _mm256_floor_ps(fx);
  x = _mm256_fnmadd_ps(fx, _mm256_set1_ps(0.693359375f), x);
  x = _mm256_fnmadd_ps(fx, _mm256_set1_ps(-2.12194440e-4f), x);
  __m256 y = _mm256_set1_ps(1.9875691500e-4f);
  y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(1.3981999507e-3f));
  y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(8.3334519073e-3f));
  y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(4.1665795894e-2f));
  y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(1.6666665459e-1f));
  y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(5.0000001201e-1f));
  y = _mm256_fmadd_ps(y, _mm256_mul_ps(x, x), _mm256_add_ps(x, _mm256_set1_ps(1.0f)));
  const __m256i e =
      _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(fx), _mm256_set1_epi32(127)), 23);
  return _mm256_mul_ps(y, _mm256_castsi256_ps(e));
}

// c[r·crs + 0 .. 8·NV) = Σ_{k < kn} a[r·ars + k·aks] · b[k·bks + 0 .. 8·NV), for r < M.
// Named accumulators: GCC spills arrays of vectors on every iteration.
template <int M, int NV>
void tile(const float* a, int64_t ars, int64_t aks, const float* b, int64_t bks, int64_t kn,
          float* c, int64_t crs) {
  const __m256 z = _mm256_setzero_ps();
  __m256 c00 = z, c01 = z, c10 = z, c11 = z, c20 = z, c21 = z;
  __m256 c30 = z, c31 = z, c40 = z, c41 = z, c50 = z, c51 = z;
  for (int64_t k = 0; k < kn; ++k) {
    const float* bk = b + k * bks;
    const __m256 b0 = _mm256_loadu_ps(bk);
    const __m256 b1 = NV > 1 ? _mm256_loadu_ps(bk + 8) : z;
    const float* ak = a + k * aks;
#define OST_ROW(r)                                              \
  if constexpr (M > r) {                                        \
    const __m256 av = _mm256_broadcast_ss(ak + r * ars);        \
    c##r##0 = _mm256_fmadd_ps(av, b0, c##r##0);                 \
    if constexpr (NV > 1) c##r##1 = _mm256_fmadd_ps(av, b1, c##r##1); \
  }
    OST_ROW(0) OST_ROW(1) OST_ROW(2) OST_ROW(3) OST_ROW(4) OST_ROW(5)
#undef OST_ROW
  }
#define OST_STORE(r)                                                  \
  if constexpr (M > r) {                                              \
    _mm256_storeu_ps(c + r * crs, c##r##0);                           \
    if constexpr (NV > 1) _mm256_storeu_ps(c + r * crs + 8, c##r##1); \
  }
  OST_STORE(0) OST_STORE(1) OST_STORE(2) OST_STORE(3) OST_STORE(4) OST_STORE(5)
#undef OST_STORE
}

using TileFn = void (*)(const float*, int64_t, int64_t, const float*, int64_t, int64_t, float*,
                        int64_t);
constexpr TileFn kTiles[2][kMT] = {
    {tile<1, 1>, tile<2, 1>, tile<3, 1>, tile<4, 1>, tile<5, 1>, tile<6, 1>},
    {tile<1, 2>, tile<2, 2>, tile<3, 2>, tile<4, 2>, tile<5, 2>, tile<6, 2>},
};

struct Row {
  const float* q;
  float* out;
  int64_t nk;  // visible keys
};

// Scratch of one thread.
struct Scratch {
  std::vector<Row> rows;
  std::vector<float> qt;  // [D][W]: the item's queries, transposed
  std::vector<float> st;  // [nk][W]: scores, then probabilities
  std::vector<float> o;   // [kRows][D]: unnormalised outputs
};

// One work item with D % 8 == 0.
void run_item(const AttentionParams& p, const float* kg, const float* vg, Scratch& s) {
  const int D = p.head_dim;
  const int R = int(s.rows.size());
  const int nv = R > 8 ? 2 : 1, W = 8 * nv;
  int64_t nk_max = 0;
  for (const Row& r : s.rows) nk_max = std::max(nk_max, r.nk);

  s.qt.assign(size_t(D) * W, 0.0f);
  for (int r = 0; r < R; ++r)
    for (int d = 0; d < D; ++d) s.qt[size_t(d) * W + r] = s.rows[size_t(r)].q[d];
  s.st.resize(size_t(nk_max) * W);

  // 1. St[j][r] = k_j · q_r
  for (int64_t j0 = 0; j0 < nk_max; j0 += kMT) {
    const int m = int(std::min<int64_t>(kMT, nk_max - j0));
    kTiles[nv - 1][m - 1](kg + j0 * p.kv_stride, p.kv_stride, 1, s.qt.data(), W, D,
                          s.st.data() + j0 * W, W);
  }

  // 2. per lane: scale, max over visible keys, exp, zero the invisible ones, sum.
  alignas(32) int32_t nk32[kRows];
  for (int r = 0; r < W; ++r) nk32[r] = r < R ? int32_t(s.rows[size_t(r)].nk) : 0;
  alignas(32) float inv[kRows];
  const __m256 scale = _mm256_set1_ps(p.scale);
  for (int u = 0; u < nv; ++u) {
    const __m256i nk = _mm256_load_si256(reinterpret_cast<const __m256i*>(nk32 + 8 * u));
    __m256 mx = _mm256_set1_ps(-INFINITY);
    for (int64_t j = 0; j < nk_max; ++j) {
      float* sj = s.st.data() + j * W + 8 * u;
      const __m256 v = _mm256_mul_ps(_mm256_loadu_ps(sj), scale);
      _mm256_storeu_ps(sj, v);
      const __m256 vis = _mm256_castsi256_ps(_mm256_cmpgt_epi32(nk, _mm256_set1_epi32(int32_t(j))));
      mx = _mm256_max_ps(mx, _mm256_blendv_ps(_mm256_set1_ps(-INFINITY), v, vis));
    }
    __m256 sum = _mm256_setzero_ps();
    for (int64_t j = 0; j < nk_max; ++j) {
      float* sj = s.st.data() + j * W + 8 * u;
      const __m256 vis = _mm256_castsi256_ps(_mm256_cmpgt_epi32(nk, _mm256_set1_epi32(int32_t(j))));
      const __m256 e = _mm256_and_ps(exp8(_mm256_sub_ps(_mm256_loadu_ps(sj), mx)), vis);
      _mm256_storeu_ps(sj, e);
      sum = _mm256_add_ps(sum, e);
    }
    _mm256_store_ps(inv + 8 * u, _mm256_div_ps(_mm256_set1_ps(1.0f), sum));
  }

  // 3. O[r][:] = Σ_j St[j][r] · v_j, then out_r = O[r] / sum_r.
  s.o.resize(size_t(R) * D);
  for (int d0 = 0; d0 < D; d0 += 16) {
    const int dv = D - d0 >= 16 ? 2 : 1;
    for (int r0 = 0; r0 < R; r0 += kMT) {
      const int m = std::min(kMT, R - r0);
      kTiles[dv - 1][m - 1](s.st.data() + r0, 1, W, vg + d0, p.kv_stride, nk_max,
                            s.o.data() + size_t(r0) * D + d0, D);
    }
  }
  for (int r = 0; r < R; ++r) {
    const Row& row = s.rows[size_t(r)];
    const float f = row.nk > 0 ? inv[r] : 0.0f;
    for (int d = 0; d < D; ++d) row.out[d] = s.o[size_t(r) * D + d] * f;
  }
}

// Any head dim: the textbook loops.
void run_item_scalar(const AttentionParams& p, const float* kg, const float* vg, Scratch& s) {
  const int D = p.head_dim;
  for (const Row& r : s.rows) {
    s.st.resize(size_t(std::max<int64_t>(r.nk, 1)));
    float mx = -INFINITY;
    for (int64_t j = 0; j < r.nk; ++j) {
      float dot = 0.0f;
      for (int d = 0; d < D; ++d) dot += r.q[d] * kg[j * p.kv_stride + d];
      s.st[size_t(j)] = dot * p.scale;
      mx = std::max(mx, s.st[size_t(j)]);
    }
    float sum = 0.0f;
    for (int64_t j = 0; j < r.nk; ++j) sum += (s.st[size_t(j)] = std::exp(s.st[size_t(j)] - mx));
    std::fill(r.out, r.out + D, 0.0f);
    for (int64_t j = 0; j < r.nk; ++j)
      for (int d = 0; d < D; ++d) r.out[d] += s.st[size_t(j)] * vg[j * p.kv_stride + d];
    const float f = r.nk > 0 ? 1.0f / sum : 0.0f;
    for (int d = 0; d < D; ++d) r.out[d] *= f;
  }
}

}  // namespace

void attention(const AttentionParams& p, const float* q, const float* k, const float* v,
               float* out) {
  const int D = p.head_dim;
  const int group = p.n_heads / p.n_kv_heads;
  const int64_t qb = std::max(1, kRows / group);  // queries per item
  const int64_t n_qb = (p.n_q + qb - 1) / qb;
  const int64_t items = int64_t(p.n_kv_heads) * n_qb;
  const bool vec = D % 8 == 0 && group <= kRows;
#pragma omp parallel if (items > 1 && p.n_q * p.n_kv * p.n_heads * D >= (1 << 15))
  {
    Scratch s;
#pragma omp for schedule(dynamic, 1)
    for (int64_t it = 0; it < items; ++it) {
      const int g = int(it / n_qb);
      const int64_t i0 = (it % n_qb) * qb, qn = std::min(qb, p.n_q - i0);
      s.rows.clear();
      for (int64_t i = i0; i < i0 + qn; ++i)
        for (int h = g * group; h < (g + 1) * group; ++h) {
          const int64_t nk = p.causal ? std::min(p.n_kv, p.q_pos0 + i + 1) : p.n_kv;
          s.rows.push_back({q + i * p.q_stride + int64_t(h) * D,
                            out + i * p.out_stride + int64_t(h) * D, std::max<int64_t>(nk, 0)});
        }
      const float* kg = k + int64_t(g) * D;
      const float* vg = v + int64_t(g) * D;
      if (vec)
        run_item(p, kg, vg, s);
      else
        run_item_scalar(p, kg, vg, s);
    }
  }
}

}  // namespace ost::ops
