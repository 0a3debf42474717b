// The evaluation dataset: JSONL, one item per line.
//
//   {"id": "shelf-oos-01", "scene": "ShopInterior", "category": ["ShopInterior", "Shelf", "OutOfStock"],
//    "images": ["images/shelf_01.png"], "question": "...", "format": "mcq",
//    "choices": ["0", "1", "2", "3"], "answer": "C"}
//
// scene: ShopFront | ShopInterior | Kitchen. category: a path from general to specific (its
// first element is usually the scene). images: files relative to the dataset file. "video":
// a clip file or a list of frames; the engine takes still images only, so such items are kept
// aside as unsupported and reported, never silently dropped.
// format: mcq (choices + answer as a letter or the option's text), open (answer: a string or a
//   list of accepted strings), json (schema: the JSON-schema subset of json_check.h, and
//   optionally expected: field values the answer must agree with).
// Blank lines and lines starting with '#' or '//' are skipped.
#pragma once
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <vector>

#include "core/status.h"

namespace ost::eval {

enum class ItemFormat { kMcq, kOpen, kJson };
const char* format_name(ItemFormat f);

struct EvalItem {
  int line = 0;  // 1-based line in the file
  std::string id;
  std::string scene;
  std::vector<std::string> category;
  std::vector<std::string> images;  // resolved paths, in order
  std::string question;
  ItemFormat format = ItemFormat::kOpen;
  std::vector<std::string> choices;  // mcq
  int answer_index = -1;             // mcq: index into choices
  std::vector<std::string> answers;  // open: accepted references (the first is shown)
  nlohmann::json schema;             // json
  nlohmann::json expected;           // json: object of expected field values (may be null)
  std::string reference() const;     // the reference answer as text, for reports
};

struct LoadIssue {
  int line = 0;
  std::string id;  // "" when the line has none
  std::string reason;
};

struct Dataset {
  std::string path;
  std::vector<EvalItem> items;         // supported and well formed
  std::vector<LoadIssue> errors;       // malformed lines: the run should not start
  std::vector<LoadIssue> unsupported;  // well formed but not answerable by the engine (video)
};

inline const std::vector<std::string>& known_scenes() {
  static const std::vector<std::string> s = {"ShopFront", "ShopInterior", "Kitchen"};
  return s;
}

// Parses JSONL text; image paths are resolved against base_dir and must exist.
Dataset parse_dataset(std::string_view text, const std::string& base_dir);
// Reads the file (an Error only when it cannot be read).
Result<Dataset> load_dataset(const std::string& path);

// "line 7 (shelf-01): reason" lines, at most `max` of them plus a count of the rest.
std::string format_issues(const std::vector<LoadIssue>& issues, size_t max = 20);

}  // namespace ost::eval
