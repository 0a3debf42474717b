// EXIF / XMP orientation and the eight transposes of PIL.ImageOps.exif_transpose.

#include <cstring>

#include "vision/decode_internal.h"

namespace ost::vision_detail {

int exif_orientation(const uint8_t* data, size_t size) {
  // PIL Exif.load: strip "Exif\0\0", then a TIFF header and IFD0. Truncated entries end the
  // directory (PIL warns "Possibly corrupt EXIF data" and keeps what it read).
  if (size >= 6 && std::memcmp(data, "Exif\0\0", 6) == 0) {
    data += 6;
    size -= 6;
  }
  if (size < 8) return 0;
  bool le;
  if (data[0] == 'I' && data[1] == 'I' && data[2] == 42 && data[3] == 0) {
    le = true;
  } else if (data[0] == 'M' && data[1] == 'M' && data[2] == 0 && data[3] == 42) {
    le = false;
  } else {
    return 0;
  }
  auto u16 = [&](size_t o) -> uint32_t {
    return le ? data[o] | (data[o + 1] << 8) : (data[o] << 8) | data[o + 1];
  };
  auto u32 = [&](size_t o) -> uint32_t {
    return le ? u16(o) | (u16(o + 2) << 16) : (u16(o) << 16) | u16(o + 2);
  };
  const size_t ifd = u32(4);
  if (ifd > size || size - ifd < 2) return 0;
  const uint32_t n = u16(ifd);
  // PIL keeps the first value of a multi-valued Orientation, and dict.get() also matches a
  // RATIONAL / FLOAT / DOUBLE that equals an integer (hash(6.0) == hash(6)).
  int orientation = 0;
  for (uint32_t i = 0; i < n; ++i) {
    const size_t e = ifd + 2 + static_cast<size_t>(i) * 12;
    if (e + 12 > size) break;
    if (u16(e) != 0x0112) continue;
    const uint32_t type = u16(e + 2), count = u32(e + 4);
    static const int kUnit[14] = {0, 1, 1, 2, 4, 8, 1, 1, 2, 4, 8, 4, 8, 4};
    if (type == 0 || type > 13 || count == 0) continue;
    if (type == 2) {  // ASCII: present (so XMP is not consulted) but never a transpose
      orientation = 1;
      continue;
    }
    const uint64_t bytes = static_cast<uint64_t>(kUnit[type]) * count;
    size_t v = e + 8;
    if (bytes > 4) {
      v = u32(e + 8);
      if (v > size || size - v < static_cast<size_t>(kUnit[type])) break;
    }
    double value = -1;
    switch (type) {
      case 1: case 6: case 7: value = data[v]; break;
      case 3: value = u16(v); break;
      case 8: value = static_cast<int16_t>(u16(v)); break;
      case 4: case 13: value = u32(v); break;
      case 9: value = static_cast<int32_t>(u32(v)); break;
      case 5: case 10: {
        const double num = type == 5 ? u32(v) : static_cast<int32_t>(u32(v));
        const double den = type == 5 ? u32(v + 4) : static_cast<int32_t>(u32(v + 4));
        value = den != 0 ? num / den : -1;
        break;
      }
      case 11: {
        const uint32_t bits = u32(v);
        float f;
        std::memcpy(&f, &bits, 4);
        value = f;
        break;
      }
      case 12: {
        const uint64_t bits = (le ? (static_cast<uint64_t>(u32(v + 4)) << 32) | u32(v)
                                  : (static_cast<uint64_t>(u32(v)) << 32) | u32(v + 4));
        std::memcpy(&value, &bits, 8);
        break;
      }
    }
    // Present: a value outside 2..8 is no transpose, and XMP is not consulted.
    orientation = (value >= 1 && value <= 8 && value == static_cast<int>(value))
                      ? static_cast<int>(value) : 1;
  }
  return orientation;
}

int xmp_orientation(const uint8_t* data, size_t size) {
  static const char key[] = "tiff:Orientation";
  const size_t k = sizeof(key) - 1;
  for (size_t i = 0; i + k < size; ++i) {
    if (std::memcmp(data + i, key, k) != 0) continue;
    size_t j = i + k;
    if (j + 1 < size && data[j] == '=' && data[j + 1] == '"') {
      j += 2;
    } else if (data[j] == '>') {
      j += 1;
    } else {
      continue;
    }
    if (j < size && data[j] >= '0' && data[j] <= '9') return data[j] - '0';
  }
  return -1;
}

Image apply_orientation(Image img, int orientation) {
  if (orientation < 2 || orientation > 8) return img;
  const int W = img.width, H = img.height;
  const bool swap = orientation >= 5;
  Image out;
  out.width = swap ? H : W;
  out.height = swap ? W : H;
  out.rgb.resize(img.rgb.size());
  const uint8_t* s = img.rgb.data();
  for (int y = 0; y < out.height; ++y) {
    uint8_t* d = &out.rgb[static_cast<size_t>(y) * out.width * 3];
    for (int x = 0; x < out.width; ++x) {
      int sx = x, sy = y;  // source pixel of output (x, y)
      switch (orientation) {
        case 2: sx = W - 1 - x; break;                  // FLIP_LEFT_RIGHT
        case 3: sx = W - 1 - x; sy = H - 1 - y; break;  // ROTATE_180
        case 4: sy = H - 1 - y; break;                  // FLIP_TOP_BOTTOM
        case 5: sx = y; sy = x; break;                  // TRANSPOSE
        case 6: sx = y; sy = H - 1 - x; break;          // ROTATE_270 (clockwise 90)
        case 7: sx = W - 1 - y; sy = H - 1 - x; break;  // TRANSVERSE
        case 8: sx = W - 1 - y; sy = x; break;          // ROTATE_90 (counter-clockwise)
      }
      const uint8_t* p = s + (static_cast<size_t>(sy) * W + sx) * 3;
      d[3 * x] = p[0];
      d[3 * x + 1] = p[1];
      d[3 * x + 2] = p[2];
    }
  }
  return out;
}

}  // namespace ost::vision_detail
