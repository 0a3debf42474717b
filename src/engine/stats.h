// Serving statistics the engine thread records and the server exports: fixed-bucket
// histograms (Prometheus style, cumulative on export) and a snapshot of the engine's state.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace ost {

struct Histogram {
  std::vector<double> bounds;    // upper bounds, ascending (the +Inf bucket is implicit)
  std::vector<uint64_t> counts;  // per bucket, bounds.size() + 1 entries, not cumulative
  double sum = 0;
  uint64_t count = 0;

  explicit Histogram(std::vector<double> b = {}) : bounds(std::move(b)), counts(bounds.size() + 1, 0) {}
  void observe(double v) {
    size_t i = 0;
    while (i < bounds.size() && v > bounds[i]) ++i;
    counts[i]++;
    sum += v;
    count++;
  }
  // Linear interpolation inside the bucket holding quantile q (the last finite bound for +Inf).
  double quantile(double q) const {
    if (count == 0) return 0;
    const double rank = q * double(count);
    double seen = 0;
    for (size_t i = 0; i < counts.size(); ++i) {
      if (seen + double(counts[i]) >= rank && counts[i] > 0) {
        const double lo = i == 0 ? 0 : bounds[i - 1];
        const double hi = i < bounds.size() ? bounds[i] : (bounds.empty() ? 0 : bounds.back());
        return lo + (hi - lo) * ((rank - seen) / double(counts[i]));
      }
      seen += double(counts[i]);
    }
    return bounds.empty() ? 0 : bounds.back();
  }
};

inline std::vector<double> latency_buckets_s() {
  return {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 25, 60, 120};
}

struct EngineSnapshot {
  bool ready = false;
  std::string model_name, device;
  int64_t waiting = 0, running = 0;
  int64_t kv_blocks_total = 0, kv_blocks_used = 0, kv_blocks_free = 0, kv_blocks_cached = 0;
  int64_t kv_block_size = 0;
  int64_t prefix_query_tokens = 0, prefix_hit_tokens = 0;  // Scheduler's counters
  int64_t prefix_skipped_tokens = 0, computed_prompt_tokens = 0;
  int64_t image_queries = 0, image_hits = 0;
  int64_t preemptions = 0, steps = 0;
  int64_t prompt_tokens = 0, generated_tokens = 0;
  // Sampled decode rows drawn from the runner's candidates; of them, those that needed the full
  // logits (the candidates did not decide the draw).
  int64_t candidate_rows = 0, sampling_fallbacks = 0;
  // Tokens chosen under a response format's mask, and the time spent computing those masks.
  int64_t constrained_tokens = 0;
  double token_mask_s = 0;
  int64_t finished_stop = 0, finished_length = 0, finished_cancelled = 0, finished_error = 0;
  Histogram ttft_s{latency_buckets_s()}, itl_s{latency_buckets_s()}, e2e_s{latency_buckets_s()};
  Histogram batch_size{{1, 2, 4, 8, 16, 32, 64, 128, 256}};
};

}  // namespace ost
