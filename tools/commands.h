#pragma once
#include <vector>

namespace ost::tools {

struct Command {
  const char* name;
  int (*fn)(int argc, char** argv);  // argv[0] is the command name
};

int cmd_run(int argc, char** argv);
int cmd_tokenize(int argc, char** argv);
int cmd_make_test_model(int argc, char** argv);
int cmd_serve(int argc, char** argv);
int cmd_bench(int argc, char** argv);
int cmd_bench_serve(int argc, char** argv);  // `bench serve`: argv[0] is "serve"
int cmd_eval(int argc, char** argv);
int cmd_quantize(int argc, char** argv);

inline std::vector<Command> commands() {
  return {{"run", cmd_run}, {"tokenize", cmd_tokenize}, {"make-test-model", cmd_make_test_model},
          {"serve", cmd_serve},         {"bench", cmd_bench},
          {"eval", cmd_eval},           {"quantize", cmd_quantize}};
}

}  // namespace ost::tools
