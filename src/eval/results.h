// Per-item results, the scoring of one answer, the aggregates of a run and the results file.
#pragma once
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "eval/backend.h"
#include "eval/dataset.h"

namespace ost::eval {

// Outcome of one answer. "correct" / "wrong" for every format; mcq adds "refusal" and
// "no_answer" (no option could be read); json adds "invalid_json" (no object, or one that
// breaks the schema); "error" when the request failed.
struct Scored {
  std::string outcome;
  bool correct = false;
  double score = 0;          // partial credit in [0,1]: mcq 0/1, open token F1, json field agreement
  std::string extracted;     // mcq: the letter; open: normalized answer; json: the object
  // open
  double f1 = 0;
  bool exact = false;
  // json
  bool json_found = false, schema_valid = false;
  std::vector<std::string> schema_errors;
  double field_agreement = 0;
  nlohmann::json fields;     // [{path, score, got}]
};

Scored score_answer(const EvalItem& item, const AskResult& ans);

// The prompt sent for an item: the question plus the format's instruction.
std::string build_prompt(const EvalItem& item);

struct ItemResult {
  std::string id, scene, format, question, reference;
  std::vector<std::string> category;
  std::vector<std::string> images;  // as resolved
  AskResult answer;
  Scored scored;
  bool blind_done = false;  // the visual-necessity re-ask with blank images
  AskResult blind_answer;
  Scored blind;
};

struct RunInfo {
  std::string data, target, model, device, started;
  int concurrency = 1, max_tokens = 0;
  bool visual_check = true;
  double wall_s = 0;
  int items_in_file = 0;
};

struct RunResults {
  RunInfo info;
  std::vector<ItemResult> items;
  std::vector<LoadIssue> unsupported;
};

// Counts and rates of a group of items.
struct Group {
  int n = 0, correct = 0, refusals = 0, no_answer = 0, errors = 0, invalid_json = 0;
  double score_sum = 0, f1_sum = 0, field_sum = 0;
  int open_n = 0, json_n = 0, json_valid = 0;
  int blind_n = 0, blind_correct = 0, seen_right = 0, right_both = 0;  // visual check
  double accuracy() const { return n ? double(correct) / n : 0; }
  double mean_score() const { return n ? score_sum / n : 0; }
  void add(const ItemResult& r);
  nlohmann::json to_json() const;
};

struct LatencyStats {
  int n = 0;
  double mean = 0, p50 = 0, p90 = 0, p99 = 0, max = 0;
  nlohmann::json to_json() const;
};
LatencyStats latency_stats(std::vector<double> v);

struct Aggregates {
  Group overall;
  std::map<std::string, Group> by_scene, by_format;
  std::map<std::string, Group> by_category;  // "ShopInterior/Shelf/OutOfStock" and each prefix
  LatencyStats ttft, total;
  double items_per_s = 0, output_tokens_per_s = 0;
  int64_t prompt_tokens = 0, completion_tokens = 0;
  nlohmann::json to_json() const;
};
Aggregates aggregate(const RunResults& run);

nlohmann::json results_to_json(const RunResults& run);
// Reads a results file back (for --compare). Aggregates are recomputed from the items.
Result<RunResults> load_results(const std::string& path);

}  // namespace ost::eval
