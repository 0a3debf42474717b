// Decoding against PIL oracles (tests/data/vision/decode/*.ppm = PIL.Image.open ->
// ImageOps.exif_transpose -> convert("RGB")), header limits and error messages.
#include <gtest/gtest.h>

#include <cstring>
#include <string>
#include <vector>

#include "vision/image.h"
#include "vision_test_util.h"

namespace ost {
namespace {

using vtest::data_dir;
using vtest::file_bytes;

std::string decode_path(const std::string& name) { return data_dir() + "/decode/" + name; }

struct DecodeCase {
  const char* file;
  int width, height;  // after orientation
  int tolerance;      // max |diff| allowed vs PIL (0 = bit-exact)
};

// Lossy formats are decoded by the same libjpeg / libwebp as the PIL that wrote the oracles,
// so they match exactly here; one level of slack covers another libjpeg-turbo build.
const DecodeCase kCases[] = {
    {"jpeg_exif_o1.jpg", 40, 24, 1},     {"jpeg_exif_o2.jpg", 40, 24, 1},
    {"jpeg_exif_o3.jpg", 40, 24, 1},     {"jpeg_exif_o4.jpg", 40, 24, 1},
    {"jpeg_exif_o5.jpg", 24, 40, 1},     {"jpeg_exif_o6.jpg", 24, 40, 1},
    {"jpeg_exif_o7.jpg", 24, 40, 1},     {"jpeg_exif_o8.jpg", 24, 40, 1},
    {"jpeg_420_odd_o6.jpg", 31, 45, 1},  {"jpeg_progressive.jpg", 45, 31, 1},
    {"jpeg_gray.jpg", 37, 29, 1},        {"jpeg_cmyk.jpg", 33, 21, 1},
    {"jpeg_xmp_o6.jpg", 24, 40, 1},      {"jpeg_exif_mm_o7.jpg", 24, 40, 1},
    {"png_exif_long_o2.png", 23, 15, 0}, {"png_rgb8.png", 19, 13, 0},
    {"png_gray8.png", 19, 13, 0},        {"png_gray16.png", 19, 13, 0},
    {"png_gray1.png", 19, 13, 0},        {"png_gray2.png", 19, 13, 0},
    {"png_gray4.png", 19, 13, 0},        {"png_gray8_trns.png", 19, 13, 0},
    {"png_graya8.png", 19, 13, 0},       {"png_graya16.png", 19, 13, 0},
    {"png_rgb16.png", 19, 13, 0},        {"png_rgba8.png", 19, 13, 0},
    {"png_rgba16.png", 19, 13, 0},       {"png_pal8_trns.png", 19, 13, 0},
    {"png_pal4.png", 19, 13, 0},         {"png_pal8_short.png", 19, 13, 0},
    {"png_rgb8_adam7.png", 19, 13, 0},   {"png_pal2_adam7.png", 19, 13, 0},
    {"png_gray16_adam7.png", 19, 13, 0}, {"png_exif_o6.png", 15, 23, 0},
    {"png_exif_after_idat_o3.png", 23, 15, 0},
    {"png_rawprofile_o8.png", 15, 23, 0}, {"png_xmp_o5.png", 15, 23, 0},
    {"webp_lossless.webp", 29, 17, 0},   {"webp_lossless_alpha.webp", 29, 17, 0},
    {"webp_lossy.webp", 29, 17, 1},      {"webp_lossy_alpha.webp", 29, 17, 1},
    {"webp_exif_o5.webp", 17, 29, 1},    {"webp_anim.webp", 29, 17, 0},
    {"webp_xmp_o8.webp", 17, 29, 1},
};

TEST(Decode, MatchesPil) {
  int exact = 0;
  for (const DecodeCase& c : kCases) {
    SCOPED_TRACE(c.file);
    auto img = load_image_file(decode_path(c.file));
    ASSERT_TRUE(img.is_ok()) << img.message();
    Image want;
    std::string ppm = decode_path(c.file);
    ppm = ppm.substr(0, ppm.rfind('.')) + ".ppm";
    ASSERT_TRUE(vtest::read_ppm(ppm, &want)) << ppm;
    EXPECT_EQ(img->width, c.width);
    EXPECT_EQ(img->height, c.height);
    ASSERT_EQ(img->width, want.width);
    ASSERT_EQ(img->height, want.height);
    ASSERT_EQ(img->rgb.size(), size_t(img->width) * img->height * 3);
    size_t n_diff = 0;
    const int d = vtest::max_abs_diff(*img, want, &n_diff);
    EXPECT_LE(d, c.tolerance) << n_diff << " values differ";
    exact += d == 0;
  }
  std::printf("[decode] %d of %zu files bit-exact with PIL\n", exact, std::size(kCases));
}

TEST(Decode, ExifOrientationMovesTheMarker) {
  // The source pattern has a yellow 3x3 marker at (1..3, 1..3) in the stored image; after
  // exif_transpose it must sit in the corner the orientation sends it to.
  struct Want { int o; int x, y; };  // centre of the marker in the displayed image
  const Want wants[] = {{1, 2, 2}, {2, 37, 2}, {3, 37, 21}, {4, 2, 21},
                        {5, 2, 2}, {6, 21, 2}, {7, 21, 37}, {8, 2, 37}};
  for (const Want& w : wants) {
    SCOPED_TRACE(w.o);
    auto img = load_image_file(decode_path("jpeg_exif_o" + std::to_string(w.o) + ".jpg"));
    ASSERT_TRUE(img.is_ok()) << img.message();
    const uint8_t* p = &img->rgb[(size_t(w.y) * img->width + w.x) * 3];
    EXPECT_GT(p[0], 200);
    EXPECT_GT(p[1], 200);
    EXPECT_LT(p[2], 80);
  }
}

TEST(Decode, DecodeImageFromMemoryEqualsFile) {
  auto bytes = file_bytes(decode_path("png_pal8_trns.png"));
  auto a = decode_image(bytes.data(), bytes.size());
  auto b = load_image_file(decode_path("png_pal8_trns.png"));
  ASSERT_TRUE(a.is_ok() && b.is_ok());
  EXPECT_EQ(a->rgb, b->rgb);
}

// ---------------------------------------------------------------------------------------------
// Limits: a header claiming a huge image is refused before decoding.

void put_be32(std::vector<uint8_t>& v, size_t at, uint32_t x) {
  v[at] = uint8_t(x >> 24);
  v[at + 1] = uint8_t(x >> 16);
  v[at + 2] = uint8_t(x >> 8);
  v[at + 3] = uint8_t(x);
}

std::vector<uint8_t> png_with_size(uint32_t w, uint32_t h) {
  std::vector<uint8_t> png = file_bytes(decode_path("png_rgb8.png"));
  put_be32(png, 16, w);
  put_be32(png, 20, h);
  put_be32(png, 29, vtest::crc32(&png[12], 17));  // IHDR CRC over type + data
  return png;
}

void expect_refused(const std::vector<uint8_t>& bytes, const char* dims) {
  auto r = decode_image(bytes.data(), bytes.size());
  ASSERT_FALSE(r.is_ok());
  EXPECT_NE(r.message().find(dims), std::string::npos) << r.message();
  EXPECT_NE(r.message().find("exceeds the pixel limit"), std::string::npos) << r.message();
}

TEST(DecodeLimits, PngHeader50000Squared) {
  expect_refused(png_with_size(50000, 50000), "image 50000x50000");
}

TEST(DecodeLimits, JpegHeader50000Squared) {
  std::vector<uint8_t> jpg = file_bytes(decode_path("jpeg_exif_o1.jpg"));
  size_t sof = 0;
  for (size_t i = 2; i + 9 < jpg.size(); ++i) {
    if (jpg[i] == 0xFF && jpg[i + 1] == 0xC0) {
      sof = i;
      break;
    }
  }
  ASSERT_NE(sof, 0u);
  // SOF0: FF C0, length(2), precision(1), height(2), width(2)
  jpg[sof + 5] = 50000 >> 8;
  jpg[sof + 6] = 50000 & 0xFF;
  jpg[sof + 7] = 50000 >> 8;
  jpg[sof + 8] = 50000 & 0xFF;
  expect_refused(jpg, "image 50000x50000");
}

std::vector<uint8_t> riff(const std::vector<uint8_t>& body) {
  const uint32_t n = uint32_t(body.size() + 4);
  std::vector<uint8_t> out(12 + body.size());
  std::memcpy(out.data(), "RIFF", 4);
  for (int k = 0; k < 4; ++k) out[4 + k] = uint8_t(n >> (8 * k));
  std::memcpy(out.data() + 8, "WEBP", 4);
  for (size_t i = 0; i < body.size(); ++i) out[12 + i] = body[i];
  return out;
}

TEST(DecodeLimits, WebpHeaders) {
  // Animated VP8X canvas 50000x50000 (24-bit fields hold size - 1).
  const uint32_t m = 50000 - 1;
  std::vector<uint8_t> vp8x = {'V', 'P', '8', 'X', 10, 0, 0, 0, 0x02, 0, 0, 0,
                               uint8_t(m), uint8_t(m >> 8), uint8_t(m >> 16),
                               uint8_t(m), uint8_t(m >> 8), uint8_t(m >> 16)};
  expect_refused(riff(vp8x), "image 50000x50000");
  // Still VP8L bitstream header claiming 16384x16384 (14-bit fields hold size - 1).
  const uint32_t bits = 16383u | (16383u << 14);
  std::vector<uint8_t> vp8l = {'V', 'P', '8', 'L', 6, 0, 0, 0, 0x2f,
                               uint8_t(bits), uint8_t(bits >> 8), uint8_t(bits >> 16),
                               uint8_t(bits >> 24), 0};
  expect_refused(riff(vp8l), "image 16384x16384");
}

TEST(DecodeLimits, CustomLimits) {
  auto bytes = file_bytes(decode_path("png_rgb8.png"));  // 19x13
  DecodeLimits small;
  small.max_pixels = 19 * 13 - 1;
  auto r = decode_image(bytes.data(), bytes.size(), small);
  ASSERT_FALSE(r.is_ok());
  EXPECT_NE(r.message().find("image 19x13 exceeds the pixel limit"), std::string::npos)
      << r.message();
  small.max_pixels = 19 * 13;
  EXPECT_TRUE(decode_image(bytes.data(), bytes.size(), small).is_ok());
  DecodeLimits tiny_bytes;
  tiny_bytes.max_bytes = int64_t(bytes.size()) - 1;
  r = decode_image(bytes.data(), bytes.size(), tiny_bytes);
  ASSERT_FALSE(r.is_ok());
  EXPECT_NE(r.message().find("over the limit"), std::string::npos) << r.message();
  for (auto [f, pixels] : {std::pair{"jpeg_exif_o6.jpg", 24 * 40}, {"webp_lossy.webp", 29 * 17},
                            {"webp_anim.webp", 29 * 17}}) {
    auto b = file_bytes(decode_path(f));
    DecodeLimits l;
    l.max_pixels = pixels - 1;
    EXPECT_FALSE(decode_image(b.data(), b.size(), l).is_ok()) << f;
    l.max_pixels = pixels;
    EXPECT_TRUE(decode_image(b.data(), b.size(), l).is_ok()) << f;
  }
}

// ---------------------------------------------------------------------------------------------
// Error messages.

std::string error_of(const std::vector<uint8_t>& bytes) {
  auto r = decode_image(bytes.data(), bytes.size());
  return r.is_ok() ? std::string("<decoded>") : r.message();
}

bool contains(const std::string& s, const char* part) { return s.find(part) != std::string::npos; }

TEST(DecodeErrors, Messages) {
  EXPECT_TRUE(contains(error_of({}), "not an image")) << error_of({});
  const std::string text = "hello, this is not an image at all";
  EXPECT_EQ(error_of(std::vector<uint8_t>(text.begin(), text.end())),
            "not an image (unknown format)");
  const std::string gif = "GIF89a\x01\x00\x01\x00";
  EXPECT_TRUE(contains(error_of(std::vector<uint8_t>(gif.begin(), gif.end())),
                       "unsupported image format GIF"));

  auto jpg = file_bytes(decode_path("jpeg_progressive.jpg"));
  EXPECT_EQ(error_of(std::vector<uint8_t>(jpg.begin(), jpg.begin() + jpg.size() / 2)),
            "truncated JPEG");
  // Even a missing EOI is refused, as PIL refuses it ("image file is truncated").
  EXPECT_EQ(error_of(std::vector<uint8_t>(jpg.begin(), jpg.end() - 2)), "truncated JPEG");
  EXPECT_EQ(error_of({0xFF, 0xD8, 0xFF}), "truncated JPEG");

  auto png = file_bytes(decode_path("png_rgb8_adam7.png"));
  EXPECT_EQ(error_of(std::vector<uint8_t>(png.begin(), png.begin() + png.size() / 2)),
            "truncated PNG");
  EXPECT_EQ(error_of(std::vector<uint8_t>(png.begin(), png.begin() + 20)), "truncated PNG");
  std::vector<uint8_t> bad_crc = png;
  bad_crc[30] ^= 0x55;  // inside the IHDR CRC
  EXPECT_TRUE(contains(error_of(bad_crc), "corrupt PNG: ")) << error_of(bad_crc);
  std::vector<uint8_t> bad_idat = png;
  for (size_t i = 45; i < 60 && i < bad_idat.size(); ++i) bad_idat[i] ^= 0xA5;
  EXPECT_TRUE(contains(error_of(bad_idat), "PNG")) << error_of(bad_idat);
  // A zero-sized IHDR.
  EXPECT_TRUE(contains(error_of(png_with_size(0, 13)), "empty size")) << error_of(png_with_size(0, 13));
  // PIL stops quietly at a missing tail after the image data: so do we.
  EXPECT_TRUE(decode_image(png.data(), png.size() - 12).is_ok());

  auto webp = file_bytes(decode_path("webp_lossy.webp"));
  EXPECT_EQ(error_of(std::vector<uint8_t>(webp.begin(), webp.begin() + webp.size() / 2)),
            "truncated WebP");
  std::vector<uint8_t> bad_webp = webp;
  for (size_t i = 30; i < bad_webp.size(); ++i) bad_webp[i] = uint8_t(i * 77);
  EXPECT_TRUE(contains(error_of(bad_webp), "WebP")) << error_of(bad_webp);

  auto missing = load_image_file(data_dir() + "/decode/no_such_file.png");
  ASSERT_FALSE(missing.is_ok());
  EXPECT_TRUE(contains(missing.message(), "no_such_file.png"));
}

}  // namespace
}  // namespace ost
