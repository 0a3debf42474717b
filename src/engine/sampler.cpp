#include "engine/sampler.h"

#include <algorithm>
#include <cmath>
#include <numeric>

namespace ost {

Status validate(const SamplingParams& p, int vocab) {
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
  for (const auto& [id, b] : p.logit_bias) {
    if (id < 0) return make_error("logit_bias: token id %d is negative", id);
    if (vocab > 0 && id >= vocab) return make_error("logit_bias: token id %d is outside the vocabulary (%d tokens)", id, vocab);
    if (!(b >= -100.0f && b <= 100.0f)) return make_error("logit_bias: the bias of token %d must be in [-100, 100]", id);
  }
  return Status::ok();
}

void add_logit_bias(const SamplingParams& p, float* x, int vocab) {
  for (const auto& [id, b] : p.logit_bias)
    if (id < vocab) x[id] += b;
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
  const float mx = max_logit(logits, vocab);
  const float lse = lse_of(mx, exp_sum(logits, vocab, mx));
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

bool candidate_lse(const RowCandidates& c, float& lse) {
  if (c.has_nan || !std::isfinite(c.raw_max)) return false;
  lse = lse_of(c.raw_max, c.raw_sum);
  if (c.rel_error == 0.0) return !std::isnan(lse);
  // The full path's sum lies within the bound: its f32 log-sum-exp is certain when both ends
  // of the interval round to the same float.
  const float lo = lse_of(c.raw_max, c.raw_sum * (1.0 - c.rel_error));
  const float hi = lse_of(c.raw_max, c.raw_sum * (1.0 + c.rel_error));
  return lo == hi && lo == lse;
}

bool candidate_top_logprobs(const RowCandidates& c, int vocab, int k, float lse, std::vector<TokenLogprob>& out) {
  out.clear();
  k = std::min(k, vocab);
  if (k <= 0) return true;
  if (size_t(k) > c.raw_top.size()) return false;
  for (int i = 0; i < k; ++i) out.push_back({c.raw_top[size_t(i)].id, c.raw_top[size_t(i)].value - lse});
  return true;
}

Sampler::Sampler(const SamplingParams& p, int vocab)
    : p_(p), vocab_(vocab), rng_(p.seed), seen_slot_(size_t(vocab), -1) {
  transform_.temperature = p.temperature;
  transform_.repetition_penalty = p.repetition_penalty;
  transform_.presence_penalty = p.presence_penalty;
  transform_.frequency_penalty = p.frequency_penalty;
}

void Sampler::set_prompt(const std::vector<int32_t>& prompt) {
  for (int32_t id : prompt)
    if (id >= 0 && id < vocab_ && seen_slot_[size_t(id)] < 0) {
      seen_slot_[size_t(id)] = int32_t(transform_.seen.size());
      transform_.seen.push_back({id, 0});
    }
}

void Sampler::accept(int32_t id) {
  if (id < 0 || id >= vocab_) return;
  if (seen_slot_[size_t(id)] < 0) {
    seen_slot_[size_t(id)] = int32_t(transform_.seen.size());
    transform_.seen.push_back({id, 0});
  }
  transform_.seen[size_t(seen_slot_[size_t(id)])].generated += 1;
}

CandidateSpec Sampler::candidate_spec(int top_logprobs) const {
  CandidateSpec s;
  s.transform.temperature = transform_.temperature;
  s.transform.repetition_penalty = transform_.repetition_penalty;
  s.transform.presence_penalty = transform_.presence_penalty;
  s.transform.frequency_penalty = transform_.frequency_penalty;
  if (transform_.penalized()) s.transform.seen = transform_.seen;
  // Greedy needs the first; a top-k beyond kCandidates its k (up to kMaxCandidates).
  s.top = p_.temperature == 0.0f ? 1 : std::min(std::max(kCandidates, p_.top_k), kMaxCandidates);
  s.raw_top = top_logprobs;
  // The whole-vocabulary normaliser: when top-k keeps every token.
  s.sum = p_.temperature != 0.0f && !(p_.top_k > 0 && p_.top_k < vocab_);
  return s;
}

int32_t Sampler::sample(const float* logits) {
  work_.assign(logits, logits + vocab_);
  float* x = work_.data();
  apply_transform(x, vocab_, transform_, {});
  if (p_.temperature == 0.0f) {  // greedy: the lowest id among equal maxima
    int best = 0;
    for (int i = 1; i < vocab_; ++i)
      if (x[i] > x[best]) best = i;
    return best;
  }
  // Tokens sorted by x (descending, ties by id), cut by top-k.
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
  const double z = n < size_t(vocab_) ? 0.0 : exp_sum(x, vocab_, x[idx_[0]]);
  std::vector<float> v(n);
  for (size_t i = 0; i < n; ++i) v[i] = x[idx_[i]];
  const long i = pick(v.data(), n, z, z, rng_.uniform());
  return idx_[size_t(std::max(i, 0L))];  // every value known: always decided
}

std::optional<int32_t> Sampler::sample(const RowCandidates& c) {
  if (c.has_nan || c.top.empty() || !std::isfinite(c.top[0].value)) return std::nullopt;
  if (p_.temperature == 0.0f) return c.top[0].id;
  work_.resize(c.top.size());
  for (size_t i = 0; i < c.top.size(); ++i) work_[i] = c.top[i].value;
  double z_lo = c.sum * (1.0 - c.rel_error), z_hi = c.sum * (1.0 + c.rel_error);
  if (c.rel_error == 0.0) {
    z_lo = z_hi = c.sum;
  } else if (c.top.size() == size_t(vocab_)) {  // every token: the exact normaliser
    std::vector<float> x(static_cast<size_t>(vocab_));
    for (const Candidate& k : c.top) x[size_t(k.id)] = k.value;
    z_lo = z_hi = exp_sum(x.data(), vocab_, c.top[0].value);
  }
  Rng draw = rng_;
  const long i = pick(work_.data(), work_.size(), z_lo, z_hi, draw.uniform());
  if (i < 0) return std::nullopt;
  rng_ = draw;
  return c.top[size_t(i)].id;
}

long Sampler::pick(const float* v, size_t avail, double z_lo, double z_hi, double u) {
  const size_t vocab = size_t(vocab_);
  const size_t n = p_.top_k > 0 && size_t(p_.top_k) < vocab ? size_t(p_.top_k) : vocab;  // kept by top-k
  const size_t known = std::min(n, avail);
  w_.clear();
  auto w = [&](size_t i) {
    while (w_.size() <= i) w_.push_back(std::exp(double(v[w_.size()]) - v[0]));
    return w_[i];
  };
  if (n < vocab) {  // the normaliser of the top-k tokens
    if (n > avail) return -1;
    double z = 0.0;
    for (size_t i = 0; i < n; ++i) z += w(i);
    z_lo = z_hi = z;
  }
  // top-p: the shortest prefix whose mass reaches top_p (at least one token). The cut moves
  // monotonically with Z: it is certain when both ends of [z_lo, z_hi] give it.
  size_t keep = n;
  if (p_.top_p < 1.0f) {
    auto cut = [&](double z) -> size_t {  // 0: beyond the known values
      const double target = double(p_.top_p) * z;
      double cum = 0.0;
      for (size_t i = 0; i < known; ++i) {
        cum += w(i);
        if (cum >= target) return i + 1;
      }
      return known == n ? n : 0;
    };
    keep = cut(z_lo);
    if (keep == 0 || (z_hi != z_lo && cut(z_hi) != keep)) return -1;
  }
  // min-p: drop tokens below min_p times the most likely one (whose weight is 1).
  if (p_.min_p > 0.0f) {
    const double floor_w = double(p_.min_p);
    size_t k = 1;
    for (; k < keep; ++k) {
      if (k >= known) return -1;
      if (!(w(k) >= floor_w)) break;
    }
    keep = k;
  }
  // The draw: the first token where u·M minus the running weights goes below 0. It moves
  // monotonically with M as well.
  double m_lo = z_lo, m_hi = z_hi;
  if (keep < n) {
    double m = 0.0;
    for (size_t i = 0; i < keep; ++i) m += w(i);
    m_lo = m_hi = m;
  }
  auto draw = [&](double mass) -> long {
    double r = u * mass;
    for (size_t i = 0; i < keep; ++i) {
      if (i >= known) return -1;
      r -= w(i);
      if (r < 0) return long(i);
    }
    return long(keep) - 1;
  };
  const long a = draw(m_lo);
  if (a < 0 || (m_hi != m_lo && draw(m_hi) != a)) return -1;
  return a;
}

}  // namespace ost
