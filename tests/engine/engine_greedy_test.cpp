// Engine::generate at temperature 0 without top logprobs lets the runner choose each token
// (ModelRunner::decode_batch_argmax). On the CPU runner that path must give exactly what the
// sampler path gives: the same ids, text and chosen-token log-probabilities, bit for bit.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>

#include "common/temp_dir.h"
#include "core/file_util.h"
#include "engine/engine.h"
#include "engine/engine_loop.h"
#include "engine/sampler.h"
#include "io/seeded.h"
#include "vision/image.h"

namespace ost::testing {
namespace {

TEST(EngineGreedy, RunnerArgmaxMatchesSamplerPath) {
  const std::string tok = std::string(OST_ASSETS) + "/qwen3/tokenizer.json";
  ASSERT_TRUE(file_exists(tok)) << "no " << tok << " (scripts/setup.sh fetches it)";
  TempDir dir;
  TestModelOptions o;
  o.config_dir = std::string(OST_TEST_DATA) + "/qwen3vl-tiny";
  o.seed = 20261124;
  o.out_dir = dir.path();
  o.tokenizer = tok;
  ASSERT_TRUE(write_test_model(o).is_ok());
  EngineOptions eo;
  eo.device = "cpu";
  auto eng = Engine::load(dir.path(), eo);
  ASSERT_TRUE(eng.is_ok()) << eng.message();
  auto img = load_image_file(std::string(OST_TEST_DATA) + "/qwen3vl-tiny/images/shelf_300x200.png");
  ASSERT_TRUE(img.is_ok()) << img.message();

  GenerateRequest req;
  ChatMessage user;
  user.role = "user";
  user.content.push_back(ContentPart::make_image());
  user.content.push_back(ContentPart::make_text("What is on the shelf?"));
  req.messages.push_back(user);
  req.images.push_back(*img);
  req.max_tokens = 12;
  req.ignore_eos = true;
  req.sampling.temperature = 0.0f;

  auto fast = (*eng)->generate(req);  // runner argmax
  req.top_logprobs = 1;               // forces the sampler path
  auto slow = (*eng)->generate(req);
  ASSERT_TRUE(fast.is_ok()) << fast.message();
  ASSERT_TRUE(slow.is_ok()) << slow.message();
  ASSERT_EQ(fast->tokens.size(), slow->tokens.size());
  for (size_t i = 0; i < fast->tokens.size(); ++i) {
    EXPECT_EQ(fast->tokens[i].id, slow->tokens[i].id) << i;
    EXPECT_EQ(std::memcmp(&fast->tokens[i].logprob, &slow->tokens[i].logprob, 4), 0)
        << i << ": " << fast->tokens[i].logprob << " vs " << slow->tokens[i].logprob;
  }
  EXPECT_EQ(fast->text, slow->text);
  EXPECT_EQ(fast->finish_reason, slow->finish_reason);
}

// decode_batch_argmax with excluded ids equals the Sampler at temperature 0 over logits whose
// excluded ids are -inf, with the log-probability of the unmasked row (as top_logprobs).
TEST(EngineGreedy, ExcludedTokensMatchMaskedSampler) {
  TempDir dir;
  TestModelOptions o;
  o.config_dir = std::string(OST_TEST_DATA) + "/qwen3vl-tiny";
  o.seed = 20261124;
  o.out_dir = dir.path();
  ASSERT_TRUE(write_test_model(o).is_ok());
  auto a = load_cpu_runner(dir.path());
  auto b = load_cpu_runner(dir.path());
  ASSERT_TRUE(a.is_ok() && b.is_ok());
  ModelRunner& ra = **a;
  ModelRunner& rb = **b;
  const int vocab = ra.config().text.vocab_size;
  std::vector<int32_t> ids = {151644, 872, 198};
  std::mt19937 rng(3);
  while (ids.size() < 20) ids.push_back(int32_t(rng() % 150000));
  auto pos = compute_mrope_positions(ids, {}, ra.config());
  ASSERT_TRUE(pos.is_ok());
  auto sa = ra.new_sequence(64);
  auto sb = rb.new_sequence(64);
  ASSERT_TRUE(sa.is_ok() && sb.is_ok());
  ASSERT_TRUE(ra.prefill(**sa, ids, *pos, nullptr, false).is_ok());
  ASSERT_TRUE(rb.prefill(**sb, ids, *pos, nullptr, false).is_ok());
  int32_t next = 100;
  for (int step = 0; step < 4; ++step) {
    auto l = ra.decode_batch({sa->get()}, {next});
    ASSERT_TRUE(l.is_ok());
    // Exclude the row's two most likely ids and a vision id: the choice is the third.
    auto top = top_logprobs(l->data(), vocab, 2);
    const std::vector<int32_t> ex = {top[0].token_id, ra.config().image_token_id, top[1].token_id};
    ASSERT_TRUE(rb.set_excluded_tokens(ex).is_ok());
    auto g = rb.decode_batch_argmax({sb->get()}, {next});
    ASSERT_TRUE(g.is_ok());
    std::vector<float> masked(*l);
    for (int32_t e : ex) masked[size_t(e)] = -INFINITY;
    Sampler smp(SamplingParams{}, vocab);
    const int32_t want = smp.sample(masked.data());
    float want_lp = 0;
    top_logprobs(l->data(), vocab, 0, &want_lp, want);
    EXPECT_EQ((*g)[0].id, want) << step;
    EXPECT_NE((*g)[0].id, top[0].token_id);
    EXPECT_EQ(std::memcmp(&(*g)[0].logprob, &want_lp, 4), 0) << step;
    next = want;
  }
  EXPECT_FALSE(rb.set_excluded_tokens(std::vector<int32_t>(16, 1)).is_ok());
}

// The serving loop: greedy requests through the runner's choice give the same tokens and
// log-probabilities as the host Sampler path, several requests batched together.
TEST(EngineGreedy, LoopRunnerChoiceMatchesHostSampling) {
  const std::string tok = std::string(OST_ASSETS) + "/qwen3/tokenizer.json";
  ASSERT_TRUE(file_exists(tok)) << "no " << tok << " (scripts/setup.sh fetches it)";
  TempDir dir;
  TestModelOptions o;
  o.config_dir = std::string(OST_TEST_DATA) + "/qwen3vl-tiny";
  o.seed = 20261124;
  o.out_dir = dir.path();
  o.tokenizer = tok;
  ASSERT_TRUE(write_test_model(o).is_ok());
  auto img = load_image_file(std::string(OST_TEST_DATA) + "/qwen3vl-tiny/images/shelf_300x200.png");
  ASSERT_TRUE(img.is_ok()) << img.message();
  const std::vector<std::string> questions = {"What is on the shelf?", "Count the items.", "hello", "Describe it."};

  std::vector<std::vector<GeneratedToken>> runs[2];
  for (int host = 0; host < 2; ++host) {
    auto runner = load_cpu_runner(dir.path());
    ASSERT_TRUE(runner.is_ok()) << runner.message();
    auto tk = Tokenizer::load(tok);
    ASSERT_TRUE(tk.is_ok());
    EngineLoopOptions lo;
    lo.runner_greedy = host == 0;
    lo.max_running = 4;
    lo.kv_memory_mb = 64;
    auto loop = EngineLoop::start(std::move(*runner), std::move(*tk), "m", lo);
    ASSERT_TRUE(loop.is_ok()) << loop.message();
    std::vector<std::shared_ptr<RequestChannel>> chans;
    for (size_t q = 0; q < questions.size(); ++q) {
      GenerateRequest req;
      ChatMessage user;
      user.role = "user";
      if (q % 2 == 0) {
        user.content.push_back(ContentPart::make_image());
        req.images.push_back(*img);
      }
      user.content.push_back(ContentPart::make_text(questions[q]));
      req.messages.push_back(user);
      req.max_tokens = 10;
      req.ignore_eos = true;
      auto p = (*loop)->prepare(req);
      ASSERT_TRUE(p.is_ok()) << p.message();
      auto sub = (*loop)->submit(std::move(*p));
      ASSERT_EQ(sub.code, SubmitCode::kOk);
      chans.push_back(sub.channel);
    }
    for (auto& ch : chans) {
      std::vector<GeneratedToken> toks;
      for (;;) {
        RequestEvent e;
        ASSERT_TRUE(ch->pop(e, std::chrono::milliseconds(120000)));
        ASSERT_NE(e.kind, RequestEvent::Kind::kError) << e.error;
        if (e.kind == RequestEvent::Kind::kDone) break;
        toks.push_back(e.token);
      }
      runs[host].push_back(std::move(toks));
    }
  }
  for (size_t q = 0; q < questions.size(); ++q) {
    ASSERT_EQ(runs[0][q].size(), 10u);
    ASSERT_EQ(runs[0][q].size(), runs[1][q].size());
    for (size_t i = 0; i < runs[0][q].size(); ++i) {
      EXPECT_EQ(runs[0][q][i].id, runs[1][q][i].id) << q << "/" << i;
      EXPECT_EQ(std::memcmp(&runs[0][q][i].logprob, &runs[1][q][i].logprob, 4), 0) << q << "/" << i;
    }
  }
}

}  // namespace
}  // namespace ost::testing
