// Activation-aware INT4 scales (model/awq.h) on the seeded tiny model, calibrated on the fixture
// cases: the search never loses to round-to-nearest on the calibration rows, the folded model
// (unquantized, f32 matrices) computes what the original computes, and the AWQ checkpoint loads
// like any INT4 checkpoint, holds exactly the folded weights the search scored, and is closer to
// the bf16 model than round-to-nearest.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "backend/ops.h"
#include "common/temp_dir.h"
#include "core/bf16.h"
#include "core/file_util.h"
#include "io/checkpoint.h"
#include "io/quantize_checkpoint.h"
#include "io/seeded.h"
#include "model/awq.h"
#include "model/fixture.h"
#include "model/runner.h"
#include "quant/quant.h"

namespace ost {
namespace {

using testing::TempDir;

constexpr int kGroup = 32;  // the tiny model's dims are small

// The bf16 tiny model, its calibration on the fixture cases, the search, and the AWQ and
// round-to-nearest INT4 checkpoints, made once per process.
struct Awq {
  TempDir dir;
  std::string bf16 = dir / "bf16", awq = dir / "awq", rtn = dir / "rtn";
  std::vector<EvalCase> cases = testing::golden_eval_cases();
  AwqCalibration cal;
  AwqResult res;
  static Awq& get() {
    static Awq a;
    return a;
  }

 private:
  Awq() {
    TestModelOptions o;
    o.config_dir = testing::kTinyDir;
    o.seed = testing::kTinySeed;
    o.out_dir = bf16;
    EXPECT_TRUE(write_test_model(o).is_ok());
    auto ref = load_cpu_runner(bf16);
    if (!ref) {
      ADD_FAILURE() << ref.message();
      return;
    }
    auto c = collect_awq_inputs(**ref, cases, 64);
    if (!c) {
      ADD_FAILURE() << c.message();
      return;
    }
    cal = std::move(*c);
    AwqOptions ao;
    ao.group_size = kGroup;
    auto r = search_awq_scales(bf16, cal, ao);
    if (!r) {
      ADD_FAILURE() << r.message();
      return;
    }
    res = std::move(*r);
    QuantizeOptions q;
    q.in_dir = bf16;
    q.quant.format = quant::Format::INT4;
    q.quant.group_size = kGroup;
    q.out_dir = rtn;
    EXPECT_TRUE(quantize_checkpoint(q).is_ok());
    q.out_dir = awq;
    q.edits = res.edits;
    q.quant_config_extra = res.config_json();
    auto s = quantize_checkpoint(q);
    EXPECT_TRUE(s.is_ok()) << s.message();
  }
};

std::vector<float> tensor_f32(const TensorInfo& t) {
  const ops::WType wt = t.dtype == DType::BF16 ? ops::WType::BF16 : t.dtype == DType::F16 ? ops::WType::F16 : ops::WType::F32;
  std::vector<float> out(size_t(t.numel()));
  ops::weight_row_f32({wt, t.data, 1, t.numel()}, 0, out.data());
  return out;
}

std::string layer(int l) { return "model.language_model.layers." + std::to_string(l) + "."; }

// ‖X·Aᵀ − Y·Bᵀ‖² for X, Y f32 [m, in] and A, B f32 [out, in].
double out_err(const std::vector<float>& x, const std::vector<float>& a, const std::vector<float>& y,
               const std::vector<float>& b, int64_t in) {
  const int64_t m = int64_t(x.size()) / in, out = int64_t(a.size()) / in;
  std::vector<float> p(size_t(m * out)), q(size_t(m * out));
  ops::matmul(x.data(), m, {ops::WType::F32, a.data(), out, in}, nullptr, p.data());
  ops::matmul(y.data(), m, {ops::WType::F32, b.data(), out, in}, nullptr, q.data());
  double e = 0.0;
  for (size_t i = 0; i < p.size(); ++i) e += (double(p[i]) - q[i]) * (double(p[i]) - q[i]);
  return e;
}

std::vector<float> dequant(const quant::QuantizedMatrix& qm) {
  std::vector<float> w(size_t(qm.rows * qm.cols));
  for (int64_t r = 0; r < qm.rows; ++r) quant::dequant_segment(qm.view(), r, 0, qm.cols, w.data() + r * qm.cols);
  return w;
}

TEST(Awq, CalibrationInputs) {
  Awq& a = Awq::get();
  int64_t tokens = 0;
  for (auto& c : a.cases) tokens += int64_t(c.ids.size());
  EXPECT_EQ(a.cal.samples, 3);
  EXPECT_EQ(a.cal.tokens, tokens);
  EXPECT_LE(a.cal.rows, 64);
  EXPECT_GE(a.cal.rows, 32);
  ASSERT_EQ(a.cal.layers.size(), 4u);
  const int64_t dims[kAwqInputs] = {64, 64, 160};
  for (auto& l : a.cal.layers)
    for (int g = 0; g < kAwqInputs; ++g) {
      ASSERT_EQ(int64_t(l.mean_abs[size_t(g)].size()), dims[g]);
      ASSERT_EQ(int64_t(l.rows[size_t(g)].size()), a.cal.rows * dims[g]);
      for (float v : l.mean_abs[size_t(g)]) EXPECT_GT(v, 0.0f);
    }
  // The first kept row of layer 0's q/k/v input is token 0's attention-norm output.
  auto ref = load_cpu_runner(a.bf16);
  ASSERT_TRUE(ref.is_ok());
  std::vector<float> first;
  (*ref)->set_dump([&](const std::string& name, int l, const float* d, const std::vector<int64_t>& shape) {
    if (name == "txt.attn_norm" && l == 0 && first.empty()) first.assign(d, d + shape[1]);
  });
  ASSERT_TRUE(prefill_case(**ref, a.cases[0], a.cases[0].ids, false).is_ok());
  std::vector<float> kept(a.cal.layers[0].rows[0].begin(), a.cal.layers[0].rows[0].begin() + 64);
  EXPECT_EQ(first, kept);
}

// Per group: the search's loss at α = 0 is plain round-to-nearest's, computed here from the
// quantizer directly, and the chosen α never does worse.
TEST(Awq, SearchNeverWorseThanRoundToNearest) {
  Awq& a = Awq::get();
  auto cfg = load_folder_configs(a.bf16);
  ASSERT_TRUE(cfg.is_ok());
  auto ck = Checkpoint::open(a.bf16, cfg->model);
  ASSERT_TRUE(ck.is_ok());
  const std::vector<std::vector<std::string>> groups = {
      {"self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"}, {"mlp.gate_proj", "mlp.up_proj"}, {"mlp.down_proj"}};
  int improved = 0;
  for (int l = 0; l < 4; ++l)
    for (int g = 0; g < kAwqInputs; ++g) {
      const AwqChoice& c = a.res.layers[size_t(l)][size_t(g)];
      ASSERT_TRUE(c.searched);
      std::vector<float> w;
      for (auto& n : groups[size_t(g)]) {
        auto m = tensor_f32(ck->get(layer(l) + n + ".weight"));
        w.insert(w.end(), m.begin(), m.end());
      }
      const int64_t in = int64_t(a.cal.layers[size_t(l)].mean_abs[size_t(g)].size());
      auto qm = quant::quantize(quant::Format::INT4, w.data(), int64_t(w.size()) / in, in, kGroup);
      ASSERT_TRUE(qm.is_ok());
      const auto& x = a.cal.layers[size_t(l)].rows[size_t(g)];
      const double rtn = out_err(x, w, x, dequant(*qm), in);
      EXPECT_NEAR(c.loss_rtn, rtn, 1e-4 * rtn) << l << " " << g;
      EXPECT_LE(c.loss, c.loss_rtn) << l << " " << g;
      if (c.alpha > 0.0f) {
        EXPECT_LT(c.loss, c.loss_rtn);
        ++improved;
      } else {
        EXPECT_EQ(c.loss, c.loss_rtn);
      }
    }
  std::printf("AWQ on the tiny model: %d of 12 groups scaled, calibration loss %.4f of round-to-nearest\n", improved,
              a.res.loss() / a.res.loss_rtn());
  EXPECT_GT(improved, 0);
  EXPECT_LT(a.res.loss(), a.res.loss_rtn());
}

// The folds alone (no quantization; the scaled matrices written as f32, the norms as the bf16
// values the checkpoint gets) leave the model's logits as they were, up to f32 rounding.
TEST(Awq, FoldKeepsTheFunction) {
  Awq& a = Awq::get();
  ASSERT_FALSE(a.res.edits.empty());
  TempDir dir;
  const std::string folded = dir / "folded";
  std::filesystem::create_directories(folded);
  for (auto& e : std::filesystem::directory_iterator(a.bf16))
    if (e.path().filename() != "model.safetensors") std::filesystem::copy(e.path(), std::filesystem::path(folded) / e.path().filename());
  auto src = SafetensorsFile::open(a.bf16 + "/model.safetensors");
  ASSERT_TRUE(src.is_ok());
  std::vector<TensorSpec> specs;
  std::map<std::string, std::vector<float>> f32;  // the folded matrices
  int norms = 0;
  for (auto& t : src->tensors()) {
    auto e = a.res.edits.find(t.name);
    if (e == a.res.edits.end() || t.shape.size() != 2) {
      specs.push_back({t.name, t.dtype, t.shape});
      continue;
    }
    auto w = tensor_f32(t);
    apply_scales(e->second, t.shape[0], t.shape[1], w.data());
    f32[t.name] = std::move(w);
    specs.push_back({t.name, DType::F32, t.shape});
  }
  auto fill = [&](const TensorSpec& s, int64_t first, int64_t count, uint8_t* out) {
    if (auto it = f32.find(s.name); it != f32.end()) {
      std::memcpy(out, it->second.data() + first, size_t(count) * 4);
      return;
    }
    const TensorInfo* t = nullptr;
    for (auto& x : src->tensors())
      if (x.name == s.name) t = &x;
    const size_t es = dtype_size(t->dtype);
    auto e = a.res.edits.find(s.name);
    if (e != a.res.edits.end() && !e->second.values.empty()) {
      ++norms;
      for (int64_t i = 0; i < count; ++i) {
        const bf16_t b = f32_to_bf16(e->second.values[size_t(first + i)]);
        std::memcpy(out + 2 * i, &b, 2);
      }
      return;
    }
    std::memcpy(out, t->data + size_t(first) * es, size_t(count) * es);
  };
  ASSERT_TRUE(write_safetensors(folded + "/model.safetensors", specs, fill).is_ok());
  EXPECT_GT(norms, 0);
  auto ref = load_cpu_runner(a.bf16);
  auto fo = load_cpu_runner(folded);
  ASSERT_TRUE(ref.is_ok());
  ASSERT_TRUE(fo.is_ok()) << fo.message();
  auto rep = compare_runners(**ref, **fo, a.cases, 8);
  ASSERT_TRUE(rep.is_ok()) << rep.message();
  std::printf("folded (unquantized) vs original: logits rel L2 %.2e\n", rep->total.rel_l2());
  EXPECT_LT(rep->total.rel_l2(), 2e-5);
  EXPECT_EQ(rep->total.top1(), 1.0);
}

// The written checkpoint: quantization_config records the search, the norms hold the folded
// values, each rescaled linear is exactly the quantizer's output for the scaled weights, and
// the q/k/v loss the checkpoint realises is the one the search chose.
TEST(Awq, CheckpointHoldsTheSearchedModel) {
  Awq& a = Awq::get();
  auto cfg = load_folder_configs(a.awq);
  ASSERT_TRUE(cfg.is_ok()) << cfg.message();
  EXPECT_EQ(cfg->model.quant.format, quant::Format::INT4);
  EXPECT_EQ(cfg->model.quant.group_size, kGroup);
  auto j = nlohmann::json::parse(*read_file(a.awq + "/config.json"))["quantization_config"];
  EXPECT_EQ(j["awq"], true);
  EXPECT_EQ(j["awq_calibration"]["samples"], 3);
  EXPECT_EQ(j["awq_calibration"]["tokens"], a.cal.tokens);
  ASSERT_EQ(j["awq_alpha"].size(), 4u);
  EXPECT_EQ(j["awq_alpha"][0].size(), 3u);
  EXPECT_EQ(j["awq_alpha_grid"].size(), 21u);

  auto ck = Checkpoint::open(a.awq, cfg->model);
  ASSERT_TRUE(ck.is_ok()) << ck.message();
  auto bcfg = load_folder_configs(a.bf16);
  auto bk = Checkpoint::open(a.bf16, bcfg->model);
  ASSERT_TRUE(bk.is_ok());
  for (const auto& [name, e] : a.res.edits) {
    const TensorInfo& t = ck->get(name);
    if (!e.values.empty()) {
      EXPECT_EQ(t.dtype, DType::BF16) << name;
      EXPECT_EQ(tensor_f32(t), e.values) << name;
      continue;
    }
    const TensorInfo& b = bk->get(name);
    auto w = tensor_f32(b);
    apply_scales(e, b.shape[0], b.shape[1], w.data());
    auto qm = quant::quantize(quant::Format::INT4, w.data(), b.shape[0], b.shape[1], kGroup);
    ASSERT_TRUE(qm.is_ok());
    ASSERT_EQ(t.dtype, DType::U8) << name;
    EXPECT_EQ(std::memcmp(t.data, qm->data.data(), qm->data.size()), 0) << name;
    const TensorInfo& sc = ck->get(name + "_scale");
    for (size_t i = 0; i < qm->scale.size(); ++i) {
      uint16_t h;
      std::memcpy(&h, sc.data + 2 * i, 2);
      ASSERT_EQ(f16_to_f32(h), qm->scale[i]) << name;
    }
  }
  // q/k/v: the runtime input is the original x times n'/n (the folded norm), the weights are the
  // stored INT4 ones.
  int checked = 0;
  for (int l = 0; l < 4; ++l) {
    const AwqChoice& c = a.res.layers[size_t(l)][0];
    const auto n = tensor_f32(bk->get(layer(l) + "input_layernorm.weight"));
    const auto nf = tensor_f32(ck->get(layer(l) + "input_layernorm.weight"));
    std::vector<float> w, wq;
    for (const char* p : {"q_proj", "k_proj", "v_proj"}) {
      const std::string name = layer(l) + "self_attn." + p + ".weight";
      auto m = tensor_f32(bk->get(name));
      w.insert(w.end(), m.begin(), m.end());
      const TensorInfo& q = ck->get(name);
      const int64_t rows = q.shape[0], cols = q.shape[1] * 2, ng = cols / kGroup;
      std::vector<float> sc(size_t(rows * ng));
      const TensorInfo& st = ck->get(name + "_scale");
      for (size_t i = 0; i < sc.size(); ++i) {
        uint16_t h;
        std::memcpy(&h, st.data + 2 * i, 2);
        sc[i] = f16_to_f32(h);
      }
      quant::QView v{quant::Format::INT4, q.data, sc.data(), ck->get(name + "_zero").data, rows, cols, kGroup};
      std::vector<float> d(size_t(rows * cols));
      for (int64_t r = 0; r < rows; ++r) quant::dequant_segment(v, r, 0, cols, d.data() + r * cols);
      wq.insert(wq.end(), d.begin(), d.end());
    }
    const auto& x = a.cal.layers[size_t(l)].rows[0];
    std::vector<float> xf(x.size());
    for (size_t i = 0; i < x.size(); ++i) xf[i] = x[i] * (nf[i % 64] / n[i % 64]);
    const double loss = out_err(x, w, xf, wq, 64);
    EXPECT_NEAR(loss, c.loss, 1e-3 * c.loss) << l;
    checked += c.alpha > 0.0f;
  }
  EXPECT_GT(checked, 0);
}

// Loaded like any INT4 checkpoint, the AWQ model is closer to the bf16 one than
// round-to-nearest on the calibration inputs.
TEST(Awq, CloserToBf16ThanRoundToNearest) {
  Awq& a = Awq::get();
  auto ref = load_cpu_runner(a.bf16);
  auto awq = load_cpu_runner(a.awq);
  auto rtn = load_cpu_runner(a.rtn);
  ASSERT_TRUE(ref.is_ok());
  ASSERT_TRUE(awq.is_ok()) << awq.message();
  ASSERT_TRUE(rtn.is_ok()) << rtn.message();
  auto ra = compare_runners(**ref, **awq, a.cases, 16);
  auto rr = compare_runners(**ref, **rtn, a.cases, 16);
  ASSERT_TRUE(ra.is_ok() && rr.is_ok());
  std::printf("%s\n%s\n%s", rr->to_markdown("int4 round-to-nearest vs bf16, qwen3vl-tiny").c_str(),
              ra->to_markdown("int4 AWQ vs bf16, qwen3vl-tiny").c_str(), a.res.to_markdown().c_str());
  EXPECT_LT(ra->total.rel_l2(), rr->total.rel_l2());
  EXPECT_LT(ra->total.kl_mean(), rr->total.kl_mean());
}

TEST(Awq, Errors) {
  Awq& a = Awq::get();
  AwqOptions ao;
  ao.group_size = kGroup;
  ao.alphas = {0.5f, 1.0f};
  auto r = search_awq_scales(a.bf16, a.cal, ao);
  ASSERT_FALSE(r.is_ok());
  EXPECT_NE(r.message().find("must include 0"), std::string::npos) << r.message();
  auto q = search_awq_scales(a.rtn, a.cal, {});
  ASSERT_FALSE(q.is_ok());
  EXPECT_NE(q.message().find("already quantized"), std::string::npos) << q.message();
  auto ref = load_cpu_runner(a.bf16);
  ASSERT_TRUE(ref.is_ok());
  EXPECT_FALSE(collect_awq_inputs(**ref, {}, 64).is_ok());
  // Edits the writer cannot apply are refused before anything is written.
  QuantizeOptions qo;
  qo.in_dir = a.bf16;
  qo.quant.format = quant::Format::INT4;
  qo.quant.group_size = kGroup;
  TempDir out;
  qo.out_dir = out / "x";
  qo.edits["model.language_model.layers.0.input_layernorm.weight"].values = std::vector<float>(64, 1.0f + 1e-3f);
  qo.edits["model.language_model.norm.weight"].col_scale = {1.0f};
  qo.edits["nope.weight"].values = {1.0f};
  auto s = quantize_checkpoint(qo);
  ASSERT_FALSE(s.is_ok());
  EXPECT_NE(s.message().find("input_layernorm.weight: a new value is not exact in BF16"), std::string::npos)
      << s.message();
  EXPECT_NE(s.message().find("norm.weight: scales fold only into a matrix that is converted"), std::string::npos);
  EXPECT_NE(s.message().find("nope.weight: no such tensor"), std::string::npos);
  EXPECT_FALSE(std::filesystem::exists(out / "x/model.safetensors"));
}

}  // namespace
}  // namespace ost
