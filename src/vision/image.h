// Image decoding: JPEG / PNG / WebP bytes -> RGB8, the way the reference loads an image
// (transformers' load_image: PIL.Image.open, ImageOps.exif_transpose, convert("RGB")).
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "core/status.h"

namespace ost {

// RGB8, row-major HWC: rgb.size() == width * height * 3.
struct Image {
  int width = 0, height = 0;
  std::vector<uint8_t> rgb;
};

struct DecodeLimits {
  int64_t max_pixels = 100'000'000;  // width*height, checked on the header before decoding
  int64_t max_bytes = 64 << 20;      // size of the encoded input
};

// Sniffs JPEG / PNG / WebP from the bytes. The header is read first and an image over
// limits.max_pixels is refused before any pixel buffer is allocated. EXIF orientation is
// applied (JPEG APP1 Exif, PNG eXIf / "Raw profile type exif", WebP EXIF; XMP
// tiff:Orientation as a fallback, as Pillow does). Conversion to RGB follows PIL's
// convert("RGB"): alpha dropped (not composited), palette via PLTE (tRNS ignored), 16-bit
// gray clipped to 255, other 16-bit data keeps its high byte, CMYK/YCCK JPEG as Adobe-inverted
// CMYK. Never crashes on malformed input: every failure is an Error with a clear message.
Result<Image> decode_image(const uint8_t* data, size_t size, const DecodeLimits& limits = {});
Result<Image> load_image_file(const std::string& path, const DecodeLimits& limits = {});

}  // namespace ost
