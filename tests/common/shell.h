// Running the ostrakon binary from a test: a shell command's exit code and stdout.
#pragma once
#include <sys/wait.h>

#include <cstdio>
#include <string>

namespace ost::testing {

struct Output {
  int code = -1;
  std::string out;
};

// Runs a shell command; stdout captured (add " 2>&1" to the command for stderr too).
inline Output sh(const std::string& cmd) {
  Output o;
  FILE* p = popen(cmd.c_str(), "r");
  if (!p) return o;
  char buf[65536];
  size_t n;
  while ((n = fread(buf, 1, sizeof buf, p)) > 0) o.out.append(buf, n);
  int st = pclose(p);
  o.code = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
  return o;
}

inline std::string q(const std::string& s) {  // shell quoting
  std::string r = "'";
  for (char c : s) r += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return r + "'";
}

}  // namespace ost::testing
