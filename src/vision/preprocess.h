// Qwen3-VL image preprocessing (transformers 5.17 Qwen2VLImageProcessorFast):
// smart_resize -> antialiased bicubic resize (uint8) -> (x - mean') / std' in fp32 ->
// temporal duplication -> patchify in 2x2 merge-block order.
#pragma once
#include <array>
#include <cstdint>
#include <utility>
#include <vector>

#include "core/status.h"
#include "vision/image.h"

namespace ost {

struct PreprocessOptions {
  int64_t min_pixels = 65536, max_pixels = 16777216;  // size.shortest_edge / size.longest_edge
  int patch_size = 16, temporal_patch_size = 2, merge_size = 2;
  std::array<float, 3> mean{0.5f, 0.5f, 0.5f}, std{0.5f, 0.5f, 0.5f};
  double rescale_factor = 1.0 / 255.0;
};

// Target size, Python semantics (round() is half-to-even). Returns (h_bar, w_bar), both
// multiples of factor. Errors: non-positive sizes/factor, aspect ratio > 200, a zero side.
Result<std::pair<int, int>> smart_resize(int height, int width, int factor, int64_t min_pixels,
                                         int64_t max_pixels);

// Antialiased bicubic (a = -0.5, Pillow windows: support 2*max(scale,1)), separable,
// horizontal pass first, uint8 intermediate and output.
//   kTorchInt16:  PyTorch's native uint8 kernel (int16 weights, per-axis precision); this is
//                 what the reference ran and it reproduces its pixel_values exactly.
//   kPillowInt32: PIL.Image.resize(BICUBIC) (int32 weights, 22 fractional bits); within one
//                 level of kTorchInt16. Kept to check the windows against real PIL output.
// A side whose size does not change is not resampled.
enum class BicubicKernel { kTorchInt16, kPillowInt32 };
Image resize_bicubic(const Image& src, int new_width, int new_height);  // kTorchInt16
Image resize_bicubic(const Image& src, int new_width, int new_height, BicubicKernel kernel);

struct ImagePatches {
  // f32 [grid_t*grid_h*grid_w, 3*temporal*patch*patch]; rows in merge-block order (for each
  // merge x merge block, row-major over blocks, its patches row-major); column =
  // c*(temporal*patch*patch) + t*(patch*patch) + py*patch + px.
  std::vector<float> pixel_values;
  int grid_t = 1, grid_h = 0, grid_w = 0;
  int resized_width = 0, resized_height = 0;
  int merge_size = 2;
  int num_tokens() const;  // grid_t*grid_h*grid_w / (merge*merge)
};

Result<ImagePatches> preprocess_image(const Image& img, const PreprocessOptions& opt);

// preprocess_image in two halves, for a consumer that cuts the patches itself (on a GPU):
//   plan_patches: the target size and grid (pixel_values left empty); when the size changes,
//     the resized image goes to *resized, else *resized is left empty and img is used as is;
//   normalize_table: the fused rescale + normalise, value = lut[channel][byte] (f32).
// Cutting the planned image with the table gives preprocess_image's pixel_values exactly.
using NormalizeTable = std::array<std::array<float, 256>, 3>;
Result<ImagePatches> plan_patches(const Image& img, const PreprocessOptions& opt, Image* resized);
Result<NormalizeTable> normalize_table(const PreprocessOptions& opt);

}  // namespace ost
