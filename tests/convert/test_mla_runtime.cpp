// The latent-cache runtime (issue 5): absorbed attention against its expanded twin on md-converted
// models of every family, greedy generation over the latent cache against the dense expanded one,
// incremental against full, quantized caches within their bounds, and the cache's byte accounting.
#include <gtest/gtest.h>

#include <cmath>

#include "convert/converted_fixture.h"
#include "convert/converter.h"
#include "core/error.h"
#include "generate/generate.h"
#include "io/safetensors.h"
#include "kernels/ops.h"
#include "kernels/split_map.h"
#include "kvcache/latent_kv_cache.h"
#include "kvcache/modality_segments.h"
#include "models/mla_attention.h"
#include "models/model.h"
#include "support/fixtures.h"

namespace vlm2mla {
namespace {

using convert::CalibrationInputs;
using convert::ConvertOptions;
using testing::converted;
using testing::Converted;
using testing::fixtures_dir;
using testing::next_token;
using testing::max_rel_error;

GenerateResult run_generate(const Model& m, const ModelInputs& in, MlaAttention mode, int64_t n,
                            std::optional<CacheSpec> spec = std::nullopt) {
  const_cast<TextDecoder&>(m.decoder()).set_mla_attention(mode);
  GenerateOptions g;
  g.max_new_tokens = n;
  g.cache = spec;
  GenerateResult r = generate(m.decoder(), m.prepare(in, false), g);
  const_cast<TextDecoder&>(m.decoder()).set_mla_attention(MlaAttention::kAuto);
  return r;
}

class MlaRuntime : public ::testing::TestWithParam<std::string> {};

TEST_P(MlaRuntime, AbsorbedEqualsExpanded) {
  Converted c = converted(GetParam());
  auto& dec = const_cast<TextDecoder&>(c.model->decoder());
  dec.set_mla_attention(MlaAttention::kExpanded);
  at::Tensor expanded = c.model->logits(c.inputs);
  dec.set_mla_attention(MlaAttention::kAbsorbed);
  at::Tensor absorbed = c.model->logits(c.inputs);
  dec.set_mla_attention(MlaAttention::kAuto);
  const double err = max_rel_error(absorbed, expanded, testing::real_positions(c.inputs));
  EXPECT_LT(err, 1e-4);
  EXPECT_GT(expanded.abs().max().item<double>(), 0.0);
}

TEST_P(MlaRuntime, GreedyOverTheLatentCacheEqualsExpandedAndFull) {
  Converted c = converted(GetParam());
  const int64_t n = 8;
  GenerateResult expanded = run_generate(*c.model, c.inputs, MlaAttention::kExpanded, n);
  GenerateResult absorbed = run_generate(*c.model, c.inputs, MlaAttention::kAbsorbed, n);
  GenerateResult automatic = run_generate(*c.model, c.inputs, MlaAttention::kAuto, n);
  EXPECT_TRUE(at::equal(absorbed.sequences, expanded.sequences));
  EXPECT_TRUE(at::equal(automatic.sequences, expanded.sequences));
  // Incremental (latent cache) equals the full forward of the generated sequence, absorbed.
  ModelInputs full = c.inputs;
  full.input_ids = absorbed.sequences;
  const int64_t s = c.inputs.input_ids.size(1), b = full.input_ids.size(0);
  full.attention_mask = at::cat({c.inputs.attention_mask.defined() ? c.inputs.attention_mask.to(at::kLong)
                                                                   : at::ones({b, s}, at::kLong),
                                 at::ones({b, n}, at::kLong)}, 1);
  auto& dec = const_cast<TextDecoder&>(c.model->decoder());
  dec.set_mla_attention(MlaAttention::kAbsorbed);
  Prompt p = c.model->prepare(full, false);
  at::Tensor logits = dec.lm_head(dec.forward_hidden(p.decoder_input(), nullptr));
  dec.set_mla_attention(MlaAttention::kAuto);
  EXPECT_TRUE(at::equal(logits.narrow(1, s - 1, n).argmax(-1), absorbed.sequences.narrow(1, s, n)));
  // The latent cache is smaller than the dense one of the same model.
  EXPECT_LT(absorbed.kv_bytes_per_token, expanded.kv_bytes_per_token);
}

TEST_P(MlaRuntime, QuantizedLatentCaches) {
  Converted c = converted(GetParam());
  const int64_t n = 8;
  GenerateResult exact = run_generate(*c.model, c.inputs, MlaAttention::kAbsorbed, n);
  // A window of 4 positions, so that most of the prompt is read back quantized.
  CacheSpec int8{CacheType::kInt8, 1, 4};
  // Groups must divide r_kv (n_kv x 3) and h_kv*R: use the largest common small group.
  const TextConfig& cfg = c.model->text_config();
  int8.group = cfg.num_key_value_heads;  // r_kv = 3 n_kv, rope width = 4 n_kv
  GenerateResult q8 = run_generate(*c.model, c.inputs, MlaAttention::kAbsorbed, n, int8);
  EXPECT_TRUE(at::equal(q8.sequences, exact.sequences)) << "int8 greedy must equal the exact cache";
  EXPECT_LT(q8.kv_bytes_per_token, exact.kv_bytes_per_token);
  CacheSpec int4 = int8;
  int4.type = CacheType::kInt4;
  int4.group = 2 * cfg.num_key_value_heads;
  if ((3 * cfg.num_key_value_heads) % int4.group == 0) {
    GenerateResult q4 = run_generate(*c.model, c.inputs, MlaAttention::kAbsorbed, n, int4);
    EXPECT_EQ(q4.sequences.sizes(), exact.sequences.sizes());
  }
}

TEST_P(MlaRuntime, ChunkedPrefillEqualsOneForward) {
  Converted c = converted(GetParam());
  const std::string dir = fixtures_dir() + "/" + GetParam();
  auto original = Model::load(dir + "/model", LoadOptions{});
  for (const Model* m : {c.model.get(), original.get()}) {  // latent cache and dense cache
    GenerateOptions g;
    g.max_new_tokens = 6;
    Prompt p = m->prepare(c.inputs, false);
    GenerateResult whole = generate(m->decoder(), p, g);
    for (int64_t chunk : {1, 3, 5}) {
      g.prefill_chunk = chunk;
      GenerateResult parts = generate(m->decoder(), p, g);
      EXPECT_TRUE(at::equal(parts.sequences, whole.sequences)) << "chunk " << chunk;
    }
  }
}

// One decode step's logits over a quantized latent cache (groups of 4) against the exact (fp32) cache, with
// a 4-position window so that most of the prompt is read back quantized. Bounds (max |diff| / max |logit|),
// stated in the README: int8 3e-2, int4 3e-1, int2 6e-1 — what these tiny random models measure (printed;
// worst int8 1.5e-2, int4 2.3e-1, int2 3.7e-1), not a claim about real checkpoints; and errors grow as
// bits fall.
TEST_P(MlaRuntime, QuantizedCacheLogitsWithinTheirBounds) {
  Converted c = converted(GetParam(), 4);  // r_kv = 4 n_kv = the RoPE width: one group per position each
  const TextDecoder& dec = c.model->decoder();
  Prompt p = c.model->prepare(c.inputs, false);
  const int64_t b = p.input_ids.size(0), n_kv = c.model->text_config().num_key_value_heads;
  auto step_logits = [&](const CacheSpec& spec) {
    std::unique_ptr<KvCache> cache = dec.make_kv_cache(b, p.input_ids.size(1) + 1, &spec);
    dec.forward_hidden(p.decoder_input(), cache.get());
    return dec.lm_head(dec.forward_hidden(next_token(p, 5), cache.get()));  // [b, 1, V]
  };
  at::Tensor exact = step_logits(CacheSpec{CacheType::kFp32, 1, 1});
  const std::pair<CacheType, double> bounds[] = {{CacheType::kInt8, 3e-2}, {CacheType::kInt4, 3e-1}, {CacheType::kInt2, 6e-1}};
  double previous = 0;
  for (const auto& [type, bound] : bounds) {
    const double err = max_rel_error(step_logits(CacheSpec{type, 4, 4}), exact);
    std::printf("[%s, %s cache] one decode step's logits: max rel. error %.3g (bound %.0e)\n", GetParam().c_str(),
                cache_type_name(type), err, bound);
    EXPECT_LT(err, bound) << cache_type_name(type);
    EXPECT_GT(err, previous) << cache_type_name(type) << ": fewer bits should not be more accurate";
    previous = err;
  }
}

// The decode kernel's step form (mla_attention_absorbed_kernel: one product for every set's absorbed queries
// and k-bias terms, the kernel reading strided views and writing into the output product's buffer, one
// product out) on the CPU, where mla_decode runs its reference: equal to the libtorch absorbed form over the
// same cached keys, every layer (float32). The GPU test below ties the real kernel the same way.
TEST_P(MlaRuntime, KernelStepFormEqualsTheLibtorchFormOnTheCpu) {
  Converted c = converted(GetParam(), 8);  // the kernel takes r_kv = h_kv * D in multiples of 8
  const TextDecoder& dec = c.model->decoder();
  const TextConfig& cfg = dec.config();
  Prompt p = c.model->prepare(c.inputs, false);
  const int64_t b = p.input_ids.size(0), h_q = cfg.num_attention_heads, dh = cfg.head_dim;
  const CacheSpec bf16{CacheType::kBf16, 8, 4};  // the kernel reads bf16 (or int4) latent stores
  std::unique_ptr<KvCache> cache = dec.make_kv_cache(b, p.input_ids.size(1) + 4, &bf16);
  dec.forward_hidden(p.decoder_input(), cache.get());
  const auto& lc = static_cast<const LatentKvCache&>(*cache);
  const int64_t len = lc.length();
  const double scale = 1.0 / std::sqrt(double(dh));
  at::manual_seed(17);
  for (int64_t l = 0; l < cfg.num_hidden_layers; ++l) {
    const AbsorbedWeights aw = absorbed_weights(cfg, dec.weights().layers[static_cast<size_t>(l)]);
    ASSERT_TRUE(aw.w_in.defined() && aw.w_out.defined());
    const at::Tensor q = at::randn({b, h_q, 1, dh});
    const at::Tensor start = at::zeros({b}, at::kInt), length = at::full({b}, len, at::kInt);
    const at::Tensor got = mla_attention_absorbed_kernel(cfg, aw, q, lc, l, start, length, len, scale);
    // the decoder's form: the rotated dims apart (q_rot) and q's own first R dims unread, whatever they hold
    const int64_t R = cfg.mla->qk_rope_head_dim;
    const at::Tensor q_unrotated = at::cat({at::randn({b, h_q, 1, R}) * 100, q.narrow(-1, R, dh - R)}, -1);
    const at::Tensor apart =
        mla_attention_absorbed_kernel(cfg, aw, q_unrotated, lc, l, start, length, len, scale, q.narrow(-1, 0, R));
    EXPECT_TRUE(at::equal(apart, got)) << GetParam() << " layer " << l;
    const at::Tensor lat = lc.latent_store(l).plain().narrow(1, 0, len);
    const at::Tensor kr = lc.rope_store(l).plain().narrow(1, 0, len);
    const at::Tensor want = mla_attention_absorbed(cfg, aw, q, lat, kr, lc.modality(len), at::Tensor(), scale);
    ASSERT_EQ(got.sizes(), want.sizes());
    const double err = (got - want).abs().max().item<double>() / want.abs().max().item<double>();
    EXPECT_LT(err, 1e-5) << GetParam() << " layer " << l;
  }
  const CacheSpec fp32{CacheType::kFp32, 8, 4};
  std::unique_ptr<KvCache> plain = dec.make_kv_cache(b, p.input_ids.size(1) + 4, &fp32);
  dec.forward_hidden(p.decoder_input(), plain.get());
  const AbsorbedWeights aw = absorbed_weights(cfg, dec.weights().layers[0]);
  const at::Tensor q = at::randn({b, h_q, 1, dh});
  const at::Tensor start = at::zeros({b}, at::kInt), length = at::full({b}, len, at::kInt);
  const std::string f32 = testing::argument_error(
      [&] {
        mla_attention_absorbed_kernel(cfg, aw, q, static_cast<const LatentKvCache&>(*plain), 0, start, length, len,
                                      scale);
      },
      "a float32 latent store");
  EXPECT_NE(f32.find("bf16 or int4"), std::string::npos) << f32;
}

INSTANTIATE_TEST_SUITE_P(Fixtures, MlaRuntime,
                         ::testing::Values("text/llama3-gqa", "text/qwen2", "vlm/llava", "vlm/llava-next",
                                           "vlm/qwen2_5_vl"),
                         [](const auto& info) {
                           std::string n = info.param.substr(info.param.find('/') + 1);
                           for (char& ch : n) ch = std::isalnum(static_cast<unsigned char>(ch)) ? ch : '_';
                           return n;
                         });

// The absorbed products per kv head (one bmm with the sequences' rows stacked) equal at::matmul's broadcast
// of the weights over the sequences, for one sequence and several, strided inputs (a narrowed last dim, as
// the decode step's output buffer is) and contiguous results; shapes that do not fit are clear errors. The
// switch's other side (VLM2MLA_KV_HEAD_BMM=0) is that broadcast.
TEST(KvHeadProduct, EqualsTheBroadcastMatmul) {
  at::manual_seed(5);
  const auto f64 = at::TensorOptions().dtype(at::kDouble);
  const testing::SwitchRestore restore{set_kv_head_bmm, kv_head_bmm_enabled()};
  for (int64_t b : {1, 3}) {
    for (bool strided : {false, true}) {
      set_kv_head_bmm(true);
      const int64_t h_kv = 4, m = 7, k = 24, n = 10;
      const at::Tensor full = at::randn({b, h_kv, m, k + (strided ? 6 : 0)}, f64);
      const at::Tensor x = full.narrow(-1, 0, k);
      const at::Tensor w = at::randn({h_kv, k, n}, f64);
      const at::Tensor got = kv_head_product(x, w);
      const at::Tensor want = at::matmul(x, w.unsqueeze(0));
      ASSERT_EQ(got.sizes(), want.sizes());
      EXPECT_TRUE(got.is_contiguous());
      EXPECT_LT((got - want).abs().max().item<double>(), 1e-12) << "b " << b << (strided ? " strided" : "");
      set_kv_head_bmm(false);
      const at::Tensor twin = kv_head_product(x, w);
      EXPECT_TRUE(twin.is_contiguous());
      EXPECT_TRUE(at::equal(twin, want)) << "b " << b << (strided ? " strided" : "");
    }
  }
  const std::string heads = testing::argument_error(
      [] { kv_head_product(at::randn({2, 4, 7, 24}), at::randn({2, 24, 10})); }, "4 kv heads against weights of 2");
  EXPECT_NE(heads.find("kv_head_product"), std::string::npos) << heads;
}

// On CUDA its two copies take the fused row copy (VLM2MLA_FUSED_ROW_COPY, on by default): the same bits as
// libtorch's copies, so the products are equal to the bit with the switch on and off, for the decode step's
// shapes (Qwen2.5-VL-7B: 4 kv heads of 7 query heads, d_h 128, 258 absorbed columns; q a view of a wider
// product's rows, the results' rows narrowed from a wider buffer) over bf16 and float32.
TEST(KvHeadProductCuda, FusedRowCopyChangesNoBits) {
  if (!at::hasCUDA() || !mla_decode_has_cuda()) GTEST_SKIP() << "no CUDA device or no CUDA kernels in this build";
  at::manual_seed(6);
  const testing::SwitchRestore bmm{set_kv_head_bmm, kv_head_bmm_enabled()};
  const testing::SwitchRestore copy{set_fused_row_copy, fused_row_copy_enabled()};
  const testing::SwitchRestore head{set_fused_head_product, fused_head_product_enabled()};
  set_kv_head_bmm(true);
  set_fused_head_product(false);  // (the copies are what this compares)
  for (const at::ScalarType dtype : {at::kBFloat16, at::kFloat}) {
    const at::TensorOptions o = at::TensorOptions().dtype(dtype).device(at::kCUDA);
    for (int64_t b : {1, 6}) {
      const at::Tensor qkv = at::randn({b, 28 * 128 + 1024}, o);
      const at::Tensor q = qkv.narrow(1, 0, 28 * 128).view({b, 4, 7, 128});
      const at::Tensor w_in = at::randn({4, 128, 258}, o) * 0.1, w_out = at::randn({4, 258, 128}, o) * 0.1;
      const at::Tensor ox = at::randn({b, 4, 7, 264}, o).narrow(-1, 0, 258);
      std::vector<at::Tensor> on, off;
      for (bool fused : {true, false}) {
        set_fused_row_copy(fused);
        std::vector<at::Tensor>& out = fused ? on : off;
        out.push_back(kv_head_product(q, w_in));
        out.push_back(kv_head_product(ox, w_out));
      }
      for (size_t i = 0; i < on.size(); ++i) {
        EXPECT_TRUE(on[i].is_contiguous());
        EXPECT_TRUE(at::equal(on[i], off[i])) << c10::toString(dtype) << " b " << b << " product " << i;
      }
    }
  }
}

// Up to kFusedHeadProductMaxRows rows a kv head, where the sizes are whole 16-byte pieces (the model's absorbed
// widths: 264 columns), the products take the fused kernel (VLM2MLA_FUSED_HEAD_PRODUCT, on by default): within
// one rounding of the dtype of the bmm's (both round a float32 sum of the same products once), contiguous; more
// rows (b = 40 x 7), float32, or sizes it does not take (258 columns), keep the bmm, bit for bit.
TEST(KvHeadProductCuda, FusedHeadProductEqualsTheBmmToTheRounding) {
  if (!at::hasCUDA() || !mla_decode_has_cuda()) GTEST_SKIP() << "no CUDA device or no CUDA kernels in this build";
  at::manual_seed(7);
  const testing::SwitchRestore bmm{set_kv_head_bmm, kv_head_bmm_enabled()};
  const testing::SwitchRestore head{set_fused_head_product, fused_head_product_enabled()};
  set_kv_head_bmm(true);
  for (const at::ScalarType dtype : {at::kBFloat16, at::kFloat}) {
    const at::TensorOptions o = at::TensorOptions().dtype(dtype).device(at::kCUDA);
    const double ulp = dtype == at::kBFloat16 ? 1.0 / 128 : 1e-5;
    for (int64_t b : {1, 8, 40}) {
      const at::Tensor qkv = at::randn({b, 28 * 128 + 1024}, o);
      const at::Tensor q = qkv.narrow(1, 0, 28 * 128).view({b, 4, 7, 128});
      const at::Tensor w_in = at::randn({4, 128, 264}, o) * 0.1, w_out = at::randn({4, 264, 128}, o) * 0.1;
      const at::Tensor w_odd = at::randn({4, 128, 258}, o) * 0.1;
      const at::Tensor ox = at::randn({b, 4, 7, 264}, o);
      const std::vector<std::pair<at::Tensor, at::Tensor>> products = {{q, w_in}, {ox, w_out}, {q, w_odd}};
      std::vector<at::Tensor> on, off;
      for (bool fused : {true, false}) {
        set_fused_head_product(fused);
        for (const auto& [x, w] : products) (fused ? on : off).push_back(kv_head_product(x, w));
      }
      const bool takes = b * 7 <= kFusedHeadProductMaxRows && dtype == at::kBFloat16;  // float32: the bmm
      for (size_t i = 0; i < on.size(); ++i) {
        const std::string what = std::string(c10::toString(dtype)) + " b " + std::to_string(b) + " product " +
                                 std::to_string(i);
        EXPECT_TRUE(on[i].is_contiguous()) << what;
        const bool fused = i < 2 && takes;
        if (!fused) {
          EXPECT_TRUE(at::equal(on[i], off[i])) << what;
        } else {
          // one ulp of the value, plus both float32 sums' worst error over d terms (d 2^-23 of their magnitudes each:
          // the tensor cores' adds need not round to nearest)
          const auto& [x, w] = products[i];
          const at::Tensor terms = at::matmul(x.to(at::kDouble).abs(), w.to(at::kDouble).abs().unsqueeze(0));
          const at::Tensor diff = (on[i].to(at::kDouble) - off[i].to(at::kDouble)).abs();
          const at::Tensor bound = off[i].to(at::kDouble).abs() * ulp + terms * (2.0 * double(x.size(3)) * 1.1921e-7);
          EXPECT_TRUE((diff <= bound).all().item<bool>()) << what << ": worst excess " << (diff - bound).max().item<double>();
        }
      }
    }
  }
}

// A decode step gathers every layer's kept RoPE dims at once, a long prefill chunk each layer's when asked
// (MlaRopes): either way a layer's cos/sin hold exactly what a gather of its own dims gives.
TEST(MlaRope, OneGatherForAllLayersEqualsEachLayersOwn) {
  const int64_t dh = 16, h_kv = 2, R = 4;
  const std::vector<std::vector<std::vector<int64_t>>> kept = {{{0, 3}, {1, 7}}, {{2, 5}, {0, 1}}, {{6, 7}, {3, 4}}};
  std::vector<at::Tensor> dims;
  for (const auto& layer : kept) dims.push_back(mla_rope_dims(layer, dh));
  const int64_t layers = static_cast<int64_t>(kept.size());
  for (int64_t s : {int64_t(3), MlaRopes::kOneGatherMaxTokens}) {  // b = 2: a step of 6 tokens, one of 8192
    const int64_t b = 2;
    RopeCosSin cs{at::randn({b, s, dh}), at::randn({b, s, dh})};
    const MlaRopes ropes(cs, at::cat(dims), layers, h_kv, R);
    EXPECT_EQ(ropes.one_gather(), s == 3);
    for (int64_t l = 0; l < layers; ++l) {
      const MlaRope r = ropes.layer(l);
      EXPECT_TRUE(at::equal(r.cos, cs.cos.index_select(-1, dims[l]).view({b, s, h_kv, R}))) << l;
      EXPECT_TRUE(at::equal(r.sin, cs.sin.index_select(-1, dims[l]).view({b, s, h_kv, R}))) << l;
    }
    // kv head 1 of layer 1 keeps pairs 0 and 1: dims 0, 1 and their partners 8, 9
    const at::Tensor pairs01 = at::tensor({0, 1, 8, 9}, at::kLong);
    EXPECT_TRUE(at::equal(ropes.layer(1).cos.select(2, 1), cs.cos.index_select(-1, pairs01)));
  }
  EXPECT_THROW(MlaRopes(RopeCosSin{at::randn({1, 1, dh}), at::randn({1, 1, dh})}, dims[0], layers, h_kv, R),
               ArgumentError);  // one layer's dims for three layers
}

TEST(LatentKvCache, BytesEqualTheAnalyticFormula) {
  const std::vector<int64_t> ranks = {64, 96, 64};
  const int64_t rope = 4 * 16, b = 3, cap = 100;
  LatentKvCache bf16(ranks, rope, true, b, cap, CacheSpec{CacheType::kBf16, 64, 128}, at::kFloat, at::kCPU);
  int64_t values = 0;
  for (int64_t r : ranks) values += r + rope;
  EXPECT_EQ(bf16.bytes_per_token(), values * 2 + 1);
  EXPECT_EQ(bf16.bytes_allocated(), b * cap * (values * 2 + 1));
  LatentKvCache int4(ranks, rope, false, b, cap, CacheSpec{CacheType::kInt4, 32, 16}, at::kBFloat16, at::kCPU);
  int64_t per_token = 0, window = 0;
  for (int64_t r : ranks) {
    per_token += r / 2 + 4 * (r / 32) + rope / 2 + 4 * (rope / 32);
    window += (r + rope) * 2 * 16;
  }
  EXPECT_EQ(int4.bytes_per_token(), per_token);
  EXPECT_EQ(int4.bytes_allocated(), b * cap * per_token + b * window);
}

// The step's RoPE in the write's launch is a CUDA kernel's: a CPU cache (or the switch off) writes nothing and returns an
// undefined tensor, leaving the rotation and write_at to the caller (models/mla_attention.h's mla_write_step, whose
// twin it is); the GPU's side is RopeWriteSwitch's and the kernels' tests.
TEST(LatentKvCache, WriteAtRotatingLeavesCpuStoresToTheTwin) {
  const int64_t b = 2, h_kv = 2, R = 8, r = 16;
  LatentKvCache c({r}, h_kv * R, false, b, 8, CacheSpec{CacheType::kBf16, 64, 128}, at::kFloat, at::kCPU);
  const at::Tensor before_latent = c.latent_store(0).plain().clone(), before_rope = c.rope_store(0).plain().clone();
  const at::Tensor cos = at::randn({b, 1, h_kv, R}), sin = at::randn({b, 1, h_kv, R});
  const WriteRope rope{cos, sin, at::randn({b, h_kv, 3, 1, R}), cos.transpose(1, 2).unsqueeze(2),
                       sin.transpose(1, 2).unsqueeze(2)};
  const at::Tensor q = c.write_at_rotating(0, at::randn({b, 1, r}), at::randn({b, 1, h_kv * R}), at::zeros({1}, at::kLong),
                                           {}, {}, rope);
  EXPECT_FALSE(q.defined());
  EXPECT_TRUE(at::equal(c.latent_store(0).plain(), before_latent));
  EXPECT_TRUE(at::equal(c.rope_store(0).plain(), before_rope));
  EXPECT_THROW(c.write_at_rotating(1, at::randn({b, 1, r}), at::randn({b, 1, h_kv * R}), at::zeros({1}, at::kLong), {},
                                   {}, rope),
               ArgumentError);  // one layer
}

// Whether the cache holds an image (the decode steps pass it on: MlaDecodeInputs::holds_image): set by a prefill's
// or a synthetic fill's image positions in any sequence, kept by later text steps, never set without a modality
// store.
TEST(LatentKvCache, HoldsAnImageOnceOneIsRecorded) {
  const CacheSpec spec{CacheType::kBf16, 64, 128};
  const at::TensorOptions mask = at::TensorOptions().dtype(at::kBool);
  LatentKvCache c({8}, 4, true, 2, 16, spec, at::kFloat, at::kCPU);
  EXPECT_FALSE(c.holds_image());
  c.set_modality(at::zeros({2, 3}, mask));  // a text prompt
  c.advance(3);
  EXPECT_FALSE(c.holds_image());
  at::Tensor image = at::zeros({2, 4}, mask);
  image[1][2] = true;  // one image token in the second sequence
  c.set_modality(image);
  c.advance(4);
  EXPECT_TRUE(c.holds_image());
  c.set_modality(at::zeros({2, 1}, mask));  // a decode step's text
  EXPECT_TRUE(c.holds_image());
  LatentKvCache synthetic({8}, 4, true, 2, 16, spec, at::kFloat, at::kCPU);
  synthetic.fill_synthetic(5, at::zeros({2, 5}, mask));
  EXPECT_FALSE(synthetic.holds_image());
  LatentKvCache with_image({8}, 4, true, 2, 16, spec, at::kFloat, at::kCPU);
  with_image.fill_synthetic(5, at::ones({2, 5}, mask));
  EXPECT_TRUE(with_image.holds_image());
  LatentKvCache one_set({8}, 4, false, 2, 16, spec, at::kFloat, at::kCPU);  // no modality store
  one_set.set_modality(at::ones({2, 3}, mask));
  EXPECT_FALSE(one_set.holds_image());
}

// Each sequence's segments of keys of one kind (kvcache/modality_segments.h): a prompt's image gives a mixed tile,
// the image's tiles, a mixed tile and the text; an image at the end, the generated tokens' segment after it (and a
// partial last tile alone); text only, none; more segments than allowed, none; sequences with fewer segments padded.
// Along them, the decode kernel's splits (kernels/split_map.h) hold keys of both kinds only in one-tile splits.
TEST(ModalitySegments, FollowAPromptsImage) {
  const int64_t n = 16 + 2304 + 3000;
  at::Tensor m = at::zeros({3, n}, at::kBool);
  m[0].narrow(0, 16, 2304).fill_(true);   // text, image, text
  m[1].narrow(0, 3000, 2320).fill_(true);  // text, then an image to the end (3000 + 2320 = n)
  at::Tensor seg = modality_segments(m);
  ASSERT_TRUE(seg.defined());
  ASSERT_EQ(seg.scalar_type(), at::kInt);
  const int32_t big = INT32_MAX;
  // sequence 1: tiles 0-45 text, 46 both (2944-3007), 47-82 image, 83 (5312-5319, partial) image: the last run is an
  // image, so the partial tile alone and then the generated tokens' segment from tile 84
  const std::vector<std::vector<int32_t>> want = {
      {0, 1, 36, 37, big, big}, {0, 46, 47, 83, 84, big}, {0, big, big, big, big, big}};
  ASSERT_EQ(seg.size(0), 3);
  ASSERT_EQ(seg.size(1), 6) << seg;  // K = 5 (sequence 1's)
  for (int64_t i = 0; i < 3; ++i)
    for (int64_t k = 0; k < 6; ++k) EXPECT_EQ(seg[i][k].item<int32_t>(), want[i][k]) << i << " " << k << "\n" << seg;
  EXPECT_FALSE(modality_segments(at::zeros({2, 500}, at::kBool)).defined());  // text only
  EXPECT_FALSE(modality_segments(m, 4).defined());                          // sequence 1 has 5
  EXPECT_TRUE(modality_segments(m.to(at::kByte), 5).defined());
  EXPECT_THROW(modality_segments(at::zeros({5}, at::kBool)), ArgumentError);
  // the splits along sequence 0's segments, at several chunk lengths: a split with both kinds is one tile
  const at::Tensor row = seg[0].contiguous();
  const int32_t* bounds = row.data_ptr<int32_t>();
  const int n_seg = int(seg.size(1) - 1), hi = int(n) + 40;  // 40 generated tokens
  for (int tps : {4, 64, 512}) {
    const int splits = ((hi - 1) / 64 + 1 + tps - 1) / tps + n_seg;
    for (int s = 0; s < splits; ++s) {
      int first = 0, end = 0;
      segment_split_tiles(0, hi, s, splits, tps, bounds, n_seg, first, end);
      bool text = false, image = false;
      for (int64_t j = int64_t(first) * 64; j < std::min<int64_t>(n, int64_t(end) * 64); ++j)
        (m[0][j].item<bool>() ? image : text) = true;
      if (text && image) EXPECT_EQ(end - first, 1) << "split " << s << " [" << first << ", " << end << ") at " << tps;
    }
  }
}

// The latent cache keeps them for its decode steps: none for text, set by a prefill chunk with an image (on the
// cache's device), worked out again by a later prefill chunk, kept by decode steps; fill_synthetic sets them too.
// (Tiles of the 300 positions: 0-1 text, 2 image, 3 both, 4 text.)
TEST(LatentKvCache, KeepsTheModalitySegmentsOfItsPrefill) {
  const CacheSpec spec{CacheType::kBf16, 64, 128};
  const at::TensorOptions mask = at::TensorOptions().dtype(at::kBool);
  LatentKvCache c({8}, 4, true, 1, 512, spec, at::kFloat, at::kCPU);
  c.set_modality(at::zeros({1, 100}, mask));
  c.advance(100);
  EXPECT_FALSE(c.modality_segments().defined());
  at::Tensor image = at::zeros({1, 200}, mask);
  image.narrow(1, 28, 100).fill_(true);  // positions 128-227: tiles 2 (image), 3 (both)
  c.set_modality(image);
  c.advance(200);
  ASSERT_TRUE(c.modality_segments().defined());
  EXPECT_TRUE(at::equal(c.modality_segments(), at::tensor({0, 2, 3, 4, INT32_MAX}, at::kInt).view({1, 5})))
      << c.modality_segments();
  const at::Tensor before = c.modality_segments();
  c.set_modality(at::zeros({1, 100}, mask));  // a text chunk: worked out again, the text run longer, the same bounds
  c.advance(100);
  EXPECT_FALSE(c.modality_segments().is_same(before));
  EXPECT_TRUE(at::equal(c.modality_segments(), before)) << c.modality_segments();
  const at::Tensor kept = c.modality_segments();
  c.set_modality(at::zeros({1, 1}, mask));  // a decode step: kept as they are
  EXPECT_TRUE(c.modality_segments().is_same(kept));
  LatentKvCache synthetic({8}, 4, true, 1, 512, spec, at::kFloat, at::kCPU);
  at::Tensor fill = at::zeros({1, 300}, mask);
  fill.narrow(1, 64, 64).fill_(true);
  synthetic.fill_synthetic(300, fill);
  EXPECT_TRUE(at::equal(synthetic.modality_segments(), at::tensor({0, 1, 2, INT32_MAX}, at::kInt).view({1, 4})))
      << synthetic.modality_segments();
}

// ... and each sequence's image bound (image_end: one past its last image position, 0 for none): kept through text
// chunks and text decode steps, raised per sequence by a chunk with an image and by a captured step's image token
// (set_modality_at, on the device), never lowered; set by fill_synthetic; undefined without modality.
TEST(LatentKvCache, KeepsEachSequencesImageBound) {
  const CacheSpec spec{CacheType::kBf16, 64, 128};
  const at::TensorOptions mask = at::TensorOptions().dtype(at::kBool);
  auto bound = [](const LatentKvCache& c) { return std::vector<int32_t>(c.image_end().data_ptr<int32_t>(),
                                                                        c.image_end().data_ptr<int32_t>() + 2); };
  LatentKvCache c({8}, 4, true, 2, 512, spec, at::kFloat, at::kCPU);
  ASSERT_TRUE(c.image_end().defined());
  EXPECT_EQ(c.image_end().scalar_type(), at::kInt);
  c.set_modality(at::zeros({2, 100}, mask));
  c.advance(100);
  EXPECT_EQ(bound(c), (std::vector<int32_t>{0, 0}));
  at::Tensor image = at::zeros({2, 200}, mask);
  image[0].narrow(0, 28, 100).fill_(true);  // sequence 0: positions 128-227
  c.set_modality(image);
  c.advance(200);
  EXPECT_EQ(bound(c), (std::vector<int32_t>{228, 0}));
  c.set_modality(at::zeros({2, 1}, mask));  // a text decode step
  c.advance(1);
  EXPECT_EQ(bound(c), (std::vector<int32_t>{228, 0}));
  // a captured step's tokens at position 301: sequence 1's an image token
  c.set_modality_at(at::tensor({0, 1}, at::kByte).to(at::kBool).view({2, 1}), at::tensor({int64_t(301)}));
  c.advance(1);
  EXPECT_EQ(bound(c), (std::vector<int32_t>{228, 302}));
  c.set_modality_at(at::zeros({2, 1}, mask), at::tensor({int64_t(302)}));
  EXPECT_EQ(bound(c), (std::vector<int32_t>{228, 302}));
  at::Tensor step = at::zeros({2, 1}, mask);  // an eager step's image token at position 302
  step[1][0] = true;
  c.set_modality(step);
  EXPECT_EQ(bound(c), (std::vector<int32_t>{228, 303}));
  LatentKvCache synthetic({8}, 4, true, 2, 512, spec, at::kFloat, at::kCPU);
  at::Tensor fill = at::zeros({2, 300}, mask);
  fill[1].narrow(0, 64, 10).fill_(true);
  synthetic.fill_synthetic(300, fill);
  EXPECT_EQ(bound(synthetic), (std::vector<int32_t>{0, 74}));
  EXPECT_FALSE(LatentKvCache({8}, 4, false, 2, 512, spec, at::kFloat, at::kCPU).image_end().defined());
}

TEST(LatentKvCache, QuantizedRowsRoundTripThroughTheWindowAndGrow) {
  const int64_t b = 2, n = 16;
  CacheSpec spec{CacheType::kInt8, 8, 5};
  RowStore store(b, n, 4, spec, at::kFloat, at::kCPU);  // small capacity: grows
  auto gen = at::detail::createCPUGenerator(1);
  at::Tensor all = at::normal(0.0, 1.0, {b, 23, n}, gen, at::TensorOptions().dtype(at::kFloat));
  int64_t len = 0;
  for (int64_t step : {7, 1, 1, 9, 1, 4}) {
    store.append(all.narrow(1, len, step), len);
    len += step;
    at::Tensor back = store.read(len);
    ASSERT_EQ(back.size(1), len);
    const int64_t q = store.quantized_length(len);
    EXPECT_EQ(q, std::max<int64_t>(0, len - 5));
    // The window is exact; the rest within int8's half step.
    EXPECT_TRUE(at::equal(back.narrow(1, q, len - q), all.narrow(1, q, len - q)));
    if (q > 0) EXPECT_LT((back.narrow(1, 0, q) - all.narrow(1, 0, q)).abs().max().item<double>(), 0.02);
  }
  EXPECT_GE(store.capacity(), 23);
}

TEST(LatentKvCache, UnusableCacheTypesAreClearErrors) {
  Converted c = converted("vlm/qwen2_5_vl");
  const TextConfig& cfg = c.model->text_config();
  CacheSpec bad{CacheType::kInt4, 64, 4};  // 64 does not divide r_kv = 3 n_kv
  const std::string what =
      testing::argument_error([&] { run_generate(*c.model, c.inputs, MlaAttention::kAbsorbed, 2, bad); });
  EXPECT_NE(what.find("--kv-cache: the group size must divide the row width"), std::string::npos) << what;
  EXPECT_NE(what.find("group size 64, row width " + std::to_string(3 * cfg.num_key_value_heads)), std::string::npos)
      << what;
  EXPECT_THROW(cache_type_from_name("int3", "--kv-cache"), ArgumentError);
}

}  // namespace
}  // namespace vlm2mla

namespace vlm2mla {
namespace {

// One decode step on the CUDA decode kernel against the libtorch absorbed form (its twin), bf16 and
// int4 latent caches, on an md-converted Qwen2.5-VL fixture loaded in bfloat16 on the GPU.
TEST(MlaRuntimeCuda, DecodeKernelStepEqualsTheLibtorchForm) {
  if (!at::hasCUDA()) GTEST_SKIP() << "no CUDA device";
  const std::string dir = fixtures_dir() + "/vlm/qwen2_5_vl";
  auto original = Model::load(dir + "/model", LoadOptions{});
  ModelInputs in = ModelInputs::from_tensors(io::read_safetensors(dir + "/inputs.safetensors"), dir);
  CalibrationInputs calib = convert::calibration_inputs(in);
  ConvertOptions o;
  o.rope_strategy = "2-norm";
  o.rope_dims = 4;
  o.svd = SvdMethod::kMd;
  o.kv_rank = {4};
  testing::TempDir tmp;
  convert::write_converted(dir + "/model", tmp.file("mla"), convert::convert_model(*original, o, &calib));
  auto m = Model::load(tmp.file("mla"), LoadOptions{at::kBFloat16, at::Device(at::kCUDA)});
  TextDecoder& dec = const_cast<TextDecoder&>(m->decoder());
  Prompt p = m->prepare(in, false);
  const int64_t b = p.input_ids.size(0);
  for (CacheSpec spec : {CacheSpec{CacheType::kBf16, 8, 4}, CacheSpec{CacheType::kInt4, 8, 4}}) {
    at::Tensor hidden[2];
    for (int kernel = 0; kernel < 2; ++kernel) {
      dec.set_decode_kernel(kernel == 1);
      std::unique_ptr<KvCache> cache = dec.make_kv_cache(b, p.input_ids.size(1) + 4, &spec);
      dec.forward_hidden(p.decoder_input(), cache.get());
      hidden[kernel] = dec.forward_hidden(next_token(p, 7), cache.get()).to(at::kFloat).cpu();
    }
    dec.set_decode_kernel(true);
    const double err = (hidden[1] - hidden[0]).abs().max().item<double>() / hidden[0].abs().max().item<double>();
    std::printf("[decode kernel, %s cache] max rel. difference to the libtorch form: %.3g\n",
                cache_type_name(spec.type), err);
    EXPECT_LT(err, 3e-2) << cache_type_name(spec.type);
  }
}

}  // namespace
}  // namespace vlm2mla

#include "convert/cache_quant_study.h"

namespace vlm2mla {
namespace {

TEST(CacheQuantStudy, ErrorsFallWithBitsAndNeedALatentModel) {
  Converted c = converted("vlm/qwen2_5_vl", 4);
  ModelInputs in = c.inputs;
  CalibrationInputs calib = convert::calibration_inputs(in);
  nlohmann::json r = convert::cache_quant_study(*c.model, calib, convert::QuantStudyOptions{8});
  ASSERT_EQ(r["rows"].size(), 12u);
  EXPECT_EQ(r["positions"].get<int64_t>(), in.input_ids.size(0) * (in.input_ids.size(1) / 8 * 8));
  for (size_t i = 0; i < 12; ++i) {
    const auto& row = r["rows"][i];
    EXPECT_EQ(row["per_layer"].size(), static_cast<size_t>(c.model->text_config().num_hidden_layers));
    EXPECT_GT(row["rel_error"].get<double>(), 0.0) << row.dump();
    if (row["bits"].get<int64_t>() != 2) {  // the next row of the same tensor and grouping has fewer bits
      const auto& fewer = r["rows"][i + 2];
      EXPECT_EQ(fewer["grouping"], row["grouping"]);
      EXPECT_LT(row["rel_error"].get<double>(), fewer["rel_error"].get<double>()) << row.dump();
    }
  }
  auto original = Model::load(fixtures_dir() + "/vlm/qwen2_5_vl/model", LoadOptions{});
  EXPECT_THROW(convert::cache_quant_study(*original, calib, convert::QuantStudyOptions{8}), ArgumentError);
}

}  // namespace
}  // namespace vlm2mla
