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

class ModelRunner {
 public:
  virtual ~ModelRunner() = default;
  virtual const ModelConfig& config() const = 0;
  virtual const GenerationConfig& generation() const = 0;
  virtual const PreprocessorConfig& preprocessor() const = 0;
  virtual std::string device_name() const = 0;

  virtual Result<VisionOutput> encode_images(const VisionInput& in) = 0;
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
  virtual void set_dump(DumpFn fn) {}
};

// The CPU oracle behind the runner interface.
Result<std::unique_ptr<ModelRunner>> load_cpu_runner(const std::string& dir);

// The CUDA runner (nullptr + error when this build has no CUDA or no GPU is present).
Result<std::unique_ptr<ModelRunner>> load_cuda_runner(const std::string& dir);
bool cuda_available();

}  // namespace ost
