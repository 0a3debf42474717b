#include <gtest/gtest.h>

#include <cmath>
#include <map>

#include "engine/sampler.h"

namespace ost {
namespace {

std::vector<float> logits_of(std::vector<double> probs) {
  std::vector<float> l;
  for (double p : probs) l.push_back(p > 0 ? float(std::log(p)) : -1e30f);
  return l;
}

std::map<int, int> histogram(SamplingParams p, const std::vector<float>& logits, int draws) {
  Sampler s(p, int(logits.size()));
  std::map<int, int> h;
  for (int i = 0; i < draws; ++i) h[s.sample(logits.data())]++;
  return h;
}

TEST(Sampler, GreedyPicksArgmaxLowestIdOnTies) {
  SamplingParams p;
  Sampler s(p, 4);
  std::vector<float> l = {1.0f, 3.0f, 3.0f, -2.0f};
  EXPECT_EQ(s.sample(l.data()), 1);
}

TEST(Sampler, SameSeedSameDraws) {
  SamplingParams p;
  p.temperature = 1.0f;
  p.seed = 42;
  std::vector<float> l = logits_of({0.1, 0.2, 0.3, 0.4});
  Sampler a(p, 4), b(p, 4);
  std::vector<int> da, db;
  for (int i = 0; i < 200; ++i) {
    da.push_back(a.sample(l.data()));
    db.push_back(b.sample(l.data()));
  }
  EXPECT_EQ(da, db);
  p.seed = 43;
  Sampler c(p, 4);
  std::vector<int> dc;
  for (int i = 0; i < 200; ++i) dc.push_back(c.sample(l.data()));
  EXPECT_NE(da, dc);
}

TEST(Sampler, TemperatureOneFollowsTheDistribution) {
  SamplingParams p;
  p.temperature = 1.0f;
  p.seed = 1;
  auto h = histogram(p, logits_of({0.1, 0.2, 0.3, 0.4}), 40000);
  EXPECT_NEAR(h[0] / 40000.0, 0.1, 0.01);
  EXPECT_NEAR(h[3] / 40000.0, 0.4, 0.01);
}

TEST(Sampler, TopKTopPMinP) {
  SamplingParams p;
  p.temperature = 1.0f;
  p.seed = 2;
  auto l = logits_of({0.05, 0.15, 0.3, 0.5});
  p.top_k = 2;
  auto h = histogram(p, l, 20000);
  EXPECT_EQ(h.count(0) + h.count(1), 0u);
  EXPECT_NEAR(h[3] / 20000.0, 0.5 / 0.8, 0.015);
  p.top_k = 0;
  p.top_p = 0.6f;  // 0.5 then 0.8 >= 0.6: keeps {3, 2}
  h = histogram(p, l, 20000);
  EXPECT_EQ(h.count(0) + h.count(1), 0u);
  EXPECT_GT(h[2], 0);
  p.top_p = 0.5f;  // exactly reached by the first token
  h = histogram(p, l, 2000);
  EXPECT_EQ(h[3], 2000);
  p.top_p = 1.0f;
  p.min_p = 0.35f;  // floor 0.175: keeps 0.5 and 0.3
  h = histogram(p, l, 20000);
  EXPECT_EQ(h.count(0) + h.count(1), 0u);
  EXPECT_NEAR(h[2] / 20000.0, 0.3 / 0.8, 0.015);
}

TEST(Sampler, Penalties) {
  SamplingParams p;
  std::vector<float> l = {2.0f, 1.9f, -1.0f};
  Sampler rep([&] { auto q = p; q.repetition_penalty = 1.1f; return q; }(), 3);
  rep.set_prompt({0});
  EXPECT_EQ(rep.sample(l.data()), 1);  // 2.0/1.1 < 1.9
  Sampler pres([&] { auto q = p; q.presence_penalty = 0.5f; return q; }(), 3);
  EXPECT_EQ(pres.sample(l.data()), 0);
  pres.accept(0);
  EXPECT_EQ(pres.sample(l.data()), 1);
  Sampler freq([&] { auto q = p; q.frequency_penalty = 0.06f; return q; }(), 3);
  freq.accept(0);
  EXPECT_EQ(freq.sample(l.data()), 0);  // 2.0 - 0.06 > 1.9
  freq.accept(0);
  EXPECT_EQ(freq.sample(l.data()), 1);  // 2.0 - 0.12 < 1.9
}

TEST(Sampler, TopLogprobs) {
  std::vector<float> l = {0.0f, 1.0f, 2.0f, 2.0f};
  float lp = 0;
  auto t = top_logprobs(l.data(), 4, 3, &lp, 1);
  ASSERT_EQ(t.size(), 3u);
  EXPECT_EQ(t[0].token_id, 2);
  EXPECT_EQ(t[1].token_id, 3);
  EXPECT_EQ(t[2].token_id, 1);
  double lse = std::log(std::exp(0.0) + std::exp(1.0) + 2 * std::exp(2.0));
  EXPECT_NEAR(t[0].logprob, 2.0 - lse, 1e-6);
  EXPECT_NEAR(lp, 1.0 - lse, 1e-6);
}

TEST(Sampler, Validation) {
  SamplingParams p;
  EXPECT_TRUE(validate(p).is_ok());
  p.top_p = 0.0f;
  EXPECT_FALSE(validate(p).is_ok());
  p = {};
  p.temperature = -1.0f;
  EXPECT_FALSE(validate(p).is_ok());
  p = {};
  p.temperature = NAN;
  EXPECT_FALSE(validate(p).is_ok());
}

}  // namespace
}  // namespace ost
