// The ostrakon binary on the seeded tiny model against the reference outputs of the fixtures.
#include <gtest/gtest.h>

#include <cstdio>
#include <map>
#include <nlohmann/json.hpp>

#include "common/shell.h"
#include "common/temp_dir.h"
#include "core/file_util.h"
#include "io/safetensors.h"

namespace ost {
namespace {

using nlohmann::json;
const std::string kTiny = std::string(OST_TEST_DATA) + "/qwen3vl-tiny";

using testing::q;
using testing::sh;

class RunGolden : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new testing::TempDir();
    std::string tok = std::string(OST_ASSETS) + "/qwen3/tokenizer.json";
    ASSERT_TRUE(file_exists(tok)) << "run scripts/setup.sh to fetch " << tok;
    auto r = sh(std::string(OST_BIN) + " make-test-model --quiet --config " + kTiny +
                " --seed 20261124 --out " + model() + " --tokenizer " + tok + " 2>&1");
    ASSERT_EQ(r.code, 0) << r.out;
    golden_ = new json(json::parse(*read_file(kTiny + "/golden.json")));
    auto st = SafetensorsFile::open(kTiny + "/golden.safetensors");
    ASSERT_TRUE(st) << st.message();
    tensors_ = new SafetensorsFile(std::move(*st));
  }
  static void TearDownTestSuite() {
    delete dir_;
    delete golden_;
    delete tensors_;
  }
  static std::string model() { return *dir_ / "tiny"; }

  static const TensorInfo& tensor(const std::string& name) {
    for (auto& t : tensors_->tensors())
      if (t.name == name) return t;
    ADD_FAILURE() << "no golden tensor " << name;
    static TensorInfo none;
    return none;
  }

  // Runs a golden case with the exact flags of the acceptance check.
  static json run_case(const std::string& name, const std::string& prompt) {
    const json& c = (*golden_)["cases"][name];
    std::string cmd = std::string(OST_BIN) + " run --model " + model();
    for (auto& img : c["images"]) cmd += " --image " + kTiny + "/" + img.get<std::string>();
    cmd += " --prompt " + q(prompt) +
           " --temperature 0 --json --logprobs 8 --prompt-logprobs 8 --max-tokens 24 --ignore-eos";
    auto r = sh(cmd);
    EXPECT_EQ(r.code, 0) << r.out;
    return json::parse(r.out);
  }

  void check_case(const std::string& name, const std::string& prompt) {
    json out = run_case(name, prompt);
    const json& c = (*golden_)["cases"][name];
    const int T = c["num_prompt_tokens"];
    EXPECT_EQ(out["prompt_tokens"].get<int>(), T);
    if (c.contains("image_grid_thw")) EXPECT_EQ(out["image_grid_thw"], c["image_grid_thw"]);
    const TensorInfo& ids = tensor(name + ".top8_ids");
    const TensorInfo& lps = tensor(name + ".top8_logprobs");
    ASSERT_EQ(ids.shape, (std::vector<int64_t>{T, 8}));
    const auto* gid = reinterpret_cast<const int64_t*>(ids.data);
    const auto* glp = reinterpret_cast<const float*>(lps.data);
    ASSERT_EQ(out["prompt_top_logprobs"].size(), size_t(T));
    double max_diff = 0;
    int id_mismatch = 0;
    for (int i = 0; i < T; ++i)
      for (int k = 0; k < 8; ++k) {
        const json& e = out["prompt_top_logprobs"][i][k];
        id_mismatch += e["token_id"].get<int64_t>() != gid[i * 8 + k];
        max_diff = std::max(max_diff, std::abs(e["logprob"].get<double>() - glp[i * 8 + k]));
      }
    EXPECT_EQ(id_mismatch, 0);
    EXPECT_LT(max_diff, 1e-3);
    std::printf("%s: %d prompt tokens, max |logprob diff| over the top-8 at every position %.2e\n",
                name.c_str(), T, max_diff);
    EXPECT_EQ(out["token_ids"], c["greedy_ids"]);
    // The first generated token's top-8 is the last prompt position's.
    EXPECT_EQ(out["logprobs"][0]["top_logprobs"], out["prompt_top_logprobs"][T - 1]);
    EXPECT_EQ(out["completion_tokens"].get<int>(), 24);
    EXPECT_EQ(out["finish_reason"], "length");
  }

  static testing::TempDir* dir_;
  static json* golden_;
  static SafetensorsFile* tensors_;
};
testing::TempDir* RunGolden::dir_ = nullptr;
json* RunGolden::golden_ = nullptr;
SafetensorsFile* RunGolden::tensors_ = nullptr;

TEST_F(RunGolden, OneImageChinese) { check_case("one_image_zh", "请详细描述这张图片中的商品陈列情况。"); }
TEST_F(RunGolden, TextOnlyEnglish) {
  check_case("text_only_en", "List three ways to reduce food waste in a restaurant kitchen.");
}
TEST_F(RunGolden, TwoImages) {
  check_case("two_images", "Compare the two pictures: which one is a promotion poster?");
}

TEST_F(RunGolden, SamplingIsDeterministicPerSeed) {
  auto run = [&](int seed) {
    auto r = sh(std::string(OST_BIN) + " run --model " + model() +
                " --prompt hello --temperature 0.9 --top-p 0.95 --top-k 50 --max-tokens 16 --ignore-eos --json"
                " --seed " + std::to_string(seed));
    EXPECT_EQ(r.code, 0) << r.out;
    return json::parse(r.out)["token_ids"];
  };
  auto a = run(7), b = run(7), c = run(8);
  EXPECT_EQ(a, b);
  EXPECT_NE(a, c);
  EXPECT_EQ(a.size(), 16u);
}

TEST_F(RunGolden, StopStringCutsTheAnswer) {
  auto full = sh(std::string(OST_BIN) + " run --model " + model() +
                 " --prompt hello --max-tokens 24 --ignore-eos --json");
  ASSERT_EQ(full.code, 0) << full.out;
  std::string text = json::parse(full.out)["text"];
  ASSERT_GT(text.size(), 12u);
  std::string stop = text.substr(6, 3);
  auto cut = sh(std::string(OST_BIN) + " run --model " + model() + " --prompt hello --max-tokens 24 --ignore-eos --json --stop " + q(stop));
  ASSERT_EQ(cut.code, 0) << cut.out;
  json j = json::parse(cut.out);
  EXPECT_EQ(j["finish_reason"], "stop");
  EXPECT_EQ(j["text"].get<std::string>(), text.substr(0, text.find(stop)));
}

// --json-schema: the random-weight model's answer is JSON valid for the schema (strings bounded
// by maxLength so that it ends), and it ends by itself.
TEST_F(RunGolden, JsonSchemaConstrainsTheAnswer) {
  testing::TempDir tmp;
  const std::string schema = R"({"type": "object", "properties": {
      "product": {"type": "string", "maxLength": 8}, "price": {"type": "number"},
      "currency": {"enum": ["EUR", "USD", "CNY"]}, "on_promotion": {"type": "boolean"}},
    "required": ["product", "price", "currency", "on_promotion"], "additionalProperties": false})";
  ASSERT_TRUE(write_file(tmp / "tag.json", schema).is_ok());
  for (const char* sampling : {"", " --temperature 1 --seed 3"}) {
    auto r = sh(std::string(OST_BIN) + " run --device cpu --model " + model() + " --prompt " + q("Read the price tag") +
                " --max-tokens 200 --json --json-schema " + (tmp / "tag.json") + sampling);
    ASSERT_EQ(r.code, 0) << r.out;
    const json j = json::parse(r.out);
    EXPECT_EQ(j["finish_reason"], "stop") << sampling;
    const json v = json::parse(j["text"].get<std::string>(), nullptr, false);
    ASSERT_TRUE(v.is_object()) << j["text"];
    EXPECT_EQ(v.size(), 4u);
    EXPECT_TRUE(v["product"].is_string() && v["product"].get<std::string>().size() <= 8 * 4);
    EXPECT_TRUE(v["price"].is_number());
    EXPECT_TRUE(v["currency"] == "EUR" || v["currency"] == "USD" || v["currency"] == "CNY") << v;
    EXPECT_TRUE(v["on_promotion"].is_boolean());
  }
  ASSERT_TRUE(write_file(tmp / "bad.json", R"({"type": "string", "pattern": "^a"})").is_ok());
  auto bad = sh(std::string(OST_BIN) + " run --model " + model() + " --prompt hi --json-schema " + (tmp / "bad.json") + " 2>&1");
  EXPECT_NE(bad.code, 0);
  EXPECT_NE(bad.out.find("pattern"), std::string::npos) << bad.out;
  auto both = sh(std::string(OST_BIN) + " run --model " + model() + " --prompt hi --json-object --json-schema " +
                 (tmp / "tag.json") + " 2>&1");
  EXPECT_NE(both.code, 0);
  EXPECT_NE(both.out.find("not both"), std::string::npos) << both.out;
}

// --dump writes every named intermediate; the merger output equals the reference's vision_embeds.
TEST_F(RunGolden, DumpHoldsTheIntermediatesLayerByLayer) {
  testing::TempDir tmp;
  const std::string file = tmp / "dump.safetensors";
  auto r = sh(std::string(OST_BIN) + " run --device cpu --model " + model() + " --image " + kTiny +
              "/images/shelf_300x200.png --prompt " + q("请详细描述这张图片中的商品陈列情况。") +
              " --max-tokens 1 --dump " + file + " 2>&1");
  ASSERT_EQ(r.code, 0) << r.out;
  auto d = SafetensorsFile::open(file);
  ASSERT_TRUE(d) << d.message();
  std::map<std::string, const TensorInfo*> by_name;
  for (auto& t : d->tensors()) by_name[t.name] = &t;
  for (const char* n : {"vis.patch_embed", "vis.block_out.3", "vis.deepstack.0", "txt.embed", "txt.attn_out.0",
                        "txt.layer_out.3", "txt.result_norm"})
    EXPECT_TRUE(by_name.count(n)) << n;
  ASSERT_TRUE(by_name.count("vis.merger_out"));
  const TensorInfo& got = *by_name["vis.merger_out"];
  const TensorInfo& want = tensor("one_image_zh.vision_embeds");
  ASSERT_EQ(got.shape, want.shape);
  const float* a = reinterpret_cast<const float*>(got.data);
  const float* b = reinterpret_cast<const float*>(want.data);
  double max_diff = 0;
  for (int64_t i = 0; i < want.numel(); ++i) max_diff = std::max(max_diff, double(std::abs(a[i] - b[i])));
  EXPECT_LT(max_diff, 1e-4);
  ASSERT_TRUE(by_name.count("txt.layer_out.0"));
  EXPECT_EQ(by_name["txt.layer_out.0"]->shape, (std::vector<int64_t>{90, 64}));
}

// --kv-cache-dtype fp8: the same request through the fp8 cache; close to the reference (the
// bounds of tests/model/kv_fp8_test.cpp: top-1 agreement over the prompt positions).
TEST_F(RunGolden, KvCacheDtypeFp8) {
  const std::string name = "text_only_en";
  const json& c = (*golden_)["cases"][name];
  auto r = sh(std::string(OST_BIN) + " run --model " + model() + " --device cpu --kv-cache-dtype fp8 --prompt " +
              q("List three ways to reduce food waste in a restaurant kitchen.") +
              " --json --prompt-logprobs 1 --max-tokens 24 --ignore-eos");
  ASSERT_EQ(r.code, 0) << r.out;
  json out = json::parse(r.out);
  const int T = c["num_prompt_tokens"];
  ASSERT_EQ(out["prompt_top_logprobs"].size(), size_t(T));
  const auto* gid = reinterpret_cast<const int64_t*>(tensor(name + ".top8_ids").data);
  int same = 0;
  for (int i = 0; i < T; ++i) same += out["prompt_top_logprobs"][i][0]["token_id"].get<int64_t>() == gid[i * 8];
  std::printf("fp8 KV: top-1 agreement with the reference over %d prompt positions: %d\n", T, same);
  EXPECT_GE(double(same) / T, 0.85);
  EXPECT_EQ(out["completion_tokens"].get<int>(), 24);
}

TEST_F(RunGolden, TokenizeCommand) {
  auto r = sh(std::string(OST_BIN) + " tokenize --model " + model() + " --text " + q("Hello world"));
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_EQ(json::parse(r.out)["ids"], json::parse("[9707, 1879]"));
}

TEST_F(RunGolden, BadInputsGiveAClearMessageAndNonZeroExit) {
  struct Case {
    std::string args, expect;
  };
  testing::TempDir tmp;
  ASSERT_TRUE(write_file(tmp / "junk.png", "this is not an image").is_ok());
  std::vector<Case> cases = {
      {" run --model /nonexistent --prompt hi", "does not exist"},
      {" run --model " + model() + " --prompt hi --image /nonexistent.png", "/nonexistent.png"},
      {" run --model " + model() + " --prompt hi --image " + (tmp / "junk.png"), "junk.png"},
      {" run --model " + model() + " --prompt hi --max-tokens x", "max-tokens"},
      {" run --model " + model() + " --prompt hi --top-p 0", "top-p"},
      {" run --model " + model() + " --prompt hi --bogus", "unknown option --bogus"},
      {" run --model " + model(), "--prompt"},
      {" run --model " + model() + " --prompt hi --device tpu", "tpu"},
      {" run --model " + model() + " --prompt hi --kv-cache-dtype int8", "KV cache dtype"},
      {" frobnicate", "unknown command"},
  };
  for (auto& c : cases) {
    auto r = sh(std::string(OST_BIN) + c.args + " 2>&1");
    EXPECT_NE(r.code, 0) << c.args;
    EXPECT_NE(r.out.find(c.expect), std::string::npos) << c.args << "\n" << r.out;
    EXPECT_EQ(r.out.find("Segmentation"), std::string::npos);
  }
}

}  // namespace
}  // namespace ost
