// The Sampler's candidate path (model/candidates.h) against its full-logits path: on random
// rows and parameter sets, whenever the candidates decide a draw, the token, its
// log-probability and the top log-probabilities are bit-identical to the full path's, and the
// random state advances alike; when they do not, nothing is consumed. Also with normalisers
// perturbed within a device's error bound, and the serving loop with candidates on and off.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <random>

#include "common/temp_dir.h"
#include "core/file_util.h"
#include "engine/engine_loop.h"
#include "engine/sampler.h"
#include "io/seeded.h"
#include "model/candidates.h"
#include "vision/image.h"

namespace ost::testing {
namespace {

bool same_bits(float a, float b) { return std::memcmp(&a, &b, 4) == 0; }

float round_bf16(float v) {
  uint32_t u;
  std::memcpy(&u, &v, 4);
  u = (u + 0x7FFFu + ((u >> 16) & 1u)) & 0xFFFF0000u;
  std::memcpy(&v, &u, 4);
  return v;
}

// Logits of several shapes: broad, peaked (a few dominant tokens), bf16-rounded (many ties),
// with -inf entries.
std::vector<float> make_row(int vocab, int kind, std::mt19937& rng) {
  std::normal_distribution<float> nd(0.0f, 1.0f);
  std::vector<float> x(static_cast<size_t>(vocab));
  const float scale = kind % 3 == 0 ? 0.5f : kind % 3 == 1 ? 3.0f : 8.0f;
  for (auto& v : x) v = nd(rng) * scale;
  if (kind % 2 == 1) {  // peaked
    std::uniform_int_distribution<int> pick(0, vocab - 1);
    for (int j = 0; j < 4; ++j) x[size_t(pick(rng))] = 12.0f + 2.0f * float(j);
  }
  if (kind % 4 >= 2)
    for (auto& v : x) v = round_bf16(v);
  if (kind % 5 == 4)
    for (int j = 0; j < vocab; j += 7) x[size_t(j)] = -INFINITY;
  return x;
}

struct Tally {
  int rows = 0, decided = 0;
};

// Draws `steps` tokens for one request twice (full path, candidate path) and checks them.
// perturb: the candidates' sums are moved within rel_error (a device's summation order).
void run_request(int vocab, const SamplingParams& p, int n_top, int kind, uint32_t seed, int steps,
                 bool perturb, Tally& t) {
  std::mt19937 rng(seed);
  const std::vector<int32_t> excluded = {3 % vocab, (vocab / 2) % vocab};
  Sampler full(p, vocab), cand(p, vocab);
  std::vector<int32_t> prompt;
  std::uniform_int_distribution<int> any(0, vocab - 1);
  for (int i = 0; i < 40; ++i) prompt.push_back(any(rng));
  full.set_prompt(prompt);
  cand.set_prompt(prompt);
  for (int s = 0; s < steps; ++s) {
    const std::vector<float> logits = make_row(vocab, kind + s, rng);
    // The full path as the serving loop runs it: excluded ids masked, log-probabilities unmasked.
    std::vector<float> masked = logits;
    for (int32_t id : excluded) masked[size_t(id)] = -INFINITY;
    const int32_t want = full.sample(masked.data());
    float want_lp = 0.0f;
    const auto want_top = top_logprobs(logits.data(), vocab, n_top, &want_lp, want);

    RowCandidates c = compute_candidates(logits.data(), vocab, cand.candidate_spec(n_top), excluded);
    if (perturb) {
      std::uniform_real_distribution<double> d(-1e-10, 1e-10);
      c.sum *= 1.0 + d(rng);
      c.raw_sum *= 1.0 + d(rng);
      c.rel_error = 2e-10;
    }
    ++t.rows;
    float lse = 0.0f;
    std::vector<TokenLogprob> top;
    std::optional<int32_t> got;
    if (candidate_lse(c, lse) && candidate_top_logprobs(c, vocab, n_top, lse, top)) got = cand.sample(c);
    if (!got) {
      got = cand.sample(masked.data());  // the fallback: nothing was consumed
      ASSERT_EQ(*got, want) << "fallback, step " << s;
    } else {
      ++t.decided;
      ASSERT_EQ(*got, want) << "step " << s << " kind " << kind << " T " << p.temperature << " k " << p.top_k
                            << " p " << p.top_p << " min_p " << p.min_p;
      const Candidate* k = nullptr;
      for (const Candidate& e : c.top)
        if (e.id == *got) k = &e;
      ASSERT_NE(k, nullptr);
      EXPECT_TRUE(same_bits(k->raw - lse, want_lp)) << k->raw - lse << " vs " << want_lp;
      ASSERT_EQ(top.size(), want_top.size());
      for (size_t i = 0; i < top.size(); ++i) {
        EXPECT_EQ(top[i].token_id, want_top[i].token_id);
        EXPECT_TRUE(same_bits(top[i].logprob, want_top[i].logprob));
      }
    }
    full.accept(want);
    cand.accept(*got);
  }
}

std::vector<SamplingParams> param_sets() {
  std::vector<SamplingParams> out;
  uint64_t seed = 1;
  for (float temp : {0.0f, 0.3f, 0.7f, 1.0f, 1.6f})
    for (int top_k : {0, 1, 7, 50, 256, 700, 5000})
      for (float top_p : {1.0f, 0.95f, 0.5f})
        for (float min_p : {0.0f, 0.1f}) {
          SamplingParams p;
          p.temperature = temp;
          p.top_k = top_k;
          p.top_p = top_p;
          p.min_p = min_p;
          p.seed = seed++;
          if (seed % 3 == 0) p.repetition_penalty = 1.3f;
          if (seed % 4 == 0) p.presence_penalty = 0.7f, p.frequency_penalty = -0.4f;
          out.push_back(p);
        }
  return out;
}

TEST(SamplerCandidates, BitIdenticalToFullLogits) {
  Tally small, big, topk;
  int n = 0;
  for (const SamplingParams& p : param_sets()) {
    ++n;
    const int vocab = n % 3 == 0 ? 300 : n % 3 == 1 ? 5000 : 40;
    run_request(vocab, p, n % 4 == 0 ? 5 : 0, n % 20, uint32_t(n), 4, false, vocab == 40 ? small : big);
    if (p.top_k > 0 && p.top_k <= Sampler::kCandidates) {
      Tally t;
      run_request(5000, p, 2, n % 20, uint32_t(1000 + n), 3, false, t);
      EXPECT_EQ(t.decided, t.rows) << "top_k " << p.top_k << ": the candidates always decide";
      topk.rows += t.rows, topk.decided += t.decided;
    }
  }
  std::printf("decided: %d of %d (vocab 40), %d of %d (300, 5000), %d of %d (top_k <= %d)\n", small.decided,
              small.rows, big.decided, big.rows, topk.decided, topk.rows, Sampler::kCandidates);
  // A vocabulary within the candidates: always decided.
  EXPECT_EQ(small.decided, small.rows);
  EXPECT_GT(big.decided, big.rows / 2) << big.decided << " of " << big.rows;
}

TEST(SamplerCandidates, FullVocabularyRows) {
  Tally t;
  int n = 0;
  for (const SamplingParams& p : param_sets()) {
    if (++n % 9 != 0) continue;
    run_request(151936, p, n % 2 ? 20 : 0, n % 20, uint32_t(77 + n), 2, false, t);
  }
  std::printf("decided: %d of %d\n", t.decided, t.rows);
  EXPECT_GT(t.decided, 0);
}

TEST(SamplerCandidates, DeviceErrorBoundOnTheSums) {
  Tally t;
  int n = 0;
  for (const SamplingParams& p : param_sets()) {
    ++n;
    run_request(n % 2 ? 3000 : 120, p, n % 3 == 0 ? 4 : 0, n % 20, uint32_t(500 + n), 4, true, t);
  }
  std::printf("decided: %d of %d\n", t.decided, t.rows);
  // The bound makes few rows undecided (those whose log-sum-exp rounding it leaves open).
  EXPECT_GT(t.decided, t.rows / 2) << t.decided << " of " << t.rows;
}

TEST(SamplerCandidates, UndecidedLeavesTheRandomStateAlone) {
  // A flat row over many tokens: plain temperature sampling reaches beyond the 256 candidates.
  SamplingParams p;
  p.temperature = 1.0f;
  p.seed = 5;
  const int vocab = 4096;
  std::vector<float> flat(static_cast<size_t>(vocab), 0.25f);
  Sampler a(p, vocab), b(p, vocab);
  int undecided = 0;
  for (int s = 0; s < 20; ++s) {
    RowCandidates c = compute_candidates(flat.data(), vocab, b.candidate_spec(0), {});
    auto got = b.sample(c);
    const int32_t want = a.sample(flat.data());
    if (!got) {
      ++undecided;
      got = b.sample(flat.data());
    }
    EXPECT_EQ(*got, want);
  }
  EXPECT_GT(undecided, 10);
}

TEST(SamplerCandidates, TransformMatchesTheOldPenalties) {
  // The penalties as the Sampler always applied them, written out.
  LogitTransform t;
  t.repetition_penalty = 1.3f;
  t.presence_penalty = 0.5f;
  t.frequency_penalty = 0.25f;
  EXPECT_EQ(penalize_logit(2.6f, t, 0), 2.6f / 1.3f);
  EXPECT_EQ(penalize_logit(-2.0f, t, 0), -2.0f * 1.3f);
  EXPECT_EQ(penalize_logit(2.6f, t, 3), 2.6f / 1.3f - std::fma(0.25f, 3.0f, 0.5f));
  std::vector<float> x = {1.0f, 2.0f, -1.0f, 4.0f};
  t.temperature = 2.0f;
  t.seen = {{1, 0}, {2, 2}};
  apply_transform(x.data(), 4, t, {3});
  EXPECT_EQ(x[0], 0.5f);
  EXPECT_EQ(x[1], (2.0f / 1.3f) / 2.0f);
  EXPECT_EQ(x[2], (-1.0f * 1.3f - std::fma(0.25f, 2.0f, 0.5f)) / 2.0f);
  EXPECT_TRUE(std::isinf(x[3]) && x[3] < 0);
}

// The serving loop on the CPU runner: seeded sampled requests (temperature, top-k, top-p,
// min-p, penalties, top log-probabilities) give the same tokens and log-probabilities with the
// runner's candidates as with the full logits, batched with plain greedy requests.
TEST(SamplerCandidates, LoopCandidatesMatchHostSampling) {
  const std::string tok = std::string(OST_ASSETS) + "/qwen3/tokenizer.json";
  ASSERT_TRUE(file_exists(tok)) << "no " << tok << " (scripts/setup.sh fetches it)";
  TempDir dir;
  TestModelOptions o;
  o.config_dir = std::string(OST_TEST_DATA) + "/qwen3vl-tiny";
  o.seed = 20261124;
  o.out_dir = dir.path();
  o.tokenizer = tok;
  ASSERT_TRUE(write_test_model(o).is_ok());
  std::vector<SamplingParams> ps(6);
  ps[0].temperature = 0.8f, ps[0].top_k = 20, ps[0].seed = 11;
  ps[1].temperature = 1.0f, ps[1].top_p = 0.9f, ps[1].seed = 12;
  ps[2].temperature = 0.0f;  // plain greedy: the runner's choice
  ps[3].temperature = 0.5f, ps[3].min_p = 0.2f, ps[3].repetition_penalty = 1.2f, ps[3].seed = 13;
  ps[4].temperature = 0.0f, ps[4].presence_penalty = 1.0f, ps[4].frequency_penalty = 0.5f;
  ps[5].temperature = 1.2f, ps[5].seed = 14;

  std::vector<std::vector<GeneratedToken>> runs[2];
  EngineSnapshot snap;
  for (int host = 0; host < 2; ++host) {
    auto runner = load_cpu_runner(dir.path());
    ASSERT_TRUE(runner.is_ok()) << runner.message();
    auto tk = Tokenizer::load(tok);
    ASSERT_TRUE(tk.is_ok());
    EngineLoopOptions lo;
    lo.runner_candidates = host == 0;
    lo.max_running = 6;
    lo.kv_memory_mb = 64;
    auto loop = EngineLoop::start(std::move(*runner), std::move(*tk), "m", lo);
    ASSERT_TRUE(loop.is_ok()) << loop.message();
    std::vector<std::shared_ptr<RequestChannel>> chans;
    for (size_t q = 0; q < ps.size(); ++q) {
      GenerateRequest req;
      ChatMessage user;
      user.role = "user";
      user.content.push_back(ContentPart::make_text("Question " + std::to_string(q) + ": what is on the shelf?"));
      req.messages.push_back(user);
      req.max_tokens = 8;
      req.ignore_eos = true;
      req.sampling = ps[q];
      req.top_logprobs = q % 2 == 1 ? 3 : 0;
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
    if (host == 0) snap = (*loop)->snapshot();
  }
  for (size_t q = 0; q < ps.size(); ++q) {
    ASSERT_EQ(runs[0][q].size(), 8u);
    ASSERT_EQ(runs[0][q].size(), runs[1][q].size());
    for (size_t i = 0; i < runs[0][q].size(); ++i) {
      const GeneratedToken &a = runs[0][q][i], &b = runs[1][q][i];
      EXPECT_EQ(a.id, b.id) << q << "/" << i;
      EXPECT_TRUE(same_bits(a.logprob, b.logprob)) << q << "/" << i;
      ASSERT_EQ(a.top.size(), b.top.size());
      for (size_t j = 0; j < a.top.size(); ++j) {
        EXPECT_EQ(a.top[j].token_id, b.top[j].token_id);
        EXPECT_TRUE(same_bits(a.top[j].logprob, b.top[j].logprob));
      }
    }
  }
  std::printf("candidate rows %lld, fallbacks %lld\n", (long long)snap.candidate_rows,
              (long long)snap.sampling_fallbacks);
  // Decode rows of the sampled requests went through the candidates (the first token of each
  // comes from the prefill's logits).
  EXPECT_GE(snap.candidate_rows, 4 * 7);
  EXPECT_LT(snap.sampling_fallbacks, snap.candidate_rows);
}

}  // namespace
}  // namespace ost::testing
