// `ostrakon quantize`: a bf16 checkpoint folder -> a quantized one, streamed tensor by tensor
// (the 8B is 17 GB: only the tensor being converted is held, as f32, plus its packed form).
#pragma once
#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "core/status.h"
#include "quant/format.h"

namespace ost {

// A change folded into one tensor before it is written (activation-aware scales, model/awq.h).
struct TensorEdit {
  std::vector<float> col_scale;  // a converted matrix [rows, cols]: w[r, c] *= col_scale[c]
  std::vector<float> row_scale;  // ... then w[r, c] *= row_scale[r]; quantized afterwards
  std::vector<float> values;     // a 1-D tensor's new values, exact in its stored dtype
};

// w f32 [rows, cols] <- w with e's column and row scales applied (what the writer quantizes).
void apply_scales(const TensorEdit& e, int64_t rows, int64_t cols, float* w);

struct QuantizeOptions {
  std::string in_dir, out_dir;
  quant::QuantConfig quant;                 // format, group size, selection
  int64_t shard_bytes = 5ll << 30;          // output shards of at most this many bytes
  std::function<void(int64_t done, int64_t total)> progress;  // bytes written
  // By tensor name. Scales apply only to matrices that are converted; values only to 1-D
  // tensors. A name, size or dtype that does not fit is an error before anything is written.
  std::map<std::string, TensorEdit> edits;
  std::string quant_config_extra;  // a JSON object whose keys are added to quantization_config
  bool dry_run = false;  // every check, nothing written (bytes_out stays 0)
};

struct QuantizeSummary {
  std::vector<std::string> quantized;  // weight names converted (linears, the embedding table)
  std::vector<std::string> kept;       // quantizable matrices left as they were
  int64_t bytes_in = 0, bytes_out = 0;
};

// Writes out_dir: model.safetensors (or shards + index), config.json with quantization_config,
// and every other file of in_dir (json files, tokenizer, chat template). Shapes that the format
// cannot hold are reported before anything is written.
Result<QuantizeSummary> quantize_checkpoint(const QuantizeOptions& opt);

}  // namespace ost
