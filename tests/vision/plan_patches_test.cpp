// preprocess_image split in two (plan_patches + normalize_table, the patches cut by the
// consumer) gives exactly preprocess_image's pixel values, with and without a resize.
#include <gtest/gtest.h>

#include <random>

#include "vision/preprocess.h"

namespace ost {
namespace {

Image noise_image(int w, int h, uint32_t seed) {
  Image im;
  im.width = w;
  im.height = h;
  im.rgb.resize(size_t(w) * h * 3);
  std::mt19937 rng(seed);
  for (auto& b : im.rgb) b = uint8_t(rng() & 0xff);
  return im;
}

TEST(PlanPatches, CutWithTheTableEqualsPreprocess) {
  PreprocessOptions po;
  po.mean = {0.48145466f, 0.4578275f, 0.40821073f};
  po.std = {0.26862954f, 0.26130258f, 0.27577711f};
  for (auto [w, h] : {std::pair{320, 224}, std::pair{300, 200}}) {  // kept size; resized
    const Image im = noise_image(w, h, uint32_t(w));
    auto ref = preprocess_image(im, po);
    ASSERT_TRUE(ref.is_ok()) << ref.message();
    Image resized;
    auto plan = plan_patches(im, po, &resized);
    auto lut = normalize_table(po);
    ASSERT_TRUE(plan.is_ok() && lut.is_ok());
    EXPECT_TRUE(plan->pixel_values.empty());
    EXPECT_EQ(plan->grid_h, ref->grid_h);
    EXPECT_EQ(plan->grid_w, ref->grid_w);
    EXPECT_EQ(resized.rgb.empty(), w == 320);
    const Image& src = resized.rgb.empty() ? im : resized;
    ASSERT_EQ(src.width, plan->grid_w * po.patch_size);
    ASSERT_EQ(src.height, plan->grid_h * po.patch_size);
    // Cut as a GPU consumer does: patch rows in merge-block order, columns (c, t, py, px).
    const int P = po.patch_size, M = po.merge_size, T = po.temporal_patch_size, cols = 3 * T * P * P;
    size_t r = 0, mismatches = 0;
    for (int br = 0; br < plan->grid_h / M; ++br)
      for (int bc = 0; bc < plan->grid_w / M; ++bc)
        for (int ir = 0; ir < M; ++ir)
          for (int ic = 0; ic < M; ++ic, ++r)
            for (int k = 0; k < cols; ++k) {
              const int c = k / (T * P * P), q = k % (P * P);
              const int y = (br * M + ir) * P + q / P, x = (bc * M + ic) * P + q % P;
              const float v = (*lut)[size_t(c)][src.rgb[(size_t(y) * src.width + x) * 3 + size_t(c)]];
              mismatches += v != ref->pixel_values[r * cols + size_t(k)];
            }
    EXPECT_EQ(r * cols, ref->pixel_values.size());
    EXPECT_EQ(mismatches, 0u) << w << "x" << h;
  }
}

}  // namespace
}  // namespace ost
