// Qwen3VLModel API behaviour beyond the goldens: argument errors, the dump callback, chunked
// and continued prefill agreeing with one-shot prefill, and M-RoPE ids on hand-made prompts.
#include <map>
#include <set>

#include "backend/ops.h"
#include "fixture.h"

namespace ost::testing {
namespace {

constexpr int32_t kVisionStart = 151652, kVisionEnd = 151653, kImagePad = 151655;

MropePositions positions(const std::string& c) {
  Golden& g = Golden::get();
  auto p = compute_mrope_positions(g.ids(c), g.grids(c), TinyModel::get()->config());
  EXPECT_TRUE(p.is_ok()) << p.message();
  return p ? *p : MropePositions{};
}

// ---- errors -------------------------------------------------------------------------------

TEST(ModelErrors, ImageTokenCountMismatch) {
  Qwen3VLModel* m = TinyModel::get();
  ASSERT_NE(m, nullptr);
  Golden& g = Golden::get();
  const std::vector<int32_t> ids = g.ids("one_image_zh");  // 70 image tokens
  const MropePositions pos = positions("one_image_zh");
  VisionOutput two = encode_case(*m, "two_images");  // 140 rows
  KvCache cache = m->new_cache(256);

  auto r = m->prefill(cache, ids, pos, &two, false);
  ASSERT_FALSE(r.is_ok());
  EXPECT_NE(r.message().find("70 <|image_pad|> tokens but 140"), std::string::npos) << r.message();
  EXPECT_EQ(cache.len, 0);  // nothing written

  r = m->prefill(cache, ids, pos, nullptr, false);  // image tokens but no image
  ASSERT_FALSE(r.is_ok());
  EXPECT_NE(r.message().find("70 <|image_pad|> tokens but 0"), std::string::npos) << r.message();

  // One image token short: the position ids already reject the prompt.
  std::vector<int32_t> short_ids = ids;
  short_ids.erase(std::find(short_ids.begin(), short_ids.end(), kImagePad));
  auto p = compute_mrope_positions(short_ids, g.grids("one_image_zh"), m->config());
  ASSERT_FALSE(p.is_ok());
  EXPECT_NE(p.message().find("needs 70 <|image_pad|>"), std::string::npos) << p.message();

  // A text-only prompt given image embeddings.
  const std::vector<int32_t> text = g.ids("text_only_en");
  VisionOutput one = encode_case(*m, "one_image_zh");
  r = m->prefill(cache, text, positions("text_only_en"), &one, false);
  ASSERT_FALSE(r.is_ok());
}

TEST(ModelErrors, BadArguments) {
  Qwen3VLModel* m = TinyModel::get();
  ASSERT_NE(m, nullptr);
  Golden& g = Golden::get();
  const TensorInfo& px = g.tensor("one_image_zh.pixel_values");
  VisionInput in;
  in.pixel_values = reinterpret_cast<const float*>(px.data);
  in.num_patches = 280;
  in.grid_thw = {{1, 14, 21}};  // odd width: not mergeable
  EXPECT_FALSE(m->encode_images(in).is_ok());
  in.grid_thw = {{1, 14, 18}};  // 252 patches != 280
  auto e = m->encode_images(in);
  ASSERT_FALSE(e.is_ok());
  EXPECT_NE(e.message().find("252"), std::string::npos) << e.message();
  in.grid_thw = {};
  EXPECT_FALSE(m->encode_images(in).is_ok());

  const std::vector<int32_t> ids = g.ids("text_only_en");
  const MropePositions pos = positions("text_only_en");
  KvCache small = m->new_cache(10);  // 20 tokens do not fit
  EXPECT_FALSE(m->prefill(small, ids, pos, nullptr, false).is_ok());
  EXPECT_EQ(small.len, 0);

  KvCache cache = m->new_cache(64);
  std::vector<int32_t> bad = ids;
  bad[3] = m->config().text.vocab_size;
  EXPECT_FALSE(m->prefill(cache, bad, pos, nullptr, false).is_ok());
  MropePositions wrong = pos;
  wrong.n = 19;
  EXPECT_FALSE(m->prefill(cache, ids, wrong, nullptr, false).is_ok());
  EXPECT_FALSE(m->decode(cache, -1).is_ok());

  KvCache full = m->new_cache(20);
  ASSERT_TRUE(m->prefill(full, ids, pos, nullptr, false).is_ok());
  EXPECT_FALSE(m->decode(full, 11).is_ok());
  EXPECT_EQ(full.len, 20);

  EXPECT_FALSE(Qwen3VLModel::load("/nonexistent-model-dir").is_ok());
}

// ---- dump ---------------------------------------------------------------------------------

TEST(ModelDump, NamesLayersAndShapes) {
  Qwen3VLModel* m = TinyModel::get();
  ASSERT_NE(m, nullptr);
  const ModelConfig& cfg = m->config();
  std::map<std::pair<std::string, int>, std::vector<int64_t>> seen;
  std::vector<float> merger_dump;
  m->set_dump([&](const std::string& name, int layer, const float* data, const std::vector<int64_t>& shape) {
    seen[{name, layer}] = shape;
    if (name == "vis.merger_out") merger_dump.assign(data, data + shape[0] * shape[1]);
  });
  VisionOutput v = encode_case(*m, "one_image_zh");
  const std::vector<int32_t> ids = Golden::get().ids("one_image_zh");
  KvCache cache = m->new_cache(128);
  auto r = m->prefill(cache, ids, positions("one_image_zh"), &v, false);
  m->set_dump(nullptr);
  ASSERT_TRUE(r.is_ok()) << r.message();
  auto shape = [&](const std::string& name, int layer) { return seen[{name, layer}]; };

  const int64_t N = 280, T = 90, H = cfg.text.hidden_size, VH = cfg.vision.hidden_size;
  EXPECT_EQ(shape("vis.patch_embed", -1), (std::vector<int64_t>{N, VH}));
  EXPECT_EQ(shape("vis.pos_embed", -1), (std::vector<int64_t>{N, VH}));
  for (int l = 0; l < cfg.vision.depth; ++l) {
    EXPECT_EQ(shape("vis.attn_out", l), (std::vector<int64_t>{N, VH})) << l;
    EXPECT_EQ(shape("vis.block_out", l), (std::vector<int64_t>{N, VH})) << l;
  }
  for (int l : cfg.vision.deepstack_visual_indexes)
    EXPECT_EQ(shape("vis.deepstack", l), (std::vector<int64_t>{70, H})) << l;
  EXPECT_EQ(merger_dump, v.embeds);
  EXPECT_EQ(shape("txt.embed", -1), (std::vector<int64_t>{T, H}));
  for (int l = 0; l < cfg.text.num_layers; ++l) {
    for (const char* name : {"txt.attn_norm", "txt.attn_out", "txt.ffn_norm", "txt.ffn_out", "txt.layer_out"})
      EXPECT_EQ(shape(name, l), (std::vector<int64_t>{T, H})) << name << " " << l;
    EXPECT_EQ(shape("txt.ffn_act", l), (std::vector<int64_t>{T, cfg.text.intermediate_size})) << l;
    EXPECT_EQ(shape("txt.q", l), (std::vector<int64_t>{T, cfg.text.num_heads, cfg.text.head_dim}));
    EXPECT_EQ(shape("txt.k", l), (std::vector<int64_t>{T, cfg.text.num_kv_heads, cfg.text.head_dim}));
    EXPECT_EQ(shape("txt.attn", l), (std::vector<int64_t>{T, cfg.text.num_heads, cfg.text.head_dim}));
  }
  // Last-token logits only: the head runs on one row.
  EXPECT_EQ(shape("txt.result_norm", -1), (std::vector<int64_t>{1, H}));
  EXPECT_EQ(shape("txt.logits", -1), (std::vector<int64_t>{1, cfg.text.vocab_size}));
}

// ---- consistency of the cache paths -------------------------------------------------------

// Chunked prefill (the image span cut across chunks) gives the one-shot logits.
TEST(ModelCache, ChunkedPrefillMatches) {
  Qwen3VLModel* m = TinyModel::get();
  ASSERT_NE(m, nullptr);
  const int64_t V = m->config().text.vocab_size;
  for (const char* c : {"one_image_zh", "two_images"}) {
    const std::vector<int32_t> ids = Golden::get().ids(c);
    const MropePositions pos = positions(c);
    VisionOutput v = encode_case(*m, c);
    KvCache a = m->new_cache(int64_t(ids.size())), b = m->new_cache(int64_t(ids.size()));
    auto whole = m->prefill(a, ids, pos, &v, true);
    m->set_prefill_chunk(7);
    auto chunked = m->prefill(b, ids, pos, &v, true);
    m->set_prefill_chunk(512);
    ASSERT_TRUE(whole.is_ok() && chunked.is_ok());
    ASSERT_EQ(whole->size(), chunked->size());
    EXPECT_LE(max_abs_diff(whole->data(), chunked->data(), whole->size()), 2e-5) << c;
    for (size_t l = 0; l < a.k.size(); ++l)
      EXPECT_LE(max_abs_diff(a.k[l].data(), b.k[l].data(), a.k[l].size()), 2e-5);
    const std::vector<float> last = Golden::get().f32(std::string(c) + ".logits_last");
    EXPECT_LE(max_abs_diff(chunked->data() + (ids.size() - 1) * V, last.data(), last.size()), 1e-4);
  }
}

// Prefill of a prefix, then a second prefill and single-token decodes for the rest, reproduce
// the logits of one prefill over the whole prompt.
TEST(ModelCache, ContinuedPrefillAndDecodeMatch) {
  Qwen3VLModel* m = TinyModel::get();
  ASSERT_NE(m, nullptr);
  const int64_t V = m->config().text.vocab_size;
  const std::vector<int32_t> ids = Golden::get().ids("text_only_en");
  const MropePositions pos = positions("text_only_en");
  const int64_t T = int64_t(ids.size());
  KvCache ref_cache = m->new_cache(T);
  auto ref = m->prefill(ref_cache, ids, pos, nullptr, true);
  ASSERT_TRUE(ref.is_ok());

  auto slice = [&](int64_t from, int64_t to) {
    MropePositions p;
    p.n = to - from;
    for (int a = 0; a < 3; ++a)
      for (int64_t i = from; i < to; ++i) p.pos.push_back(pos.pos[size_t(a * T + i)]);
    p.rope_delta = pos.rope_delta;
    return p;
  };
  KvCache cache = m->new_cache(T);
  std::vector<int32_t> a(ids.begin(), ids.begin() + 6), b(ids.begin() + 6, ids.begin() + 15);
  ASSERT_TRUE(m->prefill(cache, a, slice(0, 6), nullptr, false).is_ok());
  auto mid = m->prefill(cache, b, slice(6, 15), nullptr, true);
  ASSERT_TRUE(mid.is_ok());
  EXPECT_LE(max_abs_diff(mid->data(), ref->data() + 6 * V, size_t(9 * V)), 2e-5);
  for (int64_t t = 15; t < T; ++t) {
    auto step = m->decode(cache, ids[size_t(t)]);
    ASSERT_TRUE(step.is_ok());
    EXPECT_LE(max_abs_diff(step->data(), ref->data() + t * V, size_t(V)), 2e-5) << t;
  }
  EXPECT_EQ(cache.len, T);
  cache.reset();
  EXPECT_EQ(cache.len, 0);
}

// ---- M-RoPE ids on hand-made prompts ------------------------------------------------------

TEST(Mrope, WorkedExampleOfTheSpec) {
  // <|im_start|> user \n <|vision_start|> [256 pads: 512×512 image, 16×16 merged] <|vision_end|> a b
  const ModelConfig& cfg = TinyModel::get()->config();
  std::vector<int32_t> ids = {1, 2, 3, kVisionStart};
  ids.insert(ids.end(), 256, kImagePad);
  ids.insert(ids.end(), {kVisionEnd, 7, 8});
  auto p = compute_mrope_positions(ids, {{1, 32, 32}}, cfg);
  ASSERT_TRUE(p.is_ok()) << p.message();
  const int64_t L = int64_t(ids.size());
  auto at = [&](int axis, int64_t i) { return p->pos[size_t(axis * L + i)]; };
  for (int a = 0; a < 3; ++a)
    for (int64_t i = 0; i < 4; ++i) EXPECT_EQ(at(a, i), i);
  for (int64_t r = 0; r < 16; ++r)
    for (int64_t c = 0; c < 16; ++c) {
      const int64_t i = 4 + r * 16 + c;
      EXPECT_EQ(at(0, i), 4);
      EXPECT_EQ(at(1, i), 4 + r);
      EXPECT_EQ(at(2, i), 4 + c);
    }
  for (int a = 0; a < 3; ++a) {
    EXPECT_EQ(at(a, 260), 20);  // <|vision_end|>
    EXPECT_EQ(at(a, 262), 22);
  }
  EXPECT_EQ(p->rope_delta, 16 - 256);
}

TEST(Mrope, TextOnlyAndErrors) {
  const ModelConfig& cfg = TinyModel::get()->config();
  auto p = compute_mrope_positions({5, 6, 7}, {}, cfg);
  ASSERT_TRUE(p.is_ok());
  EXPECT_EQ(p->pos, (std::vector<int64_t>{0, 1, 2, 0, 1, 2, 0, 1, 2}));
  EXPECT_EQ(p->rope_delta, 0);
  EXPECT_FALSE(compute_mrope_positions({}, {}, cfg).is_ok());
  // A grid without an image in the prompt, and an image without a grid.
  EXPECT_FALSE(compute_mrope_positions({5, 6}, {{1, 2, 2}}, cfg).is_ok());
  EXPECT_FALSE(compute_mrope_positions({kVisionStart, kImagePad, kVisionEnd}, {}, cfg).is_ok());
  // A stray <|image_pad|> outside an image span.
  EXPECT_FALSE(
      compute_mrope_positions({kVisionStart, kImagePad, kVisionEnd, kImagePad}, {{1, 2, 2}}, cfg).is_ok());
  // Two frames (t = 2) of a 4×6 grid: T advances per frame.
  std::vector<int32_t> ids = {kVisionStart};
  ids.insert(ids.end(), 12, kImagePad);
  ids.push_back(kVisionEnd);
  p = compute_mrope_positions(ids, {{2, 4, 6}}, cfg);
  ASSERT_TRUE(p.is_ok()) << p.message();
  EXPECT_EQ(p->pos[1 + 6], 2);       // second frame: T = base + 1 (base = 1)
  EXPECT_EQ(p->pos[14 + 1 + 6], 1);  // H of its first row
  EXPECT_EQ(p->pos[13], 4);          // <|vision_end|> after max(1, 1, 2) + 1
  EXPECT_EQ(p->rope_delta, 5 - 14);
}

}  // namespace
}  // namespace ost::testing

namespace ost::testing {
namespace {

// The other shapes the reference script covers (tests/data/hf-extra): tied embeddings, a kv
// group of 3, 4.57-style rope config, vision head dims 24 and 16. No goldens here; the model
// must load, run, and agree with itself across the prefill and decode paths.
TEST(ModelShapes, ExtraConfigsRunConsistently) {
  for (const char* cfg_name : {"cfg_a", "cfg_b"}) {
    TempDir dir;
    TestModelOptions o;
    o.config_dir = std::string(OST_TEST_DATA) + "/hf-extra/" + cfg_name;
    o.seed = 7;
    o.out_dir = dir.path();
    Status st = write_test_model(o);
    ASSERT_TRUE(st.is_ok()) << st.message();
    auto loaded = Qwen3VLModel::load(dir.path());
    ASSERT_TRUE(loaded.is_ok()) << cfg_name << ": " << loaded.message();
    Qwen3VLModel& m = **loaded;
    const ModelConfig& cfg = m.config();

    const std::array<int, 3> grid = {1, 8, 12};
    const int64_t N = 96, merged = N / 4;
    std::vector<float> px(size_t(N * cfg.vision.patch_dim()));
    for (size_t i = 0; i < px.size(); ++i) px[i] = float(int(i * 7919 % 255)) / 127.5f - 1.0f;
    VisionInput in{px.data(), N, {grid}};
    auto vis = m.encode_images(in);
    ASSERT_TRUE(vis.is_ok()) << vis.message();
    EXPECT_EQ(vis->n_merged, merged);
    EXPECT_EQ(vis->deepstack.size(), cfg.vision.deepstack_visual_indexes.size());

    std::vector<int32_t> ids = {151644, 872, 198, kVisionStart};
    ids.insert(ids.end(), size_t(merged), kImagePad);
    ids.insert(ids.end(), {kVisionEnd, 3838, 374, 419, 30, 151645, 198});
    auto pos = compute_mrope_positions(ids, {grid}, cfg);
    ASSERT_TRUE(pos.is_ok()) << pos.message();
    EXPECT_EQ(pos->rope_delta, 6 - 24);
    const int64_t T = int64_t(ids.size()), V = cfg.text.vocab_size;
    KvCache whole = m.new_cache(T);
    auto all = m.prefill(whole, ids, *pos, &*vis, true);
    ASSERT_TRUE(all.is_ok()) << all.message();
    for (float x : *all) ASSERT_TRUE(std::isfinite(x));

    // The prompt up to the last 4 tokens, then those 4 one by one.
    const int64_t cut = T - 4;
    MropePositions head;
    head.n = cut;
    for (int a = 0; a < 3; ++a)
      for (int64_t i = 0; i < cut; ++i) head.pos.push_back(pos->pos[size_t(a * T + i)]);
    head.rope_delta = pos->rope_delta;
    KvCache cache = m.new_cache(T);
    auto first = m.prefill(cache, std::vector<int32_t>(ids.begin(), ids.begin() + cut), head, &*vis, false);
    ASSERT_TRUE(first.is_ok()) << first.message();
    EXPECT_LE(max_abs_diff(first->data(), all->data() + (cut - 1) * V, size_t(V)), 2e-5) << cfg_name;
    for (int64_t t = cut; t < T; ++t) {
      auto step = m.decode(cache, ids[size_t(t)]);
      ASSERT_TRUE(step.is_ok()) << step.message();
      EXPECT_LE(max_abs_diff(step->data(), all->data() + t * V, size_t(V)), 2e-5) << cfg_name << " " << t;
    }
  }
}

}  // namespace
}  // namespace ost::testing
