// Turning logits into the next token: penalties, temperature, top-k, top-p, min-p, seeded draws;
// and the log-probabilities reported to the user.
#pragma once
#include <cstdint>
#include <optional>
#include <utility>
#include <vector>

#include "core/status.h"
#include "model/candidates.h"

namespace ost {

struct SamplingParams {
  float temperature = 0.0f;  // 0: greedy (argmax)
  int top_k = 0;             // 0: off
  float top_p = 1.0f;        // 1: off
  float min_p = 0.0f;        // 0: off
  float repetition_penalty = 1.0f;  // HF: over prompt and generated tokens
  float presence_penalty = 0.0f;    // OpenAI: over generated tokens
  float frequency_penalty = 0.0f;   // OpenAI: over generated tokens, times their count
  uint64_t seed = 0;
  // OpenAI's logit_bias: (token id, bias in [-100, 100]) added to those logits before anything
  // else (penalties, temperature, the draw); log-probabilities stay the raw model's.
  std::vector<std::pair<int32_t, float>> logit_bias;
};

// vocab > 0: logit_bias ids must also be below it.
Status validate(const SamplingParams& p, int vocab = 0);
// Greedy with no penalty or bias: the next token is the raw logits' argmax (a runner may choose it).
inline bool plain_greedy(const SamplingParams& p) {
  return p.temperature == 0.0f && p.repetition_penalty == 1.0f && p.presence_penalty == 0.0f &&
         p.frequency_penalty == 0.0f && p.logit_bias.empty();
}
// x[id] += bias for every logit_bias entry (validate checks the ids).
void add_logit_bias(const SamplingParams& p, float* x, int vocab);

// Small, portable PRNG (xoshiro256**) so a seed gives the same draws on every platform.
class Rng {
 public:
  explicit Rng(uint64_t seed);
  uint64_t next();
  double uniform();  // [0, 1), 53 bits

 private:
  uint64_t s_[4];
};

struct TokenLogprob {
  int32_t token_id;
  float logprob;
};

// log_softmax of raw logits; the k most likely tokens (ties: lower id first).
std::vector<TokenLogprob> top_logprobs(const float* logits, int vocab, int k, float* logprob_of = nullptr,
                                       int32_t of_token = -1);

// top_logprobs from a runner's candidates (raw_top, raw_max, raw_sum): the normaliser `lse`
// and the k most likely tokens, exactly as top_logprobs computes them over the full logits;
// false when the candidates do not decide them (k beyond raw_top, or a normaliser whose f32
// rounding the sum's error bound leaves open).
bool candidate_lse(const RowCandidates& c, float& lse);
bool candidate_top_logprobs(const RowCandidates& c, int vocab, int k, float lse, std::vector<TokenLogprob>& out);

// The draw, from full logits or from a runner's candidates:
//   x = the logits after penalties (model/candidates.h: apply_transform) and temperature;
//   temperature 0: the argmax (lowest id on ties); else, with the tokens sorted by x
//   (descending, ties: lower id) and w_i = exp(x_i - x_max) in double,
//   n = top_k (when 0 < top_k < vocab) else vocab; Z = Σ_{i<n} w_i in sorted order when n <
//   vocab, else exp_sum(x) (index order, the whole vocabulary);
//   top-p keeps the shortest prefix with Σ w >= top_p·Z; min-p then keeps the tokens with
//   w_i >= min_p (w_0 = 1); the kept mass M is Z when nothing was cut, else Σ of the kept w;
//   one uniform draw u: r = u·M, subtract w_0, w_1, ... and take the first token where r < 0.
class Sampler {
 public:
  // Candidates a runner computes for a sampled row (more when top_k asks for more).
  static constexpr int kCandidates = 256;
  static constexpr int kMaxCandidates = 1024;

  Sampler(const SamplingParams& p, int vocab);
  // `context` = prompt ids; generated ids are added by accept().
  void set_prompt(const std::vector<int32_t>& prompt);
  int32_t sample(const float* logits);  // does not modify logits
  // The same choice from a runner's candidates of this step (the vision placeholders excluded
  // by the runner as the caller of sample() masks them): nullopt when they do not decide it,
  // the random state then untouched (use sample() on the full logits).
  std::optional<int32_t> sample(const RowCandidates& c);
  void accept(int32_t id);
  // What a runner computes for this request's next token (top_logprobs: raw entries wanted).
  CandidateSpec candidate_spec(int top_logprobs) const;

 private:
  // The index into v[0 .. avail) (sorted values) of the token the draw u picks, or -1 when those
  // values do not decide it; z_lo <= Z <= z_hi bound the whole-vocabulary normaliser.
  long pick(const float* v, size_t avail, double z_lo, double z_hi, double u);

  SamplingParams p_;
  int vocab_;
  Rng rng_;
  LogitTransform transform_;        // the penalties' parameters and every seen token once
  std::vector<int32_t> seen_slot_;  // per id: its index in transform_.seen, or -1
  std::vector<float> work_;
  std::vector<int32_t> idx_;
  std::vector<double> w_;           // exp(v_i - v_0), computed as far as a draw needs
};

}  // namespace ost
