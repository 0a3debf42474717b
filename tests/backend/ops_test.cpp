// Each CPU op against a naive double-precision reference on random inputs of several shapes.
#include "backend/ops.h"

#include <gtest/gtest.h>
#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <random>
#include <vector>

#include "core/bf16.h"

namespace ost::ops {
namespace {

std::vector<float> randn(size_t n, uint32_t seed, float scale = 1.0f) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> d(0.0f, scale);
  std::vector<float> v(n);
  for (auto& x : v) x = d(rng);
  return v;
}

uint16_t f32_to_f16(float f) {  // round to nearest even, normal range only (test data)
  uint32_t u;
  std::memcpy(&u, &f, 4);
  const uint32_t sign = (u >> 16) & 0x8000u;
  const int exp = int((u >> 23) & 0xff) - 127 + 15;
  uint32_t man = u & 0x7fffffu;
  if (exp <= 0) return uint16_t(sign);  // flush tiny values (not produced by the tests)
  uint32_t h = sign | (uint32_t(exp) << 10) | (man >> 13);
  const uint32_t rest = man & 0x1fffu;
  if (rest > 0x1000u || (rest == 0x1000u && (h & 1u))) ++h;
  return uint16_t(h);
}

// A weight matrix in one dtype plus its exact fp32 values (what the op must see).
struct TestWeight {
  WType dtype;
  int64_t rows, cols;
  std::vector<uint16_t> half;
  std::vector<float> f32;    // storage for F32
  std::vector<float> exact;  // decoded values
  WeightView view() const {
    const void* p = dtype == WType::F32 ? static_cast<const void*>(f32.data()) : half.data();
    return {dtype, p, rows, cols};
  }
};

TestWeight make_weight(WType t, int64_t rows, int64_t cols, uint32_t seed) {
  TestWeight w{t, rows, cols, {}, {}, {}};
  std::vector<float> v = randn(size_t(rows * cols), seed, 0.5f);
  w.exact.resize(v.size());
  if (t == WType::F32) {
    w.f32 = v;
    w.exact = v;
  } else {
    w.half.resize(v.size());
    for (size_t i = 0; i < v.size(); ++i) {
      w.half[i] = t == WType::BF16 ? f32_to_bf16(v[i]) : f32_to_f16(v[i]);
      w.exact[i] = t == WType::BF16 ? bf16_to_f32(w.half[i]) : f16_to_f32(w.half[i]);
    }
  }
  return w;
}

const char* wname(WType t) { return t == WType::BF16 ? "bf16" : t == WType::F16 ? "f16" : "f32"; }

TEST(Ops, WeightRowAndEmbedding) {
  for (WType t : {WType::BF16, WType::F16, WType::F32}) {
    TestWeight w = make_weight(t, 37, 21, 3);
    std::vector<float> row(21);
    for (int r : {0, 17, 36}) {
      weight_row_f32(w.view(), r, row.data());
      for (int c = 0; c < 21; ++c) ASSERT_EQ(row[c], w.exact[r * 21 + c]) << wname(t);
    }
    std::vector<int32_t> ids = {5, 0, 36, 5};
    std::vector<float> out(ids.size() * 21);
    embedding(w.view(), ids.data(), int64_t(ids.size()), out.data());
    for (size_t i = 0; i < ids.size(); ++i)
      for (int c = 0; c < 21; ++c) ASSERT_EQ(out[i * 21 + c], w.exact[ids[i] * 21 + c]);
  }
}

struct MatmulShape {
  int64_t n, k, o;
};

TEST(Ops, MatmulAgainstDouble) {
  const MatmulShape shapes[] = {{1, 64, 151},  {2, 37, 19},     {3, 8, 5},     {4, 130, 67},
                                {5, 64, 64},   {6, 300, 129},   {7, 257, 33},  {13, 1536, 64},
                                {64, 64, 160}, {100, 520, 300}, {1, 4096, 40}, {33, 1, 17}};
  uint32_t seed = 10;
  for (WType t : {WType::BF16, WType::F16, WType::F32}) {
    for (const auto& s : shapes) {
      for (bool with_bias : {false, true}) {
        TestWeight w = make_weight(t, s.o, s.k, ++seed);
        std::vector<float> x = randn(size_t(s.n * s.k), ++seed);
        std::vector<float> bias = randn(size_t(s.o), ++seed);
        std::vector<float> y(size_t(s.n * s.o), NAN);
        matmul(x.data(), s.n, w.view(), with_bias ? bias.data() : nullptr, y.data());
        double worst = 0.0;
        for (int64_t i = 0; i < s.n; ++i)
          for (int64_t o = 0; o < s.o; ++o) {
            double ref = with_bias ? bias[o] : 0.0, mag = std::fabs(ref);
            for (int64_t k = 0; k < s.k; ++k) {
              const double p = double(x[i * s.k + k]) * w.exact[o * s.k + k];
              ref += p;
              mag += std::fabs(p);
            }
            // fp32 accumulation: error grows like eps·sqrt(K)·sum|terms|; 4× margin.
            const double tol = 4.0 * 6e-8 * std::sqrt(double(s.k) + 1.0) * mag + 1e-30;
            const double err = std::fabs(y[i * s.o + o] - ref);
            worst = std::max(worst, err / tol);
            ASSERT_LE(err, tol) << wname(t) << " n=" << s.n << " k=" << s.k << " o=" << s.o << " at (" << i
                                << "," << o << ")";
          }
        EXPECT_LE(worst, 1.0);
      }
    }
  }
}

TEST(Ops, RmsNormAndLayerNorm) {
  for (auto [n, d] : {std::pair<int64_t, int64_t>{1, 64}, {7, 32}, {300, 128}, {3, 4608}}) {
    std::vector<float> x = randn(size_t(n * d), 1, 2.0f), w = randn(size_t(d), 2), b = randn(size_t(d), 3);
    for (auto& v : x) v += 0.7f;  // a non-zero mean for the layer norm
    std::vector<float> y(x.size()), z(x.size());
    const float eps = 1e-6f;
    rms_norm(x.data(), n, d, w.data(), eps, y.data());
    layer_norm(x.data(), n, d, w.data(), b.data(), eps, z.data());
    for (int64_t i = 0; i < n; ++i) {
      double ss = 0, s = 0;
      for (int64_t j = 0; j < d; ++j) {
        ss += double(x[i * d + j]) * x[i * d + j];
        s += x[i * d + j];
      }
      const double r = 1.0 / std::sqrt(ss / d + eps), mean = s / d;
      double var = 0;
      for (int64_t j = 0; j < d; ++j) var += (x[i * d + j] - mean) * (x[i * d + j] - mean);
      const double rstd = 1.0 / std::sqrt(var / d + eps);
      for (int64_t j = 0; j < d; ++j) {
        const double ry = x[i * d + j] * r * w[j];
        const double rz = (x[i * d + j] - mean) * rstd * w[j] + b[j];
        ASSERT_NEAR(y[i * d + j], ry, 1e-6 * (1 + std::fabs(ry))) << n << "x" << d;
        ASSERT_NEAR(z[i * d + j], rz, 1e-6 * (1 + std::fabs(rz))) << n << "x" << d;
      }
    }
    rms_norm(x.data(), n, d, w.data(), eps, x.data());  // in place gives the same result
    ASSERT_EQ(x, y);
  }
}

TEST(Ops, Activations) {
  std::vector<float> x = randn(50000, 4, 3.0f);
  std::vector<float> up = randn(x.size(), 5);
  std::vector<float> a = x, b = x, c(x.size()), s(x.size());
  gelu_tanh(a.data(), int64_t(a.size()));
  gelu_erf(b.data(), int64_t(b.size()));
  silu_mul(x.data(), up.data(), int64_t(x.size()), c.data());
  add(x.data(), up.data(), int64_t(x.size()), s.data());
  for (size_t i = 0; i < x.size(); ++i) {
    const double v = x[i];
    const double gt = 0.5 * v * (1 + std::tanh(std::sqrt(2 / M_PI) * (v + 0.044715 * v * v * v)));
    const double ge = 0.5 * v * (1 + std::erf(v / std::sqrt(2.0)));
    const double sm = v / (1 + std::exp(-v)) * up[i];
    ASSERT_NEAR(a[i], gt, 2e-6 * (1 + std::fabs(gt))) << v;
    ASSERT_NEAR(b[i], ge, 2e-6 * (1 + std::fabs(ge))) << v;
    ASSERT_NEAR(c[i], sm, 2e-6 * (1 + std::fabs(sm))) << v;
    ASSERT_EQ(s[i], x[i] + up[i]);
  }
}

TEST(Ops, Rope) {
  for (auto [rows, heads, hd, stride] :
       {std::tuple<int64_t, int, int, int64_t>{5, 4, 32, 128}, {9, 2, 16, 96}, {1, 32, 128, 4096}}) {
    std::vector<float> x = randn(size_t(rows * stride), 6), orig = x;
    std::vector<float> ang = randn(size_t(rows * hd / 2), 7, 10.0f), c(ang.size()), s(ang.size());
    for (size_t i = 0; i < ang.size(); ++i) {
      c[i] = std::cos(ang[i]);
      s[i] = std::sin(ang[i]);
    }
    rope(x.data(), rows, heads, hd, stride, c.data(), s.data());
    for (int64_t r = 0; r < rows; ++r) {
      for (int64_t e = int64_t(heads) * hd; e < stride; ++e)  // past the heads: untouched
        ASSERT_EQ(x[r * stride + e], orig[r * stride + e]);
      for (int h = 0; h < heads; ++h)
        for (int d = 0; d < hd / 2; ++d) {
          const int64_t i0 = r * stride + h * hd + d, i1 = i0 + hd / 2;
          const double cc = c[r * hd / 2 + d], ss = s[r * hd / 2 + d];
          ASSERT_NEAR(x[i0], orig[i0] * cc - orig[i1] * ss, 1e-6);
          ASSERT_NEAR(x[i1], orig[i1] * cc + orig[i0] * ss, 1e-6);
        }
    }
  }
}

void attention_reference(const AttentionParams& p, const std::vector<float>& q, const std::vector<float>& k,
                         const std::vector<float>& v, std::vector<double>& out) {
  const int D = p.head_dim, group = p.n_heads / p.n_kv_heads;
  for (int64_t i = 0; i < p.n_q; ++i)
    for (int h = 0; h < p.n_heads; ++h) {
      const int64_t nk = p.causal ? std::min(p.n_kv, p.q_pos0 + i + 1) : p.n_kv;
      const int kvh = h / group;
      std::vector<double> sc(static_cast<size_t>(nk));
      double mx = -1e300, sum = 0;
      for (int64_t j = 0; j < nk; ++j) {
        double s = 0;
        for (int d = 0; d < D; ++d)
          s += double(q[i * p.q_stride + h * D + d]) * k[j * p.kv_stride + kvh * D + d];
        sc[j] = s * p.scale;
        mx = std::max(mx, sc[j]);
      }
      for (auto& s : sc) sum += (s = std::exp(s - mx));
      for (int d = 0; d < D; ++d) {
        double a = 0;
        for (int64_t j = 0; j < nk; ++j) a += sc[j] * v[j * p.kv_stride + kvh * D + d];
        out[i * p.out_stride + h * D + d] = a / sum;
      }
    }
}

TEST(Ops, Attention) {
  struct Case {
    int64_t n_q, n_kv;
    int heads, kv_heads, hd;
    bool causal;
    int64_t q_pos0;
    int64_t q_extra;  // extra floats per q row (strided input)
  };
  const Case cases[] = {
      {20, 20, 4, 2, 32, true, 0, 0},     // prefill, GQA
      {1, 37, 4, 2, 32, true, 36, 0},     // decode step
      {5, 45, 8, 2, 16, true, 40, 3},     // chunk after a cached prefix
      {64, 64, 4, 4, 16, false, 0, 128},  // vision: q/k/v packed in one qkv row
      {3, 300, 2, 1, 72, false, 0, 0},
      {37, 50, 6, 3, 20, true, 13, 0},  // head dim not a multiple of 8: scalar path
      {17, 17, 32, 1, 8, true, 0, 0},   // 32 query heads on one kv head
      {9, 9, 4, 4, 8, false, 0, 0},
  };
  uint32_t seed = 100;
  for (const auto& c : cases) {
    AttentionParams p;
    p.n_q = c.n_q;
    p.n_kv = c.n_kv;
    p.n_heads = c.heads;
    p.n_kv_heads = c.kv_heads;
    p.head_dim = c.hd;
    p.q_stride = int64_t(c.heads) * c.hd + c.q_extra;
    p.kv_stride = int64_t(c.kv_heads) * c.hd + 5;
    p.out_stride = int64_t(c.heads) * c.hd;
    p.causal = c.causal;
    p.q_pos0 = c.q_pos0;
    p.scale = 1.0f / std::sqrt(float(c.hd));
    std::vector<float> q = randn(size_t(p.n_q * p.q_stride), ++seed, 2.0f);
    std::vector<float> k = randn(size_t(p.n_kv * p.kv_stride), ++seed, 2.0f);
    std::vector<float> v = randn(size_t(p.n_kv * p.kv_stride), ++seed);
    std::vector<float> out(size_t(p.n_q * p.out_stride));
    std::vector<double> ref(out.size());
    attention(p, q.data(), k.data(), v.data(), out.data());
    attention_reference(p, q, k, v, ref);
    for (size_t i = 0; i < out.size(); ++i) ASSERT_NEAR(out[i], ref[i], 5e-6 * (1 + std::fabs(ref[i]))) << i;
  }
}

TEST(Ops, SoftmaxArgmax) {
  for (auto [n, d] : {std::pair<int64_t, int64_t>{1, 151936}, {6, 10}, {3, 1000}}) {
    std::vector<float> x = randn(size_t(n * d), 8, 5.0f), y(x.size()), z(x.size());
    softmax(x.data(), n, d, y.data());
    log_softmax(x.data(), n, d, z.data());
    for (int64_t i = 0; i < n; ++i) {
      double m = -1e300, s = 0;
      for (int64_t j = 0; j < d; ++j) m = std::max(m, double(x[i * d + j]));
      for (int64_t j = 0; j < d; ++j) s += std::exp(x[i * d + j] - m);
      for (int64_t j = 0; j < d; ++j) {
        const double lp = x[i * d + j] - m - std::log(s);
        ASSERT_NEAR(z[i * d + j], lp, 2e-6 * (1 + std::fabs(lp)));
        ASSERT_NEAR(y[i * d + j], std::exp(lp), 1e-7 + 1e-6 * std::exp(lp));
      }
      const float* row = x.data() + i * d;
      ASSERT_EQ(argmax(row, d), std::max_element(row, row + d) - row);
    }
  }
  const float ties[] = {1, 3, 3, 2};
  EXPECT_EQ(argmax(ties, 4), 1);
}

// Timing of the largest ops at Qwen3-VL-8B shapes (bf16 weights). Not run by default:
//   test_backend --gtest_also_run_disabled_tests --gtest_filter='OpsBench.*'
// The limit printed beside each number: FMA peak = cores × 2 FMA units × 8 lanes × 2 flop × clock
// (OST_BENCH_GHZ, default 2.6: the
// nominal clock of the CI machine); bandwidth-bound rows print GB/s of weights streamed.
namespace bench {

double now_s() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

double peak_gflops() {
  const double ghz = std::getenv("OST_BENCH_GHZ") ? std::atof(std::getenv("OST_BENCH_GHZ")) : 2.6;
  return omp_get_max_threads() * 2 * 8 * 2 * ghz;
}

TEST(OpsBench, DISABLED_Matmul) {
  const double peak = peak_gflops();
  struct Shape {
    const char* what;
    int64_t n, k, o;
  };
  const Shape shapes[] = {
      {"text q_proj prefill 256", 256, 4096, 4096},  {"text gate prefill 256", 256, 4096, 12288},
      {"vision fc1 1024 patches", 1024, 1152, 4304}, {"vision qkv 1024 patches", 1024, 1152, 3456},
      {"text gate decode", 1, 4096, 12288},          {"lm_head decode", 1, 4096, 151936},
  };
  for (const auto& s : shapes) {
    TestWeight w = make_weight(WType::BF16, s.o, s.k, 1);
    std::vector<float> x = randn(size_t(s.n * s.k), 2), y(size_t(s.n * s.o));
    matmul(x.data(), s.n, w.view(), nullptr, y.data());  // warm up
    double t = 1e30, cpu = 1e30;                         // best of several runs (the machine may be shared)
    for (int rep = 0; rep < 5; ++rep) {
      const double t0 = now_s();
      const std::clock_t c0 = std::clock();
      matmul(x.data(), s.n, w.view(), nullptr, y.data());
      t = std::min(t, now_s() - t0);
      cpu = std::min(cpu, double(std::clock() - c0) / CLOCKS_PER_SEC);
    }
    const double gflops = 2.0 * s.n * s.k * s.o / t / 1e9;
    const double gbs = 2.0 * s.k * s.o / t / 1e9;
    std::printf(
        "%-24s n=%-4lld k=%-4lld o=%-6lld %7.2f ms (cpu %7.2f)  %5.1f GFLOP/s (peak %.0f)  "
        "weights %.1f GB/s\n",
        s.what, (long long)s.n, (long long)s.k, (long long)s.o, t * 1e3, cpu * 1e3, gflops, peak, gbs);
  }
}

TEST(OpsBench, DISABLED_Attention) {
  // Vision: 16 heads of 72 over 1024 patches; text prefill: 32/8 heads of 128 over 1024 tokens.
  for (auto [nq, nkv, h, kvh, d, causal] :
       {std::tuple{1024, 1024, 16, 16, 72, false}, std::tuple{1024, 1024, 32, 8, 128, true},
        std::tuple{1, 4096, 32, 8, 128, true}}) {
    AttentionParams p;
    p.n_q = nq;
    p.n_kv = nkv;
    p.n_heads = h;
    p.n_kv_heads = kvh;
    p.head_dim = d;
    p.q_stride = p.out_stride = int64_t(h) * d;
    p.kv_stride = int64_t(kvh) * d;
    p.causal = causal;
    p.q_pos0 = nkv - nq;
    p.scale = 0.1f;
    std::vector<float> q = randn(size_t(nq * p.q_stride), 1), k = randn(size_t(nkv * p.kv_stride), 2),
                       v = randn(size_t(nkv * p.kv_stride), 3), o(q.size());
    double wall = 1e30, cpu = 1e30;  // best of 5
    for (int rep = 0; rep < 5; ++rep) {
      const double t0 = now_s();
      const std::clock_t c0 = std::clock();
      attention(p, q.data(), k.data(), v.data(), o.data());
      wall = std::min(wall, now_s() - t0);
      cpu = std::min(cpu, double(std::clock() - c0) / CLOCKS_PER_SEC);
    }
    const double flops = 4.0 * nq * nkv * h * d * (causal && nq == nkv ? 0.5 : 1.0);
    std::printf(
        "attention n_q=%d n_kv=%d heads=%d/%d hd=%d causal=%d: %.2f ms (cpu %.2f ms), %.1f GFLOP/s "
        "(peak %.0f)\n",
        nq, nkv, h, kvh, d, int(causal), wall * 1e3, cpu * 1e3, flops / wall / 1e9, peak_gflops());
  }
}

}  // namespace bench

}  // namespace
}  // namespace ost::ops
