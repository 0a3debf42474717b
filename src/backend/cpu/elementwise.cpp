// Row-wise and elementwise CPU ops: conversions, embedding, norms, activations, rope, softmax.
// Row reductions (norm statistics, softmax sums) accumulate in double: the result is then the
// correctly rounded fp32 value up to the final cast, which keeps this backend a tight oracle.
#include <algorithm>
#include <cmath>
#include <cstring>

#include "backend/cpu/convert.h"
#include "backend/cpu/simd.h"
#include "backend/ops.h"

namespace ost::ops {

namespace {
// Parallelise a row loop only when there is enough work to pay for waking the threads.
constexpr int64_t kParallelMin = 1 << 14;
}  // namespace

void weight_row_f32(const WeightView& w, int64_t r, float* out) {
  if (is_quantized(w.dtype)) return quant::dequant_segment(cpu::quant_view(w), r, 0, w.cols, out);
  cpu::dispatch(w.dtype, [&]<WType T>() {
    using E = typename cpu::Conv<T>::elem;
    cpu::convert_f32<T>(static_cast<const E*>(w.data) + r * w.cols, w.cols, out);
  });
}

void embedding(const WeightView& table, const int32_t* ids, int64_t n, float* out) {
  const bool quantized = is_quantized(table.dtype);
#pragma omp parallel for if (n * table.cols >= kParallelMin)
  for (int64_t i = 0; i < n; ++i) {
    float* row = out + i * table.cols;
    weight_row_f32(table, ids[i], row);
    // A quantized table stands for the bf16 table of its dequantized values (what the GPU's
    // gather writes), as a bf16 table's rows are bf16 values.
    if (quantized)
      for (int64_t c = 0; c < table.cols; ++c) row[c] = round_bf16(row[c]);
  }
}

void rms_norm(const float* x, int64_t n, int64_t d, const float* w, float eps, float* y) {
#pragma omp parallel for if (n * d >= kParallelMin)
  for (int64_t i = 0; i < n; ++i) {
    const float* xi = x + i * d;
    float* yi = y + i * d;
    double ss = 0.0;
    for (int64_t j = 0; j < d; ++j) ss += double(xi[j]) * xi[j];
    const float var = float(ss / double(d));
    const float r = 1.0f / std::sqrt(var + eps);
    for (int64_t j = 0; j < d; ++j) yi[j] = w[j] * (xi[j] * r);
  }
}

void layer_norm(const float* x, int64_t n, int64_t d, const float* w, const float* b, float eps, float* y) {
#pragma omp parallel for if (n * d >= kParallelMin)
  for (int64_t i = 0; i < n; ++i) {
    const float* xi = x + i * d;
    float* yi = y + i * d;
    double s = 0.0;
    for (int64_t j = 0; j < d; ++j) s += xi[j];
    const double mean = s / double(d);
    double ss = 0.0;
    for (int64_t j = 0; j < d; ++j) ss += (xi[j] - mean) * (xi[j] - mean);
    const double var = ss / double(d);
    const float rstd = float(1.0 / std::sqrt(var + double(eps)));
    const float m = float(mean);
    for (int64_t j = 0; j < d; ++j) yi[j] = (xi[j] - m) * rstd * w[j] + b[j];
  }
}

// tanh(u) = 1 - 2 / (1 + e^{2u}): exact limits ±1, absolute error ~1e-7 near 0 (where it
// matters for gelu, 0.5·x·(1 + tanh), only as an absolute error).
void gelu_tanh(float* x, int64_t n) {
  const float k = 0.7978845608028654f;  // sqrt(2/pi)
  const int64_t n8 = n / 8 * 8;
#pragma omp parallel for if (n >= kParallelMin)
  for (int64_t i = 0; i < n8; i += 8) {
    const __m256 v = _mm256_loadu_ps(x + i);
    const __m256 v3 = _mm256_mul_ps(_mm256_mul_ps(v, v), v);
    const __m256 u = _mm256_mul_ps(_mm256_set1_ps(k), _mm256_fmadd_ps(_mm256_set1_ps(0.044715f), v3, v));
    const __m256 e = cpu::exp8(_mm256_add_ps(u, u));
    const __m256 t = _mm256_sub_ps(
        _mm256_set1_ps(1.0f), _mm256_div_ps(_mm256_set1_ps(2.0f), _mm256_add_ps(e, _mm256_set1_ps(1.0f))));
    _mm256_storeu_ps(
        x + i, _mm256_mul_ps(_mm256_mul_ps(_mm256_set1_ps(0.5f), v), _mm256_add_ps(_mm256_set1_ps(1.0f), t)));
  }
  for (int64_t i = n8; i < n; ++i) {
    const float v = x[i];
    x[i] = 0.5f * v * (1.0f + std::tanh(k * (v + 0.044715f * v * v * v)));
  }
}

void gelu_erf(float* x, int64_t n) {
  const float inv_sqrt2 = 0.7071067811865476f;
#pragma omp parallel for if (n >= kParallelMin)
  for (int64_t i = 0; i < n; ++i) {
    const float v = x[i];
    x[i] = 0.5f * v * (1.0f + std::erf(v * inv_sqrt2));
  }
}

void silu_mul(const float* gate, const float* up, int64_t n, float* y) {
  const int64_t n8 = n / 8 * 8;
#pragma omp parallel for if (n >= kParallelMin)
  for (int64_t i = 0; i < n8; i += 8) {
    const __m256 g = _mm256_loadu_ps(gate + i);
    const __m256 e = cpu::exp8(_mm256_sub_ps(_mm256_setzero_ps(), g));
    const __m256 s = _mm256_div_ps(g, _mm256_add_ps(_mm256_set1_ps(1.0f), e));
    _mm256_storeu_ps(y + i, _mm256_mul_ps(s, _mm256_loadu_ps(up + i)));
  }
  for (int64_t i = n8; i < n; ++i) {
    const float g = gate[i];
    y[i] = g / (1.0f + std::exp(-g)) * up[i];
  }
}

void add(const float* a, const float* b, int64_t n, float* y) {
#pragma omp parallel for simd if (n >= 4 * kParallelMin)
  for (int64_t i = 0; i < n; ++i) y[i] = a[i] + b[i];
}

void rope(float* x, int64_t n_rows, int n_heads, int head_dim, int64_t row_stride, const float* cos,
          const float* sin) {
  const int half = head_dim / 2;
#pragma omp parallel for if (n_rows * n_heads * head_dim >= kParallelMin)
  for (int64_t r = 0; r < n_rows; ++r) {
    const float* c = cos + r * half;
    const float* s = sin + r * half;
    for (int h = 0; h < n_heads; ++h) {
      float* v = x + r * row_stride + int64_t(h) * head_dim;
#pragma omp simd
      for (int d = 0; d < half; ++d) {
        const float a = v[d], b = v[d + half];
        v[d] = a * c[d] - b * s[d];
        v[d + half] = b * c[d] + a * s[d];
      }
    }
  }
}

namespace {
// Per row: max and log(sum(exp(x - max))), the sum in double.
void row_stats(const float* x, int64_t d, float* mx, double* sum) {
  float m = -INFINITY;
  for (int64_t j = 0; j < d; ++j) m = std::max(m, x[j]);
  double s = 0.0;
  for (int64_t j = 0; j < d; ++j) s += std::exp(double(x[j]) - double(m));
  *mx = m;
  *sum = s;
}
}  // namespace

void softmax(const float* x, int64_t n, int64_t d, float* y) {
#pragma omp parallel for if (n * d >= kParallelMin)
  for (int64_t i = 0; i < n; ++i) {
    float m;
    double s;
    row_stats(x + i * d, d, &m, &s);
    for (int64_t j = 0; j < d; ++j) y[i * d + j] = float(std::exp(double(x[i * d + j]) - double(m)) / s);
  }
}

void log_softmax(const float* x, int64_t n, int64_t d, float* y) {
#pragma omp parallel for if (n * d >= kParallelMin)
  for (int64_t i = 0; i < n; ++i) {
    float m;
    double s;
    row_stats(x + i * d, d, &m, &s);
    const double lse = double(m) + std::log(s);
    for (int64_t j = 0; j < d; ++j) y[i * d + j] = float(double(x[i * d + j]) - lse);
  }
}

int64_t argmax(const float* x, int64_t n) {
  int64_t best = 0;
  for (int64_t i = 1; i < n; ++i)
    if (x[i] > x[best]) best = i;
  return best;
}

}  // namespace ost::ops
