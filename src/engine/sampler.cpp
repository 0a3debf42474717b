#include "engine/sampler.h"

#include <algorithm>
#include <cmath>
#include <numeric>

namespace ost {

Status validate(const SamplingParams& p) {
  if (!(p.temperature >= 0.0f) || p.temperature > 100.0f) return make_error("temperature must be in [0, 100]");
  if (p.top_k < 0) return make_error("top_k must be >= 0");
  if (!(p.top_p > 0.0f && p.top_p <= 1.0f)) return make_error("top_p must be in (0, 1]");
  if (!(p.min_p >= 0.0f && p.min_p <= 1.0f)) return make_error("min_p must be in [0, 1]");
  if (!(p.repetition_penalty > 0.0f) || p.repetition_penalty > 100.0f)
    return make_error("repetition_penalty must be in (0, 100]");
  if (!(p.presence_penalty >= -2.0f && p.presence_penalty <= 2.0f))
    return make_error("presence_penalty must be in [-2, 2]");
  if (!(p.frequency_penalty >= -2.0f && p.frequency_penalty <= 2.0f))
    return make_error("frequency_penalty must be in [-2, 2]");
  return Status::ok();
}

static uint64_t splitmix(uint64_t& x) {
  uint64_t z = (x += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

Rng::Rng(uint64_t seed) {
  for (auto& s : s_) s = splitmix(seed);
}

uint64_t Rng::next() {
  auto rotl = [](uint64_t x, int k) { return (x << k) | (x >> (64 - k)); };
  uint64_t r = rotl(s_[1] * 5, 7) * 9;
  uint64_t t = s_[1] << 17;
  s_[2] ^= s_[0];
  s_[3] ^= s_[1];
  s_[1] ^= s_[2];
  s_[0] ^= s_[3];
  s_[2] ^= t;
  s_[3] = rotl(s_[3], 45);
  return r;
}

double Rng::uniform() { return double(next() >> 11) * 0x1.0p-53; }

std::vector<TokenLogprob> top_logprobs(const float* logits, int vocab, int k, float* logprob_of,
                                       int32_t of_token) {
  float mx = -INFINITY;
  for (int i = 0; i < vocab; ++i) mx = std::max(mx, logits[i]);
  double sum = 0.0;
  for (int i = 0; i < vocab; ++i) sum += std::exp(double(logits[i]) - mx);
  const float lse = float(mx + std::log(sum));
  if (logprob_of && of_token >= 0 && of_token < vocab) *logprob_of = logits[of_token] - lse;
  k = std::min(k, vocab);
  std::vector<TokenLogprob> out;
  if (k <= 0) return out;
  std::vector<int32_t> idx(static_cast<size_t>(vocab));
  std::iota(idx.begin(), idx.end(), 0);
  auto better = [&](int32_t a, int32_t b) { return logits[a] > logits[b] || (logits[a] == logits[b] && a < b); };
  std::partial_sort(idx.begin(), idx.begin() + k, idx.end(), better);
  for (int i = 0; i < k; ++i) out.push_back({idx[size_t(i)], logits[idx[size_t(i)]] - lse});
  return out;
}

Sampler::Sampler(const SamplingParams& p, int vocab)
    : p_(p), vocab_(vocab), rng_(p.seed), in_context_(size_t(vocab), 0), generated_count_(size_t(vocab), 0) {}

void Sampler::set_prompt(const std::vector<int32_t>& prompt) {
  for (int32_t id : prompt)
    if (id >= 0 && id < vocab_) in_context_[size_t(id)] = 1;
}

void Sampler::accept(int32_t id) {
  if (id < 0 || id >= vocab_) return;
  in_context_[size_t(id)] = 1;
  generated_count_[size_t(id)] += 1;
}

int32_t Sampler::sample(const float* logits) {
  work_.assign(logits, logits + vocab_);
  float* x = work_.data();
  // Penalties (HF repetition penalty: divide positive logits, multiply negative ones).
  if (p_.repetition_penalty != 1.0f)
    for (int i = 0; i < vocab_; ++i)
      if (in_context_[size_t(i)]) x[i] = x[i] > 0 ? x[i] / p_.repetition_penalty : x[i] * p_.repetition_penalty;
  if (p_.presence_penalty != 0.0f || p_.frequency_penalty != 0.0f)
    for (int i = 0; i < vocab_; ++i)
      if (int c = generated_count_[size_t(i)]) x[i] -= p_.presence_penalty + p_.frequency_penalty * float(c);

  if (p_.temperature == 0.0f) {  // greedy: the lowest id among equal maxima
    int best = 0;
    for (int i = 1; i < vocab_; ++i)
      if (x[i] > x[best]) best = i;
    return best;
  }
  for (int i = 0; i < vocab_; ++i) x[i] /= p_.temperature;
  // Candidates sorted by logit (descending, ties by id), cut by top-k.
  idx_.resize(size_t(vocab_));
  std::iota(idx_.begin(), idx_.end(), 0);
  auto better = [&](int32_t a, int32_t b) { return x[a] > x[b] || (x[a] == x[b] && a < b); };
  size_t n = size_t(vocab_);
  if (p_.top_k > 0 && size_t(p_.top_k) < n) {
    std::partial_sort(idx_.begin(), idx_.begin() + p_.top_k, idx_.end(), better);
    n = size_t(p_.top_k);
  } else {
    std::sort(idx_.begin(), idx_.end(), better);
  }
  std::vector<double> prob(n);
  const double mx = x[idx_[0]];
  double sum = 0.0;
  for (size_t i = 0; i < n; ++i) sum += prob[i] = std::exp(double(x[idx_[i]]) - mx);
  for (auto& v : prob) v /= sum;
  // top-p: the smallest prefix whose mass reaches top_p (at least one token).
  if (p_.top_p < 1.0f) {
    double cum = 0.0;
    size_t keep = n;
    for (size_t i = 0; i < n; ++i) {
      cum += prob[i];
      if (cum >= double(p_.top_p)) {
        keep = i + 1;
        break;
      }
    }
    n = keep;
  }
  // min-p: drop tokens below min_p times the most likely one.
  if (p_.min_p > 0.0f) {
    const double floor_p = double(p_.min_p) * prob[0];
    size_t keep = 1;
    while (keep < n && prob[keep] >= floor_p) ++keep;
    n = keep;
  }
  double mass = 0.0;
  for (size_t i = 0; i < n; ++i) mass += prob[i];
  double r = rng_.uniform() * mass;
  for (size_t i = 0; i < n; ++i) {
    r -= prob[i];
    if (r < 0) return idx_[i];
  }
  return idx_[n - 1];
}

}  // namespace ost
