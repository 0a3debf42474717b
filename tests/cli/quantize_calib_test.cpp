// `ostrakon quantize --calib-images/--calib-prompts` (AWQ) on the seeded tiny model: the written
// checkpoint records the search and runs like any INT4 checkpoint, the report shows AWQ next to
// round-to-nearest, and wrong uses are refused with the problem named.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "common/shell.h"
#include "common/temp_dir.h"
#include "core/file_util.h"

namespace ost {
namespace {

const std::string kTiny = std::string(OST_TEST_DATA) + "/qwen3vl-tiny";

// Runs cmd with stderr folded into the output.
testing::Output shell(const std::string& cmd) { return testing::sh(cmd + " 2>&1"); }

class QuantizeCalib : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new testing::TempDir();
    std::string tok = std::string(OST_ASSETS) + "/qwen3/tokenizer.json";
    ASSERT_TRUE(file_exists(tok)) << "run scripts/setup.sh to fetch " << tok;
    auto r = shell(std::string(OST_BIN) + " make-test-model --quiet --config " + kTiny + " --seed 20261124 --out " +
                model() + " --tokenizer " + tok);
    ASSERT_EQ(r.code, 0) << r.out;
    ASSERT_TRUE(write_file(prompts(), "What is on the shelf?\n\nRead the poster.\r\nCount the colours.\n").is_ok());
  }
  static void TearDownTestSuite() { delete dir_; }
  static std::string model() { return *dir_ / "tiny"; }
  static std::string prompts() { return *dir_ / "prompts.txt"; }
  static std::string quantize() { return std::string(OST_BIN) + " quantize --model " + model(); }
  static testing::TempDir* dir_;
};

testing::TempDir* QuantizeCalib::dir_ = nullptr;

TEST_F(QuantizeCalib, WritesAwqCheckpointAndReport) {
  testing::TempDir tmp;
  const std::string out = tmp / "int4-awq", rep = tmp / "report.md";
  // 2 images and 3 prompts: 3 samples (image k mod 2 with prompt k mod 3).
  auto r = shell(quantize() + " --out " + out + " --format int4 --group-size 32 --calib-images " + kTiny +
              "/images --calib-prompts " + prompts() + " --continuation 4 --report " + rep);
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_NE(r.out.find("AWQ on 3 samples"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("with AWQ scales"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("round-to-nearest: logits rel L2"), std::string::npos) << r.out;
  auto cfg = nlohmann::json::parse(*read_file(out + "/config.json"));
  const auto& qc = cfg["quantization_config"];
  EXPECT_EQ(qc["weight_format"], "int4");
  EXPECT_EQ(qc["awq"], true);
  EXPECT_EQ(qc["awq_calibration"]["samples"], 3);
  EXPECT_EQ(qc["awq_alpha"].size(), 4u);
  auto md = read_file(rep);
  ASSERT_TRUE(md.is_ok());
  for (const char* s : {"int4 (AWQ) vs bf16", "int4 (round-to-nearest) vs bf16", "Activation-aware scales (AWQ)",
                        "| layer | q/k/v α |"})
    EXPECT_NE(md->find(s), std::string::npos) << s;
  // It runs like any INT4 checkpoint.
  auto ran = shell(std::string(OST_BIN) + " run --device cpu --model " + out + " --prompt hello --max-tokens 4");
  EXPECT_EQ(ran.code, 0) << ran.out;
}

TEST_F(QuantizeCalib, TextOnlyReportOnly) {
  auto r = shell(quantize() + " --format int4 --group-size 32 --calib-prompts " + prompts() +
              " --report-only --continuation 2 --calib-rows 16");
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_NE(r.out.find("AWQ on 3 samples"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("rows per input"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("## int4 (AWQ) vs bf16"), std::string::npos) << r.out;
}

TEST_F(QuantizeCalib, Errors) {
  testing::TempDir tmp;
  ASSERT_TRUE(write_file(tmp / "empty.txt", "\n  \n").is_ok());
  ASSERT_TRUE(write_file(tmp / "notes.txt", "not an image").is_ok());
  struct Case {
    std::string args, expect;
  };
  const std::string o = " --out " + (tmp / "o");
  const std::vector<Case> cases = {
      {" --format int8 --calib-prompts " + prompts() + o, "for --format int4 only (not int8)"},
      {" --format fp8 --calib-images " + kTiny + "/images" + o, "for --format int4 only (not fp8)"},
      {" --format int4 --calib-rows 8" + o, "--calib-rows needs --calib-images or --calib-prompts"},
      {" --format int4 --group-size 32 --calib-prompts " + (tmp / "empty.txt") + o, "has no prompt"},
      {" --format int4 --group-size 32 --calib-prompts " + (tmp / "missing.txt") + o, "--calib-prompts"},
      {" --format int4 --group-size 32 --calib-images " + tmp.path() + o, "no jpg, png or webp file in"},
      {" --format int4 --group-size 32 --calib-images " + (tmp / "nodir") + o, "--calib-images"},
      // the writer's checks come before the calibration pass
      {" --format int4 --group-size 1000 --calib-prompts " + prompts() + o, "not divisible by the int4 group size 1000"},
  };
  for (const Case& c : cases) {
    auto r = shell(quantize() + c.args);
    EXPECT_NE(r.code, 0) << c.args;
    EXPECT_NE(r.out.find(c.expect), std::string::npos) << c.args << "\n" << r.out;
    EXPECT_EQ(r.out.find("AWQ on"), std::string::npos) << c.args;
  }
  EXPECT_FALSE(file_exists(tmp / "o/model.safetensors"));
}

}  // namespace
}  // namespace ost
