// ostrakon eval: the store-scenario evaluation (a JSONL dataset against the engine in this
// process or an OpenAI-compatible endpoint), and --compare of two results files.
#include <cstdio>
#include <cstring>
#include <filesystem>

#include "eval/backend.h"
#include "eval/dataset.h"
#include "eval/report.h"
#include "eval/runner.h"
#include "tools/args.h"
#include "tools/commands.h"

namespace ost::tools {

namespace {

const char* kEvalUsage =
    "usage: ostrakon eval --data FILE [--model DIR | --url URL [--api-key KEY] [--served-model NAME]]\n"
    "                     [--device cpu|cuda|auto] [--concurrency N] [--max-tokens N] [--report DIR]\n"
    "                     [--no-visual-check] [--no-progress] [--timeout S]\n"
    "       ostrakon eval --compare A.json B.json [--report DIR]\n"
    "Runs every item of a JSONL dataset (data/scenarios/store_pack.jsonl is the built-in pack) and writes\n"
    "results.json, report.md and report.html into --report DIR (default eval-report). --model DIR runs the\n"
    "engine in this process (batched when --concurrency > 1); greedy decoding throughout.\n"
    "--url takes an OpenAI-compatible server (http://host:port, .../v1 or .../v1/chat/completions).\n"
    "--no-visual-check skips the re-ask with blank images. --compare writes compare.json and the reports.\n";

int eval_fail(const std::string& msg, int code) {
  std::fprintf(stderr, "eval: %s\n", msg.c_str());
  return code;
}

int run_compare(const std::string& a_path, const std::string& b_path, const std::string& dir) {
  auto a = eval::load_results(a_path);
  if (!a) return eval_fail(a.message(), 1);
  auto b = eval::load_results(b_path);
  if (!b) return eval_fail(b.message(), 1);
  if (Status st = eval::write_compare_report(*a, *b, dir); !st) return eval_fail(st.message(), 1);
  auto j = eval::compare_json(*a, *b);
  std::printf("compared %d items: accuracy A %.1f%%, B %.1f%% (%+.1f pp); %d answers changed\n",
              int(j["items_compared"]), 100 * double(j["overall"]["accuracy_a"]), 100 * double(j["overall"]["accuracy_b"]),
              100 * double(j["overall"]["delta"]), int(j["agreement"]["answer_changed"]));
  std::printf("wrote %s/compare.json, report.md, report.html\n", dir.c_str());
  return 0;
}

}  // namespace

int cmd_eval(int argc, char** argv) {
  // --compare takes two values; pull them out before the generic parser sees them.
  std::vector<char*> rest = {argv[0]};
  std::vector<std::string> compare;
  for (int i = 1; i < argc; ++i) {
    if (!std::strcmp(argv[i], "--compare")) {
      if (i + 2 >= argc) return eval_fail("--compare needs two results files (A.json B.json)", 2);
      compare = {argv[i + 1], argv[i + 2]};
      i += 2;
      continue;
    }
    rest.push_back(argv[i]);
  }
  auto args = Args::parse(int(rest.size()), rest.data(),
                          {"data", "model", "url", "api-key", "served-model", "device", "concurrency", "max-tokens",
                           "report", "timeout"},
                          {"help", "no-visual-check", "no-progress"});
  if (!args) {
    std::fprintf(stderr, "%s", kEvalUsage);
    return eval_fail(args.message(), 2);
  }
  if (args->has("help")) {
    std::printf("%s", kEvalUsage);
    return 0;
  }
  if (!compare.empty()) {
    if (args->has("data") || args->has("model") || args->has("url"))
      return eval_fail("--compare reads two results files; it takes no --data, --model or --url", 2);
    return run_compare(compare[0], compare[1], args->get("report", "eval-compare"));
  }
  if (!args->has("data")) return eval_fail("--data FILE is required (or --compare A.json B.json)", 2);
  if (args->has("model") == args->has("url")) return eval_fail("give exactly one of --model DIR and --url URL", 2);
  if (args->has("api-key") && !args->has("url")) return eval_fail("--api-key goes with --url", 2);
  auto conc = args->get_int("concurrency", 1, 1, 1024);
  auto max_tokens = args->get_int("max-tokens", 512, 1, 1 << 20);
  auto timeout = args->get_int("timeout", 600, 1, 86400);
  for (const Status& s : {conc.status(), max_tokens.status(), timeout.status()})
    if (!s) return eval_fail(s.message(), 2);

  auto data = eval::load_dataset(args->get("data"));
  if (!data) return eval_fail(data.message(), 1);
  if (!data->errors.empty()) {
    std::fprintf(stderr, "eval: %s: %zu malformed item(s):\n%s", args->get("data").c_str(), data->errors.size(),
                 eval::format_issues(data->errors).c_str());
    return 2;
  }
  if (!data->unsupported.empty())
    std::fprintf(stderr, "eval: %zu item(s) not run, the engine cannot take them:\n%s", data->unsupported.size(),
                 eval::format_issues(data->unsupported, 5).c_str());
  if (data->items.empty()) return eval_fail("no item to run", 1);

  const std::string device = args->get("device", "auto");
  Result<std::unique_ptr<eval::Backend>> backend =
      args->has("model") ? eval::make_engine_backend(args->get("model"), device, int(*conc))
                         : eval::make_http_backend(args->get("url"), args->get("api-key"), args->get("served-model"),
                                                   int(*timeout));
  if (!backend) return eval_fail(backend.message(), 1);
  std::fprintf(stderr, "eval: %zu items from %s against %s\n", data->items.size(), args->get("data").c_str(),
               (*backend)->target().c_str());

  eval::RunOptions ro;
  ro.concurrency = int(*conc);
  ro.max_tokens = int(*max_tokens);
  ro.visual_check = !args->has("no-visual-check");
  ro.progress = !args->has("no-progress");
  eval::RunResults run = eval::run_eval(*data, **backend, ro);
  if (args->has("model")) run.info.device = device;
  const std::string dir = args->get("report", "eval-report");
  if (Status st = eval::write_run_report(run, dir); !st) return eval_fail(st.message(), 1);

  const eval::Aggregates a = eval::aggregate(run);
  std::printf("%d items: accuracy %.1f%%, mean score %.3f, refusals %d, invalid JSON %d, errors %d, unsupported %zu\n",
              a.overall.n, 100 * a.overall.accuracy(), a.overall.mean_score(), a.overall.refusals,
              a.overall.invalid_json, a.overall.errors, run.unsupported.size());
  for (auto& [scene, g] : a.by_scene) std::printf("  %-14s %3d items  accuracy %.1f%%\n", scene.c_str(), g.n, 100 * g.accuracy());
  std::printf("latency p50: first token %.0f ms, answer %.0f ms; %.2f requests/s\n", a.ttft.p50, a.total.p50, a.items_per_s);
  std::printf("wrote %s/results.json, report.md, report.html\n", dir.c_str());
  return a.overall.errors == a.overall.n ? 1 : 0;
}

}  // namespace ost::tools
