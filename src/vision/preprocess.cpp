// smart_resize, normalisation and patchify of Qwen2VLImageProcessorFast (transformers 5.17).

#include "vision/preprocess.h"

#include <algorithm>
#include <climits>
#include <cmath>

namespace ost {

Result<std::pair<int, int>> smart_resize(int height, int width, int factor, int64_t min_pixels,
                                         int64_t max_pixels) {
  if (height <= 0 || width <= 0) {
    return make_error("degenerate image size %dx%d (width x height)", width, height);
  }
  if (factor <= 0) return make_error("smart_resize: factor must be positive, got %d", factor);
  if (max_pixels <= 0 || min_pixels < 0) {
    return make_error("smart_resize: bad pixel bounds min=%lld max=%lld",
                      static_cast<long long>(min_pixels), static_cast<long long>(max_pixels));
  }
  // Python: max(h, w) / min(h, w) > 200 in double.
  const double ratio =
      static_cast<double>(std::max(height, width)) / static_cast<double>(std::min(height, width));
  if (ratio > 200.0) {
    return make_error("absolute aspect ratio must be smaller than 200, got %.17g (image %dx%d)",
                      ratio, width, height);
  }
  // Python round(): half to even; nearbyint does that in the default rounding mode.
  int64_t h_bar = static_cast<int64_t>(std::nearbyint(static_cast<double>(height) / factor)) * factor;
  int64_t w_bar = static_cast<int64_t>(std::nearbyint(static_cast<double>(width) / factor)) * factor;
  const int64_t hw = static_cast<int64_t>(height) * width;
  if (h_bar * w_bar > max_pixels) {
    const double beta = std::sqrt(static_cast<double>(hw) / static_cast<double>(max_pixels));
    h_bar = std::max<int64_t>(
        factor, static_cast<int64_t>(std::floor(height / beta / factor)) * factor);
    w_bar = std::max<int64_t>(
        factor, static_cast<int64_t>(std::floor(width / beta / factor)) * factor);
  } else if (h_bar * w_bar < min_pixels) {
    const double beta = std::sqrt(static_cast<double>(min_pixels) / static_cast<double>(hw));
    h_bar = static_cast<int64_t>(std::ceil(height * beta / factor)) * factor;
    w_bar = static_cast<int64_t>(std::ceil(width * beta / factor)) * factor;
  }
  if (h_bar <= 0 || w_bar <= 0 || h_bar > INT_MAX || w_bar > INT_MAX) {
    return make_error("smart_resize: image %dx%d gives a degenerate target %lldx%lld", width,
                      height, static_cast<long long>(w_bar), static_cast<long long>(h_bar));
  }
  return std::pair<int, int>(static_cast<int>(h_bar), static_cast<int>(w_bar));
}

int ImagePatches::num_tokens() const {
  const int m2 = merge_size * merge_size;
  return m2 > 0 ? grid_t * grid_h * grid_w / m2 : 0;
}

Result<ImagePatches> plan_patches(const Image& img, const PreprocessOptions& opt, Image* resized) {
  if (img.width <= 0 || img.height <= 0 ||
      img.rgb.size() != static_cast<size_t>(img.width) * img.height * 3) {
    return make_error("preprocess_image: invalid image %dx%d with %zu bytes", img.width,
                      img.height, img.rgb.size());
  }
  if (opt.patch_size <= 0 || opt.merge_size <= 0 || opt.temporal_patch_size <= 0 ||
      opt.rescale_factor <= 0.0) {
    return make_error("preprocess_image: invalid options (patch %d, merge %d, temporal %d)",
                      opt.patch_size, opt.merge_size, opt.temporal_patch_size);
  }
  const int P = opt.patch_size, M = opt.merge_size;
  auto target = smart_resize(img.height, img.width, P * M, opt.min_pixels, opt.max_pixels);
  if (!target) return Error{target.message()};
  const auto [h_bar, w_bar] = *target;
  *resized = Image{};
  if (h_bar != img.height || w_bar != img.width) *resized = resize_bicubic(img, w_bar, h_bar);

  ImagePatches out;
  out.grid_t = 1;  // one frame, repeated to temporal_patch_size
  out.grid_h = h_bar / P;
  out.grid_w = w_bar / P;
  out.resized_height = h_bar;
  out.resized_width = w_bar;
  out.merge_size = M;
  return out;
}

Result<NormalizeTable> normalize_table(const PreprocessOptions& opt) {
  // Fused rescale + normalize as the fast processor does it: mean' = float32(mean) *
  // (1 / rescale_factor) and std' likewise (float32 tensor times a Python float), then
  // F.normalize: (float32(x) - mean') / std'. One table per channel.
  NormalizeTable lut;
  const float inv_rescale = static_cast<float>(1.0 / opt.rescale_factor);
  for (int c = 0; c < 3; ++c) {
    const float m = opt.mean[c] * inv_rescale;
    const float s = opt.std[c] * inv_rescale;
    if (s == 0.0f) return make_error("preprocess_image: image_std[%d] is zero", c);
    for (int v = 0; v < 256; ++v) lut[c][v] = (static_cast<float>(v) - m) / s;
  }
  return lut;
}

Result<ImagePatches> preprocess_image(const Image& img, const PreprocessOptions& opt) {
  Image resized;
  auto planned = plan_patches(img, opt, &resized);
  if (!planned) return Error{planned.message()};
  ImagePatches out = std::move(*planned);
  const Image* src = resized.rgb.empty() ? &img : &resized;
  auto table = normalize_table(opt);
  if (!table) return Error{table.message()};
  const NormalizeTable& lut = *table;

  const int P = opt.patch_size, M = opt.merge_size, T = opt.temporal_patch_size;
  const int h_bar = out.resized_height, w_bar = out.resized_width;
  const int row_len = 3 * T * P * P;
  const int bh_n = out.grid_h / M, bw_n = out.grid_w / M;
  out.pixel_values.resize(static_cast<size_t>(out.grid_h) * out.grid_w * row_len);
  const uint8_t* px = src->rgb.data();
  const size_t stride = static_cast<size_t>(w_bar) * 3;

  // f32 [grid_h*grid_w, 3*T*P*P]: row = ((bh*bw_n + bw)*M + mh)*M + mw,
  // column = c*T*P*P + t*P*P + py*P + px.
#pragma omp parallel for schedule(static) if (static_cast<int64_t>(h_bar) * w_bar > (1 << 17))
  for (int bh = 0; bh < bh_n; ++bh) {
    for (int bw = 0; bw < bw_n; ++bw) {
      for (int mh = 0; mh < M; ++mh) {
        for (int mw = 0; mw < M; ++mw) {
          const size_t r = ((static_cast<size_t>(bh) * bw_n + bw) * M + mh) * M + mw;
          float* dst = &out.pixel_values[r * row_len];
          const int y0 = (bh * M + mh) * P, x0 = (bw * M + mw) * P;
          for (int c = 0; c < 3; ++c) {
            float* dc = dst + static_cast<size_t>(c) * T * P * P;
            for (int py = 0; py < P; ++py) {
              const uint8_t* s = px + static_cast<size_t>(y0 + py) * stride +
                                 static_cast<size_t>(x0) * 3 + c;
              float* d = dc + py * P;
              for (int q = 0; q < P; ++q) d[q] = lut[c][s[3 * q]];
            }
            for (int t = 1; t < T; ++t) {
              std::copy(dc, dc + P * P, dc + static_cast<size_t>(t) * P * P);
            }
          }
        }
      }
    }
  }
  return out;
}

}  // namespace ost
