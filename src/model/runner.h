// The interface the engine drives a model through, whatever the backend: the CPU oracle
// (Qwen3VLModel) or the CUDA runner. One SequenceState per request holds its KV cache.
#pragma once
#include <memory>
#include <string>
#include <vector>

#include "model/qwen3vl.h"

namespace ost {

class SequenceState {
 public:
  virtual ~SequenceState() = default;
  virtual int64_t length() const = 0;  // tokens in the KV cache
};

// A greedy choice: the largest logit (the lowest id among equal maxima) and its log-probability
// under the raw distribution, log_softmax(logits)[id].
struct GreedyToken {
  int32_t id = 0;
  float logprob = 0.0f;
};

class ModelRunner {
 public:
  virtual ~ModelRunner() = default;
  virtual const ModelConfig& config() const = 0;
  virtual const GenerationConfig& generation() const = 0;
  virtual const PreprocessorConfig& preprocessor() const = 0;
  virtual std::string device_name() const = 0;

  virtual Result<VisionOutput> encode_images(const VisionInput& in) = 0;
  // Whether encode_images accepts VisionInput::rgb (the runner cuts the patches itself).
  virtual bool takes_rgb() const { return false; }
  virtual Result<std::unique_ptr<SequenceState>> new_sequence(int64_t capacity) = 0;
  // As Qwen3VLModel::prefill / decode. Logits f32 [n or 1, vocab] on the host.
  virtual Result<std::vector<float>> prefill(SequenceState& s, const std::vector<int32_t>& ids,
                                             const MropePositions& pos, const VisionOutput* vision,
                                             bool all_logits) = 0;
  virtual Result<std::vector<float>> decode(SequenceState& s, int32_t id) = 0;
  // One decode step for several sequences (continuous batching): logits f32 [n, vocab].
  // The default runs them one by one.
  virtual Result<std::vector<float>> decode_batch(const std::vector<SequenceState*>& seqs,
                                                  const std::vector<int32_t>& ids);
  // One decode step as decode_batch, returning only each sequence's greedy next token, so a
  // runner on a device can keep the logits there. The default takes decode_batch's logits and
  // computes the choice on the host exactly as the engine's Sampler (greedy, no penalties) and
  // top_logprobs do, so results are bit-identical to that path.
  virtual Result<std::vector<GreedyToken>> decode_batch_argmax(const std::vector<SequenceState*>& seqs,
                                                               const std::vector<int32_t>& ids);
  virtual void set_dump(DumpFn fn) {}
};

// The CPU oracle behind the runner interface.
// quant_at_load: quantize the text decoder's bf16 linears while loading (quant::selected).
Result<std::unique_ptr<ModelRunner>> load_cpu_runner(const std::string& dir, const quant::QuantConfig& quant_at_load = {});

// The CUDA runner (nullptr + error when this build has no CUDA or no GPU is present).
Result<std::unique_ptr<ModelRunner>> load_cuda_runner(const std::string& dir, const quant::QuantConfig& quant_at_load = {});
bool cuda_available();

}  // namespace ost
