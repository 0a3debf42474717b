// Shared fixture for the model tests: the qwen3vl-tiny goldens and the seeded tiny checkpoint,
// generated once per test process into a temporary folder.
#pragma once
#include <gtest/gtest.h>

#include <array>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "common/temp_dir.h"
#include "core/file_util.h"
#include "io/safetensors.h"
#include "io/seeded.h"
#include "model/quant_report.h"
#include "model/qwen3vl.h"

namespace ost::testing {

inline const std::string kTinyDir = std::string(OST_TEST_DATA) + "/qwen3vl-tiny";
inline constexpr uint64_t kTinySeed = 20261124;
inline const char* const kCases[] = {"one_image_zh", "text_only_en", "two_images"};

class Golden {
 public:
  static Golden& get() {
    static Golden g;
    return g;
  }
  const nlohmann::json& json_case(const std::string& c) const { return json_["cases"][c]; }
  bool has(const std::string& name) const { return find(name) != nullptr; }

  const TensorInfo& tensor(const std::string& name) const {
    const TensorInfo* t = find(name);
    if (!t) {
      ADD_FAILURE() << "golden tensor " << name << " missing";
      static TensorInfo empty;
      return empty;
    }
    return *t;
  }
  std::vector<float> f32(const std::string& name) const {
    const TensorInfo& t = tensor(name);
    EXPECT_EQ(t.dtype, DType::F32) << name;
    std::vector<float> v(size_t(t.numel()));
    std::memcpy(v.data(), t.data, v.size() * 4);
    return v;
  }
  std::vector<int64_t> i64(const std::string& name) const {
    const TensorInfo& t = tensor(name);
    EXPECT_EQ(t.dtype, DType::I64) << name;
    std::vector<int64_t> v(size_t(t.numel()));
    std::memcpy(v.data(), t.data, v.size() * 8);
    return v;
  }
  std::vector<int32_t> ids(const std::string& c) const {
    std::vector<int32_t> out;
    for (int64_t v : i64(c + ".input_ids")) out.push_back(int32_t(v));
    return out;
  }
  std::vector<std::array<int, 3>> grids(const std::string& c) const {
    std::vector<std::array<int, 3>> g;
    for (const auto& a : json_case(c).value("image_grid_thw", nlohmann::json::array()))
      g.push_back({a[0].get<int>(), a[1].get<int>(), a[2].get<int>()});
    return g;
  }

 private:
  Golden() {
    auto j = read_file(kTinyDir + "/golden.json");
    if (j) json_ = nlohmann::json::parse(*j);
    auto f = SafetensorsFile::open(kTinyDir + "/golden.safetensors");
    if (f) file_ = std::make_unique<SafetensorsFile>(std::move(*f));
  }
  const TensorInfo* find(const std::string& name) const {
    if (!file_) return nullptr;
    for (const auto& t : file_->tensors())
      if (t.name == name) return &t;
    return nullptr;
  }
  nlohmann::json json_;
  std::unique_ptr<SafetensorsFile> file_;
};

// The seeded tiny checkpoint, written once and loaded once per process.
class TinyModel {
 public:
  static Qwen3VLModel* get() {
    static TinyModel t;
    return t.model_.get();
  }

 private:
  TinyModel() {
    TestModelOptions o;
    o.config_dir = kTinyDir;
    o.seed = kTinySeed;
    o.out_dir = dir_.path();
    Status s = write_test_model(o);
    if (!s) {
      ADD_FAILURE() << "write_test_model: " << s.message();
      return;
    }
    auto m = Qwen3VLModel::load(dir_.path());
    if (!m) {
      ADD_FAILURE() << "load: " << m.message();
      return;
    }
    model_ = std::move(*m);
  }
  TempDir dir_;
  std::unique_ptr<Qwen3VLModel> model_;
};

inline double max_abs_diff(const float* a, const float* b, size_t n) {
  double m = 0.0;
  for (size_t i = 0; i < n; ++i) m = std::max(m, double(std::fabs(double(a[i]) - double(b[i]))));
  return m;
}

inline double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

// Vision output of a golden case (fails the test on error).
inline VisionOutput encode_case(Qwen3VLModel& m, const std::string& c) {
  Golden& g = Golden::get();
  const TensorInfo& px = g.tensor(c + ".pixel_values");
  VisionInput in;
  in.pixel_values = reinterpret_cast<const float*>(px.data);
  in.num_patches = px.shape.empty() ? 0 : px.shape[0];
  in.grid_thw = g.grids(c);
  auto r = m.encode_images(in);
  EXPECT_TRUE(r.is_ok()) << r.message();
  return r ? std::move(*r) : VisionOutput{};
}

// The golden cases as report inputs (prompt ids, patches, grids).
inline std::vector<EvalCase> golden_eval_cases() {
  Golden& g = Golden::get();
  std::vector<EvalCase> cases;
  for (const char* name : kCases) {
    EvalCase c;
    c.name = name;
    c.ids = g.ids(name);
    c.grid_thw = g.grids(name);
    if (g.has(std::string(name) + ".pixel_values")) {
      c.pixel_values = g.f32(std::string(name) + ".pixel_values");
      c.num_patches = g.tensor(std::string(name) + ".pixel_values").shape[0];
    }
    cases.push_back(std::move(c));
  }
  return cases;
}

}  // namespace ost::testing
