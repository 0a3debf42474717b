#include "eval/synth_image.h"

#include <jpeglib.h>  // after <cstdio>: it uses FILE and size_t
#include <png.h>

#include <algorithm>
#include <cmath>
#include <csetjmp>
#include <cstdio>
#include <cstdlib>
#include <vector>

namespace ost::eval {

namespace {

// splitmix64: tiny, portable, good enough for picture content.
struct Rng {
  uint64_t s;
  uint64_t next() {
    uint64_t z = (s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
  }
  float uniform() { return float(next() >> 40) / float(1 << 24); }  // [0, 1)
  float range(float lo, float hi) { return lo + (hi - lo) * uniform(); }
  // Sum of three uniforms: bell-shaped, variance 1/4 per unit; scaled to sigma 1.
  float noise() { return (uniform() + uniform() + uniform() - 1.5f) * 2.0f; }
};

struct Rgb {
  float r, g, b;
};

Rgb saturated(Rng& rng) {
  // A random hue at high saturation: packaging colors.
  const float h = rng.range(0, 6), v = rng.range(140, 240), s = rng.range(0.45f, 0.9f);
  const float c = v * s, x = c * (1 - std::fabs(std::fmod(h, 2.0f) - 1)), m = v - c;
  Rgb o{};
  switch (int(h)) {
    case 0:
      o = {c, x, 0};
      break;
    case 1:
      o = {x, c, 0};
      break;
    case 2:
      o = {0, c, x};
      break;
    case 3:
      o = {0, x, c};
      break;
    case 4:
      o = {x, 0, c};
      break;
    default:
      o = {c, 0, x};
      break;
  }
  return {o.r + m, o.g + m, o.b + m};
}

}  // namespace

Image synthetic_photo(int width, int height, uint64_t seed) {
  Image img;
  img.width = std::max(1, width);
  img.height = std::max(1, height);
  const int w = img.width, h = img.height;
  std::vector<float> px(size_t(w) * size_t(h) * 3);  // f32 [h, w, 3], 0..255
  Rng rng{seed * 0x2545F4914F6CDD1Dull + 1};

  // The wall: a warm vertical gradient with a soft light spot.
  const Rgb wall = {rng.range(170, 225), rng.range(160, 215), rng.range(140, 200)};
  const float lx = rng.range(0.2f, 0.8f), ly = rng.range(0.0f, 0.4f);
  for (int y = 0; y < h; ++y)
    for (int x = 0; x < w; ++x) {
      const float u = float(x) / float(w), v = float(y) / float(h);
      const float light = 0.75f + 0.35f * std::exp(-((u - lx) * (u - lx) + (v - ly) * (v - ly)) * 4.0f);
      float* p = &px[(size_t(y) * w + x) * 3];
      p[0] = wall.r * light * (1 - 0.15f * v);
      p[1] = wall.g * light * (1 - 0.15f * v);
      p[2] = wall.b * light * (1 - 0.12f * v);
    }
  auto fill = [&](int x0, int y0, int x1, int y1, auto&& color) {
    x0 = std::clamp(x0, 0, w), x1 = std::clamp(x1, 0, w), y0 = std::clamp(y0, 0, h),
    y1 = std::clamp(y1, 0, h);
    for (int y = y0; y < y1; ++y)
      for (int x = x0; x < x1; ++x) color(x, y, &px[(size_t(y) * w + x) * 3]);
  };

  // Shelves, each loaded with products standing on its board.
  const int shelves = 3 + int(rng.next() % 3);
  const float board = std::max(2.0f, 0.025f * float(h));
  for (int s = 0; s < shelves; ++s) {
    const float top = float(h) * (0.06f + 0.9f * float(s) / float(shelves));
    const float bottom = float(h) * (0.06f + 0.9f * float(s + 1) / float(shelves)) - board;
    const Rgb wood = {rng.range(90, 140), rng.range(70, 100), rng.range(50, 75)};
    fill(0, int(bottom), w, int(bottom + board), [&](int, int y, float* p) {
      const float f = 1.0f - 0.4f * (float(y) - bottom) / board;  // lit from above
      p[0] = wood.r * f, p[1] = wood.g * f, p[2] = wood.b * f;
    });
    for (float x = rng.range(0, 0.03f) * float(w); x < float(w);) {
      const float pw = std::max(3.0f, rng.range(0.04f, 0.12f) * float(w));
      const float ph = (bottom - top) * rng.range(0.55f, 0.92f);
      const Rgb c = saturated(rng), label = saturated(rng);
      const float lt = rng.range(0.3f, 0.5f), lb = lt + rng.range(0.15f, 0.3f);
      const int stripes = 2 + int(rng.next() % 4);
      const float x0 = x, y0 = bottom - ph;
      fill(int(x0), int(y0), int(x0 + pw), int(bottom), [&](int px_, int py, float* p) {
        const float u = (float(px_) - x0) / pw, v = (float(py) - y0) / ph;
        const float shade = 0.55f + 0.45f * std::sin(3.14159f * (0.1f + 0.8f * u));  // a cylinder's falloff
        Rgb col = c;
        if (v > lt && v < lb) {
          col = label;
          // Lines of "print" on the label.
          const float t = (v - lt) / (lb - lt) * float(stripes * 2 + 1);
          if (int(t) % 2 == 1 && u > 0.15f && u < 0.85f) col = {col.r * 0.3f, col.g * 0.3f, col.b * 0.3f};
        }
        p[0] = col.r * shade, p[1] = col.g * shade, p[2] = col.b * shade;
      });
      x += pw + rng.range(0.0f, 0.02f) * float(w);
    }
  }

  // Vignetting and sensor noise, then quantize.
  img.rgb.resize(px.size());
  for (int y = 0; y < h; ++y)
    for (int x = 0; x < w; ++x) {
      const float u = 2 * float(x) / float(w) - 1, v = 2 * float(y) / float(h) - 1;
      const float vig = 1.0f - 0.28f * (u * u + v * v) / 2;
      for (int c = 0; c < 3; ++c) {
        const size_t i = (size_t(y) * w + x) * 3 + size_t(c);
        const float val = std::clamp(px[i] * vig + 4.0f * rng.noise(), 0.0f, 255.0f);
        img.rgb[i] = uint8_t(std::min(255.0f, val + 0.5f));
      }
    }
  return img;
}

namespace {

struct JpegErr {
  jpeg_error_mgr mgr;
  std::jmp_buf jump;
  char message[JMSG_LENGTH_MAX];
};

void jpeg_on_error(j_common_ptr ci) {
  auto* e = reinterpret_cast<JpegErr*>(ci->err);
  (*ci->err->format_message)(ci, e->message);
  std::longjmp(e->jump, 1);
}

}  // namespace

Result<std::string> encode_jpeg(const Image& img, int quality) {
  if (img.width <= 0 || img.height <= 0 || img.rgb.size() != size_t(img.width) * size_t(img.height) * 3)
    return make_error("encode_jpeg: bad image");
  jpeg_compress_struct ci{};
  JpegErr err{};
  ci.err = jpeg_std_error(&err.mgr);
  err.mgr.error_exit = jpeg_on_error;
  unsigned char* buf = nullptr;
  unsigned long size = 0;
  if (setjmp(err.jump)) {
    jpeg_destroy_compress(&ci);
    std::free(buf);
    return make_error("encode_jpeg: %s", err.message);
  }
  jpeg_create_compress(&ci);
  jpeg_mem_dest(&ci, &buf, &size);
  ci.image_width = JDIMENSION(img.width);
  ci.image_height = JDIMENSION(img.height);
  ci.input_components = 3;
  ci.in_color_space = JCS_RGB;
  jpeg_set_defaults(&ci);
  jpeg_set_quality(&ci, std::clamp(quality, 1, 100), TRUE);
  jpeg_start_compress(&ci, TRUE);
  while (ci.next_scanline < ci.image_height) {
    JSAMPROW row = const_cast<uint8_t*>(img.rgb.data()) + size_t(ci.next_scanline) * size_t(img.width) * 3;
    jpeg_write_scanlines(&ci, &row, 1);
  }
  jpeg_finish_compress(&ci);
  std::string out(reinterpret_cast<const char*>(buf), size);
  jpeg_destroy_compress(&ci);
  std::free(buf);
  return out;
}

Result<std::string> encode_png(const Image& img) {
  if (img.width <= 0 || img.height <= 0 || img.rgb.size() != size_t(img.width) * size_t(img.height) * 3)
    return make_error("encode_png: bad image");
  png_image pi{};
  pi.version = PNG_IMAGE_VERSION;
  pi.width = png_uint_32(img.width);
  pi.height = png_uint_32(img.height);
  pi.format = PNG_FORMAT_RGB;
  png_alloc_size_t size = 0;
  if (!png_image_write_to_memory(&pi, nullptr, &size, 0, img.rgb.data(), 0, nullptr))
    return make_error("encode_png: %s", pi.message);
  std::string out(size, '\0');
  if (!png_image_write_to_memory(&pi, out.data(), &size, 0, img.rgb.data(), 0, nullptr))
    return make_error("encode_png: %s", pi.message);
  out.resize(size);
  return out;
}

}  // namespace ost::eval
