#include "eval/dataset.h"

#include <algorithm>
#include <cctype>
#include <filesystem>
#include <unordered_map>

#include "core/file_util.h"
#include "eval/json_check.h"

namespace ost::eval {

namespace fs = std::filesystem;
using nlohmann::json;

const char* format_name(ItemFormat f) {
  switch (f) {
    case ItemFormat::kMcq: return "mcq";
    case ItemFormat::kOpen: return "open";
    case ItemFormat::kJson: return "json";
  }
  return "?";
}

std::string EvalItem::reference() const {
  switch (format) {
    case ItemFormat::kMcq:
      if (answer_index < 0) return "";
      return std::string(1, char('A' + answer_index)) + ". " + choices[size_t(answer_index)];
    case ItemFormat::kOpen: return answers.empty() ? "" : answers[0];
    case ItemFormat::kJson: return expected.is_null() ? "(valid JSON)" : expected.dump();
  }
  return "";
}

namespace {

// Reads one field as a non-empty string, or sets `why`.
bool get_string(const json& j, const char* key, std::string& out, std::string& why, bool required = true) {
  if (!j.contains(key)) {
    if (required) why = std::string("missing \"") + key + "\"";
    return !required;
  }
  if (!j[key].is_string() || j[key].get<std::string>().empty()) {
    why = std::string("\"") + key + "\" must be a non-empty string";
    return false;
  }
  out = j[key].get<std::string>();
  return true;
}

bool get_string_list(const json& j, const char* key, std::vector<std::string>& out, std::string& why) {
  const json& v = j[key];
  if (!v.is_array()) {
    why = std::string("\"") + key + "\" must be an array of strings";
    return false;
  }
  for (auto& e : v) {
    if (!e.is_string() || e.get<std::string>().empty()) {
      why = std::string("\"") + key + "\" must hold only non-empty strings";
      return false;
    }
    out.push_back(e.get<std::string>());
  }
  return true;
}

// Parses one item; "" on success, else the reason. `video` is set for a video item.
std::string parse_item(const json& j, const std::string& base_dir, EvalItem& it, bool& video) {
  std::string why, fmt;
  if (!j.is_object()) return "the line is not a JSON object";
  if (!get_string(j, "id", it.id, why)) return why;
  if (!get_string(j, "scene", it.scene, why)) return why;
  const auto& scenes = known_scenes();
  if (std::find(scenes.begin(), scenes.end(), it.scene) == scenes.end())
    return "unknown scene \"" + it.scene + "\" (ShopFront, ShopInterior, Kitchen)";
  if (!j.contains("category")) return "missing \"category\"";
  if (!get_string_list(j, "category", it.category, why)) return why;
  if (it.category.empty()) return "\"category\" is empty";
  if (!get_string(j, "question", it.question, why)) return why;
  if (!get_string(j, "format", fmt, why)) return why;
  if (fmt == "mcq") it.format = ItemFormat::kMcq;
  else if (fmt == "open") it.format = ItemFormat::kOpen;
  else if (fmt == "json") it.format = ItemFormat::kJson;
  else return "unknown format \"" + fmt + "\" (mcq, open, json)";

  video = false;
  if (j.contains("video")) {
    const json& v = j["video"];
    if (!(v.is_string() || v.is_array()) || v.empty()) return "\"video\" must be a file or a list of frames";
    video = true;
  }
  if (j.contains("images")) {
    std::vector<std::string> rel;
    if (!get_string_list(j, "images", rel, why)) return why;
    for (auto& r : rel) {
      fs::path p = fs::path(r).is_absolute() ? fs::path(r) : fs::path(base_dir) / r;
      if (!fs::is_regular_file(p)) return "image \"" + r + "\" not found";
      it.images.push_back(p.lexically_normal().string());
    }
  }
  if (it.images.empty() && !video) return "no \"images\" (a store question needs a photo)";

  switch (it.format) {
    case ItemFormat::kMcq: {
      if (!j.contains("choices")) return "mcq item without \"choices\"";
      if (!get_string_list(j, "choices", it.choices, why)) return why;
      if (it.choices.size() < 2 || it.choices.size() > 26) return "mcq needs 2 to 26 choices";
      std::string a;
      if (!get_string(j, "answer", a, why)) return why;
      if (a.size() == 1 && std::isalpha(uint8_t(a[0]))) {
        int k = std::toupper(uint8_t(a[0])) - 'A';
        if (k >= int(it.choices.size())) return "answer \"" + a + "\" is past the last choice";
        it.answer_index = k;
      } else {
        auto f = std::find(it.choices.begin(), it.choices.end(), a);
        if (f == it.choices.end()) return "answer \"" + a + "\" is neither a choice letter nor a choice's text";
        it.answer_index = int(f - it.choices.begin());
      }
      for (size_t a1 = 0; a1 < it.choices.size(); ++a1)
        for (size_t b = a1 + 1; b < it.choices.size(); ++b)
          if (it.choices[a1] == it.choices[b]) return "duplicate choice \"" + it.choices[a1] + "\"";
      break;
    }
    case ItemFormat::kOpen: {
      if (!j.contains("answer")) return "open item without \"answer\"";
      const json& a = j["answer"];
      if (a.is_string() && !a.get<std::string>().empty()) it.answers.push_back(a.get<std::string>());
      else if (a.is_array()) {
        if (!get_string_list(j, "answer", it.answers, why)) return why;
      }
      if (it.answers.empty()) return "\"answer\" must be a non-empty string or list of strings";
      break;
    }
    case ItemFormat::kJson: {
      if (!j.contains("schema")) return "json item without \"schema\"";
      it.schema = j["schema"];
      if (std::string e = check_schema(it.schema); !e.empty()) return "schema: " + e;
      if (j.contains("expected")) {
        it.expected = j["expected"];
        if (!it.expected.is_object() || it.expected.empty()) return "\"expected\" must be a non-empty object";
        auto errs = validate_json(it.schema, it.expected, false);
        if (!errs.empty()) return "\"expected\" does not fit its schema: " + errs[0];
      }
      break;
    }
  }
  if (it.format != ItemFormat::kMcq && j.contains("choices")) return "\"choices\" given for a non-mcq item";
  return "";
}

}  // namespace

Dataset parse_dataset(std::string_view text, const std::string& base_dir) {
  Dataset d;
  std::unordered_map<std::string, int> seen;  // id -> line
  int line_no = 0;
  size_t pos = 0;
  while (pos < text.size()) {
    size_t end = text.find('\n', pos);
    if (end == std::string_view::npos) end = text.size();
    std::string_view line = text.substr(pos, end - pos);
    pos = end + 1;
    ++line_no;
    while (!line.empty() && (line.back() == '\r' || line.back() == ' ' || line.back() == '\t')) line.remove_suffix(1);
    while (!line.empty() && (line.front() == ' ' || line.front() == '\t')) line.remove_prefix(1);
    if (line_no == 1 && line.substr(0, 3) == "\xEF\xBB\xBF") line.remove_prefix(3);
    if (line.empty() || line[0] == '#' || line.substr(0, 2) == "//") continue;
    json j = json::parse(line, nullptr, false);
    if (j.is_discarded()) {
      d.errors.push_back({line_no, "", "not valid JSON"});
      continue;
    }
    EvalItem it;
    it.line = line_no;
    bool video = false;
    std::string why = parse_item(j, base_dir, it, video);
    if (why.empty())
      if (auto f = seen.find(it.id); f != seen.end()) why = "duplicate id (first on line " + std::to_string(f->second) + ")";
    if (!why.empty()) {
      d.errors.push_back({line_no, it.id, why});
      continue;
    }
    seen.emplace(it.id, line_no);
    if (video) d.unsupported.push_back({line_no, it.id, "video input (the engine takes still images)"});
    else d.items.push_back(std::move(it));
  }
  return d;
}

Result<Dataset> load_dataset(const std::string& path) {
  auto text = read_file(path);
  if (!text) return make_error("cannot read dataset %s: %s", path.c_str(), text.message().c_str());
  std::string base = fs::path(path).parent_path().string();
  if (base.empty()) base = ".";
  Dataset d = parse_dataset(*text, base);
  d.path = path;
  return d;
}

std::string format_issues(const std::vector<LoadIssue>& issues, size_t max) {
  std::string s;
  for (size_t i = 0; i < issues.size() && i < max; ++i) {
    s += "line " + std::to_string(issues[i].line);
    if (!issues[i].id.empty()) s += " (" + issues[i].id + ")";
    s += ": " + issues[i].reason + "\n";
  }
  if (issues.size() > max) s += "... and " + std::to_string(issues.size() - max) + " more\n";
  return s;
}

}  // namespace ost::eval
