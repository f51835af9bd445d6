// Strict loading, attention against a naive per-head loop, masks, the dense cache.
#include <gtest/gtest.h>

#include <limits>
#include <vector>

#include "attention/attention.h"
#include "core/error.h"
#include "core/fs.h"
#include "core/torch_compat.h"
#include "io/safetensors.h"
#include "models/model.h"
#include "support/fixtures.h"
#include "support/test_support.h"

namespace vlm2mla {
namespace {

using testing::TempDir;

// A copy of a fixture checkpoint whose tensors the test may edit before writing.
struct EditableCheckpoint {
  TempDir dir;
  std::map<std::string, at::Tensor> tensors;
  explicit EditableCheckpoint(const std::string& fixture) {
    const std::string src = testing::fixtures_dir() + "/text/" + fixture + "/model";
    fs::copy_file(src + "/config.json", dir.file("config.json"));
    io::TensorStore store = io::TensorStore::open_dir(src);
    for (const auto& n : store.names()) tensors[n] = store.tensor(n).clone();
  }
  std::string write() {
    std::vector<std::pair<std::string, at::Tensor>> list(tensors.begin(), tensors.end());
    io::write_safetensors(dir.file("model.safetensors"), list);
    return dir.path();
  }
};

std::string load_error(const std::string& dir) {
  try {
    Model::load(dir, LoadOptions{});
  } catch (const FormatError& e) {
    return e.what();
  }
  return "";
}

TEST(StrictLoading, MissingTensorNamesKeyAndShape) {
  EditableCheckpoint c("llama-mha");
  c.tensors.erase("model.layers.1.mlp.up_proj.weight");
  std::string err = load_error(c.write());
  EXPECT_NE(err.find("missing tensor 'model.layers.1.mlp.up_proj.weight'"), std::string::npos) << err;
  EXPECT_NE(err.find("[160, 64]"), std::string::npos) << err;
}

TEST(StrictLoading, MisshapenTensorNamesBothShapes) {
  EditableCheckpoint c("llama-mha");
  c.tensors["model.layers.0.self_attn.k_proj.weight"] = at::zeros({32, 64});
  std::string err = load_error(c.write());
  EXPECT_NE(err.find("'model.layers.0.self_attn.k_proj.weight' has shape [32, 64], expected [64, 64]"),
            std::string::npos)
      << err;
}

TEST(StrictLoading, LeftoverTensorIsAnError) {
  EditableCheckpoint c("llama-mha");
  c.tensors["model.layers.0.self_attn.q_proj.bias"] = at::zeros({64});
  std::string err = load_error(c.write());
  EXPECT_NE(err.find("'model.layers.0.self_attn.q_proj.bias'"), std::string::npos) << err;
  EXPECT_NE(err.find("not used"), std::string::npos) << err;
}

TEST(StrictLoading, OldRotaryBuffersAreIgnored) {
  EditableCheckpoint c("llama-mha");
  c.tensors["model.layers.0.self_attn.rotary_emb.inv_freq"] = at::zeros({8});
  EXPECT_EQ(load_error(c.write()), "");
}

TEST(StrictLoading, TiedEmbeddingsWithOrWithoutHead) {
  EditableCheckpoint c("qwen2");
  ASSERT_EQ(c.tensors.count("lm_head.weight"), 0u);
  auto m = Model::load(c.write(), LoadOptions{});
  EXPECT_TRUE(m->decoder().weights().lm_head.is_same(m->decoder().weights().embed_tokens));
  c.tensors["lm_head.weight"] = c.tensors["model.embed_tokens.weight"];  // some tied files carry it
  EXPECT_EQ(load_error(c.write()), "");
}

TEST(StrictLoading, UntiedModelWithoutHeadFails) {
  EditableCheckpoint c("llama-mha");
  c.tensors.erase("lm_head.weight");
  EXPECT_NE(load_error(c.write()).find("missing tensor 'lm_head.weight'"), std::string::npos);
}

TEST(StrictLoading, BFloat16CheckpointLoadsAsFloat32) {
  auto m = Model::load(testing::fixtures_dir() + "/text/qwen2/model", LoadOptions{});
  EXPECT_EQ(m->decoder().weights().embed_tokens.scalar_type(), at::kFloat);
}

// Naive attention: one (batch, head, query) at a time, softmax in double.
at::Tensor naive_attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                           const at::Tensor& mask, double scale) {
  const int64_t b = q.size(0), hq = q.size(1), sq = q.size(2), hkv = k.size(1), skv = k.size(2);
  at::Tensor out = at::zeros({b, hq, sq, v.size(3)}, at::kDouble);
  for (int64_t bi = 0; bi < b; ++bi)
    for (int64_t h = 0; h < hq; ++h)
      for (int64_t i = 0; i < sq; ++i) {
        const int64_t g = h / (hq / hkv);
        at::Tensor s = at::mv(k[bi][g].to(at::kDouble), q[bi][h][i].to(at::kDouble)) * scale;
        if (mask.defined()) s = s.masked_fill(mask[bi][0][i].logical_not(), -INFINITY);
        out[bi][h][i] = at::mv(v[bi][g].to(at::kDouble).t(), at::softmax(s, 0));
      }
  return out;
}

TEST(Attention, ReferenceMatchesNaiveLoopForGqaWithPaddingAndCache) {
  at::manual_seed(0);
  const int64_t b = 2, hq = 6, hkv = 2, past = 3, s = 4, d = 8;
  at::Tensor q = at::randn({b, hq, s, d}), k = at::randn({b, hkv, past + s, d}),
             v = at::randn({b, hkv, past + s, d});
  at::Tensor valid = at::ones({b, past + s}, at::kBool);
  valid[1].narrow(0, 0, 2).fill_(false);  // row 1: two left-pad positions
  at::Tensor mask = causal_mask(valid, b, past, s, at::kCPU);
  ASSERT_EQ(mask.sizes(), (std::vector<int64_t>{b, 1, s, past + s}));
  EXPECT_FALSE(mask[0][0][0][past + 1].item<bool>());  // future key hidden
  EXPECT_FALSE(mask[1][0][3][0].item<bool>());         // pad key hidden
  at::Tensor ref = attention_reference(q, k, v, mask, 0.3);
  EXPECT_TRUE(at::allclose(ref.to(at::kDouble), naive_attention(q, k, v, mask, 0.3), 1e-5, 1e-6));
  if (default_attention_backend() == AttentionBackend::kFused) {
    at::Tensor fused = attention(AttentionBackend::kFused, q, k, v, mask, 0.3);
    EXPECT_TRUE(at::allclose(fused, ref, 1e-5, 1e-6));
  }
}

TEST(Attention, FusedPlainCausalEqualsReferenceWithMask) {
  if (default_attention_backend() == AttentionBackend::kReference) {
    GTEST_SKIP() << "fused attention needs libtorch >= 2 (runs on the GPU machine)";
  }
  at::manual_seed(1);
  const int64_t b = 2, hq = 4, hkv = 2, s = 7, d = 8;
  at::Tensor q = at::randn({b, hq, s, d}), k = at::randn({b, hkv, s, d}), v = at::randn({b, hkv, s, d});
  at::Tensor mask = causal_mask(at::Tensor(), b, 0, s, at::kCPU);
  at::Tensor ref = attention_reference(q, k, v, mask, 0.35);
  EXPECT_TRUE(at::allclose(attention(AttentionBackend::kFused, q, k, v, mask, 0.35, true), ref, 1e-5, 1e-6));
}

// The masked scores take one kernel (where) instead of two (the mask's negation, masked_fill): the same
// values bit for bit, for float32 and bf16, a prefill mask and a static decode step's [b, 1, 1, capacity].
TEST(Attention, OneKernelMaskEqualsNegatedMaskedFill) {
  at::manual_seed(3);
  const int64_t b = 2, hq = 6, hkv = 2, d = 8;
  for (at::ScalarType t : {at::kFloat, at::kBFloat16}) {
    for (int64_t s : {4, 1}) {
      const int64_t total = 9;
      at::Tensor q = at::randn({b, hq, s, d}).to(t), k = at::randn({b, hkv, total, d}).to(t),
                 v = at::randn({b, hkv, total, d}).to(t);
      at::Tensor valid = at::ones({b, total}, at::kBool);
      valid[1].narrow(0, 0, 3).fill_(false);
      at::Tensor mask = s > 1 ? causal_mask(valid, b, total - s, s, at::kCPU) : valid.view({b, 1, 1, total});
      at::Tensor scores = at::matmul(q.reshape({b, hkv, 3 * s, d}), k.transpose(2, 3)) * 0.4;
      scores = scores.view({b, hkv, 3, s, total});
      scores = scores.masked_fill(mask.logical_not().unsqueeze(2), -INFINITY);
      at::Tensor probs = at::softmax(scores, -1, at::kFloat).to(t);
      at::Tensor want = at::matmul(probs.view({b, hkv, 3 * s, total}), v).view({b, hq, s, d});
      EXPECT_TRUE(at::equal(attention_reference(q, k, v, mask, 0.4), want)) << t << " s=" << s;
    }
  }
}

TEST(Attention, FullyPaddedQueryRowsStayFinite) {
  at::Tensor valid = at::zeros({1, 3}, at::kBool);
  valid[0][2] = true;
  at::Tensor mask = causal_mask(valid, 1, 0, 3, at::kCPU);
  at::Tensor q = at::randn({1, 2, 3, 4}), k = at::randn({1, 2, 3, 4}), v = at::randn({1, 2, 3, 4});
  EXPECT_TRUE(at::isfinite(attention_reference(q, k, v, mask, 0.5)).all().item<bool>());
}

// kAuto's single-token decode on CUDA (libtorch >= 2.5): SDPA reading the kv heads of strided cache views in
// place, masked ([b, 1, 1, capacity], a static decode step's: each row's own start) and unmasked (views of the
// first `past + 1` positions), float32 and bf16, Qwen2.5-VL-7B's heads (28 over 4, d 128) and a small GQA;
// within twice the reference's own error against the float64 loop (bf16; float32 1e-5 relative), and with
// the switch off kAuto is the reference bit for bit.
TEST(Attention, CudaDecodeSdpaEqualsReference) {
  if (!at::hasCUDA()) GTEST_SKIP() << "no CUDA device";
  const at::Device dev(at::kCUDA, 0);
  const testing::SwitchRestore restore{set_decode_sdpa, decode_sdpa_enabled()};
  set_decode_sdpa(true);
  at::manual_seed(11);
  struct Shape { int64_t b, hq, hkv, d, cap, past; };
  for (const Shape& sh : {Shape{3, 28, 4, 128, 300, 257}, Shape{2, 6, 2, 8, 40, 20}}) {
    for (at::ScalarType t : {at::kFloat, at::kBFloat16}) {
      for (bool masked : {true, false}) {
        const std::string what = "h_q " + std::to_string(sh.hq) + (t == at::kFloat ? " float32" : " bf16") +
                                 (masked ? " masked" : " unmasked");
        const auto opts = at::TensorOptions().dtype(t).device(dev);
        // peaked scores (q scaled up), so that the softmax weights differ
        at::Tensor q = (at::randn({sh.b, sh.hq, 1, sh.d}) * 3).to(opts);
        at::Tensor kc = at::randn({sh.b, sh.hkv, sh.cap, sh.d}).to(opts), vc = at::randn_like(kc);
        at::Tensor k = kc, v = vc, mask;
        if (masked) {
          at::Tensor start = at::tensor({int64_t(0), int64_t(5), sh.past - 3}, at::kLong).narrow(0, 0, sh.b).to(dev);
          at::Tensor j = at::arange(sh.cap, at::TensorOptions().dtype(at::kLong).device(dev)).view({1, sh.cap});
          mask = (j >= start.view({sh.b, 1})).logical_and(j <= sh.past).view({sh.b, 1, 1, sh.cap});
        } else {
          k = kc.narrow(2, 0, sh.past + 1);  // strided: the capacity's row stride
          v = vc.narrow(2, 0, sh.past + 1);
        }
        const double scale = 1.0 / std::sqrt(double(sh.d));
        ASSERT_TRUE(decode_sdpa_taken(q) == bool(VLM2MLA_HAS_SDPA_GQA)) << what;
        const at::Tensor got = attention(AttentionBackend::kAuto, q, k, v, mask, scale);
        const at::Tensor ref = attention_reference(q, k, v, mask, scale);
        ASSERT_EQ(got.sizes(), ref.sizes()) << what;
        if (masked) {  // the mask's additive form made once (a decode step's layers): the same bits
          EXPECT_TRUE(at::equal(attention(AttentionBackend::kAuto, q, k, v, mask, scale, false, additive_mask(mask, t)),
                                got))
              << what;
        }
        const at::Tensor truth = naive_attention(q.cpu().to(at::kDouble), k.cpu().to(at::kDouble),
                                                 v.cpu().to(at::kDouble), mask.defined() ? mask.cpu() : mask, scale);
        const double err = (got.cpu().to(at::kDouble) - truth).abs().max().item<double>();
        const double ref_err = (ref.cpu().to(at::kDouble) - truth).abs().max().item<double>();
        const double mag = truth.abs().max().item<double>();
        if (t == at::kFloat) {
          EXPECT_LE(err, 1e-5 * mag) << what;
        } else {
          EXPECT_LE(err, 2 * ref_err + 1e-3 * mag) << what << ": sdpa " << err << ", reference " << ref_err;
        }
        set_decode_sdpa(false);
        EXPECT_TRUE(at::equal(attention(AttentionBackend::kAuto, q, k, v, mask, scale), ref)) << what;
        set_decode_sdpa(true);
      }
    }
  }
}

// SDPA's additive form of a bool mask: 0 where it attends, -inf elsewhere, in the dtype asked for; the reference
// path, given it beside the bool mask, reads the bool mask (the same result as without it).
TEST(Attention, AdditiveMaskIsZeroOrMinusInfinity) {
  const at::Tensor keep = at::tensor({1, 0, 1, 1, 0, 0}, at::kInt).ne(0).view({2, 1, 1, 3});
  for (at::ScalarType t : {at::kFloat, at::kBFloat16, at::kHalf}) {
    const at::Tensor m = additive_mask(keep, t);
    EXPECT_EQ(m.scalar_type(), t);
    EXPECT_EQ(m.sizes(), keep.sizes());
    const at::Tensor f = m.to(at::kFloat).flatten();
    const float inf = std::numeric_limits<float>::infinity();
    const std::vector<float> want = {0.f, -inf, 0.f, 0.f, -inf, -inf};
    for (int64_t i = 0; i < 6; ++i) EXPECT_EQ(f[i].item<float>(), want[static_cast<size_t>(i)]) << i;
  }
  const std::string err = testing::argument_error([&] { additive_mask(keep.to(at::kFloat), at::kFloat); }, "a float mask");
  EXPECT_NE(err.find("additive_mask takes a bool mask"), std::string::npos) << err;
  at::manual_seed(3);
  const at::Tensor q = at::randn({2, 4, 1, 8}), k = at::randn({2, 2, 3, 8}), v = at::randn({2, 2, 3, 8});
  EXPECT_TRUE(at::equal(attention(AttentionBackend::kReference, q, k, v, keep, 0.5, false, additive_mask(keep, at::kFloat)),
                        attention_reference(q, k, v, keep, 0.5)));
}

TEST(DenseKvCache, GrowsAndAccountsBytes) {
  DenseKvCache cache(2, 1, 2, 4, 2, at::kFloat, at::kCPU);
  EXPECT_EQ(cache.bytes_allocated(), 2 * 2 * (1 * 2 * 2 * 4) * 4);
  EXPECT_EQ(cache.bytes_per_token(), 2 * 2 * 2 * 4 * 4);
  at::Tensor k = at::randn({1, 2, 3, 4}), v = at::randn({1, 2, 3, 4});
  for (int64_t l = 0; l < 2; ++l) {
    auto kv = cache.append(l, k, v);
    EXPECT_TRUE(kv.first.equal(k));
  }
  cache.advance(3);
  EXPECT_GE(cache.capacity(), 3);
  at::Tensor k2 = at::randn({1, 2, 1, 4});
  auto kv = cache.append(0, k2, k2);
  EXPECT_TRUE(kv.first.narrow(2, 0, 3).equal(k));
  EXPECT_TRUE(kv.first.narrow(2, 3, 1).equal(k2));
}

// A cache the allocator cannot hold, at construction or when it grows: an ArgumentError naming the buffer, its size,
// the device and what takes less memory (it was libtorch's error, printed as an internal one). The sizes here are
// petabytes, which the CPU allocator refuses at once (nothing is touched).
TEST(KvCache, AnAllocationThatDoesNotFitIsAClearError) {
  const std::string dense = testing::argument_error(
      [] { DenseKvCache(2, int64_t(1) << 16, 2, 64, int64_t(1) << 30, at::kFloat, at::kCPU); }, "a 32 PiB cache");
  EXPECT_NE(dense.find("the KV cache does not fit on cpu"), std::string::npos) << dense;
  EXPECT_NE(dense.find("[65536, 2, 1073741824, 64] Float buffer (33554432.00 GiB)"), std::string::npos) << dense;
  EXPECT_NE(dense.find("can't allocate memory"), std::string::npos) << dense;  // the allocator's own words
  EXPECT_NE(dense.find("a quantized --kv-cache"), std::string::npos) << dense;
  DenseKvCache small(2, 1, 2, 4, 2, at::kFloat, at::kCPU);
  const std::string grown = testing::argument_error([&] { small.reserve(int64_t(1) << 42); }, "growing to 2^42");
  EXPECT_NE(grown.find("[1, 2, 4398046511104, 4] Float buffer"), std::string::npos) << grown;
  EXPECT_EQ(small.capacity(), 2);  // unchanged: the failed growth left the cache as it was
  const CacheSpec int4{CacheType::kInt4, 16, 8};
  const std::string latent = testing::argument_error(
      [&] { LatentKvCache({32, 32}, 16, true, int64_t(1) << 20, int64_t(1) << 36, int4, at::kFloat, at::kCPU); },
      "a latent cache of 2^56 positions");
  EXPECT_NE(latent.find("the KV cache does not fit on cpu: a [1048576, 68719476736, 16] Byte buffer"),
            std::string::npos)
      << latent;
}

TEST(Decoder, TokenIdsOutsideVocabularyAreRejected) {
  auto m = Model::load(testing::fixtures_dir() + "/text/qwen2/model", LoadOptions{});
  const std::string id =
      testing::argument_error([&] { m->decoder().embed(at::tensor({5, 320, 7}, at::kLong).view({1, 3})); });
  EXPECT_NE(id.find("token id 320 at [0, 1]"), std::string::npos) << id;
  EXPECT_NE(id.find("[0, 320)"), std::string::npos) << id;
  EXPECT_THROW(m->decoder().embed(at::tensor({-1}, at::kLong).view({1, 1})), ArgumentError);
}

}  // namespace
}  // namespace vlm2mla
