#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "common/temp_dir.h"
#include "core/file_util.h"
#include "core/sha256.h"
#include "io/checkpoint.h"
#include "io/config.h"
#include "io/seeded.h"

namespace ost {
namespace {

const std::string kTiny = std::string(OST_TEST_DATA) + "/qwen3vl-tiny";
const std::string k8B = std::string(OST_TEST_DATA) + "/qwen3vl-8b";

nlohmann::json golden() { return nlohmann::json::parse(*read_file(kTiny + "/golden.json")); }

ModelConfig tiny_config() { return *parse_model_config(*read_file(kTiny + "/config.json")); }

// sha256 over tensors in sorted name order: utf-8 name, then little-endian bf16 bits.
std::string weights_sha256(const Checkpoint& ck, const ModelConfig& c) {
  Sha256 h;
  for (auto& w : expected_weights(c)) {
    const TensorInfo& t = ck.get(w.name);
    h.update(w.name.data(), w.name.size());
    h.update(t.data, t.nbytes);
  }
  return h.hex_digest();
}

TEST(Config, Transformers5Form) {
  ModelConfig c = tiny_config();
  EXPECT_EQ(c.text.hidden_size, 64);
  EXPECT_EQ(c.text.num_layers, 4);
  EXPECT_EQ(c.text.num_heads, 4);
  EXPECT_EQ(c.text.num_kv_heads, 2);
  EXPECT_EQ(c.text.head_dim, 32);
  EXPECT_EQ(c.text.intermediate_size, 160);
  EXPECT_DOUBLE_EQ(c.text.rope_theta, 5e6);
  EXPECT_EQ(c.text.mrope_section, (std::array<int, 3>{6, 5, 5}));
  EXPECT_EQ(c.vision.deepstack_visual_indexes, (std::vector<int>{0, 2}));
  EXPECT_EQ(c.vision.merged_dim(), 256);
  EXPECT_FALSE(c.tie_word_embeddings);
}

TEST(Config, Transformers457Form) {
  auto c = parse_model_config(*read_file(k8B + "/config.json"));
  ASSERT_TRUE(c) << c.message();
  EXPECT_EQ(c->text.num_layers, 36);
  EXPECT_EQ(c->text.head_dim, 128);
  EXPECT_EQ(c->text.num_kv_heads, 8);
  EXPECT_DOUBLE_EQ(c->text.rope_theta, 5e6);
  EXPECT_EQ(c->text.mrope_section, (std::array<int, 3>{24, 20, 20}));
  EXPECT_EQ(c->dtype, "bfloat16");
  EXPECT_EQ(c->vision.deepstack_visual_indexes, (std::vector<int>{8, 16, 24}));
  EXPECT_EQ(c->vision.head_dim(), 72);
  auto folder = load_folder_configs(k8B);
  ASSERT_TRUE(folder) << folder.message();
  EXPECT_EQ(folder->preprocessor.min_pixels, 65536);
  EXPECT_EQ(folder->preprocessor.max_pixels, 16777216);
  EXPECT_EQ(folder->generation.eos_token_ids, (std::vector<int>{151645, 151643}));
  EXPECT_EQ(folder->generation.top_k, 20);
}

TEST(Config, ErrorsNameTheProblem) {
  auto bad = parse_model_config("{not json");
  ASSERT_FALSE(bad);
  EXPECT_NE(bad.message().find("invalid JSON"), std::string::npos);
  auto j = nlohmann::json::parse(*read_file(kTiny + "/config.json"));
  j["text_config"].erase("hidden_size");
  auto r = parse_model_config(j.dump());
  ASSERT_FALSE(r);
  EXPECT_NE(r.message().find("hidden_size"), std::string::npos) << r.message();
  j = nlohmann::json::parse(*read_file(kTiny + "/config.json"));
  j["text_config"]["rope_parameters"]["mrope_section"] = {6, 5, 4};
  r = parse_model_config(j.dump());
  ASSERT_FALSE(r);
  EXPECT_NE(r.message().find("mrope_section"), std::string::npos) << r.message();
}

TEST(Seeded, TinyModelHoldsTheFixtureWeights) {
  testing::TempDir dir;
  ASSERT_TRUE(write_test_model({kTiny, 20261124, dir.path()}).is_ok());
  ModelConfig c = tiny_config();
  auto ck = Checkpoint::open(dir.path(), c);
  ASSERT_TRUE(ck) << ck.message();
  auto g = golden();
  EXPECT_EQ(weights_sha256(*ck, c), g["weights_sha256"].get<std::string>());
  // The name table equals the tensor list of a real checkpoint of this model.
  std::map<std::string, std::vector<int64_t>> want;
  for (auto& [name, v] : g["checkpoint_keys"].items()) want[name] = v["shape"].get<std::vector<int64_t>>();
  std::map<std::string, std::vector<int64_t>> got;
  for (auto& w : expected_weights(c)) got[w.name] = w.shape;
  EXPECT_EQ(got, want);
  // The json files travel with the weights.
  EXPECT_TRUE(file_exists(dir / "config.json"));
  EXPECT_TRUE(file_exists(dir / "generation_config.json"));
  EXPECT_TRUE(file_exists(dir / "preprocessor_config.json"));
  EXPECT_FALSE(file_exists(dir / "golden.json"));
}

TEST(Seeded, KnownValues) {
  // A 1-D norm weight is 1 + 0.25*s, a bias 0.1*s: both inside their ranges, bf16 exact.
  bf16_t v[4];
  seeded_fill("x.norm.weight", {4}, 1, 0, 4, v);
  for (auto b : v) {
    float f = bf16_to_f32(b);
    EXPECT_GE(f, 0.75f);
    EXPECT_LE(f, 1.25f);
  }
  // Chunked generation equals one-shot generation.
  std::vector<bf16_t> all(1000), part(1000);
  seeded_fill("a.weight", {10, 100}, 7, 0, 1000, all.data());
  seeded_fill("a.weight", {10, 100}, 7, 0, 300, part.data());
  seeded_fill("a.weight", {10, 100}, 7, 300, 700, part.data() + 300);
  EXPECT_EQ(all, part);
}

TEST(Checkpoint, ShardedWithIndexAndTiedEmbeddings) {
  testing::TempDir cfg_dir, dir;
  auto j = nlohmann::json::parse(*read_file(kTiny + "/config.json"));
  j["tie_word_embeddings"] = true;
  ASSERT_TRUE(write_file(cfg_dir / "config.json", j.dump()).is_ok());
  TestModelOptions opt{cfg_dir.path(), 5, dir.path()};
  opt.shard_bytes = 8 << 20;
  ASSERT_TRUE(write_test_model(opt).is_ok());
  EXPECT_TRUE(file_exists(dir / "model.safetensors.index.json"));
  EXPECT_TRUE(file_exists(dir / "model-00001-of-00002.safetensors"));
  auto c = parse_model_config(j.dump());
  ASSERT_TRUE(c);
  auto ck = Checkpoint::open(dir.path(), *c);
  ASSERT_TRUE(ck) << ck.message();
  EXPECT_EQ(ck->files().size(), 2u);
  EXPECT_EQ(ck->find("lm_head.weight"), nullptr);
  EXPECT_NE(ck->find("model.visual.blocks.3.attn.qkv.weight"), nullptr);
}

// Writes a checkpoint from an edited tensor list.
void write_specs(const std::string& path, const std::vector<TensorSpec>& specs) {
  ASSERT_TRUE(write_safetensors(path, specs, [](const TensorSpec& s, int64_t f, int64_t n, uint8_t* out) {
                seeded_fill(s.name, s.shape, 1, f, n, reinterpret_cast<bf16_t*>(out));
              }).is_ok());
}

TEST(Checkpoint, ErrorListsEveryMissingUnexpectedAndMisShapedTensor) {
  testing::TempDir dir;
  ModelConfig c = tiny_config();
  std::vector<TensorSpec> specs;
  for (auto& w : expected_weights(c)) {
    if (w.name == "model.language_model.norm.weight") continue;                  // missing
    if (w.name == "model.visual.merger.linear_fc2.bias") continue;                // missing
    std::vector<int64_t> shape = w.shape;
    if (w.name == "model.language_model.layers.1.self_attn.k_proj.weight") shape = {32, 64};  // mis-shaped
    specs.push_back({w.name, DType::BF16, shape});
  }
  specs.push_back({"model.visual.extra.weight", DType::BF16, {2, 2}});  // unexpected
  write_specs(dir / "model.safetensors", specs);
  auto ck = Checkpoint::open(dir.path(), c);
  ASSERT_FALSE(ck);
  const std::string& m = ck.message();
  EXPECT_NE(m.find("4 problems"), std::string::npos) << m;
  EXPECT_NE(m.find("missing model.language_model.norm.weight [64]"), std::string::npos) << m;
  EXPECT_NE(m.find("missing model.visual.merger.linear_fc2.bias"), std::string::npos) << m;
  EXPECT_NE(m.find("mis-shaped model.language_model.layers.1.self_attn.k_proj.weight: [32, 64], expected [64, 64]"),
            std::string::npos) << m;
  EXPECT_NE(m.find("unexpected model.visual.extra.weight [2, 2]"), std::string::npos) << m;
}

std::string tiny_file(const testing::TempDir& dir) {
  EXPECT_TRUE(write_test_model({kTiny, 1, dir.path()}).is_ok());
  return *read_file(dir / "model.safetensors");
}

TEST(Safetensors, TruncatedFileIsAClearError) {
  testing::TempDir dir, bad;
  std::string data = tiny_file(dir);
  for (size_t cut : {size_t(0), size_t(5), size_t(100), data.size() / 2, data.size() - 1}) {
    ASSERT_TRUE(write_file(bad / "model.safetensors", data.substr(0, cut)).is_ok());
    auto f = SafetensorsFile::open(bad / "model.safetensors");
    ASSERT_FALSE(f) << "cut at " << cut;
    EXPECT_NE(f.message().find("truncated"), std::string::npos) << f.message();
  }
}

TEST(Safetensors, BadHeadersAreClearErrors) {
  testing::TempDir dir;
  auto write_header = [&](const std::string& header, size_t data_bytes) {
    uint64_t n = header.size();
    std::string s(reinterpret_cast<const char*>(&n), 8);
    s += header + std::string(data_bytes, '\0');
    EXPECT_TRUE(write_file(dir / "m.safetensors", s).is_ok());
    return SafetensorsFile::open(dir / "m.safetensors");
  };
  auto r = write_header("{\"a\": {\"dtype\": \"BF16\", \"shape\": [2], \"data_offsets\": [0, 4]}}", 4);
  ASSERT_TRUE(r) << r.message();
  EXPECT_EQ(r->tensors().size(), 1u);
  r = write_header("not json at all", 0);
  ASSERT_FALSE(r);
  EXPECT_NE(r.message().find("bad safetensors header"), std::string::npos) << r.message();
  r = write_header("{\"a\": {\"dtype\": \"BF16\", \"shape\": [2], \"data_offsets\": [0, 400]}}", 4);
  ASSERT_FALSE(r);
  EXPECT_NE(r.message().find("out of range"), std::string::npos) << r.message();
  r = write_header("{\"a\": {\"dtype\": \"BF16\", \"shape\": [3], \"data_offsets\": [0, 4]}}", 4);
  ASSERT_FALSE(r);
  EXPECT_NE(r.message().find("bytes for shape"), std::string::npos) << r.message();
  r = write_header("{\"a\": {\"dtype\": \"Q9\", \"shape\": [2], \"data_offsets\": [0, 4]}}", 4);
  ASSERT_FALSE(r);
  EXPECT_NE(r.message().find("unsupported dtype"), std::string::npos) << r.message();
  r = write_header("{\"a\": {\"dtype\": \"BF16\", \"shape\": [-2], \"data_offsets\": [0, 4]}}", 4);
  ASSERT_FALSE(r);
  r = write_header("{\"a\": {\"dtype\": \"BF16\", \"shape\": [4611686018427387904, 4], \"data_offsets\": [0, 4]}}", 4);
  ASSERT_FALSE(r);
  // A header length larger than the file.
  std::string s(8, '\0');
  uint64_t huge = 1ull << 40;
  std::memcpy(s.data(), &huge, 8);
  ASSERT_TRUE(write_file(dir / "m.safetensors", s).is_ok());
  EXPECT_FALSE(SafetensorsFile::open(dir / "m.safetensors"));
}

TEST(Checkpoint, MissingFolderAndFiles) {
  ModelConfig c = tiny_config();
  auto r = Checkpoint::open("/nonexistent/model", c);
  ASSERT_FALSE(r);
  testing::TempDir empty;
  r = Checkpoint::open(empty.path(), c);
  ASSERT_FALSE(r);
  EXPECT_NE(r.message().find("no .safetensors"), std::string::npos) << r.message();
}

}  // namespace
}  // namespace ost
