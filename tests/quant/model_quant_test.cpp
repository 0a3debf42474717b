// Quantized checkpoints of the seeded tiny model: `quantize_checkpoint` output loads through
// the name table, load-time quantization gives the same model, broken checkpoints list every
// problem, and the accuracy report (quant_report.h) on the fixture cases stays within bounds.
#include <gtest/gtest.h>

#include <cstdio>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "common/temp_dir.h"
#include "core/file_util.h"
#include "io/checkpoint.h"
#include "io/quantize_checkpoint.h"
#include "io/seeded.h"
#include "model/fixture.h"
#include "model/quant_report.h"
#include "model/runner.h"

namespace ost {
namespace {

using testing::Golden;
using testing::TempDir;

// The bf16 tiny checkpoint and its int8 / fp8 / int4 versions, written once per process.
struct Models {
  TempDir dir;
  std::string bf16 = dir / "bf16";
  std::string path(quant::Format f) const { return dir / quant::format_name(f); }
  static Models& get() {
    static Models m;
    return m;
  }

 private:
  Models() {
    TestModelOptions o;
    o.config_dir = testing::kTinyDir;
    o.seed = testing::kTinySeed;
    o.out_dir = bf16;
    EXPECT_TRUE(write_test_model(o).is_ok());
    for (auto f : {quant::Format::INT8, quant::Format::FP8, quant::Format::INT4}) {
      QuantizeOptions q;
      q.in_dir = bf16;
      q.out_dir = path(f);
      q.quant.format = f;
      q.quant.group_size = f == quant::Format::FP8 ? 128 : 32;  // tiny dims are small
      auto s = quantize_checkpoint(q);
      EXPECT_TRUE(s.is_ok()) << s.message();
    }
  }
};

std::vector<EvalCase> golden_cases() {
  Golden& g = Golden::get();
  std::vector<EvalCase> cases;
  for (const char* name : testing::kCases) {
    EvalCase c;
    c.name = name;
    c.ids = g.ids(name);
    c.grid_thw = g.grids(name);
    if (g.has(std::string(name) + ".pixel_values")) {
      c.pixel_values = g.f32(std::string(name) + ".pixel_values");
      c.num_patches = g.tensor(std::string(name) + ".pixel_values").shape[0];
    }
    cases.push_back(std::move(c));
  }
  return cases;
}

TEST(QuantModel, WrittenConfigAndTensors) {
  Models& m = Models::get();
  auto cfg = load_folder_configs(m.path(quant::Format::INT4));
  ASSERT_TRUE(cfg.is_ok()) << cfg.message();
  EXPECT_EQ(cfg->model.quant.format, quant::Format::INT4);
  EXPECT_EQ(cfg->model.quant.group_size, 32);
  auto ck = Checkpoint::open(m.path(quant::Format::INT4), cfg->model);
  ASSERT_TRUE(ck.is_ok()) << ck.message();
  const auto* q = ck->find("model.language_model.layers.0.mlp.down_proj.weight");
  ASSERT_NE(q, nullptr);
  EXPECT_EQ(q->dtype, DType::U8);
  EXPECT_NE(ck->find("model.language_model.layers.0.mlp.down_proj.weight_zero"), nullptr);
  // The vision tower and lm_head stay bf16 by default.
  EXPECT_EQ(ck->get("model.visual.blocks.0.attn.qkv.weight").dtype, DType::BF16);
  if (const auto* h = ck->find("lm_head.weight")) EXPECT_EQ(h->dtype, DType::BF16);
  auto fp8 = load_folder_configs(m.path(quant::Format::FP8));
  ASSERT_TRUE(fp8.is_ok());
  EXPECT_EQ(fp8->model.quant.format, quant::Format::FP8);
  EXPECT_EQ(fp8->model.quant.group_size, 128);
}

TEST(QuantModel, BrokenCheckpointListsEveryProblem) {
  Models& m = Models::get();
  TempDir bad;
  const std::string src = m.path(quant::Format::INT8);
  for (auto& e : std::filesystem::directory_iterator(src))
    if (e.path().filename() != "model.safetensors") std::filesystem::copy(e.path(), bad / e.path().filename().string());
  // Rewrite the weights without two scale tensors.
  auto f = SafetensorsFile::open(src + "/model.safetensors");
  ASSERT_TRUE(f.is_ok());
  std::vector<TensorSpec> specs;
  for (auto& t : f->tensors())
    if (t.name != "model.language_model.layers.0.self_attn.q_proj.weight_scale" &&
        t.name != "model.language_model.layers.1.mlp.up_proj.weight_scale")
      specs.push_back({t.name, t.dtype, t.shape});
  ASSERT_TRUE(write_safetensors(bad / "model.safetensors", specs,
                                [&](const TensorSpec& s, int64_t first, int64_t count, uint8_t* out) {
                                  for (auto& t : f->tensors())
                                    if (t.name == s.name)
                                      std::memcpy(out, t.data + first * dtype_size(t.dtype), count * dtype_size(t.dtype));
                                })
                  .is_ok());
  auto r = load_cpu_runner(bad.path());
  ASSERT_FALSE(r.is_ok());
  EXPECT_NE(r.message().find("missing model.language_model.layers.0.self_attn.q_proj.weight_scale"), std::string::npos)
      << r.message();
  EXPECT_NE(r.message().find("missing model.language_model.layers.1.mlp.up_proj.weight_scale"), std::string::npos);
}

TEST(QuantModel, GroupNotDividingIsAClearError) {
  Models& m = Models::get();
  TempDir out;
  QuantizeOptions q;
  q.in_dir = m.bf16;
  q.out_dir = out / "x";
  q.quant.format = quant::Format::INT4;
  q.quant.group_size = 1000;
  auto s = quantize_checkpoint(q);
  ASSERT_FALSE(s.is_ok());
  EXPECT_NE(s.message().find("not divisible by the int4 group size 1000"), std::string::npos) << s.message();
  EXPECT_FALSE(std::filesystem::exists(out / "x/model.safetensors"));
}

TEST(QuantModel, LoadTimeQuantizationEqualsWrittenCheckpoint) {
  Models& m = Models::get();
  quant::QuantConfig qc;
  qc.format = quant::Format::INT8;
  auto a = load_cpu_runner(m.bf16, qc);
  auto b = load_cpu_runner(m.path(quant::Format::INT8));
  ASSERT_TRUE(a.is_ok()) << a.message();
  ASSERT_TRUE(b.is_ok()) << b.message();
  auto cases = golden_cases();
  auto rep = compare_runners(**a, **b, {cases[1]}, 4);
  ASSERT_TRUE(rep.is_ok()) << rep.message();
  EXPECT_EQ(rep->total.sq_err, 0.0);
}

// The accuracy report of every format on the fixture cases; prints the Markdown table.
TEST(QuantModel, AccuracyReport) {
  Models& m = Models::get();
  auto ref = load_cpu_runner(m.bf16);
  ASSERT_TRUE(ref.is_ok());
  auto cases = golden_cases();
  struct Bound {
    quant::Format f;
    double rel_l2, kl, top1;
  };
  for (Bound b : {Bound{quant::Format::INT8, 0.03, 1e-3, 0.95}, Bound{quant::Format::FP8, 0.15, 0.02, 0.75},
                  Bound{quant::Format::INT4, 0.35, 0.08, 0.5}}) {
    auto q = load_cpu_runner(m.path(b.f));
    ASSERT_TRUE(q.is_ok()) << q.message();
    auto rep = compare_runners(**ref, **q, cases, 16);
    ASSERT_TRUE(rep.is_ok()) << rep.message();
    std::printf("%s\n", rep->to_markdown(std::string(quant::format_name(b.f)) + " vs bf16, qwen3vl-tiny").c_str());
    const LogitStats& t = rep->total;
    EXPECT_LT(t.rel_l2(), b.rel_l2) << quant::format_name(b.f);
    EXPECT_LT(t.kl_mean(), b.kl) << quant::format_name(b.f);
    EXPECT_GT(t.top1(), b.top1) << quant::format_name(b.f);
    if (t.confident > 0) EXPECT_GE(t.top1_confident(), b.top1) << quant::format_name(b.f);
    ASSERT_EQ(rep->layer_rel_l2.size(), size_t(q->get()->config().text.num_layers));
    for (double e : rep->layer_rel_l2) EXPECT_GT(e, 0.0);
  }
}

TEST(QuantReport, CompareLogitsBasics) {
  const float ref[2][3] = {{3.0f, 1.0f, 0.0f}, {0.0f, 0.5f, 0.2f}};
  const float same[2][3] = {{3.0f, 1.0f, 0.0f}, {0.0f, 0.5f, 0.2f}};
  const float flip[2][3] = {{3.0f, 1.0f, 0.0f}, {0.0f, 0.1f, 0.6f}};
  LogitStats a, b;
  compare_logits(&ref[0][0], &same[0][0], 2, 3, 1.0f, a);
  EXPECT_EQ(a.rel_l2(), 0.0);
  EXPECT_NEAR(a.kl_mean(), 0.0, 1e-12);
  EXPECT_EQ(a.top1(), 1.0);
  EXPECT_EQ(a.confident, 1);  // only row 0 leads by more than 1 logit
  compare_logits(&ref[0][0], &flip[0][0], 2, 3, 1.0f, b);
  EXPECT_EQ(b.top1_agree, 1);
  EXPECT_EQ(b.confident_agree, 1);
  EXPECT_GT(b.kl_max, 0.0);
}

}  // namespace
}  // namespace ost
