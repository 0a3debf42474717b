#include "io/safetensors.h"

#include <nlohmann/json.hpp>

#include <cstdio>
#include <cstring>
#include <limits>

namespace ost {

namespace {
struct DTypeRow {
  DType t;
  const char* name;
  size_t size;
};
constexpr DTypeRow kDTypes[] = {
    {DType::BF16, "BF16", 2}, {DType::F16, "F16", 2},     {DType::F32, "F32", 4},
    {DType::F64, "F64", 8},   {DType::I64, "I64", 8},     {DType::I32, "I32", 4},
    {DType::I16, "I16", 2},   {DType::I8, "I8", 1},       {DType::U8, "U8", 1},
    {DType::F8_E4M3, "F8_E4M3", 1}, {DType::BOOL, "BOOL", 1},
};
constexpr uint64_t kMaxHeader = 100ull << 20;
}  // namespace

const char* dtype_name(DType t) {
  for (auto& r : kDTypes)
    if (r.t == t) return r.name;
  return "?";
}
size_t dtype_size(DType t) {
  for (auto& r : kDTypes)
    if (r.t == t) return r.size;
  return 0;
}
Result<DType> parse_dtype(const std::string& s) {
  for (auto& r : kDTypes)
    if (s == r.name) return r.t;
  return make_error("unsupported dtype \"%s\"", s.c_str());
}

int64_t TensorInfo::numel() const {
  int64_t n = 1;
  for (auto d : shape) n *= d;
  return n;
}

std::string shape_str(const std::vector<int64_t>& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

Result<SafetensorsFile> SafetensorsFile::open(const std::string& path) {
  auto m = MappedFile::open(path);
  if (!m) return Error{m.message()};
  SafetensorsFile f;
  f.map_ = std::move(*m);
  const uint8_t* p = f.map_.data();
  const size_t size = f.map_.size();
  const char* fn = path.c_str();
  if (size < 8) return make_error("%s: truncated safetensors file (%zu bytes)", fn, size);
  uint64_t n = 0;
  std::memcpy(&n, p, 8);
  if (n > kMaxHeader) return make_error("%s: bad safetensors header length %llu", fn, (unsigned long long)n);
  if (n > size - 8)
    return make_error("%s: truncated safetensors file: header needs %llu bytes, file has %zu", fn,
                      (unsigned long long)n, size - 8);
  nlohmann::json h;
  try {
    h = nlohmann::json::parse(p + 8, p + 8 + n);
  } catch (const std::exception& e) {
    return make_error("%s: bad safetensors header: %s", fn, e.what());
  }
  if (!h.is_object()) return make_error("%s: bad safetensors header: not a JSON object", fn);
  const uint64_t data_size = size - 8 - n;
  const uint8_t* base = p + 8 + n;
  for (auto it = h.begin(); it != h.end(); ++it) {
    const std::string& name = it.key();
    const auto& v = it.value();
    if (name == "__metadata__") {
      if (v.is_object())
        for (auto m2 = v.begin(); m2 != v.end(); ++m2)
          if (m2.value().is_string()) f.metadata_[m2.key()] = m2.value().get<std::string>();
      continue;
    }
    if (!v.is_object() || !v.contains("dtype") || !v.contains("shape") || !v.contains("data_offsets") ||
        !v["dtype"].is_string() || !v["shape"].is_array() || !v["data_offsets"].is_array() ||
        v["data_offsets"].size() != 2)
      return make_error("%s: bad header entry for tensor %s", fn, name.c_str());
    TensorInfo t;
    t.name = name;
    auto dt = parse_dtype(v["dtype"].get<std::string>());
    if (!dt) return make_error("%s: tensor %s: %s", fn, name.c_str(), dt.message().c_str());
    t.dtype = *dt;
    uint64_t numel = 1;
    for (auto& d : v["shape"]) {
      if (!d.is_number_integer() || d.get<int64_t>() < 0)
        return make_error("%s: tensor %s: bad shape", fn, name.c_str());
      uint64_t dim = d.get<uint64_t>();
      if (dim != 0 && numel > std::numeric_limits<uint64_t>::max() / 16 / dim)
        return make_error("%s: tensor %s: shape too large", fn, name.c_str());
      numel *= dim;
      t.shape.push_back(int64_t(dim));
    }
    const auto& off = v["data_offsets"];
    if (!off[0].is_number_unsigned() || !off[1].is_number_unsigned())
      return make_error("%s: tensor %s: bad data_offsets", fn, name.c_str());
    uint64_t s = off[0].get<uint64_t>(), e = off[1].get<uint64_t>();
    if (s > e || e > data_size)
      return make_error("%s: tensor %s: data offsets [%llu, %llu) out of range (data is %llu bytes%s)",
                        fn, name.c_str(), (unsigned long long)s, (unsigned long long)e,
                        (unsigned long long)data_size, e > data_size ? "; file truncated?" : "");
    if (e - s != numel * dtype_size(t.dtype))
      return make_error("%s: tensor %s: %llu bytes for shape %s of %s", fn, name.c_str(),
                        (unsigned long long)(e - s), shape_str(t.shape).c_str(), dtype_name(t.dtype));
    t.data = base + s;
    t.nbytes = e - s;
    f.tensors_.push_back(std::move(t));
  }
  return f;
}

Status write_safetensors(const std::string& path, const std::vector<TensorSpec>& specs,
                         const FillFn& fill, const std::map<std::string, std::string>& metadata,
                         const std::function<void(int64_t, int64_t)>& progress) {
  nlohmann::ordered_json h = nlohmann::ordered_json::object();
  if (!metadata.empty()) h["__metadata__"] = metadata;
  uint64_t off = 0;
  int64_t total = 0;
  for (auto& s : specs) {
    int64_t n = 1;
    for (auto d : s.shape) n *= d;
    uint64_t bytes = uint64_t(n) * dtype_size(s.dtype);
    h[s.name] = {{"dtype", dtype_name(s.dtype)}, {"shape", s.shape}, {"data_offsets", {off, off + bytes}}};
    off += bytes;
    total += int64_t(bytes);
  }
  std::string hs = h.dump();
  while ((hs.size() + 8) % 8) hs.push_back(' ');  // keep tensor data 8-byte aligned
  FILE* f = std::fopen(path.c_str(), "wb");
  if (!f) return make_error("cannot create %s", path.c_str());
  uint64_t n = hs.size();
  bool ok = std::fwrite(&n, 8, 1, f) == 1 && std::fwrite(hs.data(), 1, hs.size(), f) == hs.size();
  std::vector<uint8_t> buf;
  const int64_t chunk = 1 << 22;
  int64_t done = 0;
  for (auto& s : specs) {
    if (!ok) break;
    int64_t n_el = 1;
    for (auto d : s.shape) n_el *= d;
    size_t es = dtype_size(s.dtype);
    for (int64_t i = 0; i < n_el && ok; i += chunk) {
      int64_t c = std::min(chunk, n_el - i);
      buf.resize(size_t(c) * es);
      fill(s, i, c, buf.data());
      ok = std::fwrite(buf.data(), 1, buf.size(), f) == buf.size();
      done += int64_t(buf.size());
      if (progress) progress(done, total);
    }
  }
  if (std::fclose(f) != 0) ok = false;
  if (!ok) return make_error("write to %s failed (disk full?)", path.c_str());
  return Status::ok();
}

}  // namespace ost
