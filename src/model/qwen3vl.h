// Qwen3-VL forward on the backend ops: vision tower (patch embed, 2-D rope blocks, merger,
// deepstack mergers), M-RoPE position ids, and the text decoder with a KV cache.
//
// Numerics: every activation is fp32 and every weight is used at its checkpoint precision
// (bf16 stays bf16 in the memory map and is widened on the fly), so on bf16 checkpoints this
// matches the Hugging Face reference run in float32 to ~1e-5. It is the oracle the other
// backends are tested against.
#pragma once
#include <array>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "core/status.h"
#include "io/config.h"
#include "vision/image.h"
#include "vision/preprocess.h"

namespace ost {

struct VisionInput {
  const float* pixel_values = nullptr;  // f32 [num_patches, patch_dim], merge-block order
  int64_t num_patches = 0;
  std::vector<std::array<int, 3>> grid_thw;  // per image (t, h, w) in patches
  // A runner with device memory may keep the output there (VisionOutput::device) and leave the
  // host vectors empty; only the runner that made such an output can prefill with it.
  bool keep_on_device = false;
  // Instead of pixel_values, for a runner whose takes_rgb() is true: per image (t = 1), the RGB8
  // image at its grid size (grid_h·patch × grid_w·patch, see plan_patches) and the
  // normalisation table; the runner cuts the patches itself (preprocess_image's values).
  std::vector<const Image*> rgb;
  const NormalizeTable* lut = nullptr;
};

struct VisionOutput {
  std::vector<float> embeds;                  // f32 [n_merged, out_hidden]
  std::vector<std::vector<float>> deepstack;  // per deepstack layer, f32 [n_merged, out_hidden]
  int64_t n_merged = 0;
  std::shared_ptr<void> device;  // the runner's own copy of embeds and deepstack, when kept there
};

struct MropePositions {
  std::vector<int64_t> pos;  // [3][n]: axis-major (t, h, w)
  int64_t n = 0;
  int64_t rope_delta = 0;  // decode position = cache length + rope_delta
};

// The reference's get_rope_index for one unpadded sequence: an image span is <|vision_start|>
// followed by t·(h/m)·(w/m) <|image_pad|> tokens, matched to grid_thw in order. Text tokens
// advance all three axes together; image tokens get (T, H, W) = base + (ti, row, col).
Result<MropePositions> compute_mrope_positions(const std::vector<int32_t>& ids,
                                               const std::vector<std::array<int, 3>>& grid_thw,
                                               const ModelConfig& cfg);

// Keys and values of every decoder layer for one sequence: f32, or with fp8 the e4m3 codes and
// one scale per (token, kv head) (quant::quantize_kv_fp8); attention then reads the dequantized
// values.
struct KvCache {
  std::vector<std::vector<float>> k;  // per layer f32 [capacity, n_kv_heads, head_dim] (not fp8)
  std::vector<std::vector<float>> v;  // per layer f32 [capacity, n_kv_heads, head_dim] (not fp8)
  bool fp8 = false;
  std::vector<std::vector<uint8_t>> k8, v8;        // fp8: per layer e4m3 [capacity, n_kv_heads, head_dim]
  std::vector<std::vector<float>> k_scale, v_scale;  // fp8: per layer f32 [capacity, n_kv_heads]
  size_t layers() const { return fp8 ? k8.size() : k.size(); }
  int64_t capacity = 0;
  int64_t len = 0;         // tokens written
  int64_t rope_delta = 0;  // set by prefill, used by decode
  void reset() {
    len = 0;
    rope_delta = 0;
  }
};

// Called at every named intermediate when set: name (e.g. "txt.attn_out"), layer (-1 when not
// per layer), the data and its shape. Only valid during the call.
using DumpFn = std::function<void(const std::string& name, int layer, const float* data,
                                  const std::vector<int64_t>& shape)>;

struct ModelWeights;

class Qwen3VLModel {
 public:
  // Reads the configs of `dir` and maps its checkpoint (names and shapes checked).
  // quant_at_load: quantize the text decoder's bf16 linears as they are read (run --quant).
  static Result<std::unique_ptr<Qwen3VLModel>> load(const std::string& dir,
                                                    const quant::QuantConfig& quant_at_load = {});
  ~Qwen3VLModel();

  const ModelConfig& config() const;
  const GenerationConfig& generation() const;
  const PreprocessorConfig& preprocessor() const;

  // All images of one request in one pass (attention stays within each image).
  Result<VisionOutput> encode_images(const VisionInput& in);

  // A cache in the dtype the model was loaded with (quant_at_load.kv_cache), or the one given.
  KvCache new_cache(int64_t capacity) const;
  KvCache new_cache(int64_t capacity, quant::KvDType dtype) const;
  quant::KvDType kv_cache_dtype() const { return kv_dtype_; }

  // Runs ids through the decoder after the cache's current contents (pos must describe these ids
  // and continue the cached sequence). Image embeddings replace the <|image_pad|> tokens in order
  // (their count must equal vision->n_merged) and the deepstack features are added to those
  // tokens after decoder layers 0..k-1. Writes K/V, sets cache.rope_delta = pos.rope_delta.
  // Returns logits f32 [n, vocab] if all_logits, else [1, vocab] for the last token.
  Result<std::vector<float>> prefill(KvCache& cache, const std::vector<int32_t>& ids,
                                     const MropePositions& pos, const VisionOutput* vision, bool all_logits);

  // One token at position cache.len + cache.rope_delta (all three axes). Logits f32 [1, vocab].
  Result<std::vector<float>> decode(KvCache& cache, int32_t id);

  void set_dump(DumpFn fn);

  // Prefill runs in chunks of at most this many tokens (default 512) so activation memory stays
  // bounded for long prompts; each chunk attends to the cache the earlier ones wrote.
  void set_prefill_chunk(int64_t tokens);

 private:
  Qwen3VLModel();
  FolderConfigs cfg_;
  std::unique_ptr<ModelWeights> w_;
  DumpFn dump_;
  int64_t prefill_chunk_ = 512;
  quant::KvDType kv_dtype_ = quant::KvDType::BF16;
};

}  // namespace ost
