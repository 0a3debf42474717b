// Bicubic resize against oracles from tests/data/vision/make_test_images.py:
//   kPillowInt32 == PIL.Image.resize(BICUBIC) bit for bit (checks windows and filter),
//   kTorchInt16  == the PyTorch uint8 kernel model bit for bit, and within 2 levels of PIL
//                   (two roundings to uint8 make a rare 2; see the count printed).
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "core/file_util.h"
#include "vision/preprocess.h"
#include "vision_test_util.h"

namespace ost {
namespace {

using vtest::crc32;

uint32_t crc_of(const Image& img) { return crc32(img.rgb.data(), img.rgb.size()); }

std::vector<uint8_t> hex_bytes(const std::string& s) {
  std::vector<uint8_t> out(s.size() / 2);
  for (size_t i = 0; i < out.size(); ++i) out[i] = uint8_t(std::stoul(s.substr(2 * i, 2), nullptr, 16));
  return out;
}

TEST(ResizeOracles, AllCases) {
  auto text = read_file(vtest::data_dir() + "/resize_oracles.json");
  ASSERT_TRUE(text.is_ok()) << text.message();
  auto j = nlohmann::json::parse(*text);
  ASSERT_GE(j["cases"].size(), 5u);
  for (const auto& c : j["cases"]) {
    const std::string name = c["name"];
    SCOPED_TRACE(name);
    const int sw = c["src_w"], sh = c["src_h"], dw = c["dst_w"], dh = c["dst_h"];
    Image src = vtest::synth(sw, sh, c["seed"].get<uint64_t>());
    ASSERT_EQ(crc_of(src), std::stoul(c["src_crc32"].get<std::string>(), nullptr, 16))
        << "synth() no longer mirrors the generator";

    Image torch = resize_bicubic(src, dw, dh, BicubicKernel::kTorchInt16);
    Image pil = resize_bicubic(src, dw, dh, BicubicKernel::kPillowInt32);
    ASSERT_EQ(torch.width, dw);
    ASSERT_EQ(torch.height, dh);
    EXPECT_EQ(crc_of(torch), std::stoul(c["torch_crc32"].get<std::string>(), nullptr, 16));
    EXPECT_EQ(crc_of(pil), std::stoul(c["pil_crc32"].get<std::string>(), nullptr, 16));
    // The default overload is the torch kernel.
    EXPECT_EQ(resize_bicubic(src, dw, dh).rgb, torch.rgb);

    // Real PIL rows vs the torch kernel.
    const auto& rows = c["pil_rows"];
    const auto& hex = c["pil_rows_hex"];
    for (size_t k = 0; k < rows.size(); ++k) {
      const int r = rows[k];
      const std::vector<uint8_t> want = hex_bytes(hex[k]);
      ASSERT_EQ(want.size(), size_t(dw) * 3);
      for (int i = 0; i < dw * 3; ++i) {
        const uint8_t p = pil.rgb[size_t(r) * dw * 3 + i];
        const uint8_t t = torch.rgb[size_t(r) * dw * 3 + i];
        ASSERT_EQ(p, want[i]) << "row " << r << " index " << i;
        ASSERT_LE(std::abs(int(t) - int(want[i])), 2) << "row " << r << " index " << i;
      }
    }
    // Whole image: torch kernel vs PIL.
    size_t n_diff = 0, n_over1 = 0;
    for (size_t i = 0; i < torch.rgb.size(); ++i) {
      const int d = std::abs(int(torch.rgb[i]) - int(pil.rgb[i]));
      n_diff += d != 0;
      n_over1 += d > 1;
      ASSERT_LE(d, 2);
    }
    std::printf("[resize %s] %dx%d -> %dx%d: torch vs PIL %zu of %zu values differ, %zu by 2\n",
                name.c_str(), sw, sh, dw, dh, n_diff, torch.rgb.size(), n_over1);
    EXPECT_LT(double(n_diff), 0.02 * double(torch.rgb.size()));
    EXPECT_LE(n_over1, 2u);
  }
}

TEST(Resize, SameSizeIsACopy) {
  Image src = vtest::synth(37, 23, 9);
  Image out = resize_bicubic(src, 37, 23);
  EXPECT_EQ(out.rgb, src.rgb);
}

TEST(Resize, ConstantImageStaysConstant) {
  Image src;
  src.width = 50;
  src.height = 40;
  src.rgb.assign(50 * 40 * 3, 0);
  for (size_t i = 0; i < src.rgb.size(); i += 3) {
    src.rgb[i] = 7;
    src.rgb[i + 1] = 128;
    src.rgb[i + 2] = 255;
  }
  for (auto [w, h] : {std::pair{13, 11}, std::pair{64, 96}, std::pair{50, 7}, std::pair{3, 40}}) {
    for (auto k : {BicubicKernel::kTorchInt16, BicubicKernel::kPillowInt32}) {
      Image out = resize_bicubic(src, w, h, k);
      ASSERT_EQ(out.width, w);
      ASSERT_EQ(out.height, h);
      for (size_t i = 0; i < out.rgb.size(); i += 3) {
        ASSERT_EQ(out.rgb[i], 7);
        ASSERT_EQ(out.rgb[i + 1], 128);
        ASSERT_EQ(out.rgb[i + 2], 255);
      }
    }
  }
}

TEST(Resize, OneAxisOnlyResamplesThatAxis) {
  // Width unchanged: every column is resampled independently, so a horizontally constant
  // image stays horizontally constant.
  Image src;
  src.width = 8;
  src.height = 30;
  src.rgb.resize(8 * 30 * 3);
  for (int y = 0; y < 30; ++y)
    for (int x = 0; x < 8; ++x)
      for (int c = 0; c < 3; ++c) src.rgb[(y * 8 + x) * 3 + c] = uint8_t(y * 8 + c);
  Image out = resize_bicubic(src, 8, 45);
  ASSERT_EQ(out.width, 8);
  for (int y = 0; y < 45; ++y)
    for (int x = 1; x < 8; ++x)
      for (int c = 0; c < 3; ++c) ASSERT_EQ(out.rgb[(y * 8 + x) * 3 + c], out.rgb[(y * 8) * 3 + c]);
}

TEST(Resize, DegenerateArgumentsGiveEmptyImage) {
  Image src = vtest::synth(5, 5, 1);
  EXPECT_TRUE(resize_bicubic(src, 0, 5).rgb.empty());
  EXPECT_TRUE(resize_bicubic(src, 5, -1).rgb.empty());
  EXPECT_TRUE(resize_bicubic(Image{}, 5, 5).rgb.empty());
  Image one = resize_bicubic(src, 1, 1);
  EXPECT_EQ(one.rgb.size(), 3u);
}

}  // namespace
}  // namespace ost
