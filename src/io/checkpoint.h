// A Hugging Face Qwen3-VL checkpoint folder: the weight name table (names + shapes derived from
// the config) and the memory-mapped tensors, checked against the table in one pass.
#pragma once
#include <string>
#include <unordered_map>
#include <vector>

#include "io/config.h"
#include "io/safetensors.h"

namespace ost {

struct WeightSpec {
  std::string name;
  std::vector<int64_t> shape;
  // A 2-D matrix that may be stored quantized (quant/format.h): a linear weight [out, in], or
  // the token embedding table [vocab, hidden] (quantized like a linear's rows).
  bool linear = false;
};

// Every tensor a checkpoint of this config holds, in sorted name order. With tied embeddings
// lm_head.weight is absent (it is embed_tokens.weight).
std::vector<WeightSpec> expected_weights(const ModelConfig& c);

// The extra tensors of a linear weight stored in a quantized format (quant/format.h).
struct QuantCompanion {
  std::string name;
  std::vector<int64_t> shape;
  std::vector<DType> dtypes;  // accepted dtypes, the first is the one `ostrakon quantize` writes
};
std::vector<QuantCompanion> quant_companions(const WeightSpec& w, const quant::QuantConfig& q);
DType quant_dtype(quant::Format f);  // dtype of the quantized weight tensor itself

class Checkpoint {
 public:
  // Maps model.safetensors, or the shards named by model.safetensors.index.json, or every
  // *.safetensors in the folder; then checks names, shapes and dtypes (BF16/F16/F32) against
  // expected_weights. With a quantization_config, a linear weight may instead be stored in
  // that format, with its scale (and zero) tensors. The error lists every missing, unexpected
  // or mis-shaped tensor.
  static Result<Checkpoint> open(const std::string& dir, const ModelConfig& c);

  const TensorInfo* find(const std::string& name) const;
  const TensorInfo& get(const std::string& name) const;  // name must be in the table
  const std::vector<std::string>& files() const { return files_; }
  size_t total_bytes() const;

 private:
  std::vector<SafetensorsFile> shards_;
  std::vector<std::string> files_;
  std::unordered_map<std::string, const TensorInfo*> by_name_;
};

}  // namespace ost
