// Each CUDA op against its CPU op (backend/ops.h) on random bf16 inputs of several shapes, with
// NaN-poisoned outputs so that an unwritten element fails the check.
#include <algorithm>
#include <numeric>

#include "backend/cuda/gemm.h"
#include "backend/cuda/kernels.h"
#include "backend/cuda/vision_rope.h"
#include "backend/ops.h"
#include "cuda_test_util.h"
#include "model/graph.h"

namespace ost::testing {
namespace {

using namespace ost::cuda;
constexpr double kTol = 1e-2;  // bf16 outputs: one rounding ~ 2^-9 relative per element

ops::WeightView f32_view(const std::vector<float>& w, int64_t rows, int64_t cols) {
  return {ops::WType::F32, w.data(), rows, cols};
}

TEST(CudaOps, Gemm) {
  OST_REQUIRE_GPU();
  Gemm g;
  ASSERT_TRUE(g.init().is_ok());
  struct S { int64_t n, out, in; bool bias; };
  for (S s : {S{1, 256, 512, false}, S{7, 96, 64, true}, S{33, 384, 1152, true}, S{130, 1000, 256, false}}) {
    auto x = randn_bf16(static_cast<size_t>(s.n * s.in), 1), w = randn_bf16(static_cast<size_t>(s.out * s.in), 2, 0.05f),
         b = randn_bf16(static_cast<size_t>(s.out), 3);
    auto dx = to_dev(x), dw = to_dev(w), db = to_dev(b);
    auto dy = poisoned(static_cast<size_t>(s.n * s.out));
    ASSERT_TRUE(g.run(dx->p, s.n, dw->p, s.out, s.in, s.bias ? db->p : nullptr, dy->p, 0).is_ok());
    std::vector<float> ref(static_cast<size_t>(s.n * s.out));
    ops::matmul(x.data(), s.n, f32_view(w, s.out, s.in), s.bias ? b.data() : nullptr, ref.data());
    EXPECT_LE(rel_l2(from_dev(dy->p, ref.size()), ref), kTol) << s.n << "x" << s.out << "x" << s.in;
  }
}

// The vision MLP's fc1: gelu_tanh in cuBLASLt's epilogue against the fp32 product, bias and
// gelu_tanh (the fused form rounds once, after the gelu).
TEST(CudaOps, GemmBiasGeluEpilogue) {
  OST_REQUIRE_GPU();
  Gemm g;
  ASSERT_TRUE(g.init().is_ok());
  struct S { int64_t n, out, in; };
  for (S s : {S{1, 256, 512}, S{33, 384, 1152}, S{300, 4304, 1152}}) {
    auto x = randn_bf16(static_cast<size_t>(s.n * s.in), 21), w = randn_bf16(static_cast<size_t>(s.out * s.in), 22, 0.05f),
         b = randn_bf16(static_cast<size_t>(s.out), 23);
    auto dx = to_dev(x), dw = to_dev(w), db = to_dev(b);
    auto dy = poisoned(static_cast<size_t>(s.n * s.out));
    ASSERT_TRUE(g.run_bias_gelu(dx->p, s.n, dw->p, s.out, s.in, db->p, dy->p, 0).is_ok());
    std::vector<float> ref(static_cast<size_t>(s.n * s.out));
    ops::matmul(x.data(), s.n, f32_view(w, s.out, s.in), b.data(), ref.data());
    std::vector<float> erf_ref = ref;
    ops::gelu_tanh(ref.data(), int64_t(ref.size()));
    ops::gelu_erf(erf_ref.data(), int64_t(erf_ref.size()));
    const auto got = from_dev(dy->p, ref.size());
    const double e = rel_l2(got, ref);
    std::printf("gemm+gelu %lldx%lldx%lld: rel L2 %.3g vs gelu_tanh, %.3g vs gelu_erf\n", (long long)s.n,
                (long long)s.out, (long long)s.in, e, rel_l2(got, erf_ref));
    EXPECT_LE(e, kTol) << s.n << "x" << s.out << "x" << s.in;
  }
  EXPECT_FALSE(g.run_bias_gelu(nullptr, 1, nullptr, 1, 1, nullptr, nullptr, 0).is_ok());
}

TEST(CudaOps, AddRmsNorm) {
  OST_REQUIRE_GPU();
  for (auto [n, d] : {std::pair{3, 64}, std::pair{5, 4096}, std::pair{2, 1152}}) {
    for (bool with_delta : {false, true}) {
      auto x = randn_bf16(static_cast<size_t>(n * d), 4), dl = randn_bf16(static_cast<size_t>(n * d), 5), w = randn_bf16(static_cast<size_t>(d), 6);
      auto dx = to_dev(x), ddl = to_dev(dl), dw = to_dev(w);
      auto dy = poisoned(static_cast<size_t>(n * d));
      ASSERT_TRUE(launch_add_rms_norm({dx->p, with_delta ? ddl->p : nullptr, dw->p, dy->p, n, d, 1e-6f}, 0).is_ok());
      std::vector<float> xs = x, ref(x.size());
      if (with_delta) {
        ops::add(x.data(), dl.data(), int64_t(x.size()), xs.data());
        for (auto& v : xs) v = round_bf16(v);
      }
      ops::rms_norm(xs.data(), n, d, w.data(), 1e-6f, ref.data());
      EXPECT_LE(rel_l2(from_dev(dy->p, ref.size()), ref), kTol) << n << "x" << d;
      EXPECT_LE(rel_l2(from_dev(dx->p, xs.size()), xs), 1e-6) << "residual " << n << "x" << d;
    }
  }
}

TEST(CudaOps, LayerNorm) {
  OST_REQUIRE_GPU();
  for (auto [n, d] : {std::pair{3, 64}, std::pair{9, 1152}, std::pair{4, 4608}}) {
    auto x = randn_bf16(static_cast<size_t>(n * d), 7, 2.0f), w = randn_bf16(static_cast<size_t>(d), 8), b = randn_bf16(static_cast<size_t>(d), 9);
    for (auto& v : x) v = round_bf16(v + 0.5f);  // a non-zero mean
    auto dx = to_dev(x), dw = to_dev(w), db = to_dev(b);
    auto dy = poisoned(static_cast<size_t>(n * d));
    ASSERT_TRUE(launch_layer_norm({dx->p, dw->p, db->p, dy->p, n, d, 1e-6f}, 0).is_ok());
    std::vector<float> ref(x.size());
    ops::layer_norm(x.data(), n, d, w.data(), b.data(), 1e-6f, ref.data());
    EXPECT_LE(rel_l2(from_dev(dy->p, ref.size()), ref), kTol) << n << "x" << d;
  }
}

TEST(CudaOps, QkNormRopeKvWrite) {
  OST_REQUIRE_GPU();
  struct S { int n, heads, kv, hd; std::array<int, 3> sec; };
  for (S s : {S{5, 4, 2, 32, {6, 5, 5}}, S{37, 32, 8, 128, {24, 20, 20}}}) {
    TextConfig c;
    c.head_dim = s.hd;
    c.rope_theta = 5e6;
    c.mrope_section = s.sec;
    const int row = (s.heads + 2 * s.kv) * s.hd, Q = s.heads * s.hd, KV = s.kv * s.hd;
    auto qkv = randn_bf16(static_cast<size_t>(s.n) * row, 10), qn = randn_bf16(static_cast<size_t>(s.hd), 11), kn = randn_bf16(static_cast<size_t>(s.hd), 12);
    std::vector<int64_t> pos(static_cast<size_t>(3 * s.n));
    std::vector<int32_t> pos32(pos.size());
    std::mt19937 rng(13);
    for (size_t i = 0; i < pos.size(); ++i) pos32[i] = int32_t(pos[i] = int64_t(rng() % 3000));
    const int slots = 2 * s.n;
    std::vector<int32_t> slot(static_cast<size_t>(slots));
    std::iota(slot.begin(), slot.end(), 0);
    std::shuffle(slot.begin(), slot.end(), rng);
    slot.resize(static_cast<size_t>(s.n));
    std::vector<float> inv(static_cast<size_t>(s.hd / 2));
    std::vector<int32_t> axis(static_cast<size_t>(s.hd / 2));
    for (int i = 0; i < s.hd / 2; ++i) {
      inv[size_t(i)] = 1.0f / std::pow(5e6f, float(2 * i) / float(s.hd));
      axis[size_t(i)] = (i % 3 == 1 && i < 3 * s.sec[1]) ? 1 : (i % 3 == 2 && i < 3 * s.sec[2]) ? 2 : 0;
    }
    auto dqkv = to_dev(qkv), dqn = to_dev(qn), dkn = to_dev(kn);
    auto dpos = to_dev_raw(pos32), dslot = to_dev_raw(slot), dax = to_dev_raw(axis);
    auto dinv = to_dev_raw(inv);
    auto dq = poisoned(static_cast<size_t>(s.n) * Q), dk = poisoned(static_cast<size_t>(slots) * KV), dv = poisoned(static_cast<size_t>(slots) * KV);
    QkNormRopeParams p;
    p.qkv = dqkv->p, p.q_norm = dqn->p, p.k_norm = dkn->p, p.pos = dpos->p, p.inv_freq = dinv->p;
    p.axis = dax->p, p.slot = dslot->p, p.q_out = dq->p, p.k_cache = dk->p, p.v_cache = dv->p;
    p.n = s.n, p.n_heads = s.heads, p.n_kv = s.kv, p.head_dim = s.hd;
    ASSERT_TRUE(launch_qk_norm_rope(p, 0).is_ok());

    // Reference: per-head RMSNorm then rope with the CPU tables.
    std::vector<float> q(static_cast<size_t>(s.n) * Q), k(static_cast<size_t>(s.n) * KV), v(static_cast<size_t>(s.n) * KV);
    for (int i = 0; i < s.n; ++i) {
      std::copy_n(qkv.begin() + int64_t(i) * row, Q, q.begin() + int64_t(i) * Q);
      std::copy_n(qkv.begin() + int64_t(i) * row + Q, KV, k.begin() + int64_t(i) * KV);
      std::copy_n(qkv.begin() + int64_t(i) * row + Q + KV, KV, v.begin() + int64_t(i) * KV);
    }
    ops::rms_norm(q.data(), int64_t(s.n) * s.heads, s.hd, qn.data(), 1e-6f, q.data());
    ops::rms_norm(k.data(), int64_t(s.n) * s.kv, s.hd, kn.data(), 1e-6f, k.data());
    std::vector<float> cs(static_cast<size_t>(s.n * s.hd / 2)), sn(cs.size());
    const int64_t* P[3] = {pos.data(), pos.data() + s.n, pos.data() + 2 * s.n};
    mrope_tables(c, P, s.n, cs.data(), sn.data());
    ops::rope(q.data(), s.n, s.heads, s.hd, Q, cs.data(), sn.data());
    ops::rope(k.data(), s.n, s.kv, s.hd, KV, cs.data(), sn.data());

    EXPECT_LE(rel_l2(from_dev(dq->p, q.size()), q), kTol);
    auto kc = from_dev(dk->p, size_t(slots) * KV), vc = from_dev(dv->p, size_t(slots) * KV);
    std::vector<float> kg, vg;
    for (int i = 0; i < s.n; ++i) {
      kg.insert(kg.end(), kc.begin() + int64_t(slot[size_t(i)]) * KV, kc.begin() + int64_t(slot[size_t(i)] + 1) * KV);
      vg.insert(vg.end(), vc.begin() + int64_t(slot[size_t(i)]) * KV, vc.begin() + int64_t(slot[size_t(i)] + 1) * KV);
    }
    EXPECT_LE(rel_l2(kg, k), kTol);
    EXPECT_EQ(rel_l2(vg, v), 0.0);
  }
}

TEST(CudaOps, SiluMulGeluAdd) {
  OST_REQUIRE_GPU();
  const int64_t n = 3, I = 1000;
  auto gu = randn_bf16(static_cast<size_t>(n * 2 * I), 14, 2.0f);
  auto dgu = to_dev(gu);
  auto dy = poisoned(static_cast<size_t>(n * I));
  ASSERT_TRUE(launch_silu_mul({dgu->p, dy->p, n, I}, 0).is_ok());
  std::vector<float> g(static_cast<size_t>(n * I)), u(g.size()), ref(g.size());
  for (int64_t r = 0; r < n; ++r)
    for (int64_t c = 0; c < I; ++c) {
      g[size_t(r * I + c)] = gu[size_t(r * 2 * I + c)];
      u[size_t(r * I + c)] = gu[size_t(r * 2 * I + I + c)];
    }
  ops::silu_mul(g.data(), u.data(), n * I, ref.data());
  EXPECT_LE(rel_l2(from_dev(dy->p, ref.size()), ref), kTol);

  for (bool erf : {false, true}) {
    auto x = randn_bf16(5000, 15, 3.0f);
    auto dx = to_dev(x);
    ASSERT_TRUE(launch_gelu(dx->p, int64_t(x.size()), erf, 0).is_ok());
    std::vector<float> r = x;
    if (erf) ops::gelu_erf(r.data(), int64_t(r.size()));
    else ops::gelu_tanh(r.data(), int64_t(r.size()));
    EXPECT_LE(rel_l2(from_dev(dx->p, r.size()), r), kTol) << "erf " << erf;
  }
  auto a = randn_bf16(777, 16), b = randn_bf16(777, 17);
  auto da = to_dev(a), db = to_dev(b);
  ASSERT_TRUE(launch_add(da->p, db->p, 777, 0).is_ok());
  std::vector<float> r(777);
  ops::add(a.data(), b.data(), 777, r.data());
  EXPECT_LE(rel_l2(from_dev(da->p, r.size()), r), kTol);
}

TEST(CudaOps, VisionRope) {
  OST_REQUIRE_GPU();
  for (auto [heads, hd] : {std::pair{4, 16}, std::pair{16, 72}}) {
    const int64_t n = 11, stride = 3 * heads * hd;
    auto x = randn_bf16(static_cast<size_t>(n * stride), 18), cs = randn_bf16(static_cast<size_t>(n * hd / 2), 19), sn = randn_bf16(static_cast<size_t>(n * hd / 2), 20);
    auto dx = to_dev(x);
    auto dc = to_dev_raw(cs), ds = to_dev_raw(sn);
    ASSERT_TRUE(launch_rope({dx->p, dc->p, ds->p, n, stride, heads, hd}, 0).is_ok());
    std::vector<float> r = x;
    ops::rope(r.data(), n, heads, hd, stride, cs.data(), sn.data());
    EXPECT_LE(rel_l2(from_dev(dx->p, r.size()), r), kTol);
    // Four pairs per thread (the vision tower's launch): the q and k heads of a qkv row, v untouched.
    auto dx4 = to_dev(x);
    const RopeParams p4{dx4->p, dc->p, ds->p, n, stride, 2 * heads, hd};
    EXPECT_TRUE(rope4_supports(p4));
    ASSERT_TRUE(launch_rope4(p4, 0).is_ok());
    std::vector<float> r4 = x;
    ops::rope(r4.data(), n, 2 * heads, hd, stride, cs.data(), sn.data());
    const auto got = from_dev(dx4->p, r4.size());
    EXPECT_LE(rel_l2(got, r4), kTol);
    for (int64_t i = 0; i < n; ++i)  // the v third is left as it was
      for (int64_t c = 2 * heads * hd; c < stride; ++c) ASSERT_EQ(got[size_t(i * stride + c)], x[size_t(i * stride + c)]);
  }
}

// Paged: two sequences in shuffled blocks, rows of a causal prefill of seq 0 plus one decode
// row of seq 1. Dense: two non-causal segments (vision).
TEST(CudaOps, AttentionPaged) {
  OST_REQUIRE_GPU();
  struct S { int heads, kv, hd; };
  for (S s : {S{4, 2, 32}, S{32, 8, 128}}) {
    const int bs = 16, len0 = 45, len1 = 70, nq0 = 20;
    const int KV = s.kv * s.hd, Q = s.heads * s.hd;
    const int blocks = 12, width = 6;
    std::vector<int32_t> perm(blocks);
    std::iota(perm.begin(), perm.end(), 0);
    std::mt19937 rng(21);
    std::shuffle(perm.begin(), perm.end(), rng);
    std::vector<int32_t> table(static_cast<size_t>(2 * width));
    for (int j = 0; j < width; ++j) table[size_t(j)] = perm[size_t(j)], table[size_t(width + j)] = perm[size_t(width + j)];
    auto kc = randn_bf16(static_cast<size_t>(blocks * bs * KV), 22), vc = randn_bf16(static_cast<size_t>(blocks * bs * KV), 23);
    const int n = nq0 + 1;
    auto q = randn_bf16(static_cast<size_t>(n * Q), 24);
    std::vector<int32_t> row_len(static_cast<size_t>(n)), row_seq(static_cast<size_t>(n));
    for (int i = 0; i < nq0; ++i) row_len[size_t(i)] = len0 - nq0 + i + 1, row_seq[size_t(i)] = 0;
    row_len[size_t(nq0)] = len1, row_seq[size_t(nq0)] = 1;
    auto dq = to_dev(q), dk = to_dev(kc), dv = to_dev(vc);
    auto dlen = to_dev_raw(row_len), dseq = to_dev_raw(row_seq), dtab = to_dev_raw(table);
    auto dout = poisoned(static_cast<size_t>(n * Q));
    AttentionParams p;
    p.q = dq->p, p.k = dk->p, p.v = dv->p, p.out = dout->p, p.n = n;
    p.n_heads = s.heads, p.n_kv = s.kv, p.head_dim = s.hd, p.q_stride = p.out_stride = Q, p.kv_stride = KV;
    p.row_len = dlen->p, p.row_seq = dseq->p, p.block_table = dtab->p, p.table_width = width, p.block_size = bs;
    p.scale = 1.0f / std::sqrt(float(s.hd));
    ASSERT_TRUE(launch_attention(p, 0).is_ok());

    std::vector<float> ref(static_cast<size_t>(n * Q));
    for (int seq = 0; seq < 2; ++seq) {
      const int len = seq ? len1 : len0;
      std::vector<float> k(static_cast<size_t>(len * KV)), v(static_cast<size_t>(len * KV));
      for (int j = 0; j < len; ++j) {
        const int64_t slot = int64_t(table[size_t(seq * width + j / bs)]) * bs + j % bs;
        std::copy_n(kc.begin() + slot * KV, KV, k.begin() + int64_t(j) * KV);
        std::copy_n(vc.begin() + slot * KV, KV, v.begin() + int64_t(j) * KV);
      }
      ops::AttentionParams a;
      a.n_q = seq ? 1 : nq0;
      a.n_kv = len;
      a.n_heads = s.heads, a.n_kv_heads = s.kv, a.head_dim = s.hd;
      a.q_stride = a.out_stride = Q, a.kv_stride = KV;
      a.causal = true;
      a.q_pos0 = len - a.n_q;
      a.scale = p.scale;
      const int64_t r0 = seq ? nq0 : 0;
      ops::attention(a, q.data() + r0 * Q, k.data(), v.data(), ref.data() + r0 * Q);
    }
    EXPECT_LE(rel_l2(from_dev(dout->p, ref.size()), ref), kTol) << s.heads << "/" << s.kv << "/" << s.hd;
  }
}

TEST(CudaOps, AttentionDenseSegments) {
  OST_REQUIRE_GPU();
  for (auto [heads, hd] : {std::pair{4, 16}, std::pair{16, 72}}) {
    const int H = heads * hd, stride = 3 * H;
    const int seg[3] = {0, 64, 100};
    const int n = seg[2];
    auto qkv = randn_bf16(static_cast<size_t>(n * stride), 25);
    std::vector<int32_t> start(static_cast<size_t>(n)), len(static_cast<size_t>(n));
    for (int s = 0; s < 2; ++s)
      for (int i = seg[s]; i < seg[s + 1]; ++i) start[size_t(i)] = seg[s], len[size_t(i)] = seg[s + 1] - seg[s];
    auto d = to_dev(qkv);
    auto ds = to_dev_raw(start), dl = to_dev_raw(len);
    auto dout = poisoned(static_cast<size_t>(n * H));
    AttentionParams p;
    p.q = d->p, p.k = d->p + H, p.v = d->p + 2 * H, p.out = dout->p, p.n = n;
    p.n_heads = p.n_kv = heads, p.head_dim = hd, p.q_stride = p.kv_stride = stride, p.out_stride = H;
    p.row_start = ds->p, p.row_len = dl->p, p.scale = 1.0f / std::sqrt(float(hd));
    ASSERT_TRUE(launch_attention(p, 0).is_ok());
    std::vector<float> ref(static_cast<size_t>(n * H));
    for (int s = 0; s < 2; ++s) {
      ops::AttentionParams a;
      a.n_q = a.n_kv = seg[s + 1] - seg[s];
      a.n_heads = a.n_kv_heads = heads, a.head_dim = hd;
      a.q_stride = a.kv_stride = stride, a.out_stride = H, a.scale = p.scale;
      const float* base = qkv.data() + int64_t(seg[s]) * stride;
      ops::attention(a, base, base + H, base + 2 * H, ref.data() + int64_t(seg[s]) * H);
    }
    EXPECT_LE(rel_l2(from_dev(dout->p, ref.size()), ref), kTol) << heads << "/" << hd;
  }
}

TEST(CudaOps, EmbeddingScatterArgmax) {
  OST_REQUIRE_GPU();
  const int64_t vocab = 1000, d = 64, n = 9;
  auto table = randn_bf16(static_cast<size_t>(vocab * d), 26);
  std::vector<int32_t> ids = {5, 999, 0, 17, 17, 300, 2, 1, 998};
  auto dt = to_dev(table);
  auto di = to_dev_raw(ids);
  auto dout = poisoned(static_cast<size_t>(n * d));
  ASSERT_TRUE(launch_embedding({dt->p, di->p, dout->p, n, d}, 0).is_ok());
  std::vector<float> ref(static_cast<size_t>(n * d));
  ops::embedding(f32_view(table, vocab, d), ids.data(), n, ref.data());
  auto got = from_dev(dout->p, ref.size());
  EXPECT_EQ(rel_l2(got, ref), 0.0);

  // Scatter-add two rows, then copy one.
  auto src = randn_bf16(static_cast<size_t>(2 * d), 27);
  std::vector<int32_t> idx = {3, 7};
  auto dsrc = to_dev(src);
  auto didx = to_dev_raw(idx);
  ASSERT_TRUE(launch_scatter_rows({dout->p, dsrc->p, didx->p, 2, d, true}, 0).is_ok());
  for (int r = 0; r < 2; ++r)
    for (int64_t c = 0; c < d; ++c) ref[size_t(idx[size_t(r)] * d + c)] = round_bf16(ref[size_t(idx[size_t(r)] * d + c)] + src[size_t(r * d + c)]);
  EXPECT_EQ(rel_l2(from_dev(dout->p, ref.size()), ref), 0.0);

  // Argmax per row, and the fp32 copy.
  const int64_t rows = 3, V = 151936;
  auto x = randn_bf16(static_cast<size_t>(rows * V), 28);
  x[size_t(V + 151935)] = 100.0f;
  auto dx = to_dev(x);
  DevBuf<int32_t> am(static_cast<size_t>(rows));
  DevBuf<float> xf(x.size());
  ASSERT_TRUE(launch_argmax(dx->p, rows, V, am.p, 0).is_ok());
  ASSERT_TRUE(launch_bf16_to_f32(dx->p, xf.p, rows * V, 0).is_ok());
  std::vector<int32_t> got_am(static_cast<size_t>(rows));
  std::vector<float> got_f(x.size());
  ASSERT_EQ(cudaMemcpy(got_am.data(), am.p, rows * 4, cudaMemcpyDeviceToHost), cudaSuccess);
  ASSERT_EQ(cudaMemcpy(got_f.data(), xf.p, x.size() * 4, cudaMemcpyDeviceToHost), cudaSuccess);
  for (int64_t r = 0; r < rows; ++r) EXPECT_EQ(got_am[size_t(r)], ops::argmax(x.data() + r * V, V)) << r;
  EXPECT_EQ(got_am[1], 151935);
  EXPECT_EQ(rel_l2(got_f, x), 0.0);
}

}  // namespace
}  // namespace ost::testing
