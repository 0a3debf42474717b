#include "quant/quant.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <regex>

#include "core/bf16.h"

namespace ost::quant {

float int4_scale(float s) {
  // 2^-24 (the smallest f16 subnormal) .. 65504 (the largest finite f16)
  return round_f16(std::clamp(s, 5.9604644775390625e-8f, 65504.0f));
}

float fp8_e4m3_to_f32(uint8_t b) {
  const float sign = (b & 0x80) ? -1.0f : 1.0f;
  const int e = (b >> 3) & 15, m = b & 7;
  if (e == 15 && m == 7) return std::nanf("");
  if (e == 0) return sign * std::ldexp(float(m), -9);
  return sign * std::ldexp(1.0f + float(m) / 8.0f, e - 7);
}

uint8_t f32_to_fp8_e4m3(float x) {
  const uint8_t sign = std::signbit(x) ? 0x80 : 0;
  const float a = std::fabs(x);
  if (std::isnan(x)) return sign | 0x7f;
  if (a >= 448.0f) return sign | 0x7e;
  int e2 = 0;
  std::frexp(a, &e2);  // a = f · 2^e2, f in [0.5, 1): the leading bit is 2^(e2 - 1)
  const int E = e2 - 1;
  if (a == 0.0f || E < -6) {  // subnormal range: steps of 2^-9 (code 8 is the smallest normal)
    const int q = int(std::nearbyint(std::ldexp(a, 9)));
    return sign | uint8_t(q);
  }
  int q = int(std::nearbyint(std::ldexp(a, 3 - E)));  // 8..16
  int ee = E;
  if (q == 16) {
    q = 8;
    ++ee;
  }
  const int code = ((ee + 7) << 3) | (q - 8);
  return sign | uint8_t(std::min(code, 0x7e));
}

void resize_for(QuantizedMatrix& m, Format f, int64_t rows, int64_t cols, int group) {
  m.format = f;
  m.rows = rows;
  m.cols = cols;
  m.group = f == Format::INT8 ? 0 : group;
  m.data.assign(size_t(weight_bytes(f, rows, cols)), 0);
  m.scale.assign(size_t(scale_rows(f, rows, group) * scale_cols(f, cols, group)), 0.0f);
  if (f == Format::INT4) m.zero.assign(size_t(rows * scale_cols(f, cols, group)), 0);
  else m.zero.clear();
}

namespace {

void quantize_int8_row(const float* w, int64_t cols, int8_t* q, float* scale) {
  float amax = 0.0f;
  for (int64_t c = 0; c < cols; ++c) amax = std::max(amax, std::fabs(w[c]));
  const float s = amax / 127.0f;
  *scale = s;
  const float inv = s > 0.0f ? 1.0f / s : 0.0f;
  for (int64_t c = 0; c < cols; ++c)
    q[c] = int8_t(std::clamp(std::nearbyint(w[c] * inv), -127.0f, 127.0f));
}

void quantize_int4_row(const float* w, int64_t cols, int group, uint8_t* q, float* scale, uint8_t* zero) {
  for (int64_t g0 = 0, gi = 0; g0 < cols; g0 += group, ++gi) {
    float mn = 0.0f, mx = 0.0f;
    for (int c = 0; c < group; ++c) {
      mn = std::min(mn, w[g0 + c]);
      mx = std::max(mx, w[g0 + c]);
    }
    float s = (mx - mn) / 15.0f;
    if (!(s > 0.0f)) s = 1.0f;  // an all-zero group
    s = int4_scale(s);          // the stored f16 value; z and q follow from it
    const float z = std::clamp(std::nearbyint(-mn / s), 0.0f, 15.0f);
    scale[gi] = s;
    zero[gi] = uint8_t(z);
    const float inv = 1.0f / s;
    for (int c = 0; c < group; c += 2) {
      const int a = int(std::clamp(std::nearbyint(w[g0 + c] * inv) + z, 0.0f, 15.0f));
      const int b = int(std::clamp(std::nearbyint(w[g0 + c + 1] * inv) + z, 0.0f, 15.0f));
      q[(g0 + c) / 2] = uint8_t(a | (b << 4));
    }
  }
}

// One FP8 block row: rows [r0, r0 + n) with n <= B.
void quantize_fp8_strip(QuantizedMatrix& m, int64_t r0, int64_t n, const float* src) {
  const int64_t B = m.group, cols = m.cols, nsc = scale_cols(Format::FP8, cols, m.group);
  float* sc = m.scale.data() + (r0 / B) * nsc;
  for (int64_t bc = 0; bc < nsc; ++bc) {
    const int64_t c0 = bc * B, c1 = std::min(cols, c0 + B);
    float amax = 0.0f;
    for (int64_t r = 0; r < n; ++r)
      for (int64_t c = c0; c < c1; ++c) amax = std::max(amax, std::fabs(src[r * cols + c]));
    const float s = amax > 0.0f ? amax / 448.0f : 1.0f;
    sc[bc] = s;
    const float inv = 1.0f / s;
    for (int64_t r = 0; r < n; ++r)
      for (int64_t c = c0; c < c1; ++c) m.data[size_t((r0 + r) * cols + c)] = f32_to_fp8_e4m3(src[r * cols + c] * inv);
  }
}

}  // namespace

void quantize_rows(QuantizedMatrix& m, int64_t r0, int64_t n, const float* src) {
  const int64_t cols = m.cols;
  switch (m.format) {
    case Format::INT8:
#pragma omp parallel for schedule(static) if (n * cols >= (1 << 18))
      for (int64_t r = 0; r < n; ++r)
        quantize_int8_row(src + r * cols, cols, reinterpret_cast<int8_t*>(m.data.data()) + (r0 + r) * cols,
                          m.scale.data() + r0 + r);
      break;
    case Format::INT4: {
      const int64_t ng = cols / m.group;
#pragma omp parallel for schedule(static) if (n * cols >= (1 << 18))
      for (int64_t r = 0; r < n; ++r)
        quantize_int4_row(src + r * cols, cols, m.group, m.data.data() + (r0 + r) * (cols / 2),
                          m.scale.data() + (r0 + r) * ng, m.zero.data() + (r0 + r) * ng);
      break;
    }
    case Format::FP8: {
      const int64_t strips = (n + m.group - 1) / m.group;
#pragma omp parallel for schedule(dynamic, 1) if (n * cols >= (1 << 18))
      for (int64_t i = 0; i < strips; ++i) {
        const int64_t s = i * m.group;
        quantize_fp8_strip(m, r0 + s, std::min<int64_t>(m.group, n - s), src + s * cols);
      }
      break;
    }
    case Format::None:
      break;
  }
}

Result<QuantizedMatrix> quantize(Format f, const float* w, int64_t rows, int64_t cols, int group) {
  if (f == Format::None) return make_error("quantize: no format");
  OST_TRY(check_shape(f, "matrix", rows, cols, group));
  QuantizedMatrix m;
  resize_for(m, f, rows, cols, group);
  quantize_rows(m, 0, rows, w);
  return m;
}

void quantize_act_fp8(const float* x, int64_t n, int64_t cols, int group, uint8_t* q, float* scale) {
  const int64_t nsc = scale_cols(Format::FP8, cols, group);
  for (int64_t r = 0; r < n; ++r)
    for (int64_t b = 0; b < nsc; ++b) {
      const int64_t c0 = b * group, c1 = std::min(cols, c0 + group);
      float amax = 0.0f;
      for (int64_t c = c0; c < c1; ++c) amax = std::max(amax, std::fabs(x[r * cols + c]));
      const float s = amax > 0.0f ? amax / 448.0f : 1.0f;
      const float inv = 1.0f / s;
      scale[r * nsc + b] = s;
      for (int64_t c = c0; c < c1; ++c) q[r * cols + c] = f32_to_fp8_e4m3(x[r * cols + c] * inv);
    }
}

void fake_quant_act_fp8(float* x, int64_t n, int64_t cols, int group) {
  const int64_t nsc = scale_cols(Format::FP8, cols, group);
  std::vector<uint8_t> q(static_cast<size_t>(cols));
  std::vector<float> s(static_cast<size_t>(nsc));
  for (int64_t r = 0; r < n; ++r) {
    float* xr = x + r * cols;
    quantize_act_fp8(xr, 1, cols, group, q.data(), s.data());
    for (int64_t c = 0; c < cols; ++c) xr[c] = fp8_e4m3_to_f32(q[size_t(c)]) * s[size_t(c / group)];
  }
}

void quantize_kv_fp8(const float* x, int64_t n, int hd, uint8_t* q, float* scale) {
  quantize_act_fp8(x, n, hd, hd, q, scale);
}

void dequantize_kv_fp8(const uint8_t* q, const float* scale, int64_t n, int hd, float* out) {
  static const auto lut = [] {
    std::vector<float> t(256);
    for (int i = 0; i < 256; ++i) t[size_t(i)] = fp8_e4m3_to_f32(uint8_t(i));
    return t;
  }();
  for (int64_t r = 0; r < n; ++r)
    for (int c = 0; c < hd; ++c) out[r * hd + c] = lut[q[r * hd + c]] * scale[r];
}

void dequant_segment(const QView& w, int64_t r, int64_t k0, int64_t n, float* out) {
  switch (w.format) {
    case Format::INT8: {
      const int8_t* q = static_cast<const int8_t*>(w.data) + r * w.cols + k0;
      const float s = w.scale[r];
      for (int64_t i = 0; i < n; ++i) out[i] = float(q[i]) * s;
      break;
    }
    case Format::FP8: {
      const uint8_t* q = static_cast<const uint8_t*>(w.data) + r * w.cols;
      const float* sr = w.scale + (r / w.group) * scale_cols(Format::FP8, w.cols, w.group);
      static const auto lut = [] {
        std::vector<float> t(256);
        for (int i = 0; i < 256; ++i) t[size_t(i)] = fp8_e4m3_to_f32(uint8_t(i));
        return t;
      }();
      for (int64_t i = 0; i < n; ++i) {
        const int64_t c = k0 + i;
        out[i] = lut[q[c]] * sr[c / w.group];
      }
      break;
    }
    case Format::INT4: {
      const uint8_t* q = static_cast<const uint8_t*>(w.data) + r * (w.cols / 2);
      const int64_t ng = w.cols / w.group;
      const float* s = w.scale + r * ng;
      const uint8_t* z = w.zero + r * ng;
      for (int64_t i = 0; i < n; ++i) {
        const int64_t c = k0 + i;
        const int v = (c & 1) ? (q[c / 2] >> 4) : (q[c / 2] & 15);
        const int64_t g = c / w.group;
        out[i] = float(v - int(z[g])) * s[g];
      }
      break;
    }
    case Format::None:
      break;
  }
}

Result<bool> selected(const std::string& name, const SelectOptions& opt, bool tied_embeddings) {
  if (!opt.skip.empty()) {
    try {
      if (std::regex_search(name, std::regex(opt.skip))) return false;
    } catch (const std::regex_error& e) {
      return make_error("--skip: bad regular expression \"%s\": %s", opt.skip.c_str(), e.what());
    }
  }
  if (name.starts_with("model.language_model.layers.")) return true;
  if (name == "lm_head.weight") return opt.lm_head;
  if (name == "model.language_model.embed_tokens.weight") return tied_embeddings ? opt.lm_head : opt.embeddings;
  if (name.starts_with("model.visual.")) return opt.vision;
  return false;
}

}  // namespace ost::quant
