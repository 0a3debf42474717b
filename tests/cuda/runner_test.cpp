// The CUDA runner against the CPU runner on the seeded tiny Qwen3-VL: vision outputs, prefill
// logits (text only, with an image, and a prompt longer than one prefill chunk), several decode
// steps, batched decode, and the greedy path. Relative L2 of the logits <= 2e-2 (bf16 vs fp32).
#include <algorithm>
#include <filesystem>
#include <memory>

#include "backend/cuda/cuda_runner.h"
#include "common/temp_dir.h"
#include "cuda_test_util.h"
#include "backend/ops.h"
#include "io/seeded.h"

namespace ost::testing {
namespace {

constexpr double kTol = 2e-2;

struct Models {
  TempDir dir;
  std::unique_ptr<ModelRunner> cpu, gpu;
  static Models* get() {
    static std::unique_ptr<Models> m = [] {
      auto p = std::make_unique<Models>();
      TestModelOptions o;
      o.config_dir = test_data() + "/qwen3vl-tiny";
      o.seed = 20261124;
      o.out_dir = p->dir.path();
      Status st = write_test_model(o);
      EXPECT_TRUE(st.is_ok()) << st.message();
      auto c = load_cpu_runner(p->dir.path());
      auto g = load_cuda_runner(p->dir.path());
      EXPECT_TRUE(c.is_ok()) << c.message();
      EXPECT_TRUE(g.is_ok()) << g.message();
      if (c) p->cpu = std::move(*c);
      if (g) p->gpu = std::move(*g);
      return p;
    }();
    return m->cpu && m->gpu ? m.get() : nullptr;
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

// A prompt with one image of grid (1, 8, 12) patches: 24 image tokens.
struct ImagePrompt {
  std::vector<float> pixels;
  VisionInput in;
  std::vector<int32_t> ids;
};
ImagePrompt image_prompt(const ModelConfig& cfg) {
  ImagePrompt p;
  const int gh = 8, gw = 12, N = gh * gw;
  p.pixels = randn_bf16(size_t(N) * cfg.vision.patch_dim(), 31, 0.5f);
  p.in.pixel_values = p.pixels.data();
  p.in.num_patches = N;
  p.in.grid_thw = {{1, gh, gw}};
  p.ids = {151644, 872, 198, cfg.vision_start_token_id};
  for (int i = 0; i < N / 4; ++i) p.ids.push_back(cfg.image_token_id);
  p.ids.push_back(cfg.vision_end_token_id);
  for (int32_t t : {3838, 374, 419, 30, 151645, 198, 151644, 77091, 198}) p.ids.push_back(t);
  return p;
}

// Prefill then `steps` decode steps fed with the CPU's greedy tokens; compares every logits row.
void compare_run(Models& m, const std::vector<int32_t>& ids, const VisionOutput* vc, const VisionOutput* vg,
                 const std::vector<std::array<int, 3>>& grids, int steps) {
  auto pos = compute_mrope_positions(ids, grids, m.cpu->config());
  ASSERT_TRUE(pos.is_ok()) << pos.message();
  auto sc = m.cpu->new_sequence(int64_t(ids.size()) + steps + 1);
  auto sg = m.gpu->new_sequence(int64_t(ids.size()) + steps + 1);
  ASSERT_TRUE(sc.is_ok() && sg.is_ok());
  auto lc = m.cpu->prefill(**sc, ids, *pos, vc, false);
  auto lg = m.gpu->prefill(**sg, ids, *pos, vg, false);
  ASSERT_TRUE(lc.is_ok()) << lc.message();
  ASSERT_TRUE(lg.is_ok()) << lg.message();
  const double e0 = rel_l2(*lg, *lc);
  std::printf("prefill %zu tokens: rel L2 %.3g\n", ids.size(), e0);
  EXPECT_LE(e0, kTol);
  std::vector<float> last = *lc;
  for (int t = 0; t < steps; ++t) {
    const int32_t next = int32_t(ops::argmax(last.data(), int64_t(last.size())));
    auto c = m.cpu->decode(**sc, next);
    auto g = m.gpu->decode(**sg, next);
    ASSERT_TRUE(c.is_ok() && g.is_ok()) << g.message();
    const double e = rel_l2(*g, *c);
    std::printf("decode step %d: rel L2 %.3g\n", t, e);
    EXPECT_LE(e, kTol) << "step " << t;
    last = *c;
  }
  EXPECT_EQ((*sg)->length(), (*sc)->length());
}

TEST(CudaRunner, TextOnlyPrefillAndDecode) {
  OST_REQUIRE_GPU();
  Models* m = Models::get();
  ASSERT_NE(m, nullptr);
  compare_run(*m, text_ids(40, 1), nullptr, nullptr, {}, 6);
}

TEST(CudaRunner, LongPromptCrossesPrefillChunks) {
  OST_REQUIRE_GPU();
  Models* m = Models::get();
  ASSERT_NE(m, nullptr);
  compare_run(*m, text_ids(700, 2), nullptr, nullptr, {}, 3);
}

TEST(CudaRunner, ImagePromptVisionAndDecode) {
  OST_REQUIRE_GPU();
  Models* m = Models::get();
  ASSERT_NE(m, nullptr);
  ImagePrompt p = image_prompt(m->cpu->config());
  auto vc = m->cpu->encode_images(p.in);
  auto vg = m->gpu->encode_images(p.in);
  ASSERT_TRUE(vc.is_ok()) << vc.message();
  ASSERT_TRUE(vg.is_ok()) << vg.message();
  ASSERT_EQ(vg->n_merged, vc->n_merged);
  const double ev = rel_l2(vg->embeds, vc->embeds);
  std::printf("vision embeds rel L2 %.3g\n", ev);
  EXPECT_LE(ev, kTol);
  ASSERT_EQ(vg->deepstack.size(), vc->deepstack.size());
  for (size_t j = 0; j < vc->deepstack.size(); ++j) {
    const double e = rel_l2(vg->deepstack[j], vc->deepstack[j]);
    std::printf("deepstack %zu rel L2 %.3g\n", j, e);
    EXPECT_LE(e, kTol);
  }
  // The decoder is compared on the same (CPU) vision rows, then end to end on its own.
  compare_run(*m, p.ids, &*vc, &*vc, p.in.grid_thw, 4);
  compare_run(*m, p.ids, &*vc, &*vg, p.in.grid_thw, 2);
}

TEST(CudaRunner, BatchedAndGreedyDecodeMatchSingle) {
  OST_REQUIRE_GPU();
  Models* m = Models::get();
  ASSERT_NE(m, nullptr);
  const std::vector<int32_t> a = text_ids(30, 3), b = text_ids(17, 4);
  std::vector<std::unique_ptr<SequenceState>> single, batch;
  std::vector<int32_t> next;
  for (const auto* ids : {&a, &b}) {
    auto pos = compute_mrope_positions(*ids, {}, m->gpu->config());
    ASSERT_TRUE(pos.is_ok());
    for (auto* v : {&single, &batch}) {
      auto s = m->gpu->new_sequence(64);
      ASSERT_TRUE(s.is_ok());
      auto l = m->gpu->prefill(**s, *ids, *pos, nullptr, false);
      ASSERT_TRUE(l.is_ok()) << l.message();
      if (v == &single) next.push_back(int32_t(ops::argmax(l->data(), int64_t(l->size()))));
      v->push_back(std::move(*s));
    }
  }
  const size_t V = size_t(m->gpu->config().text.vocab_size);
  for (int step = 0; step < 4; ++step) {
    std::vector<float> ref;
    for (size_t i = 0; i < 2; ++i) {
      auto l = m->gpu->decode(*single[i], next[i]);
      ASSERT_TRUE(l.is_ok()) << l.message();
      ref.insert(ref.end(), l->begin(), l->end());
    }
    auto lb = m->gpu->decode_batch({batch[0].get(), batch[1].get()}, next);
    ASSERT_TRUE(lb.is_ok()) << lb.message();
    EXPECT_LE(rel_l2(*lb, ref), 1e-3) << "step " << step;
    std::vector<int32_t> want = {int32_t(ops::argmax(ref.data(), int64_t(V))),
                                 int32_t(ops::argmax(ref.data() + V, int64_t(V)))};
    next = want;
  }
  // Greedy path: the argmax computed on the device equals the host argmax of the logits.
  auto s1 = m->gpu->new_sequence(64), s2 = m->gpu->new_sequence(64);
  ASSERT_TRUE(s1.is_ok() && s2.is_ok());
  auto pos = compute_mrope_positions(a, {}, m->gpu->config());
  ASSERT_TRUE(m->gpu->prefill(**s1, a, *pos, nullptr, false).is_ok());
  ASSERT_TRUE(m->gpu->prefill(**s2, a, *pos, nullptr, false).is_ok());
  auto l = m->gpu->decode(**s1, 1000);
  auto g = cuda_decode_greedy(*m->gpu, {s2->get()}, {1000});
  ASSERT_TRUE(l.is_ok() && g.is_ok()) << g.message();
  EXPECT_EQ((*g)[0], int32_t(ops::argmax(l->data(), int64_t(l->size()))));
  ASSERT_NE(cuda_runner_info(*m->gpu), nullptr);
  EXPECT_EQ(cuda_runner_info(*m->cpu), nullptr);
}

TEST(CudaRunner, KvPoolBlocksReturnOnDestroy) {
  OST_REQUIRE_GPU();
  Models* m = Models::get();
  ASSERT_NE(m, nullptr);
  const CudaRunnerInfo* info = cuda_runner_info(*m->gpu);
  ASSERT_NE(info, nullptr);
  // Take every block (in sequences of at most the per-sequence limit), fail the next request,
  // free one sequence, succeed again.
  const int64_t per_seq = 131072;  // CudaRunner::kMaxSeqTokens
  std::vector<std::unique_ptr<SequenceState>> held;
  int64_t left = info->kv_blocks * info->kv_block_tokens;
  while (left > 0) {
    auto s = m->gpu->new_sequence(std::min(left, per_seq));
    ASSERT_TRUE(s.is_ok()) << s.message();
    held.push_back(std::move(*s));
    left -= std::min(left, per_seq);
  }
  EXPECT_FALSE(m->gpu->new_sequence(16).is_ok());
  held.back().reset();
  EXPECT_TRUE(m->gpu->new_sequence(16).is_ok());
}

}  // namespace
}  // namespace ost::testing
