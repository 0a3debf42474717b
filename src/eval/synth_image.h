// Synthetic photo-like test images for load generation: a seeded store-shelf scene (lit wall,
// shelves, products with shading and labels, vignetting, sensor noise) encoded as JPEG or PNG,
// so a request carries the bytes and the entropy of a real camera picture. The same seed gives
// the same bytes on every machine (own RNG and noise, no std:: distributions).
#pragma once
#include <cstdint>
#include <string>

#include "core/status.h"
#include "vision/image.h"

namespace ost::eval {

// RGB8 [height, width, 3].
Image synthetic_photo(int width, int height, uint64_t seed);

// Baseline JPEG (4:2:0) at `quality`, and 8-bit RGB PNG.
Result<std::string> encode_jpeg(const Image& img, int quality = 90);
Result<std::string> encode_png(const Image& img);

}  // namespace ost::eval
