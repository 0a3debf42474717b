// Sampled decode rows of a serving step on the device: after the step's forward (the greedy
// choice of every row, the bf16 logits of the decode rows in logits_), the logit transform and
// the top-K of each sampled row run there (topk.h) and only those entries and the normalisers
// come to the host (model/candidates.h); decode_row_logits fetches one row when the Sampler
// needs it.
#include <algorithm>

#include "backend/cuda/cuda_runner_impl.h"
#include "backend/cuda/topk.h"

namespace ost::cuda {

// The device adds the normalisers in another order than exp_sum: each of the two sums is within
// (d - 1)·2⁻⁵³ relative of the exact sum of its d positive terms, each term within 2 ulp of the
// host's exp, and the terms it leaves out (below e^-46) are under 2e-15 of the sum: under 4e-11
// apart for d = 151936. The Sampler is given five times that (a wider bound only sends more rows
// to the full logits: a log-sum-exp whose f32 rounding the bound leaves open).
constexpr double kDeviceSumRelError = 2e-10;

Result<MixedStepOutput> CudaRunner::mixed_step_candidates(const std::vector<PrefillChunk>& chunks,
                                                          const std::vector<SequenceState*>& decode,
                                                          const std::vector<int32_t>& decode_ids,
                                                          const std::vector<CandidateSpec>& specs) {
  if (specs.size() != decode.size())
    return make_error("mixed_step_candidates: %zu decode rows, %zu specs", decode.size(), specs.size());
  auto out = mixed_step(chunks, decode, decode_ids, /*greedy=*/true);  // leaves the decode rows in logits_
  OST_TRY(out.status());
  const int64_t B = int64_t(decode.size()), V = cfg_.model.text.vocab_size;
  cand_rows_ = B;
  out->decode_candidates.assign(size_t(B), RowCandidates());
  std::vector<RowTransformDev> params(static_cast<size_t>(B));
  std::vector<SeenTokenDev> seen;
  std::vector<int32_t> k(static_cast<size_t>(2 * B));  // transformed entries per row, then raw entries
  int kmax = 1, kraw = 1;
  bool any = false;
  for (int64_t b = 0; b < B; ++b) {
    const CandidateSpec& s = specs[size_t(b)];
    RowTransformDev& p = params[size_t(b)];
    p.temperature = s.transform.temperature;
    p.repetition = s.transform.repetition_penalty;
    p.presence = s.transform.presence_penalty;
    p.frequency = s.transform.frequency_penalty;
    p.seen_begin = int32_t(seen.size());
    if (s.transform.penalized())
      for (const SeenToken& t : s.transform.seen)
        if (t.id >= 0 && t.id < V) seen.push_back({t.id, t.generated});
    p.seen_end = int32_t(seen.size());
    k[size_t(b)] = std::clamp(s.top, 0, kMaxTopK);
    k[size_t(B + b)] = std::clamp(s.raw_top, 0, kMaxTopK);
    kmax = std::max(kmax, k[size_t(b)]);
    kraw = std::max(kraw, k[size_t(B + b)]);
    any = any || s.top > 0 || s.raw_top > 0;
  }
  if (B == 0 || !any) return out;
  if (seen.empty()) seen.emplace_back();

  const size_t stats_bytes = size_t(2 * B) * sizeof(TopkStats);
  const size_t top_bytes = size_t(B * kmax) * sizeof(TopkEntry), raw_bytes = size_t(B * kraw) * sizeof(TopkEntry);
  auto ws = cand_ws_.carve({params.size() * sizeof(RowTransformDev), seen.size() * sizeof(SeenTokenDev),
                            k.size() * 4, stats_bytes, top_bytes, raw_bytes},
                           stream_);
  OST_TRY(ws.status());
  auto* d_params = static_cast<RowTransformDev*>((*ws)[0]);
  auto* d_seen = static_cast<SeenTokenDev*>((*ws)[1]);
  auto* d_k = static_cast<int32_t*>((*ws)[2]);
  auto* d_stats = static_cast<TopkStats*>((*ws)[3]);
  auto* d_top = static_cast<TopkEntry*>((*ws)[4]);
  auto* d_raw = static_cast<TopkEntry*>((*ws)[5]);
  OST_CUDA_RET(cudaMemcpyAsync(d_params, params.data(), params.size() * sizeof(RowTransformDev),
                               cudaMemcpyHostToDevice, stream_));
  OST_CUDA_RET(cudaMemcpyAsync(d_seen, seen.data(), seen.size() * sizeof(SeenTokenDev), cudaMemcpyHostToDevice, stream_));
  OST_CUDA_RET(cudaMemcpyAsync(d_k, k.data(), k.size() * 4, cudaMemcpyHostToDevice, stream_));
  // The transformed rows go to logits_f32_ (free outside a forward).
  OST_TRY(launch_logit_transform(logits_, B, V, d_params, d_seen, excluded_dev_, logits_f32_, stream_));
  OST_TRY(launch_topk(static_cast<const float*>(logits_f32_), logits_, B, V, d_k, kmax, d_top, d_stats, stream_));
  OST_TRY(launch_topk(static_cast<const bf16*>(logits_), logits_, B, V, d_k + B, kraw, d_raw, d_stats + B, stream_));

  std::vector<TopkStats> stats(static_cast<size_t>(2 * B));
  std::vector<TopkEntry> top(static_cast<size_t>(B * kmax)), raw(static_cast<size_t>(B * kraw));
  OST_CUDA_RET(cudaMemcpyAsync(stats.data(), d_stats, stats_bytes, cudaMemcpyDeviceToHost, stream_));
  OST_CUDA_RET(cudaMemcpyAsync(top.data(), d_top, top_bytes, cudaMemcpyDeviceToHost, stream_));
  OST_CUDA_RET(cudaMemcpyAsync(raw.data(), d_raw, raw_bytes, cudaMemcpyDeviceToHost, stream_));
  OST_CUDA_RET(cudaStreamSynchronize(stream_));
  for (int64_t b = 0; b < B; ++b) {
    if (k[size_t(b)] == 0 && k[size_t(B + b)] == 0) continue;
    RowCandidates& c = out->decode_candidates[size_t(b)];
    const TopkStats &st = stats[size_t(b)], &sr = stats[size_t(B + b)];
    for (int64_t j = 0; j < std::min<int64_t>(k[size_t(b)], V); ++j) {
      const TopkEntry& e = top[size_t(b * kmax + j)];
      c.top.push_back({e.value, e.raw, e.id});
    }
    for (int64_t j = 0; j < std::min<int64_t>(k[size_t(B + b)], V); ++j) {
      const TopkEntry& e = raw[size_t(b * kraw + j)];
      c.raw_top.push_back({e.value, e.raw, e.id});
    }
    c.max = st.max;
    c.sum = st.sum;
    c.raw_max = sr.max;
    c.raw_sum = sr.sum;
    c.rel_error = kDeviceSumRelError;
    c.has_nan = st.nan_count > 0 || sr.nan_count > 0;
  }
  return out;
}

Result<std::vector<float>> CudaRunner::decode_row_logits(int row) {
  const int64_t V = cfg_.model.text.vocab_size;
  if (row < 0 || row >= cand_rows_)
    return make_error("decode_row_logits: row %d of a step of %lld decode rows", row, (long long)cand_rows_);
  std::vector<float> logits(static_cast<size_t>(V));
  OST_TRY(launch_bf16_to_f32(logits_ + int64_t(row) * V, logits_f32_, V, stream_));
  OST_CUDA_RET(cudaMemcpyAsync(logits.data(), logits_f32_, size_t(V) * 4, cudaMemcpyDeviceToHost, stream_));
  OST_CUDA_RET(cudaStreamSynchronize(stream_));
  return logits;
}

}  // namespace ost::cuda
