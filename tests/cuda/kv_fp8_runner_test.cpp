// The CUDA runner with --kv-cache-dtype fp8 against the CPU runner with the fp8 cache on the
// seeded tiny Qwen3-VL: a text prompt and decode steps, a prompt longer than one prefill chunk,
// an image prompt, batched decode, and a mixed step (prefill chunk + decode rows in one
// forward); the GPU's fp8 logits differ from its bf16-cache logits (the cache is in use); the
// pool accounting (bytes per token of codes + scales).
//
// Tolerance: the bf16 runner test allows logits rel L2 2e-2. e4m3 rounding is discontinuous and
// the GPU quantizes its bf16 K/V while the CPU quantizes f32 K/V, so an element near a rounding
// boundary gets the neighbouring code on one side. Measured on the CPU (2026-11-25) with these
// prompts: quantizing the bf16-rounded K/V instead of the f32 ones alone moves the tiny model's
// logits by up to 0.028 rel L2 (17..300-token prompts; 0.006 at 2100), and the fp8 cache itself
// moves them from the f32 cache's by up to 0.041. Hence 6e-2 here; a wrong code, scale or slot
// gives errors of order 1.
#include <algorithm>
#include <array>
#include <memory>

#include "backend/cuda/cuda_runner.h"
#include "backend/ops.h"
#include "common/temp_dir.h"
#include "cuda_test_util.h"
#include "io/seeded.h"

namespace ost::testing {
namespace {

constexpr double kTol = 6e-2;

struct Fp8Models {
  TempDir dir;
  std::unique_ptr<ModelRunner> cpu, gpu;
  std::unique_ptr<ModelRunner> gpu16;  // the bf16 cache, to see that the fp8 one is in use
  static Fp8Models* get() {
    static std::unique_ptr<Fp8Models> m = [] {
      auto p = std::make_unique<Fp8Models>();
      TestModelOptions o;
      o.config_dir = test_data() + "/qwen3vl-tiny";
      o.seed = 20261124;
      o.out_dir = p->dir.path();
      Status st = write_test_model(o);
      EXPECT_TRUE(st.is_ok()) << st.message();
      quant::QuantConfig q8;
      q8.kv_cache = quant::KvDType::FP8;
      auto c = load_cpu_runner(p->dir.path(), q8);
      auto g = load_cuda_runner(p->dir.path(), q8);
      EXPECT_TRUE(c.is_ok()) << c.message();
      EXPECT_TRUE(g.is_ok()) << g.message();
      auto g16 = load_cuda_runner(p->dir.path());
      EXPECT_TRUE(g16.is_ok()) << g16.message();
      if (c) p->cpu = std::move(*c);
      if (g) p->gpu = std::move(*g);
      if (g16) p->gpu16 = std::move(*g16);
      return p;
    }();
    return m->cpu && m->gpu && m->gpu16 ? m.get() : nullptr;
  }
};

std::vector<int32_t> text_ids(int n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::vector<int32_t> ids = {151644, 872, 198};
  while (int(ids.size()) < n - 2) ids.push_back(int32_t(rng() % 150000));
  ids.push_back(151645);
  ids.push_back(198);
  return ids;
}

MropePositions text_pos(const ModelRunner& r, const std::vector<int32_t>& ids) {
  auto p = compute_mrope_positions(ids, {}, r.config());
  EXPECT_TRUE(p.is_ok());
  return p ? *p : MropePositions{};
}

// Prefill then `steps` decode steps fed with the CPU's greedy tokens; compares every logits row.
void compare_run(Fp8Models& m, const std::vector<int32_t>& ids, const VisionOutput* vis,
                 const std::vector<std::array<int, 3>>& grids, int steps) {
  auto pos = compute_mrope_positions(ids, grids, m.cpu->config());
  ASSERT_TRUE(pos.is_ok()) << pos.message();
  auto sc = m.cpu->new_sequence(int64_t(ids.size()) + steps + 1);
  auto sg = m.gpu->new_sequence(int64_t(ids.size()) + steps + 1);
  ASSERT_TRUE(sc.is_ok() && sg.is_ok());
  auto lc = m.cpu->prefill(**sc, ids, *pos, vis, false);
  auto lg = m.gpu->prefill(**sg, ids, *pos, vis, false);
  ASSERT_TRUE(lc.is_ok()) << lc.message();
  ASSERT_TRUE(lg.is_ok()) << lg.message();
  const double e0 = rel_l2(*lg, *lc);
  std::printf("fp8 KV prefill %zu tokens: rel L2 %.3g\n", ids.size(), e0);
  EXPECT_LE(e0, kTol);
  std::vector<float> last = *lc;
  for (int t = 0; t < steps; ++t) {
    const int32_t next = int32_t(ops::argmax(last.data(), int64_t(last.size())));
    auto c = m.cpu->decode(**sc, next);
    auto g = m.gpu->decode(**sg, next);
    ASSERT_TRUE(c.is_ok() && g.is_ok()) << g.message();
    const double e = rel_l2(*g, *c);
    std::printf("fp8 KV decode step %d: rel L2 %.3g\n", t, e);
    EXPECT_LE(e, kTol) << "step " << t;
    last = *c;
  }
}

TEST(CudaKvFp8Runner, PoolBytesPerToken) {
  OST_REQUIRE_GPU();
  Fp8Models* m = Fp8Models::get();
  ASSERT_NE(m, nullptr);
  const TextConfig& t = m->gpu->config().text;
  const int64_t want = int64_t(t.num_layers) * 2 * t.num_kv_heads * (t.head_dim + 4);
  EXPECT_EQ(m->gpu->kv_bytes_per_token(), want);
  EXPECT_EQ(m->cpu->kv_bytes_per_token(), want);
  const CudaRunnerInfo* info = cuda_runner_info(*m->gpu);
  ASSERT_NE(info, nullptr);
  EXPECT_EQ(int64_t(info->kv_bytes_per_token), want);
  EXPECT_GT(info->kv_blocks, 0);
}

TEST(CudaKvFp8Runner, TextPrefillAndDecode) {
  OST_REQUIRE_GPU();
  Fp8Models* m = Fp8Models::get();
  ASSERT_NE(m, nullptr);
  compare_run(*m, text_ids(40, 1), nullptr, {}, 8);
  compare_run(*m, text_ids(300, 5), nullptr, {}, 3);
}

// The fp8 cache is what attention reads: the logits differ from the bf16 cache's (by about
// what the CPU's fp8 cache differs from its f32 one), well beyond run-to-run noise.
TEST(CudaKvFp8Runner, DiffersFromTheBf16Cache) {
  OST_REQUIRE_GPU();
  Fp8Models* m = Fp8Models::get();
  ASSERT_NE(m, nullptr);
  const auto ids = text_ids(40, 1);
  const auto pos = text_pos(*m->gpu, ids);
  std::vector<float> out[3];
  int k = 0;
  for (ModelRunner* r : {m->gpu.get(), m->gpu.get(), m->gpu16.get()}) {
    auto s = r->new_sequence(64);
    ASSERT_TRUE(s.is_ok());
    auto l = r->prefill(**s, ids, pos, nullptr, false);
    ASSERT_TRUE(l.is_ok()) << l.message();
    auto d = r->decode(**s, 1000);
    ASSERT_TRUE(d.is_ok()) << d.message();
    out[k++] = *d;
  }
  const double same = rel_l2(out[1], out[0]), diff = rel_l2(out[0], out[2]);
  std::printf("fp8 vs bf16 cache on the GPU: decode logits rel L2 %.3g (fp8 twice: %.3g)\n", diff, same);
  EXPECT_LE(same, 1e-4);
  EXPECT_GT(diff, 1e-3);
}

TEST(CudaKvFp8Runner, LongPromptCrossesPrefillChunks) {
  OST_REQUIRE_GPU();
  Fp8Models* m = Fp8Models::get();
  ASSERT_NE(m, nullptr);
  compare_run(*m, text_ids(2100, 2), nullptr, {}, 3);  // chunks of 2048 rows
}

TEST(CudaKvFp8Runner, ImagePrompt) {
  OST_REQUIRE_GPU();
  Fp8Models* m = Fp8Models::get();
  ASSERT_NE(m, nullptr);
  const ModelConfig& cfg = m->cpu->config();
  const int gh = 8, gw = 12, N = gh * gw;
  auto pixels = randn_bf16(size_t(N) * cfg.vision.patch_dim(), 31, 0.5f);
  VisionInput in;
  in.pixel_values = pixels.data();
  in.num_patches = N;
  in.grid_thw = {{1, gh, gw}};
  std::vector<int32_t> ids = {151644, 872, 198, cfg.vision_start_token_id};
  for (int i = 0; i < N / 4; ++i) ids.push_back(cfg.image_token_id);
  ids.push_back(cfg.vision_end_token_id);
  for (int32_t t : {3838, 374, 419, 30, 151645, 198, 151644, 77091, 198}) ids.push_back(t);
  auto vc = m->cpu->encode_images(in);
  ASSERT_TRUE(vc.is_ok()) << vc.message();
  compare_run(*m, ids, &*vc, in.grid_thw, 4);  // the decoder on the same (CPU) vision rows
}

// decode_batch over sequences of different lengths, and a mixed step (a prefill chunk and
// decode rows in one forward), against the CPU runner's separate calls.
TEST(CudaKvFp8Runner, BatchedAndMixedSteps) {
  OST_REQUIRE_GPU();
  Fp8Models* m = Fp8Models::get();
  ASSERT_NE(m, nullptr);
  ModelRunner& c = *m->cpu;
  ModelRunner& g = *m->gpu;
  const size_t V = size_t(c.config().text.vocab_size);
  const std::vector<std::vector<int32_t>> prompts = {text_ids(30, 3), text_ids(17, 4), text_ids(70, 6)};
  std::vector<std::unique_ptr<SequenceState>> sc, sg;
  for (const auto& ids : prompts) {
    for (auto* v : {&sc, &sg}) {
      auto s = (v == &sc ? c : g).new_sequence(160);
      ASSERT_TRUE(s.is_ok());
      auto l = (v == &sc ? c : g).prefill(**s, ids, text_pos(c, ids), nullptr, false);
      ASSERT_TRUE(l.is_ok()) << l.message();
      v->push_back(std::move(*s));
    }
  }
  std::vector<int32_t> next = {100, 200, 300};
  for (int step = 0; step < 3; ++step) {
    std::vector<float> ref;
    for (size_t i = 0; i < 3; ++i) {
      auto l = c.decode(*sc[i], next[i]);
      ASSERT_TRUE(l.is_ok()) << l.message();
      ref.insert(ref.end(), l->begin(), l->end());
    }
    auto lb = g.decode_batch({sg[0].get(), sg[1].get(), sg[2].get()}, next);
    ASSERT_TRUE(lb.is_ok()) << lb.message();
    for (size_t i = 0; i < 3; ++i) {
      const std::vector<float> a(lb->begin() + int64_t(i * V), lb->begin() + int64_t((i + 1) * V));
      const std::vector<float> b(ref.begin() + int64_t(i * V), ref.begin() + int64_t((i + 1) * V));
      const double e = rel_l2(a, b);
      std::printf("fp8 KV batched decode step %d seq %zu: rel L2 %.3g\n", step, i, e);
      EXPECT_LE(e, kTol) << step << " " << i;
      next[i] = int32_t(ops::argmax(b.data(), int64_t(V)));
    }
  }

  // A mixed step: a new 45-token prompt plus the three decode rows.
  const auto p4 = text_ids(45, 7);
  auto s4c = c.new_sequence(64), s4g = g.new_sequence(64);
  ASSERT_TRUE(s4c.is_ok() && s4g.is_ok());
  PrefillChunk chunk;
  chunk.seq = s4g->get(), chunk.ids = p4, chunk.pos = text_pos(c, p4), chunk.logits = true;
  auto mixed = g.mixed_step({chunk}, {sg[0].get(), sg[1].get(), sg[2].get()}, next, false);
  ASSERT_TRUE(mixed.is_ok()) << mixed.message();
  auto lp = c.prefill(**s4c, p4, text_pos(c, p4), nullptr, false);
  ASSERT_TRUE(lp.is_ok());
  ASSERT_EQ(mixed->chunk_logits.size(), 1u);
  const double ec = rel_l2(mixed->chunk_logits[0], *lp);
  std::printf("fp8 KV mixed step chunk: rel L2 %.3g\n", ec);
  EXPECT_LE(ec, kTol);
  ASSERT_EQ(mixed->decode_logits.size(), 3 * V);
  for (size_t i = 0; i < 3; ++i) {
    auto l = c.decode(*sc[i], next[i]);
    ASSERT_TRUE(l.is_ok());
    const std::vector<float> a(mixed->decode_logits.begin() + int64_t(i * V),
                               mixed->decode_logits.begin() + int64_t((i + 1) * V));
    const double e = rel_l2(a, *l);
    std::printf("fp8 KV mixed step decode row %zu: rel L2 %.3g\n", i, e);
    EXPECT_LE(e, kTol) << i;
  }
  // The greedy device path over the fp8 cache: the argmax of decode's logits.
  auto ta = g.new_sequence(64), tb = g.new_sequence(64);
  ASSERT_TRUE(ta.is_ok() && tb.is_ok());
  ASSERT_TRUE(g.prefill(**ta, p4, text_pos(c, p4), nullptr, false).is_ok());
  ASSERT_TRUE(g.prefill(**tb, p4, text_pos(c, p4), nullptr, false).is_ok());
  auto la = g.decode(**ta, 42);
  auto gb = cuda_decode_greedy(g, {tb->get()}, {42});
  ASSERT_TRUE(la.is_ok() && gb.is_ok()) << gb.message();
  EXPECT_EQ((*gb)[0], int32_t(ops::argmax(la->data(), int64_t(V))));
}

}  // namespace
}  // namespace ost::testing
