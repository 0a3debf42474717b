// Quantized token-embedding tables: `quantize_checkpoint` writes embed_tokens in the checkpoint's
// format (exactly what quant::quantize gives for the bf16 table), the loader reads it back by
// dtype, the lookup gives the dequantized rows rounded to bf16, the summary counts the table,
// --no-quantize-embeddings keeps it bf16, a table tied to the lm_head follows the lm_head, and
// load-time quantization gives the same model as the written checkpoint, and a quantized table
// is exactly the bf16 table of its rounded dequantized values.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <random>

#include "common/temp_dir.h"
#include "core/bf16.h"
#include "core/file_util.h"
#include "io/checkpoint.h"
#include "io/quantize_checkpoint.h"
#include "io/seeded.h"
#include "model/fixture.h"
#include "model/quant_report.h"
#include "model/runner.h"
#include "model/weights.h"
#include "quant/quant.h"

namespace ost {
namespace {

using testing::Golden;
using testing::TempDir;

const std::string kEmbed = "model.language_model.embed_tokens.weight";

int group_for(quant::Format f) { return f == quant::Format::FP8 ? 128 : 32; }  // the tiny model's 64 inputs

// The bf16 tiny checkpoint (and a tied-embeddings variant), written once per process.
struct Bf16Models {
  TempDir dir;
  std::string plain = dir / "bf16", tied = dir / "tied", tied_cfg = dir / "tied-config";
  static Bf16Models& get() {
    static Bf16Models m;
    return m;
  }

 private:
  Bf16Models() {
    TestModelOptions o;
    o.config_dir = testing::kTinyDir;
    o.seed = testing::kTinySeed;
    o.out_dir = plain;
    EXPECT_TRUE(write_test_model(o).is_ok());
    auto j = nlohmann::json::parse(*read_file(testing::kTinyDir + "/config.json"));
    j["tie_word_embeddings"] = true;
    j["text_config"]["tie_word_embeddings"] = true;
    std::filesystem::create_directories(tied_cfg);
    EXPECT_TRUE(write_file(tied_cfg + "/config.json", j.dump(2)).is_ok());
    o.config_dir = tied_cfg;
    o.out_dir = tied;
    EXPECT_TRUE(write_test_model(o).is_ok());
  }
};

Result<QuantizeSummary> quantize_to(const std::string& in, const std::string& out, quant::Format f,
                                    const quant::SelectOptions& sel = {}) {
  QuantizeOptions q;
  q.in_dir = in;
  q.out_dir = out;
  q.quant.format = f;
  q.quant.group_size = group_for(f);
  q.quant.select = sel;
  return quantize_checkpoint(q);
}

// The bf16 table of a checkpoint as f32 [vocab, hidden].
std::vector<float> table_f32(const std::string& dir, int64_t& rows, int64_t& cols) {
  auto w = load_weights(dir, load_folder_configs(dir)->model);
  EXPECT_TRUE(w.is_ok()) << w.message();
  const ops::WeightView& e = (*w)->text.embed;
  EXPECT_EQ(e.dtype, ops::WType::BF16);
  rows = e.rows;
  cols = e.cols;
  std::vector<float> f(size_t(rows * cols));
  for (int64_t r = 0; r < rows; ++r) ops::weight_row_f32(e, r, f.data() + r * cols);
  return f;
}

std::vector<int32_t> lookup_ids(int64_t vocab) {
  std::vector<int32_t> ids = {0, 1, int32_t(vocab - 1), 151644, 872, 0, int32_t(vocab - 1)};
  std::mt19937 rng(3);
  while (ids.size() < 300) ids.push_back(int32_t(rng() % uint32_t(vocab)));
  return ids;
}

ops::WType wtype(quant::Format f) {
  return f == quant::Format::INT8  ? ops::WType::INT8
         : f == quant::Format::FP8 ? ops::WType::FP8
                                   : ops::WType::INT4;
}

TEST(EmbedQuant, WrittenTableIsOwnQuantizationAndLookupDequantizes) {
  Bf16Models& m = Bf16Models::get();
  int64_t V = 0, H = 0;
  const std::vector<float> src = table_f32(m.plain, V, H);
  for (auto f : {quant::Format::INT8, quant::Format::FP8, quant::Format::INT4}) {
    SCOPED_TRACE(quant::format_name(f));
    TempDir out;
    auto sum = quantize_to(m.plain, out / "q", f);
    ASSERT_TRUE(sum.is_ok()) << sum.message();
    EXPECT_NE(std::find(sum->quantized.begin(), sum->quantized.end(), kEmbed), sum->quantized.end());
    auto ref = quant::quantize(f, src.data(), V, H, group_for(f));
    ASSERT_TRUE(ref.is_ok()) << ref.message();

    // The stored tensors: the codes, scales (and zeros) of quant::quantize.
    auto cfg = load_folder_configs(out / "q");
    ASSERT_TRUE(cfg.is_ok()) << cfg.message();
    auto ck = Checkpoint::open(out / "q", cfg->model);
    ASSERT_TRUE(ck.is_ok()) << ck.message();
    const TensorInfo& t = ck->get(kEmbed);
    EXPECT_EQ(t.dtype, quant_dtype(f));
    ASSERT_EQ(t.nbytes, ref->data.size());
    EXPECT_TRUE(std::equal(ref->data.begin(), ref->data.end(), t.data));
    const TensorInfo* sc = ck->find(kEmbed + (f == quant::Format::FP8 ? "_scale_inv" : "_scale"));
    ASSERT_NE(sc, nullptr);
    if (f == quant::Format::INT4) {  // f16 group scales; ref holds their f32 values
      ASSERT_EQ(sc->dtype, DType::F16);
      ASSERT_EQ(sc->nbytes, ref->scale.size() * 2);
      for (size_t i = 0; i < ref->scale.size(); ++i) {
        uint16_t h;
        std::memcpy(&h, sc->data + 2 * i, 2);
        ASSERT_EQ(f16_to_f32(h), ref->scale[i]) << i;
      }
    } else {
      ASSERT_EQ(sc->dtype, DType::F32);
      ASSERT_EQ(sc->nbytes, ref->scale.size() * 4);
      EXPECT_EQ(std::memcmp(sc->data, ref->scale.data(), sc->nbytes), 0);
    }
    if (f == quant::Format::INT4) {
      const TensorInfo* z = ck->find(kEmbed + "_zero");
      ASSERT_NE(z, nullptr);
      ASSERT_EQ(z->nbytes, ref->zero.size());
      EXPECT_TRUE(std::equal(ref->zero.begin(), ref->zero.end(), z->data));
    }

    // Loaded by dtype; the lookup is each dequantized value rounded to bf16.
    auto w = load_weights(out / "q", cfg->model);
    ASSERT_TRUE(w.is_ok()) << w.message();
    const ops::WeightView& e = (*w)->text.embed;
    EXPECT_EQ(e.dtype, wtype(f));
    EXPECT_EQ(e.rows, V);
    EXPECT_EQ(e.cols, H);
    EXPECT_NE((*w)->text.lm_head.data, e.data);  // untied: the lm_head stays bf16
    EXPECT_EQ((*w)->text.lm_head.dtype, ops::WType::BF16);
    const std::vector<int32_t> ids = lookup_ids(V);
    std::vector<float> got(ids.size() * size_t(H)), row(static_cast<size_t>(H));
    ops::embedding(e, ids.data(), int64_t(ids.size()), got.data());
    int64_t bad = 0, changed = 0;
    for (size_t i = 0; i < ids.size(); ++i) {
      quant::dequant_segment(ref->view(), ids[i], 0, H, row.data());
      for (int64_t c = 0; c < H; ++c) {
        const float want = round_bf16(row[size_t(c)]), g = got[i * size_t(H) + size_t(c)];
        bad += !(g == want);
        changed += g != src[size_t(ids[i]) * size_t(H) + size_t(c)];
      }
    }
    EXPECT_EQ(bad, 0);
    EXPECT_GT(changed, 0);  // the rows really went through the quantizer
  }
}

// The summary (and so the `quantize` line) counts the table: the output shrinks by exactly the
// table's bf16 bytes minus its quantized bytes; without the table it is listed as kept.
TEST(EmbedQuant, NoQuantizeEmbeddingsKeepsBf16AndSummaryCountsTheTable) {
  Bf16Models& m = Bf16Models::get();
  auto cfg = load_folder_configs(m.plain);
  ASSERT_TRUE(cfg.is_ok());
  const int64_t V = cfg->model.text.vocab_size, H = cfg->model.text.hidden_size;
  for (auto f : {quant::Format::INT8, quant::Format::FP8, quant::Format::INT4}) {
    SCOPED_TRACE(quant::format_name(f));
    TempDir out;
    quant::SelectOptions keep;
    keep.embeddings = false;
    auto with = quantize_to(m.plain, out / "with", f);
    auto without = quantize_to(m.plain, out / "without", f, keep);
    ASSERT_TRUE(with.is_ok() && without.is_ok()) << without.message();
    EXPECT_EQ(with->quantized.size(), without->quantized.size() + 1);
    EXPECT_NE(std::find(without->kept.begin(), without->kept.end(), kEmbed), without->kept.end());
    const int g = group_for(f);
    const int64_t qbytes = quant::weight_bytes(f, V, H) +
                           quant::scale_rows(f, V, g) * quant::scale_cols(f, H, g) * (f == quant::Format::INT4 ? 2 : 4) +
                           (f == quant::Format::INT4 ? V * quant::scale_cols(f, H, g) : 0);
    EXPECT_EQ(without->bytes_out - with->bytes_out, V * H * 2 - qbytes);
    EXPECT_EQ(with->bytes_in, without->bytes_in);

    auto qcfg = load_folder_configs(out / "without");
    ASSERT_TRUE(qcfg.is_ok()) << qcfg.message();
    auto ck = Checkpoint::open(out / "without", qcfg->model);
    ASSERT_TRUE(ck.is_ok()) << ck.message();
    EXPECT_EQ(ck->get(kEmbed).dtype, DType::BF16);
    EXPECT_EQ(ck->find(kEmbed + "_scale"), nullptr);
    auto cj = nlohmann::json::parse(*read_file(out / "without/config.json"));
    const auto& skip = cj["quantization_config"]["modules_to_not_convert"];
    EXPECT_NE(std::find(skip.begin(), skip.end(), "model.language_model.embed_tokens"), skip.end())
        << cj.dump();
    auto w = load_weights(out / "without", qcfg->model);
    ASSERT_TRUE(w.is_ok()) << w.message();
    EXPECT_EQ((*w)->text.embed.dtype, ops::WType::BF16);
  }
}

// A quantized table is the bf16 table of its dequantized values: the model with the quantized
// table and the same model with that bf16 table instead give the same logits, bit for bit.
TEST(EmbedQuant, QuantizedTableEqualsBf16TableOfItsRoundedValues) {
  Bf16Models& m = Bf16Models::get();
  Golden& g = Golden::get();
  EvalCase c;
  c.name = "text_only_en";
  c.ids = g.ids(c.name);
  for (auto f : {quant::Format::INT8, quant::Format::FP8, quant::Format::INT4}) {
    SCOPED_TRACE(quant::format_name(f));
    TempDir out;
    ASSERT_TRUE(quantize_to(m.plain, out / "q", f).is_ok());
    std::filesystem::create_directories(out / "b");
    for (auto& e : std::filesystem::directory_iterator(out / "q"))
      if (e.path().filename() != "model.safetensors")
        std::filesystem::copy(e.path(), out / ("b/" + e.path().filename().string()));
    auto cfg = load_folder_configs(out / "q");
    ASSERT_TRUE(cfg.is_ok());
    auto w = load_weights(out / "q", cfg->model);
    ASSERT_TRUE(w.is_ok()) << w.message();
    const ops::WeightView& e = (*w)->text.embed;
    ASSERT_EQ(e.dtype, wtype(f));
    std::vector<bf16_t> table(size_t(e.rows * e.cols));
    std::vector<float> row(static_cast<size_t>(e.cols));
    for (int64_t r = 0; r < e.rows; ++r) {
      ops::weight_row_f32(e, r, row.data());
      for (int64_t k = 0; k < e.cols; ++k) table[size_t(r * e.cols + k)] = f32_to_bf16(row[size_t(k)]);
    }
    auto src = SafetensorsFile::open(out / "q/model.safetensors");
    ASSERT_TRUE(src.is_ok()) << src.message();
    std::vector<TensorSpec> specs;
    for (auto& t : src->tensors()) {
      if (t.name == kEmbed)
        specs.push_back({t.name, DType::BF16, {e.rows, e.cols}});
      else if (!t.name.starts_with(kEmbed))
        specs.push_back({t.name, t.dtype, t.shape});  // drops its scales
    }
    ASSERT_TRUE(write_safetensors(out / "b/model.safetensors", specs,
                                  [&](const TensorSpec& s, int64_t first, int64_t count, uint8_t* dst) {
                                    if (s.name == kEmbed) {
                                      std::memcpy(dst, table.data() + first, size_t(count) * 2);
                                      return;
                                    }
                                    for (auto& t : src->tensors())
                                      if (t.name == s.name)
                                        std::memcpy(dst, t.data + size_t(first) * dtype_size(t.dtype),
                                                    size_t(count) * dtype_size(t.dtype));
                                  })
                    .is_ok());
    auto a = load_cpu_runner(out / "q");
    auto b = load_cpu_runner(out / "b");
    ASSERT_TRUE(a.is_ok()) << a.message();
    ASSERT_TRUE(b.is_ok()) << b.message();
    auto rep = compare_runners(**a, **b, {c}, 4);
    ASSERT_TRUE(rep.is_ok()) << rep.message();
    EXPECT_EQ(rep->total.sq_err, 0.0);
  }
}

// --quant at load quantizes the table the same way the written checkpoint holds it.
TEST(EmbedQuant, LoadTimeQuantizationEqualsWrittenCheckpoint) {
  Bf16Models& m = Bf16Models::get();
  Golden& g = Golden::get();
  EvalCase c;
  c.name = "text_only_en";
  c.ids = g.ids(c.name);
  for (auto f : {quant::Format::FP8, quant::Format::INT4}) {  // INT8: model_quant_test
    SCOPED_TRACE(quant::format_name(f));
    TempDir out;
    ASSERT_TRUE(quantize_to(m.plain, out / "q", f).is_ok());
    quant::QuantConfig qc;
    qc.format = f;
    qc.group_size = group_for(f);
    auto a = load_cpu_runner(m.plain, qc);
    auto b = load_cpu_runner(out / "q");
    ASSERT_TRUE(a.is_ok()) << a.message();
    ASSERT_TRUE(b.is_ok()) << b.message();
    auto rep = compare_runners(**a, **b, {c}, 4);
    ASSERT_TRUE(rep.is_ok()) << rep.message();
    EXPECT_EQ(rep->total.sq_err, 0.0);
    auto w = load_weights(m.plain, load_folder_configs(m.plain)->model, qc);
    ASSERT_TRUE(w.is_ok()) << w.message();
    EXPECT_EQ((*w)->text.embed.dtype, wtype(f));
    qc.select.embeddings = false;
    auto k = load_weights(m.plain, load_folder_configs(m.plain)->model, qc);
    ASSERT_TRUE(k.is_ok()) << k.message();
    EXPECT_EQ((*k)->text.embed.dtype, ops::WType::BF16);
  }
}

// Tied embeddings: the table is the lm_head, so it is quantized only with the lm_head
// (--quantize-lm-head); then both read the same quantized matrix.
TEST(EmbedQuant, TiedTableFollowsTheLmHead) {
  Bf16Models& m = Bf16Models::get();
  auto ref = load_cpu_runner(m.tied);
  ASSERT_TRUE(ref.is_ok()) << ref.message();
  Golden& g = Golden::get();
  EvalCase c;
  c.name = "text_only_en";
  c.ids = g.ids(c.name);
  for (auto f : {quant::Format::INT8, quant::Format::FP8, quant::Format::INT4}) {
    SCOPED_TRACE(quant::format_name(f));
    TempDir out;
    auto plain = quantize_to(m.tied, out / "plain", f);
    ASSERT_TRUE(plain.is_ok()) << plain.message();
    EXPECT_NE(std::find(plain->kept.begin(), plain->kept.end(), kEmbed), plain->kept.end());
    quant::SelectOptions head;
    head.lm_head = true;
    auto both = quantize_to(m.tied, out / "both", f, head);
    ASSERT_TRUE(both.is_ok()) << both.message();
    EXPECT_NE(std::find(both->quantized.begin(), both->quantized.end(), kEmbed), both->quantized.end());

    auto pc = load_folder_configs(out / "plain");
    ASSERT_TRUE(pc.is_ok());
    auto pw = load_weights(out / "plain", pc->model);
    ASSERT_TRUE(pw.is_ok()) << pw.message();
    EXPECT_EQ((*pw)->text.embed.dtype, ops::WType::BF16);
    EXPECT_EQ((*pw)->text.lm_head.data, (*pw)->text.embed.data);

    auto bc = load_folder_configs(out / "both");
    ASSERT_TRUE(bc.is_ok());
    auto bw = load_weights(out / "both", bc->model);
    ASSERT_TRUE(bw.is_ok()) << bw.message();
    EXPECT_EQ((*bw)->text.embed.dtype, wtype(f));
    EXPECT_EQ((*bw)->text.lm_head.data, (*bw)->text.embed.data);
    EXPECT_EQ((*bw)->text.lm_head.dtype, wtype(f));

    // At load: the same choice.
    quant::QuantConfig qc;
    qc.format = f;
    qc.group_size = group_for(f);
    auto lw = load_weights(m.tied, load_folder_configs(m.tied)->model, qc);
    ASSERT_TRUE(lw.is_ok()) << lw.message();
    EXPECT_EQ((*lw)->text.embed.dtype, ops::WType::BF16);
    qc.select.lm_head = true;
    auto lb = load_weights(m.tied, load_folder_configs(m.tied)->model, qc);
    ASSERT_TRUE(lb.is_ok()) << lb.message();
    EXPECT_EQ((*lb)->text.embed.dtype, wtype(f));
    EXPECT_EQ((*lb)->text.lm_head.data, (*lb)->text.embed.data);

    // The quantized model runs and stays near its bf16 original (its lm_head is quantized too).
    auto q = load_cpu_runner(out / "both");
    ASSERT_TRUE(q.is_ok()) << q.message();
    auto rep = compare_runners(**ref, **q, {c}, 8);
    ASSERT_TRUE(rep.is_ok()) << rep.message();
    std::printf("tied %s (table = lm_head quantized) vs bf16: rel L2 %.4f, top-1 %.3f\n",
                quant::format_name(f), rep->total.rel_l2(), rep->total.top1());
    EXPECT_LT(rep->total.rel_l2(), f == quant::Format::INT4 ? 0.4 : f == quant::Format::FP8 ? 0.2 : 0.05);
    EXPECT_GT(rep->total.top1(), 0.5);
  }
}

}  // namespace
}  // namespace ost
