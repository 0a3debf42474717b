// smart_resize, normalisation, patch layout, and the fixture's golden pixel_values.
#include <gtest/gtest.h>

#include <jpeglib.h>

#include <chrono>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <nlohmann/json.hpp>

#include "core/file_util.h"
#include "io/safetensors.h"
#include "vision/image.h"
#include "vision/preprocess.h"
#include "vision_test_util.h"

namespace ost {
namespace {

using vtest::tiny_dir;

std::pair<int, int> sr(int h, int w, int64_t min_px = 65536, int64_t max_px = 16777216) {
  auto r = smart_resize(h, w, 32, min_px, max_px);
  EXPECT_TRUE(r.is_ok()) << r.message();
  return r.is_ok() ? *r : std::pair<int, int>{-1, -1};
}

TEST(SmartResize, ReferenceExamples) {
  EXPECT_EQ(sr(512, 512), std::make_pair(512, 512));
  EXPECT_EQ(sr(1080, 1920), std::make_pair(1088, 1920));  // (h, w)
  EXPECT_EQ(sr(200, 300), std::make_pair(224, 320));      // fixture shelf: upscaled to min_pixels
  EXPECT_EQ(sr(260, 180), std::make_pair(320, 224));      // fixture poster
  EXPECT_EQ(sr(960, 1280), std::make_pair(960, 1280));
}

TEST(SmartResize, RoundHalfToEven) {
  // 1040/32 = 32.5 -> 32 (Python round), not 33.
  EXPECT_EQ(sr(1040, 1024), std::make_pair(1024, 1024));
  // 1104/32 = 34.5 -> 34; 1072/32 = 33.5 -> 34.
  EXPECT_EQ(sr(1104, 1072), std::make_pair(1088, 1088));
  EXPECT_EQ(sr(48, 4000).second, 4000);  // 125 exactly
}

TEST(SmartResize, TinyImages) {
  // h_bar = w_bar = 0 -> scaled up to min_pixels.
  EXPECT_EQ(sr(1, 1), std::make_pair(256, 256));
  EXPECT_EQ(sr(10, 10), std::make_pair(256, 256));
  EXPECT_EQ(sr(1, 150), std::make_pair(32, 3136));
  EXPECT_EQ(sr(20, 30), std::make_pair(224, 320));
}

TEST(SmartResize, MaxPixels) {
  // beta = sqrt(12e6 / 1e6); floor(3000/beta/32)*32 = 864, floor(4000/beta/32)*32 = 1152.
  EXPECT_EQ(sr(3000, 4000, 65536, 1000000), std::make_pair(864, 1152));
  // Default max (16777216): 8000x6000 -> beta = sqrt(48e6/16777216).
  auto big = sr(6000, 8000);
  EXPECT_LE(int64_t(big.first) * big.second, 16777216);
  EXPECT_EQ(big, std::make_pair(3520, 4704));
  // The downscale branch keeps at least one factor per side: floor(32/beta/32) = 0 -> 32.
  EXPECT_EQ(sr(32, 6400, 0, 1024), std::make_pair(32, 448));
}

TEST(SmartResize, MinPixels) {
  EXPECT_EQ(sr(100, 100, 200000), std::make_pair(448, 448));
  const auto r = sr(64, 64);  // 4096 px -> beta = 4 -> 256 x 256
  EXPECT_EQ(r, std::make_pair(256, 256));
}

TEST(SmartResize, AspectRatioAndDegenerate) {
  EXPECT_TRUE(smart_resize(1, 200, 32, 65536, 16777216).is_ok());  // exactly 200 is allowed
  auto r = smart_resize(1, 201, 32, 65536, 16777216);
  ASSERT_FALSE(r.is_ok());
  EXPECT_NE(r.message().find("aspect ratio"), std::string::npos) << r.message();
  EXPECT_FALSE(smart_resize(10000, 49, 32, 65536, 16777216).is_ok());
  EXPECT_FALSE(smart_resize(0, 100, 32, 65536, 16777216).is_ok());
  EXPECT_FALSE(smart_resize(100, -3, 32, 65536, 16777216).is_ok());
  EXPECT_FALSE(smart_resize(100, 100, 0, 65536, 16777216).is_ok());
  EXPECT_FALSE(smart_resize(100, 100, 32, 65536, 0).is_ok());
  // min_pixels = 0 lets a side round to zero: refused rather than returned.
  EXPECT_FALSE(smart_resize(10, 10, 32, 0, 16777216).is_ok());
}

// ---------------------------------------------------------------------------------------------

TEST(Preprocess, LayoutAndNormalisation) {
  // 64x32 image whose pixel encodes its position, no resize (min_pixels lowered).
  Image img;
  img.width = 64;
  img.height = 32;
  img.rgb.resize(64 * 32 * 3);
  for (int y = 0; y < 32; ++y)
    for (int x = 0; x < 64; ++x)
      for (int c = 0; c < 3; ++c) img.rgb[(y * 64 + x) * 3 + c] = uint8_t((x + 2 * y + 50 * c) % 256);
  PreprocessOptions opt;
  opt.min_pixels = 1024;
  auto r = preprocess_image(img, opt);
  ASSERT_TRUE(r.is_ok()) << r.message();
  const ImagePatches& p = *r;
  EXPECT_EQ(p.grid_t, 1);
  EXPECT_EQ(p.grid_h, 2);
  EXPECT_EQ(p.grid_w, 4);
  EXPECT_EQ(p.resized_width, 64);
  EXPECT_EQ(p.resized_height, 32);
  EXPECT_EQ(p.num_tokens(), 2);
  ASSERT_EQ(p.pixel_values.size(), size_t(8 * 1536));
  // Row order: block (0,0): patches (0,0),(0,1),(1,0),(1,1); then block (0,1).
  const int patch_of_row[8][2] = {{0, 0}, {0, 1}, {1, 0}, {1, 1}, {0, 2}, {0, 3}, {1, 2}, {1, 3}};
  for (int row = 0; row < 8; ++row) {
    const int ph = patch_of_row[row][0], pw = patch_of_row[row][1];
    for (int c = 0; c < 3; ++c)
      for (int t = 0; t < 2; ++t)
        for (int py = 0; py < 16; ++py)
          for (int px = 0; px < 16; ++px) {
            const int y = ph * 16 + py, x = pw * 16 + px;
            const float u = float(img.rgb[(y * 64 + x) * 3 + c]);
            const float want = (u - 127.5f) / 127.5f;
            const float got = p.pixel_values[size_t(row) * 1536 + c * 512 + t * 256 + py * 16 + px];
            ASSERT_EQ(got, want) << "row " << row << " c " << c << " t " << t << " py " << py;
          }
  }
}

TEST(Preprocess, NormalisationMatchesFusedReference) {
  // Reference: mean' = float32(0.5) * float32(1 / (1/255)) = 127.5, (x - mean') / std'.
  Image img;
  img.width = 256;
  img.height = 32;
  img.rgb.resize(256 * 32 * 3);
  for (int i = 0; i < 256 * 32; ++i)
    for (int c = 0; c < 3; ++c) img.rgb[i * 3 + c] = uint8_t(i % 256);
  PreprocessOptions opt;
  opt.min_pixels = 1024;
  auto r = preprocess_image(img, opt);
  ASSERT_TRUE(r.is_ok()) << r.message();
  // Row 0 = patch (0,0), t = 0, py = 0: pixels 0..15.
  for (int v = 0; v < 16; ++v) {
    EXPECT_EQ(r->pixel_values[v], (float(v) - 127.5f) / 127.5f);
  }
  EXPECT_EQ(r->pixel_values[0], -1.0f);
}

TEST(Preprocess, TinyImagesAreUpscaled) {
  // 1x1 -> smart_resize 256x256; a constant image stays constant through the bicubic.
  Image one;
  one.width = one.height = 1;
  one.rgb = {10, 200, 255};
  auto r = preprocess_image(one, {});
  ASSERT_TRUE(r.is_ok()) << r.message();
  EXPECT_EQ(r->resized_width, 256);
  EXPECT_EQ(r->resized_height, 256);
  EXPECT_EQ(r->num_tokens(), 64);
  ASSERT_EQ(r->pixel_values.size(), size_t(256) * 1536);
  for (size_t i = 0; i < r->pixel_values.size(); ++i) {
    const int c = int(i % 1536) / 512;
    ASSERT_EQ(r->pixel_values[i], (float(one.rgb[c]) - 127.5f) / 127.5f) << i;
  }
  // 3x2 (w x h) -> 320x224 (h_bar 224, w_bar 320 after the min_pixels branch)
  Image small = vtest::synth(3, 2, 4);
  auto s = preprocess_image(small, {});
  ASSERT_TRUE(s.is_ok()) << s.message();
  EXPECT_EQ(s->resized_width, 320);
  EXPECT_EQ(s->resized_height, 224);
  EXPECT_EQ(s->grid_h, 14);
  EXPECT_EQ(s->grid_w, 20);
}

TEST(Preprocess, RejectsBadInput) {
  Image empty;
  EXPECT_FALSE(preprocess_image(empty, {}).is_ok());
  Image bad;
  bad.width = 10;
  bad.height = 10;
  bad.rgb.resize(5);
  EXPECT_FALSE(preprocess_image(bad, {}).is_ok());
  Image thin;
  thin.width = 1000;
  thin.height = 2;
  thin.rgb.resize(1000 * 2 * 3);
  auto r = preprocess_image(thin, {});
  ASSERT_FALSE(r.is_ok());
  EXPECT_NE(r.message().find("aspect ratio"), std::string::npos);
}

// ---------------------------------------------------------------------------------------------
// Golden: the fixture's pixel_values (transformers 5.17) for one and two images.

struct GoldenCase {
  std::vector<float> pixel_values;
  std::vector<int64_t> grid;
  int64_t rows = 0;
};

GoldenCase load_golden(const SafetensorsFile& st, const std::string& name) {
  GoldenCase g;
  for (const TensorInfo& t : st.tensors()) {
    if (t.name == name + ".pixel_values") {
      EXPECT_EQ(t.dtype, DType::F32);
      EXPECT_EQ(t.shape.size(), 2u);
      EXPECT_EQ(t.shape[1], 1536);
      g.rows = t.shape[0];
      g.pixel_values.resize(t.nbytes / 4);
      std::memcpy(g.pixel_values.data(), t.data, t.nbytes);
    } else if (t.name == name + ".image_grid_thw") {
      EXPECT_EQ(t.dtype, DType::I64);
      g.grid.resize(t.nbytes / 8);
      std::memcpy(g.grid.data(), t.data, t.nbytes);
    }
  }
  return g;
}

void check_golden_case(const std::string& name) {
  auto st = SafetensorsFile::open(tiny_dir() + "/golden.safetensors");
  ASSERT_TRUE(st.is_ok()) << st.message();
  GoldenCase g = load_golden(*st, name);
  ASSERT_FALSE(g.pixel_values.empty());
  auto gj = nlohmann::json::parse(*read_file(tiny_dir() + "/golden.json"));
  const auto& cj = gj["cases"][name];

  std::vector<float> mine;
  std::vector<int64_t> grid;
  for (const auto& rel : cj["images"]) {
    auto img = load_image_file(tiny_dir() + "/" + rel.get<std::string>());
    ASSERT_TRUE(img.is_ok()) << img.message();
    auto p = preprocess_image(*img, PreprocessOptions{});
    ASSERT_TRUE(p.is_ok()) << p.message();
    mine.insert(mine.end(), p->pixel_values.begin(), p->pixel_values.end());
    grid.insert(grid.end(), {p->grid_t, p->grid_h, p->grid_w});
    EXPECT_EQ(p->num_tokens(), p->grid_h * p->grid_w / 4);
  }
  EXPECT_EQ(grid, g.grid);
  std::vector<int64_t> json_grid;
  for (const auto& row : cj["image_grid_thw"])
    for (const auto& v : row) json_grid.push_back(v.get<int64_t>());
  EXPECT_EQ(grid, json_grid);

  ASSERT_EQ(mine.size(), g.pixel_values.size());
  size_t n_diff = 0;
  double max_diff = 0;
  for (size_t i = 0; i < mine.size(); ++i) {
    const double d = std::fabs(double(mine[i]) - double(g.pixel_values[i]));
    n_diff += mine[i] != g.pixel_values[i];
    max_diff = std::max(max_diff, d);
  }
  std::printf("[golden %s] %zu values, %zu differ, max |diff| %.9g\n", name.c_str(), mine.size(),
              n_diff, max_diff);
  EXPECT_LE(max_diff, 1.0 / 127.5 + 1e-6);
  EXPECT_EQ(n_diff, 0u) << "the torch int16 kernel reproduced the golden bit for bit";
}

TEST(Golden, OneImage) { check_golden_case("one_image_zh"); }
TEST(Golden, TwoImages) { check_golden_case("two_images"); }

// ---------------------------------------------------------------------------------------------
// Timing (printed, not asserted): decode + preprocess of a 1280x960 JPEG and resized inputs.

double ms_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
}

std::vector<uint8_t> encode_jpeg(const Image& img, int quality) {
  jpeg_compress_struct c;
  jpeg_error_mgr e;
  c.err = jpeg_std_error(&e);
  jpeg_create_compress(&c);
  unsigned char* buf = nullptr;
  unsigned long n = 0;
  jpeg_mem_dest(&c, &buf, &n);
  c.image_width = img.width;
  c.image_height = img.height;
  c.input_components = 3;
  c.in_color_space = JCS_RGB;
  jpeg_set_defaults(&c);
  jpeg_set_quality(&c, quality, TRUE);
  jpeg_start_compress(&c, TRUE);
  while (c.next_scanline < c.image_height) {
    JSAMPROW row = const_cast<uint8_t*>(&img.rgb[size_t(c.next_scanline) * img.width * 3]);
    jpeg_write_scanlines(&c, &row, 1);
  }
  jpeg_finish_compress(&c);
  std::vector<uint8_t> out(buf, buf + n);
  std::free(buf);
  jpeg_destroy_compress(&c);
  return out;
}

TEST(Timing, JpegDecodeAndPreprocess1280x960) {
  const std::vector<uint8_t> jpg = encode_jpeg(vtest::synth(1280, 960, 5), 90);
  double best_dec = 1e30, best_pre = 1e30;
  for (int it = 0; it < 5; ++it) {
    auto t0 = std::chrono::steady_clock::now();
    auto img = decode_image(jpg.data(), jpg.size());
    best_dec = std::min(best_dec, ms_since(t0));
    ASSERT_TRUE(img.is_ok()) << img.message();
    t0 = std::chrono::steady_clock::now();
    auto p = preprocess_image(*img, PreprocessOptions{});
    best_pre = std::min(best_pre, ms_since(t0));
    ASSERT_TRUE(p.is_ok());
    EXPECT_EQ(p->num_tokens(), 1200);  // 960x1280 needs no resize: 30 x 40 merged tokens
  }
  std::printf("[timing] 1280x960 JPEG (%zu KB): decode %.1f ms + preprocess %.1f ms\n",
              jpg.size() / 1024, best_dec, best_pre);
}

TEST(Timing, PreprocessPrintsTimes) {
  struct Case { int w, h; int64_t max_pixels; };
  const Case cases[] = {{1280, 960, 16777216}, {1000, 700, 16777216}, {1920, 1080, 16777216},
                        {4000, 3000, 16777216}, {4000, 3000, 1000000}};
  for (const Case& c : cases) {
    Image img = vtest::synth(c.w, c.h, 11);
    PreprocessOptions opt;
    opt.max_pixels = c.max_pixels;
    double best_pre = 1e30, best_resize = 1e30;
    int tw = 0, th = 0;
    for (int it = 0; it < 2; ++it) {
      auto t0 = std::chrono::steady_clock::now();
      auto p = preprocess_image(img, opt);
      best_pre = std::min(best_pre, ms_since(t0));
      ASSERT_TRUE(p.is_ok());
      tw = p->resized_width;
      th = p->resized_height;
      if (tw != c.w || th != c.h) {
        t0 = std::chrono::steady_clock::now();
        Image r = resize_bicubic(img, tw, th);
        best_resize = std::min(best_resize, ms_since(t0));
      }
    }
    std::printf("[timing] %dx%d -> %dx%d: preprocess %.1f ms (resize alone %s)\n", c.w, c.h, tw,
                th, best_pre,
                best_resize < 1e29 ? (std::to_string(best_resize) + " ms").c_str() : "none");
  }
}

}  // namespace
}  // namespace ost
