// What a sampled row needs instead of its full logits: the logits after the sampling transforms
// (penalties, excluded ids, temperature), their top-K and the whole-vocabulary normalisers.
// The engine's Sampler draws from these exactly as from the full logits whenever they decide
// the draw (engine/sampler.h), and falls back to the full logits when they do not.
//
// The transform is defined here, once, so that the Sampler, the host computation of candidates
// (compute_candidates) and the CUDA kernel (backend/cuda/topk.cu) round alike: every step is
// one IEEE f32 operation in a fixed order (no contraction into fused multiply-adds except the
// explicit one), and the normalisers are sums of exp(double(x) - max) over the vocabulary.
#pragma once
#include <cmath>
#include <cstdint>
#include <vector>

namespace ost {

// A token the request has seen (prompt or generated): the repetition penalty applies to it,
// and when `generated` > 0 the presence and frequency penalties.
struct SeenToken {
  int32_t id = 0;
  int32_t generated = 0;
};

// The per-row transform of the logits before the distribution is formed.
struct LogitTransform {
  float temperature = 0.0f;         // 0: greedy (no division)
  float repetition_penalty = 1.0f;  // HF: divide positive logits, multiply negative ones
  float presence_penalty = 0.0f;
  float frequency_penalty = 0.0f;
  // Every seen token once (only needed when some penalty is on).
  std::vector<SeenToken> seen;
  bool penalized() const {
    return repetition_penalty != 1.0f || presence_penalty != 0.0f || frequency_penalty != 0.0f;
  }
};

// x after the penalties of one seen token (not yet divided by the temperature):
// x' = (x > 0 ? x / rep : x · rep) when rep != 1, then x' - fma(frequency, generated, presence)
// when generated > 0 and presence or frequency is on.
float penalize_logit(float x, const LogitTransform& t, int32_t generated);

// In place over x f32 [vocab]: `excluded` ids -> -inf, penalties over t.seen, then division by
// the temperature (when > 0).
void apply_transform(float* x, int vocab, const LogitTransform& t, const std::vector<int32_t>& excluded);

// The largest of x[0 .. n) (NaN never wins; -inf for n = 0).
float max_logit(const float* x, int64_t n);
// Σ exp(double(x[i]) - mx) in index order: the normaliser of softmax(x) around mx.
double exp_sum(const float* x, int64_t n, float mx);
// log-sum-exp from the two: float(mx + log(sum)).
inline float lse_of(float mx, double sum) { return float(double(mx) + std::log(sum)); }

// One candidate: its value after the transform, its raw logit, its id.
struct Candidate {
  float value = 0.0f;
  float raw = 0.0f;
  int32_t id = 0;
};

// What a runner gives back for a sampled row.
struct RowCandidates {
  // The top entries of the transformed logits, sorted by value (descending; ties: lower id).
  std::vector<Candidate> top;
  // The top entries of the raw logits (value = raw), sorted alike: the top log-probabilities.
  std::vector<Candidate> raw_top;
  // The transformed logits: their max and exp_sum around it, over the whole vocabulary (sum:
  // only when the spec asks for it; a device runner always gives it).
  float max = 0.0f;
  double sum = 0.0;
  // The raw logits alike (the log-probabilities' normaliser).
  float raw_max = 0.0f;
  double raw_sum = 0.0;
  // A bound on |sum - exp_sum| / sum (and raw_sum alike) against the index-order exp_sum of
  // the same values: 0 when computed by exp_sum itself, small and positive on a device that
  // adds in another order.
  double rel_error = 0.0;
  bool has_nan = false;  // some logit is NaN: the Sampler uses the full logits
};

// What a runner is asked for a sampled row.
struct CandidateSpec {
  LogitTransform transform;
  int top = 0;       // entries of `top` wanted (0: none)
  int raw_top = 0;   // entries of `raw_top` wanted (0: none)
  bool sum = false;  // RowCandidates::sum wanted (the draw may keep the whole vocabulary)
};

// The reference: candidates of one row of f32 logits [vocab] (rel_error 0).
RowCandidates compute_candidates(const float* logits, int vocab, const CandidateSpec& spec,
                                 const std::vector<int32_t>& excluded);

}  // namespace ost
