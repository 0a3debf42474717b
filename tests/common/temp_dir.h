// A fresh temporary folder per test, removed at the end.
#pragma once
#include <filesystem>
#include <random>
#include <string>

namespace ost::testing {

class TempDir {
 public:
  TempDir() {
    std::random_device rd;
    path_ = std::filesystem::temp_directory_path() / ("ost-test-" + std::to_string(rd()) + std::to_string(rd()));
    std::filesystem::create_directories(path_);
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  std::string path() const { return path_.string(); }
  std::string operator/(const std::string& n) const { return (path_ / n).string(); }

 private:
  std::filesystem::path path_;
};

}  // namespace ost::testing
