// Helpers shared by the vision tests: test-data paths, PPM oracles, the synthetic image of
// tests/data/vision/make_test_images.py (synth), CRC-32.
#pragma once
#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

#include "core/file_util.h"
#include "vision/image.h"

namespace ost::vtest {

inline std::string data_dir() { return std::string(OST_TEST_DATA) + "/vision"; }
inline std::string tiny_dir() { return std::string(OST_TEST_DATA) + "/qwen3vl-tiny"; }

inline std::vector<uint8_t> file_bytes(const std::string& path) {
  auto s = read_file(path);
  if (!s) return {};
  return std::vector<uint8_t>(s->begin(), s->end());
}

// Binary PPM (P6, maxval 255) as written by make_test_images.py.
inline bool read_ppm(const std::string& path, Image* out) {
  auto bytes = file_bytes(path);
  int w = 0, h = 0, maxv = 0, n = 0;
  if (bytes.empty()) return false;
  std::string head(bytes.begin(), bytes.begin() + std::min<size_t>(bytes.size(), 64));
  if (std::sscanf(head.c_str(), "P6 %d %d %d%n", &w, &h, &maxv, &n) != 3 || maxv != 255) {
    return false;
  }
  const size_t off = static_cast<size_t>(n) + 1;  // one whitespace byte after maxval
  if (bytes.size() != off + static_cast<size_t>(w) * h * 3) return false;
  out->width = w;
  out->height = h;
  out->rgb.assign(bytes.begin() + off, bytes.end());
  return true;
}

inline uint32_t crc32(const uint8_t* p, size_t n) {
  uint32_t c = 0xFFFFFFFFu;
  for (size_t i = 0; i < n; ++i) {
    c ^= p[i];
    for (int k = 0; k < 8; ++k) c = (c >> 1) ^ (0xEDB88320u & (0u - (c & 1u)));
  }
  return ~c;
}

// Mirror of synth() in make_test_images.py.
inline Image synth(int w, int h, uint64_t seed) {
  Image img;
  img.width = w;
  img.height = h;
  img.rgb.resize(static_cast<size_t>(w) * h * 3);
  const uint64_t M = 0xFFFFFFFFull;
  for (uint64_t y = 0; y < uint64_t(h); ++y) {
    for (uint64_t x = 0; x < uint64_t(w); ++x) {
      for (uint64_t c = 0; c < 3; ++c) {
        uint64_t z = (x * 0x9E3779B1ull + y * 0x85EBCA77ull + (c + 1) * 0xC2B2AE3Dull + seed) & M;
        z ^= z >> 15;
        z = (z * 0x2C1B3C6Dull) & M;
        z ^= z >> 12;
        z = (z * 0x297A2D39ull) & M;
        z ^= z >> 15;
        const uint64_t noise = z & 31;
        const uint64_t grad = x * 200 / uint64_t(w) + y * 150 / uint64_t(h) + c * 60;
        const uint64_t check = ((x / 41 + y / 29) % 2) * 50;
        img.rgb[(y * w + x) * 3 + c] = static_cast<uint8_t>((grad + check + noise) % 256);
      }
    }
  }
  return img;
}

// Largest |a - b| over two equally sized images; -1 if the sizes differ.
inline int max_abs_diff(const Image& a, const Image& b, size_t* n_diff = nullptr) {
  if (a.width != b.width || a.height != b.height || a.rgb.size() != b.rgb.size()) return -1;
  int m = 0;
  size_t n = 0;
  for (size_t i = 0; i < a.rgb.size(); ++i) {
    const int d = std::abs(int(a.rgb[i]) - int(b.rgb[i]));
    m = std::max(m, d);
    n += d != 0;
  }
  if (n_diff) *n_diff = n;
  return m;
}

}  // namespace ost::vtest
