// PNG via libpng, converted to RGB the way PIL opens the file and then convert("RGB")s it:
//   gray 1/2/4/8 bit -> value scaled to 8 bit (0/255, *85, *17), replicated;
//   gray 16 bit      -> PIL mode "I": min(value, 255) (yes, most of a 16-bit photo is white);
//   gray+alpha, RGB(A) 16 bit -> the high byte; alpha dropped, never composited;
//   palette          -> PLTE lookup; indices past the PLTE keep PIL's gray ramp (i, i, i);
//   tRNS, gAMA, iCCP, sBIT are ignored.
// Orientation: eXIf (anywhere), then a "Raw profile type exif" text chunk, then XMP
// (iTXt "XML:com.adobe.xmp"), as Pillow's PngImageFile.getexif() looks them up.
//
// libpng reports errors through png_error, which longjmps back into png_run(); png_run()
// owns no object with a destructor (everything it fills lives in the caller).

#include <png.h>

#include <csetjmp>
#include <cstdio>
#include <cstring>
#include <new>
#include <string>
#include <vector>

#include "vision/decode_internal.h"

namespace ost::vision_detail {
namespace {

struct PngCtx {
  const uint8_t* data;
  size_t size;
  size_t pos;
  bool truncated;
  char message[256];
};

void on_error(png_structp png, png_const_charp msg) {
  auto* c = static_cast<PngCtx*>(png_get_error_ptr(png));
  std::snprintf(c->message, sizeof c->message, "%s", msg ? msg : "unknown error");
  png_longjmp(png, 1);
}

void on_warning(png_structp, png_const_charp) {}

void on_read(png_structp png, png_bytep out, png_size_t n) {
  auto* c = static_cast<PngCtx*>(png_get_io_ptr(png));
  if (n > c->size - c->pos) {
    c->truncated = true;
    png_error(png, "unexpected end of data");
  }
  std::memcpy(out, c->data + c->pos, n);
  c->pos += n;
}

uint32_t be32(const uint8_t* p) {
  return (uint32_t(p[0]) << 24) | (uint32_t(p[1]) << 16) | (uint32_t(p[2]) << 8) | p[3];
}

int hex_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

// ImageMagick's "Raw profile type exif": "\nexif\n    <len>\n<hex lines>"; PIL joins the
// lines after the third newline and hex-decodes them.
int raw_profile_orientation(const char* text, size_t len) {
  size_t i = 0;
  for (int nl = 0; nl < 3 && i < len; ++i) {
    if (text[i] == '\n') ++nl;
  }
  std::vector<uint8_t> bytes;
  int hi = -1;
  for (; i < len; ++i) {
    const char ch = text[i];
    if (ch == '\n' || ch == ' ' || ch == '\t' || ch == '\r') continue;
    const int v = hex_value(ch);
    if (v < 0) return 0;
    if (hi < 0) {
      hi = v;
    } else {
      bytes.push_back(static_cast<uint8_t>(hi * 16 + v));
      hi = -1;
    }
  }
  return exif_orientation(bytes.data(), bytes.size());
}

struct PngMeta {
  bool has_exif = false;  // an eXIf chunk hides "Raw profile type exif" from PIL
  int exif = 0, raw_profile = 0, xmp = -1;
};

void collect_meta(png_structp png, png_infop info, PngMeta* meta) {
  if (!info) return;
#ifdef PNG_eXIf_SUPPORTED
  png_uint_32 n = 0;
  png_bytep exif = nullptr;
  if (!meta->has_exif && png_get_eXIf_1(png, info, &n, &exif) != 0 && exif && n > 0) {
    meta->has_exif = true;
    meta->exif = exif_orientation(exif, n);
  }
#endif
  png_textp text = nullptr;
  int num = 0;
  png_get_text(png, info, &text, &num);
  for (int i = 0; i < num; ++i) {
    const char* key = text[i].key;
    if (!key || !text[i].text) continue;
    const size_t len = std::strlen(text[i].text);
    if (meta->raw_profile == 0 && std::strcmp(key, "Raw profile type exif") == 0) {
      meta->raw_profile = raw_profile_orientation(text[i].text, len);
    } else if (meta->xmp < 0 && std::strcmp(key, "XML:com.adobe.xmp") == 0) {
      meta->xmp = xmp_orientation(reinterpret_cast<const uint8_t*>(text[i].text), len);
    }
  }
}

// One row of decoded samples (after png_set_packing) -> RGB8.
void convert_row(const uint8_t* s, uint8_t* d, size_t w, int color_type, int depth,
                 const uint8_t* palette) {
  switch (color_type) {
    case PNG_COLOR_TYPE_GRAY:
      if (depth == 16) {
        for (size_t x = 0; x < w; ++x) {
          const uint8_t v = s[2 * x] ? 255 : s[2 * x + 1];
          d[3 * x] = d[3 * x + 1] = d[3 * x + 2] = v;
        }
      } else {
        const int mul = depth == 1 ? 255 : depth == 2 ? 85 : depth == 4 ? 17 : 1;
        for (size_t x = 0; x < w; ++x) {
          d[3 * x] = d[3 * x + 1] = d[3 * x + 2] = static_cast<uint8_t>(s[x] * mul);
        }
      }
      break;
    case PNG_COLOR_TYPE_GRAY_ALPHA: {
      const int step = depth == 16 ? 4 : 2;
      for (size_t x = 0; x < w; ++x) d[3 * x] = d[3 * x + 1] = d[3 * x + 2] = s[step * x];
      break;
    }
    case PNG_COLOR_TYPE_RGB:
    case PNG_COLOR_TYPE_RGB_ALPHA: {
      const int bps = depth == 16 ? 2 : 1;
      const int step = (color_type == PNG_COLOR_TYPE_RGB ? 3 : 4) * bps;
      for (size_t x = 0; x < w; ++x) {
        d[3 * x] = s[step * x];
        d[3 * x + 1] = s[step * x + bps];
        d[3 * x + 2] = s[step * x + 2 * bps];
      }
      break;
    }
    case PNG_COLOR_TYPE_PALETTE:
      for (size_t x = 0; x < w; ++x) std::memcpy(d + 3 * x, palette + 3 * s[x], 3);
      break;
  }
}

enum class Outcome { kOk, kLibpngError, kRefused };

Outcome png_run(png_structp png, png_infop info, png_infop end_info, PngCtx* ctx,
                Decoded* out, std::vector<uint8_t>* raw, std::vector<uint8_t>* palette,
                PngMeta* meta, std::string* refusal) {
  if (setjmp(png_jmpbuf(png))) return Outcome::kLibpngError;
  png_set_read_fn(png, ctx, on_read);
  png_set_keep_unknown_chunks(png, PNG_HANDLE_CHUNK_NEVER, nullptr, 0);
  png_read_info(png, info);
  const png_uint_32 w = png_get_image_width(png, info), h = png_get_image_height(png, info);
  const int color_type = png_get_color_type(png, info);
  const int depth = png_get_bit_depth(png, info);
  collect_meta(png, info, meta);

  if (color_type == PNG_COLOR_TYPE_PALETTE) {
    palette->resize(256 * 3);
    for (int i = 0; i < 256; ++i) {
      (*palette)[3 * i] = (*palette)[3 * i + 1] = (*palette)[3 * i + 2] = uint8_t(i);
    }
    png_colorp plte = nullptr;
    int n = 0;
    if (png_get_PLTE(png, info, &plte, &n) != 0 && plte) {
      for (int i = 0; i < n && i < 256; ++i) {
        (*palette)[3 * i] = plte[i].red;
        (*palette)[3 * i + 1] = plte[i].green;
        (*palette)[3 * i + 2] = plte[i].blue;
      }
    }
  }
  if (depth < 8) png_set_packing(png);
  const int passes = png_set_interlace_handling(png);
  png_read_update_info(png, info);
  const size_t rowbytes = png_get_rowbytes(png, info);
  const int channels = color_type == PNG_COLOR_TYPE_GRAY || color_type == PNG_COLOR_TYPE_PALETTE
                           ? 1
                       : color_type == PNG_COLOR_TYPE_GRAY_ALPHA ? 2
                       : color_type == PNG_COLOR_TYPE_RGB        ? 3
                                                                 : 4;
  if (rowbytes != size_t(w) * channels * (depth == 16 ? 2 : 1)) {
    *refusal = "corrupt PNG: unexpected row layout";
    return Outcome::kRefused;
  }
  try {
    out->image.rgb.resize(size_t(w) * h * 3);
    raw->resize(passes > 1 ? rowbytes * h : rowbytes);
  } catch (const std::bad_alloc&) {
    *refusal = "out of memory decoding a PNG";
    return Outcome::kRefused;
  }
  out->image.width = static_cast<int>(w);
  out->image.height = static_cast<int>(h);
  if (passes > 1) {
    // Adam7: every pass revisits the rows, so keep all of them.
    for (int p = 0; p < passes; ++p) {
      for (png_uint_32 y = 0; y < h; ++y) png_read_row(png, raw->data() + y * rowbytes, nullptr);
    }
    for (png_uint_32 y = 0; y < h; ++y) {
      convert_row(raw->data() + y * rowbytes, out->image.rgb.data() + size_t(y) * w * 3, w,
                  color_type, depth, palette->data());
    }
  } else {
    for (png_uint_32 y = 0; y < h; ++y) {
      png_read_row(png, raw->data(), nullptr);
      convert_row(raw->data(), out->image.rgb.data() + size_t(y) * w * 3, w, color_type, depth,
                  palette->data());
    }
  }
  return Outcome::kOk;
}

// Chunks after the image data (eXIf and text may sit there). PIL stops quietly at a broken
// or missing tail, so any error here is ignored.
void png_tail(png_structp png, png_infop end_info, PngMeta* meta) {
  if (setjmp(png_jmpbuf(png))) return;
  png_read_end(png, end_info);
  collect_meta(png, end_info, meta);
}

}  // namespace

Result<Decoded> decode_png(const uint8_t* data, size_t size, const DecodeLimits& limits) {
  // IHDR must be the first chunk; check the size it claims before libpng allocates anything.
  if (size < 33) return make_error("truncated PNG");
  if (be32(data + 8) != 13 || std::memcmp(data + 12, "IHDR", 4) != 0) {
    return make_error("corrupt PNG: the first chunk is not IHDR");
  }
  Status lim = check_pixel_limit(be32(data + 16), be32(data + 20), limits);
  if (!lim) return Error{lim.message()};

  PngCtx ctx;
  std::memset(&ctx, 0, sizeof ctx);
  ctx.data = data;
  ctx.size = size;
  png_structp png = png_create_read_struct(PNG_LIBPNG_VER_STRING, &ctx, on_error, on_warning);
  if (!png) return make_error("out of memory decoding a PNG");
  png_infop info = png_create_info_struct(png);
  png_infop end_info = png_create_info_struct(png);
  if (!info || !end_info) {
    png_destroy_read_struct(&png, &info, &end_info);
    return make_error("out of memory decoding a PNG");
  }
  Decoded out;
  std::vector<uint8_t> raw, palette;
  PngMeta meta;
  std::string refusal;
  const Outcome r = png_run(png, info, end_info, &ctx, &out, &raw, &palette, &meta, &refusal);
  if (r == Outcome::kOk) png_tail(png, end_info, &meta);
  png_destroy_read_struct(&png, &info, &end_info);

  if (r == Outcome::kRefused) return make_error(refusal);
  if (r == Outcome::kLibpngError) {
    if (ctx.truncated) return make_error("truncated PNG");
    return make_error("corrupt PNG: %s", ctx.message);
  }
  out.orientation = meta.has_exif ? meta.exif : meta.raw_profile;
  if (out.orientation == 0 && meta.xmp >= 0) out.orientation = meta.xmp;
  return out;
}

}  // namespace ost::vision_detail
