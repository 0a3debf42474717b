// The quantized embedding gather (embed_gather.h) against the CPU lookup (ops::embedding on the
// same INT8 / FP8 / INT4 table: the dequantized values rounded to bf16), bit for bit; and the CUDA
// runner on checkpoints whose embedding table is quantized (untied, and tied to a quantized
// lm_head) against the CPU runner, with the table's device bytes counted.
#include "backend/cuda/embed_gather.h"

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <memory>
#include <nlohmann/json.hpp>
#include <random>

#include "backend/cuda/cuda_runner.h"
#include "backend/ops.h"
#include "common/temp_dir.h"
#include "core/file_util.h"
#include "cuda_test_util.h"
#include "io/quantize_checkpoint.h"
#include "io/seeded.h"
#include "model/qwen3vl.h"
#include "quant/quant.h"

namespace ost::testing {
namespace {

using namespace ost::cuda;

ops::WType wtype(quant::Format f) {
  return f == quant::Format::INT8  ? ops::WType::INT8
         : f == quant::Format::FP8 ? ops::WType::FP8
                                   : ops::WType::INT4;
}

ops::WeightView host_view(const quant::QuantizedMatrix& m) {
  ops::WeightView w{wtype(m.format), m.data.data(), m.rows, m.cols};
  w.scale = m.scale.data();
  w.zero = m.zero.empty() ? nullptr : m.zero.data();
  w.group = m.group;
  return w;
}

struct GatherShape {
  quant::Format f;
  int64_t vocab, d;
  int group;  // INT4 group / FP8 block side (INT8: unused)
};
// 8-wide paths (d % 8 == 0, groups multiples of 8) and the element-wise ones (d = 7, 100, 36;
// groups 12, 10, 6), vocab sizes not multiples of the FP8 block.
const GatherShape kShapes[] = {
    {quant::Format::INT8, 1000, 4096, 0},  {quant::Format::INT8, 151, 64, 0},
    {quant::Format::INT8, 37, 24, 0},      {quant::Format::INT8, 50, 7, 0},
    {quant::Format::FP8, 1000, 4096, 128}, {quant::Format::FP8, 257, 64, 128},
    {quant::Format::FP8, 200, 48, 16},     {quant::Format::FP8, 300, 100, 128},
    {quant::Format::FP8, 130, 40, 12},     {quant::Format::INT4, 1000, 4096, 128},
    {quant::Format::INT4, 513, 64, 32},    {quant::Format::INT4, 77, 48, 16},
    {quant::Format::INT4, 100, 36, 6},     {quant::Format::INT4, 64, 40, 10},
};

TEST(CudaEmbedGather, MatchesCpuLookupBitForBit) {
  OST_REQUIRE_GPU();
  for (const GatherShape& sh : kShapes) {
    const std::string what = std::string(quant::format_name(sh.f)) + " " + std::to_string(sh.vocab) + "x" +
                             std::to_string(sh.d) + " g" + std::to_string(sh.group);
    // Rows of different magnitudes, so the per-row / per-block scales differ.
    auto w = randn_bf16(size_t(sh.vocab * sh.d), 17, 0.05f);
    for (int64_t r = 0; r < sh.vocab; r += 3)
      for (int64_t c = 0; c < sh.d; ++c)
        w[size_t(r * sh.d + c)] = round_bf16(w[size_t(r * sh.d + c)] * 20.0f);
    auto qm = quant::quantize(sh.f, w.data(), sh.vocab, sh.d, sh.group);
    ASSERT_TRUE(qm.is_ok()) << qm.message();
    auto dd = to_dev_raw(qm->data);
    auto ds = to_dev_raw(qm->scale);
    auto dz = to_dev_raw(qm->zero.empty() ? std::vector<uint8_t>(1) : qm->zero);
    quant::QView t{sh.f,     dd->p, ds->p,    sh.f == quant::Format::INT4 ? dz->p : nullptr,
                   sh.vocab, sh.d,  qm->group};
    for (int64_t n : {1, 7, 300}) {
      std::vector<int32_t> ids = {0, int32_t(sh.vocab - 1)};
      std::mt19937 rng{uint32_t(n)};
      while (int64_t(ids.size()) < n) ids.push_back(int32_t(rng() % uint32_t(sh.vocab)));
      ids.resize(size_t(n));
      if (n == 1) ids[0] = int32_t(sh.vocab - 1);
      std::vector<float> ref(size_t(n * sh.d));
      ops::embedding(host_view(*qm), ids.data(), n, ref.data());
      auto di = to_dev_raw(ids);
      auto out = poisoned(size_t(n * sh.d));
      Status st = launch_embed_gather({t, di->p, out->p, n}, 0);
      ASSERT_TRUE(st.is_ok()) << what << ": " << st.message();
      const std::vector<float> got = from_dev(out->p, ref.size());
      int64_t bad = 0;
      for (size_t i = 0; i < ref.size(); ++i) bad += !(got[i] == ref[i]);  // NaN (unwritten) counts
      EXPECT_EQ(bad, 0) << what << " n=" << n;
    }
  }
}

TEST(CudaEmbedGather, RefusesTablesItCannotRead) {
  OST_REQUIRE_GPU();
  DevBuf<uint8_t> d(64);
  DevBuf<float> s(64);
  DevBuf<int32_t> ids(1);
  auto out = poisoned(64);
  quant::QView none{quant::Format::None, d.p, s.p, nullptr, 4, 16, 0};
  EXPECT_FALSE(launch_embed_gather({none, ids.p, out->p, 1}, 0).is_ok());
  quant::QView int4_no_zero{quant::Format::INT4, d.p, s.p, nullptr, 4, 16, 8};
  EXPECT_FALSE(launch_embed_gather({int4_no_zero, ids.p, out->p, 1}, 0).is_ok());
  quant::QView fp8_no_group{quant::Format::FP8, d.p, s.p, nullptr, 4, 16, 0};
  EXPECT_FALSE(launch_embed_gather({fp8_no_group, ids.p, out->p, 1}, 0).is_ok());
}

int group_for(quant::Format f) { return f == quant::Format::FP8 ? 128 : 32; }

// CPU and CUDA runners on the same checkpoint: a 40-token prefill (all logits), then decode steps.
void runners_agree(const std::string& dir, double bound) {
  auto c = load_cpu_runner(dir);
  auto g = load_cuda_runner(dir);
  ASSERT_TRUE(c.is_ok()) << c.message();
  ASSERT_TRUE(g.is_ok()) << g.message();
  std::vector<int32_t> ids = {151644, 872, 198, 0, 151935};
  std::mt19937 rng(9);
  while (ids.size() < 40) ids.push_back(int32_t(rng() % 151936));
  auto pos = compute_mrope_positions(ids, {}, (*c)->config());
  ASSERT_TRUE(pos.is_ok());
  auto sc = (*c)->new_sequence(64);
  auto sg = (*g)->new_sequence(64);
  ASSERT_TRUE(sc.is_ok() && sg.is_ok());
  auto lc = (*c)->prefill(**sc, ids, *pos, nullptr, true);
  auto lg = (*g)->prefill(**sg, ids, *pos, nullptr, true);
  ASSERT_TRUE(lc.is_ok() && lg.is_ok()) << lg.message();
  const double e = rel_l2(*lg, *lc);
  std::printf("%s: prefill rel L2 %.4f\n", dir.c_str(), e);
  EXPECT_LE(e, bound) << dir;
  for (int step = 0; step < 4; ++step) {  // decode (graphs): one embedding row per step
    const int32_t next = step == 0 ? 151935 : int32_t(3000 + step);
    auto dc = (*c)->decode(**sc, next);
    auto dg = (*g)->decode(**sg, next);
    ASSERT_TRUE(dc.is_ok() && dg.is_ok()) << dg.message();
    EXPECT_LE(rel_l2(*dg, *dc), bound) << dir << " decode step " << step;
  }
}

// Written checkpoints with the table quantized: untied (lm_head bf16), and tied with the lm_head
// quantized (the gather reads the lm_head's codes). Bounds: INT8 / INT4 2e-2 as their runner
// tests; FP8 0.3, a gross-error check only: its per-token activation quantization turns the
// bf16-vs-fp32 activation differences into whole e4m3 steps (0.08-0.12 measured with a bf16
// lm_head, fp8_test.cpp; the tied case quantizes the lm_head's input too). The gather itself is
// held to bit equality above.
TEST(CudaEmbedGather, RunnersWithQuantizedTablesMatchCpu) {
  OST_REQUIRE_GPU();
  TempDir dir;
  TestModelOptions o;
  o.config_dir = test_data() + "/qwen3vl-tiny";
  o.seed = 20261126;
  o.out_dir = dir / "bf16";
  ASSERT_TRUE(write_test_model(o).is_ok());
  auto j = nlohmann::json::parse(*read_file(o.config_dir + "/config.json"));
  j["tie_word_embeddings"] = true;
  j["text_config"]["tie_word_embeddings"] = true;
  std::filesystem::create_directories(dir / "tied-config");
  ASSERT_TRUE(write_file(dir / "tied-config/config.json", j.dump(2)).is_ok());
  o.config_dir = dir / "tied-config";
  o.out_dir = dir / "tied";
  ASSERT_TRUE(write_test_model(o).is_ok());
  for (auto f : {quant::Format::INT8, quant::Format::INT4, quant::Format::FP8}) {
    const double bound = f == quant::Format::FP8 ? 0.3 : 2e-2;
    for (bool tied : {false, true}) {
      QuantizeOptions q;
      q.in_dir = dir / (tied ? "tied" : "bf16");
      q.out_dir = dir / (std::string(quant::format_name(f)) + (tied ? "-tied" : ""));
      q.quant.format = f;
      q.quant.group_size = group_for(f);
      q.quant.select.lm_head = tied;
      auto s = quantize_checkpoint(q);
      ASSERT_TRUE(s.is_ok()) << s.message();
      ASSERT_NE(
          std::find(s->quantized.begin(), s->quantized.end(), "model.language_model.embed_tokens.weight"),
          s->quantized.end());
      runners_agree(q.out_dir, bound);
    }
  }
}

// Load-time quantization (--quant) takes the table by default: on the device it costs its
// quantized bytes instead of its bf16 bytes, exactly.
TEST(CudaEmbedGather, DeviceBytesOfTheTable) {
  OST_REQUIRE_GPU();
  TempDir dir;
  TestModelOptions o;
  o.config_dir = test_data() + "/qwen3vl-tiny";
  o.seed = 20261126;
  o.out_dir = dir.path();
  ASSERT_TRUE(write_test_model(o).is_ok());
  for (auto f : {quant::Format::INT8, quant::Format::FP8, quant::Format::INT4}) {
    quant::QuantConfig qc;
    qc.format = f;
    qc.group_size = group_for(f);
    auto with = load_cuda_runner(dir.path(), qc);
    qc.select.embeddings = false;
    auto without = load_cuda_runner(dir.path(), qc);
    ASSERT_TRUE(with.is_ok()) << with.message();
    ASSERT_TRUE(without.is_ok()) << without.message();
    const int64_t V = (*with)->config().text.vocab_size, H = (*with)->config().text.hidden_size,
                  g = qc.group_size;
    const int64_t qbytes = quant::weight_bytes(f, V, H) +
                           quant::scale_rows(f, V, int(g)) * quant::scale_cols(f, H, int(g)) * 4 +
                           (f == quant::Format::INT4 ? V * quant::scale_cols(f, H, int(g)) : 0);
    const CudaRunnerInfo* a = cuda_runner_info(**with);
    const CudaRunnerInfo* b = cuda_runner_info(**without);
    ASSERT_TRUE(a && b);
    EXPECT_EQ(int64_t(b->weight_bytes) - int64_t(a->weight_bytes), V * H * 2 - qbytes)
        << quant::format_name(f);
    EXPECT_EQ(a->text_weight_bytes, b->text_weight_bytes)
        << quant::format_name(f);  // a lookup, not a per-step read
  }
}

}  // namespace
}  // namespace ost::testing
