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
    auto l = prefill(*c.seq, c.ids, c.pos, c.vision, false);
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

namespace {

class CpuSequence final : public SequenceState {
 public:
  explicit CpuSequence(KvCache c) : cache(std::move(c)) {}
  int64_t length() const override { return cache.len; }
  KvCache cache;
};

class CpuRunner final : public ModelRunner {
 public:
  explicit CpuRunner(std::unique_ptr<Qwen3VLModel> m) : m_(std::move(m)) {}
  const ModelConfig& config() const override { return m_->config(); }
  const GenerationConfig& generation() const override { return m_->generation(); }
  const PreprocessorConfig& preprocessor() const override { return m_->preprocessor(); }
  std::string device_name() const override { return "cpu"; }
  Result<VisionOutput> encode_images(const VisionInput& in) override { return m_->encode_images(in); }
  Result<std::unique_ptr<SequenceState>> new_sequence(int64_t capacity) override {
    return std::unique_ptr<SequenceState>(new CpuSequence(m_->new_cache(capacity)));
  }
  Result<std::vector<float>> prefill(SequenceState& s, const std::vector<int32_t>& ids, const MropePositions& pos,
                                     const VisionOutput* vision, bool all_logits) override {
    return m_->prefill(static_cast<CpuSequence&>(s).cache, ids, pos, vision, all_logits);
  }
  Result<std::vector<float>> decode(SequenceState& s, int32_t id) override {
    return m_->decode(static_cast<CpuSequence&>(s).cache, id);
  }
  void set_dump(DumpFn fn) override { m_->set_dump(std::move(fn)); }
  int64_t kv_bytes_per_token() const override {
    if (m_->kv_cache_dtype() != quant::KvDType::FP8) return ModelRunner::kv_bytes_per_token();
    const TextConfig& t = config().text;  // e4m3 codes + one f32 scale per (token, kv head)
    return int64_t(t.num_layers) * 2 * t.num_kv_heads * (t.head_dim + 4);
  }

 private:
  std::unique_ptr<Qwen3VLModel> m_;
};

}  // namespace

Result<std::unique_ptr<ModelRunner>> load_cpu_runner(const std::string& dir, const quant::QuantConfig& quant_at_load) {
  auto m = Qwen3VLModel::load(dir, quant_at_load);
  if (!m) return Error{m.message()};
  return std::unique_ptr<ModelRunner>(new CpuRunner(std::move(*m)));
}

#ifndef OSTRAKON_HAVE_CUDA
Result<std::unique_ptr<ModelRunner>> load_cuda_runner(const std::string&, const quant::QuantConfig&) {
  return make_error("this build has no CUDA backend (built without nvcc); use --device cpu");
}
bool cuda_available() { return false; }
#endif

}  // namespace ost
