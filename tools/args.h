// A small command-line parser: --flag VALUE, --flag=VALUE, repeated flags, boolean switches.
// Unknown flags and missing values are errors that name the flag.
#pragma once
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "core/status.h"

namespace ost::tools {

class Args {
 public:
  // `value_flags` take a value, `switches` do not. argv[0] is the command name.
  static Result<Args> parse(int argc, char** argv, const std::vector<std::string>& value_flags,
                            const std::vector<std::string>& switches);
  bool has(const std::string& f) const { return values_.count(f) > 0; }
  std::string get(const std::string& f, const std::string& def = "") const;
  std::vector<std::string> all(const std::string& f) const;
  Result<int64_t> get_int(const std::string& f, int64_t def, int64_t lo, int64_t hi) const;
  Result<double> get_double(const std::string& f, double def, double lo, double hi) const;

 private:
  std::map<std::string, std::vector<std::string>> values_;
};

}  // namespace ost::tools
