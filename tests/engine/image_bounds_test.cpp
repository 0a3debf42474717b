// Per-request image bounds: the request's min/max pixels and OpenAI's per-image detail.
#include <gtest/gtest.h>

#include "engine/engine.h"

namespace ost::testing {
namespace {

TEST(ImageBounds, LowDetailCapsTheVisionTokens) {
  PreprocessorConfig pc;  // Qwen3-VL's: patch 16, merge 2, pixels in [65536, 16777216]
  GenerateRequest req;
  req.detail = {ImageDetail::kAuto, ImageDetail::kLow, ImageDetail::kHigh};
  auto same = [&](size_t i, int64_t lo, int64_t hi) {
    auto po = image_preprocess_options(pc, req, i);
    ASSERT_TRUE(po.is_ok()) << po.message();
    EXPECT_EQ(po->min_pixels, lo) << i;
    EXPECT_EQ(po->max_pixels, hi) << i;
  };
  same(0, 65536, 16777216);
  same(1, 65536, kLowDetailTokens * 32 * 32);
  same(2, 65536, 16777216);
  same(3, 65536, 16777216);  // no detail given for it

  // Low detail under the request's own bounds: the smaller cap wins, min_pixels yields to it.
  req.min_pixels = 500'000;
  req.max_pixels = 1'000'000;
  same(0, 500'000, 1'000'000);
  same(1, kLowDetailTokens * 32 * 32, kLowDetailTokens * 32 * 32);
  req.max_pixels = 100'000;
  req.min_pixels = 0;
  same(1, 65536, 100'000);

  // What the image becomes: a 1600x1280 photo has 50x40 merged tokens by default, at most 256
  // with low detail.
  Image photo{1600, 1280, std::vector<uint8_t>(size_t(1600) * 1280 * 3, 128)};
  req = {};
  req.detail = {ImageDetail::kAuto, ImageDetail::kLow};
  for (size_t i = 0; i < 2; ++i) {
    auto po = image_preprocess_options(pc, req, i);
    ASSERT_TRUE(po.is_ok());
    auto p = preprocess_image(photo, *po);
    ASSERT_TRUE(p.is_ok()) << p.message();
    const int64_t merged = p->num_tokens();
    if (i == 0) {
      EXPECT_EQ(merged, 50 * 40);
    } else {
      EXPECT_LE(merged, kLowDetailTokens);
      EXPECT_GE(merged, kLowDetailTokens * 3 / 4);
    }
  }
}

TEST(ImageBounds, ConflictingRequestBoundsAreAnError) {
  PreprocessorConfig pc;
  GenerateRequest req;
  req.min_pixels = 300'000;
  req.max_pixels = 200'000;
  EXPECT_FALSE(image_preprocess_options(pc, req, 0).is_ok());
}

}  // namespace
}  // namespace ost::testing
