// The tiny Qwen3-VL against the reference goldens (transformers 5.17, fp32 on CPU): M-RoPE ids,
// vision embeddings and deepstack features, logits and top-8 at every prompt position, and 24
// greedy steps through the KV cache.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <numeric>

#include "backend/ops.h"
#include "fixture.h"

namespace ost::testing {
namespace {

constexpr double kTol = 1e-4;

class GoldenCase : public ::testing::TestWithParam<const char*> {
 protected:
  std::string c() const { return GetParam(); }
  bool has_images() const { return !Golden::get().grids(c()).empty(); }
};

TEST_P(GoldenCase, PositionIds) {
  Qwen3VLModel* m = TinyModel::get();
  ASSERT_NE(m, nullptr);
  Golden& g = Golden::get();
  const std::vector<int32_t> ids = g.ids(c());
  ASSERT_EQ(int64_t(ids.size()), g.json_case(c())["num_prompt_tokens"].get<int64_t>());
  auto pos = compute_mrope_positions(ids, g.grids(c()), m->config());
  ASSERT_TRUE(pos.is_ok()) << pos.message();
  EXPECT_EQ(pos->n, int64_t(ids.size()));
  EXPECT_EQ(pos->pos, g.i64(c() + ".position_ids"));
  EXPECT_EQ(pos->rope_delta, g.json_case(c())["rope_delta"].get<int64_t>());
}

TEST_P(GoldenCase, VisionEmbeddings) {
  // A text-only case has no vision golden: the encoder must then refuse nothing and hold none.
  if (!has_images()) {
    EXPECT_FALSE(Golden::get().has(std::string(GetParam()) + ".vision_embeds"));
    return;
  }
  Qwen3VLModel* m = TinyModel::get();
  ASSERT_NE(m, nullptr);
  Golden& g = Golden::get();
  const auto t0 = std::chrono::steady_clock::now();
  VisionOutput v = encode_case(*m, c());
  const double secs = seconds_since(t0);
  const std::vector<float> ref = g.f32(c() + ".vision_embeds");
  ASSERT_EQ(v.embeds.size(), ref.size());
  EXPECT_EQ(v.n_merged * m->config().vision.out_hidden_size, int64_t(ref.size()));
  const double d = max_abs_diff(v.embeds.data(), ref.data(), ref.size());
  std::printf("[ %s ] vision_embeds max |diff| = %.3g (encode %.3f s)\n", c().c_str(), d, secs);
  EXPECT_LE(d, kTol);
  ASSERT_EQ(v.deepstack.size(), m->config().vision.deepstack_visual_indexes.size());
  for (size_t j = 0; j < v.deepstack.size(); ++j) {
    const std::vector<float> ds = g.f32(c() + ".deepstack_" + std::to_string(j));
    ASSERT_EQ(v.deepstack[j].size(), ds.size());
    const double dd = max_abs_diff(v.deepstack[j].data(), ds.data(), ds.size());
    std::printf("[ %s ] deepstack_%zu max |diff| = %.3g\n", c().c_str(), j, dd);
    EXPECT_LE(dd, kTol) << "deepstack_" << j;
  }
}

TEST_P(GoldenCase, PromptLogitsAndTop8) {
  Qwen3VLModel* m = TinyModel::get();
  ASSERT_NE(m, nullptr);
  Golden& g = Golden::get();
  const std::vector<int32_t> ids = g.ids(c());
  const int64_t T = int64_t(ids.size()), V = m->config().text.vocab_size;
  VisionOutput v;
  if (has_images()) v = encode_case(*m, c());
  auto pos = compute_mrope_positions(ids, g.grids(c()), m->config());
  ASSERT_TRUE(pos.is_ok()) << pos.message();
  KvCache cache = m->new_cache(T);
  const auto t0 = std::chrono::steady_clock::now();
  auto logits = m->prefill(cache, ids, *pos, has_images() ? &v : nullptr, /*all_logits=*/true);
  const double secs = seconds_since(t0);
  ASSERT_TRUE(logits.is_ok()) << logits.message();
  ASSERT_EQ(int64_t(logits->size()), T * V);
  EXPECT_EQ(cache.len, T);
  EXPECT_EQ(cache.rope_delta, pos->rope_delta);

  const std::vector<float> last = g.f32(c() + ".logits_last");
  ASSERT_EQ(int64_t(last.size()), V);
  const double d_last = max_abs_diff(logits->data() + (T - 1) * V, last.data(), size_t(V));
  EXPECT_LE(d_last, kTol);

  const std::vector<int64_t> top_ids = g.i64(c() + ".top8_ids");
  const std::vector<float> top_logits = g.f32(c() + ".top8_logits");
  const std::vector<float> top_lp = g.f32(c() + ".top8_logprobs");
  ASSERT_EQ(int64_t(top_ids.size()), T * 8);
  std::vector<float> lp(static_cast<size_t>(V));
  std::vector<int64_t> order(static_cast<size_t>(V));
  double d_logit = 0, d_lp = 0;
  int64_t id_mismatches = 0;
  for (int64_t t = 0; t < T; ++t) {
    const float* row = logits->data() + t * V;
    ops::log_softmax(row, 1, V, lp.data());
    std::iota(order.begin(), order.end(), 0);
    std::partial_sort(order.begin(), order.begin() + 8, order.end(),
                      [row](int64_t a, int64_t b) { return row[a] > row[b] || (row[a] == row[b] && a < b); });
    for (int k = 0; k < 8; ++k) {
      const int64_t ref_id = top_ids[size_t(t * 8 + k)];
      if (order[size_t(k)] != ref_id) {
        ++id_mismatches;
        ADD_FAILURE() << c() << ": top8 rank " << k << " at position " << t << ": got " << order[size_t(k)]
                      << ", reference " << ref_id;
      }
      // Compare the reference's ids by value, so a mismatch above is not counted twice.
      d_logit = std::max(d_logit, std::fabs(double(row[ref_id]) - top_logits[size_t(t * 8 + k)]));
      d_lp = std::max(d_lp, std::fabs(double(lp[size_t(ref_id)]) - top_lp[size_t(t * 8 + k)]));
    }
  }
  std::printf(
      "[ %s ] %lld tokens: logits_last max |diff| = %.3g, top8_logits %.3g, "
      "top8_logprobs %.3g, top8_id mismatches %lld (prefill with all logits %.3f s)\n",
      c().c_str(), (long long)T, d_last, d_logit, d_lp, (long long)id_mismatches, secs);
  EXPECT_LE(d_logit, kTol);
  EXPECT_LE(d_lp, kTol);
}

TEST_P(GoldenCase, GreedyDecode) {
  Qwen3VLModel* m = TinyModel::get();
  ASSERT_NE(m, nullptr);
  Golden& g = Golden::get();
  const std::vector<int32_t> ids = g.ids(c());
  std::vector<int64_t> want;
  for (const auto& x : g.json_case(c())["greedy_ids"]) want.push_back(x.get<int64_t>());
  ASSERT_EQ(want.size(), 24u);
  const int64_t V = m->config().text.vocab_size;

  const auto t0 = std::chrono::steady_clock::now();
  VisionOutput v;
  if (has_images()) v = encode_case(*m, c());
  const double t_vision = seconds_since(t0);
  auto pos = compute_mrope_positions(ids, g.grids(c()), m->config());
  ASSERT_TRUE(pos.is_ok()) << pos.message();
  KvCache cache = m->new_cache(int64_t(ids.size()) + int64_t(want.size()));
  const auto t1 = std::chrono::steady_clock::now();
  auto logits = m->prefill(cache, ids, *pos, has_images() ? &v : nullptr, false);
  const double t_prefill = seconds_since(t1);
  ASSERT_TRUE(logits.is_ok()) << logits.message();
  ASSERT_EQ(int64_t(logits->size()), V);

  std::vector<int64_t> got;
  got.push_back(ops::argmax(logits->data(), V));
  const auto t2 = std::chrono::steady_clock::now();
  while (got.size() < want.size()) {
    auto step = m->decode(cache, int32_t(got.back()));
    ASSERT_TRUE(step.is_ok()) << step.message();
    got.push_back(ops::argmax(step->data(), V));
  }
  const double t_decode = seconds_since(t2);
  const double total = seconds_since(t0);
  std::printf(
      "[ %s ] greedy: vision %.3f s, prefill %zu tokens %.3f s, %zu decode steps %.3f s "
      "(%.1f ms/step), total %.3f s\n",
      c().c_str(), t_vision, ids.size(), t_prefill, want.size() - 1, t_decode,
      1e3 * t_decode / double(want.size() - 1), total);
  EXPECT_EQ(got, want);
  EXPECT_EQ(cache.len, int64_t(ids.size() + want.size() - 1));
}

INSTANTIATE_TEST_SUITE_P(Tiny, GoldenCase, ::testing::ValuesIn(kCases),
                         [](const auto& info) { return std::string(info.param); });

}  // namespace
}  // namespace ost::testing
