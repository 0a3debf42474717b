// M-RoPE: position ids of a prompt (the reference's get_rope_index) and the text rope tables.
#include <algorithm>
#include <cmath>

#include "model/graph.h"

namespace ost {

Result<MropePositions> compute_mrope_positions(const std::vector<int32_t>& ids,
                                               const std::vector<std::array<int, 3>>& grid_thw,
                                               const ModelConfig& cfg) {
  const int64_t L = int64_t(ids.size());
  if (L == 0) return make_error("mrope positions: empty prompt");
  const int m = cfg.vision.spatial_merge_size;
  MropePositions out;
  out.n = L;
  out.pos.assign(size_t(3 * L), 0);
  int64_t* P[3] = {out.pos.data(), out.pos.data() + L, out.pos.data() + 2 * L};

  int64_t next = 0;  // max position so far + 1
  // Text tokens [from, to): consecutive positions on all three axes.
  auto text_run = [&](int64_t from, int64_t to) {
    for (int64_t i = from; i < to; ++i)
      for (int a = 0; a < 3; ++a) P[a][i] = next + (i - from);
    next += to - from;
  };

  int64_t st = 0, image_tokens = 0;
  size_t img = 0;
  for (int64_t i = 0; i + 1 < L; ++i) {
    if (ids[i] != cfg.vision_start_token_id || ids[i + 1] != cfg.image_token_id) continue;
    if (img >= grid_thw.size())
      return make_error("mrope positions: the prompt has more images than the %zu grids given",
                        grid_thw.size());
    const auto [t, gh, gw] = grid_thw[img];
    if (t <= 0 || gh <= 0 || gw <= 0 || gh % m != 0 || gw % m != 0)
      return make_error("mrope positions: image %zu has an invalid grid (%d, %d, %d)", img, t, gh, gw);
    const int64_t hm = gh / m, wm = gw / m, count = int64_t(t) * hm * wm;
    const int64_t ed = i + 1;  // first <|image_pad|>
    for (int64_t j = ed; j < ed + count; ++j)
      if (j >= L || ids[j] != cfg.image_token_id)
        return make_error(
            "mrope positions: image %zu (grid %d×%d×%d) needs %lld <|image_pad|> "
            "tokens, the prompt has %lld",
            img, t, gh, gw, (long long)count, (long long)(j - ed));
    text_run(st, ed);
    const int64_t base = next;
    int64_t j = ed;
    for (int ti = 0; ti < t; ++ti)
      for (int64_t r = 0; r < hm; ++r)
        for (int64_t col = 0; col < wm; ++col, ++j) {
          P[0][j] = base + ti;
          P[1][j] = base + r;
          P[2][j] = base + col;
        }
    next = base + std::max<int64_t>({t - 1, hm - 1, wm - 1}) + 1;
    st = ed + count;
    image_tokens += count;
    ++img;
    i = st - 1;
  }
  if (img != grid_thw.size())
    return make_error("mrope positions: %zu image grids given but the prompt has %zu images", grid_thw.size(),
                      img);
  const int64_t pads = std::count(ids.begin(), ids.end(), cfg.image_token_id);
  if (pads != image_tokens)
    return make_error(
        "mrope positions: %lld <|image_pad|> tokens are outside any "
        "<|vision_start|> image span",
        (long long)(pads - image_tokens));
  text_run(st, L);
  out.rope_delta = next - L;
  return out;
}

void mrope_tables(const TextConfig& c, const int64_t* const pos[3], int64_t n, float* cos, float* sin) {
  const int half = c.head_dim / 2;
  std::vector<float> inv(static_cast<size_t>(half));
  std::vector<int> axis(static_cast<size_t>(half));
  for (int i = 0; i < half; ++i) {
    // fp32 like the reference: θ ** (2i / head_dim), then its reciprocal.
    inv[i] = 1.0f / std::pow(float(c.rope_theta), float(2 * i) / float(c.head_dim));
    axis[i] = (i % 3 == 1 && i < 3 * c.mrope_section[1])   ? 1
              : (i % 3 == 2 && i < 3 * c.mrope_section[2]) ? 2
                                                           : 0;
  }
  for (int64_t r = 0; r < n; ++r)
    for (int i = 0; i < half; ++i) {
      const float a = float(pos[axis[i]][r]) * inv[i];  // fp32 angle, as the reference
      cos[r * half + i] = float(std::cos(double(a)));
      sin[r * half + i] = float(std::sin(double(a)));
    }
}

}  // namespace ost
