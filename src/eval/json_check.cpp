#include "eval/json_check.h"

#include <cmath>
#include <map>
#include <set>

#include "eval/scoring.h"

namespace ost::eval {

using nlohmann::json;

namespace {

std::optional<json> parse_object(std::string_view s) {
  json j = json::parse(s, nullptr, false);
  if (j.is_discarded() || !j.is_object()) return std::nullopt;
  return j;
}

// End (one past) of the balanced {...} starting at `b`, or npos.
size_t balanced_end(std::string_view t, size_t b) {
  int depth = 0;
  bool in_str = false, esc = false;
  for (size_t i = b; i < t.size(); ++i) {
    const char c = t[i];
    if (in_str) {
      if (esc) esc = false;
      else if (c == '\\') esc = true;
      else if (c == '"') in_str = false;
      continue;
    }
    if (c == '"') in_str = true;
    else if (c == '{') ++depth;
    else if (c == '}' && --depth == 0) return i + 1;
  }
  return std::string_view::npos;
}

const std::set<std::string>& known_keywords() {
  static const std::set<std::string> k = {"type", "required", "properties", "enum", "items",
                                          "minimum", "maximum", "title", "description"};
  return k;
}

const std::set<std::string>& known_types() {
  static const std::set<std::string> k = {"string", "number", "integer", "boolean", "object", "array", "null"};
  return k;
}

std::string check_schema_at(const json& s, const std::string& path) {
  if (!s.is_object()) return path + ": a schema must be an object";
  for (auto& [k, v] : s.items())
    if (!known_keywords().count(k)) return path + ": unsupported keyword \"" + k + "\"";
  if (s.contains("type")) {
    const json& t = s["type"];
    std::vector<json> ts = t.is_array() ? std::vector<json>(t.begin(), t.end()) : std::vector<json>{t};
    if (ts.empty()) return path + ": empty \"type\"";
    for (auto& x : ts)
      if (!x.is_string() || !known_types().count(x.get<std::string>())) return path + ": bad \"type\" " + x.dump();
  }
  if (s.contains("required")) {
    if (!s["required"].is_array()) return path + ": \"required\" must be a list of names";
    for (auto& r : s["required"])
      if (!r.is_string()) return path + ": \"required\" must be a list of names";
  }
  if (s.contains("properties")) {
    if (!s["properties"].is_object()) return path + ": \"properties\" must be an object";
    for (auto& [k, v] : s["properties"].items())
      if (auto e = check_schema_at(v, path + "." + k); !e.empty()) return e;
  }
  if (s.contains("items"))
    if (auto e = check_schema_at(s["items"], path + "[]"); !e.empty()) return e;
  if (s.contains("enum") && (!s["enum"].is_array() || s["enum"].empty()))
    return path + ": \"enum\" must be a non-empty list";
  for (const char* k : {"minimum", "maximum"})
    if (s.contains(k) && !s[k].is_number()) return path + ": \"" + k + "\" must be a number";
  return "";
}

std::string type_of(const json& v) {
  if (v.is_null()) return "null";
  if (v.is_boolean()) return "boolean";
  if (v.is_number_integer() || v.is_number_unsigned()) return "integer";
  if (v.is_number_float()) {
    double d = v.get<double>();
    return std::isfinite(d) && d == std::floor(d) ? "integer" : "number";
  }
  if (v.is_string()) return "string";
  if (v.is_array()) return "array";
  return "object";
}

bool type_matches(const std::string& want, const json& v) {
  const std::string got = type_of(v);
  return want == got || (want == "number" && got == "integer");
}

void validate_at(const json& s, const json& v, const std::string& path, bool required,
                 std::vector<std::string>& errs) {
  if (s.contains("type")) {
    const json& t = s["type"];
    bool ok = false;
    if (t.is_array()) {
      for (auto& x : t) ok = ok || type_matches(x.get<std::string>(), v);
    } else {
      ok = type_matches(t.get<std::string>(), v);
    }
    if (!ok) {
      errs.push_back(path + ": expected " + (t.is_array() ? t.dump() : t.get<std::string>()) + ", got " + type_of(v));
      return;
    }
  }
  if (s.contains("enum")) {
    bool found = false;
    for (auto& e : s["enum"]) found = found || e == v;
    if (!found) errs.push_back(path + ": " + v.dump() + " is not one of " + s["enum"].dump());
  }
  if (v.is_number()) {
    const double d = v.get<double>();
    if (s.contains("minimum") && d < s["minimum"].get<double>())
      errs.push_back(path + ": " + v.dump() + " is below the minimum " + s["minimum"].dump());
    if (s.contains("maximum") && d > s["maximum"].get<double>())
      errs.push_back(path + ": " + v.dump() + " is above the maximum " + s["maximum"].dump());
  }
  if (v.is_object()) {
    if (required && s.contains("required"))
      for (auto& r : s["required"])
        if (!v.contains(r.get<std::string>())) errs.push_back(path + ": missing required \"" + r.get<std::string>() + "\"");
    if (s.contains("properties"))
      for (auto& [k, sub] : s["properties"].items())
        if (v.contains(k)) validate_at(sub, v[k], path + "." + k, required, errs);
  }
  if (v.is_array() && s.contains("items"))
    for (size_t i = 0; i < v.size(); ++i)
      validate_at(s["items"], v[i], path + "[" + std::to_string(i) + "]", required, errs);
}

bool scalar_equal(const json& a, const json& b) {
  if (a.is_number() && b.is_number()) {
    const double x = a.get<double>(), y = b.get<double>();
    return std::fabs(x - y) <= 1e-6 * std::max({1.0, std::fabs(x), std::fabs(y)});
  }
  if (a.is_string() && b.is_string()) return normalize_answer(a.get<std::string>()) == normalize_answer(b.get<std::string>());
  // A number written as a string ("12.50") against a number.
  if (a.is_number() && b.is_string()) {
    json p = json::parse(b.get<std::string>(), nullptr, false);
    return !p.is_discarded() && p.is_number() && scalar_equal(a, p);
  }
  if (a.is_string() && b.is_number()) return scalar_equal(b, a);
  return a == b;
}

std::string scalar_key(const json& v) { return v.is_string() ? normalize_answer(v.get<std::string>()) : v.dump(); }

void agree(const json& exp, const json* got, const std::string& path, std::vector<FieldScore>& out) {
  if (exp.is_object()) {
    for (auto& [k, sub] : exp.items()) {
      const json* g = got && got->is_object() && got->contains(k) ? &(*got)[k] : nullptr;
      agree(sub, g, path + "." + k, out);
    }
    return;
  }
  if (exp.is_array() && !exp.empty() && (exp[0].is_object() || exp[0].is_array())) {
    for (size_t i = 0; i < exp.size(); ++i) {
      const json* g = got && got->is_array() && i < got->size() ? &(*got)[i] : nullptr;
      agree(exp[i], g, path + "[" + std::to_string(i) + "]", out);
    }
    return;
  }
  FieldScore f;
  f.path = path;
  f.got = got ? got->dump() : "";
  if (!got) {
    out.push_back(f);
    return;
  }
  if (exp.is_array()) {  // a list of scalars: a set, scored by F1
    if (!got->is_array()) {
      out.push_back(f);
      return;
    }
    std::multiset<std::string> e, g;
    for (auto& x : exp) e.insert(scalar_key(x));
    for (auto& x : *got) g.insert(scalar_key(x));
    if (e.empty() && g.empty()) f.score = 1;
    size_t common = 0;
    for (auto& x : g)
      if (auto it = e.find(x); it != e.end()) {
        e.erase(it);
        ++common;
      }
    if (common > 0) {
      const double p = double(common) / double(got->size()), r = double(common) / double(exp.size());
      f.score = 2 * p * r / (p + r);
    }
  } else {
    f.score = scalar_equal(exp, *got) ? 1 : 0;
  }
  out.push_back(f);
}

}  // namespace

std::optional<json> extract_json_object(std::string_view text) {
  // Fenced blocks first: ```json ... ``` (or a bare ``` fence).
  for (size_t pos = 0;;) {
    size_t b = text.find("```", pos);
    if (b == std::string_view::npos) break;
    size_t body = text.find('\n', b);
    if (body == std::string_view::npos) break;
    size_t e = text.find("```", body);
    if (e == std::string_view::npos) e = text.size();  // an unterminated fence (cut by max tokens)
    if (auto j = parse_object(text.substr(body + 1, e - body - 1))) return j;
    pos = e + 3;
    if (pos >= text.size()) break;
  }
  for (size_t b = text.find('{'); b != std::string_view::npos; b = text.find('{', b + 1)) {
    size_t e = balanced_end(text, b);
    if (e == std::string_view::npos) continue;
    if (auto j = parse_object(text.substr(b, e - b))) return j;
  }
  return std::nullopt;
}

std::string check_schema(const json& schema) { return check_schema_at(schema, "$"); }

std::vector<std::string> validate_json(const json& schema, const json& value, bool required) {
  std::vector<std::string> errs;
  validate_at(schema, value, "$", required, errs);
  return errs;
}

std::vector<FieldScore> field_agreement(const json& expected, const json& answer) {
  std::vector<FieldScore> out;
  agree(expected, &answer, "$", out);
  return out;
}

double mean_field_score(const std::vector<FieldScore>& f) {
  if (f.empty()) return 0;
  double s = 0;
  for (auto& x : f) s += x.score;
  return s / double(f.size());
}

}  // namespace ost::eval
