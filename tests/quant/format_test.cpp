// Packers and reference dequantization: fp8 codes, error bounds of each format, the int4 byte
// layout, and the CPU matmul on quantized weights against the dense matmul of the dequantized
// matrix.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <random>
#include <string>
#include <vector>

#include "backend/ops.h"
#include "core/bf16.h"
#include "quant/quant.h"

namespace ost {
namespace {

std::vector<float> randn(size_t n, uint32_t seed, float sd = 0.05f) {
  std::mt19937 g(seed);
  std::normal_distribution<float> d(0.0f, sd);
  std::vector<float> v(n);
  for (auto& x : v) x = d(g);
  return v;
}

std::vector<float> dequant_all(const quant::QuantizedMatrix& m) {
  std::vector<float> out(size_t(m.rows * m.cols));
  for (int64_t r = 0; r < m.rows; ++r) quant::dequant_segment(m.view(), r, 0, m.cols, out.data() + r * m.cols);
  return out;
}

ops::WeightView wview(const quant::QuantizedMatrix& m) {
  ops::WeightView w;
  w.dtype = m.format == quant::Format::INT8  ? ops::WType::INT8
            : m.format == quant::Format::FP8 ? ops::WType::FP8
                                             : ops::WType::INT4;
  w.data = m.data.data();
  w.rows = m.rows;
  w.cols = m.cols;
  w.scale = m.scale.data();
  w.zero = m.zero.empty() ? nullptr : m.zero.data();
  w.group = m.group;
  return w;
}

TEST(Fp8, EveryCodeRoundTrips) {
  for (int b = 0; b < 256; ++b) {
    if ((b & 0x7f) == 0x7f) {
      EXPECT_TRUE(std::isnan(quant::fp8_e4m3_to_f32(uint8_t(b))));
      continue;
    }
    const float f = quant::fp8_e4m3_to_f32(uint8_t(b));
    EXPECT_EQ(quant::f32_to_fp8_e4m3(f), b == 0x80 ? 0x80 : b) << b << " " << f;
  }
  EXPECT_EQ(quant::fp8_e4m3_to_f32(0x7e), 448.0f);
  EXPECT_EQ(quant::f32_to_fp8_e4m3(1e6f), 0x7e);
  EXPECT_EQ(quant::f32_to_fp8_e4m3(-1e6f), 0xfe);
  EXPECT_EQ(quant::fp8_e4m3_to_f32(0x01), std::ldexp(1.0f, -9));
  // Ties go to even: 1 + 1/16 lies between 1 (code 0x38) and 1.125 (0x39).
  EXPECT_EQ(quant::f32_to_fp8_e4m3(1.0625f), 0x38);
  EXPECT_EQ(quant::f32_to_fp8_e4m3(1.1875f), 0x3a);
}

TEST(Quantize, Int8PerChannelError) {
  const int64_t R = 37, C = 300;
  auto w = randn(size_t(R * C), 1);
  auto m = quant::quantize(quant::Format::INT8, w.data(), R, C, 0);
  ASSERT_TRUE(m.is_ok()) << m.message();
  auto d = dequant_all(*m);
  for (int64_t r = 0; r < R; ++r)
    for (int64_t c = 0; c < C; ++c)
      EXPECT_LE(std::fabs(d[size_t(r * C + c)] - w[size_t(r * C + c)]), 0.5f * m->scale[size_t(r)] * 1.0001f);
}

TEST(Quantize, Fp8BlockScalesAndError) {
  const int64_t R = 200, C = 260;  // partial blocks on both sides
  auto w = randn(size_t(R * C), 2);
  auto m = quant::quantize(quant::Format::FP8, w.data(), R, C, 128);
  ASSERT_TRUE(m.is_ok());
  EXPECT_EQ(m->scale.size(), size_t(2 * 3));
  auto d = dequant_all(*m);
  double e = 0, n = 0;
  for (size_t i = 0; i < w.size(); ++i) {
    e += double(d[i] - w[i]) * (d[i] - w[i]);
    n += double(w[i]) * w[i];
  }
  EXPECT_LT(std::sqrt(e / n), 0.04);  // 3 mantissa bits: ~2^-4 relative per element at worst
}

TEST(Quantize, Int4LayoutAndError) {
  // One row, group 4: the low nibble holds the even input.
  const float w1[8] = {0.0f, 1.5f, -1.5f, 0.75f, 1.0f, 2.0f, 3.0f, 0.0f};
  auto m1 = quant::quantize(quant::Format::INT4, w1, 1, 8, 4);
  ASSERT_TRUE(m1.is_ok());
  ASSERT_EQ(m1->data.size(), 4u);
  EXPECT_EQ(m1->scale[0], round_f16(3.0f / 15.0f));  // range [-1.5, 1.5], the f16 nearest 0.2
  EXPECT_EQ(m1->zero[0], 8);                         // round(1.5 / 0.19995) = round(7.502) = 8
  EXPECT_EQ(m1->zero[1], 0);                    // range [0, 3]
  EXPECT_EQ(m1->data[0] & 15, 8);               // w = 0 -> q = z
  EXPECT_EQ(m1->data[2], uint8_t(5 | (10 << 4))); // 1.0 / 0.2 = 5, 2.0 / 0.2 = 10
  const int64_t R = 16, C = 256;
  auto w = randn(size_t(R * C), 3);
  auto m = quant::quantize(quant::Format::INT4, w.data(), R, C, 128);
  ASSERT_TRUE(m.is_ok());
  auto d = dequant_all(*m);
  for (int64_t r = 0; r < R; ++r)
    for (int64_t c = 0; c < C; ++c)
      // half a step, plus what rounding s down to f16 (2^-11 relative) takes off the range top
      EXPECT_LE(std::fabs(d[size_t(r * C + c)] - w[size_t(r * C + c)]),
                (0.5f + 15.0f / 2048.0f) * m->scale[size_t(r * 2 + c / 128)] * 1.0001f);
  EXPECT_FALSE(quant::quantize(quant::Format::INT4, w.data(), R, 200, 128).is_ok());
  auto st = quant::check_shape(quant::Format::INT4, "layers.0.mlp.down_proj.weight", 8, 200, 128);
  EXPECT_NE(st.message().find("not divisible"), std::string::npos) << st.message();
}

// INT4 scales are f16 values (format.h): every stored scale is its own f16 rounding, within
// [2^-24, 65504] even for groups far outside the usual range, and q, z come from that value:
// dequantizing with it reproduces each group's weights to half a step.
TEST(Quantize, Int4ScalesAreF16Values) {
  const int64_t C = 512;
  std::vector<float> w(size_t(6 * C));
  auto r = randn(size_t(C), 9, 1.0f);
  const float mag[6] = {1.0f, 0.05f, 3e-6f, 1e-9f, 2e5f, 0.0f};  // incl. subnormal, clamped, zero
  for (int i = 0; i < 6; ++i)
    for (int64_t c = 0; c < C; ++c) w[size_t(i * C + c)] = mag[i] * r[size_t(c)];
  for (int G : {32, 128}) {
    auto m = quant::quantize(quant::Format::INT4, w.data(), 6, C, G);
    ASSERT_TRUE(m.is_ok());
    const int64_t ng = C / G;
    for (int64_t i = 0; i < 6 * ng; ++i) {
      const float s = m->scale[size_t(i)];
      EXPECT_EQ(s, round_f16(s)) << i;
      EXPECT_EQ(f16_to_f32(f32_to_f16(s)), s) << i;
      EXPECT_GE(s, 5.9604644775390625e-8f) << i;
      EXPECT_LE(s, 65504.0f) << i;
    }
    EXPECT_EQ(m->scale[size_t(5 * ng)], 1.0f);  // an all-zero group
    auto d = dequant_all(*m);
    // Ordinary and subnormal scales: half a step, plus the range top lost to rounding s to f16
    // (15 times half an f16 step: 2^-11 relative, or 2^-25 absolute below 2^-14).
    for (int row : {0, 1, 2}) {
      for (int64_t c = 0; c < C; ++c) {
        const float s = m->scale[size_t(row * ng + c / G)];
        const float cut = 15.0f * std::max(s / 2048.0f, 2.98023224e-8f);
        EXPECT_LE(std::fabs(d[size_t(row * C + c)] - w[size_t(row * C + c)]), (0.5f * s + cut) * 1.0001f)
            << row << "," << c;
      }
    }
    for (int64_t c = 0; c < C; ++c) {
      EXPECT_LE(std::fabs(d[size_t(3 * C + c)] - w[size_t(3 * C + c)]), 1e-8f);  // below f16: near zero
      EXPECT_EQ(d[size_t(5 * C + c)], 0.0f);
    }
    // the CPU reference multiplies by exactly the f16 value: (q - z) · s in f32 is exact
    for (int64_t c = 0; c < C; ++c) {
      const uint8_t b = m->data[size_t((C + c) / 2)];
      const int q = (c & 1) ? (b >> 4) : (b & 15);
      EXPECT_EQ(d[size_t(C + c)], float(q - int(m->zero[size_t(ng + c / G)])) * m->scale[size_t(ng + c / G)]);
    }
  }
}

TEST(Quantize, UnknownFormatIsAnError) {
  auto f = quant::parse_format("int3");
  ASSERT_FALSE(f.is_ok());
  EXPECT_NE(f.message().find("int3"), std::string::npos);
}

// The CPU matmul on quantized views equals the dense fp32 matmul of the dequantized weights (for
// FP8, of the dequantized weights and inputs).
TEST(Matmul, QuantizedMatchesDequantizedDense) {
  const int64_t O = 70, K = 512;
  auto w = randn(size_t(O * K), 4);
  for (auto fmt : {quant::Format::INT8, quant::Format::FP8, quant::Format::INT4}) {
    auto m = quant::quantize(fmt, w.data(), O, K, 128);
    ASSERT_TRUE(m.is_ok());
    auto d = dequant_all(*m);
    ops::WeightView dense{ops::WType::F32, d.data(), O, K};
    auto bias = randn(size_t(O), 9);
    for (int64_t n : {1, 3, 4, 5, 19}) {
      auto x = randn(size_t(n * K), uint32_t(10 + n), 1.0f);
      std::vector<float> y0(size_t(n * O)), y1(size_t(n * O), NAN);
      std::vector<float> xd = x;  // FP8 is W8A8: the dense side gets the same quantized input
      if (fmt == quant::Format::FP8) quant::fake_quant_act_fp8(xd.data(), n, K, 128);
      ops::matmul(xd.data(), n, dense, bias.data(), y0.data());
      ops::matmul(x.data(), n, wview(*m), bias.data(), y1.data());
      for (size_t i = 0; i < y0.size(); ++i)
        ASSERT_NEAR(y1[i], y0[i], 1e-4 * (1 + std::fabs(y0[i]))) << quant::format_name(fmt) << " n=" << n << " i=" << i;
    }
    std::vector<float> row(static_cast<size_t>(K));
    ops::weight_row_f32(wview(*m), 5, row.data());
    for (int64_t c = 0; c < K; ++c) ASSERT_EQ(row[size_t(c)], d[size_t(5 * K + c)]);
  }
}

// FP8 activation blocks: scales are amax/448 per row and block (1 for a zero block), the codes
// round-trip, and the dequantized row is within half a code step of the input.
TEST(Quantize, Fp8ActivationBlocks) {
  const int64_t n = 3, K = 200;  // a full block of 128 and a short one of 72
  auto x = randn(size_t(n * K), 21, 2.0f);
  for (int64_t c = 128; c < K; ++c) x[size_t(2 * K + c)] = 0.0f;  // row 2, block 1: all zero
  std::vector<uint8_t> q(size_t(n * K));
  std::vector<float> s(size_t(n * 2));
  quant::quantize_act_fp8(x.data(), n, K, 128, q.data(), s.data());
  for (int64_t r = 0; r < n; ++r)
    for (int64_t b = 0; b < 2; ++b) {
      float amax = 0.0f;
      for (int64_t c = b * 128; c < std::min<int64_t>(K, b * 128 + 128); ++c) amax = std::max(amax, std::fabs(x[size_t(r * K + c)]));
      EXPECT_EQ(s[size_t(r * 2 + b)], amax > 0 ? amax / 448.0f : 1.0f) << r << " " << b;
    }
  auto d = x;
  quant::fake_quant_act_fp8(d.data(), n, K, 128);
  for (int64_t i = 0; i < n * K; ++i) {
    const float sc = s[size_t((i / K) * 2 + (i % K) / 128)];
    EXPECT_EQ(d[size_t(i)], quant::fp8_e4m3_to_f32(q[size_t(i)]) * sc);
    EXPECT_LE(std::fabs(d[size_t(i)] - x[size_t(i)]), std::fabs(x[size_t(i)]) / 16 + sc * std::ldexp(1.0f, -10));
  }
}

// The default selection: the decoder's linears and the embedding table; a table tied to the
// lm_head follows the lm_head; --skip wins.
TEST(Quantize, SelectionOfTheEmbeddingTable) {
  const std::string emb = "model.language_model.embed_tokens.weight";
  quant::SelectOptions opt;
  EXPECT_TRUE(*quant::selected("model.language_model.layers.0.mlp.up_proj.weight", opt));
  EXPECT_TRUE(*quant::selected(emb, opt));
  EXPECT_FALSE(*quant::selected(emb, opt, /*tied_embeddings=*/true));
  EXPECT_FALSE(*quant::selected("lm_head.weight", opt));
  opt.lm_head = true;
  EXPECT_TRUE(*quant::selected(emb, opt, true));
  opt.embeddings = false;
  EXPECT_FALSE(*quant::selected(emb, opt));
  EXPECT_TRUE(*quant::selected(emb, opt, true));  // tied: the lm_head's choice
  opt.embeddings = true;
  opt.skip = "embed_tokens";
  EXPECT_FALSE(*quant::selected(emb, opt));
  EXPECT_FALSE(*quant::selected(emb, opt, true));
}

// A quantized table's lookup is each dequantized value rounded to bf16 (what the GPU gather
// writes); a bf16 table's lookup is its values.
TEST(Quantize, EmbeddingLookupRoundsDequantizedRowsToBf16) {
  const int64_t V = 40, H = 64;
  auto w = randn(size_t(V * H), 31, 0.3f);
  const int32_t ids[] = {0, 39, 7, 7, 21};
  for (auto f : {quant::Format::INT8, quant::Format::FP8, quant::Format::INT4}) {
    auto m = quant::quantize(f, w.data(), V, H, f == quant::Format::INT4 ? 32 : 16);
    ASSERT_TRUE(m.is_ok());
    ops::WeightView t{f == quant::Format::INT8  ? ops::WType::INT8
                      : f == quant::Format::FP8 ? ops::WType::FP8
                                                : ops::WType::INT4,
                      m->data.data(), V, H};
    t.scale = m->scale.data();
    t.zero = m->zero.empty() ? nullptr : m->zero.data();
    t.group = m->group;
    std::vector<float> got(5 * H), row(H);
    ops::embedding(t, ids, 5, got.data());
    int64_t unrounded = 0;
    for (int i = 0; i < 5; ++i) {
      quant::dequant_segment(m->view(), ids[i], 0, H, row.data());
      for (int64_t c = 0; c < H; ++c) {
        const float want = round_bf16(row[size_t(c)]);
        ASSERT_EQ(got[size_t(i * H + c)], want) << quant::format_name(f) << " " << i << " " << c;
        unrounded += want != row[size_t(c)];
      }
    }
    EXPECT_GT(unrounded, 0) << quant::format_name(f);  // the rounding is really exercised
  }
}

}  // namespace
}  // namespace ost
