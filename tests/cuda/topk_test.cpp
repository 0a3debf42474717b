// Sampling candidates on the device (backend/cuda/topk.cu) against the host reference
// (model/candidates.h): the logit transform bit for bit, the top-K against a full sort (ties,
// -inf, -0/+0, K = 1, 20, 256, 1024, K beyond the row), the max exactly and the normaliser
// within the bound the Sampler is given; and the CUDA runner's mixed_step_candidates against
// compute_candidates over its own logits.
#include <algorithm>
#include <cstring>
#include <numeric>

#include "backend/cuda/sampling.h"
#include "backend/cuda/topk.h"
#include "common/temp_dir.h"
#include "cuda_test_util.h"
#include "engine/sampler.h"
#include "io/seeded.h"
#include "model/candidates.h"

namespace ost::testing {
namespace {

bool same_bits(float a, float b) { return std::memcmp(&a, &b, 4) == 0; }

// The bound the CUDA runner hands the Sampler is 2e-10; the sums must be well inside it.
constexpr double kSumTol = 1e-10;

std::vector<int32_t> sorted_ids(const float* x, int64_t d) {
  std::vector<int32_t> idx(static_cast<size_t>(d));
  std::iota(idx.begin(), idx.end(), 0);
  std::stable_sort(idx.begin(), idx.end(), [&](int32_t a, int32_t b) { return x[a] > x[b]; });
  return idx;
}

// Rows of several kinds: broad, bf16-rounded small integers (many ties), with -inf, with -0/+0.
std::vector<float> make_rows(int64_t rows, int64_t d, uint32_t seed) {
  std::vector<float> x = randn_bf16(size_t(rows * d), seed, 3.0f);
  std::mt19937 rng(seed);
  for (int64_t r = 0; r < rows; ++r) {
    float* row = x.data() + r * d;
    switch (r % 4) {
      case 1:
        for (int64_t i = 0; i < d; ++i) row[i] = float(int(rng() % 9)) - 4.0f;  // ties everywhere
        break;
      case 2:
        for (int64_t i = 0; i < d; i += 3) row[i] = -INFINITY;
        break;
      case 3:
        for (int64_t i = 0; i < d; i += 5) row[i] = (i / 5) % 2 ? -0.0f : 0.0f;
        for (int64_t i = 1; i < d; i += 5) row[i] = 9.0f;
        break;
      default:
        break;
    }
  }
  return x;
}

template <typename T>
void check_topk(int64_t rows, int64_t d, const std::vector<int32_t>& ks, int kmax, uint32_t seed) {
  const std::vector<float> x = make_rows(rows, d, seed);
  std::vector<float> raw_f = randn_bf16(size_t(rows * d), seed + 100);
  auto draw = to_dev(raw_f);
  std::unique_ptr<DevBuf<T>> dx;
  if constexpr (std::is_same_v<T, float>) {
    dx = to_dev_raw(x);
  } else {
    auto b = to_dev(x);  // x is already bf16-exact, -inf and -0 included
    dx = std::make_unique<DevBuf<T>>(x.size());
    ASSERT_EQ(cudaMemcpy(dx->p, b->p, x.size() * 2, cudaMemcpyDeviceToDevice), cudaSuccess);
  }
  auto dk = to_dev_raw(ks);
  DevBuf<cuda::TopkEntry> out(static_cast<size_t>(rows * kmax));
  DevBuf<cuda::TopkStats> stats(static_cast<size_t>(rows));
  ASSERT_EQ(cudaMemset(out.p, 0xff, out.n * sizeof(cuda::TopkEntry)), cudaSuccess);
  ASSERT_EQ(cudaMemset(stats.p, 0xff, stats.n * sizeof(cuda::TopkStats)), cudaSuccess);
  ASSERT_TRUE(cuda::launch_topk<T>(dx->p, draw->p, rows, d, dk->p, kmax, out.p, stats.p, 0).is_ok());
  ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  std::vector<cuda::TopkEntry> got(out.n);
  std::vector<cuda::TopkStats> st(stats.n);
  ASSERT_EQ(cudaMemcpy(got.data(), out.p, got.size() * sizeof(cuda::TopkEntry), cudaMemcpyDeviceToHost), cudaSuccess);
  ASSERT_EQ(cudaMemcpy(st.data(), stats.p, st.size() * sizeof(cuda::TopkStats), cudaMemcpyDeviceToHost), cudaSuccess);
  for (int64_t r = 0; r < rows; ++r) {
    const float* row = x.data() + r * d;
    const float mx = max_logit(row, d);
    const double sum = exp_sum(row, d, mx);
    EXPECT_TRUE(same_bits(st[size_t(r)].max, mx)) << "row " << r << ": " << st[size_t(r)].max << " vs " << mx;
    EXPECT_EQ(st[size_t(r)].nan_count, 0);
    EXPECT_LE(std::fabs(st[size_t(r)].sum - sum), kSumTol * sum) << "d=" << d << " row " << r;
    const std::vector<int32_t> want = sorted_ids(row, d);
    const int64_t k = std::min<int64_t>(std::min(ks[size_t(r)], kmax), d);
    for (int64_t j = 0; j < k; ++j) {
      const cuda::TopkEntry& e = got[size_t(r * kmax + j)];
      const int32_t id = want[size_t(j)];
      ASSERT_EQ(e.id, id) << "d=" << d << " row " << r << " k " << k << " entry " << j;
      EXPECT_TRUE(same_bits(e.value, row[id]));
      EXPECT_TRUE(same_bits(e.raw, raw_f[size_t(r * d + id)]));
    }
  }
}

TEST(CudaTopk, AgainstFullSortF32) {
  OST_REQUIRE_GPU();
  check_topk<float>(8, 151936, {1, 20, 256, 1024, 256, 20, 1, 0}, 1024, 1);
  check_topk<float>(4, 1000, {256, 256, 256, 256}, 256, 2);
  check_topk<float>(4, 7, {20, 1, 7, 256}, 256, 3);  // K beyond the row: the whole row
  check_topk<float>(3, 4097, {1024, 1000, 999}, 1024, 4);
}

TEST(CudaTopk, AgainstFullSortBf16) {
  OST_REQUIRE_GPU();
  check_topk<cuda::bf16>(8, 151936, {20, 20, 1, 5, 20, 20, 0, 20}, 20, 5);
  check_topk<cuda::bf16>(4, 300, {256, 20, 1, 300}, 300, 6);
}

TEST(CudaTopk, CountsNaN) {
  OST_REQUIRE_GPU();
  std::vector<float> x = randn_bf16(2 * 5000, 7);
  x[17] = NAN;
  x[5000 + 3] = NAN;
  x[5000 + 4000] = NAN;
  auto dx = to_dev_raw(x);
  auto dk = to_dev_raw(std::vector<int32_t>{20, 20});
  DevBuf<cuda::TopkEntry> out(40);
  DevBuf<cuda::TopkStats> stats(2);
  ASSERT_TRUE(cuda::launch_topk<float>(dx->p, nullptr, 2, 5000, dk->p, 20, out.p, stats.p, 0).is_ok());
  std::vector<cuda::TopkStats> st(2);
  ASSERT_EQ(cudaMemcpy(st.data(), stats.p, 2 * sizeof(cuda::TopkStats), cudaMemcpyDeviceToHost), cudaSuccess);
  EXPECT_EQ(st[0].nan_count, 1);
  EXPECT_EQ(st[1].nan_count, 2);
}

TEST(CudaTopk, TransformAsHost) {
  OST_REQUIRE_GPU();
  for (int64_t d : {int64_t(151936), int64_t(1000)}) {
    const int64_t rows = 4;
    const std::vector<float> x = randn_bf16(size_t(rows * d), uint32_t(d), 4.0f);
    std::mt19937 rng(uint32_t(d) + 1);
    std::vector<LogitTransform> ts(static_cast<size_t>(rows));
    ts[0].temperature = 0.7f, ts[0].repetition_penalty = 1.3f, ts[0].presence_penalty = 0.5f,
    ts[0].frequency_penalty = -0.3f;
    ts[1].temperature = 0.0f, ts[1].repetition_penalty = 0.8f;  // greedy with a penalty
    ts[2].temperature = 1.5f;
    ts[3].temperature = 0.3f, ts[3].frequency_penalty = 1.7f;
    const std::vector<int32_t> excluded = {5, 17, int32_t(d - 1)};
    std::vector<cuda::RowTransformDev> params;
    std::vector<cuda::SeenTokenDev> seen;
    for (auto& t : ts) {
      std::vector<uint8_t> used(static_cast<size_t>(d), 0);
      for (int i = 0; i < 400; ++i) {
        const int32_t id = int32_t(rng() % uint32_t(d));
        if (used[size_t(id)]) continue;
        used[size_t(id)] = 1;
        t.seen.push_back({id, int32_t(rng() % 4)});
      }
      t.seen.push_back({17, 2});  // seen and excluded
      cuda::RowTransformDev p;
      p.temperature = t.temperature, p.repetition = t.repetition_penalty, p.presence = t.presence_penalty,
      p.frequency = t.frequency_penalty;
      p.seen_begin = int32_t(seen.size());
      if (t.penalized())
        for (const SeenToken& s : t.seen) seen.push_back({s.id, s.generated});
      p.seen_end = int32_t(seen.size());
      params.push_back(p);
    }
    std::vector<int32_t> hex(size_t(1 + cuda::kMaxExcludedTokens), 0);
    hex[0] = int32_t(excluded.size());
    std::copy(excluded.begin(), excluded.end(), hex.begin() + 1);
    auto dx = to_dev(x);
    auto dp = to_dev_raw(params);
    auto ds = to_dev_raw(seen);
    auto de = to_dev_raw(hex);
    DevBuf<float> t(static_cast<size_t>(rows * d));
    ASSERT_EQ(cudaMemset(t.p, 0xff, t.n * 4), cudaSuccess);  // NaN
    ASSERT_TRUE(cuda::launch_logit_transform(dx->p, rows, d, dp->p, ds->p, de->p, t.p, 0).is_ok());
    std::vector<float> got(t.n);
    ASSERT_EQ(cudaMemcpy(got.data(), t.p, t.n * 4, cudaMemcpyDeviceToHost), cudaSuccess);
    for (int64_t r = 0; r < rows; ++r) {
      std::vector<float> want(x.begin() + r * d, x.begin() + (r + 1) * d);
      apply_transform(want.data(), int(d), ts[size_t(r)], excluded);
      int64_t bad = 0;
      for (int64_t i = 0; i < d; ++i)
        if (!same_bits(got[size_t(r * d + i)], want[size_t(i)]) && bad++ < 5)
          ADD_FAILURE() << "d=" << d << " row " << r << " id " << i << ": " << got[size_t(r * d + i)] << " vs "
                        << want[size_t(i)];
      EXPECT_EQ(bad, 0);
    }
  }
}

// The runner's candidates against compute_candidates over the same logits (decode_row_logits),
// through decode-only steps and a mixed step with a prefill chunk; the Sampler decides most
// rows from them and its choices equal the full path's.
TEST(CudaTopk, RunnerCandidatesMatchHost) {
  OST_REQUIRE_GPU();
  TempDir dir;
  TestModelOptions o;
  o.config_dir = test_data() + "/qwen3vl-tiny";
  o.seed = 20261124;
  o.out_dir = dir.path();
  ASSERT_TRUE(write_test_model(o).is_ok());
  auto g = load_cuda_runner(dir.path());
  ASSERT_TRUE(g.is_ok()) << g.message();
  ModelRunner& gpu = **g;
  const int V = gpu.config().text.vocab_size;
  const std::vector<int32_t> excluded = {gpu.config().image_token_id, gpu.config().vision_start_token_id};
  ASSERT_TRUE(gpu.set_excluded_tokens(excluded).is_ok());

  std::vector<std::unique_ptr<SequenceState>> seqs;
  std::vector<SequenceState*> ptrs;
  std::vector<int32_t> prompt;
  for (int q = 0; q < 3; ++q) {
    std::vector<int32_t> ids = {151644, 872, 198};
    for (int i = 0; i < 12 + 5 * q; ++i) ids.push_back(int32_t((977 * (i + 1) + 31 * q) % 150000));
    if (q == 0) prompt = ids;
    auto pos = compute_mrope_positions(ids, {}, gpu.config());
    ASSERT_TRUE(pos.is_ok());
    auto s = gpu.new_sequence(128);
    ASSERT_TRUE(s.is_ok());
    ASSERT_TRUE(gpu.prefill(**s, ids, *pos, nullptr, false).is_ok());
    ptrs.push_back(s->get());
    seqs.push_back(std::move(*s));
  }
  std::vector<SamplingParams> ps(3);
  ps[0].temperature = 0.8f, ps[0].top_k = 40, ps[0].repetition_penalty = 1.2f, ps[0].seed = 3;
  ps[1].temperature = 1.0f, ps[1].top_p = 0.9f, ps[1].presence_penalty = 0.5f, ps[1].frequency_penalty = 0.3f,
  ps[1].seed = 4;
  ps[2].temperature = 0.0f;  // plain greedy: no candidates asked
  std::vector<std::unique_ptr<Sampler>> full, cand;
  for (const auto& p : ps) {
    full.push_back(std::make_unique<Sampler>(p, V));
    cand.push_back(std::make_unique<Sampler>(p, V));
    full.back()->set_prompt(prompt);
    cand.back()->set_prompt(prompt);
  }
  std::vector<int32_t> next = {500, 600, 700};
  int decided = 0, rows = 0;
  for (int step = 0; step < 4; ++step) {
    std::vector<CandidateSpec> specs;
    for (size_t i = 0; i < 3; ++i) specs.push_back(i == 2 ? CandidateSpec() : cand[i]->candidate_spec(i == 1 ? 5 : 0));
    std::vector<PrefillChunk> chunks;
    std::unique_ptr<SequenceState> extra;
    const std::vector<int32_t> chunk_ids = {151644, 872, 198, 1000, 2000, 3000};
    if (step == 2) {  // a mixed step: one prefill chunk next to the decode rows
      auto s = gpu.new_sequence(64);
      ASSERT_TRUE(s.is_ok());
      extra = std::move(*s);
      auto pos = compute_mrope_positions(chunk_ids, {}, gpu.config());
      ASSERT_TRUE(pos.is_ok());
      PrefillChunk c;
      c.seq = extra.get();
      c.ids = chunk_ids;
      c.pos = *pos;
      c.logits = true;
      chunks.push_back(std::move(c));
    }
    auto out = gpu.mixed_step_candidates(chunks, ptrs, next, specs);
    ASSERT_TRUE(out.is_ok()) << out.message();
    ASSERT_EQ(out->decode_tokens.size(), 3u);
    ASSERT_EQ(out->decode_candidates.size(), 3u);
    EXPECT_TRUE(out->decode_logits.empty());
    for (size_t i = 0; i < 3; ++i) {
      auto l = gpu.decode_row_logits(int(i));
      ASSERT_TRUE(l.is_ok()) << l.message();
      // The greedy choice of every row, the excluded ids skipped.
      std::vector<float> masked = *l;
      for (int32_t e : excluded) masked[size_t(e)] = -INFINITY;
      const int32_t best = int32_t(std::max_element(masked.begin(), masked.end()) - masked.begin());
      EXPECT_EQ(out->decode_tokens[i].id, best);
      if (i == 2) {
        EXPECT_TRUE(out->decode_candidates[i].top.empty());
        next[i] = best;
        continue;
      }
      const RowCandidates& c = out->decode_candidates[i];
      CandidateSpec with_sum = specs[i];  // the device always gives the transformed sum
      with_sum.sum = true;
      const RowCandidates want = compute_candidates(l->data(), V, with_sum, excluded);
      ASSERT_EQ(c.top.size(), want.top.size());
      for (size_t j = 0; j < c.top.size(); ++j) {
        ASSERT_EQ(c.top[j].id, want.top[j].id) << step << "/" << i << " entry " << j;
        EXPECT_TRUE(same_bits(c.top[j].value, want.top[j].value));
        EXPECT_TRUE(same_bits(c.top[j].raw, want.top[j].raw));
      }
      ASSERT_EQ(c.raw_top.size(), want.raw_top.size());
      for (size_t j = 0; j < c.raw_top.size(); ++j) {
        EXPECT_EQ(c.raw_top[j].id, want.raw_top[j].id);
        EXPECT_TRUE(same_bits(c.raw_top[j].value, want.raw_top[j].value));
      }
      EXPECT_TRUE(same_bits(c.max, want.max));
      EXPECT_TRUE(same_bits(c.raw_max, want.raw_max));
      EXPECT_LE(std::fabs(c.sum - want.sum), kSumTol * want.sum);
      EXPECT_LE(std::fabs(c.raw_sum - want.raw_sum), kSumTol * want.raw_sum);
      EXPECT_FALSE(c.has_nan);
      EXPECT_GT(c.rel_error, 0.0);
      // The Sampler: from the candidates when they decide, the same token as the full path.
      const int32_t want_id = full[i]->sample(masked.data());
      std::optional<int32_t> got = cand[i]->sample(c);
      ++rows;
      if (got) ++decided;
      else got = cand[i]->sample(masked.data());
      EXPECT_EQ(*got, want_id) << step << "/" << i;
      full[i]->accept(want_id);
      cand[i]->accept(*got);
      next[i] = want_id;
    }
    if (step == 2) {
      ASSERT_EQ(out->chunk_logits.size(), 1u);
      EXPECT_EQ(out->chunk_logits[0].size(), size_t(V));
    }
  }
  EXPECT_GT(decided, 0) << "of " << rows;
  ASSERT_TRUE(gpu.set_excluded_tokens({}).is_ok());
}

}  // namespace
}  // namespace ost::testing
