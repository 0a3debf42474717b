#include "model/runner.h"

#include <algorithm>
#include <cmath>

namespace ost {

Result<std::vector<float>> ModelRunner::decode_batch(const std::vector<SequenceState*>& seqs,
                                                     const std::vector<int32_t>& ids) {
  if (seqs.size() != ids.size()) return make_error("decode_batch: %zu sequences, %zu ids", seqs.size(), ids.size());
  const size_t vocab = size_t(config().text.vocab_size);
  std::vector<float> out;
  out.reserve(seqs.size() * vocab);
  for (size_t i = 0; i < seqs.size(); ++i) {
    auto r = decode(*seqs[i], ids[i]);
    if (!r) return Error{r.message()};
    out.insert(out.end(), r->begin(), r->end());
  }
  return out;
}

VisionOutput slice_vision(const VisionOutput& v, int64_t a, int64_t b) {
  VisionOutput out;
  out.n_merged = b - a;
  if (v.n_merged == 0) return out;
  const size_t dim = v.embeds.size() / size_t(v.n_merged);
  out.embeds.assign(v.embeds.begin() + a * int64_t(dim), v.embeds.begin() + b * int64_t(dim));
  for (auto& d : v.deepstack) {
    const size_t dd = d.size() / size_t(v.n_merged);
    out.deepstack.emplace_back(d.begin() + a * int64_t(dd), d.begin() + b * int64_t(dd));
  }
  return out;
}

static GreedyToken greedy_token(const float* x, int vocab, const std::vector<int32_t>& excluded) {
  GreedyToken t;
  // As Sampler::sample at temperature 0 over logits whose excluded ids are -inf: the lowest id
  // among equal maxima.
  int best = -1;
  for (int i = 0; i < vocab; ++i) {
    if (std::find(excluded.begin(), excluded.end(), i) != excluded.end()) continue;
    if (best < 0 || x[i] > x[best]) best = i;
  }
  if (best < 0) best = 0;
  t.id = best;
  // As top_logprobs (engine/sampler.cpp): log-sum-exp in double around the max.
  float mx = -INFINITY;
  for (int i = 0; i < vocab; ++i) mx = std::max(mx, x[i]);
  double sum = 0.0;
  for (int i = 0; i < vocab; ++i) sum += std::exp(double(x[i]) - mx);
  const float lse = float(mx + std::log(sum));
  t.logprob = x[best] - lse;
  return t;
}

Result<std::vector<GreedyToken>> ModelRunner::decode_batch_argmax(const std::vector<SequenceState*>& seqs,
                                                                  const std::vector<int32_t>& ids) {
  auto logits = decode_batch(seqs, ids);
  if (!logits) return Error{logits.message()};
  const int vocab = config().text.vocab_size;
  std::vector<GreedyToken> out(seqs.size());
  for (size_t i = 0; i < seqs.size(); ++i) out[i] = greedy_token(logits->data() + i * size_t(vocab), vocab, excluded_tokens_);
  return out;
}

Result<MixedStepOutput> ModelRunner::mixed_step(const std::vector<PrefillChunk>& chunks,
                                                const std::vector<SequenceState*>& decode,
                                                const std::vector<int32_t>& decode_ids, bool greedy) {
  MixedStepOutput out;
  for (const PrefillChunk& c : chunks) {
    const int64_t pads = std::count(c.ids.begin(), c.ids.end(), config().image_token_id);
    const VisionOutput* v = pads > 0 ? c.vision : nullptr;
    VisionOutput part;
    if (v && (c.vision_from != 0 || pads != v->n_merged)) {  // part of the rows: cut them
      if (c.vision_from < 0 || c.vision_from + pads > v->n_merged)
        return make_error("mixed_step: image rows %lld..%lld of %lld", (long long)c.vision_from,
                          (long long)(c.vision_from + pads), (long long)v->n_merged);
      if (v->embeds.empty()) return make_error("mixed_step: part of the image rows, which are on a device");
      part = slice_vision(*v, c.vision_from, c.vision_from + pads);
      v = &part;
    }
    auto l = prefill(*c.seq, c.ids, c.pos, v, false);
    if (!l) return Error{l.message()};
    out.chunk_logits.push_back(c.logits ? std::move(*l) : std::vector<float>());
  }
  if (decode.empty()) return out;
  if (greedy) {
    auto g = decode_batch_argmax(decode, decode_ids);
    if (!g) return Error{g.message()};
    out.decode_tokens = std::move(*g);
  } else {
    auto l = decode_batch(decode, decode_ids);
    if (!l) return Error{l.message()};
    out.decode_logits = std::move(*l);
  }
  return out;
}

int64_t ModelRunner::kv_bytes_per_token() const {
  const TextConfig& t = config().text;
  return int64_t(t.num_layers) * 2 * t.num_kv_heads * t.head_dim * 4;
}

Result<MixedStepOutput> ModelRunner::mixed_step_candidates(const std::vector<PrefillChunk>& chunks,
                                                           const std::vector<SequenceState*>& decode,
                                                           const std::vector<int32_t>& decode_ids,
                                                           const std::vector<CandidateSpec>& specs) {
  if (specs.size() != decode.size())
    return make_error("mixed_step_candidates: %zu decode rows, %zu specs", decode.size(), specs.size());
  auto out = mixed_step(chunks, decode, decode_ids, /*greedy=*/false);
  if (!out) return Error{out.message()};
  const int vocab = config().text.vocab_size;
  out->decode_tokens.resize(decode.size());
  out->decode_candidates.resize(decode.size());
  for (size_t i = 0; i < decode.size(); ++i) {
    const float* x = out->decode_logits.data() + i * size_t(vocab);
    const CandidateSpec& s = specs[i];
    if (s.top > 0 || s.raw_top > 0) out->decode_candidates[i] = compute_candidates(x, vocab, s, excluded_tokens_);
    else out->decode_tokens[i] = greedy_token(x, vocab, excluded_tokens_);
  }
  return out;
}

Result<std::vector<float>> ModelRunner::decode_row_logits(int row) {
  return make_error("decode_row_logits: this runner returns the logits with its candidates");
}

Status ModelRunner::set_excluded_tokens(const std::vector<int32_t>& ids) {
  if (ids.size() > 15) return make_error("at most 15 excluded token ids (%zu given)", ids.size());
  excluded_tokens_ = ids;
  return Status::ok();
}

Result<std::unique_ptr<SequenceState>> ModelRunner::new_paged_sequence(int64_t cached) {
  return make_error("this runner keeps a KV cache per sequence (no engine pages)");
}

Status ModelRunner::set_block_table(SequenceState& s, const std::vector<int>& blocks) {
  return make_error("this runner keeps a KV cache per sequence (no engine pages)");
}

namespace {

constexpr int kCpuBlock = 16;  // tokens per engine block (engine pages)

// Grows every layer of `c` to `capacity` tokens, keeping what is written.
void grow_cache(KvCache& c, int64_t capacity, const TextConfig& t) {
  if (capacity <= c.capacity) return;
  const size_t vectors = size_t(capacity) * t.num_kv_heads, values = vectors * t.head_dim;
  for (size_t l = 0; l < c.layers(); ++l) {
    if (c.fp8) {
      c.k8[l].resize(values);
      c.v8[l].resize(values);
      c.k_scale[l].resize(vectors);
      c.v_scale[l].resize(vectors);
    } else {
      c.k[l].resize(values);
      c.v[l].resize(values);
    }
  }
  c.capacity = capacity;
}

// Copies the K and V of token `from` of `src` to token `to` of `dst` (all layers, one dtype).
void copy_token(const KvCache& src, int64_t from, KvCache& dst, int64_t to, const TextConfig& t) {
  const int64_t nv = t.num_kv_heads, nx = nv * t.head_dim;
  auto row = [](const auto& a, auto& b, int64_t width, int64_t i, int64_t o) {
    std::copy(a.begin() + i * width, a.begin() + (i + 1) * width, b.begin() + o * width);
  };
  for (size_t l = 0; l < src.layers(); ++l) {
    if (src.fp8) {
      row(src.k8[l], dst.k8[l], nx, from, to);
      row(src.v8[l], dst.v8[l], nx, from, to);
      row(src.k_scale[l], dst.k_scale[l], nv, from, to);
      row(src.v_scale[l], dst.v_scale[l], nv, from, to);
    } else {
      row(src.k[l], dst.k[l], nx, from, to);
      row(src.v[l], dst.v[l], nx, from, to);
    }
  }
}

// With engine pages the model still runs on a contiguous cache per sequence (the oracle's
// layout), and the pool of engine blocks is the store between sequences: a prefix hit copies
// its blocks in, and every token computed is copied out to its block.
class CpuSequence final : public SequenceState {
 public:
  explicit CpuSequence(KvCache c) : cache(std::move(c)) {}
  int64_t length() const override { return std::max(cache.len, cached); }  // the hit counts before it is read
  KvCache cache;
  bool paged = false;
  std::vector<int> blocks;  // engine block ids (paged)
  int64_t cached = 0;       // leading tokens to read from the pool when the table comes (paged)
  int64_t stored = 0;       // tokens [0, stored) are in the pool (paged)
};

class CpuRunner final : public ModelRunner {
 public:
  CpuRunner(std::unique_ptr<Qwen3VLModel> m, bool engine_pages) : m_(std::move(m)), engine_pages_(engine_pages) {
    if (engine_pages_) pool_ = m_->new_cache(0);
  }
  const ModelConfig& config() const override { return m_->config(); }
  const GenerationConfig& generation() const override { return m_->generation(); }
  const PreprocessorConfig& preprocessor() const override { return m_->preprocessor(); }
  std::string device_name() const override { return "cpu"; }
  Result<VisionOutput> encode_images(const VisionInput& in) override { return m_->encode_images(in); }
  Result<std::unique_ptr<SequenceState>> new_sequence(int64_t capacity) override {
    return std::unique_ptr<SequenceState>(new CpuSequence(m_->new_cache(capacity)));
  }
  bool pages_from_engine() const override { return engine_pages_; }
  int kv_block_tokens() const override { return engine_pages_ ? kCpuBlock : 0; }
  Result<std::unique_ptr<SequenceState>> new_paged_sequence(int64_t cached) override {
    if (!engine_pages_) return ModelRunner::new_paged_sequence(cached);
    if (cached < 0 || cached % kCpuBlock != 0)
      return make_error("new_paged_sequence: %lld cached tokens is not a multiple of the block size %d",
                        (long long)cached, kCpuBlock);
    auto s = std::make_unique<CpuSequence>(m_->new_cache(0));
    s->paged = true;
    s->cached = s->stored = cached;
    return std::unique_ptr<SequenceState>(std::move(s));
  }
  Status set_block_table(SequenceState& st, const std::vector<int>& blocks) override {
    auto& s = static_cast<CpuSequence&>(st);
    if (!s.paged) return ModelRunner::set_block_table(st, blocks);
    if (blocks.size() < s.blocks.size() || !std::equal(s.blocks.begin(), s.blocks.end(), blocks.begin()))
      return make_error("set_block_table: a sequence's block table may only grow");
    int top = -1;
    for (int b : blocks) top = std::max(top, b);
    if (blocks.empty() || *std::min_element(blocks.begin(), blocks.end()) < 0)
      return make_error("set_block_table: no blocks or a negative block id");
    const int64_t tokens = int64_t(blocks.size()) * kCpuBlock;
    if (s.cached > tokens)
      return make_error("set_block_table: %lld cached tokens but %zu blocks", (long long)s.cached, blocks.size());
    const TextConfig& t = config().text;
    grow_cache(pool_, int64_t(top + 1) * kCpuBlock, t);
    grow_cache(s.cache, tokens, t);
    s.blocks = blocks;
    if (s.cache.len < s.cached) {  // the prefix hit: read the cached blocks
      for (int64_t i = 0; i < s.cached; ++i) copy_token(pool_, slot(s, i), s.cache, i, t);
      s.cache.len = s.cached;
    }
    return Status::ok();
  }
  Result<std::vector<float>> prefill(SequenceState& st, const std::vector<int32_t>& ids, const MropePositions& pos,
                                     const VisionOutput* vision, bool all_logits) override {
    auto& s = static_cast<CpuSequence&>(st);
    OST_TRY(check_table(s, int64_t(ids.size())));
    auto r = m_->prefill(s.cache, ids, pos, vision, all_logits);
    store(s);
    return r;
  }
  Result<std::vector<float>> decode(SequenceState& st, int32_t id) override {
    auto& s = static_cast<CpuSequence&>(st);
    OST_TRY(check_table(s, 1));
    auto r = m_->decode(s.cache, id);
    store(s);
    return r;
  }
  void set_dump(DumpFn fn) override { m_->set_dump(std::move(fn)); }
  int64_t kv_bytes_per_token() const override {
    if (m_->kv_cache_dtype() != quant::KvDType::FP8) return ModelRunner::kv_bytes_per_token();
    const TextConfig& t = config().text;  // e4m3 codes + one f32 scale per (token, kv head)
    return int64_t(t.num_layers) * 2 * t.num_kv_heads * (t.head_dim + 4);
  }

 private:
  int64_t slot(const CpuSequence& s, int64_t i) const { return int64_t(s.blocks[size_t(i / kCpuBlock)]) * kCpuBlock + i % kCpuBlock; }
  Status check_table(const CpuSequence& s, int64_t n) const {
    if (!s.paged) return Status::ok();
    if (s.cache.len < s.cached) return make_error("paged sequence: no block table given yet");
    if (s.cache.len + n > int64_t(s.blocks.size()) * kCpuBlock)
      return make_error("paged sequence: %lld tokens after %lld do not fit its %zu blocks", (long long)n,
                        (long long)s.cache.len, s.blocks.size());
    return Status::ok();
  }
  // Copies the tokens computed since the last call to their engine blocks. Only positions at or
  // beyond the cached prefix are ever written: blocks shared with other sequences stay as read.
  void store(CpuSequence& s) {
    if (!s.paged) return;
    OST_CHECK(s.stored >= s.cached);
    for (; s.stored < s.cache.len; ++s.stored) copy_token(s.cache, s.stored, pool_, slot(s, s.stored), config().text);
  }

  std::unique_ptr<Qwen3VLModel> m_;
  bool engine_pages_ = false;
  KvCache pool_;  // engine pages: token b·16 + i of the pool is token i of engine block b
};

}  // namespace

Result<std::unique_ptr<ModelRunner>> load_cpu_runner(const std::string& dir, const quant::QuantConfig& quant_at_load,
                                                     bool engine_pages) {
  auto m = Qwen3VLModel::load(dir, quant_at_load);
  if (!m) return Error{m.message()};
  return std::unique_ptr<ModelRunner>(new CpuRunner(std::move(*m), engine_pages));
}

#ifndef OSTRAKON_HAVE_CUDA
Result<std::unique_ptr<ModelRunner>> load_cuda_runner(const std::string&, const quant::QuantConfig&) {
  return make_error("this build has no CUDA backend (built without nvcc); use --device cpu");
}
bool cuda_available() { return false; }
#endif

}  // namespace ost
