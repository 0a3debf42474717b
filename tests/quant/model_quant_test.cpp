// Quantized checkpoints of the seeded tiny model: `quantize_checkpoint` output loads through
// the name table, load-time quantization gives the same model, broken checkpoints list every
// problem, and the accuracy report (quant_report.h) on the fixture cases stays within bounds.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <map>
#include <regex>
#include <nlohmann/json.hpp>

#include "common/temp_dir.h"
#include "core/bf16.h"
#include "core/file_util.h"
#include "io/checkpoint.h"
#include "io/quantize_checkpoint.h"
#include "io/seeded.h"
#include "model/fixture.h"
#include "model/quant_report.h"
#include "model/runner.h"

namespace ost {
namespace {

using testing::TempDir;

// The bf16 tiny checkpoint and its int8 / fp8 / int4 versions (embedding table included, the
// default), and an fp8 version of the linears only (Qwen's published layout), written once per
// process.
struct Models {
  TempDir dir;
  std::string bf16 = dir / "bf16";
  std::string fp8_linears = dir / "fp8-linears";
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
      if (f == quant::Format::FP8) {
        q.out_dir = fp8_linears;
        q.quant.select.embeddings = false;
        auto l = quantize_checkpoint(q);
        EXPECT_TRUE(l.is_ok()) << l.message();
      }
    }
  }
};


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
  EXPECT_EQ(ck->get("model.language_model.layers.0.mlp.down_proj.weight_scale").dtype, DType::F16);
  EXPECT_EQ(cfg->model.quant.group_size, 32);
  // The embedding table is quantized by default; the vision tower and lm_head stay bf16.
  EXPECT_EQ(ck->get("model.language_model.embed_tokens.weight").dtype, DType::U8);
  EXPECT_NE(ck->find("model.language_model.embed_tokens.weight_zero"), nullptr);
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
  auto cases = testing::golden_eval_cases();
  auto rep = compare_runners(**a, **b, {cases[1]}, 4);
  ASSERT_TRUE(rep.is_ok()) << rep.message();
  EXPECT_EQ(rep->total.sq_err, 0.0);
}

// Qwen's published FP8 layout, written here without the quant or io modules: the safetensors
// header is parsed and written by hand, the e4m3 code of each weight is the nearest of the 255
// finite values (ties to the even code), and the scales are amax/448 per 128×128 block. The
// config gets Qwen's quantization_config (activation_scheme, fmt, quant_method,
// weight_block_size, modules_to_not_convert). With f32 scales the result must be the model our
// own quantizer writes, up to the rare weight whose w·(1/s) and w/s round to different codes;
// with bf16 scales (as the published checkpoints store them) it must load and stay as close to
// bf16 as FP8 does.
struct RawTensor {
  std::string dtype;
  std::vector<int64_t> shape;
  std::vector<uint8_t> bytes;
};

std::vector<std::pair<std::string, RawTensor>> read_raw_safetensors(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  uint64_t n = 0;
  f.read(reinterpret_cast<char*>(&n), 8);
  std::string header(n, '\0');
  f.read(header.data(), std::streamsize(n));
  std::vector<uint8_t> data((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  std::vector<std::pair<std::string, RawTensor>> out;
  const nlohmann::json h = nlohmann::json::parse(header);
  for (auto it = h.begin(); it != h.end(); ++it) {
    const std::string name = it.key();
    const nlohmann::json& v = it.value();
    if (name == "__metadata__" || !v.contains("dtype")) continue;
    RawTensor t;
    t.dtype = v["dtype"].get<std::string>();
    t.shape = v["shape"].get<std::vector<int64_t>>();
    const size_t b = v["data_offsets"][0].get<size_t>(), e = v["data_offsets"][1].get<size_t>();
    t.bytes.assign(data.begin() + std::ptrdiff_t(b), data.begin() + std::ptrdiff_t(e));
    out.emplace_back(name, std::move(t));
  }
  return out;
}

void write_raw_safetensors(const std::string& path, const std::vector<std::pair<std::string, RawTensor>>& ts) {
  nlohmann::json h = nlohmann::json::object();
  size_t off = 0;
  for (auto& [name, t] : ts) {
    h[name] = {{"dtype", t.dtype}, {"shape", t.shape}, {"data_offsets", {off, off + t.bytes.size()}}};
    off += t.bytes.size();
  }
  std::string hs = h.dump();
  while (hs.size() % 8) hs += ' ';
  std::ofstream f(path, std::ios::binary);
  const uint64_t n = hs.size();
  f.write(reinterpret_cast<const char*>(&n), 8);
  f.write(hs.data(), std::streamsize(hs.size()));
  for (auto& [name, t] : ts) f.write(reinterpret_cast<const char*>(t.bytes.data()), std::streamsize(t.bytes.size()));
}

float bf16_bits_to_float(uint16_t b) {
  const uint32_t u = uint32_t(b) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

// The finite e4m3fn values by code (0x00..0x7e positive), from the bit layout: 4 exponent bits
// (bias 7), 3 mantissa bits, subnormals at exponent 0.
std::vector<float> e4m3_positive_values() {
  std::vector<float> v;
  for (int c = 0; c < 0x7f; ++c) {
    const int e = c >> 3, m = c & 7;
    v.push_back(e == 0 ? std::ldexp(float(m) / 8.0f, -6) : std::ldexp(1.0f + float(m) / 8.0f, e - 7));
  }
  return v;
}

uint8_t nearest_e4m3(float x, const std::vector<float>& pos) {
  const float a = std::min(std::fabs(x), 448.0f);
  int best = 0;
  for (int c = 1; c < int(pos.size()); ++c) {
    const float d = std::fabs(pos[size_t(c)] - a), db = std::fabs(pos[size_t(best)] - a);
    if (d < db || (d == db && (c & 1) == 0)) best = c;
  }
  return uint8_t(best | (std::signbit(x) ? 0x80 : 0));
}

void write_published_fp8(const std::string& src, const std::string& dst, bool bf16_scales) {
  std::filesystem::create_directories(dst);
  for (auto& e : std::filesystem::directory_iterator(src))
    if (e.path().filename() != "model.safetensors" && e.path().filename() != "config.json")
      std::filesystem::copy(e.path(), std::filesystem::path(dst) / e.path().filename());
  const std::regex linear(R"(^model\.language_model\.layers\.\d+\.(self_attn\.[qkvo]_proj|mlp\.(gate|up|down)_proj)\.weight$)");
  const auto pos = e4m3_positive_values();
  std::vector<std::pair<std::string, RawTensor>> out;
  for (auto& [name, t] : read_raw_safetensors(src + "/model.safetensors")) {
    if (!std::regex_match(name, linear)) {
      out.emplace_back(name, t);
      continue;
    }
    ASSERT_EQ(t.dtype, "BF16");
    const int64_t R = t.shape[0], C = t.shape[1], B = 128, rb = (R + B - 1) / B, cb = (C + B - 1) / B;
    auto w = [&](int64_t r, int64_t c) {
      uint16_t b;
      std::memcpy(&b, t.bytes.data() + 2 * (r * C + c), 2);
      return bf16_bits_to_float(b);
    };
    RawTensor q{"F8_E4M3", {R, C}, std::vector<uint8_t>(size_t(R * C))};
    RawTensor sc{bf16_scales ? "BF16" : "F32", {rb, cb}, std::vector<uint8_t>(size_t(rb * cb) * (bf16_scales ? 2 : 4))};
    for (int64_t i = 0; i < rb; ++i)
      for (int64_t j = 0; j < cb; ++j) {
        float amax = 0.0f;
        for (int64_t r = i * B; r < std::min(R, i * B + B); ++r)
          for (int64_t c = j * B; c < std::min(C, j * B + B); ++c) amax = std::max(amax, std::fabs(w(r, c)));
        float s = amax > 0.0f ? amax / 448.0f : 1.0f;
        if (bf16_scales) {
          uint32_t u;
          std::memcpy(&u, &s, 4);
          u = (u + 0x7fffu + ((u >> 16) & 1u)) & 0xffff0000u;  // round to nearest even bf16
          std::memcpy(&s, &u, 4);
          const uint16_t hb = uint16_t(u >> 16);
          std::memcpy(sc.bytes.data() + 2 * (i * cb + j), &hb, 2);
        } else {
          std::memcpy(sc.bytes.data() + 4 * (i * cb + j), &s, 4);
        }
        for (int64_t r = i * B; r < std::min(R, i * B + B); ++r)
          for (int64_t c = j * B; c < std::min(C, j * B + B); ++c) q.bytes[size_t(r * C + c)] = nearest_e4m3(w(r, c) / s, pos);
      }
    out.emplace_back(name, std::move(q));
    out.emplace_back(name + "_scale_inv", std::move(sc));
  }
  write_raw_safetensors(dst + "/model.safetensors", out);
  std::ifstream cf(src + "/config.json");
  nlohmann::json cfg = nlohmann::json::parse(cf);
  cfg["quantization_config"] = {{"activation_scheme", "dynamic"},
                                {"fmt", "e4m3"},
                                {"quant_method", "fp8"},
                                {"weight_block_size", {128, 128}},
                                {"modules_to_not_convert", {"lm_head", "model.language_model.embed_tokens", "model.visual"}}};
  std::ofstream(dst + "/config.json") << cfg.dump(2);
}

TEST(QuantModel, QwenPublishedFp8LayoutLoads) {
  Models& m = Models::get();
  TempDir dir;
  write_published_fp8(m.bf16, dir / "f32", false);
  write_published_fp8(m.bf16, dir / "bf16", true);
  auto cfg = load_folder_configs(dir / "bf16");
  ASSERT_TRUE(cfg.is_ok()) << cfg.message();
  EXPECT_EQ(cfg->model.quant.format, quant::Format::FP8);
  EXPECT_EQ(cfg->model.quant.group_size, 128);
  // Codes: the same as our quantizer's (linears only, as published) but for rare rounding ties
  // of w/s against w·(1/s).
  auto ours = read_raw_safetensors(m.fp8_linears + "/model.safetensors");
  auto theirs = read_raw_safetensors(dir / "f32" + "/model.safetensors");
  std::map<std::string, const RawTensor*> by_name;
  for (auto& [n, t] : theirs) by_name[n] = &t;
  int64_t codes = 0, differ = 0, linears = 0;
  for (auto& [n, t] : ours) {
    auto it = by_name.find(n);
    ASSERT_NE(it, by_name.end()) << n;
    ASSERT_EQ(it->second->dtype, t.dtype) << n;
    ASSERT_EQ(it->second->shape, t.shape) << n;
    if (t.dtype == "F8_E4M3") {
      ++linears;
      for (size_t i = 0; i < t.bytes.size(); ++i) differ += t.bytes[i] != it->second->bytes[i];
      codes += int64_t(t.bytes.size());
    } else {
      EXPECT_EQ(it->second->bytes, t.bytes) << n;  // scales, and every tensor left bf16
    }
  }
  EXPECT_EQ(linears, 28);
  EXPECT_LE(double(differ), 1e-4 * double(codes)) << differ << " of " << codes;
  auto ref = load_cpu_runner(m.bf16);
  auto own = load_cpu_runner(m.fp8_linears);
  auto pub32 = load_cpu_runner(dir / "f32");
  auto pub16 = load_cpu_runner(dir / "bf16");
  ASSERT_TRUE(ref.is_ok() && own.is_ok()) << own.message();
  ASSERT_TRUE(pub32.is_ok()) << pub32.message();
  ASSERT_TRUE(pub16.is_ok()) << pub16.message();
  auto cases = testing::golden_eval_cases();
  auto same = compare_runners(**own, **pub32, {cases[1]}, 4);
  ASSERT_TRUE(same.is_ok()) << same.message();
  std::printf("published layout, f32 scales vs ours: rel L2 %.2e (%lld of %lld codes differ)\n",
              same->total.rel_l2(), (long long)differ, (long long)codes);
  EXPECT_LT(same->total.rel_l2(), 1e-2);
  auto acc = compare_runners(**ref, **pub16, cases, 16);
  ASSERT_TRUE(acc.is_ok()) << acc.message();
  std::printf("published layout, bf16 scales vs bf16 model: rel L2 %.4f, top-1 %.3f\n", acc->total.rel_l2(),
              acc->total.top1());
  EXPECT_LT(acc->total.rel_l2(), 0.15);
  EXPECT_GT(acc->total.top1(), 0.75);
}

// INT4 checkpoints written before the f16 scales (F32 weight_scale): each f16 scale tensor of
// ours rewritten as F32, once as the exact f16 values and once nudged by 2^-14 relative (under
// half an f16 step, as the older quantizer's unrounded scales are off the f16 grid). Both load,
// the scales are rounded to f16 at load, and the model is exactly ours.
void write_f32_scale_int4(const std::string& src, const std::string& dst, float nudge) {
  std::filesystem::create_directories(dst);
  for (auto& e : std::filesystem::directory_iterator(src))
    if (e.path().filename() != "model.safetensors" && e.path().filename() != "config.json")
      std::filesystem::copy(e.path(), std::filesystem::path(dst) / e.path().filename());
  std::vector<std::pair<std::string, RawTensor>> out;
  int converted = 0;
  for (auto& [name, t] : read_raw_safetensors(src + "/model.safetensors")) {
    if (!name.ends_with(".weight_scale")) {
      out.emplace_back(name, t);
      continue;
    }
    ASSERT_EQ(t.dtype, "F16") << name;
    RawTensor f{"F32", t.shape, std::vector<uint8_t>(t.bytes.size() * 2)};
    for (size_t i = 0; i < t.bytes.size() / 2; ++i) {
      uint16_t h;
      std::memcpy(&h, t.bytes.data() + 2 * i, 2);
      const float v = f16_to_f32(h) * nudge;
      std::memcpy(f.bytes.data() + 4 * i, &v, 4);
    }
    out.emplace_back(name, std::move(f));
    ++converted;
  }
  EXPECT_EQ(converted, 29);  // 28 linears and the token embedding table
  write_raw_safetensors(dst + "/model.safetensors", out);
  std::ifstream cf(src + "/config.json");
  nlohmann::json cfg = nlohmann::json::parse(cf);
  cfg["quantization_config"]["scale_dtype"] = "float32";
  std::ofstream(dst + "/config.json") << cfg.dump(2);
}

TEST(QuantModel, Int4F32ScaleCheckpointLoads) {
  Models& m = Models::get();
  TempDir dir;
  write_f32_scale_int4(m.path(quant::Format::INT4), dir / "exact", 1.0f);
  write_f32_scale_int4(m.path(quant::Format::INT4), dir / "nudged", 1.0f + 1.0f / 16384.0f);
  auto own = load_cpu_runner(m.path(quant::Format::INT4));
  ASSERT_TRUE(own.is_ok()) << own.message();
  auto cases = testing::golden_eval_cases();
  for (const char* v : {"exact", "nudged"}) {
    auto cfg = load_folder_configs(dir / v);
    ASSERT_TRUE(cfg.is_ok()) << cfg.message();
    auto ck = Checkpoint::open(dir / v, cfg->model);
    ASSERT_TRUE(ck.is_ok()) << ck.message();
    EXPECT_EQ(ck->get("model.language_model.layers.0.mlp.down_proj.weight_scale").dtype, DType::F32);
    auto old = load_cpu_runner(dir / v);
    ASSERT_TRUE(old.is_ok()) << old.message();
    auto rep = compare_runners(**own, **old, {cases[1]}, 4);
    ASSERT_TRUE(rep.is_ok()) << rep.message();
    EXPECT_EQ(rep->total.sq_err, 0.0) << v;
  }
}

// The accuracy report of every format on the fixture cases; prints the Markdown table.
TEST(QuantModel, AccuracyReport) {
  Models& m = Models::get();
  auto ref = load_cpu_runner(m.bf16);
  ASSERT_TRUE(ref.is_ok());
  auto cases = testing::golden_eval_cases();
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
