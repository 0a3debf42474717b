#include "io/seeded.h"

#include <dirent.h>
#include <sys/stat.h>

#include <cmath>
#include <cstdio>
#include <nlohmann/json.hpp>

#include "core/file_util.h"
#include "io/checkpoint.h"
#include "io/config.h"
#include "io/safetensors.h"

namespace ost {

uint64_t fnv1a64(const std::string& s) {
  uint64_t h = 0xcbf29ce484222325ull;
  for (unsigned char b : s) {
    h ^= b;
    h *= 0x100000001b3ull;
  }
  return h;
}

void seeded_fill(const std::string& name, const std::vector<int64_t>& shape, uint64_t global_seed,
                 int64_t first, int64_t count, bf16_t* out) {
  const uint64_t seed = fnv1a64(name) ^ global_seed;
  double offset = 0.0, amp;
  if (shape.size() == 1 && name.ends_with(".bias")) {
    amp = 0.1;
  } else if (shape.size() == 1 && name.ends_with(".weight")) {
    offset = 1.0;
    amp = 0.25;
  } else if (name.ends_with("embed_tokens.weight")) {
    amp = 1.0;
  } else if (name.ends_with("pos_embed.weight")) {
    amp = 0.5;
  } else {
    double fan_in = 1.0;
    for (size_t d = 1; d < shape.size(); ++d) fan_in *= double(shape[d]);
    amp = std::sqrt(3.0 / fan_in);
  }
#pragma omp parallel for schedule(static) if (count > 65536)
  for (int64_t k = 0; k < count; ++k) {
    uint64_t z = seed + uint64_t(first + k + 1) * 0x9E3779B97F4A7C15ull;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    z = z ^ (z >> 31);
    double u = double(z >> 40) / double(1 << 24);
    double s = 2.0 * u - 1.0;
    out[k] = f32_to_bf16(float(offset + amp * s));
  }
}

namespace {

Status copy_file(const std::string& from, const std::string& to) {
  auto data = read_file(from);
  if (!data) return Error{data.message()};
  return write_file(to, *data);
}

}  // namespace

Status write_test_model(const TestModelOptions& opt) {
  auto text = read_file(opt.config_dir + "/config.json");
  if (!text) return make_error("no config.json in %s", opt.config_dir.c_str());
  auto cfg = parse_model_config(*text);
  if (!cfg) return Error{cfg.message()};
  ::mkdir(opt.out_dir.c_str(), 0755);
  if (!is_directory(opt.out_dir)) return make_error("cannot create folder %s", opt.out_dir.c_str());

  // The json files beside the config travel with the weights (config, preprocessor, generation).
  if (DIR* d = opendir(opt.config_dir.c_str())) {
    while (auto* e = readdir(d)) {
      std::string n = e->d_name;
      if (n.ends_with(".json") && n != "golden.json" && n != "model.safetensors.index.json" &&
          n != "tokenizer.json")
        OST_TRY(copy_file(opt.config_dir + "/" + n, opt.out_dir + "/" + n));
    }
    closedir(d);
  }
  std::string tok = opt.tokenizer;
  if (tok.empty() && file_exists(opt.config_dir + "/tokenizer.json")) tok = opt.config_dir + "/tokenizer.json";
  if (!tok.empty()) OST_TRY(copy_file(tok, opt.out_dir + "/tokenizer.json"));

  // Group the tensors into shards of at most shard_bytes (one shard: model.safetensors).
  std::vector<std::vector<TensorSpec>> shards(1);
  int64_t in_shard = 0, total = 0;
  for (auto& w : expected_weights(*cfg)) {
    int64_t bytes = 2;
    for (auto d : w.shape) bytes *= d;
    if (in_shard > 0 && in_shard + bytes > opt.shard_bytes) {
      shards.emplace_back();
      in_shard = 0;
    }
    shards.back().push_back({w.name, DType::BF16, w.shape});
    in_shard += bytes;
    total += bytes;
  }
  const uint64_t seed = opt.seed;
  FillFn fill = [seed](const TensorSpec& s, int64_t first, int64_t count, uint8_t* out) {
    seeded_fill(s.name, s.shape, seed, first, count, reinterpret_cast<bf16_t*>(out));
  };
  int64_t done_before = 0;
  nlohmann::ordered_json weight_map = nlohmann::ordered_json::object();
  for (size_t i = 0; i < shards.size(); ++i) {
    char fn[64];
    if (shards.size() == 1) std::snprintf(fn, sizeof fn, "model.safetensors");
    else std::snprintf(fn, sizeof fn, "model-%05zu-of-%05zu.safetensors", i + 1, shards.size());
    int64_t shard_total = 0;
    auto progress = [&](int64_t done, int64_t) {
      shard_total = done;
      if (opt.progress) opt.progress(done_before + done, total);
    };
    OST_TRY(write_safetensors(opt.out_dir + "/" + fn, shards[i], fill, {{"format", "pt"}}, progress));
    done_before += shard_total;
    for (auto& s : shards[i]) weight_map[s.name] = fn;
  }
  if (shards.size() > 1) {
    nlohmann::ordered_json idx = {{"metadata", {{"total_size", total}}}, {"weight_map", weight_map}};
    OST_TRY(write_file(opt.out_dir + "/model.safetensors.index.json", idx.dump(2)));
  } else {
    ::unlink((opt.out_dir + "/model.safetensors.index.json").c_str());
  }
  return Status::ok();
}

}  // namespace ost
