// Model setup for `ostrakon serve`: the built-in demo model, the bundled tokenizer, loading.
#pragma once
#include <memory>
#include <string>

#include "engine/engine_loop.h"

namespace ost::server {

inline constexpr uint64_t kDemoSeed = 20261124;
inline constexpr const char* kDemoModelName = "ostrakon-demo-tiny";

// $XDG_CACHE_HOME/ostrakon/demo-model, else ~/.cache/ostrakon/demo-model, else a folder
// beside the executable.
std::string default_demo_dir();

// assets/qwen3/tokenizer.json of the source tree the executable was built in (searched
// upwards from the executable and from the working directory); "" when not found.
std::string find_bundled_tokenizer();

// Writes the demo model into `dir` unless a complete one is there. Returns `dir`.
Result<std::string> ensure_demo_model(const std::string& dir, const std::string& tokenizer_json);

// Loads a model folder on a device ("cpu" | "cuda") into a running EngineLoop.
Result<std::unique_ptr<EngineLoop>> load_engine_loop(const std::string& dir, const std::string& device,
                                                     const std::string& model_name, const EngineLoopOptions& opt);

}  // namespace ost::server
