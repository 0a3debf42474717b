// ostrakon make-test-model: a checkpoint with the seeded weights of the fixtures README.
#include <chrono>
#include <cstdio>

#include "io/seeded.h"
#include "tools/args.h"
#include "tools/commands.h"

namespace ost::tools {

int cmd_make_test_model(int argc, char** argv) {
  auto args = Args::parse(argc, argv, {"config", "seed", "out", "tokenizer", "shard-size-mb"}, {"help", "quiet"});
  if (!args || args->has("help") || !args->has("config") || !args->has("out")) {
    if (!args) std::fprintf(stderr, "make-test-model: %s\n", args.message().c_str());
    std::fprintf(stderr,
                 "usage: ostrakon make-test-model --config DIR --seed N --out DIR [--tokenizer FILE]\n"
                 "                                [--shard-size-mb N] [--quiet]\n"
                 "Writes bf16 safetensors holding the seeded weights for the config.json in DIR and\n"
                 "copies the json files found beside it (and the tokenizer).\n");
    return args && args->has("help") ? 0 : 2;
  }
  auto seed_s = args->get("seed", "0");
  char* end = nullptr;
  unsigned long long seed = std::strtoull(seed_s.c_str(), &end, 10);
  if (seed_s.empty() || *end || seed_s[0] == '-') {
    std::fprintf(stderr, "make-test-model: --seed \"%s\" is not a non-negative integer\n", seed_s.c_str());
    return 2;
  }
  auto shard_mb = args->get_int("shard-size-mb", 5 * 1024, 1, 1 << 30);
  if (!shard_mb) {
    std::fprintf(stderr, "make-test-model: %s\n", shard_mb.message().c_str());
    return 2;
  }
  TestModelOptions opt;
  opt.config_dir = args->get("config");
  opt.seed = seed;
  opt.out_dir = args->get("out");
  opt.tokenizer = args->get("tokenizer");
  opt.shard_bytes = *shard_mb << 20;
  const bool quiet = args->has("quiet");
  auto t0 = std::chrono::steady_clock::now();
  int last_pct = -1;
  opt.progress = [&](int64_t done, int64_t total) {
    int pct = total ? int(100 * done / total) : 100;
    if (!quiet && pct != last_pct) {
      last_pct = pct;
      std::fprintf(stderr, "\rmake-test-model: %3d%% of %.2f GB", pct, double(total) / 1e9);
    }
  };
  Status st = write_test_model(opt);
  if (!quiet && last_pct >= 0) std::fprintf(stderr, "\n");
  if (!st) {
    std::fprintf(stderr, "make-test-model: %s\n", st.message().c_str());
    return 1;
  }
  double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  if (!quiet) std::fprintf(stderr, "make-test-model: wrote %s in %.1f s\n", opt.out_dir.c_str(), s);
  return 0;
}

}  // namespace ost::tools
