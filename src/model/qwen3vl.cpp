// Qwen3VLModel: loading, argument checks, prefill chunking and decode steps around the graph
// functions of vision.cpp and text.cpp.
#include "model/qwen3vl.h"

#include <algorithm>

#include "model/graph.h"

namespace ost {

Qwen3VLModel::Qwen3VLModel() = default;
Qwen3VLModel::~Qwen3VLModel() = default;

Result<std::unique_ptr<Qwen3VLModel>> Qwen3VLModel::load(const std::string& dir,
                                                         const quant::QuantConfig& quant_at_load) {
  auto cfg = load_folder_configs(dir);
  OST_TRY(cfg.status());
  auto w = load_weights(dir, cfg->model, quant_at_load);
  if (!w) return Error{w.message()};
  std::unique_ptr<Qwen3VLModel> m(new Qwen3VLModel());
  m->cfg_ = std::move(*cfg);
  m->w_ = std::move(*w);
  m->kv_dtype_ = quant_at_load.kv_cache;
  return m;
}

const ModelConfig& Qwen3VLModel::config() const { return cfg_.model; }
const GenerationConfig& Qwen3VLModel::generation() const { return cfg_.generation; }
const PreprocessorConfig& Qwen3VLModel::preprocessor() const { return cfg_.preprocessor; }
void Qwen3VLModel::set_dump(DumpFn fn) { dump_ = std::move(fn); }
void Qwen3VLModel::set_prefill_chunk(int64_t tokens) { prefill_chunk_ = std::max<int64_t>(tokens, 1); }

Result<VisionOutput> Qwen3VLModel::encode_images(const VisionInput& in) {
  return vision_forward(cfg_.model.vision, w_->vision, in, Dumper{&dump_});
}

KvCache Qwen3VLModel::new_cache(int64_t capacity) const { return new_cache(capacity, kv_dtype_); }

KvCache Qwen3VLModel::new_cache(int64_t capacity, quant::KvDType dtype) const {
  const TextConfig& c = cfg_.model.text;
  KvCache kv;
  kv.capacity = capacity;
  const size_t vectors = size_t(capacity) * c.num_kv_heads, per_layer = vectors * c.head_dim;
  const size_t L = size_t(c.num_layers);
  if (dtype == quant::KvDType::FP8) {
    kv.fp8 = true;
    kv.k8.assign(L, std::vector<uint8_t>(per_layer));
    kv.v8.assign(L, std::vector<uint8_t>(per_layer));
    kv.k_scale.assign(L, std::vector<float>(vectors));
    kv.v_scale.assign(L, std::vector<float>(vectors));
  } else {
    kv.k.assign(L, std::vector<float>(per_layer));
    kv.v.assign(L, std::vector<float>(per_layer));
  }
  return kv;
}

Result<std::vector<float>> Qwen3VLModel::prefill(KvCache& cache, const std::vector<int32_t>& ids,
                                                 const MropePositions& pos, const VisionOutput* vision,
                                                 bool all_logits) {
  const ModelConfig& cfg = cfg_.model;
  const int64_t n = int64_t(ids.size()), H = cfg.text.hidden_size, V = cfg.text.vocab_size;
  if (n == 0) return make_error("prefill: no tokens");
  if (pos.n != n || int64_t(pos.pos.size()) != 3 * n)
    return make_error("prefill: %lld tokens but positions for %lld", (long long)n, (long long)pos.n);
  if (cache.layers() != size_t(cfg.text.num_layers))
    return make_error("prefill: the KV cache was not made by this model");
  if (cache.len + n > cache.capacity)
    return make_error("prefill: %lld tokens do not fit the KV cache (%lld of %lld used)", (long long)n,
                      (long long)cache.len, (long long)cache.capacity);
  for (int64_t i = 0; i < n; ++i)
    if (ids[i] < 0 || ids[i] >= V)
      return make_error("prefill: token id %d at %lld is outside the vocabulary (%lld)", ids[i], (long long)i,
                        (long long)V);
  const int64_t pads = std::count(ids.begin(), ids.end(), cfg.image_token_id);
  const int64_t rows = vision ? vision->n_merged : 0;
  if (pads != rows)
    return make_error(
        "prefill: the prompt has %lld <|image_pad|> tokens but %lld image "
        "embeddings were given",
        (long long)pads, (long long)rows);
  if (vision) {
    if (int64_t(vision->embeds.size()) != rows * H ||
        vision->deepstack.size() != cfg.vision.deepstack_visual_indexes.size())
      return make_error("prefill: the vision output does not match this model");
    for (const auto& d : vision->deepstack)
      if (int64_t(d.size()) != rows * H)
        return make_error("prefill: the vision output does not match this model");
  }

  std::vector<float> logits(size_t((all_logits ? n : 1) * V));
  int64_t image_row = 0;  // vision rows consumed by earlier chunks
  for (int64_t c0 = 0; c0 < n; c0 += prefill_chunk_) {
    const int64_t cn = std::min(prefill_chunk_, n - c0);
    const bool last = c0 + cn == n;
    TextBatch b;
    b.ids = ids.data() + c0;
    b.n = cn;
    for (int a = 0; a < 3; ++a) b.pos[a] = pos.pos.data() + a * n + c0;
    b.n_image_rows = std::count(b.ids, b.ids + cn, cfg.image_token_id);
    if (b.n_image_rows > 0) {
      b.image_rows = vision->embeds.data() + image_row * H;
      for (const auto& d : vision->deepstack) b.deepstack_rows.push_back(d.data() + image_row * H);
    }
    float* out = nullptr;
    if (all_logits) {
      b.logits_from = 0;
      out = logits.data() + c0 * V;
    } else {
      b.logits_from = last ? cn - 1 : cn;
      out = logits.data();
    }
    OST_TRY(text_forward(cfg, w_->text, cache, b, Dumper{&dump_}, out));
    cache.len += cn;
    image_row += b.n_image_rows;
  }
  cache.rope_delta = pos.rope_delta;
  return logits;
}

Result<std::vector<float>> Qwen3VLModel::decode(KvCache& cache, int32_t id) {
  const ModelConfig& cfg = cfg_.model;
  if (cache.layers() != size_t(cfg.text.num_layers))
    return make_error("decode: the KV cache was not made by this model");
  if (cache.len + 1 > cache.capacity)
    return make_error("decode: the KV cache is full (%lld tokens)", (long long)cache.capacity);
  if (id < 0 || id >= cfg.text.vocab_size)
    return make_error("decode: token id %d is outside the vocabulary", id);
  const int64_t p = cache.len + cache.rope_delta;
  TextBatch b;  // no image rows: a sampled <|image_pad|> is embedded like any other token
  b.ids = &id;
  b.n = 1;
  for (int a = 0; a < 3; ++a) b.pos[a] = &p;
  std::vector<float> logits(size_t(cfg.text.vocab_size));
  OST_TRY(text_forward(cfg, w_->text, cache, b, Dumper{&dump_}, logits.data()));
  cache.len += 1;
  return logits;
}

}  // namespace ost
