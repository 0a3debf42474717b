// Format sniffing, input limits and EXIF orientation around the per-format decoders.

#include <cstring>

#include "core/file_util.h"
#include "vision/decode_internal.h"

namespace ost {
namespace vision_detail {

Status check_pixel_limit(int64_t width, int64_t height, const DecodeLimits& limits) {
  if (width <= 0 || height <= 0) {
    return make_error("image has an empty size %lldx%lld", static_cast<long long>(width),
                      static_cast<long long>(height));
  }
  if (width > limits.max_pixels / height) {  // width * height > max_pixels, without overflow
    return make_error("image %lldx%lld exceeds the pixel limit (%lld pixels)",
                      static_cast<long long>(width), static_cast<long long>(height),
                      static_cast<long long>(limits.max_pixels));
  }
  return Status::ok();
}

}  // namespace vision_detail

namespace {

bool starts_with(const uint8_t* d, size_t n, const char* magic, size_t m, size_t at = 0) {
  return n >= at + m && std::memcmp(d + at, magic, m) == 0;
}

// Formats PIL would open but this decoder does not handle, for a clearer message.
const char* unsupported_format(const uint8_t* d, size_t n) {
  if (starts_with(d, n, "GIF87a", 6) || starts_with(d, n, "GIF89a", 6)) return "GIF";
  if (starts_with(d, n, "BM", 2)) return "BMP";
  if (starts_with(d, n, "II*\0", 4) || starts_with(d, n, "MM\0*", 4)) return "TIFF";
  if (starts_with(d, n, "ftyp", 4, 4)) {
    if (starts_with(d, n, "avif", 4, 8) || starts_with(d, n, "avis", 4, 8)) return "AVIF";
    if (starts_with(d, n, "hei", 3, 8) || starts_with(d, n, "mif1", 4, 8)) return "HEIF";
  }
  if (starts_with(d, n, "\0\0\1\0", 4)) return "ICO";
  return nullptr;
}

}  // namespace

Result<Image> decode_image(const uint8_t* data, size_t size, const DecodeLimits& limits) {
  using namespace vision_detail;
  if (data == nullptr || size == 0) return make_error("not an image (empty input)");
  if (static_cast<uint64_t>(size) > static_cast<uint64_t>(limits.max_bytes)) {
    return make_error("image data is %zu bytes, over the limit of %lld bytes", size,
                      static_cast<long long>(limits.max_bytes));
  }
  static const uint8_t kPng[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
  Result<Decoded> dec = Error{};
  if (size >= 2 && data[0] == 0xFF && data[1] == 0xD8) {
    if (size < 4) return make_error("truncated JPEG");
    if (data[2] != 0xFF) return make_error("not an image (unknown format)");
    dec = decode_jpeg(data, size, limits);
  } else if (std::memcmp(data, kPng, size < 8 ? size : 8) == 0) {
    if (size < 8) return make_error("truncated PNG");
    dec = decode_png(data, size, limits);
  } else if (starts_with(data, size, "RIFF", 4) && starts_with(data, size, "WEBP", 4, 8)) {
    dec = decode_webp(data, size, limits);
  } else if (const char* fmt = unsupported_format(data, size)) {
    return make_error("unsupported image format %s (JPEG, PNG and WebP are supported)", fmt);
  } else {
    return make_error("not an image (unknown format)");
  }
  if (!dec) return Error{dec.message()};
  return apply_orientation(std::move(dec->image), dec->orientation);
}

Result<Image> load_image_file(const std::string& path, const DecodeLimits& limits) {
  auto file = MappedFile::open(path);
  if (!file) return Error{file.message()};
  if (file->size() == 0) return make_error("%s: not an image (empty file)", path.c_str());
  auto img = decode_image(file->data(), file->size(), limits);
  if (!img) return make_error("%s: %s", path.c_str(), img.message().c_str());
  return img;
}

}  // namespace ost
