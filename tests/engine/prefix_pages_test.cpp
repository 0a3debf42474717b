// Engine-owned KV pages on the CPU runner (load_cpu_runner(..., engine_pages)): prefix-cache hits
// are read from the pool of engine blocks instead of computed again. The serving loop on the
// seeded tiny model must give the tokens of a loop that recomputes every prompt, while computing
// fewer prompt tokens: a second question on the same photo (the hit ends inside the image), the
// same request again (the whole prompt cached: the last block is still computed), and many
// requests on a tiny pool (preemption, re-admission with a hit on the sequence's own blocks).
#include <gtest/gtest.h>

#include <cmath>

#include "common/loop_run.h"

namespace ost::testing {
namespace {

std::unique_ptr<EngineLoop> cpu_loop(const TinyVlFixture& f, bool engine_pages, int64_t kv_mb, int max_running) {
  return start_loop(load_cpu_runner(f.dir.path(), {}, engine_pages), f.tok, engine_pages, kv_mb, max_running);
}

void expect_same_tokens(const LoopOutput& a, const LoopOutput& b, const std::string& what) {
  EXPECT_EQ(a.done.kind, RequestEvent::Kind::kDone) << what << ": " << a.done.error;
  ASSERT_EQ(a.tokens.size(), b.tokens.size()) << what;
  for (size_t i = 0; i < a.tokens.size(); ++i) {
    EXPECT_EQ(a.tokens[i].id, b.tokens[i].id) << what << " token " << i;
    EXPECT_NEAR(a.tokens[i].logprob, b.tokens[i].logprob, 1e-4) << what << " token " << i;
  }
}

TEST(PrefixPages, SecondQuestionOnTheSamePhotoReadsTheCache) {
  TinyVlFixture f;
  ASSERT_TRUE(f.ok) << "no tokenizer (scripts/setup.sh fetches it) or fixture";
  const std::vector<GenerateRequest> reqs = {photo_question(f.shelf, "How many facings of rice?", 8),
                                             photo_question(f.shelf, "Is any price tag missing?", 8),
                                             photo_question(f.shelf, "How many facings of rice?", 8)};
  auto plain_loop = cpu_loop(f, false, 16, 4), paged_loop = cpu_loop(f, true, 16, 4);
  ASSERT_TRUE(plain_loop && paged_loop);
  const auto plain = run_one_by_one(*plain_loop, reqs), paged = run_one_by_one(*paged_loop, reqs);
  ASSERT_EQ(plain.size(), reqs.size());
  ASSERT_EQ(paged.size(), reqs.size());
  for (size_t i = 0; i < reqs.size(); ++i) {
    expect_same_tokens(paged[i], plain[i], "request " + std::to_string(i));
    EXPECT_EQ(paged[i].tokens.size(), 8u);
  }
  expect_prefix_reads(paged, settled(*paged_loop), plain, settled(*plain_loop));
}

TEST(PrefixPages, TinyPoolPreemptsAndMatchesSingleRequests) {
  TinyVlFixture f;
  ASSERT_TRUE(f.ok) << "no tokenizer (scripts/setup.sh fetches it) or fixture";
  // 6 requests of up to 10 blocks on 32 (2 KB per f32 token of the tiny model).
  const auto [alone, all] = tiny_pool_runs(
      f, [&](bool pages, int64_t mb, int running) { return cpu_loop(f, pages, mb, running); }, 6, 64, 0, 32);
  ASSERT_EQ(alone.size(), 6u);
  ASSERT_EQ(all.size(), 6u);
  for (size_t i = 0; i < all.size(); ++i) expect_same_tokens(all[i], alone[i], "request " + std::to_string(i));
}

TEST(PrefixPages, CpuRunnerPagedSequenceReadsCachedBlocks) {
  TinyVlFixture f;
  ASSERT_TRUE(f.ok) << "no tokenizer (scripts/setup.sh fetches it) or fixture";
  auto r = load_cpu_runner(f.dir.path(), {}, true);
  ASSERT_TRUE(r.is_ok());
  ModelRunner& run = **r;
  EXPECT_TRUE(run.pages_from_engine());
  EXPECT_EQ(run.kv_block_tokens(), 16);
  std::vector<int32_t> ids = {151644, 872, 198};
  while (ids.size() < 40) ids.push_back(int32_t(1000 + 37 * ids.size()));
  auto pos = compute_mrope_positions(ids, {}, run.config());
  ASSERT_TRUE(pos.is_ok());
  // A writes blocks 5, 2, 7; B reads A's first two blocks and computes the rest in block 3.
  auto a = run.new_paged_sequence(0);
  ASSERT_TRUE(a.is_ok());
  EXPECT_FALSE(run.prefill(**a, ids, *pos, nullptr, false).is_ok());  // no table yet
  ASSERT_TRUE(run.set_block_table(**a, {5, 2}).is_ok());
  EXPECT_FALSE(run.prefill(**a, ids, *pos, nullptr, false).is_ok());  // 40 tokens, 32 places
  ASSERT_TRUE(run.set_block_table(**a, {5, 2, 7}).is_ok());
  EXPECT_FALSE(run.set_block_table(**a, {5, 3, 7}).is_ok());  // tables only grow
  auto la = run.prefill(**a, ids, *pos, nullptr, false);
  ASSERT_TRUE(la.is_ok()) << la.message();
  auto b = run.new_paged_sequence(32);
  ASSERT_TRUE(b.is_ok());
  EXPECT_EQ((*b)->length(), 32);
  EXPECT_FALSE(run.new_paged_sequence(20).is_ok());  // not whole blocks
  ASSERT_TRUE(run.set_block_table(**b, {5, 2, 3}).is_ok());
  MropePositions tail;
  tail.n = 8;
  tail.rope_delta = pos->rope_delta;
  for (int ax = 0; ax < 3; ++ax)
    for (int i = 32; i < 40; ++i) tail.pos.push_back(pos->pos[size_t(ax * pos->n + i)]);
  auto lb = run.prefill(**b, std::vector<int32_t>(ids.begin() + 32, ids.end()), tail, nullptr, false);
  ASSERT_TRUE(lb.is_ok()) << lb.message();
  auto max_diff = [](const std::vector<float>& x, const std::vector<float>& y) {
    double d = x.size() == y.size() ? 0 : 1e9;
    for (size_t i = 0; i < std::min(x.size(), y.size()); ++i) d = std::max(d, double(std::fabs(x[i] - y[i])));
    return d;
  };
  EXPECT_LT(max_diff(*la, *lb), 1e-4);
  // Decoding on from there agrees too (each writes its own third block).
  auto da = run.decode(**a, 500);
  auto db = run.decode(**b, 500);
  ASSERT_TRUE(da.is_ok() && db.is_ok());
  EXPECT_LT(max_diff(*da, *db), 1e-4);
  // The recomputing runner has no such mode.
  auto plain = load_cpu_runner(f.dir.path());
  ASSERT_TRUE(plain.is_ok());
  EXPECT_FALSE((*plain)->pages_from_engine());
  EXPECT_FALSE((*plain)->new_paged_sequence(0).is_ok());
}

}  // namespace
}  // namespace ost::testing
