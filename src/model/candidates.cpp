// Compiled with -ffp-contract=off (src/CMakeLists.txt): each f32 step of the transform rounds on
// its own, as in the CUDA kernel (backend/cuda/topk.cu).
#include "model/candidates.h"

#include <algorithm>
#include <numeric>

namespace ost {

float penalize_logit(float x, const LogitTransform& t, int32_t generated) {
  if (t.repetition_penalty != 1.0f) x = x > 0 ? x / t.repetition_penalty : x * t.repetition_penalty;
  if (generated > 0 && (t.presence_penalty != 0.0f || t.frequency_penalty != 0.0f))
    x = x - std::fma(t.frequency_penalty, float(generated), t.presence_penalty);
  return x;
}

void apply_transform(float* x, int vocab, const LogitTransform& t, const std::vector<int32_t>& excluded) {
  for (int32_t id : excluded)
    if (id >= 0 && id < vocab) x[id] = -INFINITY;
  if (t.penalized())
    for (const SeenToken& s : t.seen)
      if (s.id >= 0 && s.id < vocab) x[s.id] = penalize_logit(x[s.id], t, s.generated);
  if (t.temperature > 0.0f)
    for (int i = 0; i < vocab; ++i) x[i] /= t.temperature;
}

float max_logit(const float* x, int64_t n) {
  float mx = -INFINITY;
  for (int64_t i = 0; i < n; ++i) mx = std::max(mx, x[i]);
  return mx;
}

double exp_sum(const float* x, int64_t n, float mx) {
  double sum = 0.0;
  for (int64_t i = 0; i < n; ++i) sum += std::exp(double(x[i]) - mx);
  return sum;
}

namespace {

// The k largest of x (ties: lower id first), sorted.
std::vector<int32_t> top_ids(const float* x, int vocab, int k) {
  k = std::clamp(k, 0, vocab);
  std::vector<int32_t> idx(static_cast<size_t>(vocab));
  std::iota(idx.begin(), idx.end(), 0);
  auto better = [&](int32_t a, int32_t b) { return x[a] > x[b] || (x[a] == x[b] && a < b); };
  std::partial_sort(idx.begin(), idx.begin() + k, idx.end(), better);
  idx.resize(size_t(k));
  return idx;
}

}  // namespace

RowCandidates compute_candidates(const float* logits, int vocab, const CandidateSpec& spec,
                                 const std::vector<int32_t>& excluded) {
  RowCandidates c;
  std::vector<float> t(logits, logits + vocab);
  apply_transform(t.data(), vocab, spec.transform, excluded);
  c.raw_max = max_logit(logits, vocab);
  c.raw_sum = exp_sum(logits, vocab, c.raw_max);
  // A NaN anywhere makes the raw sum NaN (the transform makes no NaN of a number).
  c.has_nan = std::isnan(c.raw_sum);
  c.max = max_logit(t.data(), vocab);
  if (spec.sum) c.sum = exp_sum(t.data(), vocab, c.max);
  if (spec.top > 0)
    for (int32_t id : top_ids(t.data(), vocab, spec.top)) c.top.push_back({t[size_t(id)], logits[id], id});
  if (spec.raw_top > 0)
    for (int32_t id : top_ids(logits, vocab, spec.raw_top)) c.raw_top.push_back({logits[id], logits[id], id});
  return c;
}

}  // namespace ost
