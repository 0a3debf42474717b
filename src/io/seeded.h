// Seeded synthetic weights: the function of the fixtures README, so a checkpoint of any
// Qwen3-VL config can be regenerated bit for bit from (name, shape, seed) without weight files.
#pragma once
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "core/bf16.h"
#include "core/status.h"

namespace ost {

uint64_t fnv1a64(const std::string& s);

// bf16 bits of elements [first, first + count) of tensor `name` with `shape`.
void seeded_fill(const std::string& name, const std::vector<int64_t>& shape, uint64_t global_seed,
                 int64_t first, int64_t count, bf16_t* out);

struct TestModelOptions {
  std::string config_dir;      // holds config.json (+ other json files copied along)
  uint64_t seed = 0;
  std::string out_dir;
  std::string tokenizer;       // tokenizer.json to copy; empty: the one beside the config, if any
  int64_t shard_bytes = 5ll << 30;  // larger checkpoints are sharded with an index
  std::function<void(int64_t done, int64_t total)> progress;
};

// Writes out_dir/model.safetensors (or model-0000N-of-0000M.safetensors + index), bf16, streamed.
Status write_test_model(const TestModelOptions& opt);

}  // namespace ost
