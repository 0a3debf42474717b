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

#include "backend/cpu/simd.h"
#include "backend/cpu/tile.h"
#include "backend/ops.h"

namespace ost::ops {
namespace {

constexpr int kRows = 16;  // rows per work item: the widest score tile (two ymm lanes)
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
  std::vector<float> kv;  // [2][nk][D]: the item's keys and values, contiguous
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
  // Keys and values of this kv head, gathered contiguous: cache rows are kv_stride apart (often
  // a multiple of 4 KB), which defeats the hardware prefetchers in the loops below.
  s.kv.resize(size_t(2 * nk_max) * D);
  float* kc = s.kv.data();
  float* vc = kc + nk_max * D;
  for (int64_t j = 0; j < nk_max; ++j) {
    std::copy_n(kg + j * p.kv_stride, D, kc + j * D);
    std::copy_n(vg + j * p.kv_stride, D, vc + j * D);
  }

  // 1. St[j][r] = k_j · q_r
  for (int64_t j0 = 0; j0 < nk_max; j0 += cpu::kMT) {
    const int m = int(std::min<int64_t>(cpu::kMT, nk_max - j0));
    cpu::kTiles[nv - 1][m - 1](kc + j0 * D, D, 1, s.qt.data(), W, D, s.st.data() + j0 * W, W);
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
      const __m256 e = _mm256_and_ps(cpu::exp8(_mm256_sub_ps(_mm256_loadu_ps(sj), mx)), vis);
      _mm256_storeu_ps(sj, e);
      sum = _mm256_add_ps(sum, e);
    }
    _mm256_store_ps(inv + 8 * u, _mm256_div_ps(_mm256_set1_ps(1.0f), sum));
  }

  // 3. O[r][:] = Σ_j St[j][r] · v_j, then out_r = O[r] / sum_r.
  s.o.resize(size_t(R) * D);
  for (int d0 = 0; d0 < D; d0 += 16) {
    const int dv = D - d0 >= 16 ? 2 : 1;
    for (int r0 = 0; r0 < R; r0 += cpu::kMT) {
      const int m = std::min(cpu::kMT, R - r0);
      cpu::kTiles[dv - 1][m - 1](s.st.data() + r0, 1, W, vc + d0, D, nk_max, s.o.data() + size_t(r0) * D + d0,
                                 D);
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

void attention(const AttentionParams& p, const float* q, const float* k, const float* v, float* out) {
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
          s.rows.push_back({q + i * p.q_stride + int64_t(h) * D, out + i * p.out_stride + int64_t(h) * D,
                            std::max<int64_t>(nk, 0)});
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
