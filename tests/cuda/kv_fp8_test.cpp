// The fp8 KV cache kernels against the CPU rule (quant::quantize_kv_fp8) and ops::attention:
//   - the KV write kernel (launch_qk_norm_rope with k_cache8): codes bit-exact and scales exact
//     against quantize_kv_fp8 of the bf16 values the bf16 cache gets from the same kernel, the q
//     output unchanged, the slots not written left alone;
//   - split-K decode attention and causal flash attention over a paged fp8 cache (codes +
//     scales of random vectors of very different magnitudes) against ops::attention on the
//     dequantized f32 cache: several context lengths (1, 17, 300, ...), GQA, NaN-poisoned
//     outputs.
#include <algorithm>
#include <array>
#include <cstring>
#include <numeric>

#include "backend/cuda/attention.h"
#include "backend/cuda/kernels.h"
#include "backend/ops.h"
#include "cuda_test_util.h"
#include "quant/quant.h"

namespace ost::testing {
namespace {

using namespace ost::cuda;
constexpr double kTol = 1e-2;  // as the bf16 attention tests: P and the keys/values are bf16 in the mma

TEST(CudaKvFp8, WriteKernelCodesExact) {
  OST_REQUIRE_GPU();
  struct S {
    int n, heads, kv, hd;
    std::array<int, 3> sec;
  };
  for (S s : {S{5, 4, 2, 32, {6, 5, 5}}, S{37, 32, 8, 128, {24, 20, 20}}, S{1, 16, 16, 64, {12, 10, 10}},
              S{19, 8, 2, 256, {48, 40, 40}}}) {
    const int row = (s.heads + 2 * s.kv) * s.hd, Q = s.heads * s.hd, KV = s.kv * s.hd;
    auto qkv = randn_bf16(size_t(s.n) * row, 70 + s.hd, 3.0f), qn = randn_bf16(size_t(s.hd), 71),
         kn = randn_bf16(size_t(s.hd), 72);
    // Heads of very different magnitudes, so the scales differ.
    for (int i = 0; i < s.n; ++i)
      for (int h = 0; h < s.heads + 2 * s.kv; ++h)
        for (int d = 0; d < s.hd; ++d) qkv[size_t(i * row + h * s.hd + d)] *= std::ldexp(1.0f, (i + h) % 9 - 4);
    std::mt19937 rng(73);
    std::vector<int32_t> pos(size_t(3 * s.n));
    for (auto& v : pos) v = int32_t(rng() % 3000);
    const int slots = 2 * s.n + 3;
    std::vector<int32_t> slot(static_cast<size_t>(slots));
    std::iota(slot.begin(), slot.end(), 0);
    std::shuffle(slot.begin(), slot.end(), rng);
    slot.resize(size_t(s.n));
    std::vector<float> inv(size_t(s.hd / 2));
    std::vector<int32_t> axis(size_t(s.hd / 2));
    for (int k = 0; k < s.hd / 2; ++k) {
      inv[size_t(k)] = 1.0f / std::pow(5e6f, float(2 * k) / float(s.hd));
      axis[size_t(k)] = (k % 3 == 1 && k < 3 * s.sec[1]) ? 1 : (k % 3 == 2 && k < 3 * s.sec[2]) ? 2 : 0;
    }
    auto dqkv = to_dev(qkv), dqn = to_dev(qn), dkn = to_dev(kn);
    auto dpos = to_dev_raw(pos), dslot = to_dev_raw(slot), dax = to_dev_raw(axis);
    auto dinv = to_dev_raw(inv);
    QkNormRopeParams p;
    p.qkv = dqkv->p, p.q_norm = dqn->p, p.k_norm = dkn->p, p.pos = dpos->p, p.inv_freq = dinv->p;
    p.axis = dax->p, p.slot = dslot->p, p.n = s.n, p.n_heads = s.heads, p.n_kv = s.kv, p.head_dim = s.hd;

    // bf16 cache: the values the fp8 cache quantizes.
    auto dq16 = poisoned(size_t(s.n) * Q), dk = poisoned(size_t(slots) * KV), dv = poisoned(size_t(slots) * KV);
    p.q_out = dq16->p, p.k_cache = dk->p, p.v_cache = dv->p;
    ASSERT_TRUE(launch_qk_norm_rope(p, 0).is_ok());
    const auto q16 = from_dev(dq16->p, size_t(s.n) * Q);
    const auto kc = from_dev(dk->p, size_t(slots) * KV), vc = from_dev(dv->p, size_t(slots) * KV);

    // fp8 cache: codes poisoned with 0xff (an e4m3 NaN), scales with NaN.
    auto dq8 = poisoned(size_t(s.n) * Q);
    DevBuf<uint8_t> k8(size_t(slots) * KV), v8(size_t(slots) * KV);
    DevBuf<float> ks(size_t(slots) * s.kv), vs(size_t(slots) * s.kv);
    for (void* b : {(void*)k8.p, (void*)v8.p}) ASSERT_EQ(cudaMemset(b, 0xff, size_t(slots) * KV), cudaSuccess);
    for (void* b : {(void*)ks.p, (void*)vs.p}) ASSERT_EQ(cudaMemset(b, 0xff, size_t(slots) * s.kv * 4), cudaSuccess);
    p.q_out = dq8->p, p.k_cache = nullptr, p.v_cache = nullptr;
    p.k_cache8 = k8.p, p.v_cache8 = v8.p, p.k_scale = ks.p, p.v_scale = vs.p;
    ASSERT_TRUE(launch_qk_norm_rope(p, 0).is_ok());
    ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
    EXPECT_EQ(from_dev(dq8->p, q16.size()), q16);  // q is not affected
    std::vector<uint8_t> hk8(size_t(slots) * KV), hv8(hk8.size());
    std::vector<float> hks(size_t(slots) * s.kv), hvs(hks.size());
    ASSERT_EQ(cudaMemcpy(hk8.data(), k8.p, hk8.size(), cudaMemcpyDeviceToHost), cudaSuccess);
    ASSERT_EQ(cudaMemcpy(hv8.data(), v8.p, hv8.size(), cudaMemcpyDeviceToHost), cudaSuccess);
    ASSERT_EQ(cudaMemcpy(hks.data(), ks.p, hks.size() * 4, cudaMemcpyDeviceToHost), cudaSuccess);
    ASSERT_EQ(cudaMemcpy(hvs.data(), vs.p, hvs.size() * 4, cudaMemcpyDeviceToHost), cudaSuccess);

    std::vector<bool> written(size_t(slots), false);
    int64_t code_mismatch = 0, scale_mismatch = 0;
    std::vector<uint8_t> q(static_cast<size_t>(KV));
    std::vector<float> sc(size_t(s.kv));
    for (int i = 0; i < s.n; ++i) {
      const int64_t sl = slot[size_t(i)];
      written[size_t(sl)] = true;
      for (int which = 0; which < 2; ++which) {
        const std::vector<float>& src = which ? vc : kc;
        quant::quantize_kv_fp8(src.data() + sl * KV, s.kv, s.hd, q.data(), sc.data());
        const uint8_t* got = (which ? hv8 : hk8).data() + sl * KV;
        const float* gs = (which ? hvs : hks).data() + sl * s.kv;
        for (int c = 0; c < KV; ++c) code_mismatch += got[c] != q[size_t(c)];
        for (int h = 0; h < s.kv; ++h) scale_mismatch += std::memcmp(&gs[h], &sc[size_t(h)], 4) != 0;
      }
    }
    int64_t touched = 0;  // slots not written keep their poison
    for (int sl = 0; sl < slots; ++sl) {
      if (written[size_t(sl)]) continue;
      for (int c = 0; c < KV; ++c) touched += hk8[size_t(sl * KV + c)] != 0xff || hv8[size_t(sl * KV + c)] != 0xff;
      for (int h = 0; h < s.kv; ++h) touched += !std::isnan(hks[size_t(sl * s.kv + h)]) || !std::isnan(hvs[size_t(sl * s.kv + h)]);
    }
    std::printf("fp8 KV write n %d, %d/%d hd %d: %lld code and %lld scale mismatches, %lld stray writes\n", s.n,
                s.heads, s.kv, s.hd, (long long)code_mismatch, (long long)scale_mismatch, (long long)touched);
    EXPECT_EQ(code_mismatch, 0);
    EXPECT_EQ(scale_mismatch, 0);
    EXPECT_EQ(touched, 0);
  }
}

// A paged fp8 cache of `blocks` shuffled blocks: random vectors (magnitudes 2^-4 .. 2^4),
// quantized on the host; deq holds what attention must read.
struct PagedCache8 {
  int bs = 16, kv = 0, hd = 0;
  std::vector<int32_t> table;
  std::vector<uint8_t> k8, v8;  // [slots, kv, hd]
  std::vector<float> ks, vs;    // [slots, kv]
  std::vector<float> kd, vd;    // dequantized, f32 [slots, kv, hd]
  PagedCache8(int kv_heads, int head_dim, int n_seqs, int width, uint32_t seed) : kv(kv_heads), hd(head_dim) {
    const int blocks = n_seqs * width;
    table.resize(size_t(blocks));
    std::iota(table.begin(), table.end(), 0);
    std::mt19937 rng(seed);
    std::shuffle(table.begin(), table.end(), rng);
    const int64_t vecs = int64_t(blocks) * bs * kv;
    for (int which = 0; which < 2; ++which) {
      auto x = randn_bf16(size_t(vecs * hd), seed + 1 + which);
      for (int64_t r = 0; r < vecs; ++r)
        for (int c = 0; c < hd; ++c) x[size_t(r * hd + c)] *= std::ldexp(1.0f, int(r % 9) - 4);
      auto& q = which ? v8 : k8;
      auto& s = which ? vs : ks;
      auto& d = which ? vd : kd;
      q.resize(x.size());
      s.resize(size_t(vecs));
      d.resize(x.size());
      quant::quantize_kv_fp8(x.data(), vecs, hd, q.data(), s.data());
      quant::dequantize_kv_fp8(q.data(), s.data(), vecs, hd, d.data());
    }
  }
  // The first len dequantized rows of sequence seq, contiguous: f32 [len, kv, hd].
  void gather(int seq, int width, int len, std::vector<float>& ko, std::vector<float>& vo) const {
    const int row = kv * hd;
    ko.resize(size_t(len) * row);
    vo.resize(size_t(len) * row);
    for (int j = 0; j < len; ++j) {
      const int64_t slot = int64_t(table[size_t(seq * width + j / bs)]) * bs + j % bs;
      std::copy_n(kd.begin() + slot * row, row, ko.begin() + int64_t(j) * row);
      std::copy_n(vd.begin() + slot * row, row, vo.begin() + int64_t(j) * row);
    }
  }
};

struct DevCache8 {
  std::unique_ptr<DevBuf<uint8_t>> k8, v8;
  std::unique_ptr<DevBuf<float>> ks, vs;
  explicit DevCache8(const PagedCache8& c)
      : k8(to_dev_raw(c.k8)), v8(to_dev_raw(c.v8)), ks(to_dev_raw(c.ks)), vs(to_dev_raw(c.vs)) {}
  template <class P>
  void set(P& p) const {
    p.k = nullptr, p.v = nullptr;
    p.k8 = k8->p, p.v8 = v8->p, p.k_scale = ks->p, p.v_scale = vs->p;
  }
};

TEST(CudaKvFp8, SplitDecode) {
  OST_REQUIRE_GPU();
  struct S {
    int heads, kv, hd;
  };
  for (S s : {S{32, 8, 128}, S{4, 2, 32}, S{16, 16, 64}, S{16, 2, 256}}) {
    const std::vector<int> lens = {1, 17, 300, 2000, 64};
    const int B = int(lens.size()), width = 2000 / 16 + 2;
    PagedCache8 c(s.kv, s.hd, B, width, 80 + s.hd);
    DevCache8 dc(c);
    const int Q = s.heads * s.hd;
    auto q = randn_bf16(size_t(B) * Q, 90 + s.hd);
    std::vector<int32_t> row_len(lens.begin(), lens.end()), row_seq(static_cast<size_t>(B));
    std::iota(row_seq.begin(), row_seq.end(), 0);
    std::reverse(row_seq.begin(), row_seq.end());
    auto dq = to_dev(q);
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
      DevBuf<int> counters(size_t(B * s.kv));
      ASSERT_EQ(cudaMemset(counters.p, 0, counters.n * sizeof(int)), cudaSuccess);
      auto dout = poisoned(size_t(B) * Q);
      DecodeAttentionParams p;
      p.q = dq->p, p.out = dout->p, p.n = B;
      dc.set(p);
      p.n_heads = s.heads, p.n_kv = s.kv, p.head_dim = s.hd, p.q_stride = p.out_stride = Q;
      p.row_len = dl->p, p.row_seq = ds->p, p.block_table = dt->p, p.table_width = width, p.block_size = c.bs;
      p.scale = 1.0f / std::sqrt(float(s.hd)), p.partial = part.p, p.counters = counters.p;
      p.splits = splits;
      for (int rep = 0; rep < 2; ++rep) ASSERT_TRUE(launch_decode_attention(p, 0).is_ok());
      const auto out = from_dev(dout->p, ref.size());
      double worst = 0;  // per row: short rows must be right too
      for (int b = 0; b < B; ++b) {
        const std::vector<float> o(out.begin() + int64_t(b) * Q, out.begin() + int64_t(b + 1) * Q);
        const std::vector<float> r(ref.begin() + int64_t(b) * Q, ref.begin() + int64_t(b + 1) * Q);
        worst = std::max(worst, rel_l2(o, r));
      }
      std::printf("fp8 split decode %d/%d hd %d, %d splits: worst row rel L2 %.3g\n", s.heads, s.kv, s.hd, splits,
                  worst);
      EXPECT_LE(worst, kTol) << splits;
    }
  }
  // The fused input writes a bf16 cache: refused with an fp8 one.
  DecodeAttentionParams bad;
  bad.n = 1, bad.n_heads = 4, bad.n_kv = 2, bad.head_dim = 32, bad.splits = 1;
  int dummy = 0;
  bad.partial = reinterpret_cast<float*>(&dummy), bad.counters = &dummy, bad.block_table = &dummy;
  uint8_t b8 = 0;
  float bs = 1.0f;
  bad.k8 = &b8, bad.v8 = &b8, bad.k_scale = &bs, bad.v_scale = &bs;
  bad.qkv = reinterpret_cast<const bf16*>(&dummy);
  bad.q_norm = bad.k_norm = reinterpret_cast<const bf16*>(&dummy);
  bad.pos = bad.axis = bad.slot = &dummy;
  bad.inv_freq = &bs;
  bad.k_store = bad.v_store = reinterpret_cast<bf16*>(&dummy);
  EXPECT_FALSE(launch_decode_attention(bad, 0).is_ok());
}

TEST(CudaKvFp8, FlashPagedCausalPrefill) {
  OST_REQUIRE_GPU();
  struct S {
    int heads, kv, hd, past, n;
  };
  for (S s : {S{4, 2, 32, 0, 1}, S{4, 2, 32, 0, 17}, S{32, 8, 128, 0, 300}, S{32, 8, 128, 200, 131},
              S{4, 2, 32, 17, 64}, S{16, 16, 64, 5, 1}, S{32, 8, 128, 299, 1}}) {
    const int width = (s.past + s.n + 15) / 16 + 1;
    PagedCache8 c(s.kv, s.hd, 1, width, 100 + s.n + s.past);
    DevCache8 dc(c);
    const int Q = s.heads * s.hd;
    auto q = randn_bf16(size_t(s.n) * Q, 110 + s.n);
    auto dq = to_dev(q);
    auto dt = to_dev_raw(c.table);
    auto dout = poisoned(size_t(s.n) * Q);
    FlashAttentionParams p;
    p.q = dq->p, p.out = dout->p;
    dc.set(p);
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
    std::printf("fp8 flash paged %d/%d hd %d past %d n %d: rel L2 %.3g\n", s.heads, s.kv, s.hd, s.past, s.n, e);
    EXPECT_LE(e, kTol);
  }
  // An fp8 cache is only read through the paged layout.
  FlashAttentionParams bad;
  bad.n_heads = bad.n_kv = 1, bad.head_dim = 32;
  uint8_t b8 = 0;
  bad.k8 = &b8;
  std::vector<int32_t> one = {0, 1};
  bad.cu_seqlens = one.data(), bad.cu_seqlens_host = one.data(), bad.n_segments = 1;
  EXPECT_FALSE(launch_flash_attention(bad, 0).is_ok());
}

}  // namespace
}  // namespace ost::testing
