// ostrakon tokenize: the token ids of a text under a model's tokenizer.
#include <cstdio>
#include <nlohmann/json.hpp>

#include "core/file_util.h"
#include "tokenizer/tokenizer.h"
#include "tools/args.h"
#include "tools/commands.h"

namespace ost::tools {

int cmd_tokenize(int argc, char** argv) {
  auto args = Args::parse(argc, argv, {"model", "text", "tokenizer"}, {"help"});
  const char* usage = "usage: ostrakon tokenize (--model DIR | --tokenizer FILE) --text TEXT\n";
  if (!args || args->has("help") || !args->has("text") || (!args->has("model") && !args->has("tokenizer"))) {
    if (!args) std::fprintf(stderr, "tokenize: %s\n", args.message().c_str());
    std::fprintf(stderr, "%s", usage);
    return args && args->has("help") ? 0 : 2;
  }
  std::string path = args->has("tokenizer") ? args->get("tokenizer") : args->get("model") + "/tokenizer.json";
  auto tok = Tokenizer::load(path);
  if (!tok) {
    std::fprintf(stderr, "tokenize: %s\n", tok.message().c_str());
    return 1;
  }
  nlohmann::json out = {{"ids", tok->encode(args->get("text"))}};
  std::printf("%s\n", out.dump().c_str());
  return 0;
}

}  // namespace ost::tools
