// ostrakon: command-line entry point. Subcommands live in cmd_*.cpp.
#include <cstdio>
#include <cstring>
#include <string>

#include "tools/commands.h"

static void usage() {
  std::fprintf(stderr,
               "usage: ostrakon <command> [options]\n"
               "commands:\n"
               "  run               answer one prompt (with images) and print the result\n"
               "  serve             OpenAI-compatible HTTP server with the web UI\n"
               "  bench             bench engine: the GPU engine next to the hardware limits;\n"
               "                    bench serve: load generator for OpenAI-compatible endpoints\n"
               "  eval              store-scenario evaluation of a model or endpoint; compare two runs\n"
               "  tokenize          print the token ids of a text\n"
               "  make-test-model   write a checkpoint with seeded weights for a config\n"
               "run 'ostrakon <command> --help' for its options\n");
}

int main(int argc, char** argv) {
  if (argc < 2 || !std::strcmp(argv[1], "--help") || !std::strcmp(argv[1], "-h")) {
    usage();
    return argc < 2 ? 2 : 0;
  }
  std::string cmd = argv[1];
  for (const auto& c : ost::tools::commands())
    if (cmd == c.name) return c.fn(argc - 1, argv + 1);
  std::fprintf(stderr, "ostrakon: unknown command \"%s\"\n", cmd.c_str());
  usage();
  return 2;
}
