// Drives an EngineLoop from a test on the seeded tiny Qwen3-VL: the model with its tokenizer and
// two fixture photos, store-clerk requests, a loop on a given runner; submits requests, collects
// each one's tokens and final event, and waits for the loop's published counters to settle.
#pragma once
#include <gtest/gtest.h>

#include <chrono>
#include <utility>
#include <thread>
#include <vector>

#include "common/temp_dir.h"
#include "core/file_util.h"
#include "engine/engine_loop.h"
#include "io/seeded.h"
#include "vision/image.h"

namespace ost::testing {

struct TinyVlFixture {
  TempDir dir;
  std::string tok = std::string(OST_ASSETS) + "/qwen3/tokenizer.json";
  Image shelf, poster;  // 300×200 (54 image tokens) and 180×260
  bool ok = false;      // false: no tokenizer (scripts/setup.sh fetches it) or fixture
  TinyVlFixture() {
    if (!file_exists(tok)) return;
    TestModelOptions o;
    o.config_dir = std::string(OST_TEST_DATA) + "/qwen3vl-tiny";
    o.seed = 20261124;
    o.out_dir = dir.path();
    o.tokenizer = tok;
    if (!write_test_model(o).is_ok()) return;
    auto a = load_image_file(std::string(OST_TEST_DATA) + "/qwen3vl-tiny/images/shelf_300x200.png");
    auto b = load_image_file(std::string(OST_TEST_DATA) + "/qwen3vl-tiny/images/poster_180x260.png");
    if (!a || !b) return;
    shelf = std::move(*a);
    poster = std::move(*b);
    ok = true;
  }
};

// System prompt, then the photo and a question: requests about one photo share the system
// prompt and the image tokens, and the question follows right after the image.
inline GenerateRequest photo_question(const Image& img, const std::string& q, int max_tokens, int top_logprobs = 0) {
  GenerateRequest req;
  req.messages.push_back({"system", {ContentPart::make_text("You audit store shelves.")}});
  req.messages.push_back({"user", {ContentPart::make_image(), ContentPart::make_text(q)}});
  req.images.push_back(img);
  req.max_tokens = max_tokens;
  req.ignore_eos = true;
  req.top_logprobs = top_logprobs;
  return req;
}

// A loop whose prompts are prefilled in chunks of 16 (they start at multiples of the block size
// with and without prefix hits).
inline std::unique_ptr<EngineLoop> start_loop(Result<std::unique_ptr<ModelRunner>> runner, const std::string& tok,
                                              bool engine_pages, int64_t kv_mb, int max_running) {
  EXPECT_TRUE(runner.is_ok()) << runner.message();
  auto tk = Tokenizer::load(tok);
  EXPECT_TRUE(tk.is_ok());
  if (!runner || !tk) return nullptr;
  EngineLoopOptions lo;
  lo.engine_pages = engine_pages;
  lo.kv_memory_mb = kv_mb;
  lo.max_running = max_running;
  lo.prefill_chunk = 16;
  auto loop = EngineLoop::start(std::move(*runner), std::move(*tk), "tiny", lo);
  EXPECT_TRUE(loop.is_ok()) << loop.message();
  if (!loop) return nullptr;
  EXPECT_EQ((*loop)->engine_pages(), engine_pages);
  return std::move(*loop);
}

// The questions of the many-requests cases.
inline const std::vector<std::string>& clerk_questions() {
  static const std::vector<std::string> q = {"Count the facings.", "Which brand is missing?", "Read the price tags.",
                                             "Is the shelf full?", "What is on the top shelf?", "Any damaged boxes?",
                                             "Where is the rice?", "Name three products.", "Is it tidy?",
                                             "What colour is the sign?"};
  return q;
}

struct LoopOutput {
  std::vector<GeneratedToken> tokens;
  RequestEvent done;  // kDone or kError
};

// Submits every request at once and waits for all of them.
inline std::vector<LoopOutput> run_requests(EngineLoop& loop, const std::vector<GenerateRequest>& reqs) {
  std::vector<std::shared_ptr<RequestChannel>> chans;
  for (const GenerateRequest& r : reqs) {
    auto p = loop.prepare(r);
    EXPECT_TRUE(p.is_ok()) << p.message();
    if (!p) return {};
    auto sub = loop.submit(std::move(*p));
    EXPECT_EQ(sub.code, SubmitCode::kOk) << sub.message;
    chans.push_back(sub.channel);
  }
  std::vector<LoopOutput> out(chans.size());
  for (size_t i = 0; i < chans.size(); ++i) {
    for (;;) {
      RequestEvent e;
      if (!chans[i]->pop(e, std::chrono::milliseconds(300000))) {
        ADD_FAILURE() << "request " << i << " timed out";
        return out;
      }
      if (e.kind == RequestEvent::Kind::kToken) {
        out[i].tokens.push_back(e.token);
        continue;
      }
      EXPECT_EQ(e.kind, RequestEvent::Kind::kDone) << e.error;
      out[i].done = std::move(e);
      break;
    }
  }
  return out;
}

// Each request after the previous one finished (each finds what the earlier ones cached).
inline std::vector<LoopOutput> run_one_by_one(EngineLoop& loop, const std::vector<GenerateRequest>& reqs) {
  std::vector<LoopOutput> out;
  for (const GenerateRequest& r : reqs) {
    auto o = run_requests(loop, {r});
    if (o.size() != 1) break;
    out.push_back(std::move(o[0]));
  }
  EXPECT_EQ(out.size(), reqs.size());
  return out;
}

// The loop's counters once it has published the step that finished the last request.
inline EngineSnapshot settled(const EngineLoop& loop) {
  const auto t0 = std::chrono::steady_clock::now();
  for (;;) {
    EngineSnapshot s = loop.snapshot();
    if ((s.running == 0 && s.waiting == 0 && s.kv_blocks_used == 0) ||
        std::chrono::steady_clock::now() - t0 > std::chrono::seconds(30))
      return s;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
}

// Many requests about the two photos: each alone, one after the other on a recomputing loop
// (nothing shared or preempted), then on a loop with engine pages and a 1 MB pool of `blocks`
// blocks the first one (which leaves its blocks in the prefix cache) and then all at once, which
// must preempt and read prefix hits (requests admitted in one step cannot hit each other's
// blocks: they are computed later). make_loop(engine_pages, kv_mb, max_running) makes a loop.
// Returns {alone, all at once}.
template <class MakeLoop>
std::pair<std::vector<LoopOutput>, std::vector<LoopOutput>> tiny_pool_runs(const TinyVlFixture& f, MakeLoop make_loop,
                                                                           size_t n, int max_tokens, int top_logprobs,
                                                                           int64_t blocks) {
  std::vector<GenerateRequest> reqs;
  for (size_t i = 0; i < n; ++i)
    reqs.push_back(photo_question(i % 3 == 2 ? f.poster : f.shelf, clerk_questions()[i], max_tokens, top_logprobs));
  auto plain = make_loop(false, 16, 1);
  auto pooled = make_loop(true, 1, int(n));
  if (!plain || !pooled) return {};
  auto alone = run_one_by_one(*plain, reqs);
  run_requests(*pooled, {reqs[0]});
  auto all = run_requests(*pooled, reqs);
  EXPECT_EQ(all.size(), n);
  const EngineSnapshot s = settled(*pooled);
  EXPECT_EQ(s.kv_blocks_total, blocks);
  EXPECT_GT(s.preemptions, 0);
  EXPECT_GT(s.prefix_skipped_tokens, 0);
  EXPECT_EQ(s.kv_blocks_used, 0);
  for (const LoopOutput& o : all) EXPECT_EQ(o.tokens.size(), size_t(max_tokens));
  return {std::move(alone), std::move(all)};
}

// The usage and counters of photo question A, question B on the same photo, then A again, run
// one by one on a loop with engine pages (paged) and on one that recomputes (plain).
inline void expect_prefix_reads(const std::vector<LoopOutput>& paged, const EngineSnapshot& ps,
                                const std::vector<LoopOutput>& plain, const EngineSnapshot& ns) {
  ASSERT_EQ(paged.size(), 3u);
  ASSERT_EQ(plain.size(), 3u);
  for (const LoopOutput& o : plain) EXPECT_EQ(o.done.cached_tokens, 0);  // recomputed: nothing read
  const int64_t n = paged[0].done.prompt_tokens;
  ASSERT_GT(n, 48);
  EXPECT_EQ(paged[0].done.cached_tokens, 0);
  // B shares the system prompt and the image's leading tokens, in whole blocks: the hit ends
  // inside the image (the question follows right after it).
  EXPECT_GE(paged[1].done.cached_tokens, 32);
  EXPECT_EQ(paged[1].done.cached_tokens % 16, 0);
  EXPECT_LT(paged[1].done.cached_tokens, n - 5);
  // A again: the whole prompt is cached, but the block of its last token is computed (logits).
  EXPECT_EQ(paged[2].done.cached_tokens, (n - 1) / 16 * 16);
  const int64_t skipped = paged[1].done.cached_tokens + paged[2].done.cached_tokens;
  EXPECT_EQ(ps.prefix_skipped_tokens, skipped);
  EXPECT_EQ(ps.computed_prompt_tokens, ps.prompt_tokens - skipped);
  EXPECT_EQ(ns.prefix_skipped_tokens, 0);
  EXPECT_EQ(ns.computed_prompt_tokens, ns.prompt_tokens);
  EXPECT_EQ(ps.prefix_hit_tokens, ns.prefix_hit_tokens);  // both found them
}

}  // namespace ost::testing
