#include "model/quant_report.h"

#include <algorithm>
#include <cmath>
#include <cstdio>

namespace ost {

double LogitStats::rel_l2() const { return sq_ref > 0 ? std::sqrt(sq_err / sq_ref) : 0.0; }

void LogitStats::add(const LogitStats& o) {
  sq_err += o.sq_err;
  sq_ref += o.sq_ref;
  kl_sum += o.kl_sum;
  kl_max = std::max(kl_max, o.kl_max);
  positions += o.positions;
  top1_agree += o.top1_agree;
  confident += o.confident;
  confident_agree += o.confident_agree;
}

void compare_logits(const float* ref, const float* q, int64_t n, int64_t vocab, float margin, LogitStats& s) {
  for (int64_t i = 0; i < n; ++i) {
    const float* a = ref + i * vocab;
    const float* b = q + i * vocab;
    int64_t ia = 0, ib = 0;
    double ma = a[0], mb = b[0];
    for (int64_t j = 0; j < vocab; ++j) {
      s.sq_err += double(a[j] - b[j]) * double(a[j] - b[j]);
      s.sq_ref += double(a[j]) * a[j];
      if (a[j] > ma) ma = a[j], ia = j;
      if (b[j] > mb) mb = b[j], ib = j;
    }
    double second = -INFINITY;
    for (int64_t j = 0; j < vocab; ++j)
      if (j != ia) second = std::max(second, double(a[j]));
    // log-softmax of both, then KL(ref ‖ q) = Σ p_ref (log p_ref − log p_q).
    double za = 0, zb = 0;
    for (int64_t j = 0; j < vocab; ++j) {
      za += std::exp(double(a[j]) - ma);
      zb += std::exp(double(b[j]) - mb);
    }
    const double la = ma + std::log(za), lb = mb + std::log(zb);
    double kl = 0;
    for (int64_t j = 0; j < vocab; ++j) {
      const double lpa = a[j] - la, lpb = b[j] - lb;
      kl += std::exp(lpa) * (lpa - lpb);
    }
    kl = std::max(kl, 0.0);
    s.kl_sum += kl;
    s.kl_max = std::max(s.kl_max, kl);
    ++s.positions;
    s.top1_agree += ia == ib;
    if (ma - second > margin) {
      ++s.confident;
      s.confident_agree += ia == ib;
    }
  }
}

Result<std::vector<float>> prefill_case(ModelRunner& m, const EvalCase& c, const std::vector<int32_t>& ids,
                                        bool all_logits, int64_t extra_capacity, std::unique_ptr<SequenceState>* seq) {
  VisionOutput vis;
  if (!c.pixel_values.empty()) {
    VisionInput in{c.pixel_values.data(), c.num_patches, c.grid_thw};
    auto v = m.encode_images(in);
    if (!v) return Error{v.message()};
    vis = std::move(*v);
  }
  auto pos = compute_mrope_positions(ids, c.grid_thw, m.config());
  if (!pos) return Error{pos.message()};
  auto s = m.new_sequence(int64_t(ids.size()) + extra_capacity);
  if (!s) return Error{s.message()};
  auto lg = m.prefill(**s, ids, *pos, c.pixel_values.empty() ? nullptr : &vis, all_logits);
  if (seq) *seq = std::move(*s);
  return lg;
}

namespace {

// Teacher-forced pass over ids: all logits, and the per-layer outputs (chunks appended).
struct Pass {
  std::vector<float> logits;
  std::vector<std::vector<float>> layers;
};

Result<Pass> run_pass(ModelRunner& m, const EvalCase& c, const std::vector<int32_t>& ids) {
  Pass p;
  p.layers.resize(size_t(m.config().text.num_layers));
  m.set_dump([&](const std::string& name, int layer, const float* data, const std::vector<int64_t>& shape) {
    if (name != "txt.layer_out" || layer < 0 || size_t(layer) >= p.layers.size()) return;
    int64_t n = 1;
    for (auto d : shape) n *= d;
    p.layers[size_t(layer)].insert(p.layers[size_t(layer)].end(), data, data + n);
  });
  auto lg = prefill_case(m, c, ids, true);
  m.set_dump({});
  if (!lg) return Error{lg.message()};
  p.logits = std::move(*lg);
  return p;
}

// The reference's greedy continuation of the prompt.
Result<std::vector<int32_t>> continue_greedy(ModelRunner& m, const EvalCase& c, int n) {
  std::vector<int32_t> ids = c.ids;
  if (n <= 0) return ids;
  std::unique_ptr<SequenceState> seq;
  auto lg = prefill_case(m, c, ids, false, n + 1, &seq);
  if (!lg) return Error{lg.message()};
  const int64_t V = m.config().text.vocab_size;
  for (int i = 0; i < n; ++i) {
    const int32_t next = int32_t(std::max_element(lg->begin(), lg->begin() + V) - lg->begin());
    ids.push_back(next);
    if (i + 1 == n) break;
    lg = m.decode(*seq, next);
    if (!lg) return Error{lg.message()};
  }
  return ids;
}

}  // namespace

Result<QuantReport> compare_runners(ModelRunner& ref, ModelRunner& q, const std::vector<EvalCase>& cases,
                                    int continuation, float margin) {
  QuantReport rep;
  const int L = ref.config().text.num_layers;
  const int64_t V = ref.config().text.vocab_size;
  std::vector<double> lerr(static_cast<size_t>(L), 0.0), lref(static_cast<size_t>(L), 0.0);
  for (const EvalCase& c : cases) {
    auto ids = continue_greedy(ref, c, continuation);
    if (!ids) return Error{c.name + ": " + ids.message()};
    auto a = run_pass(ref, c, *ids);
    if (!a) return Error{c.name + ": " + a.message()};
    auto b = run_pass(q, c, *ids);
    if (!b) return Error{c.name + ": " + b.message()};
    QuantReport::Case rc{c.name, int64_t(ids->size()), {}};
    compare_logits(a->logits.data(), b->logits.data(), int64_t(ids->size()), V, margin, rc.stats);
    rep.total.add(rc.stats);
    rep.cases.push_back(rc);
    for (int l = 0; l < L; ++l) {
      const auto &x = a->layers[size_t(l)], &y = b->layers[size_t(l)];
      for (size_t i = 0; i < std::min(x.size(), y.size()); ++i) {
        lerr[size_t(l)] += double(x[i] - y[i]) * double(x[i] - y[i]);
        lref[size_t(l)] += double(x[i]) * x[i];
      }
    }
  }
  for (int l = 0; l < L; ++l)
    rep.layer_rel_l2.push_back(lref[size_t(l)] > 0 ? std::sqrt(lerr[size_t(l)] / lref[size_t(l)]) : 0.0);
  return rep;
}

std::string QuantReport::to_markdown(const std::string& title) const {
  std::string s = "## " + title + "\n\n";
  s += "| case | tokens | logits rel L2 | KL mean | KL max | top-1 agree | top-1 agree (margin > 1) |\n";
  s += "|---|---|---|---|---|---|---|\n";
  char buf[512];
  auto row = [&](const std::string& name, int64_t tokens, const LogitStats& st) {
    std::snprintf(buf, sizeof buf, "| %s | %lld | %.4f | %.5f | %.5f | %.1f%% (%lld/%lld) | %.1f%% (%lld/%lld) |\n",
                  name.c_str(), (long long)tokens, st.rel_l2(), st.kl_mean(), st.kl_max, 100 * st.top1(),
                  (long long)st.top1_agree, (long long)st.positions, 100 * st.top1_confident(),
                  (long long)st.confident_agree, (long long)st.confident);
    s += buf;
  };
  for (auto& c : cases) row(c.name, c.tokens, c.stats);
  row("**all**", total.positions, total);
  s += "\nPer decoder layer, relative L2 of the layer output (txt.layer_out):\n\n| layer | rel L2 |\n|---|---|\n";
  for (size_t l = 0; l < layer_rel_l2.size(); ++l) {
    std::snprintf(buf, sizeof buf, "| %zu | %.4f |\n", l, layer_rel_l2[l]);
    s += buf;
  }
  return s;
}

}  // namespace ost
