// The FP8 KV cache rule (quant::quantize_kv_fp8): per (token, kv head) vector s = amax / 448
// (1 for an all-zero vector), codes e4m3(x · (1/s)); exact round trip of values that are codes
// times a power-of-two scale; the error bound of e4m3 rounding; the --kv-cache-dtype names.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <random>
#include <vector>

#include "quant/quant.h"

namespace ost {
namespace {

TEST(KvFp8, ScaleRuleAndCodes) {
  const int hd = 128;
  const int64_t n = 96;
  std::mt19937 g(5);
  std::normal_distribution<float> d(0.0f, 1.0f);
  std::vector<float> x(size_t(n * hd));
  for (int64_t r = 0; r < n; ++r) {
    const float mag = std::ldexp(1.0f, int(r % 24) - 12);  // 2^-12 .. 2^11
    for (int c = 0; c < hd; ++c) x[size_t(r * hd + c)] = d(g) * mag;
  }
  std::vector<uint8_t> q(x.size(), 0xff);
  std::vector<float> s(size_t(n), NAN), y(x.size(), NAN);
  quant::quantize_kv_fp8(x.data(), n, hd, q.data(), s.data());
  quant::dequantize_kv_fp8(q.data(), s.data(), n, hd, y.data());
  for (int64_t r = 0; r < n; ++r) {
    const float* xr = x.data() + r * hd;
    float amax = 0.0f;
    int arg = 0;
    for (int c = 0; c < hd; ++c)
      if (std::fabs(xr[c]) > amax) amax = std::fabs(xr[c]), arg = c;
    const float want = amax / 448.0f;
    ASSERT_EQ(s[size_t(r)], want) << r;  // bit for bit
    const float inv = 1.0f / want;
    for (int c = 0; c < hd; ++c) {
      const size_t i = size_t(r * hd + c);
      ASSERT_EQ(q[i], quant::f32_to_fp8_e4m3(xr[c] * inv)) << r << "," << c;
      // e4m3 keeps 3 mantissa bits: half a step is |x|/16 for normals, s·2^-10 below 2^-6·s.
      const double bound = std::max(std::fabs(double(xr[c])) / 16.0, double(want) * std::ldexp(1.0, -10));
      ASSERT_LE(std::fabs(double(y[i]) - xr[c]), bound * (1 + 1e-6)) << r << "," << c;
      ASSERT_EQ(y[i], quant::fp8_e4m3_to_f32(q[i]) * want);
    }
    // The largest magnitude becomes ±448 (code 0x7e / 0xfe).
    EXPECT_EQ(q[size_t(r * hd + arg)] & 0x7f, 0x7e) << r;
  }
}

TEST(KvFp8, ExactRoundTripOfCodeTimesPowerOfTwo) {
  const int hd = 64;
  const int64_t n = 40;
  std::mt19937 g(9);
  std::vector<uint8_t> codes(size_t(n * hd));
  std::vector<float> scale(static_cast<size_t>(n)), x(codes.size());
  for (int64_t r = 0; r < n; ++r) {
    scale[size_t(r)] = std::ldexp(1.0f, int(r % 30) - 20);
    for (int c = 0; c < hd; ++c) {
      uint8_t b = uint8_t(g() & 0xff);
      if ((b & 0x7f) == 0x7f) b = 0x7e;  // no NaN codes
      codes[size_t(r * hd + c)] = b;
    }
    codes[size_t(r * hd + int(g() % hd))] = (g() & 1) ? 0x7e : 0xfe;  // amax = 448 · scale
    for (int c = 0; c < hd; ++c)
      x[size_t(r * hd + c)] = quant::fp8_e4m3_to_f32(codes[size_t(r * hd + c)]) * scale[size_t(r)];
  }
  std::vector<uint8_t> q(codes.size());
  std::vector<float> s(static_cast<size_t>(n)), y(x.size());
  quant::quantize_kv_fp8(x.data(), n, hd, q.data(), s.data());
  EXPECT_EQ(s, scale);
  EXPECT_EQ(q, codes);
  quant::dequantize_kv_fp8(q.data(), s.data(), n, hd, y.data());
  for (size_t i = 0; i < x.size(); ++i) ASSERT_EQ(std::signbit(y[i]), std::signbit(x[i])) << i;
  EXPECT_EQ(y, x);
}

TEST(KvFp8, ZeroVectorAndSaturation) {
  const int hd = 32;
  std::vector<float> x(size_t(2 * hd), 0.0f);
  x[size_t(hd)] = 3.0e38f;  // a huge value: s is finite and the codes saturate at ±448 at most
  x[size_t(hd + 1)] = -1.0f;
  std::vector<uint8_t> q(x.size(), 0xff);
  std::vector<float> s(2, NAN);
  quant::quantize_kv_fp8(x.data(), 2, hd, q.data(), s.data());
  EXPECT_EQ(s[0], 1.0f);
  for (int c = 0; c < hd; ++c) EXPECT_EQ(q[size_t(c)], 0x00) << c;
  EXPECT_EQ(s[1], 3.0e38f / 448.0f);
  EXPECT_EQ(q[size_t(hd)], 0x7e);
  EXPECT_EQ(q[size_t(hd + 1)], 0x80);  // -1/s underflows to -0
}

TEST(KvFp8, DtypeNames) {
  EXPECT_EQ(*quant::parse_kv_dtype("bf16"), quant::KvDType::BF16);
  EXPECT_EQ(*quant::parse_kv_dtype("fp8"), quant::KvDType::FP8);
  EXPECT_FALSE(quant::parse_kv_dtype("int8").is_ok());
  EXPECT_STREQ(quant::kv_dtype_name(quant::KvDType::FP8), "fp8");
  EXPECT_STREQ(quant::kv_dtype_name(quant::KvDType::BF16), "bf16");
}

}  // namespace
}  // namespace ost
