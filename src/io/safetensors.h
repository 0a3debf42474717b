// safetensors: memory-mapped reader (bounds-checked header) and a streaming writer.
#pragma once
#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "core/file_util.h"
#include "core/status.h"

namespace ost {

enum class DType { BF16, F16, F32, F64, I64, I32, I16, I8, U8, F8_E4M3, BOOL };

const char* dtype_name(DType t);
size_t dtype_size(DType t);
Result<DType> parse_dtype(const std::string& s);

struct TensorInfo {
  std::string name;
  DType dtype = DType::F32;
  std::vector<int64_t> shape;
  const uint8_t* data = nullptr;  // inside the mapping of its file
  size_t nbytes = 0;
  int64_t numel() const;
};

std::string shape_str(const std::vector<int64_t>& shape);

class SafetensorsFile {
 public:
  static Result<SafetensorsFile> open(const std::string& path);
  const std::vector<TensorInfo>& tensors() const { return tensors_; }
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  const std::string& path() const { return map_.path(); }

 private:
  MappedFile map_;
  std::vector<TensorInfo> tensors_;
  std::map<std::string, std::string> metadata_;
};

// Writes a safetensors file whose tensor list is known up front; the data of each tensor is
// produced by a callback in chunks, so a 17 GB checkpoint never sits in memory.
struct TensorSpec {
  std::string name;
  DType dtype;
  std::vector<int64_t> shape;
};
// fill(spec, first_element, count, out_bytes): write `count` elements starting at flat index
// `first_element` into out_bytes (count * dtype_size bytes).
using FillFn = std::function<void(const TensorSpec&, int64_t, int64_t, uint8_t*)>;
Status write_safetensors(const std::string& path, const std::vector<TensorSpec>& specs,
                         const FillFn& fill,
                         const std::map<std::string, std::string>& metadata = {},
                         const std::function<void(int64_t done, int64_t total)>& progress = {});

}  // namespace ost
