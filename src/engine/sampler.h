// Turning logits into the next token: penalties, temperature, top-k, top-p, min-p, seeded draws;
// and the log-probabilities reported to the user.
#pragma once
#include <cstdint>
#include <vector>

#include "core/status.h"

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
};

Status validate(const SamplingParams& p);
// Greedy with no penalty: the next token is the raw logits' argmax (a runner may choose it).
inline bool plain_greedy(const SamplingParams& p) {
  return p.temperature == 0.0f && p.repetition_penalty == 1.0f && p.presence_penalty == 0.0f &&
         p.frequency_penalty == 0.0f;
}

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

class Sampler {
 public:
  Sampler(const SamplingParams& p, int vocab);
  // `context` = prompt ids; generated ids are added by accept().
  void set_prompt(const std::vector<int32_t>& prompt);
  int32_t sample(const float* logits);  // does not modify logits
  void accept(int32_t id);

 private:
  SamplingParams p_;
  int vocab_;
  Rng rng_;
  std::vector<uint8_t> in_context_;      // prompt or generated (repetition penalty)
  std::vector<int32_t> generated_count_;  // presence / frequency penalties
  std::vector<float> work_;
  std::vector<int32_t> idx_;
};

}  // namespace ost
