// The attention kernels of attention.h against ops::attention (fp32 CPU) on random bf16 inputs,
// NaN-poisoned outputs: flash attention over dense segments (vision: head sizes 16, 72, 128,
// the 4- and 8-warp shapes), flash attention over the paged cache (causal prefill, from an empty
// cache and continuing one), and split-K decode over sequences of very different lengths with
// several split counts.
#include "backend/cuda/attention.h"

#include <algorithm>
#include <array>
#include <numeric>

#include "backend/cuda/kernels.h"
#include "backend/cuda/vision_attention.h"
#include "backend/ops.h"
#include "cuda_test_util.h"

namespace ost::testing {
namespace {

using namespace ost::cuda;
constexpr double kTol = 1e-2;  // P is rounded to bf16 before P·V; outputs are bf16

// Dense: segments of the given lengths, q/k/v interleaved per row as the vision qkv buffer.
// kernel: -1 launch_flash_attention (default routing), else launch_vision_attention with that
// many warps per block (0: its own choice).
void check_dense(int heads, int hd, const std::vector<int>& lens, uint32_t seed, int kernel = -1) {
  const int H = heads * hd, stride = 3 * H;
  std::vector<int32_t> cu = {0};
  for (int l : lens) cu.push_back(cu.back() + l);
  const int n = cu.back();
  auto qkv = randn_bf16(size_t(n) * stride, seed);
  auto d = to_dev(qkv);
  auto dcu = to_dev_raw(cu);
  auto dout = poisoned(size_t(n) * H);
  FlashAttentionParams p;
  p.q = d->p, p.k = d->p + H, p.v = d->p + 2 * H, p.out = dout->p;
  p.n_heads = p.n_kv = heads, p.head_dim = hd;
  p.q_stride = p.kv_stride = stride, p.out_stride = H;
  p.cu_seqlens = dcu->p, p.cu_seqlens_host = cu.data(), p.n_segments = int(lens.size());
  p.scale = 1.0f / std::sqrt(float(hd));
  if (kernel < 0) ASSERT_TRUE(launch_flash_attention(p, 0).is_ok());
  else ASSERT_TRUE(launch_vision_attention(p, 0, kernel).is_ok());
  ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  std::vector<float> ref(size_t(n) * H);
  for (size_t s = 0; s < lens.size(); ++s) {
    ops::AttentionParams a;
    a.n_q = a.n_kv = lens[s];
    a.n_heads = a.n_kv_heads = heads, a.head_dim = hd;
    a.q_stride = a.kv_stride = stride, a.out_stride = H, a.scale = p.scale;
    const float* base = qkv.data() + int64_t(cu[s]) * stride;
    ops::attention(a, base, base + H, base + 2 * H, ref.data() + int64_t(cu[s]) * H);
  }
  const double e = rel_l2(from_dev(dout->p, ref.size()), ref);
  std::printf("flash dense (kernel %d) heads %d hd %d, %zu segments, %d rows: rel L2 %.3g\n", kernel, heads, hd,
              lens.size(), n, e);
  EXPECT_LE(e, kTol) << heads << "/" << hd;
}

TEST(CudaAttention, FlashDenseSegments) {
  OST_REQUIRE_GPU();
  check_dense(4, 16, {64, 36}, 1);
  check_dense(16, 72, {1, 200, 64, 129}, 2);
  check_dense(2, 128, {100, 70}, 3);
  check_dense(16, 72, {2000, 300, 37}, 4);  // enough tiles for the 8-warp shape
}

// The 32-rows-per-warp vision kernel in both block shapes: segments shorter than a key tile,
// odd lengths, a length one past a tile, many segments, one long frame.
TEST(CudaAttention, VisionDenseBothShapes) {
  OST_REQUIRE_GPU();
  uint32_t seed = 10;
  for (int warps : {2, 4}) {
    check_dense(16, 72, {1, 200, 64, 129}, seed++, warps);
    check_dense(16, 72, {65, 3, 127, 128, 31}, seed++, warps);
    check_dense(3, 72, {777}, seed++, warps);
    check_dense(4, 64, {64, 36, 300}, seed++, warps);
    check_dense(16, 72, {1024, 1024}, seed++, warps);
  }
  check_dense(8, 72, {2400}, seed++, 0);
  // GQA addressing: 8 query heads over 2 kv heads.
  const int heads = 8, kv = 2, hd = 72, n = 333;
  const int qw = heads * hd, kw = kv * hd, stride = qw + 2 * kw;
  std::vector<int32_t> cu = {0, 100, n};
  auto qkv = randn_bf16(size_t(n) * stride, seed++);
  auto d = to_dev(qkv);
  auto dcu = to_dev_raw(cu);
  for (int warps : {2, 4}) {
    auto dout = poisoned(size_t(n) * qw);
    FlashAttentionParams p;
    p.q = d->p, p.k = d->p + qw, p.v = d->p + qw + kw, p.out = dout->p;
    p.n_heads = heads, p.n_kv = kv, p.head_dim = hd;
    p.q_stride = p.kv_stride = stride, p.out_stride = qw;
    p.cu_seqlens = dcu->p, p.cu_seqlens_host = cu.data(), p.n_segments = 2;
    p.scale = 1.0f / std::sqrt(float(hd));
    ASSERT_TRUE(launch_vision_attention(p, 0, warps).is_ok());
    std::vector<float> ref(size_t(n) * qw);
    for (int sgm = 0; sgm < 2; ++sgm) {
      ops::AttentionParams a;
      a.n_q = a.n_kv = cu[sgm + 1] - cu[sgm];
      a.n_heads = heads, a.n_kv_heads = kv, a.head_dim = hd;
      a.q_stride = a.kv_stride = stride, a.out_stride = qw, a.scale = p.scale;
      const float* base = qkv.data() + int64_t(cu[sgm]) * stride;
      ops::attention(a, base, base + qw, base + qw + kw, ref.data() + int64_t(cu[sgm]) * qw);
    }
    const double e = rel_l2(from_dev(dout->p, ref.size()), ref);
    std::printf("vision attention GQA %d/%d, %d warps: rel L2 %.3g\n", heads, kv, warps, e);
    EXPECT_LE(e, kTol);
  }
  FlashAttentionParams bad;
  bad.n_heads = bad.n_kv = 1, bad.head_dim = 128;
  std::vector<int32_t> one = {0, 1};
  bad.cu_seqlens = dcu->p, bad.cu_seqlens_host = one.data(), bad.n_segments = 1;
  EXPECT_FALSE(launch_vision_attention(bad, 0).is_ok());
  EXPECT_FALSE(vision_attention_supports(128));
}

// A paged cache of `blocks` shuffled blocks; sequence 0 holds `len` tokens.
struct PagedCache {
  int bs = 16, kv = 0, hd = 0;
  std::vector<int32_t> table;
  std::vector<float> k, v;  // [slots, kv, hd]
  PagedCache(int kv_heads, int head_dim, int n_seqs, int width, uint32_t seed) : kv(kv_heads), hd(head_dim) {
    const int blocks = n_seqs * width;
    std::vector<int32_t> perm(static_cast<size_t>(blocks));
    std::iota(perm.begin(), perm.end(), 0);
    std::mt19937 rng(seed);
    std::shuffle(perm.begin(), perm.end(), rng);
    table = perm;
    k = randn_bf16(size_t(blocks) * bs * kv * hd, seed + 1);
    v = randn_bf16(size_t(blocks) * bs * kv * hd, seed + 2);
  }
  // The first len cache rows of sequence seq, contiguous: f32 [len, kv, hd].
  void gather(int seq, int width, int len, std::vector<float>& ko, std::vector<float>& vo) const {
    const int row = kv * hd;
    ko.resize(size_t(len) * row);
    vo.resize(size_t(len) * row);
    for (int j = 0; j < len; ++j) {
      const int64_t slot = int64_t(table[size_t(seq * width + j / bs)]) * bs + j % bs;
      std::copy_n(k.begin() + slot * row, row, ko.begin() + int64_t(j) * row);
      std::copy_n(v.begin() + slot * row, row, vo.begin() + int64_t(j) * row);
    }
  }
};

TEST(CudaAttention, FlashPagedCausalPrefill) {
  OST_REQUIRE_GPU();
  struct S {
    int heads, kv, hd, past, n;
  };
  for (S s : {S{4, 2, 32, 0, 45}, S{32, 8, 128, 0, 296}, S{32, 8, 128, 200, 131}, S{4, 2, 32, 17, 64}}) {
    const int width = (s.past + s.n + 15) / 16 + 1;
    PagedCache c(s.kv, s.hd, 1, width, 10 + s.n);
    const int Q = s.heads * s.hd;
    auto q = randn_bf16(size_t(s.n) * Q, 20 + s.n);
    auto dq = to_dev(q), dk = to_dev(c.k), dv = to_dev(c.v);
    auto dt = to_dev_raw(c.table);
    auto dout = poisoned(size_t(s.n) * Q);
    FlashAttentionParams p;
    p.q = dq->p, p.k = dk->p, p.v = dv->p, p.out = dout->p;
    p.n_heads = s.heads, p.n_kv = s.kv, p.head_dim = s.hd, p.q_stride = p.out_stride = Q;
    p.block_table = dt->p, p.block_size = c.bs, p.n = s.n, p.past = s.past;
    p.scale = 1.0f / std::sqrt(float(s.hd));
    ASSERT_TRUE(launch_flash_attention(p, 0).is_ok());
    std::vector<float> k, v, ref(size_t(s.n) * Q);
    c.gather(0, width, s.past + s.n, k, v);
    ops::AttentionParams a;
    a.n_q = s.n, a.n_kv = s.past + s.n;
    a.n_heads = s.heads, a.n_kv_heads = s.kv, a.head_dim = s.hd;
    a.q_stride = a.out_stride = Q, a.kv_stride = s.kv * s.hd;
    a.causal = true, a.q_pos0 = s.past, a.scale = p.scale;
    ops::attention(a, q.data(), k.data(), v.data(), ref.data());
    const double e = rel_l2(from_dev(dout->p, ref.size()), ref);
    std::printf("flash paged %d/%d hd %d past %d n %d: rel L2 %.3g\n", s.heads, s.kv, s.hd, s.past, s.n, e);
    EXPECT_LE(e, kTol);
  }
}

TEST(CudaAttention, SplitDecode) {
  OST_REQUIRE_GPU();
  struct S {
    int heads, kv, hd;
  };
  for (S s : {S{32, 8, 128}, S{4, 2, 32}, S{16, 16, 64}}) {
    const std::vector<int> lens = {1, 17, 300, 2000, 64};
    const int B = int(lens.size()), width = 2000 / 16 + 2;
    PagedCache c(s.kv, s.hd, B, width, 30 + s.hd);
    const int Q = s.heads * s.hd;
    auto q = randn_bf16(size_t(B) * Q, 40 + s.hd);
    std::vector<int32_t> row_len(lens.begin(), lens.end()), row_seq(static_cast<size_t>(B));
    std::iota(row_seq.begin(), row_seq.end(), 0);
    std::reverse(row_seq.begin(), row_seq.end());  // row b reads sequence B-1-b
    auto dq = to_dev(q), dk = to_dev(c.k), dv = to_dev(c.v);
    auto dt = to_dev_raw(c.table), dl = to_dev_raw(row_len), ds = to_dev_raw(row_seq);
    std::vector<float> ref(size_t(B) * Q);
    for (int b = 0; b < B; ++b) {
      std::vector<float> k, v;
      c.gather(row_seq[size_t(b)], width, lens[size_t(b)], k, v);
      ops::AttentionParams a;
      a.n_q = 1, a.n_kv = lens[size_t(b)];
      a.n_heads = s.heads, a.n_kv_heads = s.kv, a.head_dim = s.hd;
      a.q_stride = a.out_stride = Q, a.kv_stride = s.kv * s.hd;
      a.causal = true, a.q_pos0 = lens[size_t(b)] - 1, a.scale = 1.0f / std::sqrt(float(s.hd));
      ops::attention(a, q.data() + int64_t(b) * Q, k.data(), v.data(), ref.data() + int64_t(b) * Q);
    }
    for (int splits : {1, 5, decode_attention_splits(B, s.kv, 132), kMaxDecodeSplits}) {
      DevBuf<float> part(decode_attention_partial_floats(B, s.heads, s.hd, splits));
      DevBuf<int> counters(static_cast<size_t>(B * s.kv));
      ASSERT_EQ(cudaMemset(counters.p, 0, counters.n * sizeof(int)), cudaSuccess);
      auto dout = poisoned(size_t(B) * Q);
      DecodeAttentionParams p;
      p.q = dq->p, p.k = dk->p, p.v = dv->p, p.out = dout->p, p.n = B;
      p.n_heads = s.heads, p.n_kv = s.kv, p.head_dim = s.hd, p.q_stride = p.out_stride = Q;
      p.row_len = dl->p, p.row_seq = ds->p, p.block_table = dt->p, p.table_width = width, p.block_size = c.bs;
      p.scale = 1.0f / std::sqrt(float(s.hd)), p.partial = part.p, p.counters = counters.p;
      p.splits = splits;
      for (int rep = 0; rep < 2; ++rep) ASSERT_TRUE(launch_decode_attention(p, 0).is_ok());  // counters reset
      const double e = rel_l2(from_dev(dout->p, ref.size()), ref);
      std::printf("split decode %d/%d hd %d, %d splits: rel L2 %.3g\n", s.heads, s.kv, s.hd, splits, e);
      EXPECT_LE(e, kTol) << splits;
    }
  }
}

// Fused decode input: q/k norm + rope and the cache write inside the attention kernel against
// launch_qk_norm_rope followed by the unfused kernel, on the same random projection rows.
TEST(CudaAttention, SplitDecodeFusedQkNormRope) {
  OST_REQUIRE_GPU();
  struct S {
    int heads, kv, hd;
    std::array<int, 3> sec;
  };
  for (S s : {S{32, 8, 128, {24, 20, 20}}, S{4, 2, 32, {6, 5, 5}}}) {
    const std::vector<int> lens = {1, 40, 300, 1000};
    const int B = int(lens.size()), width = 1000 / 16 + 2;
    PagedCache c(s.kv, s.hd, B, width, 50 + s.hd);
    const int row = (s.heads + 2 * s.kv) * s.hd, Q = s.heads * s.hd;
    auto qkv = randn_bf16(size_t(B) * row, 60 + s.hd), qn = randn_bf16(size_t(s.hd), 61),
         kn = randn_bf16(size_t(s.hd), 62);
    std::vector<int32_t> row_len(lens.begin(), lens.end()), row_seq(static_cast<size_t>(B)),
        slot(static_cast<size_t>(B));
    std::vector<int32_t> pos(static_cast<size_t>(3 * B));
    std::mt19937 rng(63);
    for (auto& v : pos) v = int32_t(rng() % 5000);
    for (int b = 0; b < B; ++b) {
      row_seq[size_t(b)] = b;
      const int j = lens[size_t(b)] - 1;
      slot[size_t(b)] = c.table[size_t(b * width + j / c.bs)] * c.bs + j % c.bs;
    }
    std::vector<float> inv(static_cast<size_t>(s.hd / 2));
    std::vector<int32_t> axis(static_cast<size_t>(s.hd / 2));
    for (int k = 0; k < s.hd / 2; ++k) {
      inv[size_t(k)] = 1.0f / std::pow(5e6f, float(2 * k) / float(s.hd));
      axis[size_t(k)] = (k % 3 == 1 && k < 3 * s.sec[1]) ? 1 : (k % 3 == 2 && k < 3 * s.sec[2]) ? 2 : 0;
    }
    auto dqkv = to_dev(qkv), dqn = to_dev(qn), dkn = to_dev(kn);
    auto dlen = to_dev_raw(row_len), dseq = to_dev_raw(row_seq), dslot = to_dev_raw(slot),
         dpos = to_dev_raw(pos);
    auto dinv = to_dev_raw(inv);
    auto dax = to_dev_raw(axis), dt = to_dev_raw(c.table);
    const int splits = decode_attention_splits(B, s.kv, 132);
    DevBuf<float> part(decode_attention_partial_floats(B, s.heads, s.hd, splits));
    DevBuf<int> counters(static_cast<size_t>(B * s.kv));
    ASSERT_EQ(cudaMemset(counters.p, 0, counters.n * sizeof(int)), cudaSuccess);
    std::vector<float> out[2], kc[2], vc[2];
    for (int fused = 0; fused < 2; ++fused) {
      auto dk = to_dev(c.k), dv = to_dev(c.v);
      auto dq = poisoned(size_t(B) * Q), dout = poisoned(size_t(B) * Q);
      DecodeAttentionParams p;
      p.q = dq->p, p.k = dk->p, p.v = dv->p, p.out = dout->p, p.n = B;
      p.n_heads = s.heads, p.n_kv = s.kv, p.head_dim = s.hd, p.q_stride = p.out_stride = Q;
      p.row_len = dlen->p, p.row_seq = dseq->p, p.block_table = dt->p, p.table_width = width,
      p.block_size = c.bs;
      p.scale = 1.0f / std::sqrt(float(s.hd)), p.partial = part.p, p.counters = counters.p, p.splits = splits;
      if (fused) {
        p.qkv = dqkv->p, p.q_norm = dqn->p, p.k_norm = dkn->p, p.pos = dpos->p, p.pos_stride = B;
        p.inv_freq = dinv->p, p.axis = dax->p, p.slot = dslot->p, p.k_store = dk->p, p.v_store = dv->p;
      } else {
        QkNormRopeParams qp;
        qp.qkv = dqkv->p, qp.q_norm = dqn->p, qp.k_norm = dkn->p, qp.pos = dpos->p, qp.inv_freq = dinv->p;
        qp.axis = dax->p, qp.slot = dslot->p, qp.q_out = dq->p, qp.k_cache = dk->p, qp.v_cache = dv->p;
        qp.n = B, qp.n_heads = s.heads, qp.n_kv = s.kv, qp.head_dim = s.hd;
        ASSERT_TRUE(launch_qk_norm_rope(qp, 0).is_ok());
      }
      ASSERT_TRUE(launch_decode_attention(p, 0).is_ok());
      out[fused] = from_dev(dout->p, size_t(B) * Q);
      kc[fused] = from_dev(dk->p, c.k.size());
      vc[fused] = from_dev(dv->p, c.v.size());
    }
    const double eo = rel_l2(out[1], out[0]), ek = rel_l2(kc[1], kc[0]), ev = rel_l2(vc[1], vc[0]);
    std::printf("fused decode %d/%d hd %d: out rel L2 %.3g, k cache %.3g, v cache %.3g\n", s.heads, s.kv,
                s.hd, eo, ek, ev);
    EXPECT_LE(eo, 2e-3);
    EXPECT_LE(ek, 1e-3);
    EXPECT_EQ(ev, 0.0);
  }
}

}  // namespace
}  // namespace ost::testing
