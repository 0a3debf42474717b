// matmul: y[n, O] = x[n, K] · W[O, K]ᵀ (+ bias), weights in bf16/f16/f32 or quantized
// (INT8/FP8/INT4, dequantized on the fly by the quant module's reference), fp32 arithmetic.
// FP8 weights also quantize the input (W8A8, quant::quantize_act_fp8); the others are W·A16.
//
// Two paths:
//  * gemv (n <= kGemvMaxRows, i.e. decode): weights are converted in registers as they stream
//    from memory; threads split the output features. Memory-bound, so each weight is read once.
//  * gemm (prefill, vision): a block of output features × a depth slice of W is converted once
//    into an fp32 panel laid out [k][16 features] (in L2), then 6×16 register tiles of y are
//    accumulated by broadcasting x values (the BLIS/Haswell micro-kernel shape: 12 accumulators,
//    2 weight vectors, 1 broadcast). Threads split the output-feature blocks.
// Summation order differs from PyTorch's only at fp32 rounding level.
#include <omp.h>

#include <algorithm>
#include <vector>

#include "backend/cpu/convert.h"
#include "backend/cpu/tile.h"
#include "backend/ops.h"

namespace ost::ops {
namespace {

using cpu::Conv;

constexpr int kMR = cpu::kMT;  // x rows per register tile
constexpr int kNR = 16;        // output features per register tile (two ymm)
constexpr int kKC = 256;       // depth of one packed slice: a 16-feature panel is 16 KB (L1)
constexpr int kNCMax = 128;    // output features per packed block: 128 KB (L2)
constexpr int64_t kGemvMaxRows = 4;

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

template <WType T>
void gemv(const float* x, int64_t n, const WeightView& w, const float* bias, float* y) {
  using E = typename Conv<T>::elem;
  const E* W = static_cast<const E*>(w.data);
  const int64_t K = w.cols, O = w.rows;
  const int64_t n_groups = ceil_div(O, 4);
#pragma omp parallel for schedule(static) if (O * K >= (1 << 16))
  for (int64_t g = 0; g < n_groups; ++g) {
    const int64_t o0 = g * 4;
    const int m = int(std::min<int64_t>(4, O - o0));
    const E* wr[4];
    for (int r = 0; r < 4; ++r) wr[r] = W + (o0 + std::min(r, m - 1)) * K;
    for (int64_t i = 0; i < n; ++i) {
      const float* xi = x + i * K;
      __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
      int64_t k = 0;
      for (; k + 8 <= K; k += 8) {
        const __m256 xv = _mm256_loadu_ps(xi + k);
        a0 = _mm256_fmadd_ps(xv, Conv<T>::load8(wr[0] + k), a0);
        a1 = _mm256_fmadd_ps(xv, Conv<T>::load8(wr[1] + k), a1);
        a2 = _mm256_fmadd_ps(xv, Conv<T>::load8(wr[2] + k), a2);
        a3 = _mm256_fmadd_ps(xv, Conv<T>::load8(wr[3] + k), a3);
      }
      float s[4] = {cpu::hsum(a0), cpu::hsum(a1), cpu::hsum(a2), cpu::hsum(a3)};
      for (; k < K; ++k)
        for (int r = 0; r < 4; ++r) s[r] += xi[k] * Conv<T>::load1(wr[r] + k);
      float* yi = y + i * O + o0;
      for (int r = 0; r < m; ++r) yi[r] = bias ? s[r] + bias[o0 + r] : s[r];
    }
  }
}

// Quantized weights (INT8/FP8/INT4) in the gemv: 4 rows at a time are dequantized slice by
// slice into an fp32 scratch (quant::dequant_segment, the reference), then dotted with x.
void gemv_quant(const float* x, int64_t n, const WeightView& w, const float* bias, float* y) {
  const quant::QView q = cpu::quant_view(w);
  const int64_t K = w.cols, O = w.rows;
  const int64_t n_groups = ceil_div(O, 4);
#pragma omp parallel
  {
    std::vector<float> buf(size_t(4 * kKC));
    std::vector<float> acc(size_t(4 * n));
#pragma omp for schedule(static)
    for (int64_t g = 0; g < n_groups; ++g) {
      const int64_t o0 = g * 4;
      const int m = int(std::min<int64_t>(4, O - o0));
      std::fill(acc.begin(), acc.end(), 0.0f);
      for (int64_t k0 = 0; k0 < K; k0 += kKC) {
        const int kc = int(std::min<int64_t>(kKC, K - k0));
        for (int r = 0; r < m; ++r) quant::dequant_segment(q, o0 + r, k0, kc, buf.data() + r * kKC);
        for (int64_t i = 0; i < n; ++i) {
          const float* xi = x + i * K + k0;
          for (int r = 0; r < m; ++r) {
            const float* wr = buf.data() + r * kKC;
            __m256 a = _mm256_setzero_ps();
            int k = 0;
            for (; k + 8 <= kc; k += 8) a = _mm256_fmadd_ps(_mm256_loadu_ps(xi + k), _mm256_loadu_ps(wr + k), a);
            float s = cpu::hsum(a);
            for (; k < kc; ++k) s += xi[k] * wr[k];
            acc[size_t(i * 4 + r)] += s;
          }
        }
      }
      for (int64_t i = 0; i < n; ++i)
        for (int r = 0; r < m; ++r) y[i * O + o0 + r] = acc[size_t(i * 4 + r)] + (bias ? bias[o0 + r] : 0.0f);
    }
  }
}

// Row r of W, inputs [k0, k0 + kc), as fp32: the dense dtypes by conversion, the quantized ones
// through the reference dequantization.
template <WType T>
void row_segment(const WeightView& w, int64_t r, int64_t k0, int kc, float* out) {
  if constexpr (T == WType::INT8) {
    quant::dequant_segment(cpu::quant_view(w), r, k0, kc, out);
  } else {
    using E = typename Conv<T>::elem;
    cpu::convert_f32<T>(static_cast<const E*>(w.data) + r * w.cols + k0, kc, out);
  }
}

// panel <- W[o0 .. o0+nb, k0 .. k0+kc) as fp32, one [kc][kNR] slab per 16 features, zero-padded
// past nb. tmp: kc floats of scratch. (T = INT8 stands for every quantized type.)
template <WType T>
void pack(const WeightView& w, int64_t o0, int nb, int64_t k0, int kc, float* panel, float* tmp) {
  const int nb_padded = int(ceil_div(nb, kNR)) * kNR;
  for (int r = 0; r < nb_padded; ++r) {
    float* dst = panel + int64_t(r / kNR) * kc * kNR + (r % kNR);
    if (r < nb) {
      row_segment<T>(w, o0 + r, k0, kc, tmp);
      for (int k = 0; k < kc; ++k) dst[k * kNR] = tmp[k];
    } else {
      for (int k = 0; k < kc; ++k) dst[k * kNR] = 0.0f;
    }
  }
}

// c[m][kNR] = x[m rows, stride ldx][0..kc) · panel[kc][kNR]
void run_micro_kernel(int m, const float* x, int64_t ldx, const float* panel, int kc, float* c) {
  cpu::kTiles[1][m - 1](x, ldx, 1, panel, kNR, kc, c, kNR);
}

struct AlignedBuf {
  explicit AlignedBuf(size_t n) : p(static_cast<float*>(std::aligned_alloc(64, (n * 4 + 63) / 64 * 64))) {}
  ~AlignedBuf() { std::free(p); }
  AlignedBuf(const AlignedBuf&) = delete;
  AlignedBuf& operator=(const AlignedBuf&) = delete;
  float* p;
};

template <WType T>
void gemm(const float* x, int64_t n, const WeightView& w, const float* bias, float* y) {
  const int64_t K = w.cols, O = w.rows;
  // Enough feature blocks for every thread to get several, but no wider than kNCMax.
  const int64_t threads = omp_get_max_threads();
  const int64_t nc = std::clamp<int64_t>(ceil_div(ceil_div(O, 4 * threads), kNR) * kNR, kNR, kNCMax);
  const int64_t n_blocks = ceil_div(O, nc);
#pragma omp parallel if (n_blocks > 1 && n * O * K >= (1 << 16))
  {
    AlignedBuf panel(size_t(kNCMax) * kKC), ctile(size_t(kMR) * kNR), tmp(kKC);
#pragma omp for schedule(dynamic, 1)
    for (int64_t b = 0; b < n_blocks; ++b) {
      const int64_t o0 = b * nc;
      const int nb = int(std::min(nc, O - o0));
      for (int64_t k0 = 0; k0 < K; k0 += kKC) {
        const int kc = int(std::min<int64_t>(kKC, K - k0));
        const bool first = k0 == 0, last = k0 + kc == K;
        pack<T>(w, o0, nb, k0, kc, panel.p, tmp.p);
        for (int64_t i0 = 0; i0 < n; i0 += kMR) {
          const int m = int(std::min<int64_t>(kMR, n - i0));
          for (int p = 0; p * kNR < nb; ++p) {
            run_micro_kernel(m, x + i0 * K + k0, K, panel.p + int64_t(p) * kc * kNR, kc, ctile.p);
            const int64_t oc = o0 + p * kNR;
            const int cols = std::min(kNR, nb - p * kNR);
            for (int r = 0; r < m; ++r) {
              float* yr = y + (i0 + r) * O + oc;
              const float* t = ctile.p + r * kNR;
              if (first)
                for (int c = 0; c < cols; ++c) yr[c] = t[c];
              else
                for (int c = 0; c < cols; ++c) yr[c] += t[c];
              if (last && bias)
                for (int c = 0; c < cols; ++c) yr[c] += bias[oc + c];
            }
          }
        }
      }
    }
  }
}

}  // namespace

void matmul(const float* x, int64_t n, const WeightView& w, const float* bias, float* y) {
  if (n <= 0 || w.rows <= 0) return;
  if (w.cols == 0) {  // empty reduction
    for (int64_t i = 0; i < n; ++i)
      for (int64_t o = 0; o < w.rows; ++o) y[i * w.rows + o] = bias ? bias[o] : 0.0f;
    return;
  }
  if (w.dtype == WType::FP8) {
    // W8A8: the input is quantized per token in blocks of w.group inputs (quant::quantize_act_fp8),
    // as Qwen's FP8 checkpoints are run; the block products are then exact in fp32.
    std::vector<float> xq(x, x + n * w.cols);
#pragma omp parallel for schedule(static) if (n >= 64)
    for (int64_t i = 0; i < n; ++i) quant::fake_quant_act_fp8(xq.data() + i * w.cols, 1, w.cols, w.group);
    if (n <= kGemvMaxRows) gemv_quant(xq.data(), n, w, bias, y);
    else gemm<WType::INT8>(xq.data(), n, w, bias, y);
    return;
  }
  if (is_quantized(w.dtype)) {
    if (n <= kGemvMaxRows) gemv_quant(x, n, w, bias, y);
    else gemm<WType::INT8>(x, n, w, bias, y);
    return;
  }
  cpu::dispatch(w.dtype, [&]<WType T>() {
    if (n <= kGemvMaxRows)
      gemv<T>(x, n, w, bias, y);
    else
      gemm<T>(x, n, w, bias, y);
  });
}

}  // namespace ost::ops
