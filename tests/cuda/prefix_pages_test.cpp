// Engine-owned KV pages on the CUDA runner: paged sequences against self-managed ones (block
// tables that grow between decode steps replayed as CUDA graphs, a sequence reading another's
// blocks), and the serving loop on the seeded tiny model: a second question on the same photo and
// the same request again read the prefix cache and give the tokens of a loop that recomputes
// every prompt; many requests on a tiny KV pool (preemption) give each request's tokens alone.
// Greedy tokens of two bf16 runs may first differ only where the reference's top two
// log-probabilities are within kTie (there rounding may pick either); the rest is not compared.
#include <algorithm>
#include <cstdlib>

#include "common/loop_run.h"
#include "cuda_test_util.h"

namespace ost::testing {
namespace {

constexpr float kTie = 0.02f;

std::vector<int32_t> prompt_ids(int n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::vector<int32_t> ids = {151644, 872, 198};
  while (int(ids.size()) < n) ids.push_back(int32_t(rng() % 150000));
  return ids;
}

MropePositions slice(const MropePositions& p, int64_t a, int64_t b) {
  MropePositions o;
  o.n = b - a;
  o.rope_delta = p.rope_delta;
  for (int ax = 0; ax < 3; ++ax)
    for (int64_t i = a; i < b; ++i) o.pos.push_back(p.pos[size_t(ax * p.n + i)]);
  return o;
}

// The CUDA runner takes engine pages only with OST_ENGINE_PAGES=1 (read when it loads).
Result<std::unique_ptr<ModelRunner>> paged_cuda_runner(const std::string& dir) {
  setenv("OST_ENGINE_PAGES", "1", 1);
  auto r = load_cuda_runner(dir);
  unsetenv("OST_ENGINE_PAGES");
  return r;
}

std::unique_ptr<EngineLoop> gpu_loop(const TinyVlFixture& f, bool engine_pages, int64_t kv_mb, int max_running) {
  return start_loop(paged_cuda_runner(f.dir.path()), f.tok, engine_pages, kv_mb, max_running);
}

TEST(CudaPrefixPages, PagedSequencesMatchSelfManaged) {
  OST_REQUIRE_GPU();
  TinyVlFixture f;
  ASSERT_TRUE(f.ok) << "no tokenizer (scripts/setup.sh fetches it) or fixture";
  auto r = paged_cuda_runner(f.dir.path());
  ASSERT_TRUE(r.is_ok()) << r.message();
  ModelRunner& g = **r;
  ASSERT_TRUE(g.pages_from_engine());
  ASSERT_EQ(g.kv_block_tokens(), 16);
  const std::vector<int32_t> ids = prompt_ids(30, 7);
  auto pos = compute_mrope_positions(ids, {}, g.config());
  ASSERT_TRUE(pos.is_ok());
  // The reference holds the pool's first blocks (0..3); the paged ones name others.
  auto ref = g.new_sequence(64);
  ASSERT_TRUE(ref.is_ok());
  auto lr = g.prefill(**ref, ids, *pos, nullptr, false);
  ASSERT_TRUE(lr.is_ok()) << lr.message();
  auto p = g.new_paged_sequence(0);
  ASSERT_TRUE(p.is_ok()) << p.message();
  EXPECT_FALSE(g.set_block_table(**p, {7, 0}).is_ok());  // block 0 is the reference's
  ASSERT_TRUE(g.set_block_table(**p, {7, 5}).is_ok());
  EXPECT_FALSE(g.set_block_table(**p, {7, 6}).is_ok());  // tables only grow
  auto lp = g.prefill(**p, ids, *pos, nullptr, false);
  ASSERT_TRUE(lp.is_ok()) << lp.message();
  EXPECT_LE(rel_l2(*lp, *lr), 1e-3);
  // Decode both in one batch across a block boundary: at 32 tokens p's table must grow first.
  // Graphs: the first step of batch size 2 runs eagerly, the second captures, the rest replay,
  // reading p's grown table from its staging row (the same row each step).
  int32_t next = int32_t(std::max_element(lr->begin(), lr->end()) - lr->begin());
  for (int step = 0; step < 8; ++step) {
    if ((*p)->length() == 32) {
      EXPECT_FALSE(g.decode_batch_argmax({ref->get(), p->get()}, {next, next}).is_ok());  // no place yet
      ASSERT_TRUE(g.set_block_table(**p, {7, 5, 11}).is_ok());
    }
    auto b = g.decode_batch_argmax({ref->get(), p->get()}, {next, next});
    ASSERT_TRUE(b.is_ok()) << b.message();
    EXPECT_EQ((*b)[1].id, (*b)[0].id) << "step " << step;
    EXPECT_NEAR((*b)[1].logprob, (*b)[0].logprob, 1e-3) << "step " << step;
    next = (*b)[0].id;
  }
  EXPECT_EQ((*p)->length(), 38);
  // A sequence reading p's first block (16 cached tokens) computes the rest into its own block.
  auto q = g.new_paged_sequence(16);
  ASSERT_TRUE(q.is_ok());
  EXPECT_FALSE(g.new_paged_sequence(8).is_ok());
  EXPECT_FALSE(g.prefill(**q, {1}, slice(*pos, 16, 17), nullptr, false).is_ok());  // no table yet
  ASSERT_TRUE(g.set_block_table(**q, {7, 9}).is_ok());
  EXPECT_EQ((*q)->length(), 16);
  auto lq = g.prefill(**q, std::vector<int32_t>(ids.begin() + 16, ids.end()), slice(*pos, 16, 30), nullptr, false);
  ASSERT_TRUE(lq.is_ok()) << lq.message();
  EXPECT_LE(rel_l2(*lq, *lr), 5e-3);  // 14 rows against 30: the GEMMs may round differently
}

// Tokens of `got` equal those of `ref`, or first differ where the reference's top two were
// within kTie; returns how many agree before that (all of them, mostly).
size_t expect_same_greedy(const LoopOutput& got, const LoopOutput& ref, const std::string& what) {
  EXPECT_EQ(got.done.kind, RequestEvent::Kind::kDone) << what << ": " << got.done.error;
  EXPECT_EQ(got.tokens.size(), ref.tokens.size()) << what;
  size_t i = 0;
  for (; i < std::min(got.tokens.size(), ref.tokens.size()); ++i) {
    if (got.tokens[i].id == ref.tokens[i].id) continue;
    const auto& top = ref.tokens[i].top;
    EXPECT_TRUE(top.size() >= 2 && top[0].logprob - top[1].logprob < kTie)
        << what << " token " << i << ": " << got.tokens[i].id << " vs " << ref.tokens[i].id << ", not a near tie";
    break;
  }
  return i;
}

TEST(CudaPrefixPages, LoopSecondQuestionOnTheSamePhoto) {
  OST_REQUIRE_GPU();
  TinyVlFixture f;
  ASSERT_TRUE(f.ok) << "no tokenizer (scripts/setup.sh fetches it) or fixture";
  // top_logprobs 2: the reference's margins (still greedy, temperature 0).
  const std::vector<GenerateRequest> reqs = {photo_question(f.shelf, "How many facings of rice?", 12, 2),
                                             photo_question(f.shelf, "Is any price tag missing?", 12, 2),
                                             photo_question(f.shelf, "How many facings of rice?", 12, 2)};
  auto plain_loop = gpu_loop(f, false, 16, 4), paged_loop = gpu_loop(f, true, 16, 4);
  ASSERT_TRUE(plain_loop && paged_loop);
  const auto plain = run_one_by_one(*plain_loop, reqs), paged = run_one_by_one(*paged_loop, reqs);
  ASSERT_EQ(plain.size(), reqs.size());
  ASSERT_EQ(paged.size(), reqs.size());
  size_t compared = 0;
  for (size_t i = 0; i < reqs.size(); ++i) compared += expect_same_greedy(paged[i], plain[i], "request " + std::to_string(i));
  EXPECT_GE(compared, 24u);  // of 36
  expect_prefix_reads(paged, settled(*paged_loop), plain, settled(*plain_loop));
}

TEST(CudaPrefixPages, LoopTinyPoolPreemptsAndMatchesSingleRequests) {
  OST_REQUIRE_GPU();
  TinyVlFixture f;
  ASSERT_TRUE(f.ok) << "no tokenizer (scripts/setup.sh fetches it) or fixture";
  // 10 requests of up to 12 blocks on 64 (1 KB per bf16 token of the tiny model).
  const auto [alone, all] = tiny_pool_runs(
      f, [&](bool pages, int64_t mb, int running) { return gpu_loop(f, pages, mb, running); }, 10, 96, 2, 64);
  ASSERT_EQ(alone.size(), 10u);
  ASSERT_EQ(all.size(), 10u);
  size_t compared = 0;
  for (size_t i = 0; i < all.size(); ++i) compared += expect_same_greedy(all[i], alone[i], "request " + std::to_string(i));
  EXPECT_GE(compared, 100u);  // of 960
}

}  // namespace
}  // namespace ost::testing
