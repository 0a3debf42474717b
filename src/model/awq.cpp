#include "model/awq.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <nlohmann/json.hpp>

#include "backend/ops.h"
#include "core/bf16.h"
#include "io/checkpoint.h"
#include "quant/quant.h"

namespace ost {
namespace {

const char* const kDumpNames[kAwqInputs] = {"txt.attn_norm", "txt.ffn_norm", "txt.ffn_act"};

std::string layer_prefix(int l) { return "model.language_model.layers." + std::to_string(l) + "."; }

// A tensor of the checkpoint as f32 (BF16, F16 or F32 in the file).
std::vector<float> read_f32(const Checkpoint& ck, const std::string& name) {
  const TensorInfo& t = ck.get(name);
  const ops::WType wt = t.dtype == DType::BF16 ? ops::WType::BF16 : t.dtype == DType::F16 ? ops::WType::F16 : ops::WType::F32;
  std::vector<float> out(size_t(t.numel()));
  ops::weight_row_f32({wt, t.data, 1, t.numel()}, 0, out.data());
  return out;
}

float round_to(DType t, float v) { return t == DType::BF16 ? round_bf16(v) : t == DType::F16 ? round_f16(v) : v; }

// One group of linears sharing an input, and where its scales fold.
struct Group {
  std::vector<std::string> linears;  // stacked in this order
  std::string norm;                  // QKV, GateUp: the RMSNorm weight that takes 1/s
  std::string up;                    // Down: up_proj, whose rows take 1/s
};

Group group_of(int l, AwqInput g) {
  const std::string p = layer_prefix(l);
  switch (g) {
    case AwqInput::QKV:
      return {{p + "self_attn.q_proj.weight", p + "self_attn.k_proj.weight", p + "self_attn.v_proj.weight"},
              p + "input_layernorm.weight", ""};
    case AwqInput::GateUp:
      return {{p + "mlp.gate_proj.weight", p + "mlp.up_proj.weight"}, p + "post_attention_layernorm.weight", ""};
    case AwqInput::Down:
      break;
  }
  return {{p + "mlp.down_proj.weight"}, "", p + "mlp.up_proj.weight"};
}

// The scales s = m^α / sqrt(max·min) before the fold's rounding.
std::vector<float> raw_scales(const std::vector<float>& mean_abs, float alpha) {
  const float mx = *std::max_element(mean_abs.begin(), mean_abs.end());
  const float least = mx > 0.0f ? 1e-4f * mx : 1.0f;
  std::vector<float> s(mean_abs.size());
  float lo = INFINITY, hi = 0.0f;
  for (size_t j = 0; j < s.size(); ++j) {
    s[j] = alpha == 0.0f ? 1.0f : std::pow(std::max(mean_abs[j], least), alpha);
    lo = std::min(lo, s[j]);
    hi = std::max(hi, s[j]);
  }
  const float norm = std::sqrt(hi * lo);
  for (float& v : s) v /= norm;
  return s;
}

// The scales a norm fold really applies: s' = n / round(n / s) (1 where n is 0 or n / s does
// not round to a usable value); folded receives the rounded norm weight.
std::vector<float> norm_fold(const std::vector<float>& s, const std::vector<float>& n, DType dt,
                             std::vector<float>* folded) {
  std::vector<float> eff(s.size(), 1.0f);
  if (folded) *folded = n;
  for (size_t j = 0; j < s.size(); ++j) {
    if (n[j] == 0.0f) continue;
    const float r = round_to(dt, n[j] / s[j]);
    if (r == 0.0f || !std::isfinite(r) || !std::isfinite(n[j] / r)) continue;
    eff[j] = n[j] / r;
    if (folded) (*folded)[j] = r;
  }
  return eff;
}

}  // namespace

const char* awq_input_name(AwqInput g) {
  return g == AwqInput::QKV ? "q/k/v" : g == AwqInput::GateUp ? "gate/up" : "down";
}

std::vector<float> default_awq_alphas() {
  std::vector<float> a;
  for (int i = 0; i <= 20; ++i) a.push_back(float(i) / 20.0f);
  return a;
}

Result<AwqCalibration> collect_awq_inputs(ModelRunner& m, const std::vector<EvalCase>& cases, int64_t max_rows,
                                         const std::function<void(int done, int samples)>& progress) {
  if (cases.empty()) return make_error("calibration: no samples");
  if (max_rows < 1) return make_error("calibration: rows must be positive");
  const TextConfig& c = m.config().text;
  const int L = c.num_layers;
  const int64_t dims[kAwqInputs] = {c.hidden_size, c.hidden_size, c.intermediate_size};
  AwqCalibration cal;
  cal.samples = int(cases.size());
  for (const EvalCase& e : cases) cal.tokens += int64_t(e.ids.size());
  const int64_t stride = (cal.tokens + max_rows - 1) / max_rows;
  cal.rows = (cal.tokens + stride - 1) / stride;
  cal.layers.resize(size_t(L));
  std::vector<std::array<std::vector<double>, kAwqInputs>> sums(static_cast<size_t>(L));
  std::vector<std::array<int64_t, kAwqInputs>> seen(static_cast<size_t>(L));
  for (int l = 0; l < L; ++l)
    for (int g = 0; g < kAwqInputs; ++g) {
      sums[size_t(l)][size_t(g)].assign(size_t(dims[g]), 0.0);
      cal.layers[size_t(l)].rows[size_t(g)].reserve(size_t(cal.rows * dims[g]));
      seen[size_t(l)][size_t(g)] = 0;
    }
  m.set_dump([&](const std::string& name, int layer, const float* data, const std::vector<int64_t>& shape) {
    const int g = int(std::find(kDumpNames, kDumpNames + kAwqInputs, name) - kDumpNames);
    if (g == kAwqInputs || layer < 0 || layer >= L || shape.size() != 2 || shape[1] != dims[g]) return;
    const int64_t n = shape[0], d = shape[1];
    std::vector<double>& sum = sums[size_t(layer)][size_t(g)];
    std::vector<float>& rows = cal.layers[size_t(layer)].rows[size_t(g)];
    int64_t& s = seen[size_t(layer)][size_t(g)];
    for (int64_t i = 0; i < n; ++i, ++s) {
      const float* x = data + i * d;
      for (int64_t j = 0; j < d; ++j) sum[size_t(j)] += std::fabs(x[j]);
      if (s % stride == 0) rows.insert(rows.end(), x, x + d);
    }
  });
  for (size_t i = 0; i < cases.size(); ++i) {
    auto lg = prefill_case(m, cases[i], cases[i].ids, false);
    if (!lg) {
      m.set_dump({});
      return Error{"calibration " + cases[i].name + ": " + lg.message()};
    }
    if (progress) progress(int(i + 1), int(cases.size()));
  }
  m.set_dump({});
  for (int l = 0; l < L; ++l)
    for (int g = 0; g < kAwqInputs; ++g) {
      if (seen[size_t(l)][size_t(g)] != cal.tokens)
        return make_error("calibration: layer %d saw %lld %s inputs of %lld tokens", l,
                          (long long)seen[size_t(l)][size_t(g)], awq_input_name(AwqInput(g)), (long long)cal.tokens);
      std::vector<float>& mean = cal.layers[size_t(l)].mean_abs[size_t(g)];
      for (double v : sums[size_t(l)][size_t(g)]) mean.push_back(float(v / double(cal.tokens)));
    }
  return cal;
}

double awq_loss(const float* x, int64_t m, const float* w, int64_t out, int64_t in, const float* s, int group) {
  std::vector<float> ws(size_t(out * in));
  for (int64_t r = 0; r < out; ++r)
    for (int64_t c = 0; c < in; ++c) ws[size_t(r * in + c)] = w[r * in + c] * s[c];
  quant::QuantizedMatrix q;
  quant::resize_for(q, quant::Format::INT4, out, in, group);
  quant::quantize_rows(q, 0, out, ws.data());
  // The error matrix E = W − dequant(Q)·diag(1/s); the loss is ‖X·Eᵀ‖².
  const quant::QView qv = q.view();
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < out; ++r) {
    float* er = ws.data() + r * in;
    quant::dequant_segment(qv, r, 0, in, er);
    for (int64_t c = 0; c < in; ++c) er[c] = w[r * in + c] - er[c] / s[c];
  }
  std::vector<float> y(size_t(m * out));
  ops::matmul(x, m, {ops::WType::F32, ws.data(), out, in}, nullptr, y.data());
  double loss = 0.0;
  for (float v : y) loss += double(v) * double(v);
  return loss;
}

Result<AwqResult> search_awq_scales(const std::string& model_dir, const AwqCalibration& cal, const AwqOptions& opt) {
  if (std::find(opt.alphas.begin(), opt.alphas.end(), 0.0f) == opt.alphas.end())
    return make_error("awq: the α grid must include 0 (round-to-nearest)");
  auto cfg = load_folder_configs(model_dir);
  if (!cfg) return Error{cfg.message()};
  const ModelConfig& mc = cfg->model;
  if (mc.quant.format != quant::Format::None)
    return make_error("awq: %s is already quantized (%s)", model_dir.c_str(), quant::format_name(mc.quant.format));
  if (int(cal.layers.size()) != mc.text.num_layers)
    return make_error("awq: calibration of %zu layers for a model of %d", cal.layers.size(), mc.text.num_layers);
  auto ck = Checkpoint::open(model_dir, mc);
  if (!ck) return Error{ck.message()};
  AwqResult res;
  res.alphas = opt.alphas;
  res.samples = cal.samples;
  res.tokens = cal.tokens;
  res.rows = cal.rows;
  res.layers.resize(cal.layers.size());
  const int L = mc.text.num_layers;
  for (int l = 0; l < L; ++l) {
    for (int gi = 0; gi < kAwqInputs; ++gi) {
      const Group g = group_of(l, AwqInput(gi));
      std::vector<std::string> converted = g.linears;
      if (!g.up.empty()) converted.push_back(g.up);
      bool ok = true;
      for (const std::string& name : converted) {
        auto sel = quant::selected(name, opt.select, mc.tie_word_embeddings);
        if (!sel) return Error{sel.message()};
        const TensorInfo& t = ck->get(name);
        ok = ok && *sel && t.shape.size() == 2 &&
             quant::check_shape(quant::Format::INT4, name, t.shape[0], t.shape[1], opt.group_size).is_ok();
      }
      if (!ok) continue;
      // The group's matrices stacked: W f32 [Σ out, in].
      std::vector<float> w;
      for (const std::string& name : g.linears) {
        std::vector<float> m = read_f32(*ck, name);
        w.insert(w.end(), m.begin(), m.end());
      }
      const AwqLayerInputs& in = cal.layers[size_t(l)];
      const std::vector<float>& mean = in.mean_abs[size_t(gi)];
      const std::vector<float>& x = in.rows[size_t(gi)];
      const int64_t cols = int64_t(mean.size()), rows = int64_t(w.size()) / cols, m = int64_t(x.size()) / cols;
      std::vector<float> norm;
      DType norm_dt = DType::F32;
      if (!g.norm.empty()) {
        norm = read_f32(*ck, g.norm);
        norm_dt = ck->get(g.norm).dtype;
      }
      auto applied = [&](float alpha) {
        std::vector<float> s = raw_scales(mean, alpha);
        return g.norm.empty() ? s : norm_fold(s, norm, norm_dt, nullptr);
      };
      AwqChoice& ch = res.layers[size_t(l)][size_t(gi)];
      ch.searched = true;
      ch.loss_rtn = ch.loss = awq_loss(x.data(), m, w.data(), rows, cols, applied(0.0f).data(), opt.group_size);
      for (float a : opt.alphas) {
        if (a == 0.0f) continue;
        const double loss = awq_loss(x.data(), m, w.data(), rows, cols, applied(a).data(), opt.group_size);
        if (loss < ch.loss) {
          ch.loss = loss;
          ch.alpha = a;
        }
      }
      if (ch.alpha == 0.0f) continue;  // round-to-nearest: nothing to fold
      const std::vector<float> s = raw_scales(mean, ch.alpha);
      if (!g.norm.empty()) {
        std::vector<float> folded;
        const std::vector<float> eff = norm_fold(s, norm, norm_dt, &folded);
        res.edits[g.norm].values = std::move(folded);
        for (const std::string& name : g.linears) res.edits[name].col_scale = eff;
      } else {
        std::vector<float> inv(s.size());
        for (size_t j = 0; j < s.size(); ++j) inv[j] = 1.0f / s[j];
        res.edits[g.up].row_scale = std::move(inv);
        for (const std::string& name : g.linears) res.edits[name].col_scale = s;
      }
    }
    if (opt.progress) opt.progress(l + 1, L);
  }
  return res;
}

double AwqResult::loss_rtn() const {
  double t = 0.0;
  for (const auto& l : layers)
    for (const AwqChoice& c : l) t += c.loss_rtn;
  return t;
}

double AwqResult::loss() const {
  double t = 0.0;
  for (const auto& l : layers)
    for (const AwqChoice& c : l) t += c.loss;
  return t;
}

std::string AwqResult::to_markdown() const {
  char buf[256];
  std::snprintf(buf, sizeof buf,
                "## Activation-aware scales (AWQ)\n\nCalibration: %d samples, %lld tokens; the loss "
                "‖X·Wᵀ − X·Ŵᵀ‖² over %lld sampled rows per input, relative to round-to-nearest (α = 0).\n\n",
                samples, (long long)tokens, (long long)rows);
  std::string s = buf;
  s += "| layer | q/k/v α | q/k/v loss | gate/up α | gate/up loss | down α | down loss |\n";
  s += "|---|---|---|---|---|---|---|\n";
  for (size_t l = 0; l < layers.size(); ++l) {
    s += "| " + std::to_string(l) + " |";
    for (const AwqChoice& c : layers[l]) {
      if (!c.searched) std::snprintf(buf, sizeof buf, " - | - |");
      else std::snprintf(buf, sizeof buf, " %.2f | %.3f |", c.alpha, c.loss_rtn > 0 ? c.loss / c.loss_rtn : 1.0);
      s += buf;
    }
    s += "\n";
  }
  std::snprintf(buf, sizeof buf, "\nAll groups: loss %.4g vs %.4g round-to-nearest (%.3f). o_proj is not scaled.\n",
                loss(), loss_rtn(), loss_rtn() > 0 ? loss() / loss_rtn() : 1.0);
  return s + buf;
}

std::string AwqResult::config_json() const {
  auto round3 = [](float a) { return double(std::lround(double(a) * 1000.0)) / 1000.0; };
  nlohmann::ordered_json grid = nlohmann::ordered_json::array();
  for (float a : alphas) grid.push_back(round3(a));
  nlohmann::ordered_json alpha = nlohmann::ordered_json::array();
  for (const auto& l : layers) {
    nlohmann::ordered_json row = nlohmann::ordered_json::array();
    for (const AwqChoice& c : l) row.push_back(c.searched ? nlohmann::ordered_json(round3(c.alpha)) : nlohmann::ordered_json());
    alpha.push_back(row);
  }
  nlohmann::ordered_json j = {
      {"awq", true},
      {"awq_calibration", {{"samples", samples}, {"tokens", tokens}, {"loss_rows", rows}}},
      {"awq_alpha_grid", grid},
      {"awq_alpha", alpha},
      {"awq_scaled", "per layer [q/k/v (into input_layernorm), gate/up (into post_attention_layernorm), "
                     "down (into up_proj rows)]; null: not searched; o_proj not scaled"}};
  return j.dump();
}

}  // namespace ost
