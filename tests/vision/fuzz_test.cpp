// Malformed input never crashes the decoder: every prefix of valid files and seeded random
// byte mutations give either an error or a well-formed image. (Run under ASan/UBSan too.)
#include <gtest/gtest.h>

#include <random>
#include <string>
#include <vector>

#include "vision/image.h"
#include "vision/preprocess.h"
#include "vision_test_util.h"

namespace ost {
namespace {

const char* kFiles[] = {
    "jpeg_exif_o6.jpg",  "jpeg_progressive.jpg", "jpeg_cmyk.jpg",     "jpeg_gray.jpg",
    "jpeg_xmp_o6.jpg",   "png_rgb8_adam7.png",   "png_pal8_trns.png", "png_gray16.png",
    "png_exif_o6.png",   "png_rawprofile_o8.png", "png_pal2_adam7.png", "webp_lossy_alpha.webp",
    "webp_lossless.webp", "webp_anim.webp",      "webp_exif_o5.webp",
};

// Returns true if decoded; checks the invariants either way.
bool decode_checked(const std::vector<uint8_t>& bytes) {
  DecodeLimits lim;
  lim.max_pixels = 1 << 22;  // keep mutated headers from asking for gigabytes
  auto r = decode_image(bytes.data(), bytes.size(), lim);
  if (!r.is_ok()) {
    EXPECT_FALSE(r.message().empty());
    return false;
  }
  EXPECT_GT(r->width, 0);
  EXPECT_GT(r->height, 0);
  EXPECT_EQ(r->rgb.size(), size_t(r->width) * r->height * 3);
  return true;
}

std::string ext(const std::string& f) { return f.substr(f.rfind('.') + 1); }

TEST(Fuzz, EveryTruncation) {
  for (const char* f : kFiles) {
    SCOPED_TRACE(f);
    const auto bytes = vtest::file_bytes(vtest::data_dir() + "/decode/" + f);
    ASSERT_FALSE(bytes.empty());
    ASSERT_TRUE(decode_checked(bytes));
    int decoded = 0;
    for (size_t n = 0; n < bytes.size(); ++n) {
      const bool ok = decode_checked(std::vector<uint8_t>(bytes.begin(), bytes.begin() + n));
      decoded += ok;
      // JPEG needs its EOI and WebP its full RIFF payload, as in PIL.
      if (ext(f) != "png") EXPECT_FALSE(ok) << "prefix of " << n << " bytes decoded";
    }
    if (ext(f) == "png") EXPECT_LE(decoded, 12) << "only a cut in the trailing IEND may pass";
  }
}

TEST(Fuzz, RandomMutations) {
  std::mt19937 rng(20261124);
  int total = 0, decoded = 0;
  for (const char* f : kFiles) {
    SCOPED_TRACE(f);
    const auto bytes = vtest::file_bytes(vtest::data_dir() + "/decode/" + f);
    for (int it = 0; it < 400; ++it) {
      std::vector<uint8_t> m = bytes;
      const int n_mut = 1 + int(rng() % 6);
      for (int k = 0; k < n_mut; ++k) {
        const size_t at = rng() % m.size();
        switch (rng() % 3) {
          case 0: m[at] ^= uint8_t(1u << (rng() % 8)); break;  // bit flip
          case 1: m[at] = uint8_t(rng()); break;               // random byte
          case 2: m[at] = uint8_t(rng() % 2 ? 0xFF : 0x00); break;
        }
      }
      if (rng() % 4 == 0) m.resize(rng() % m.size() + 1);  // and sometimes a cut
      const bool ok = decode_checked(m);
      ++total;
      decoded += ok;
      if (ok) {
        // Whatever decodes must also go through preprocessing.
        auto img = decode_image(m.data(), m.size());
        if (img.is_ok()) {
          PreprocessOptions opt;
          opt.min_pixels = 1024;
          auto p = preprocess_image(*img, opt);
          if (p.is_ok()) EXPECT_EQ(p->pixel_values.size(), size_t(p->grid_h) * p->grid_w * 1536);
        }
      }
    }
  }
  std::printf("[fuzz] %d mutated inputs, %d decoded, %d refused\n", total, decoded,
              total - decoded);
}

TEST(Fuzz, RandomGarbage) {
  std::mt19937 rng(7);
  const std::vector<std::vector<uint8_t>> heads = {
      {0xFF, 0xD8, 0xFF},
      {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'},
      {'R', 'I', 'F', 'F', 0x40, 0, 0, 0, 'W', 'E', 'B', 'P'},
      {}};
  for (const auto& head : heads) {
    for (int it = 0; it < 300; ++it) {
      std::vector<uint8_t> m = head;
      const size_t n = rng() % 300;
      for (size_t i = 0; i < n; ++i) m.push_back(uint8_t(rng()));
      if (m.empty()) continue;
      decode_checked(m);
    }
  }
}

}  // namespace
}  // namespace ost
