#include "quant/format.h"

namespace ost::quant {

const char* format_name(Format f) {
  switch (f) {
    case Format::None:
      return "none";
    case Format::INT8:
      return "int8";
    case Format::FP8:
      return "fp8";
    case Format::INT4:
      return "int4";
  }
  return "?";
}

Result<Format> parse_format(const std::string& s) {
  if (s == "none" || s.empty()) return Format::None;
  if (s == "int8") return Format::INT8;
  if (s == "fp8") return Format::FP8;
  if (s == "int4") return Format::INT4;
  return make_error("unknown quantization format \"%s\" (expected int8, fp8 or int4)", s.c_str());
}

const char* kv_dtype_name(KvDType d) { return d == KvDType::FP8 ? "fp8" : "bf16"; }

Result<KvDType> parse_kv_dtype(const std::string& s) {
  if (s == "bf16" || s.empty()) return KvDType::BF16;
  if (s == "fp8") return KvDType::FP8;
  return make_error("unknown KV cache dtype \"%s\" (expected bf16 or fp8)", s.c_str());
}

int64_t scale_cols(Format f, int64_t cols, int group) {
  switch (f) {
    case Format::FP8:
    case Format::INT4:
      return (cols + group - 1) / group;
    default:
      return 1;
  }
}

int64_t scale_rows(Format f, int64_t rows, int group) {
  return f == Format::FP8 ? (rows + group - 1) / group : rows;
}

int64_t weight_bytes(Format f, int64_t rows, int64_t cols) {
  return f == Format::INT4 ? rows * (cols / 2) : rows * cols;
}

Status check_shape(Format f, const std::string& name, int64_t rows, int64_t cols, int group) {
  if (rows <= 0 || cols <= 0) return make_error("%s: empty matrix", name.c_str());
  if ((f == Format::INT4 || f == Format::FP8) && group <= 0)
    return make_error("%s: group size %d must be positive", name.c_str(), group);
  if (f == Format::INT4 && (group % 2 != 0 || cols % group != 0))
    return make_error("%s: %lld inputs are not divisible by the int4 group size %d (use --group-size "
                      "with a divisor, or --skip this tensor)",
                      name.c_str(), (long long)cols, group);
  return Status::ok();
}

}  // namespace ost::quant
