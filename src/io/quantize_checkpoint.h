// `ostrakon quantize`: a bf16 checkpoint folder -> a quantized one, streamed tensor by tensor
// (the 8B is 17 GB: only the tensor being converted is held, as f32, plus its packed form).
#pragma once
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "core/status.h"
#include "quant/format.h"

namespace ost {

struct QuantizeOptions {
  std::string in_dir, out_dir;
  quant::QuantConfig quant;                 // format, group size, selection
  int64_t shard_bytes = 5ll << 30;          // output shards of at most this many bytes
  std::function<void(int64_t done, int64_t total)> progress;  // bytes written
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
