// The CUDA runner against the CPU runner on the seeded tiny Qwen3-VL: vision outputs, prefill
// logits (text only, with an image, a prompt longer than one prefill chunk, all logits over
// several lm_head slices, a prefill continued in a second call), several decode steps, batched
// decode, and the greedy paths. Relative L2 of the logits <= 2e-2 (bf16 vs fp32).
#include <algorithm>
#include <filesystem>
#include <memory>

#include "backend/cuda/cuda_runner.h"
#include "common/temp_dir.h"
#include "cuda_test_util.h"
#include "backend/ops.h"
#include "io/seeded.h"
#include "vision/image.h"
#include "vision/preprocess.h"

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
  compare_run(*m, text_ids(2100, 2), nullptr, nullptr, {}, 3);  // chunks of 2048 rows
}

// All logits of a prompt longer than one lm_head slice (512 rows).
TEST(CudaRunner, AllLogitsAcrossLmHeadSlices) {
  OST_REQUIRE_GPU();
  Models* m = Models::get();
  ASSERT_NE(m, nullptr);
  const std::vector<int32_t> ids = text_ids(530, 8);
  auto pos = compute_mrope_positions(ids, {}, m->cpu->config());
  ASSERT_TRUE(pos.is_ok());
  auto sc = m->cpu->new_sequence(600), sg = m->gpu->new_sequence(600);
  ASSERT_TRUE(sc.is_ok() && sg.is_ok());
  auto lc = m->cpu->prefill(**sc, ids, *pos, nullptr, true);
  auto lg = m->gpu->prefill(**sg, ids, *pos, nullptr, true);
  ASSERT_TRUE(lc.is_ok() && lg.is_ok()) << lg.message();
  ASSERT_EQ(lg->size(), lc->size());
  const size_t V = size_t(m->cpu->config().text.vocab_size);
  const std::vector<float> tail_c(lc->end() - 20 * V, lc->end()), tail_g(lg->end() - 20 * V, lg->end());
  const double e = rel_l2(*lg, *lc), et = rel_l2(tail_g, tail_c);
  std::printf("all logits of 530 rows: rel L2 %.3g (last 20 rows %.3g)\n", e, et);
  EXPECT_LE(e, kTol);
  EXPECT_LE(et, kTol);
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

// decode_batch_argmax (device argmax + log-softmax) against the host over decode_batch's logits.
TEST(CudaRunner, DecodeBatchArgmaxMatchesHost) {
  OST_REQUIRE_GPU();
  Models* m = Models::get();
  ASSERT_NE(m, nullptr);
  const std::vector<int32_t> a = text_ids(30, 5), b = text_ids(21, 6);
  std::vector<std::unique_ptr<SequenceState>> x, y;  // the same two prompts twice
  for (auto* v : {&x, &y})
    for (const auto* ids : {&a, &b}) {
      auto pos = compute_mrope_positions(*ids, {}, m->gpu->config());
      ASSERT_TRUE(pos.is_ok());
      auto s = m->gpu->new_sequence(64);
      ASSERT_TRUE(s.is_ok());
      ASSERT_TRUE(m->gpu->prefill(**s, *ids, *pos, nullptr, false).is_ok());
      v->push_back(std::move(*s));
    }
  const size_t V = size_t(m->gpu->config().text.vocab_size);
  std::vector<int32_t> next = {100, 200};
  for (int step = 0; step < 4; ++step) {
    auto l = m->gpu->decode_batch({x[0].get(), x[1].get()}, next);
    auto g = m->gpu->decode_batch_argmax({y[0].get(), y[1].get()}, next);
    ASSERT_TRUE(l.is_ok() && g.is_ok()) << g.message();
    for (size_t i = 0; i < 2; ++i) {
      const float* row = l->data() + i * V;
      const int32_t want = int32_t(ops::argmax(row, int64_t(V)));
      double mx = -INFINITY, sum = 0;
      for (size_t k = 0; k < V; ++k) mx = std::max(mx, double(row[k]));
      for (size_t k = 0; k < V; ++k) sum += std::exp(double(row[k]) - mx);
      EXPECT_EQ((*g)[i].id, want) << step << "/" << i;
      EXPECT_NEAR((*g)[i].logprob, double(row[want]) - mx - std::log(sum), 1e-3) << step << "/" << i;
      next[i] = want;
    }
  }
}

// With excluded ids the runner's choice skips them (the engine loop excludes the vision
// placeholders): the first step excludes each row's host argmax, so the runner-up is chosen.
TEST(CudaRunner, DecodeBatchArgmaxExcludedTokens) {
  OST_REQUIRE_GPU();
  Models* m = Models::get();
  ASSERT_NE(m, nullptr);
  const std::vector<int32_t> a = text_ids(25, 7), b = text_ids(18, 8);
  std::vector<std::unique_ptr<SequenceState>> x, y;
  for (auto* v : {&x, &y})
    for (const auto* ids : {&a, &b}) {
      auto pos = compute_mrope_positions(*ids, {}, m->gpu->config());
      ASSERT_TRUE(pos.is_ok());
      auto s = m->gpu->new_sequence(64);
      ASSERT_TRUE(s.is_ok());
      ASSERT_TRUE(m->gpu->prefill(**s, *ids, *pos, nullptr, false).is_ok());
      v->push_back(std::move(*s));
    }
  const size_t V = size_t(m->gpu->config().text.vocab_size);
  std::vector<int32_t> next = {300, 400};
  for (int step = 0; step < 3; ++step) {
    auto l = m->gpu->decode_batch({x[0].get(), x[1].get()}, next);
    ASSERT_TRUE(l.is_ok());
    std::vector<int32_t> ex = {m->gpu->config().image_token_id};
    for (size_t i = 0; i < 2; ++i) ex.push_back(int32_t(ops::argmax(l->data() + i * V, int64_t(V))));
    ASSERT_TRUE(m->gpu->set_excluded_tokens(ex).is_ok());
    auto g = m->gpu->decode_batch_argmax({y[0].get(), y[1].get()}, next);
    ASSERT_TRUE(m->gpu->set_excluded_tokens({}).is_ok());
    ASSERT_TRUE(g.is_ok()) << g.message();
    for (size_t i = 0; i < 2; ++i) {
      std::vector<float> row(l->begin() + int64_t(i * V), l->begin() + int64_t((i + 1) * V));
      double mx = -INFINITY, sum = 0;
      for (float v : row) mx = std::max(mx, double(v));
      for (float v : row) sum += std::exp(double(v) - mx);
      for (int32_t e : ex) row[size_t(e)] = -INFINITY;
      const int32_t want = int32_t(ops::argmax(row.data(), int64_t(V)));
      EXPECT_EQ((*g)[i].id, want) << step << "/" << i;
      EXPECT_NEAR((*g)[i].logprob, double((*l)[i * V + size_t(want)]) - mx - std::log(sum), 1e-3) << step << "/" << i;
      next[i] = want;
    }
  }
}

MropePositions slice_pos(const MropePositions& p, int64_t a, int64_t b) {
  MropePositions out;
  out.n = b - a;
  out.rope_delta = p.rope_delta;
  for (int ax = 0; ax < 3; ++ax)
    out.pos.insert(out.pos.end(), p.pos.begin() + ax * p.n + a, p.pos.begin() + ax * p.n + b);
  return out;
}

// A mixed step (decode rows + prefill chunks in one forward: a fresh text prompt, an image
// prompt with its vision rows on the device, a chunk continuing a cached prefix) against the
// same work done by separate prefill and decode calls: logits, greedy choices, and the next
// decode step over every sequence (the KV the mixed step wrote).
TEST(CudaRunner, MixedStepMatchesSeparateCalls) {
  OST_REQUIRE_GPU();
  Models* m = Models::get();
  ASSERT_NE(m, nullptr);
  ModelRunner& g = *m->gpu;
  const ModelConfig& cfg = g.config();
  const size_t V = size_t(cfg.text.vocab_size);
  ImagePrompt ip = image_prompt(cfg);
  ip.in.keep_on_device = true;
  auto vis = g.encode_images(ip.in);
  ASSERT_TRUE(vis.is_ok()) << vis.message();
  ASSERT_TRUE(vis->device != nullptr);
  const auto d0 = text_ids(20, 11), d1 = text_ids(33, 12), c0 = text_ids(40, 13), c2 = text_ids(30, 14),
             c3 = text_ids(15, 15);
  auto text_pos = [&](const std::vector<int32_t>& ids) {
    auto p = compute_mrope_positions(ids, {}, cfg);
    EXPECT_TRUE(p.is_ok());
    return *p;
  };
  auto ip_pos = compute_mrope_positions(ip.ids, {{1, 8, 12}}, cfg);
  ASSERT_TRUE(ip_pos.is_ok());
  const MropePositions c2_pos = text_pos(c2);

  // Per set: decode sequences d0, d1 (prefilled), a sequence holding c2's first 10 tokens, and
  // fresh sequences for c0, the image prompt and c3.
  struct Set {
    std::vector<std::unique_ptr<SequenceState>> s;
  } sets[2];
  for (Set& st : sets) {
    for (int k = 0; k < 6; ++k) {
      auto q = g.new_sequence(96);
      ASSERT_TRUE(q.is_ok());
      st.s.push_back(std::move(*q));
    }
    ASSERT_TRUE(g.prefill(*st.s[0], d0, text_pos(d0), nullptr, false).is_ok());
    ASSERT_TRUE(g.prefill(*st.s[1], d1, text_pos(d1), nullptr, false).is_ok());
    ASSERT_TRUE(g.prefill(*st.s[2], std::vector<int32_t>(c2.begin(), c2.begin() + 10), slice_pos(c2_pos, 0, 10),
                          nullptr, false)
                    .is_ok());
  }
  auto chunks_of = [&](Set& st) {
    std::vector<PrefillChunk> cs(3);
    cs[0].seq = st.s[3].get(), cs[0].ids = c0, cs[0].pos = text_pos(c0), cs[0].logits = true;
    cs[1].seq = st.s[4].get(), cs[1].ids = ip.ids, cs[1].pos = *ip_pos, cs[1].vision = &*vis, cs[1].logits = true;
    cs[2].seq = st.s[2].get(), cs[2].ids.assign(c2.begin() + 10, c2.end()), cs[2].pos = slice_pos(c2_pos, 10, 30);
    cs[2].logits = true;
    return cs;
  };
  const int64_t before = cuda_runner_info(g)->mixed_forwards;
  auto chunks = chunks_of(sets[0]);
  auto mixed = g.mixed_step(chunks, {sets[0].s[0].get(), sets[0].s[1].get()}, {500, 600}, false);
  ASSERT_TRUE(mixed.is_ok()) << mixed.message();
  EXPECT_EQ(cuda_runner_info(g)->mixed_forwards, before + 1);  // one forward, not the fallback
  auto sep_chunks = chunks_of(sets[1]);
  for (size_t i = 0; i < sep_chunks.size(); ++i) {
    const PrefillChunk& c = sep_chunks[i];
    auto l = g.prefill(*c.seq, c.ids, c.pos, c.vision, false);
    ASSERT_TRUE(l.is_ok()) << l.message();
    const double e = rel_l2(mixed->chunk_logits[i], *l);
    std::printf("mixed chunk %zu (%zu tokens): rel L2 %.3g\n", i, c.ids.size(), e);
    EXPECT_LE(e, 1e-2) << i;
  }
  auto dl = g.decode_batch({sets[1].s[0].get(), sets[1].s[1].get()}, {500, 600});
  ASSERT_TRUE(dl.is_ok());
  const double ed = rel_l2(mixed->decode_logits, *dl);
  std::printf("mixed decode rows: rel L2 %.3g\n", ed);
  EXPECT_LE(ed, 1e-2);

  // Greedy: a fresh chunk plus every other sequence decoding.
  std::vector<SequenceState*> dx, dy;
  for (int k : {0, 1, 2, 3, 4}) dx.push_back(sets[0].s[size_t(k)].get()), dy.push_back(sets[1].s[size_t(k)].get());
  const std::vector<int32_t> ids = {11, 22, 33, 44, 55};
  PrefillChunk cx;
  cx.seq = sets[0].s[5].get(), cx.ids = c3, cx.pos = text_pos(c3), cx.logits = true;
  auto gm = g.mixed_step({cx}, dx, ids, true);
  ASSERT_TRUE(gm.is_ok()) << gm.message();
  auto ly = g.prefill(*sets[1].s[5], c3, text_pos(c3), nullptr, false);
  auto gy = g.decode_batch_argmax(dy, ids);
  ASSERT_TRUE(ly.is_ok() && gy.is_ok());
  EXPECT_LE(rel_l2(gm->chunk_logits[0], *ly), 1e-2);
  ASSERT_EQ(gm->decode_tokens.size(), 5u);
  for (size_t i = 0; i < 5; ++i) {
    EXPECT_EQ(gm->decode_tokens[i].id, (*gy)[i].id) << i;
    EXPECT_NEAR(gm->decode_tokens[i].logprob, (*gy)[i].logprob, 2e-2) << i;
  }

  // The caches: one more decode step over all six sequences.
  dx.push_back(sets[0].s[5].get()), dy.push_back(sets[1].s[5].get());
  for (size_t k = 0; k < dx.size(); ++k) EXPECT_EQ(dx[k]->length(), dy[k]->length()) << k;
  const std::vector<int32_t> ids6 = {7, 8, 9, 10, 12, 13};
  auto nx = g.decode_batch(dx, ids6);
  auto ny = g.decode_batch(dy, ids6);
  ASSERT_TRUE(nx.is_ok() && ny.is_ok());
  for (size_t k = 0; k < dx.size(); ++k) {
    const std::vector<float> a(nx->begin() + int64_t(k * V), nx->begin() + int64_t((k + 1) * V));
    const std::vector<float> b(ny->begin() + int64_t(k * V), ny->begin() + int64_t((k + 1) * V));
    const double e = rel_l2(a, b);
    std::printf("decode after the mixed steps, seq %zu: rel L2 %.3g\n", k, e);
    EXPECT_LE(e, 1e-2) << k;
  }
}

// Vision rows kept on the device feed the prefill the same bf16 values as the host copy.
TEST(CudaRunner, VisionKeptOnDeviceGivesTheSamePrefill) {
  OST_REQUIRE_GPU();
  Models* m = Models::get();
  ASSERT_NE(m, nullptr);
  ImagePrompt p = image_prompt(m->gpu->config());
  auto host = m->gpu->encode_images(p.in);
  p.in.keep_on_device = true;
  auto dev = m->gpu->encode_images(p.in);
  ASSERT_TRUE(host.is_ok() && dev.is_ok()) << dev.message();
  ASSERT_TRUE(dev->device != nullptr);
  EXPECT_TRUE(dev->embeds.empty());
  auto pos = compute_mrope_positions(p.ids, p.in.grid_thw, m->gpu->config());
  ASSERT_TRUE(pos.is_ok());
  auto s1 = m->gpu->new_sequence(128), s2 = m->gpu->new_sequence(128);
  ASSERT_TRUE(s1.is_ok() && s2.is_ok());
  auto l1 = m->gpu->prefill(**s1, p.ids, *pos, &*host, false);
  auto l2 = m->gpu->prefill(**s2, p.ids, *pos, &*dev, false);
  ASSERT_TRUE(l1.is_ok() && l2.is_ok()) << l2.message();
  EXPECT_EQ(rel_l2(*l2, *l1), 0.0);
}

// RGB8 input cut into patches on the GPU gives the same vision output as the f32 patches of
// preprocess_image (the same bf16 values go in), here with a resize.
TEST(CudaRunner, VisionFromRgbMatchesPixelValues) {
  OST_REQUIRE_GPU();
  Models* m = Models::get();
  ASSERT_NE(m, nullptr);
  ASSERT_TRUE(m->gpu->takes_rgb());
  auto img = load_image_file(test_data() + "/qwen3vl-tiny/images/shelf_300x200.png");
  ASSERT_TRUE(img.is_ok()) << img.message();
  const PreprocessorConfig& pc = m->gpu->preprocessor();
  PreprocessOptions po;
  po.min_pixels = pc.min_pixels, po.max_pixels = pc.max_pixels, po.patch_size = pc.patch_size;
  po.temporal_patch_size = pc.temporal_patch_size, po.merge_size = pc.merge_size;
  po.mean = pc.image_mean, po.std = pc.image_std, po.rescale_factor = pc.rescale_factor;
  auto patches = preprocess_image(*img, po);
  Image resized;
  auto plan = plan_patches(*img, po, &resized);
  auto lut = normalize_table(po);
  ASSERT_TRUE(patches.is_ok() && plan.is_ok() && lut.is_ok());
  ASSERT_FALSE(resized.rgb.empty());
  VisionInput a, b;
  a.grid_thw = b.grid_thw = {{patches->grid_t, patches->grid_h, patches->grid_w}};
  a.num_patches = b.num_patches = int64_t(patches->grid_t) * patches->grid_h * patches->grid_w;
  a.pixel_values = patches->pixel_values.data();
  b.rgb = {&resized};
  b.lut = &*lut;
  auto va = m->gpu->encode_images(a), vb = m->gpu->encode_images(b);
  ASSERT_TRUE(va.is_ok() && vb.is_ok()) << vb.message();
  EXPECT_EQ(rel_l2(vb->embeds, va->embeds), 0.0);
  ASSERT_EQ(vb->deepstack.size(), va->deepstack.size());
  for (size_t j = 0; j < va->deepstack.size(); ++j)
    EXPECT_EQ(rel_l2(vb->deepstack[j], va->deepstack[j]), 0.0) << j;
  b.rgb = {img.is_ok() ? &*img : nullptr};  // the unresized image does not match the grid
  EXPECT_FALSE(m->gpu->encode_images(b).is_ok());
}

// A prompt prefilled in two calls (the second continues the cache at a length that is no
// multiple of the block or tile sizes) against the CPU runner doing the same.
TEST(CudaRunner, ContinuedPrefillMatchesCpu) {
  OST_REQUIRE_GPU();
  Models* m = Models::get();
  ASSERT_NE(m, nullptr);
  const std::vector<int32_t> ids = text_ids(150, 7);
  auto pos = compute_mrope_positions(ids, {}, m->cpu->config());
  ASSERT_TRUE(pos.is_ok());
  const int64_t cut = 37;
  auto part = [&](int64_t a, int64_t b) {
    MropePositions q;
    q.n = b - a;
    q.rope_delta = pos->rope_delta;
    for (int ax = 0; ax < 3; ++ax)
      q.pos.insert(q.pos.end(), pos->pos.begin() + ax * pos->n + a, pos->pos.begin() + ax * pos->n + b);
    return q;
  };
  const std::vector<int32_t> first(ids.begin(), ids.begin() + cut), second(ids.begin() + cut, ids.end());
  auto sc = m->cpu->new_sequence(200), sg = m->gpu->new_sequence(200);
  ASSERT_TRUE(sc.is_ok() && sg.is_ok());
  for (auto* r : {m->cpu.get(), m->gpu.get()}) {
    SequenceState& st = r == m->cpu.get() ? **sc : **sg;
    ASSERT_TRUE(r->prefill(st, first, part(0, cut), nullptr, false).is_ok());
  }
  auto lc = m->cpu->prefill(**sc, second, part(cut, int64_t(ids.size())), nullptr, true);
  auto lg = m->gpu->prefill(**sg, second, part(cut, int64_t(ids.size())), nullptr, true);
  ASSERT_TRUE(lc.is_ok() && lg.is_ok()) << lg.message();
  const double e = rel_l2(*lg, *lc);
  std::printf("continued prefill (%lld + %lld tokens, all logits): rel L2 %.3g\n", (long long)cut,
              (long long)(ids.size() - cut), e);
  EXPECT_LE(e, kTol);
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
