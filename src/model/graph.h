// Internal pieces of the Qwen3-VL graph, shared by vision.cpp, text.cpp, mrope.cpp and
// qwen3vl.cpp. Not part of the public API.
#pragma once
#include <initializer_list>
#include <vector>

#include "model/qwen3vl.h"
#include "model/weights.h"

namespace ost {

// Forwards a named intermediate to the DumpFn when one is set (no cost otherwise).
struct Dumper {
  const DumpFn* fn = nullptr;
  bool on() const { return fn && *fn; }
  void operator()(const char* name, int layer, const float* data,
                  std::initializer_list<int64_t> shape) const {
    if (on()) (*fn)(name, layer, data, std::vector<int64_t>(shape));
  }
};

// Vision tower: patches of all images -> merged embeddings + deepstack features.
Result<VisionOutput> vision_forward(const VisionConfig& c, const VisionWeights& w, const VisionInput& in,
                                    const Dumper& dump);

// One run of tokens through the decoder: a prefill chunk or a decode step. Tokens go at cache
// rows [cache.len, cache.len + n); the caller advances cache.len.
struct TextBatch {
  const int32_t* ids = nullptr;  // [n], checked < vocab
  int64_t n = 0;
  const int64_t* pos[3] = {nullptr, nullptr, nullptr};  // M-RoPE ids (t, h, w) of the n tokens
  // Rows for this batch's <|image_pad|> tokens, in token order (exactly one per such token);
  // with none (decode), an <|image_pad|> id is embedded like any other token.
  const float* image_rows = nullptr;  // f32 [n_image_rows, hidden]
  int64_t n_image_rows = 0;
  std::vector<const float*> deepstack_rows;  // per deepstack layer, aligned with image_rows
  int64_t logits_from = 0;                   // logits for tokens [logits_from, n)
};

// logits: f32 [n - logits_from, vocab].
Status text_forward(const ModelConfig& cfg, const TextWeights& w, KvCache& cache, const TextBatch& b,
                    const Dumper& dump, float* logits);

// Text rope tables for interleaved M-RoPE: cos, sin f32 [n, head_dim/2].
// Frequency slot i (angle pos·θ^(-2i/head_dim), fp32) takes its position from axis H when
// i % 3 == 1 and i < 3·section[1], from W when i % 3 == 2 and i < 3·section[2], else from T.
void mrope_tables(const TextConfig& c, const int64_t* const pos[3], int64_t n, float* cos, float* sin);

}  // namespace ost
