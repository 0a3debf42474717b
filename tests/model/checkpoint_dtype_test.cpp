// The same seeded weights stored as f32 and as f16: the model reads every checkpoint dtype.
#include <immintrin.h>

#include <cmath>

#include "core/bf16.h"
#include "fixture.h"
#include "io/checkpoint.h"

namespace ost::testing {
namespace {

uint16_t f32_to_f16_for_test(float v) { return uint16_t(_cvtss_sh(v, 0)); }  // nearest even

// Rewrites the tiny bf16 checkpoint with every tensor converted to `to` (F32 or F16).
void convert_checkpoint(const std::string& from, const std::string& to_dir, DType to) {
  std::filesystem::create_directories(to_dir);
  for (const char* f : {"config.json", "generation_config.json", "preprocessor_config.json"})
    std::filesystem::copy_file(from + "/" + f, to_dir + "/" + f);
  auto src = SafetensorsFile::open(from + "/model.safetensors");
  ASSERT_TRUE(src) << src.message();
  std::vector<TensorSpec> specs;
  for (auto& t : src->tensors()) specs.push_back({t.name, to, t.shape});
  const auto& tensors = src->tensors();
  Status st = write_safetensors(to_dir + "/model.safetensors", specs,
                                [&](const TensorSpec& s, int64_t first, int64_t n, uint8_t* out) {
                                  const TensorInfo* t = nullptr;
                                  for (auto& x : tensors)
                                    if (x.name == s.name) t = &x;
                                  const auto* b = reinterpret_cast<const bf16_t*>(t->data) + first;
                                  for (int64_t i = 0; i < n; ++i) {
                                    float v = bf16_to_f32(b[i]);
                                    if (to == DType::F32) {
                                      std::memcpy(out + 4 * i, &v, 4);
                                    } else {  // f32 -> f16, round to nearest (values are in range)
                                      uint16_t h = f32_to_f16_for_test(v);
                                      std::memcpy(out + 2 * i, &h, 2);
                                    }
                                  }
                                });
  ASSERT_TRUE(st.is_ok()) << st.message();
}

std::vector<float> last_logits(const std::string& dir, const std::vector<int32_t>& ids, const ModelConfig** cfg) {
  auto m = Qwen3VLModel::load(dir);
  EXPECT_TRUE(m) << m.message();
  if (!m) return {};
  auto pos = compute_mrope_positions(ids, {}, (*m)->config());
  KvCache c = (*m)->new_cache(int64_t(ids.size()));
  auto l = (*m)->prefill(c, ids, *pos, nullptr, false);
  EXPECT_TRUE(l) << l.message();
  return l ? *l : std::vector<float>{};
}

TEST(CheckpointDtype, F32AndF16CheckpointsGiveTheBf16Logits) {
  TempDir dir;
  TestModelOptions o;
  o.config_dir = kTinyDir;
  o.seed = kTinySeed;
  o.out_dir = dir / "bf16";
  ASSERT_TRUE(write_test_model(o).is_ok());
  convert_checkpoint(dir / "bf16", dir / "f32", DType::F32);
  convert_checkpoint(dir / "bf16", dir / "f16", DType::F16);
  const std::vector<int32_t> ids = Golden::get().ids("text_only_en");
  auto ref = last_logits(dir / "bf16", ids, nullptr);
  auto f32 = last_logits(dir / "f32", ids, nullptr);
  auto f16 = last_logits(dir / "f16", ids, nullptr);
  ASSERT_EQ(ref.size(), f32.size());
  ASSERT_EQ(ref.size(), f16.size());
  // bf16 values are exact in f32: the same numbers up to summation order.
  EXPECT_LT(max_abs_diff(ref.data(), f32.data(), ref.size()), 1e-4);
  // f16 keeps 11 significant bits (bf16 has 8) but a narrower range: close, not equal.
  EXPECT_LT(max_abs_diff(ref.data(), f16.data(), ref.size()), 5e-2);
  EXPECT_GT(max_abs_diff(ref.data(), f16.data(), ref.size()), 0.0);
}

}  // namespace
}  // namespace ost::testing
