// Configs and images the fixtures do not cover (tied embeddings, the 4.57 config form, other head
// sizes and deepstack layers, other seeds; downscaled, tall, EXIF-rotated, WebP and JPEG photos,
// a system prompt, a per-request pixel bound) against HF transformers 5.17 in float32.
// Goldens: tests/data/hf-extra/hf_golden.json, made by scripts/device/hf_oracle.sh.
#include <gtest/gtest.h>

#include <cstdio>
#include <filesystem>
#include <map>
#include <nlohmann/json.hpp>

#include "common/temp_dir.h"
#include "core/file_util.h"

namespace ost {
namespace {

using nlohmann::json;
const std::string kExtra = std::string(OST_TEST_DATA) + "/hf-extra";

std::pair<int, std::string> sh(const std::string& cmd) {
  std::string out;
  FILE* p = popen(cmd.c_str(), "r");
  if (!p) return {-1, ""};
  char buf[65536];
  size_t n;
  while ((n = fread(buf, 1, sizeof buf, p)) > 0) out.append(buf, n);
  int st = pclose(p);
  return {WIFEXITED(st) ? WEXITSTATUS(st) : -1, out};
}

std::string q(const std::string& s) {
  std::string r = "'";
  for (char c : s) r += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return r + "'";
}

class HfExtra : public ::testing::TestWithParam<std::string> {
 protected:
  static void SetUpTestSuite() {
    dir_ = new testing::TempDir();
    cases_ = new json(json::parse(*read_file(kExtra + "/cases.json")));
    golden_ = new json(json::parse(*read_file(kExtra + "/hf_golden.json")));
  }
  static void TearDownTestSuite() {
    delete dir_;
    delete cases_;
    delete golden_;
  }
  // The seeded checkpoint of (config, seed), made once.
  static std::string model_for(const json& c) {
    std::string key = std::filesystem::path(c["config"].get<std::string>()).filename().string() + "-" +
                      std::to_string(c["seed"].get<int64_t>());
    std::string out = *dir_ / key;
    if (!is_directory(out)) {
      auto r = sh(std::string(OST_BIN) + " make-test-model --quiet --config " + kExtra + "/" +
                  c["config"].get<std::string>() + " --seed " + std::to_string(c["seed"].get<int64_t>()) +
                  " --out " + out + " --tokenizer " + OST_ASSETS + "/qwen3/tokenizer.json 2>&1");
      EXPECT_EQ(r.first, 0) << r.second;
    }
    return out;
  }
  static testing::TempDir* dir_;
  static json* cases_;
  static json* golden_;
};
testing::TempDir* HfExtra::dir_ = nullptr;
json* HfExtra::cases_ = nullptr;
json* HfExtra::golden_ = nullptr;

TEST_P(HfExtra, MatchesTheReference) {
  const std::string name = GetParam();
  json c;
  for (auto& x : *cases_)
    if (x["name"] == name) c = x;
  ASSERT_FALSE(c.is_null());
  const json& g = (*golden_)["cases"][name];
  std::string cmd = std::string(OST_BIN) + " run --device cpu --model " + model_for(c);
  for (auto& img : c["images"]) cmd += " --image " + kExtra + "/" + img.get<std::string>();
  if (c.contains("system")) cmd += " --system " + q(c["system"]);
  if (c.contains("max_pixels")) cmd += " --max-pixels " + std::to_string(c["max_pixels"].get<int64_t>());
  cmd += " --prompt " + q(c["prompt"]) +
         " --temperature 0 --json --logprobs 8 --prompt-logprobs 8 --max-tokens 24 --ignore-eos";
  auto r = sh(cmd);
  ASSERT_EQ(r.first, 0) << r.second;
  json out = json::parse(r.second);
  const int T = g["num_prompt_tokens"];
  ASSERT_EQ(out["prompt_tokens"].get<int>(), T);
  EXPECT_EQ(out["image_grid_thw"], g["image_grid_thw"]);
  ASSERT_EQ(out["prompt_top_logprobs"].size(), size_t(T));
  int id_mismatch = 0;
  double max_diff = 0;
  for (int i = 0; i < T; ++i)
    for (int k = 0; k < 8; ++k) {
      const json& e = out["prompt_top_logprobs"][i][k];
      id_mismatch += e["token_id"] != g["top8_ids"][i][k];
      max_diff = std::max(max_diff, std::abs(e["logprob"].get<double>() - g["top8_logprobs"][i][k].get<double>()));
    }
  EXPECT_EQ(id_mismatch, 0);
  EXPECT_LT(max_diff, 1e-3);
  EXPECT_EQ(out["token_ids"], g["greedy_ids"]);
  std::printf("%s: %d prompt tokens, max |logprob diff| %.2e, greedy %s\n", name.c_str(), T, max_diff,
              out["token_ids"] == g["greedy_ids"] ? "equal" : "DIFFERENT");
}

INSTANTIATE_TEST_SUITE_P(Cases, HfExtra,
                         ::testing::Values("tiny_fixture_check", "a_shelf_downscaled", "a_receipt_maxpixels",
                                           "a_text", "b_tall_and_exif", "b_webp"));

}  // namespace
}  // namespace ost
