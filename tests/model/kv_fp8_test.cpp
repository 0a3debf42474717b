// The CPU oracle with an fp8 KV cache against the f32 cache on the golden cases of the tiny
// model: logits of every prompt position and of 23 greedy decode steps (fed the f32 run's
// tokens), as relative L2 and top-1 agreement; and the cache contents of layer 0 (whose inputs
// are the same in both runs) are exactly quant::quantize_kv_fp8 of the f32 cache's rows.
#include <cmath>
#include <cstdio>

#include "backend/ops.h"
#include "fixture.h"
#include "quant/quant.h"

namespace ost::testing {
namespace {

// Measured on the three golden cases (2026-11-25, x86-64 gcc 12 -O3): prompt logits rel L2
// 0.0180 / 0.0330 / 0.0147 (one_image_zh / text_only_en / two_images), decode steps at most
// 0.0229 / 0.0439 / 0.0155; top-1 agreement 96.7 / 95.0 / 96.3% over the prompt positions and
// 100 / 91.3 / 95.7% over the decode steps (the random tiny model has small logit margins).
// The bounds sit just above the worst case.
constexpr double kMaxRelL2 = 0.06;
constexpr double kMinTop1 = 0.85;

double rel_l2(const float* a, const float* b, size_t n) {
  double num = 0, den = 0;
  for (size_t i = 0; i < n; ++i) {
    num += (double(a[i]) - b[i]) * (double(a[i]) - b[i]);
    den += double(b[i]) * b[i];
  }
  return std::sqrt(num / std::max(den, 1e-30));
}

class KvFp8Case : public ::testing::TestWithParam<const char*> {};

TEST_P(KvFp8Case, LogitsCloseToTheF32Cache) {
  Qwen3VLModel* m = TinyModel::get();
  ASSERT_NE(m, nullptr);
  Golden& g = Golden::get();
  const std::string c = GetParam();
  const std::vector<int32_t> ids = g.ids(c);
  const int64_t T = int64_t(ids.size()), V = m->config().text.vocab_size;
  const TextConfig& tc = m->config().text;
  const int steps = 23;
  VisionOutput v;
  const bool img = !g.grids(c).empty();
  if (img) v = encode_case(*m, c);
  auto pos = compute_mrope_positions(ids, g.grids(c), m->config());
  ASSERT_TRUE(pos.is_ok()) << pos.message();

  KvCache c32 = m->new_cache(T + steps, quant::KvDType::BF16);
  KvCache c8 = m->new_cache(T + steps, quant::KvDType::FP8);
  ASSERT_FALSE(c32.fp8);
  ASSERT_TRUE(c8.fp8);
  auto l32 = m->prefill(c32, ids, *pos, img ? &v : nullptr, true);
  auto l8 = m->prefill(c8, ids, *pos, img ? &v : nullptr, true);
  ASSERT_TRUE(l32.is_ok()) << l32.message();
  ASSERT_TRUE(l8.is_ok()) << l8.message();
  ASSERT_EQ(l8->size(), l32->size());
  const double e_prompt = rel_l2(l8->data(), l32->data(), l32->size());
  int64_t same = 0;
  for (int64_t t = 0; t < T; ++t)
    same += ops::argmax(l8->data() + t * V, V) == ops::argmax(l32->data() + t * V, V);
  const double top1_prompt = double(same) / double(T);

  std::vector<float> last(l32->end() - V, l32->end());
  double e_decode = 0;
  int same_decode = 0;
  for (int s = 0; s < steps; ++s) {
    const int32_t next = int32_t(ops::argmax(last.data(), V));
    auto d32 = m->decode(c32, next);
    auto d8 = m->decode(c8, next);
    ASSERT_TRUE(d32.is_ok() && d8.is_ok());
    e_decode = std::max(e_decode, rel_l2(d8->data(), d32->data(), size_t(V)));
    same_decode += ops::argmax(d8->data(), V) == ops::argmax(d32->data(), V);
    last = *d32;
  }
  const double top1_decode = double(same_decode) / steps;
  std::printf("[ %s ] fp8 KV vs f32 KV: prompt (%lld tokens) logits rel L2 %.4f, top-1 %.1f%%; %d decode steps "
              "max rel L2 %.4f, top-1 %.1f%%\n",
              c.c_str(), (long long)T, e_prompt, 100 * top1_prompt, steps, e_decode, 100 * top1_decode);
  EXPECT_LE(e_prompt, kMaxRelL2);
  EXPECT_LE(e_decode, kMaxRelL2);
  EXPECT_GE(top1_prompt, kMinTop1);
  EXPECT_GE(top1_decode, kMinTop1);
  EXPECT_EQ(c8.len, c32.len);
  EXPECT_GT(e_prompt, 0.0);  // the fp8 cache is in use

  // Layer 0 sees the same inputs in both runs: its fp8 rows are the f32 rows quantized.
  const int64_t vecs = c32.len * tc.num_kv_heads;
  std::vector<uint8_t> q(size_t(vecs * tc.head_dim));
  std::vector<float> s(static_cast<size_t>(vecs));
  quant::quantize_kv_fp8(c32.k[0].data(), vecs, tc.head_dim, q.data(), s.data());
  EXPECT_TRUE(std::equal(q.begin(), q.end(), c8.k8[0].begin()));
  EXPECT_TRUE(std::equal(s.begin(), s.end(), c8.k_scale[0].begin()));
  quant::quantize_kv_fp8(c32.v[0].data(), vecs, tc.head_dim, q.data(), s.data());
  EXPECT_TRUE(std::equal(q.begin(), q.end(), c8.v8[0].begin()));
  EXPECT_TRUE(std::equal(s.begin(), s.end(), c8.v_scale[0].begin()));
}

INSTANTIATE_TEST_SUITE_P(Tiny, KvFp8Case, ::testing::ValuesIn(kCases),
                         [](const auto& info) { return std::string(info.param); });

}  // namespace
}  // namespace ost::testing
