// WebP via libwebp. PIL decodes WebP with WebPAnimDecoder into non-premultiplied RGBA and
// convert("RGB") drops the alpha, which is the same as decoding straight to RGB. For an
// animation PIL's first frame is the first ANMF frame on a zeroed (transparent black)
// canvas, without blending (the first frame is always a key frame).
// Orientation: the EXIF chunk, then XMP ("XMP " chunk) as the fallback.

#include <webp/decode.h>

#include <cstring>
#include <vector>

#include "vision/decode_internal.h"

namespace ost::vision_detail {
namespace {

uint32_t le24(const uint8_t* p) { return p[0] | (p[1] << 8) | (uint32_t(p[2]) << 16); }
uint32_t le32(const uint8_t* p) { return le24(p) | (uint32_t(p[3]) << 24); }

const char* status_name(VP8StatusCode s) {
  switch (s) {
    case VP8_STATUS_OUT_OF_MEMORY: return "out of memory";
    case VP8_STATUS_INVALID_PARAM: return "invalid parameter";
    case VP8_STATUS_BITSTREAM_ERROR: return "bitstream error";
    case VP8_STATUS_UNSUPPORTED_FEATURE: return "unsupported feature";
    case VP8_STATUS_SUSPENDED: return "suspended";
    case VP8_STATUS_USER_ABORT: return "aborted";
    case VP8_STATUS_NOT_ENOUGH_DATA: return "not enough data";
    default: return "unknown error";
  }
}

Error webp_error(VP8StatusCode s) {
  if (s == VP8_STATUS_NOT_ENOUGH_DATA) return make_error("truncated WebP");
  return make_error("corrupt WebP: %s", status_name(s));
}

struct Chunk {
  const uint8_t* data = nullptr;
  size_t size = 0;
};

// Top-level RIFF chunks we look at: the first EXIF, "XMP " and ANMF.
struct RiffChunks {
  Chunk exif, xmp, anmf;
};

RiffChunks scan_chunks(const uint8_t* data, size_t size) {
  RiffChunks r;
  size_t end = size;
  const uint64_t riff_end = 8 + uint64_t(le32(data + 4));
  if (riff_end < end) end = static_cast<size_t>(riff_end);
  size_t pos = 12;
  while (pos + 8 <= end) {
    const uint8_t* tag = data + pos;
    const uint32_t n = le32(data + pos + 4);
    if (n > end - pos - 8) break;
    const Chunk c{data + pos + 8, n};
    if (!r.exif.data && std::memcmp(tag, "EXIF", 4) == 0) r.exif = c;
    if (!r.xmp.data && std::memcmp(tag, "XMP ", 4) == 0) r.xmp = c;
    if (!r.anmf.data && std::memcmp(tag, "ANMF", 4) == 0) r.anmf = c;
    pos += 8 + size_t(n) + (n & 1);
  }
  return r;
}

// Decodes a WebP bitstream to RGB8 into `dst` with row stride `stride`.
VP8StatusCode decode_rgb(const uint8_t* data, size_t size, uint8_t* dst, size_t stride,
                         size_t dst_size) {
  WebPDecoderConfig config;
  if (!WebPInitDecoderConfig(&config)) return VP8_STATUS_INVALID_PARAM;
  config.output.colorspace = MODE_RGB;
  config.output.is_external_memory = 1;
  config.output.u.RGBA.rgba = dst;
  config.output.u.RGBA.stride = static_cast<int>(stride);
  config.output.u.RGBA.size = dst_size;
  const VP8StatusCode s = WebPDecode(data, size, &config);
  WebPFreeDecBuffer(&config.output);
  return s;
}

}  // namespace

Result<Decoded> decode_webp(const uint8_t* data, size_t size, const DecodeLimits& limits) {
  // PIL's WebPAnimDecoder demuxes the whole file and refuses one cut short, even when the
  // cut only loses later animation frames.
  if (size < 12 || 8 + uint64_t(le32(data + 4)) > size) return make_error("truncated WebP");
  WebPBitstreamFeatures feat;
  VP8StatusCode st = WebPGetFeatures(data, size, &feat);
  if (st != VP8_STATUS_OK) return webp_error(st);
  Status lim = check_pixel_limit(feat.width, feat.height, limits);
  if (!lim) return Error{lim.message()};

  const RiffChunks chunks = scan_chunks(data, size);
  Decoded out;
  out.image.width = feat.width;
  out.image.height = feat.height;
  const size_t stride = size_t(feat.width) * 3;
  out.image.rgb.assign(stride * feat.height, 0);

  if (!feat.has_animation) {
    st = decode_rgb(data, size, out.image.rgb.data(), stride, out.image.rgb.size());
    if (st != VP8_STATUS_OK) return webp_error(st);
  } else {
    const Chunk& f = chunks.anmf;
    if (!f.data || f.size < 16) return make_error("corrupt WebP: animation without frames");
    const uint32_t x0 = 2 * le24(f.data), y0 = 2 * le24(f.data + 3);
    const uint32_t fw = le24(f.data + 6) + 1, fh = le24(f.data + 9) + 1;
    if (uint64_t(x0) + fw > uint64_t(feat.width) || uint64_t(y0) + fh > uint64_t(feat.height)) {
      return make_error("corrupt WebP: animation frame outside the canvas");
    }
    const uint8_t* fd = f.data + 16;
    const size_t fn = f.size - 16;
    WebPBitstreamFeatures ff;
    st = WebPGetFeatures(fd, fn, &ff);
    if (st != VP8_STATUS_OK) return webp_error(st);
    if (uint32_t(ff.width) != fw || uint32_t(ff.height) != fh) {
      return make_error("corrupt WebP: frame size does not match its bitstream");
    }
    uint8_t* dst = out.image.rgb.data() + size_t(y0) * stride + size_t(x0) * 3;
    const size_t avail = out.image.rgb.size() - (size_t(y0) * stride + size_t(x0) * 3);
    st = decode_rgb(fd, fn, dst, stride, avail);
    if (st != VP8_STATUS_OK) return webp_error(st);
  }

  if (chunks.exif.data) out.orientation = exif_orientation(chunks.exif.data, chunks.exif.size);
  if (out.orientation == 0 && chunks.xmp.data) {
    const int o = xmp_orientation(chunks.xmp.data, chunks.xmp.size);
    if (o >= 0) out.orientation = o;
  }
  return out;
}

}  // namespace ost::vision_detail
