// JPEG via libjpeg(-turbo), with the settings PIL uses (ISLOW DCT, fancy upsampling) and
// PIL's colour handling: gray -> replicated, CMYK/YCCK -> Adobe-inverted CMYK -> cmyk2rgb.
//
// libjpeg reports fatal errors through error_exit, which must not return: it longjmps back
// into jpeg_run(). jpeg_run() owns no object with a destructor; everything it fills lives
// in the caller, so the jump skips only libjpeg's C frames.
//
// Large baseline images decode in horizontal bands on several threads: each band runs its own
// libjpeg decompressor over the whole stream, skips the rows above it (jpeg_skip_scanlines:
// entropy decoding only, no IDCT, upsampling or colour conversion) and converts its own rows,
// so every pixel comes from libjpeg's own code. The Huffman decoding stays serial in each band;
// the rest is split. A band that reports any warning or error sends the image back to the
// single decompressor, which then produces the result (or the error) as before.

#include <algorithm>
#include <atomic>
#include <csetjmp>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <new>
#include <string>
#include <thread>
#include <vector>

#include <jpeglib.h>
#include <jerror.h>

#include "vision/decode_internal.h"

namespace ost::vision_detail {
namespace {

constexpr int kMaxScans = 1000;  // a progressive file with more is hostile (libjpeg-turbo's
                                 // TJFLAG_LIMITSCANS uses 500)

struct JpegCtx {
  jpeg_error_mgr err;
  jpeg_source_mgr src;
  jpeg_progress_mgr progress;
  jmp_buf jump;
  char message[JMSG_LENGTH_MAX];
  bool hit_eof;
};

JpegCtx* ctx_of(j_common_ptr cinfo) { return static_cast<JpegCtx*>(cinfo->client_data); }

void on_error(j_common_ptr cinfo) {
  JpegCtx* c = ctx_of(cinfo);
  (*cinfo->err->format_message)(cinfo, c->message);
  std::longjmp(c->jump, 1);
}

// Warnings (corrupt entropy data and the like) are recovered from, as PIL lets libjpeg do.
void on_message(j_common_ptr, int) {}
// In a band, a warning sends the image back to the single decompressor.
void on_band_message(j_common_ptr cinfo, int level) {
  if (level < 0) ++cinfo->err->num_warnings;
}

void on_progress(j_common_ptr cinfo) {
  auto* d = reinterpret_cast<j_decompress_ptr>(cinfo);
  if (d->input_scan_number > kMaxScans) {
    JpegCtx* c = ctx_of(cinfo);
    std::snprintf(c->message, sizeof c->message, "more than %d scans", kMaxScans);
    std::longjmp(c->jump, 1);
  }
}

void src_init(j_decompress_ptr) {}
void src_term(j_decompress_ptr) {}

// The whole file is in the buffer from the start, so a refill means the data ran out. PIL
// refuses such files ("image file is truncated", even when only the EOI is missing), so stop
// here rather than let libjpeg pad the rest of the image with gray.
boolean src_fill(j_decompress_ptr cinfo) {
  ctx_of(reinterpret_cast<j_common_ptr>(cinfo))->hit_eof = true;
  ERREXIT(cinfo, JERR_INPUT_EOF);
  return FALSE;  // not reached
}

void src_skip(j_decompress_ptr cinfo, long n) {
  if (n <= 0) return;
  if (static_cast<size_t>(n) > cinfo->src->bytes_in_buffer) {
    src_fill(cinfo);
    return;
  }
  cinfo->src->next_input_byte += n;
  cinfo->src->bytes_in_buffer -= static_cast<size_t>(n);
}

int orientation_from_markers(j_decompress_ptr cinfo) {
  int orientation = 0;
  for (jpeg_saved_marker_ptr m = cinfo->marker_list; m; m = m->next) {
    if (m->marker == JPEG_APP0 + 1 && m->data_length >= 6 &&
        std::memcmp(m->data, "Exif\0", 5) == 0) {
      orientation = exif_orientation(m->data, m->data_length);
      break;  // PIL keeps the first Exif segment
    }
  }
  if (orientation != 0) return orientation;
  static const char kXmp[] = "http://ns.adobe.com/xap/1.0/";  // followed by a NUL
  for (jpeg_saved_marker_ptr m = cinfo->marker_list; m; m = m->next) {
    if (m->marker == JPEG_APP0 + 1 && m->data_length > sizeof(kXmp) &&
        std::memcmp(m->data, kXmp, sizeof(kXmp)) == 0) {
      const int o = xmp_orientation(m->data + sizeof(kXmp), m->data_length - sizeof(kXmp));
      if (o >= 0) return o;
    }
  }
  return 0;
}

enum class Outcome { kOk, kLibjpegError, kRefused };

// Points cinfo at the whole file in memory (ctx->src, whose callbacks are above).
void attach_source(JpegCtx* ctx, jpeg_decompress_struct* cinfo, const uint8_t* data, size_t size) {
  ctx->src.init_source = src_init;
  ctx->src.fill_input_buffer = src_fill;
  ctx->src.skip_input_data = src_skip;
  ctx->src.resync_to_restart = jpeg_resync_to_restart;
  ctx->src.term_source = src_term;
  ctx->src.next_input_byte = data;
  ctx->src.bytes_in_buffer = size;
  cinfo->src = &ctx->src;
}

// Rows y0 .. y1-1 of the image into out (RGB8, width w), as the single decompressor would give
// them; true when libjpeg raised no error and no warning. The band that ends the image also
// finishes the decompression (reaching the EOI marker), so a truncated file fails here.
bool band_run(JpegCtx* ctx, jpeg_decompress_struct* cinfo, const uint8_t* data, size_t size, J_COLOR_SPACE cs,
              int comps, JDIMENSION y0, JDIMENSION y1, uint8_t* out, uint8_t* scratch) {
  if (setjmp(ctx->jump)) return false;
  jpeg_create_decompress(cinfo);
  attach_source(ctx, cinfo, data, size);
  jpeg_read_header(cinfo, TRUE);
  cinfo->out_color_space = cs;
  cinfo->dct_method = JDCT_ISLOW;
  cinfo->do_fancy_upsampling = TRUE;
  jpeg_start_decompress(cinfo);
  const size_t w = cinfo->output_width;
  if (cinfo->output_components != comps) return false;
  if (y0 > 0 && jpeg_skip_scanlines(cinfo, y0) != y0) return false;
  while (cinfo->output_scanline < y1) {
    uint8_t* dst = out + static_cast<size_t>(cinfo->output_scanline) * w * 3;
    JSAMPROW row = comps == 3 ? dst : scratch;
    if (jpeg_read_scanlines(cinfo, &row, 1) != 1) return false;
    if (comps == 1)
      for (size_t x = 0; x < w; ++x) dst[3 * x] = dst[3 * x + 1] = dst[3 * x + 2] = scratch[x];
  }
  if (y1 == cinfo->output_height) jpeg_finish_decompress(cinfo);
  return cinfo->err->num_warnings == 0 && !ctx->hit_eof;
}

// Bands for an image of w x h (0: decode it in one piece): baseline YCbCr or grayscale of at
// least a megapixel, up to 4 bands of at least 64 rows. OST_JPEG_THREADS caps the count (1: one
// piece). forced >= 0 (tests): that many bands of whole 16-row groups whatever the size.
int band_count(const jpeg_decompress_struct* cinfo, int forced) {
  static const int cap = [] {
    const char* e = std::getenv("OST_JPEG_THREADS");
    const int hw = int(std::thread::hardware_concurrency());
    const int c = e ? std::atoi(e) : std::min(4, hw > 1 ? hw : 1);
    return std::max(1, std::min(8, c));
  }();
  if (cinfo->progressive_mode || cinfo->buffered_image) return 0;
  if (!(cinfo->out_color_space == JCS_RGB && cinfo->jpeg_color_space == JCS_YCbCr) &&
      cinfo->out_color_space != JCS_GRAYSCALE)
    return 0;
  const size_t w = cinfo->output_width, h = cinfo->output_height;
  if (forced >= 0) return forced;
  if (cap < 2) return 0;
  if (w * h < (size_t(1) << 20)) return 0;
  return std::max(1, std::min(cap, int(h / 64)));
}

std::atomic<uint64_t> g_banded{0};

// The image in bands on `bands` threads (this one included); false if any band failed.
bool decode_banded(const uint8_t* data, size_t size, J_COLOR_SPACE cs, int comps, size_t w, size_t h, int bands,
                   uint8_t* out) {
  const JDIMENSION rows = JDIMENSION((h + size_t(bands) * 16 - 1) / (size_t(bands) * 16) * 16);
  std::atomic<bool> ok{true};
  auto run = [&](int b) {
    const JDIMENSION y0 = JDIMENSION(b) * rows;
    const JDIMENSION y1 = std::min<JDIMENSION>(JDIMENSION(h), y0 + rows);
    if (y0 >= y1) return;
    JpegCtx ctx;
    std::memset(&ctx, 0, sizeof ctx);
    jpeg_decompress_struct cinfo;
    std::memset(&cinfo, 0, sizeof cinfo);
    cinfo.err = jpeg_std_error(&ctx.err);
    ctx.err.error_exit = on_error;
    ctx.err.emit_message = on_band_message;
    cinfo.client_data = &ctx;
    std::vector<uint8_t> scratch(comps == 1 ? w : 0);
    if (!band_run(&ctx, &cinfo, data, size, cs, comps, y0, y1, out, scratch.data())) ok = false;
    jpeg_destroy_decompress(&cinfo);
  };
  std::vector<std::thread> threads;
  try {
    for (int b = 1; b < bands; ++b) threads.emplace_back(run, b);
  } catch (const std::exception&) {
    ok = false;  // no thread: the plain path decodes the image
  }
  if (ok) run(0);
  for (auto& t : threads) t.join();
  if (ok) ++g_banded;
  return ok;
}

// cinfo must be zeroed with cinfo->err and client_data set. On kRefused, *refusal holds the
// message; on kLibjpegError, ctx->message.
Outcome jpeg_run(JpegCtx* ctx, jpeg_decompress_struct* cinfo, const uint8_t* data, size_t size,
                 const DecodeLimits* limits, Decoded* out, std::vector<uint8_t>* scratch,
                 std::string* refusal, int forced_bands) {
  if (setjmp(ctx->jump)) return Outcome::kLibjpegError;
  jpeg_create_decompress(cinfo);
  attach_source(ctx, cinfo, data, size);
  ctx->progress.progress_monitor = on_progress;
  cinfo->progress = &ctx->progress;
  jpeg_save_markers(cinfo, JPEG_APP0 + 1, 0xFFFF);
  jpeg_read_header(cinfo, TRUE);

  Status lim = check_pixel_limit(cinfo->image_width, cinfo->image_height, *limits);
  if (!lim) {
    *refusal = lim.message();
    return Outcome::kRefused;
  }
  out->orientation = orientation_from_markers(cinfo);

  int comps;
  switch (cinfo->jpeg_color_space) {
    case JCS_GRAYSCALE:
      cinfo->out_color_space = JCS_GRAYSCALE;
      comps = 1;
      break;
    case JCS_CMYK:
    case JCS_YCCK:
      cinfo->out_color_space = JCS_CMYK;
      comps = 4;
      break;
    default:
      cinfo->out_color_space = JCS_RGB;
      comps = 3;
      break;
  }
  cinfo->dct_method = JDCT_ISLOW;
  cinfo->do_fancy_upsampling = TRUE;
  jpeg_start_decompress(cinfo);
  if (cinfo->output_components != comps) {
    *refusal = "corrupt JPEG: unexpected number of output components";
    return Outcome::kRefused;
  }
  const size_t w = cinfo->output_width, h = cinfo->output_height;
  try {
    out->image.rgb.resize(w * h * 3);
    if (comps != 3) scratch->resize(w * comps);
  } catch (const std::bad_alloc&) {
    *refusal = "out of memory decoding a JPEG";
    return Outcome::kRefused;
  }
  out->image.width = static_cast<int>(w);
  out->image.height = static_cast<int>(h);
  if (const int bands = band_count(cinfo, forced_bands); bands >= 2 &&
      decode_banded(data, size, cinfo->out_color_space, comps, w, h, bands, out->image.rgb.data())) {
    jpeg_abort_decompress(cinfo);
    return Outcome::kOk;
  }
  while (cinfo->output_scanline < cinfo->output_height) {
    uint8_t* dst = out->image.rgb.data() + static_cast<size_t>(cinfo->output_scanline) * w * 3;
    JSAMPROW row = comps == 3 ? dst : scratch->data();
    if (jpeg_read_scanlines(cinfo, &row, 1) != 1) break;
    const uint8_t* s = scratch->data();
    if (comps == 1) {
      for (size_t x = 0; x < w; ++x) dst[3 * x] = dst[3 * x + 1] = dst[3 * x + 2] = s[x];
    } else if (comps == 4) {
      // PIL: raw mode "CMYK;I" (Adobe files store inverted CMYK) then cmyk2rgb:
      // out = clip(nk - muldiv255(c, nk)), nk = 255 - k.
      for (size_t x = 0; x < w; ++x) {
        const int nk = s[4 * x + 3];  // 255 - (255 - stored)
        for (int c = 0; c < 3; ++c) {
          const int cyan = 255 - s[4 * x + c];
          const int t = cyan * nk + 128;
          const int v = nk - (((t >> 8) + t) >> 8);
          dst[3 * x + c] = static_cast<uint8_t>(v < 0 ? 0 : v);
        }
      }
    }
  }
  jpeg_finish_decompress(cinfo);
  return Outcome::kOk;
}

}  // namespace

uint64_t jpeg_banded_decodes() { return g_banded.load(); }

Result<Decoded> decode_jpeg(const uint8_t* data, size_t size, const DecodeLimits& limits, int bands) {
  JpegCtx ctx;
  std::memset(&ctx, 0, sizeof ctx);
  jpeg_decompress_struct cinfo;
  std::memset(&cinfo, 0, sizeof cinfo);
  cinfo.err = jpeg_std_error(&ctx.err);
  ctx.err.error_exit = on_error;
  ctx.err.emit_message = on_message;
  cinfo.client_data = &ctx;

  Decoded out;
  std::vector<uint8_t> scratch;
  std::string refusal;
  const Outcome r = jpeg_run(&ctx, &cinfo, data, size, &limits, &out, &scratch, &refusal, bands);
  jpeg_destroy_decompress(&cinfo);
  if (r == Outcome::kRefused) return make_error(refusal);
  if (ctx.hit_eof) return make_error("truncated JPEG");
  if (r == Outcome::kLibjpegError) return make_error("corrupt JPEG: %s", ctx.message);
  return out;
}

}  // namespace ost::vision_detail
