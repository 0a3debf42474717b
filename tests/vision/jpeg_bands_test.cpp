// Banded JPEG decoding (several libjpeg decompressors, each skipping the rows above its band)
// against the single decompressor, byte for byte: 4:2:0, 4:2:2, 4:4:0, 4:1:1, 4:4:4 and
// grayscale, odd sizes, restart markers, band counts that do not divide the height; progressive
// files, truncated and corrupt data take the single path and agree with it.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include <jpeglib.h>  // after <cstdio>

#include "vision/decode_internal.h"
#include "vision/image.h"

namespace ost {
namespace {

struct Enc {
  int w, h, comps;
  int hs, vs;  // sampling factors of component 0 (the chroma stay 1x1)
  int restart = 0;  // MCUs per restart interval
  bool progressive = false;
};

std::vector<uint8_t> encode(const Enc& e, uint32_t seed) {
  std::vector<uint8_t> px(size_t(e.w) * e.h * e.comps);
  std::mt19937 rng(seed);
  std::normal_distribution<float> noise(0.0f, 8.0f);
  for (int y = 0; y < e.h; ++y)
    for (int x = 0; x < e.w; ++x)
      for (int c = 0; c < e.comps; ++c) {
        const float v = 128 + 90 * std::sin(0.05f * x * (c + 1) + 0.03f * y) + ((x / 13 + y / 7) % 3 == 0 ? 60 : 0) +
                        noise(rng);
        px[(size_t(y) * e.w + x) * e.comps + c] = uint8_t(std::clamp(v, 0.0f, 255.0f));
      }
  jpeg_compress_struct ci;
  jpeg_error_mgr err;
  ci.err = jpeg_std_error(&err);
  jpeg_create_compress(&ci);
  unsigned char* buf = nullptr;
  unsigned long size = 0;
  jpeg_mem_dest(&ci, &buf, &size);
  ci.image_width = JDIMENSION(e.w);
  ci.image_height = JDIMENSION(e.h);
  ci.input_components = e.comps;
  ci.in_color_space = e.comps == 3 ? JCS_RGB : JCS_GRAYSCALE;
  jpeg_set_defaults(&ci);
  jpeg_set_quality(&ci, 88, TRUE);
  if (e.comps == 3) {
    ci.comp_info[0].h_samp_factor = e.hs;
    ci.comp_info[0].v_samp_factor = e.vs;
  }
  ci.restart_interval = unsigned(e.restart);
  if (e.progressive) jpeg_simple_progression(&ci);
  jpeg_start_compress(&ci, TRUE);
  while (ci.next_scanline < ci.image_height) {
    JSAMPROW row = px.data() + size_t(ci.next_scanline) * e.w * e.comps;
    jpeg_write_scanlines(&ci, &row, 1);
  }
  jpeg_finish_compress(&ci);
  std::vector<uint8_t> out(buf, buf + size);
  jpeg_destroy_compress(&ci);
  std::free(buf);
  return out;
}

// The banded decode must equal the single one exactly (or both fail).
// banded: 1 the banded path must have produced the result, 0 it must not, -1 either.
void expect_same(const std::vector<uint8_t>& f, int bands, const std::string& what, int banded) {
  DecodeLimits lim;
  auto one = vision_detail::decode_jpeg(f.data(), f.size(), lim, 0);
  const uint64_t before = vision_detail::jpeg_banded_decodes();
  auto many = vision_detail::decode_jpeg(f.data(), f.size(), lim, bands);
  if (banded == 1) EXPECT_EQ(vision_detail::jpeg_banded_decodes(), before + 1) << what << ": not decoded in bands";
  else if (banded == 0) EXPECT_EQ(vision_detail::jpeg_banded_decodes(), before) << what << ": decoded in bands";
  ASSERT_EQ(bool(one), bool(many)) << what << " bands " << bands << ": " << (one ? many.message() : one.message());
  if (!one) {
    EXPECT_EQ(one.message(), many.message()) << what;
    return;
  }
  EXPECT_EQ(one->image.width, many->image.width) << what;
  EXPECT_EQ(one->image.height, many->image.height) << what;
  ASSERT_EQ(one->image.rgb.size(), many->image.rgb.size()) << what;
  size_t diff = 0;
  for (size_t i = 0; i < one->image.rgb.size(); ++i) diff += one->image.rgb[i] != many->image.rgb[i];
  EXPECT_EQ(diff, 0u) << what << " bands " << bands << ": " << diff << " bytes differ";
}

TEST(JpegBands, MatchSingleDecompressor) {
  const Enc cases[] = {
      {640, 480, 3, 2, 2},      {333, 271, 3, 2, 2},    {333, 271, 3, 2, 1},    {333, 271, 3, 1, 2},
      {333, 271, 3, 1, 1},      {333, 271, 3, 4, 1},    {333, 271, 1, 1, 1},    {17, 500, 3, 2, 2},
      {1001, 97, 3, 2, 2},      {258, 130, 3, 2, 2, 3}, {258, 131, 3, 2, 1, 5}, {301, 77, 1, 1, 1, 7},
      {200, 201, 3, 1, 1, 1},   {64, 48, 3, 2, 2},      {400, 35, 3, 2, 2, 2},
  };
  uint32_t seed = 1;
  for (const Enc& e : cases) {
    const auto f = encode(e, seed++);
    char what[96];
    std::snprintf(what, sizeof what, "%dx%d comps %d samp %dx%d restart %d", e.w, e.h, e.comps, e.hs, e.vs, e.restart);
    for (int bands : {2, 3, 4, 7}) expect_same(f, bands, what, 1);
  }
}

TEST(JpegBands, OtherStreamsTakeTheSinglePath) {
  const auto prog = encode({333, 271, 3, 2, 2, 0, true}, 40);
  expect_same(prog, 4, "progressive", 0);
  const auto f = encode({333, 271, 3, 2, 2}, 41);
  // Truncated in the entropy data: both refuse it.
  std::vector<uint8_t> cut(f.begin(), f.begin() + f.size() * 2 / 3);
  expect_same(cut, 3, "truncated", 0);
  // Damaged entropy data: where libjpeg warns, the banded path gives way to the single one;
  // where the damage still decodes without a warning, every band reads the same stream.
  for (size_t at : {f.size() / 3, f.size() / 2, f.size() * 4 / 5, f.size() - 40}) {
    std::vector<uint8_t> bad = f;
    bad[at] ^= 0x5a;
    expect_same(bad, 3, "corrupt at " + std::to_string(at), -1);
  }
  // A stray marker in the entropy data: libjpeg warns (corrupt data), the single path decodes.
  std::vector<uint8_t> stray = f;
  stray[f.size() / 2] = 0xFF;
  stray[f.size() / 2 + 1] = 0xD3;
  expect_same(stray, 3, "stray marker", 0);
}

TEST(JpegBands, LargeImageDecodesInBandsByDefault) {
  const auto f = encode({1280, 960, 3, 2, 2}, 50);  // over a megapixel: the automatic path bands it
  DecodeLimits lim;
  auto one = vision_detail::decode_jpeg(f.data(), f.size(), lim, 0);
  const uint64_t before = vision_detail::jpeg_banded_decodes();
  auto img = decode_image(f.data(), f.size());
  ASSERT_TRUE(one && img);
  if (std::thread::hardware_concurrency() >= 2 && !std::getenv("OST_JPEG_THREADS"))
    EXPECT_EQ(vision_detail::jpeg_banded_decodes(), before + 1);
  EXPECT_TRUE(img->rgb == one->image.rgb);
}

}  // namespace
}  // namespace ost
