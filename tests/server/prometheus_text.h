// A strict parser of the Prometheus text exposition format (version 0.0.4), for tests: metric
// and label names, quoted label values with their escapes, float values (+Inf, -Inf, NaN),
// HELP and TYPE lines, families kept together, no duplicate series, and for histograms
// ascending `le` bounds, cumulative buckets and a +Inf bucket equal to _count.
#pragma once
#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <map>
#include <regex>
#include <set>
#include <string>
#include <vector>

namespace ost::testing {

struct PromSample {
  std::string name;                           // as written (x_bucket, x_sum, ...)
  std::map<std::string, std::string> labels;  // unescaped values
  double value = 0;
};

struct PromFamily {
  std::string type = "untyped", help;
  std::vector<PromSample> samples;
};

struct PromParse {
  std::map<std::string, PromFamily> families;
  std::vector<std::string> errors;  // empty: the text is valid
};

namespace prom_detail {

inline bool metric_name(const std::string& s) {
  static const std::regex re("[a-zA-Z_:][a-zA-Z0-9_:]*");
  return std::regex_match(s, re);
}

inline bool label_name(const std::string& s) {
  static const std::regex re("[a-zA-Z_][a-zA-Z0-9_]*");
  return std::regex_match(s, re) && s.rfind("__", 0) != 0;
}

inline bool parse_value(const std::string& s, double& v) {
  if (s == "+Inf" || s == "Inf") return v = INFINITY, true;
  if (s == "-Inf") return v = -INFINITY, true;
  if (s == "NaN") return v = NAN, true;
  static const std::regex re("[+-]?([0-9]+\\.?[0-9]*|\\.[0-9]+)([eE][+-]?[0-9]+)?");
  if (!std::regex_match(s, re)) return false;
  v = std::strtod(s.c_str(), nullptr);
  return true;
}

// The family a sample name belongs to, given the TYPE lines seen so far.
inline std::string family_of(const std::string& name, const std::map<std::string, PromFamily>& fams) {
  for (const char* suf : {"_bucket", "_sum", "_count"}) {
    const std::string s = suf;
    if (name.size() > s.size() && name.compare(name.size() - s.size(), s.size(), s) == 0) {
      const std::string base = name.substr(0, name.size() - s.size());
      auto it = fams.find(base);
      if (it != fams.end() &&
          (it->second.type == "histogram" || (it->second.type == "summary" && s != "_bucket")))
        return base;
    }
  }
  return name;
}

}  // namespace prom_detail

inline PromParse parse_prometheus_text(const std::string& text) {
  using namespace prom_detail;
  PromParse out;
  auto err = [&](size_t line, const std::string& m) {
    out.errors.push_back("line " + std::to_string(line) + ": " + m);
  };
  if (!text.empty() && text.back() != '\n') err(0, "the text does not end with a newline");
  std::set<std::string> typed, helped, closed, series;
  std::string current;  // the family of the previous line
  auto enter = [&](size_t ln, const std::string& fam) {
    if (fam == current) return;
    if (closed.count(fam)) err(ln, "family " + fam + " is split into several groups");
    if (!current.empty()) closed.insert(current);
    current = fam;
  };
  size_t ln = 0;
  for (size_t pos = 0; pos < text.size();) {
    size_t e = text.find('\n', pos);
    if (e == std::string::npos) e = text.size();
    const std::string line = text.substr(pos, e - pos);
    pos = e + 1;
    ++ln;
    if (line.empty()) continue;
    if (line[0] == '#') {
      std::vector<std::string> tok;
      size_t p = 1;
      for (int k = 0; k < 2; ++k) {  // "# HELP name rest" / "# TYPE name type"
        while (p < line.size() && line[p] == ' ') ++p;
        size_t q = line.find(' ', p);
        tok.push_back(line.substr(p, q == std::string::npos ? std::string::npos : q - p));
        p = q == std::string::npos ? line.size() : q + 1;
      }
      const std::string rest = line.substr(std::min(p, line.size()));
      if (tok[0] != "HELP" && tok[0] != "TYPE") continue;  // a comment
      const std::string& name = tok[1];
      if (!metric_name(name)) {
        err(ln, "bad metric name in " + tok[0] + ": " + name);
        continue;
      }
      enter(ln, name);
      PromFamily& f = out.families[name];
      if (tok[0] == "HELP") {
        if (!helped.insert(name).second) err(ln, "second HELP for " + name);
        for (size_t i = 0; i < rest.size(); ++i)
          if (rest[i] == '\\' && (++i >= rest.size() || (rest[i] != '\\' && rest[i] != 'n')))
            err(ln, "bad escape in HELP of " + name);
        f.help = rest;
      } else {
        static const std::set<std::string> types = {"counter", "gauge", "histogram", "summary", "untyped"};
        if (!types.count(rest)) err(ln, "unknown TYPE " + rest);
        if (!typed.insert(name).second) err(ln, "second TYPE for " + name);
        if (!f.samples.empty()) err(ln, "TYPE of " + name + " after its samples");
        f.type = rest;
      }
      continue;
    }
    // name{labels} value [timestamp]
    PromSample s;
    size_t p = 0;
    while (p < line.size() && line[p] != '{' && line[p] != ' ') ++p;
    s.name = line.substr(0, p);
    if (!metric_name(s.name)) {
      err(ln, "bad metric name: " + s.name);
      continue;
    }
    std::string key = s.name + "{";
    if (p < line.size() && line[p] == '{') {
      ++p;
      bool ok = true;
      while (ok && p < line.size() && line[p] != '}') {
        size_t eq = line.find('=', p);
        if (eq == std::string::npos) {
          ok = false;
          break;
        }
        const std::string ln_name = line.substr(p, eq - p);
        if (!label_name(ln_name)) err(ln, "bad label name: " + ln_name);
        if (eq + 1 >= line.size() || line[eq + 1] != '"') {
          ok = false;
          break;
        }
        std::string val;
        size_t q = eq + 2;
        for (; q < line.size() && line[q] != '"'; ++q) {
          if (line[q] == '\\') {
            if (q + 1 >= line.size()) break;
            const char c = line[++q];
            if (c == 'n')
              val += '\n';
            else if (c == '\\' || c == '"')
              val += c;
            else
              err(ln, std::string("bad escape \\") + c + " in a label value");
          } else {
            val += line[q];
          }
        }
        if (q >= line.size()) {
          ok = false;
          break;
        }
        if (!s.labels.emplace(ln_name, val).second) err(ln, "label " + ln_name + " given twice");
        p = q + 1;
        if (p < line.size() && line[p] == ',')
          ++p;
        else if (p < line.size() && line[p] != '}')
          ok = false;
      }
      if (!ok || p >= line.size()) {
        err(ln, "malformed labels: " + line);
        continue;
      }
      ++p;  // '}'
    }
    for (auto& [k, v] : s.labels) key += k + "=\"" + v + "\",";
    if (p >= line.size() || line[p] != ' ') {
      err(ln, "no value: " + line);
      continue;
    }
    std::string rest = line.substr(p + 1);
    const size_t sp = rest.find(' ');
    const std::string value = rest.substr(0, sp);
    if (!parse_value(value, s.value)) err(ln, "bad value \"" + value + "\" of " + s.name);
    if (sp != std::string::npos) {
      const std::string ts = rest.substr(sp + 1);
      if (ts.empty() || !std::all_of(ts.begin() + (ts[0] == '-'), ts.end(), ::isdigit))
        err(ln, "bad timestamp: " + ts);
    }
    if (!series.insert(key).second) err(ln, "duplicate series " + key);
    const std::string fam = family_of(s.name, out.families);
    enter(ln, fam);
    PromFamily& f = out.families[fam];
    if (f.type == "counter" && !(s.value >= 0)) err(ln, "negative counter " + s.name);
    if (f.type == "histogram" && s.name == fam) err(ln, "histogram sample without a suffix: " + s.name);
    f.samples.push_back(std::move(s));
  }

  // Histograms: per label set (le aside), ascending bounds, cumulative counts, +Inf == _count.
  for (auto& [name, f] : out.families) {
    if (f.type != "histogram") continue;
    std::map<std::string, std::vector<std::pair<double, double>>> buckets;  // labels -> (le, count)
    std::map<std::string, double> counts;
    std::set<std::string> sums;
    for (const PromSample& s : f.samples) {
      std::string k;
      for (auto& [ln_, v] : s.labels)
        if (ln_ != "le") k += ln_ + "=" + v + ",";
      if (s.name == name + "_bucket") {
        auto it = s.labels.find("le");
        double le = 0;
        if (it == s.labels.end() || !parse_value(it->second, le)) {
          err(0, name + ": a bucket without a valid le");
          continue;
        }
        buckets[k].emplace_back(le, s.value);
      } else if (s.name == name + "_count") {
        counts[k] = s.value;
      } else if (s.name == name + "_sum") {
        sums.insert(k);
      }
    }
    if (buckets.empty()) err(0, name + ": a histogram without buckets");
    for (auto& [k, b] : buckets) {
      for (size_t i = 1; i < b.size(); ++i) {
        if (!(b[i].first > b[i - 1].first)) err(0, name + ": le bounds not ascending");
        if (b[i].second < b[i - 1].second) err(0, name + ": bucket counts decrease");
      }
      if (!std::isinf(b.back().first)) err(0, name + ": no +Inf bucket");
      if (!counts.count(k))
        err(0, name + ": no _count");
      else if (b.back().second != counts[k])
        err(0, name + ": +Inf bucket != _count");
      if (!sums.count(k)) err(0, name + ": no _sum");
    }
  }
  return out;
}

}  // namespace ost::testing
