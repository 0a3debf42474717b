// The order the vision tower sees the patches of one frame in: 2×2 (merge × merge) blocks in
// row-major order, and inside each block its patches row-major. Pixel rows, position embeddings
// and rotary angles all follow it (CPU and CUDA runners alike).
#pragma once

namespace ost {

// Calls f(row, col) for the patches of one frame of an (h, w) patch grid, merge size m.
template <class F>
void for_each_patch_merge_order(int h, int w, int m, F&& f) {
  for (int br = 0; br < h / m; ++br)
    for (int bc = 0; bc < w / m; ++bc)
      for (int ir = 0; ir < m; ++ir)
        for (int ic = 0; ic < m; ++ic) f(br * m + ir, bc * m + ic);
}

}  // namespace ost
