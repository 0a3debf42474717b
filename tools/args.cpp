#include "tools/args.h"

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdlib>

namespace ost::tools {

Result<Args> Args::parse(int argc, char** argv, const std::vector<std::string>& value_flags,
                         const std::vector<std::string>& switches) {
  Args a;
  auto in = [](const std::vector<std::string>& v, const std::string& s) {
    return std::find(v.begin(), v.end(), s) != v.end();
  };
  for (int i = 1; i < argc; ++i) {
    std::string s = argv[i];
    if (s.rfind("--", 0) != 0) return make_error("unexpected argument \"%s\"", s.c_str());
    std::string name = s.substr(2), value;
    bool inline_value = false;
    if (auto eq = name.find('='); eq != std::string::npos) {
      value = name.substr(eq + 1);
      name = name.substr(0, eq);
      inline_value = true;
    }
    if (in(switches, name)) {
      if (inline_value) return make_error("--%s takes no value", name.c_str());
      a.values_[name].push_back("1");
    } else if (in(value_flags, name)) {
      if (!inline_value) {
        if (i + 1 >= argc) return make_error("--%s needs a value", name.c_str());
        value = argv[++i];
      }
      a.values_[name].push_back(value);
    } else {
      return make_error("unknown option --%s", name.c_str());
    }
  }
  return a;
}

std::string Args::get(const std::string& f, const std::string& def) const {
  auto it = values_.find(f);
  return it == values_.end() ? def : it->second.back();
}

std::vector<std::string> Args::all(const std::string& f) const {
  auto it = values_.find(f);
  return it == values_.end() ? std::vector<std::string>{} : it->second;
}

Result<int64_t> Args::get_int(const std::string& f, int64_t def, int64_t lo, int64_t hi) const {
  if (!has(f)) return def;
  std::string s = get(f);
  char* end = nullptr;
  errno = 0;
  long long v = std::strtoll(s.c_str(), &end, 10);
  if (s.empty() || *end || errno) return make_error("--%s: \"%s\" is not an integer", f.c_str(), s.c_str());
  if (v < lo || v > hi)
    return make_error("--%s: %lld is out of range [%lld, %lld]", f.c_str(), v, (long long)lo, (long long)hi);
  return int64_t(v);
}

Result<double> Args::get_double(const std::string& f, double def, double lo, double hi) const {
  if (!has(f)) return def;
  std::string s = get(f);
  char* end = nullptr;
  errno = 0;
  double v = std::strtod(s.c_str(), &end);
  if (s.empty() || *end || errno || !std::isfinite(v))
    return make_error("--%s: \"%s\" is not a number", f.c_str(), s.c_str());
  if (v < lo || v > hi) return make_error("--%s: %g is out of range [%g, %g]", f.c_str(), v, lo, hi);
  return v;
}

}  // namespace ost::tools
