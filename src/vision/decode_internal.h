// Internal to src/vision: per-format decoders and the orientation metadata they report.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>

#include "core/status.h"
#include "vision/image.h"

namespace ost::vision_detail {

// A decoded image before EXIF orientation is applied. `orientation` is the value PIL's
// Image.getexif() would report for tag 0x0112 (EXIF first, XMP tiff:Orientation as the
// fallback); 0 when absent.
struct Decoded {
  Image image;
  int orientation = 0;
};

// bands: -1 decides by size and format (large baseline images decode in row bands on several
// threads); 0 or 1 one decompressor; >= 2 that many bands wherever the format allows (tests).
Result<Decoded> decode_jpeg(const uint8_t* data, size_t size, const DecodeLimits& limits, int bands = -1);
uint64_t jpeg_banded_decodes();  // images decoded in bands so far (tests)
Result<Decoded> decode_png(const uint8_t* data, size_t size, const DecodeLimits& limits);
Result<Decoded> decode_webp(const uint8_t* data, size_t size, const DecodeLimits& limits);

// Error unless width*height <= limits.max_pixels (and both are positive).
Status check_pixel_limit(int64_t width, int64_t height, const DecodeLimits& limits);

// Orientation tag 0x0112 of IFD0 in an EXIF blob (optionally prefixed by "Exif\0\0").
// 0 if the blob is not TIFF or has no such tag; 1 if the tag is there but is not one of 1..8.
int exif_orientation(const uint8_t* data, size_t size);
// First match of the regex tiff:Orientation(="|>)([0-9]) in an XMP packet; -1 if none.
int xmp_orientation(const uint8_t* data, size_t size);

// PIL.ImageOps.exif_transpose for orientations 2..8; other values leave the image alone.
Image apply_orientation(Image img, int orientation);

}  // namespace ost::vision_detail
