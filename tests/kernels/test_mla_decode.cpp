// Absorbed-MLA decode (kernels/ops.h): the CPU reference against a naive per-head float64 loop written
// here independently (bf16 and int4 stores, the window ring, one and two modalities, per-sequence
// start/length), the host validation, and on a CUDA device the kernel against the reference over a
// grid of shapes. MlaDecodeCuda.DISABLED_Bandwidth prints the achieved bandwidth (not an assertion):
//   test_kernels --gtest_also_run_disabled_tests --gtest_filter='*Bandwidth*'
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstdio>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "core/error.h"
#include "kernels/ops.h"
#include "kernels/ref/mla_decode_ref.h"
#include "kvcache/quant.h"
#include "kvcache/modality_segments.h"
#include "support/test_support.h"

#ifdef VLM2MLA_WITH_CUDA_KERNELS
#include <cuda_runtime_api.h>

#include "support/graph_timing.h"
#endif

namespace vlm2mla {
namespace {

// Which tokens are images (n_mod == 2): random per token (every tile mixed), runs of `run` tokens
// alternating text and image (whole tiles of one modality and tiles that straddle a run's end, as images
// in a real context give), all text / all image, or a prompt's one image: `run` image tokens after 16 + (37 i mod
// 64) text tokens in sequence i, text after them (a 1344 x 1344 image gives Qwen2.5-VL 2,304).
enum class Mods { kRandom, kRuns, kText, kImage, kPrompt };

struct Case {
  MlaCacheFormat format = MlaCacheFormat::kBf16;
  Mods mods = Mods::kRandom;
  int64_t run = 200;
  int64_t n_mod = 1, h_q = 4, h_kv = 2, r_kv = 32, d_rope = 8;
  int64_t window = 0, group_c = 32, group_r = 16;
  int64_t t_cap = 0;                    // 0: max(length)
  std::vector<int64_t> start, length;  // per sequence
  bool bias = true;
  double scale = 0.0;  // 0: 2 / sqrt(r_kv + d_rope)
  uint64_t seed = 1;
  int64_t max_length = -1;  // the grid's hint (MlaDecodeInputs::max_length); -1: the longest range
  bool score_clusters = true;  // MlaDecodeInputs::score_clusters (the scores-first kernels' scores pass)
  int64_t wide_warps = 0;      // MlaDecodeInputs::wide_warps (their values pass: 0 the plan's, 8 or 16)

  // Qwen2.5-VL-7B's decode shapes with D = 32 and md: an int4 cache, groups of 64, a 128-position window.
  static Case qwen7b_md_int4(std::vector<int64_t> start, std::vector<int64_t> length) {
    Case c;
    c.format = MlaCacheFormat::kInt4;
    c.n_mod = 2;
    c.h_q = 28;
    c.h_kv = 4;
    c.r_kv = 128;
    c.d_rope = 32;
    c.window = 128;
    c.group_c = 64;
    c.group_r = 64;
    c.start = std::move(start);
    c.length = std::move(length);
    return c;
  }

  int64_t b() const { return int64_t(length.size()); }
  int64_t cap() const { return t_cap > 0 ? t_cap : *std::max_element(length.begin(), length.end()); }
  std::string str() const {
    std::string s = format == MlaCacheFormat::kBf16 ? "bf16" : "int4";
    const char* mod_names[] = {"random", "runs", "text", "image", "prompt"};
    s += " n_mod=" + std::to_string(n_mod) + (n_mod == 2 ? std::string(" mods=") + mod_names[int(mods)] : "") + " h_q=" + std::to_string(h_q) + " h_kv=" + std::to_string(h_kv) +
         " r_kv=" + std::to_string(r_kv) + " R=" + std::to_string(d_rope) + " b=" + std::to_string(b()) +
         " t_cap=" + std::to_string(cap());
    if (format == MlaCacheFormat::kInt4)
      s += " window=" + std::to_string(window) + " G=" + std::to_string(group_c) + "/" + std::to_string(group_r);
    s += " len=[";
    for (int64_t i = 0; i < b() && i < 4; ++i)
      s += (i ? "," : "") + std::to_string(start[i]) + ":" + std::to_string(length[i]);
    return s + (b() > 4 ? ",..]" : "]");
  }
};

// Random inputs on `device`. Queries are rounded through bf16 (the kernel's MMA operands are bf16, so
// this isolates its other roundings); keys are random bf16 or the int4 codes of random values.
MlaDecodeInputs make_inputs(const Case& c, at::Device device) {
  at::manual_seed(c.seed);
  const int64_t b = c.b(), t = c.cap(), hr = c.h_kv * c.d_rope;
  const auto f32 = at::TensorOptions().dtype(at::kFloat).device(device);
  MlaDecodeInputs in;
  in.format = c.format;
  in.qa = at::randn({c.n_mod, b, c.h_q, c.r_kv}, f32).to(at::kBFloat16).to(at::kFloat);
  in.qr = at::randn({b, c.h_q, c.d_rope}, f32).to(at::kBFloat16).to(at::kFloat);
  if (c.bias) in.qb = at::randn({c.n_mod, b, c.h_q}, f32);
  in.start = at::tensor(c.start, at::kLong).to(device);
  in.length = at::tensor(c.length, at::kLong).to(at::kInt).to(device);
  if (c.n_mod == 2) {
    const auto u8 = f32.dtype(at::kByte);
    switch (c.mods) {
      case Mods::kRandom: in.modality = at::randint(0, 2, {b, t}, u8); break;
      case Mods::kText: in.modality = at::zeros({b, t}, u8); break;
      case Mods::kImage: in.modality = at::ones({b, t}, u8); break;
      case Mods::kRuns: {  // sequence i's runs start 37 i tokens later: other tile phases per sequence
        at::Tensor j = at::arange(t, f32.dtype(at::kLong)).view({1, t}) + 37 * at::arange(b, f32.dtype(at::kLong)).view({b, 1});
        in.modality = at::floor_divide(j, c.run).remainder(2).to(at::kByte);
        break;
      }
      case Mods::kPrompt: {
        const at::Tensor j = at::arange(t, f32.dtype(at::kLong)).view({1, t});
        const at::Tensor first = 16 + (37 * at::arange(b, f32.dtype(at::kLong))).remainder(64).view({b, 1});
        in.modality = ((j >= first) & (j < first + c.run)).to(at::kByte);
        break;
      }
    }
  }
  in.scale = c.scale > 0 ? c.scale : 2.0 / std::sqrt(double(c.r_kv + c.d_rope));
  in.max_length = c.max_length;
  in.score_clusters = c.score_clusters;
  in.wide_warps = c.wide_warps;
  switch (c.format) {
    case MlaCacheFormat::kBf16:
      in.latent = at::randn({b, t, c.r_kv}, f32).to(at::kBFloat16);
      in.k_rope = at::randn({b, t, hr}, f32).to(at::kBFloat16);
      break;
    case MlaCacheFormat::kInt4:
      in.latent_q = quantize_rows(at::randn({b, t, c.r_kv}, f32) + 0.5, 4, c.group_c);
      in.k_rope_q = quantize_rows(at::randn({b, t, hr}, f32), 4, c.group_r);
      in.window = c.window;
      if (c.window > 0) {
        in.latent_win = at::randn({b, c.window, c.r_kv}, f32).to(at::kBFloat16);
        in.k_rope_win = at::randn({b, c.window, hr}, f32).to(at::kBFloat16);
      }
      break;
  }
  return in;
}

// The inputs the way the model passes them (mla_attention_absorbed_kernel): qa and qb as strided bf16 views
// of one [b, h_kv, g, n_mod r + n_mod (+1)] product, qr a view with an odd row stride, and the results
// written into views of one bf16 buffer [b, h_kv, g, n_mod r + n_mod (+1)] (odd_out: shifted by one
// element, so bf16 pairs are not 4-byte aligned and the results are copied in instead).
MlaDecodeInputs as_model_views(const MlaDecodeInputs& src, int64_t h_kv, bool odd_out = false) {
  const int64_t n_mod = src.qa.size(0), b = src.qa.size(1), h_q = src.qa.size(2), r = src.qa.size(3);
  const int64_t R = src.qr.size(2), g = h_q / h_kv, nb = src.qb.defined() ? n_mod : 0, n = n_mod * r + nb;
  const auto bf = src.qa.options().dtype(at::kBFloat16);
  MlaDecodeInputs in = src;
  at::Tensor qx = at::zeros({b, h_kv, g, n + n % 2}, bf);
  in.qa = qx.narrow(-1, 0, n_mod * r).view({b, h_q, n_mod, r}).permute({2, 0, 1, 3});
  in.qa.copy_(src.qa);
  if (nb > 0) {
    in.qb = qx.narrow(-1, n_mod * r, n_mod).view({b, h_q, n_mod}).permute({2, 0, 1});
    in.qb.copy_(src.qb);
  }
  at::Tensor qbuf = at::zeros({b, h_q, R + 7}, bf);
  in.qr = qbuf.narrow(-1, 0, R);
  in.qr.copy_(src.qr);
  const int64_t w = n_mod * r + n_mod;
  at::Tensor ox = at::full({b, h_kv, g, w + w % 2 + (odd_out ? 1 : 0)}, 7.0, bf).narrow(-1, odd_out ? 1 : 0, w);
  in.acc_out = ox.narrow(-1, 0, n_mod * r).view({b, h_q, n_mod, r}).permute({2, 0, 1, 3});
  in.mass_out = ox.narrow(-1, n_mod * r, n_mod).view({b, h_q, n_mod}).permute({2, 0, 1});
  return in;
}

// ---- the naive oracle of the reference: one head at a time, one key at a time, float64 -------------
float bf16_value(const at::Tensor& t, int64_t i) {  // t: contiguous bf16 on the CPU
  return static_cast<float>(t.data_ptr<at::BFloat16>()[i]);
}
double int4_value(const QuantizedRows& q, int64_t row, int64_t n, int64_t group, int64_t col) {
  const uint8_t byte = q.data.data_ptr<uint8_t>()[row * (n / 2) + col / 2];
  const int code = (col % 2 == 0) ? (byte & 15) : (byte >> 4);
  const int64_t gi = row * (n / group) + col / group;
  const float s = static_cast<float>(q.scale.data_ptr<at::Half>()[gi]);
  const float l = static_cast<float>(q.lo.data_ptr<at::Half>()[gi]);
  return double(float(code) * s + l);
}

MlaDecodeOutput naive(const Case& c, const MlaDecodeInputs& in) {
  const int64_t b_n = c.b(), t = c.cap(), hr = c.h_kv * c.d_rope, gs = c.h_q / c.h_kv;
  at::Tensor acc = at::zeros({c.n_mod, b_n, c.h_q, c.r_kv}, at::kDouble);
  at::Tensor mass = at::zeros({c.n_mod, b_n, c.h_q}, at::kDouble);
  at::Tensor qa = in.qa.to(at::kDouble), qr = in.qr.to(at::kDouble);
  at::Tensor qb = in.qb.defined() ? in.qb.to(at::kDouble) : at::zeros({c.n_mod, b_n, c.h_q}, at::kDouble);
  auto A = qa.accessor<double, 4>();
  auto Q = qr.accessor<double, 3>();
  auto B = qb.accessor<double, 3>();
  auto ACC = acc.accessor<double, 4>();
  auto M = mass.accessor<double, 3>();
  for (int64_t b = 0; b < b_n; ++b) {
    const int64_t lo = c.start[b], hi = c.length[b];
    const int64_t qlen = c.format == MlaCacheFormat::kInt4 ? std::max<int64_t>(0, hi - c.window) : hi;
    auto latent = [&](int64_t j, int64_t d) -> double {
      if (c.format == MlaCacheFormat::kBf16) return bf16_value(in.latent, (b * t + j) * c.r_kv + d);
      if (j < qlen) return int4_value(in.latent_q, b * t + j, c.r_kv, c.group_c, d);
      return bf16_value(in.latent_win, (b * c.window + j % c.window) * c.r_kv + d);
    };
    auto krope = [&](int64_t j, int64_t d) -> double {
      if (c.format == MlaCacheFormat::kBf16) return bf16_value(in.k_rope, (b * t + j) * hr + d);
      if (j < qlen) return int4_value(in.k_rope_q, b * t + j, hr, c.group_r, d);
      return bf16_value(in.k_rope_win, (b * c.window + j % c.window) * hr + d);
    };
    for (int64_t h = 0; h < c.h_q; ++h) {
      const int64_t g = h / gs;
      std::vector<double> s;
      std::vector<int> mods;
      for (int64_t j = lo; j < hi; ++j) {
        const int m = c.n_mod == 2 ? (in.modality.data_ptr<uint8_t>()[b * t + j] != 0) : 0;
        double dot = B[m][b][h];
        for (int64_t d = 0; d < c.r_kv; ++d) dot += A[m][b][h][d] * latent(j, d);
        for (int64_t d = 0; d < c.d_rope; ++d) dot += Q[b][h][d] * krope(j, g * c.d_rope + d);
        s.push_back(in.scale * dot);
        mods.push_back(m);
      }
      if (s.empty()) continue;
      const double mx = *std::max_element(s.begin(), s.end());
      double total = 0;
      for (double& v : s) total += (v = std::exp(v - mx));
      for (size_t i = 0; i < s.size(); ++i) {
        const double p = s[i] / total;
        M[mods[i]][b][h] += p;
        for (int64_t d = 0; d < c.r_kv; ++d) ACC[mods[i]][b][h][d] += p * latent(lo + int64_t(i), d);
      }
    }
  }
  return {acc, mass, {}};
}

double rel_err(const at::Tensor& got, const at::Tensor& want) {
  at::Tensor g = got.to(at::kCPU).to(at::kDouble), w = want.to(at::kCPU).to(at::kDouble);
  if (!at::isfinite(g).all().item<bool>()) return INFINITY;
  const double denom = w.norm().item<double>();
  const double num = (g - w).norm().item<double>();
  return denom > 0 ? num / denom : num;
}
double max_abs(const at::Tensor& got, const at::Tensor& want) {
  return (got.to(at::kCPU).to(at::kDouble) - want.to(at::kCPU).to(at::kDouble)).abs().max().item<double>();
}

std::vector<Case> cpu_cases() {
  std::vector<Case> cases;
  for (MlaCacheFormat f : {MlaCacheFormat::kBf16, MlaCacheFormat::kInt4}) {
    for (int64_t n_mod : {1, 2}) {
      Case c;
      c.format = f;
      c.n_mod = n_mod;
      c.h_q = 6;
      c.h_kv = 3;
      c.r_kv = 32;
      c.d_rope = 6;
      c.group_c = 16;
      c.group_r = 6;
      c.start = {0, 5, 20, 7};
      c.length = {37, 64, 20, 61};  // the third sequence is empty
      c.t_cap = 64;
      c.window = f == MlaCacheFormat::kInt4 ? 16 : 0;
      c.bias = n_mod == 2;
      c.seed = 11 + n_mod;
      cases.push_back(c);
    }
  }
  Case w = cases.back();  // int4, window longer than some sequences, no ring at all
  w.window = 40;
  w.seed = 5;
  cases.push_back(w);
  w.window = 0;
  w.seed = 6;
  cases.push_back(w);
  return cases;
}

TEST(MlaDecodeRef, MatchesANaivePerHeadLoop) {
  for (const Case& c : cpu_cases()) {
    const MlaDecodeInputs in = make_inputs(c, at::kCPU);
    const MlaDecodeOutput want = naive(c, in);
    const MlaDecodeOutput got = mla_decode_ref(in, at::kDouble);
    EXPECT_LT(max_abs(got.acc, want.acc), 1e-10) << c.str();
    EXPECT_LT(max_abs(got.mass, want.mass), 1e-12) << c.str();
    // the empty sequence gives zeros; the others' masses sum to one
    at::Tensor total = got.mass.sum(0);  // [b, h_q]
    EXPECT_NEAR(total[2].abs().max().item<double>(), 0.0, 0.0) << c.str();
    EXPECT_NEAR(total[0].min().item<double>(), 1.0, 1e-12) << c.str();
    // the CPU dispatch of mla_decode is the reference in float32
    const MlaDecodeOutput cpu = mla_decode(in);
    EXPECT_EQ(cpu.acc.scalar_type(), at::kFloat);
    EXPECT_LT(max_abs(cpu.acc, want.acc), 1e-5) << c.str();
  }
}

TEST(MlaDecodeRef, TwoModalitiesSplitTheProbabilityMass) {
  Case c = cpu_cases()[1];  // bf16, n_mod 2
  MlaDecodeInputs in = make_inputs(c, at::kCPU);
  in.modality.zero_();  // all text: the image accumulator and mass are zero
  MlaDecodeOutput o = mla_decode_ref(in, at::kDouble);
  EXPECT_EQ(o.mass[1].abs().max().item<double>(), 0.0);
  EXPECT_EQ(o.acc[1].abs().max().item<double>(), 0.0);
  // with one modality and that modality's queries, the result is the same
  MlaDecodeInputs one = in;
  one.qa = in.qa.slice(0, 0, 1);
  one.qb = in.qb.slice(0, 0, 1);
  one.modality = at::Tensor();
  MlaDecodeOutput o1 = mla_decode_ref(one, at::kDouble);
  EXPECT_LT(max_abs(o1.acc[0], o.acc[0]), 1e-12);
}

// Strided bf16 query views in, results into the caller's views (the model's layout), on the CPU dispatch:
// the same numbers as the plain call on the same (bf16-valued) queries, rounded to bf16 once.
TEST(MlaDecodeOps, ReadsAndWritesTheModelsViews) {
  for (const Case& c : cpu_cases()) {
    MlaDecodeInputs plain = make_inputs(c, at::kCPU);
    const MlaDecodeInputs views = as_model_views(plain, c.h_kv);
    plain.qa = views.qa.to(at::kFloat).contiguous();
    if (plain.qb.defined()) plain.qb = views.qb.to(at::kFloat).contiguous();
    const MlaDecodeOutput want = mla_decode(plain);
    const MlaDecodeOutput got = mla_decode(views);
    EXPECT_EQ(got.acc.data_ptr(), views.acc_out.data_ptr()) << c.str();
    EXPECT_TRUE(at::equal(views.acc_out, want.acc.to(at::kBFloat16))) << c.str();
    EXPECT_TRUE(at::equal(views.mass_out, want.mass.to(at::kBFloat16))) << c.str();
  }
}

// The decode kernel's names (VLM2MLA_DECODE_KERNEL): every variant's name reads back as that variant, and
// anything else is refused naming the variable and the choices.
TEST(MlaDecodeOps, VariantNamesReadBack) {
  for (MlaDecodeVariant v : {MlaDecodeVariant::kAuto, MlaDecodeVariant::kTensorCore, MlaDecodeVariant::kGeneric,
                             MlaDecodeVariant::kTensorCoreCodes, MlaDecodeVariant::kTensorCoreWarpRows,
                             MlaDecodeVariant::kTensorCoreWarpRowsJoint, MlaDecodeVariant::kWide,
                             MlaDecodeVariant::kWideCluster, MlaDecodeVariant::kWgmma}) {
    EXPECT_EQ(parse_mla_decode_variant(mla_decode_variant_name(v), "X"), v) << mla_decode_variant_name(v);
  }
  EXPECT_STREQ(mla_decode_variant_name(MlaDecodeVariant::kTensorCoreWarpRows), "rows");
  EXPECT_STREQ(mla_decode_variant_name(MlaDecodeVariant::kTensorCoreWarpRowsJoint), "rows-joint");
  EXPECT_STREQ(mla_decode_variant_name(MlaDecodeVariant::kWide), "wide");
  EXPECT_STREQ(mla_decode_variant_name(MlaDecodeVariant::kWideCluster), "wide-cluster");
  EXPECT_STREQ(mla_decode_variant_name(MlaDecodeVariant::kWgmma), "wgmma");
  const std::string what = testing::argument_error([] { parse_mla_decode_variant("fast", "VLM2MLA_DECODE_KERNEL"); });
  EXPECT_NE(what.find("VLM2MLA_DECODE_KERNEL"), std::string::npos) << what;
  EXPECT_NE(what.find("'fast'"), std::string::npos) << what;
  EXPECT_NE(what.find("rows, rows-joint, keys"), std::string::npos) << what;
  EXPECT_NE(what.find("wide"), std::string::npos) << what;
  EXPECT_THROW(parse_mla_decode_variant("", "X"), ArgumentError);
}

// The combine layouts' names (VLM2MLA_DECODE_COMBINE) read back; anything else names the variable and the choices.
TEST(MlaDecodeOps, CombineNamesReadBack) {
  for (MlaDecodeCombine c :
       {MlaDecodeCombine::kAuto, MlaDecodeCombine::kBlock, MlaDecodeCombine::kWarp, MlaDecodeCombine::kColumns})
    EXPECT_EQ(parse_mla_decode_combine(mla_decode_combine_name(c), "X"), c) << mla_decode_combine_name(c);
  EXPECT_STREQ(mla_decode_combine_name(MlaDecodeCombine::kWarp), "warp");
  EXPECT_STREQ(mla_decode_combine_name(MlaDecodeCombine::kColumns), "columns");
  const std::string what =
      testing::argument_error([] { parse_mla_decode_combine("warps", "VLM2MLA_DECODE_COMBINE"); });
  EXPECT_NE(what.find("VLM2MLA_DECODE_COMBINE: unknown combine layout 'warps'"), std::string::npos) << what;
  EXPECT_NE(what.find("auto, block, columns or warp"), std::string::npos) << what;
}

// VLM2MLA_DECODE_MIN_TILES' and VLM2MLA_DECODE_MAX_TILES' parse: unset or empty is the plan's own (0); anything but
// a whole number in [0, 2^20] is an error naming the variable and the value.
TEST(MlaDecodeOps, TilesSettingsParse) {
  for (const char* name : {kEnvDecodeMinTiles, kEnvDecodeMaxTiles}) {
    EXPECT_EQ(parse_decode_tiles(name, nullptr), 0);
    EXPECT_EQ(parse_decode_tiles(name, ""), 0);
    EXPECT_EQ(parse_decode_tiles(name, "0"), 0);
    EXPECT_EQ(parse_decode_tiles(name, "4"), 4);
    EXPECT_EQ(parse_decode_tiles(name, "1048576"), 1 << 20);
    for (const char* bad : {"four", "4x", "-1", "1048577", " ", "99999999999999999999"}) {
      const std::string what = testing::argument_error([&] { parse_decode_tiles(name, bad); });
      EXPECT_NE(what.find(std::string(name) + "='" + bad + "'"), std::string::npos) << bad;
    }
  }
}

// VLM2MLA_DECODE_WIDE_WARPS' parse: 8 or 16 (unset, empty or 0: the plan's own); anything else an error naming the
// variable and the value; and MlaDecodeInputs::wide_warps outside {0, 8, 16} refused by name.
TEST(MlaDecodeOps, WideWarpsSettingParses) {
  EXPECT_EQ(parse_decode_wide_warps(nullptr), 0);
  EXPECT_EQ(parse_decode_wide_warps(""), 0);
  EXPECT_EQ(parse_decode_wide_warps("0"), 0);
  EXPECT_EQ(parse_decode_wide_warps("8"), 8);
  EXPECT_EQ(parse_decode_wide_warps("16"), 16);
  for (const char* bad : {"12", "32", "sixteen", "16 ", "-8"}) {
    const std::string what = testing::argument_error([&] { parse_decode_wide_warps(bad); });
    EXPECT_NE(what.find("VLM2MLA_DECODE_WIDE_WARPS='" + std::string(bad) + "'"), std::string::npos) << bad;
  }
  MlaDecodeInputs in = make_inputs(Case::qwen7b_md_int4({0}, {100}), at::Device(at::kCPU));
  in.wide_warps = 12;
  const std::string what = testing::argument_error([&] { mla_decode(in); });
  EXPECT_NE(what.find("wide_warps must be 0 (the plan's), 8 or 16, got 12"), std::string::npos) << what;
}

// VLM2MLA_DECODE_WGMMA_CONSUMERS' parse: 2 or 3 (unset, empty or 0: the plan's own); anything else an error naming
// the variable and the value; and MlaDecodeInputs::wgmma_consumers outside {0, 2, 3} refused by name (on the CPU too).
// Likewise _PRODUCERS (1 or 2).
TEST(MlaDecodeOps, WgmmaConsumersSettingParses) {
  EXPECT_EQ(parse_decode_wgmma_consumers(nullptr), 0);
  EXPECT_EQ(parse_decode_wgmma_consumers(""), 0);
  EXPECT_EQ(parse_decode_wgmma_consumers("0"), 0);
  EXPECT_EQ(parse_decode_wgmma_consumers("2"), 2);
  EXPECT_EQ(parse_decode_wgmma_consumers("3"), 3);
  for (const char* bad : {"1", "4", "three", "3 ", "-2"}) {
    const std::string what = testing::argument_error([&] { parse_decode_wgmma_consumers(bad); });
    EXPECT_NE(what.find("VLM2MLA_DECODE_WGMMA_CONSUMERS='" + std::string(bad) + "'"), std::string::npos) << bad;
  }
  for (const char* bad : {"3", "two", "-1", "None"}) {
    const std::string what = testing::argument_error([&] { parse_decode_wgmma_producers(bad); });
    EXPECT_NE(what.find("VLM2MLA_DECODE_WGMMA_PRODUCERS='" + std::string(bad) + "'"), std::string::npos) << bad;
  }
  EXPECT_EQ(parse_decode_wgmma_producers(nullptr), 0);
  EXPECT_EQ(parse_decode_wgmma_producers("2"), 2);
  EXPECT_EQ(parse_decode_wgmma_producers("none"), -1);
  MlaDecodeInputs in = make_inputs(Case::qwen7b_md_int4({0}, {100}), at::Device(at::kCPU));
  in.wgmma_consumers = 1;
  std::string what = testing::argument_error([&] { mla_decode(in); });
  EXPECT_NE(what.find("wgmma_consumers must be 0 (the plan's), 2 or 3, got 1"), std::string::npos) << what;
  in.wgmma_consumers = 0;
  in.wgmma_producers = 3;
  what = testing::argument_error([&] { mla_decode(in); });
  EXPECT_NE(what.find("wgmma_producers must be 0 (the plan's), 1, 2 or -1 (none), got 3"), std::string::npos) << what;
  in.wgmma_producers = -2;
  what = testing::argument_error([&] { mla_decode(in); });
  EXPECT_NE(what.find("got -2"), std::string::npos) << what;
}

// take_mla_decode_kernels_used: what ran since the last call, each name once, then nothing.
TEST(MlaDecodeOps, KernelsUsedAreRecordedOnceAndTaken) {
  take_mla_decode_kernels_used();
  Case c;
  c.start = {0, 3};
  c.length = {40, 20};
  const MlaDecodeInputs in = make_inputs(c, at::kCPU);
  mla_decode(in);
  mla_decode(in);
  EXPECT_EQ(take_mla_decode_kernels_used(), std::vector<std::string>{"reference"});
  EXPECT_TRUE(take_mla_decode_kernels_used().empty());
}

// The model's bf16 result views take the kernel's bf16 pair stores (no float32 copy); shifted off 4-byte
// alignment, or with an odd row stride, they do not.
TEST(MlaDecodeOps, ModelViewsTakeBf16PairStores) {
  Case c = Case::qwen7b_md_int4({0, 40}, {150, 70});
  for (int64_t n_mod : {1, 2}) {
    c.n_mod = n_mod;
    const MlaDecodeInputs plain = make_inputs(c, at::kCPU);
    EXPECT_TRUE(bf16_pairs_storable(as_model_views(plain, c.h_kv, false).acc_out)) << n_mod;
    EXPECT_FALSE(bf16_pairs_storable(as_model_views(plain, c.h_kv, true).acc_out)) << n_mod;
  }
  at::Tensor rows = at::zeros({4, 7, 16}, at::kBFloat16);
  EXPECT_TRUE(bf16_pairs_storable(rows));
  EXPECT_TRUE(bf16_pairs_storable(rows.narrow(2, 2, 8)));   // rows of 16, from an even column
  EXPECT_FALSE(bf16_pairs_storable(rows.narrow(2, 1, 8)));  // from an odd one
  EXPECT_FALSE(bf16_pairs_storable(at::zeros({4, 7, 15}, at::kBFloat16).narrow(2, 0, 8)));  // odd row stride
  EXPECT_FALSE(bf16_pairs_storable(rows.transpose(1, 2)));   // last dim not contiguous
}

// The output product's inputs (MlaDecodeInputs::w_out, o_out): both or neither, their shapes and dtypes named; on
// the CPU (no combine kernel) o is never written: the caller takes the product.
TEST(MlaDecodeOps, OutputProductInputsAreCheckedAndTheCpuLeavesThemToTheCaller) {
  const Case c = cpu_cases()[1];
  MlaDecodeInputs in = make_inputs(c, at::kCPU);
  const int64_t used = c.n_mod * c.r_kv + c.n_mod;
  const at::Tensor w_out = at::zeros({c.h_kv, used, 16}, at::kBFloat16);
  const at::Tensor o_out = at::zeros({c.b(), c.h_q, 16}, at::kBFloat16);
  auto expect_error = [&](const at::Tensor& w, const at::Tensor& o, const std::string& needle) {
    MlaDecodeInputs bad = in;
    bad.w_out = w;
    bad.o_out = o;
    const std::string what = testing::argument_error([&] { mla_decode(bad); }, "an error mentioning " + needle);
    EXPECT_NE(what.find(needle), std::string::npos) << what;
  };
  expect_error(w_out, at::Tensor(), "give both w_out and o_out");
  expect_error(at::Tensor(), o_out, "give both w_out and o_out");
  expect_error(w_out.narrow(1, 0, used - 1), o_out, "w_out must be bf16 [h_kv = " + std::to_string(c.h_kv));
  expect_error(w_out.to(at::kFloat), o_out, "w_out must be BFloat16");
  expect_error(w_out, o_out.narrow(2, 0, 8), "o_out must be BFloat16 [b, h_q, d_h]");
  expect_error(w_out, at::zeros({c.b(), c.h_q, 32}, at::kBFloat16).narrow(2, 0, 16), "must be contiguous");
  in.w_out = w_out;
  in.o_out = o_out;
  const MlaDecodeOutput out = mla_decode(in);
  EXPECT_FALSE(out.o.defined());
  EXPECT_TRUE(out.acc.defined());
}

TEST(MlaDecodeOps, ValidationNamesTheTensorAndTheExpectedShape) {
  const Case c = cpu_cases()[1];
  const MlaDecodeInputs good = make_inputs(c, at::kCPU);
  auto expect_error = [&](MlaDecodeInputs in, const std::string& needle) {
    const std::string what = testing::argument_error([&] { mla_decode(in); }, "an error mentioning " + needle);
    EXPECT_NE(what.find(needle), std::string::npos) << what;
  };
  MlaDecodeInputs in = good;
  in.latent = good.latent.to(at::kFloat);
  expect_error(in, "latent must be BFloat16 [b, t_cap, r_kv] = [4, 64, 32], got Float");
  in = good;
  in.k_rope = good.k_rope.slice(2, 0, 4);
  expect_error(in, "not a multiple of d_rope");
  in = good;
  in.modality = at::Tensor();
  expect_error(in, "modality is missing");
  in = good;
  in.qr = good.qr.slice(1, 0, 2);
  expect_error(in, "qr must be");
  in = good;
  in.length = at::tensor({37, 65, 20, 61}, at::kLong);
  expect_error(in, "need 0 <= start <= length <= t_cap (64)");
  in = good;
  in.latent = good.latent.transpose(0, 1).contiguous().transpose(0, 1);
  expect_error(in, "latent must be contiguous");
  in = good;
  in.qa = good.qa.to(at::kInt);
  expect_error(in, "qa must be a floating-point tensor");
  in = good;
  in.start = at::tensor({0, 5}, at::kLong);
  expect_error(in, "start must be");
  in = good;
  in.format = MlaCacheFormat::kInt4;
  expect_error(in, "latent_q.data must be uint8");
  in = good;
  in.qa = good.qa.to(at::kMeta);
  expect_error(in, "only CPU and CUDA");
  in = good;
  in.acc_out = at::empty_like(good.qa);
  expect_error(in, "give both acc_out and mass_out");
  in.mass_out = at::empty({2, 4, 6}, at::kHalf);
  expect_error(in, "mass_out must be Float");
  in.acc_out = at::empty({2, 4, 6, 8}, at::kFloat);
  expect_error(in, "acc_out must be");
  if (!mla_decode_has_cuda()) {
    EXPECT_THROW(MlaDecodeLaunch launch(good), ArgumentError);
  }
}

// ---- CUDA --------------------------------------------------------------------------------------------
bool cuda_ready() { return mla_decode_has_cuda() && at::hasCUDA(); }

// Whether device 0 runs the warpgroup-MMA kernel (compute capability 9.0), which kAuto takes for int4 stores at the
// 7B sizes there.
bool wgmma_device() {
  int major = 0, minor = 0;
#ifdef VLM2MLA_WITH_CUDA_KERNELS
  cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, 0);
  cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, 0);
#endif
  return major == 9 && minor == 0;
}

// A kernel's layout: its name without the "-128" ("-128g") that marks the instances built for the
// 7B sizes (MlaDecodeInputs::specialized, on by default; grouped_rows, on over bf16), which run the
// same layouts.
// The latent cache's image bound of a [b, t] modality (LatentKvCache::image_end): one past each sequence's last
// image position, 0 for none.
at::Tensor image_end_of(const at::Tensor& modality) {
  const at::Tensor past = at::arange(1, modality.size(1) + 1, modality.options().dtype(at::kInt));
  return (modality.to(at::kInt) * past).amax(1);
}

std::string layout_of(const std::string& kernel) {
  const size_t at = kernel.rfind("-128");
  const std::string tail = at == std::string::npos ? "" : kernel.substr(at);
  return tail == "-128" || tail == "-128g" ? kernel.substr(0, at) : kernel;
}

// Tolerance of the kernel against the float64 reference, ||got - want|| / ||want|| over all heads: bf16
// P (and, for int4, bf16-rounded dequantized keys) in the tensor-core products with fp32 accumulation
// put it near 2^-9 ~ 2e-3 on random data; 1e-2 leaves room, while a wrong index gives O(1).
constexpr double kRelTol = 1e-2;

struct Stats {
  int n = 0, failed = 0;
  double worst_acc = 0, worst_mass = 0;
  std::string worst_case;

  // One summary line, "[mla_decode <what>] ...", for the device logs (scripts/device/kernels.sh).
  void print(const char* what) const {
    std::printf("[mla_decode %s] %d cases, %d failed, worst acc rel err %.3g (%s), worst mass rel err %.3g\n", what, n,
                failed, worst_acc, worst_case.c_str(), worst_mass);
  }
};

// got within the reference's tolerance (kRelTol, acc and mass), recorded in st; `what` names the case
void expect_within_reference(Stats& st, const MlaDecodeOutput& got, const MlaDecodeOutput& want,
                             const std::string& what) {
  const double ea = rel_err(got.acc, want.acc), em = rel_err(got.mass, want.mass);
  ++st.n;
  st.worst_acc = std::max(st.worst_acc, ea);
  st.worst_mass = std::max(st.worst_mass, em);
  EXPECT_LT(ea, kRelTol) << what;
  EXPECT_LT(em, kRelTol) << what;
}

// (views: the inputs as the model passes them, as_model_views: bf16 query views, results into a bf16 buffer)
void check_case(const Case& c, MlaDecodeVariant variant, Stats& st, bool views = false) {
  MlaDecodeInputs in = make_inputs(c, at::Device(at::kCUDA, 0));
  if (views) in = as_model_views(in, c.h_kv);
  in.variant = variant;
  const MlaDecodeOutput want = mla_decode_ref(in, at::kDouble);
  const MlaDecodeOutput got = mla_decode(in);
  const double ea = rel_err(got.acc, want.acc), em = rel_err(got.mass, want.mass);
  ++st.n;
  if (ea > st.worst_acc) {
    st.worst_acc = ea;
    st.worst_case = c.str();
  }
  st.worst_mass = std::max(st.worst_mass, em);
  const bool ok = ea < kRelTol && em < kRelTol;
  if (!ok) ++st.failed;
  EXPECT_TRUE(ok) << c.str() << " [" << MlaDecodeLaunch(in).kernel() << "]: acc rel err " << ea
                  << ", mass rel err " << em;
}

// The shapes the int4 products on the codes take (MlaDecodeVariant::kTensorCoreCodes, params.h).
bool codes_ok(const Case& c) {
  return c.format == MlaCacheFormat::kInt4 && c.r_kv % 16 == 0 && c.r_kv <= 512 && c.group_c % 16 == 0 &&
         c.group_r % 16 == 0 && c.d_rope % 16 == 0 && c.r_kv / c.group_c <= 8;
}

// Whether `variant` takes the shape (it throws ArgumentError naming why when it does not).
bool takes(const Case& c, MlaDecodeVariant variant) {
  MlaDecodeInputs in = make_inputs(c, at::Device(at::kCUDA, 0));
  in.variant = variant;
  try {
    MlaDecodeLaunch launch(in);
    return true;
  } catch (const ArgumentError&) {
    return false;
  }
}

int64_t group_for(int64_t width, int64_t want) {
  for (int64_t g = want; g >= 8; g /= 2)
    if (width % g == 0) return g;
  return width;
}

TEST(MlaDecodeCuda, KernelMatchesTheReferenceOverAGridOfShapes) {
  if (!cuda_ready()) GTEST_SKIP() << "no CUDA device (or no CUDA in this build)";
  const std::vector<std::pair<int64_t, int64_t>> heads = {{28, 4}, {32, 8}, {32, 32}, {8, 2}};
  const int64_t batches[] = {1, 3, 8};
  std::mt19937_64 rng(2024);
  Stats tc, gen, codes, keys, joint;
  int idx = 0;
  for (int64_t r_kv : {32, 64, 128, 256, 512}) {
    for (int64_t d_rope : {8, 16, 32, 64}) {
      for (auto [h_q, h_kv] : heads) {
        for (int variant = 0; variant < 2; ++variant, ++idx) {
          Case c;
          c.format = variant == 0 ? MlaCacheFormat::kBf16 : MlaCacheFormat::kInt4;
          c.n_mod = 1 + ((idx / 2 + variant) % 2);
          c.h_q = h_q;
          c.h_kv = h_kv;
          c.r_kv = r_kv;
          c.d_rope = d_rope;
          c.window = (c.format == MlaCacheFormat::kInt4 && (idx / 2) % 2 == 0) ? 128 : 0;
          c.group_c = group_for(r_kv, 32 << (idx % 3));
          c.group_r = group_for(h_kv * d_rope, 32 << ((idx + 1) % 3));
          c.bias = idx % 3 != 1;
          c.seed = 100 + idx;
          const int64_t b = batches[idx % 3];
          // lengths up to ~5000, fewer where a token is wide (keeps the float64 reference quick)
          const int64_t width = r_kv + h_kv * d_rope;
          const int64_t max_len = std::max<int64_t>(64, std::min<int64_t>(5000, (24 << 20) / (b * width)));
          std::uniform_int_distribution<int64_t> len(1, max_len);
          for (int64_t i = 0; i < b; ++i) {
            const int64_t l = len(rng);
            c.length.push_back(l);
            c.start.push_back(idx % 4 == 3 ? std::uniform_int_distribution<int64_t>(0, l / 3)(rng) : 0);
          }
          // t_cap: sometimes exactly the longest length, sometimes odd
          c.t_cap = *std::max_element(c.length.begin(), c.length.end()) + (idx % 5 == 0 ? 0 : 1 + 2 * (idx % 7));
          check_case(c, MlaDecodeVariant::kAuto, tc);
          // its twins wherever kAuto took the warp-rows kernel (or the wgmma kernel: the warp-rows kernel too): the
          // split-keys kernel, and for the modality CTAs the joint layout
          const std::string kernel = layout_of(MlaDecodeLaunch(make_inputs(c, at::Device(at::kCUDA, 0))).kernel());
          const bool wgmma = kernel.rfind("wgmma", 0) == 0;
          if ((wgmma || kernel.rfind("tc-rows", 0) == 0) && takes(c, MlaDecodeVariant::kTensorCore))
            check_case(c, MlaDecodeVariant::kTensorCore, keys);
          if (wgmma) check_case(c, MlaDecodeVariant::kTensorCoreWarpRows, joint);
          // two sets: the other layout of the two (kTensorCoreWarpRows runs the modality CTAs where they can)
          if (kernel == "tc-rows-mod" && takes(c, MlaDecodeVariant::kTensorCoreWarpRowsJoint))
            check_case(c, MlaDecodeVariant::kTensorCoreWarpRowsJoint, joint);
          if (kernel == "tc-rows" && c.n_mod == 2 && c.h_q > 16 && takes(c, MlaDecodeVariant::kTensorCoreWarpRows))
            check_case(c, MlaDecodeVariant::kTensorCoreWarpRows, joint);
          if (idx % 8 == 0) check_case(c, MlaDecodeVariant::kGeneric, gen);
          // the products on the codes wherever the tensor-core kernel takes the shape (alignment, shared memory)
          if (codes_ok(c) && takes(c, MlaDecodeVariant::kTensorCoreCodes))
            check_case(c, MlaDecodeVariant::kTensorCoreCodes, codes);
        }
      }
    }
  }
  // edge cases: an empty range, single keys, a window longer than the sequence, r_kv not a multiple of 16
  Case e = Case::qwen7b_md_int4({0, 3, 0, 70}, {1, 3, 100, 300});
  e.t_cap = 320;
  check_case(e, MlaDecodeVariant::kAuto, tc);
  e.format = MlaCacheFormat::kBf16;
  check_case(e, MlaDecodeVariant::kAuto, tc);
  e.r_kv = 40;  // generic (r_kv % 16 != 0), d_rope not a multiple of 8
  e.d_rope = 10;
  e.group_c = 8;
  e.group_r = 8;
  e.format = MlaCacheFormat::kInt4;
  check_case(e, MlaDecodeVariant::kAuto, gen);
  tc.print("grid: tensor-core/auto");
  keys.print("grid: split-keys twin");
  joint.print("grid: other-layout (or warp-rows) twin");
  gen.print("grid: generic");
  codes.print("grid: int4 on codes");
  EXPECT_GT(codes.n, 10);
  EXPECT_GT(keys.n, 40);  // the warp-rows kernel took (at least) that many shapes
  EXPECT_GT(joint.n, 10);  // and both layouts of two-set shapes on that many
}

// The Qwen2.5-VL-7B shape over four sequences (start offsets, lengths from 65 to 3000) with modality pattern
// m, groups of `group`, n_mod sets; the i-th case of a sweep: a 128-position window on even i (int4), no
// k-bias on every third, seed base + i.
Case pattern_case(MlaCacheFormat f, Mods m, int64_t group, int64_t n_mod, int i, int base) {
  Case c = Case::qwen7b_md_int4({0, 150, 0, 5}, {3000, 1234, 65, 129});
  c.format = f;
  c.n_mod = n_mod;
  c.mods = m;
  c.group_c = group;
  c.group_r = group;
  c.window = (f == MlaCacheFormat::kInt4 && i % 2 == 0) ? 128 : 0;
  c.bias = i % 3 != 0;
  c.seed = base + i;
  return c;
}

// The int4 products on the codes: the modality patterns, several head blocks, windows, start offsets, the
// group sizes it takes; and a clear error for the shapes it does not take.
TEST(MlaDecodeCuda, Int4CodesMatchTheReference) {
  if (!cuda_ready()) GTEST_SKIP() << "no CUDA device (or no CUDA in this build)";
  Stats st;
  int seed = 0;
  for (Mods m : {Mods::kRuns, Mods::kRandom, Mods::kText, Mods::kImage}) {
    for (int64_t group : {16, 32, 64}) {
      for (int64_t n_mod : {1, 2}) {
        const Case c = pattern_case(MlaCacheFormat::kInt4, m, group, n_mod, seed++, 700);
        ASSERT_TRUE(codes_ok(c));
        check_case(c, MlaDecodeVariant::kTensorCoreCodes, st);
      }
    }
  }
  Case wide = Case::qwen7b_md_int4({0, 40}, {900, 2100});  // h_q 40 / h_kv 8 (two head blocks), r_kv 64, R 16
  wide.h_q = 40;
  wide.h_kv = 8;
  wide.r_kv = 64;
  wide.d_rope = 16;
  wide.group_c = 16;
  wide.group_r = 32;
  for (int64_t n_mod : {1, 2}) {
    wide.n_mod = n_mod;
    wide.seed = 800 + n_mod;
    check_case(wide, MlaDecodeVariant::kTensorCoreCodes, st);
  }
  st.print("int4 on codes");
  Case bad = Case::qwen7b_md_int4({0}, {100});
  bad.group_c = 8;  // groups must be multiples of 16
  MlaDecodeInputs in = make_inputs(bad, at::Device(at::kCUDA, 0));
  in.variant = MlaDecodeVariant::kTensorCoreCodes;
  const std::string groups = testing::argument_error([&] { mla_decode(in); }, "groups of 8");
  EXPECT_NE(groups.find("multiples of 16"), std::string::npos) << groups;
  bad = Case::qwen7b_md_int4({0}, {100});
  bad.format = MlaCacheFormat::kBf16;
  in = make_inputs(bad, at::Device(at::kCUDA, 0));
  in.variant = MlaDecodeVariant::kTensorCoreCodes;
  EXPECT_THROW(mla_decode(in), ArgumentError);
}

// The cases of the 7B-size instances' tests: both stores, every modality pattern, one set and the two two-set
// layouts (modality CTAs, joint), 24 in all; `odd_group` is the quantization group of every other case.
struct SevenBCase {
  Case c;
  MlaDecodeVariant variant;
  bool mod_ctas;    // two sets as modality CTAs
  bool bf16_joint;  // the layout without 7B-size instances
};
std::vector<SevenBCase> seven_b_cases(int64_t odd_group, int base) {
  std::vector<SevenBCase> out;
  int seed = 0;
  for (MlaCacheFormat f : {MlaCacheFormat::kBf16, MlaCacheFormat::kInt4}) {
    for (Mods m : {Mods::kRuns, Mods::kRandom, Mods::kText, Mods::kImage}) {
      for (int64_t n_mod : {1, 2}) {
        for (MlaDecodeVariant v :
             {MlaDecodeVariant::kTensorCoreWarpRows, MlaDecodeVariant::kTensorCoreWarpRowsJoint}) {
          if (n_mod == 1 && v != MlaDecodeVariant::kTensorCoreWarpRows) continue;
          const bool mod_ctas = n_mod == 2 && v == MlaDecodeVariant::kTensorCoreWarpRows;
          out.push_back({pattern_case(f, m, seed % 2 == 0 ? 64 : odd_group, n_mod, seed, base), v, mod_ctas,
                         n_mod == 2 && !mod_ctas && f == MlaCacheFormat::kBf16});
          ++seed;
        }
      }
    }
  }
  return out;
}

// mla_decode(in) runs `kernel` and gives `want`'s results bit for bit (`than`: what `want` is, for the message).
MlaDecodeOutput expect_same_bits(const MlaDecodeInputs& in, const char* kernel, const MlaDecodeOutput& want,
                                 const std::string& what, const char* than) {
  EXPECT_STREQ(MlaDecodeLaunch(in).kernel(), kernel) << what;
  const MlaDecodeOutput got = mla_decode(in);
  EXPECT_TRUE(at::equal(got.acc, want.acc)) << what << ": acc differs " << than;
  EXPECT_TRUE(at::equal(got.mass, want.mass)) << what << ": mass differs " << than;
  return got;
}

// The warp-rows instances built for r_kv 128, h_kv * d_rope 128 and d_rope 32 (MlaDecodeInputs::specialized,
// on by default) compute what the generic ones compute, bit for bit (the same arithmetic with the sizes as
// constants; over int4, each thread's two pieces fetched at one offset of the two arrays, kFixedPieces), in every
// layout kAuto takes for those sizes (one set; two sets as modality CTAs and, int4 only, joint), over bf16 and int4
// stores with groups of 64, 32 and 16 (a piece's two scales in one load), ragged key ranges and every modality
// pattern, and so stay within the reference's tolerance; other sizes, and the bf16 joint layout, keep the generic
// instance.
TEST(MlaDecodeCuda, SpecializedInstancesEqualTheGenericOnes) {
  if (!cuda_ready()) GTEST_SKIP() << "no CUDA device (or no CUDA in this build)";
  std::vector<SevenBCase> cases = seven_b_cases(32, 1700);
  const std::vector<SevenBCase> sixteen = seven_b_cases(16, 1750);  // (odd seeds: groups of 16)
  cases.insert(cases.end(), sixteen.begin(), sixteen.end());
  EXPECT_EQ(cases.size(), 48u);
  for (const SevenBCase& k : cases) {
    const Case& c = k.c;
    ASSERT_TRUE(c.r_kv == 128 && c.h_kv * c.d_rope == 128 && c.d_rope == 32);
    MlaDecodeInputs in = make_inputs(c, at::Device(at::kCUDA, 0));
    in.variant = k.variant;
    in.grouped_rows = false;  // the masked instance (the grouped-rows twin: GroupedRowsEqualTheMasked)
    in.specialized = false;
    const MlaDecodeOutput generic = mla_decode(in);
    EXPECT_STREQ(MlaDecodeLaunch(in).kernel(), k.mod_ctas ? "tc-rows-mod" : "tc-rows") << c.str();
    in.specialized = true;
    const MlaDecodeOutput spec =
        expect_same_bits(in, k.mod_ctas ? "tc-rows-mod-128" : k.bf16_joint ? "tc-rows" : "tc-rows-128", generic,
                         c.str(), "from the generic instance's");
    const MlaDecodeOutput want = mla_decode_ref(in, at::kDouble);
    EXPECT_LT(rel_err(spec.acc, want.acc), kRelTol) << c.str();
    EXPECT_LT(rel_err(spec.mass, want.mass), kRelTol) << c.str();
  }
  // other sizes: the generic instance, asked or not
  Case other = pattern_case(MlaCacheFormat::kBf16, Mods::kRuns, 32, 1, 0, 1800);
  other.r_kv = 64;
  MlaDecodeInputs in = make_inputs(other, at::Device(at::kCUDA, 0));
  in.specialized = true;
  EXPECT_STREQ(MlaDecodeLaunch(in).kernel(), "tc-rows");
}

// The 7B-size instances' grouped-rows twins (MlaDecodeInputs::grouped_rows, on by default; bf16 caches, 7
// heads per kv group in 8 rows, full tiles unmasked) give the masked instances' results bit for bit: their
// RoPE products add the same terms and exact zeros over fewer groups, and a full tile's masks keep every
// score. Over every modality pattern with runs of 300 tokens (many full tiles, and tiles of both modalities
// at each run's end), ragged key ranges, in both layouts that have them (one set, modality CTAs), over bf16 and
// int4 (since session 18); the int4 joint layout keeps its masked instance, the bf16 joint layout the generic one.
TEST(MlaDecodeCuda, GroupedRowsEqualTheMasked) {
  if (!cuda_ready()) GTEST_SKIP() << "no CUDA device (or no CUDA in this build)";
  std::vector<SevenBCase> cases = seven_b_cases(16, 1900);
  EXPECT_EQ(cases.size(), 24u);
  int grouped = 0;
  for (SevenBCase& k : cases) {
    Case& c = k.c;
    c.run = 300;
    ASSERT_EQ(c.h_q, 7 * c.h_kv);
    MlaDecodeInputs in = make_inputs(c, at::Device(at::kCUDA, 0));
    in.variant = k.variant;
    in.grouped_rows = false;
    const MlaDecodeOutput masked = mla_decode(in);
    in.grouped_rows = true;
    const bool joint = c.n_mod == 2 && !k.mod_ctas;
    const char* want = k.bf16_joint ? "tc-rows"
                       : joint      ? "tc-rows-128"
                       : k.mod_ctas ? "tc-rows-mod-128g"
                                    : "tc-rows-128g";
    expect_same_bits(in, want, masked, c.str(), "from the masked instance's");
    grouped += !joint;
  }
  EXPECT_EQ(grouped, 16);  // 4 patterns x (one set, modality CTAs) x (bf16, int4)
  // grouped rows need 7 heads per kv group: with 8 (h_q 32) the masked instance
  Case eight = pattern_case(MlaCacheFormat::kBf16, Mods::kText, 32, 1, 0, 1970);
  eight.h_q = 32;
  MlaDecodeInputs in = make_inputs(eight, at::Device(at::kCUDA, 0));
  EXPECT_STREQ(MlaDecodeLaunch(in).kernel(), "tc-rows-128");
  const MlaDecodeOutput got = mla_decode(in), want = mla_decode_ref(in, at::kDouble);
  EXPECT_LT(rel_err(got.acc, want.acc), kRelTol) << eight.str();
  // without the 7B-size instance (asked off) the flag changes nothing
  in = make_inputs(pattern_case(MlaCacheFormat::kBf16, Mods::kRuns, 32, 1, 0, 1960), at::Device(at::kCUDA, 0));
  in.specialized = false;
  EXPECT_STREQ(MlaDecodeLaunch(in).kernel(), "tc-rows");
}

// Modality CTAs whose split holds keys of their own modality only walk the tiles in order without the per-tile
// bookkeeping (MlaDecodeInputs::pure_splits, on by default), and over bf16 so do the long pure runs of tiles
// inside a mixed split: the same tiles and scores, so the results are those of the scanned walk bit for bit.
// Over both stores, text-only, image-only and run patterns (runs of 300 tokens: splits of one modality and mixed
// ones; of 5000: mostly one; of 1500 in one split a sequence: pure runs of 23 tiles and mixed tiles between
// them, pure and scanned walks in turn), ragged key ranges, windows (int4: the
// ring's split too), the 7B-size instances and the generic ones (r_kv 64), modality rows as whole 16-byte
// pieces and not (t_cap 3001: the byte-wise scan), and splits longer than a scan window of 256 tiles (24,000
// keys in one split of 375 tiles: with runs of 17,000 the first window is of one modality but the split is not,
// which keeps the scanned walk; text-only, the whole split is pure, which the large batches' one split a
// sequence is).
// The pure splits' launch of their own (MlaDecodeInputs::pure_launch, on by default: an instance with the pure walk
// alone, whose splits the main kernel's CTAs then leave) is compared the same way, and with the pure splits walked in
// the one launch: every case here has an instance of it (the 7B sizes' grouped and masked ones, the generic ones).
TEST(MlaDecodeCuda, PureSplitsEqualTheScanned) {
  if (!cuda_ready()) GTEST_SKIP() << "no CUDA device (or no CUDA in this build)";
  int seed = 0, n = 0;
  auto compare = [&](MlaDecodeInputs in, const std::string& what) {
    in.variant = MlaDecodeVariant::kTensorCoreWarpRows;
    in.pure_splits = false;
    const std::string kernel = MlaDecodeLaunch(in).kernel();
    EXPECT_EQ(layout_of(kernel), "tc-rows-mod") << what;
    EXPECT_FALSE(MlaDecodeLaunch(in).pure_launch()) << what;
    const MlaDecodeOutput scanned = mla_decode(in);
    in.pure_splits = true;
    in.pure_launch = false;
    EXPECT_FALSE(MlaDecodeLaunch(in).pure_launch()) << what;
    expect_same_bits(in, kernel.c_str(), scanned, what, "from the scanned walk's");
    in.pure_launch = true;
    EXPECT_TRUE(MlaDecodeLaunch(in).pure_launch()) << what;
    expect_same_bits(in, kernel.c_str(), scanned, what + " (the pure splits' launch)", "from the scanned walk's");
    ++n;
  };
  for (MlaCacheFormat f : {MlaCacheFormat::kBf16, MlaCacheFormat::kInt4}) {
    for (Mods m : {Mods::kText, Mods::kImage, Mods::kRuns}) {
      for (int64_t run : {300, 5000, 1500}) {
        if (m != Mods::kRuns && run != 300) continue;
        for (int64_t r_kv : {128, 64}) {
          Case c = pattern_case(f, m, 32, 2, seed, 2100);
          c.run = run;
          c.r_kv = r_kv;
          if (run == 1500) c.max_length = 64;  // one split a sequence (of up to 47 tiles)
          if (seed % 3 == 1) c.t_cap = 3001;
          ++seed;
          compare(make_inputs(c, at::Device(at::kCUDA, 0)), c.str());
        }
      }
    }
    Case longer = Case::qwen7b_md_int4({0, 333}, {24000, 20000});
    longer.format = f;
    longer.mods = Mods::kRuns;
    longer.run = 17000;
    longer.max_length = 64;  // one split of 375 tiles: more than one scan window of 256
    longer.seed = 2200 + seed++;
    compare(make_inputs(longer, at::Device(at::kCUDA, 0)), longer.str());
    longer.mods = Mods::kText;
    longer.seed = 2200 + seed++;
    compare(make_inputs(longer, at::Device(at::kCUDA, 0)), longer.str());
  }
  EXPECT_EQ(n, 24);  // per store: 2 text, 2 image, 6 runs, 2 longer splits
}

// The most tiles a split takes (MlaDecodeInputs::max_tiles_per_split) wins over the fewest: sequences of up to
// 6,000 keys, one split each with the fewest at 2^20, 12-13 splits of at most 8 tiles with the most at 8 too, the
// pure ones of a prompt's image (Mods::kPrompt) in the pure launch; both against the reference, both stores. The
// image hint (holds_image) without the image CTAs first caps the modality CTAs' splits at kMaxTilesPerSplitImage
// (64) where the most is unset: 2 splits of the 94-95 tiles; with them first (the default), and in the joint
// layout, the plan's own.
TEST(MlaDecodeCuda, MostTilesASplitWinOverTheFewest) {
  if (!cuda_ready()) GTEST_SKIP() << "no CUDA device (or no CUDA in this build)";
  Stats st;
  int seed = 0;
  for (MlaCacheFormat f : {MlaCacheFormat::kBf16, MlaCacheFormat::kInt4}) {
    for (Mods m : {Mods::kPrompt, Mods::kText}) {
      Case c = Case::qwen7b_md_int4({0, 77, 5}, {6000, 5000, 3100});
      c.format = f;
      c.mods = m;
      c.run = 2304;
      c.seed = 2400 + seed++;
      const std::string what = c.str();
      MlaDecodeInputs in = make_inputs(c, at::Device(at::kCUDA, 0));
      in.variant = MlaDecodeVariant::kTensorCoreWarpRows;  // the modality CTAs at any batch
      in.min_tiles_per_split = 1 << 20;
      const int ring = f == MlaCacheFormat::kInt4 ? 1 : 0;  // (splits() counts int4's ring split)
      EXPECT_EQ(MlaDecodeLaunch(in).splits(), 1 + ring) << what;
      const MlaDecodeOutput one = mla_decode(in);
      in.max_tiles_per_split = 8;
      const MlaDecodeLaunch capped(in);
      EXPECT_GE(capped.splits(), 12 + ring) << what;  // 6,000 keys: 94-95 tiles
      EXPECT_LE(capped.splits(), 13 + ring) << what;
      EXPECT_EQ(capped.pure_launch(), true) << what;
      {  // the image hint, with the most unset: splits of at most 64 tiles (modality CTAs one a modality only)
        MlaDecodeInputs hinted = in;
        hinted.max_tiles_per_split = 0;
        hinted.holds_image = true;
        EXPECT_EQ(MlaDecodeLaunch(hinted).splits(), 1 + ring) << what;  // image CTAs first: the plan's own
        EXPECT_TRUE(MlaDecodeLaunch(hinted).image_first()) << what;
        hinted.image_first = false;
        EXPECT_EQ(MlaDecodeLaunch(hinted).splits(), 2 + ring) << what;
        EXPECT_FALSE(MlaDecodeLaunch(hinted).image_first()) << what;
        hinted.variant = MlaDecodeVariant::kTensorCoreWarpRowsJoint;
        EXPECT_EQ(MlaDecodeLaunch(hinted).splits(), 1 + ring) << what;
        hinted.holds_image = false;
        EXPECT_EQ(MlaDecodeLaunch(hinted).splits(), 1 + ring) << what;
      }
      const MlaDecodeOutput many = mla_decode(in), want = mla_decode_ref(in, at::kDouble);
      for (const MlaDecodeOutput* got : {&one, &many})
        expect_within_reference(st, *got, want, what + (got == &one ? " (one split)" : " (splits of 8 tiles)"));
      // the image's modality CTAs find their tiles in the capped splits too: every head's image mass is there
      if (m == Mods::kPrompt) {
        EXPECT_TRUE(at::all(many.mass[1] > 0).item<bool>()) << what;
      }
    }
  }
  st.print("most tiles a split");
  EXPECT_EQ(st.n, 8);
}

// The image CTAs first (MlaDecodeInputs::image_first, on by default where the keys hold an image): the grid's z
// holds every sequence's image CTAs, then the text CTAs; each CTA writes the partials of its (split, modality) as
// when the two sit side by side in x, so that with the same splits (max_tiles_per_split fixes them) the results
// are bit for bit the same: every modality pattern, both stores (int4 with and without its ring), the 7B-size
// instances and the generic ones (r_kv 64), one split a sequence and many, and the pure launch's instance. With the
// plans' own splits (side by side capped, image first not), both against the float64 reference. The plan takes
// them only with the image hint and the modality CTAs, and where its text CTAs fit one wave (600 sequences do not:
// side by side, capped).
TEST(MlaDecodeCuda, ImageFirstEqualsTheInterleaved) {
  if (!cuda_ready()) GTEST_SKIP() << "no CUDA device (or no CUDA in this build)";
  Stats st;
  int seed = 0, n = 0;
  auto check = [&](MlaDecodeInputs in, const std::string& what) {
    in.variant = MlaDecodeVariant::kTensorCoreWarpRows;
    in.holds_image = true;
    in.image_first = false;
    const std::string kernel = MlaDecodeLaunch(in).kernel();
    EXPECT_EQ(layout_of(kernel), "tc-rows-mod") << what;
    for (int64_t most : {int64_t(8), int64_t(1) << 20}) {  // many splits a sequence; one (the fewest at 2^20)
      in.max_tiles_per_split = most;
      in.min_tiles_per_split = most;
      in.image_first = false;
      const MlaDecodeLaunch side_plan(in);
      EXPECT_FALSE(side_plan.image_first()) << what;
      EXPECT_TRUE(side_plan.pure_launch()) << what;
      const int splits = side_plan.splits();
      const MlaDecodeOutput side = mla_decode(in);
      in.image_first = true;
      const MlaDecodeLaunch first_plan(in);
      EXPECT_TRUE(first_plan.image_first()) << what;
      EXPECT_TRUE(first_plan.pure_launch()) << what;
      EXPECT_EQ(first_plan.splits(), splits) << what;
      expect_same_bits(in, kernel.c_str(), side, what + " (most tiles " + std::to_string(most) + ")",
                       "from the side-by-side CTAs'");
      in.pure_launch = false;  // the main instance alone
      expect_same_bits(in, kernel.c_str(), side, what + " (most tiles " + std::to_string(most) + ", one launch)",
                       "from the side-by-side CTAs'");
      in.pure_launch = true;
      ++n;
    }
    // the plans' own splits; then without the hint, none
    in.max_tiles_per_split = 0;
    in.min_tiles_per_split = 0;
    const MlaDecodeOutput want = mla_decode_ref(in, at::kDouble);
    for (bool first : {false, true}) {
      in.image_first = first;
      expect_within_reference(st, mla_decode(in), want, what + (first ? " (image first)" : " (side by side)"));
    }
    in.holds_image = false;
    EXPECT_FALSE(MlaDecodeLaunch(in).image_first()) << what;
    in.holds_image = true;
    in.variant = MlaDecodeVariant::kTensorCoreWarpRowsJoint;
    EXPECT_FALSE(MlaDecodeLaunch(in).image_first()) << what;
  };
  for (MlaCacheFormat f : {MlaCacheFormat::kBf16, MlaCacheFormat::kInt4}) {
    for (Mods m : {Mods::kPrompt, Mods::kRuns, Mods::kRandom, Mods::kImage, Mods::kText}) {
      for (int64_t r_kv : {128, 64}) {
        Case c = pattern_case(f, m, 32, 2, seed, 2600);  // (int4: the ring at even seeds)
        c.r_kv = r_kv;
        c.run = m == Mods::kPrompt ? 700 : 300;
        ++seed;
        check(make_inputs(c, at::Device(at::kCUDA, 0)), c.str());
      }
    }
    Case prompt = Case::qwen7b_md_int4({0, 77, 5}, {6000, 5000, 3100});
    prompt.format = f;
    prompt.mods = Mods::kPrompt;
    prompt.run = 2304;
    prompt.seed = 2600 + seed++;
    check(make_inputs(prompt, at::Device(at::kCUDA, 0)), prompt.str());
  }
  {  // more sequences than one wave of CTAs holds: side by side, in splits of at most 64 tiles
    Case many = pattern_case(MlaCacheFormat::kBf16, Mods::kPrompt, 32, 2, 0, 2700);
    many.start.assign(600, 0);
    many.length.assign(600, 5000);
    many.run = 700;
    MlaDecodeInputs in = make_inputs(many, at::Device(at::kCUDA, 0));
    in.variant = MlaDecodeVariant::kTensorCoreWarpRows;
    in.holds_image = true;
    const MlaDecodeLaunch wide(in);
    EXPECT_FALSE(wide.image_first()) << many.str();
    EXPECT_EQ(wide.splits(), 2) << many.str();  // 79 tiles
  }
  st.print("image CTAs first");
  EXPECT_EQ(n, 44);     // per store: 5 patterns x 2 widths + the prompt, each at two split sizes
  EXPECT_EQ(st.n, 44);  // the same 22 cases in the plans' own splits, side by side and image first
}

// Splits along each sequence's segments (MlaDecodeInputs::split_bounds): the modality CTAs take them (the joint
// layout ignores them), and any bounds give the reference's results: a prompt's image (bounds on its edges, as the
// latent cache's modality_segments gives them), bounds of no meaning (out of order, past the keys), one split of
// the plan's own (the fewest tiles at 2^20) and its default, a max_length hint far below the lengths (more chunks
// than splits: the last takes the rest), start offsets, int4's ring; both stores. With the image hint the image CTAs
// go first (at any count of waves where the splits follow segments), bit for bit the side-by-side results.
TEST(MlaDecodeCuda, SplitsAlongSegmentsMatchTheReference) {
  if (!cuda_ready()) GTEST_SKIP() << "no CUDA device (or no CUDA in this build)";
  Stats st;
  int seed = 0;
  const int32_t big = INT32_MAX;
  for (MlaCacheFormat f : {MlaCacheFormat::kBf16, MlaCacheFormat::kInt4}) {
    Case c = Case::qwen7b_md_int4({0, 77, 5}, {6000, 5000, 3100});
    c.format = f;
    c.mods = Mods::kPrompt;
    c.run = 2304;
    // sequence i's image: positions [16 + 37 i mod 64, + 2304)
    std::vector<int32_t> prompt;
    for (int i = 0; i < 3; ++i) {
      const int a = 16 + (37 * i) % 64, e = a + 2304;
      prompt.insert(prompt.end(), {0, a / 64 + 1, e / 64, e / 64 + 1, big});
    }
    const at::Tensor edges = at::tensor(prompt, at::kInt).view({3, 5});
    const at::Tensor noise = at::tensor(std::vector<int32_t>{50, 3, 9000, 0, 7, 1, 1, 1, -5, 2, 40, 30}, at::kInt).view({3, 4});
    for (const at::Tensor* bounds : {&edges, &noise}) {
      for (int plan = 0; plan < 3; ++plan) {  // default; one split of the plan's own; a max_length hint of 64
        c.seed = 2500 + seed++;
        if (plan == 2) c.max_length = 64;
        const std::string what = c.str() + (bounds == &edges ? " edges" : " noise") + " plan " + std::to_string(plan);
        MlaDecodeInputs in = make_inputs(c, at::Device(at::kCUDA, 0));
        in.variant = MlaDecodeVariant::kTensorCoreWarpRows;
        if (plan == 1) in.min_tiles_per_split = 1 << 20;
        in.split_bounds = bounds->to(at::kCUDA);
        const int k = int(bounds->size(1) - 1);
        EXPECT_EQ(MlaDecodeLaunch(in).bound_segments(), k) << what;
        const MlaDecodeOutput want = mla_decode_ref(in, at::kDouble), got = mla_decode(in);
        expect_within_reference(st, got, want, what);
        {  // with the image hint: the image CTAs first, the same splits (bounded: no cap), the same bits
          MlaDecodeInputs first = in;
          first.holds_image = true;
          const MlaDecodeLaunch launch(first);
          EXPECT_TRUE(launch.image_first()) << what;
          EXPECT_EQ(launch.splits(), MlaDecodeLaunch(in).splits()) << what;
          expect_same_bits(first, launch.kernel(), got, what + " (image first)", "from the side-by-side CTAs'");
        }
        MlaDecodeInputs joint = in;
        joint.variant = MlaDecodeVariant::kTensorCoreWarpRowsJoint;
        EXPECT_EQ(MlaDecodeLaunch(joint).bound_segments(), 0) << what;
        c.max_length = -1;
      }
    }
    // what it does not take: a clear error naming split_bounds
    MlaDecodeInputs in = make_inputs(c, at::Device(at::kCUDA, 0));
    in.split_bounds = at::zeros({2, 5}, at::TensorOptions().dtype(at::kInt).device(at::kCUDA));
    const std::string what = testing::argument_error([&] { mla_decode(in); });
    EXPECT_NE(what.find("split_bounds must be int32 [b = 3"), std::string::npos) << what;
  }
  st.print("splits along segments");
  EXPECT_EQ(st.n, 12);
}

// The cache's image bound (MlaDecodeInputs::image_end): the modality CTAs read the modality bytes below it only,
// and a split wholly above it is pure text without a read. Any bound at or above the last image position finds
// the same splits pure as the full read, so the same bits: every pattern (a text-only context: bound 0), both
// stores (int4 with its ring at even seeds), the pure splits' launch and the one launch, the exact bound and one
// 300 positions looser, a prompt's image with the splits along its segments too; the reference's tolerance once a
// case; a clear error for a wrong shape.
TEST(MlaDecodeCuda, ImageEndEqualsTheFullRead) {
  if (!cuda_ready()) GTEST_SKIP() << "no CUDA device (or no CUDA in this build)";
  Stats st;
  int seed = 0, n = 0;
  for (MlaCacheFormat f : {MlaCacheFormat::kBf16, MlaCacheFormat::kInt4}) {
    for (Mods m : {Mods::kText, Mods::kPrompt, Mods::kRuns, Mods::kImage, Mods::kRandom}) {
      Case c = pattern_case(f, m, 32, 2, seed, 2800);
      c.run = m == Mods::kPrompt ? 700 : 300;
      ++seed;
      MlaDecodeInputs in = make_inputs(c, at::Device(at::kCUDA, 0));
      in.variant = MlaDecodeVariant::kTensorCoreWarpRows;
      const std::string kernel = MlaDecodeLaunch(in).kernel();
      EXPECT_EQ(layout_of(kernel), "tc-rows-mod") << c.str();
      EXPECT_GT(MlaDecodeLaunch(in).splits(), 1) << c.str();  // splits above a prompt's image, and below it
      const at::Tensor exact = image_end_of(in.modality);
      if (m == Mods::kText) {
        EXPECT_EQ(exact.max().item<int32_t>(), 0) << c.str();
      }
      const at::Tensor segments = m == Mods::kPrompt ? modality_segments(in.modality) : at::Tensor();
      if (m == Mods::kPrompt) {
        ASSERT_TRUE(segments.defined()) << c.str();
      }
      for (bool launch : {true, false}) {
        for (int bounded = 0; bounded < (segments.defined() ? 2 : 1); ++bounded) {
          in.pure_launch = launch;
          in.split_bounds = bounded ? segments.to(in.modality.device()) : at::Tensor();
          in.image_end = at::Tensor();
          const MlaDecodeOutput full = mla_decode(in);
          for (const at::Tensor& bound : {exact, exact + 300}) {
            in.image_end = bound;
            const std::string what = c.str() + (launch ? " pure launch" : " one launch") +
                                     (bounded ? " segments" : "") + (bound.is_same(exact) ? " exact" : " loose");
            expect_same_bits(in, kernel.c_str(), full, what, "from the full read's");
            ++n;
          }
        }
      }
      in.split_bounds = at::Tensor();
      in.image_end = exact;
      expect_within_reference(st, mla_decode(in), mla_decode_ref(in, at::kDouble), c.str());
    }
    // what it does not take: a clear error naming image_end
    MlaDecodeInputs in = make_inputs(pattern_case(f, Mods::kPrompt, 32, 2, 0, 2890), at::Device(at::kCUDA, 0));
    in.image_end = at::zeros({2}, at::TensorOptions().dtype(at::kInt).device(at::kCUDA));
    const std::string what = testing::argument_error([&] { mla_decode(in); });
    EXPECT_NE(what.find("image_end must be int32 [b = 4]"), std::string::npos) << what;
  }
  st.print("image bound");
  EXPECT_EQ(n, 48);     // per store: 5 patterns x 2 launches x 2 bounds, and the prompt along its segments too
  EXPECT_EQ(st.n, 10);
}

// The warpgroup-MMA kernel (MlaDecodeVariant::kWgmma, int4 stores at the 7B sizes, sm_90a): every modality pattern,
// one set and two, groups of 32, 64 and 128, the ring (even seeds), ragged starts and lengths, with and without the
// cache's image bound, a third of them as the model passes them (bf16 query views), against the float64 reference;
// several splits a sequence and many sequences (the producer's tiles two ahead, empty and skipped tiles, both
// consumers); each layout; kAuto's choice of it; and clear errors for what it does not take (misaligned scales too).
TEST(MlaDecodeCuda, WgmmaMatchesTheReference) {
  if (!cuda_ready()) GTEST_SKIP() << "no CUDA device (or no CUDA in this build)";
  {
    MlaDecodeInputs in = make_inputs(pattern_case(MlaCacheFormat::kInt4, Mods::kRuns, 64, 2, 0, 3100),
                                     at::Device(at::kCUDA, 0));
    in.variant = MlaDecodeVariant::kWgmma;
    try {
      MlaDecodeLaunch launch(in);
    } catch (const ArgumentError& e) {
      const std::string what = e.what();
      ASSERT_NE(what.find("compute capability 9.0"), std::string::npos) << what;
      GTEST_SKIP() << what;
    }
  }
  struct Layout {
    int64_t producers, consumers;
  };
  // (producers -1: none, the consumers dequantize their own tiles into the MMAs' registers: "wgmma-0p2c")
  for (const auto [producers, consumers] : {Layout{1, 2}, {1, 3}, {2, 2}, {-1, 2}}) {
    Stats st;
    int seed = 0, image_bound = 0;
    const std::string kernel =
        "wgmma-" + std::to_string(std::max<int64_t>(producers, 0)) + "p" + std::to_string(consumers) + "c";
    for (Mods m : {Mods::kRuns, Mods::kRandom, Mods::kText, Mods::kImage, Mods::kPrompt}) {
      for (int64_t group : {32, 64, 128}) {
        for (int64_t n_mod : {1, 2}) {
          if (n_mod == 1 && m != Mods::kRuns) continue;  // (one set: no modality bytes)
          Case c = pattern_case(MlaCacheFormat::kInt4, m, group, n_mod, seed++, 3100);
          c.run = m == Mods::kPrompt ? 700 : 300;
          c.group_r = group == 32 ? 64 : group;  // the RoPE key's groups apart from the latent's on some
          MlaDecodeInputs in = make_inputs(c, at::Device(at::kCUDA, 0));
          // every third case as the model passes them (bf16 query views at odd strides, results into bf16 views)
          const bool views = seed % 3 == 0;
          if (views) in = as_model_views(in, c.h_kv);
          in.variant = MlaDecodeVariant::kWgmma;
          in.wgmma_consumers = consumers;
          in.wgmma_producers = producers;
          if (n_mod == 2 && seed % 2 == 1) {
            in.image_end = image_end_of(in.modality);
            ++image_bound;
          }
          EXPECT_EQ(MlaDecodeLaunch(in).kernel(), kernel) << c.str();
          EXPECT_GT(MlaDecodeLaunch(in).splits(), 2) << c.str();
          expect_within_reference(st, mla_decode(in), mla_decode_ref(in, at::kDouble),
                                  c.str() + (in.image_end.defined() ? " image bound" : "") + (views ? " views" : ""));
        }
      }
    }
    // many sequences, long and ragged (several splits each, tiles skipped by the image CTAs' bound and the text CTAs
    // over image runs), a window that is not a multiple of 64, and one sequence whose keys all lie in the ring
    {
      std::vector<int64_t> start, length;
      for (int i = 0; i < 24; ++i) {
        start.push_back(i % 5 == 0 || i == 7 ? 0 : 37 * i);
        length.push_back(i == 7 ? 100 : 2000 + 613 * i);
      }
      Case c = Case::qwen7b_md_int4(start, length);
      c.mods = Mods::kPrompt;
      c.run = 1200;
      c.window = 100;
      c.group_c = 32;
      c.group_r = 32;
      c.seed = 3190;
      MlaDecodeInputs in = make_inputs(c, at::Device(at::kCUDA, 0));
      in.variant = MlaDecodeVariant::kWgmma;
      in.wgmma_consumers = consumers;
      in.wgmma_producers = producers;
      in.image_end = image_end_of(in.modality);
      expect_within_reference(st, mla_decode(in), mla_decode_ref(in, at::kDouble), c.str() + " many");
    }
    st.print(kernel.c_str());
    EXPECT_EQ(st.n, 19);  // 6 runs (both set counts), 3 groups x 4 other patterns, many
    EXPECT_GE(image_bound, 5);
  }
  // kAuto takes it (the default layout) wherever it can, the warp-rows kernel where it refuses (groups of 16)
  for (int64_t group : {64, 16}) {
    const MlaDecodeInputs in =
        make_inputs(pattern_case(MlaCacheFormat::kInt4, Mods::kRuns, group, 2, 1, 3199), at::Device(at::kCUDA, 0));
    EXPECT_EQ(layout_of(MlaDecodeLaunch(in).kernel()), group == 64 ? "wgmma-0p2c" : "tc-rows-mod") << group;
  }
  {  // at one sequence kAuto's layout has two producers (the layout without them took 2-7% more time there)
    Case c = Case::qwen7b_md_int4({0}, {3000});
    c.seed = 3193;
    const MlaDecodeInputs in = make_inputs(c, at::Device(at::kCUDA, 0));
    EXPECT_EQ(layout_of(MlaDecodeLaunch(in).kernel()), "wgmma-2p2c");
    Stats st;
    expect_within_reference(st, mla_decode(in), mla_decode_ref(in, at::kDouble), "one sequence, kAuto");
  }
  // what it does not take, by name
  auto refusal = [](const Case& c) {
    MlaDecodeInputs in = make_inputs(c, at::Device(at::kCUDA, 0));
    in.variant = MlaDecodeVariant::kWgmma;
    return testing::argument_error([&] { MlaDecodeLaunch launch(in); }, "wgmma");
  };
  Case bad = pattern_case(MlaCacheFormat::kBf16, Mods::kRuns, 64, 2, 1, 3195);
  std::string what = refusal(bad);
  EXPECT_NE(what.find("int4 caches only"), std::string::npos) << what;
  bad = pattern_case(MlaCacheFormat::kInt4, Mods::kRuns, 64, 2, 1, 3196);
  bad.h_q = 32;
  what = refusal(bad);
  EXPECT_NE(what.find("h_q 32"), std::string::npos) << what;
  bad = pattern_case(MlaCacheFormat::kInt4, Mods::kRuns, 16, 2, 1, 3197);
  what = refusal(bad);
  EXPECT_NE(what.find("groups of 32, 64 or 128 values, got 16"), std::string::npos) << what;
  {  // groups of 32: a producer thread loads its two chunks' scales as one word, so with producers they must be 4-byte
     // aligned (the same scales, one float16 further into their buffer): refused then; kAuto's layout (no producers)
     // takes them, and matches the reference
    MlaDecodeInputs in = make_inputs(pattern_case(MlaCacheFormat::kInt4, Mods::kRuns, 32, 2, 1, 3194),
                                     at::Device(at::kCUDA, 0));
    const at::Tensor s = in.latent_q.scale;
    at::Tensor moved = at::empty({s.numel() + 1}, s.options()).narrow(0, 1, s.numel()).view(s.sizes());
    moved.copy_(s);
    in.latent_q.scale = moved;
    EXPECT_EQ(layout_of(MlaDecodeLaunch(in).kernel()), "wgmma-0p2c");
    Stats st;
    expect_within_reference(st, mla_decode(in), mla_decode_ref(in, at::kDouble), "misaligned scales, no producers");
    in.variant = MlaDecodeVariant::kWgmma;
    in.wgmma_producers = 2;
    what = testing::argument_error([&] { MlaDecodeLaunch launch(in); }, "wgmma, misaligned scales");
    EXPECT_NE(what.find("scales/offsets of groups of 32 are not 4-byte aligned"), std::string::npos) << what;
  }
  MlaDecodeInputs in = make_inputs(pattern_case(MlaCacheFormat::kInt4, Mods::kRuns, 64, 2, 1, 3198),
                                   at::Device(at::kCUDA, 0));
  in.variant = MlaDecodeVariant::kWgmma;
  in.wgmma_consumers = 4;
  what = testing::argument_error([&] { mla_decode(in); }, "4 consumers");
  EXPECT_NE(what.find("wgmma_consumers must be 0 (the plan's), 2 or 3, got 4"), std::string::npos) << what;
  in.wgmma_consumers = 3;
  in.wgmma_producers = 2;
  what = testing::argument_error([&] { mla_decode(in); }, "2 producers with 3 consumers");
  EXPECT_NE(what.find("got 2 producers with 3 consumers"), std::string::npos) << what;
  in.wgmma_producers = -1;  // none: built with 2 consumers only
  what = testing::argument_error([&] { mla_decode(in); }, "no producers with 3 consumers");
  EXPECT_NE(what.find("got 0 producers with 3 consumers"), std::string::npos) << what;
}

// The wgmma kernel replayed from a captured CUDA graph, as the models' decode steps run it, launched programmatically
// (it waits for the kernel ahead before it reads anything) and plainly: the bits of its eager call, in kAuto's two
// layouts (no producers from two sequences, two producer warpgroups at one), with the cache's image bound.
TEST(MlaDecodeCuda, WgmmaInAGraphEqualsEager) {
  if (!cuda_ready() || !wgmma_device()) {
    GTEST_SKIP() << "no device of compute capability 9.0 (or no CUDA in this build)";
  }
#ifdef VLM2MLA_WITH_CUDA_KERNELS
  const testing::SwitchRestore restore{set_programmatic_launch, programmatic_launch_enabled()};
  int n = 0;
  for (const bool programmatic : {true, false}) {
    set_programmatic_launch(programmatic);
    for (const bool one : {false, true}) {
      Case c = one ? Case::qwen7b_md_int4({0}, {3000}) : Case::qwen7b_md_int4({0, 150, 0, 5}, {3000, 1234, 65, 2900});
      c.mods = Mods::kPrompt;
      c.run = 700;
      c.seed = 3300 + n;
      MlaDecodeInputs in = make_inputs(c, at::Device(at::kCUDA, 0));
      in.image_end = image_end_of(in.modality);
      // (as a captured step passes it: no read of the lengths back to the host)
      in.max_length = *std::max_element(c.length.begin(), c.length.end());
      const std::string what = std::string(one ? "one sequence" : "four sequences") +
                               (programmatic ? ", programmatic" : ", plain");
      EXPECT_EQ(layout_of(MlaDecodeLaunch(in).kernel()), one ? "wgmma-2p2c" : "wgmma-0p2c") << what;
      auto both = [&] {
        const MlaDecodeOutput out = mla_decode(in);
        return at::cat({out.acc.flatten(), out.mass.flatten()});
      };
      const at::Tensor eager = both();
      const at::Tensor replayed = testing::replayed_in_a_graph(both);
      EXPECT_TRUE(at::equal(replayed, eager)) << what << ": largest difference "
                                              << (replayed - eager).abs().max().item<float>();
      ++n;
    }
  }
#endif
}

// A kernel shape beyond Qwen2.5-VL-7B's: heads, latent and RoPE widths, int4 group sizes.
struct KvShape {
  int64_t h_q, h_kv, r_kv, d_rope, group_c, group_r;
};
// The Qwen2.5-VL-7B md int4 case over three sequences (starts 0, 40, 7; `length`) at shape sh, in store f with
// n_mod sets, modality pattern m in runs of 100 tokens, a 64-position window for int4.
Case shaped_case(const KvShape& sh, MlaCacheFormat f, int64_t n_mod, Mods m, std::vector<int64_t> length,
                 uint64_t seed) {
  Case c = Case::qwen7b_md_int4({0, 40, 7}, std::move(length));
  c.format = f;
  c.n_mod = n_mod;
  c.mods = m;
  c.run = 100;
  c.h_q = sh.h_q;
  c.h_kv = sh.h_kv;
  c.r_kv = sh.r_kv;
  c.d_rope = sh.d_rope;
  c.group_c = sh.group_c;
  c.group_r = sh.group_r;
  c.window = f == MlaCacheFormat::kInt4 ? 64 : 0;
  c.seed = seed;
  return c;
}

// The warp-rows kernel (kAuto's first choice): both stores, the modality patterns, both int4 group layouts
// (16: two groups per 16-byte piece; 32 and 64: one), windows, start offsets, one and two sets, several
// head blocks, r_kv 256 (the wider O accumulators), r_kv 384 and 512 (column splits: two warps share a row
// block's O and add their partial scores), h_q * n_mod in both m-tile counts; and a clear error
// for the shapes it does not take.
TEST(MlaDecodeCuda, WarpRowsMatchTheReference) {
  if (!cuda_ready()) GTEST_SKIP() << "no CUDA device (or no CUDA in this build)";
  Stats st;
  int seed = 0;
  for (MlaCacheFormat f : {MlaCacheFormat::kBf16, MlaCacheFormat::kInt4}) {
    for (Mods m : {Mods::kRuns, Mods::kRandom, Mods::kText, Mods::kImage}) {
      for (int64_t group : {16, 32, 64}) {
        for (int64_t n_mod : {1, 2}) {
          const Case c = pattern_case(f, m, group, n_mod, seed++, 900);
          check_case(c, MlaDecodeVariant::kTensorCoreWarpRows, st);  // two sets: modality CTAs
          if (n_mod == 2) check_case(c, MlaDecodeVariant::kTensorCoreWarpRowsJoint, st);
        }
      }
    }
  }
  using Shape = KvShape;
  // two head blocks (h_q 40 x 2 modalities = 80 rows); r_kv 256; d_rope 24 (the RoPE tile's pad columns);
  // 20 rows (two m-tiles, four token parts) with groups of 16 (two per 16-byte piece)
  // r_kv 512 (D = 128 of Qwen2.5-VL-7B) and 384 with d_rope 24: column splits (int4: one bf16 stage), modality
  // CTAs for two sets (the joint layout's 4 m-tiles do not take them)
  // MHA (LLaVA-1.5 converted with d_kv 16 and 8: h_kv = h_q = 32, R 32): a RoPE key of 1,024 values a token, too
  // wide for the tiles (bf16) and for a thread's int4 pieces: its scores computed apart (int4: from the quantized
  // store and the ring; groups of 32 and 16 too); r_kv 512 with d_rope 64 (int4: 1,536 pieces a tile) the same way
  for (const Shape& sh : {Shape{40, 8, 64, 16, 32, 32}, Shape{28, 4, 256, 32, 64, 64}, Shape{20, 4, 64, 24, 32, 16},
                          Shape{32, 8, 128, 16, 32, 32}, Shape{28, 4, 512, 32, 64, 64}, Shape{20, 4, 384, 24, 32, 32},
                          Shape{32, 32, 512, 32, 64, 64}, Shape{32, 32, 256, 32, 64, 64},
                          Shape{32, 32, 256, 32, 32, 16}, Shape{28, 4, 512, 64, 64, 64}}) {
    const bool wide = sh.r_kv > 256, mha = sh.h_kv == sh.h_q;
    for (MlaCacheFormat f : {MlaCacheFormat::kBf16, MlaCacheFormat::kInt4}) {
      // the RoPE key too wide for the tiles: MHA; r_kv 512 with h_kv d_rope 256 (bf16: 256 KB of shared memory;
      // int4: 1,536 pieces a tile, more than 5 a thread)
      const bool ext = mha || (sh.r_kv == 512 && sh.h_kv * sh.d_rope == 256);
      for (int64_t n_mod : {1, 2}) {
        const Case c = shaped_case(sh, f, n_mod, Mods::kRuns, {900, 2100, 300}, 900 + seed++);
        check_case(c, MlaDecodeVariant::kTensorCoreWarpRows, st);
        if (n_mod == 2 && !wide && !mha) check_case(c, MlaDecodeVariant::kTensorCoreWarpRowsJoint, st);
        {  // the RoPE scores computed apart exactly where the RoPE key's tile does not fit
          MlaDecodeInputs in = make_inputs(c, at::Device(at::kCUDA, 0));
          in.variant = MlaDecodeVariant::kTensorCoreWarpRows;
          EXPECT_EQ(MlaDecodeLaunch(in).rope_scores(), ext) << c.str();
        }
        if (wide) {  // the plan: two column splits; kAuto takes them too, with modality CTAs at one sequence
          MlaDecodeInputs in = make_inputs(c, at::Device(at::kCUDA, 0));
          in.variant = MlaDecodeVariant::kAuto;
          const MlaDecodeLaunch launch(in);
          EXPECT_EQ(layout_of(launch.kernel()), n_mod == 2 ? "tc-rows-mod" : "tc-rows") << c.str();
          EXPECT_EQ(launch.column_splits(), 2) << c.str();
        }
      }
    }
  }
  st.print("warp rows");
  // which layout runs: modality CTAs where a modality's heads fill more than one m-tile (kAuto: and the batch
  // gives kModalityCtasMinPairs (sequence, head block) pairs: one since 2026-11-30, 16 before), else the joint one
  // (over bf16 stores for kAuto at the 7B sizes: over int4 it takes the wgmma kernel on sm_90a)
  auto kernel_of = [](int64_t h_q, int64_t h_kv, int64_t n_mod, MlaDecodeVariant v, int64_t b = 1,
                      MlaCacheFormat f = MlaCacheFormat::kInt4) {
    Case c = Case::qwen7b_md_int4(std::vector<int64_t>(b, 0), std::vector<int64_t>(b, 100));
    c.format = f;
    c.h_q = h_q;
    c.h_kv = h_kv;
    c.n_mod = n_mod;
    MlaDecodeInputs in = make_inputs(c, at::Device(at::kCUDA, 0));
    in.variant = v;
    return layout_of(MlaDecodeLaunch(in).kernel());
  };
  constexpr MlaCacheFormat kBf16 = MlaCacheFormat::kBf16;
  EXPECT_EQ(kernel_of(28, 4, 2, MlaDecodeVariant::kAuto, 16, kBf16), "tc-rows-mod");
  EXPECT_EQ(kernel_of(28, 4, 2, MlaDecodeVariant::kAuto, 1, kBf16), "tc-rows-mod");
  EXPECT_EQ(kernel_of(28, 4, 2, MlaDecodeVariant::kAuto, 16), wgmma_device() ? "wgmma-0p2c" : "tc-rows-mod");
  EXPECT_EQ(kernel_of(32, 4, 2, MlaDecodeVariant::kAuto, 16), "tc-rows-mod");  // (sizes the wgmma kernel refuses)
  EXPECT_EQ(kernel_of(28, 4, 2, MlaDecodeVariant::kTensorCoreWarpRows), "tc-rows-mod");
  EXPECT_EQ(kernel_of(28, 4, 2, MlaDecodeVariant::kTensorCoreWarpRowsJoint, 16), "tc-rows");
  {  // and what mla_decode records of the kernels it ran (bench's decode_kernels)
    take_mla_decode_kernels_used();
    Case c = Case::qwen7b_md_int4(std::vector<int64_t>(16, 0), std::vector<int64_t>(16, 100));
    mla_decode(make_inputs(c, at::Device(at::kCUDA, 0)));
    const std::vector<std::string> used = take_mla_decode_kernels_used();
    ASSERT_EQ(used.size(), 1u);
    EXPECT_EQ(layout_of(used[0]), wgmma_device() ? "wgmma-0p2c" : "tc-rows-mod");
  }
  EXPECT_EQ(kernel_of(28, 4, 1, MlaDecodeVariant::kAuto, 1, kBf16), "tc-rows");
  EXPECT_EQ(kernel_of(12, 4, 2, MlaDecodeVariant::kTensorCoreWarpRows), "tc-rows");  // 12 heads: joint
  for (int which = 0; which < 8; ++which) {
    Case bad = Case::qwen7b_md_int4({0}, {100});
    const char* want = "r_kv > 256";
    if (which == 0) {  // int4, r_kv <= 128: 2 (r_kv + h_kv d_rope) pieces a tile, at most 2 a thread (the
                       // instances without the external RoPE scores)
      bad.r_kv = 128;
      bad.d_rope = 64;
      want = "too many int4 pieces per thread";
    }
    if (which >= 5) {  // bf16 latents the column splits do not take (6: in the joint layout's 56 rows)
      const std::pair<int64_t, const char*> wide[] = {
          {640, "r_kv > 512"}, {512, "more than 32 rows"}, {272, "not a multiple of 32"}};
      bad.format = MlaCacheFormat::kBf16;
      bad.r_kv = wide[which - 5].first;
      want = wide[which - 5].second;
    }
    if (which == 1) {
      bad.group_c = 8;
      want = "neither 16 nor a multiple of 32";
    }
    if (which == 2 || which == 3) {
      bad.h_q = 8;
      bad.h_kv = 2;
      bad.n_mod = which == 2 ? 1 : 2;  // 8 or 16 rows
      want = "16 rows or fewer";
    }
    if (which == 4) {  // groups of 16 load a piece's two scales as one word: the scales must be 4-byte aligned
      bad.group_c = 16;
      want = "latent_scale/latent_lo are not 4-byte aligned";
    }
    MlaDecodeInputs in = make_inputs(bad, at::Device(at::kCUDA, 0));
    if (which == 4) {  // the same scales, one float16 further into their buffer
      const at::Tensor s = in.latent_q.scale;
      at::Tensor moved = at::empty({s.numel() + 1}, s.options()).narrow(0, 1, s.numel()).view(s.sizes());
      moved.copy_(s);
      in.latent_q.scale = moved;
    }
    in.variant = which == 3 || which == 6 ? MlaDecodeVariant::kTensorCoreWarpRowsJoint
                                          : MlaDecodeVariant::kTensorCoreWarpRows;
    const std::string why = testing::argument_error([&] { mla_decode(in); }, "the warp-rows kernel on " + bad.str());
    EXPECT_NE(why.find(want), std::string::npos) << why;
    in.variant = MlaDecodeVariant::kAuto;  // kAuto falls back to another kernel instead (the joint layout's
                                           // wide latent: to the modality CTAs)
    if (which == 6) {
      EXPECT_EQ(std::string(MlaDecodeLaunch(in).kernel()), "tc-rows-mod") << bad.str();
    } else {
      EXPECT_EQ(std::string(MlaDecodeLaunch(in).kernel()).rfind("tc-rows", 0), std::string::npos) << bad.str();
    }
    if (which == 4) {  // which reads the moved scales right
      const MlaDecodeOutput got = mla_decode(in), want_out = mla_decode_ref(in, at::kDouble);
      EXPECT_LT(rel_err(got.acc, want_out.acc), kRelTol) << bad.str();
    }
  }
}

// The scores-first kernels (kWide: the scores of every key into the workspace, then O per 256-column block):
// kAuto's choice for latents no other tensor-core kernel takes (LLaVA-1.5 converted with d_kv 32 and 64: r_kv
// 1,024 and 2,048, h_kv = h_q = 32, R 32), both stores, one and two sets, the modality patterns, windows, start
// offsets, groups of 16 to 64 (48: groups that split a staged unit of 32 codes unevenly); forced on narrower
// shapes too (the Qwen2.5-VL-7B one, 40 heads: two head blocks, r_kv 320: a column block of 64 columns); and a
// clear error for the shapes it does not take.
TEST(MlaDecodeCuda, WideMatchesTheReference) {
  if (!cuda_ready()) GTEST_SKIP() << "no CUDA device (or no CUDA in this build)";
  // the scores-first kernels (their scores pass in clusters over the latent's columns where its grid is small, as
  // here), the same without those clusters, and their one-pass twin (kWideCluster)
  Stats st, views_st, plain_st, w16_st, cluster_st;
  int seed = 0, ks_seen = 1, cc_major = 0;
#ifdef VLM2MLA_WITH_CUDA_KERNELS
  ASSERT_EQ(cudaDeviceGetAttribute(&cc_major, cudaDevAttrComputeCapabilityMajor, 0), cudaSuccess);
#endif
  struct Shape {
    KvShape kv;
    bool auto_wide;  // kAuto takes the wide kernels for it
  };
  for (const Shape& sh : {Shape{{32, 32, 1024, 32, 64, 64}, true}, Shape{{32, 32, 2048, 32, 32, 16}, true},
                          Shape{{28, 4, 128, 32, 64, 64}, false}, Shape{{40, 8, 320, 16, 32, 32}, false},
                          Shape{{28, 4, 768, 32, 64, 64}, true}, Shape{{28, 4, 768, 32, 48, 32}, true}}) {
    for (MlaCacheFormat f : {MlaCacheFormat::kBf16, MlaCacheFormat::kInt4}) {
      for (int64_t n_mod : {1, 2}) {
        for (Mods m : {Mods::kRuns, Mods::kRandom}) {
          if (n_mod == 1 && m != Mods::kRuns) continue;
          Case c = shaped_case(sh.kv, f, n_mod, m, {700, 1500, 300}, 3100 + seed);
          c.bias = seed++ % 2 == 0;
          check_case(c, MlaDecodeVariant::kWide, st);
          check_case(c, MlaDecodeVariant::kWide, views_st, true);  // (the scores pass copies bf16 query rows)
          check_case(c, MlaDecodeVariant::kWideCluster, cluster_st);
          {  // the scores pass with and without its clusters over the latent's columns (small grids: with)
            MlaDecodeInputs w = make_inputs(c, at::Device(at::kCUDA, 0));
            w.variant = MlaDecodeVariant::kWide;
            const int ks = MlaDecodeLaunch(w).score_ks();
            EXPECT_TRUE(ks == 1 || ks == 2 || ks == 4 || ks == 8) << ks << " " << c.str();
            ks_seen = std::max(ks_seen, ks);
            Case plain = c;
            plain.score_clusters = false;
            w.score_clusters = false;
            EXPECT_EQ(MlaDecodeLaunch(w).score_ks(), 1) << c.str();
            check_case(plain, MlaDecodeVariant::kWide, plain_st);
            Case w16 = c;  // the values pass in 16 warps of 32 columns
            w16.wide_warps = 16;
            MlaDecodeInputs in16 = make_inputs(w16, at::Device(at::kCUDA, 0));
            in16.variant = MlaDecodeVariant::kWide;
            EXPECT_EQ(MlaDecodeLaunch(in16).wide_warps(), 16) << c.str();
            check_case(w16, MlaDecodeVariant::kWide, w16_st);
          }
          MlaDecodeInputs in = make_inputs(c, at::Device(at::kCUDA, 0));
          in.variant = MlaDecodeVariant::kAuto;
          const MlaDecodeLaunch launch(in);
          EXPECT_EQ(std::string(launch.kernel()) == "wide", sh.auto_wide) << launch.kernel() << " " << c.str();
          if (sh.auto_wide) {
            check_case(c, MlaDecodeVariant::kAuto, st);
            EXPECT_TRUE(launch.rope_scores()) << c.str();
          }
        }
      }
    }
  }
  {  // all text, all image (one modality's accumulator empty), and a single key
    Case c = Case::qwen7b_md_int4({0, 0}, {900, 1});
    c.h_q = c.h_kv = 32;
    c.r_kv = 1024;
    for (Mods m : {Mods::kText, Mods::kImage}) {
      c.mods = m;
      c.seed = 3100 + seed++;
      check_case(c, MlaDecodeVariant::kWide, st);
      check_case(c, MlaDecodeVariant::kWideCluster, cluster_st);
    }
  }
  {  // the fewest tiles a split takes (MlaDecodeInputs::min_tiles_per_split): fewer, longer splits, same results
    Case c = Case::qwen7b_md_int4({0}, {4096});  // one sequence of 4,096 keys, bf16, LLaVA-1.5 d_kv 32's shape
    c.format = MlaCacheFormat::kBf16;
    c.window = 0;
    c.h_q = c.h_kv = 32;
    c.r_kv = 1024;
    c.mods = Mods::kRuns;
    c.seed = 3100 + seed++;
    MlaDecodeInputs in = make_inputs(c, at::Device(at::kCUDA, 0));
    in.variant = MlaDecodeVariant::kWide;
    const int default_splits = MlaDecodeLaunch(in).splits();
    in.min_tiles_per_split = 16;
    // (4,096 keys from any offset in a tile: at most 65 tiles, so at most 5 splits of 16)
    EXPECT_LE(MlaDecodeLaunch(in).splits(), 5) << "default " << default_splits;
    EXPECT_GT(default_splits, 5);
    for (MlaDecodeVariant v : {MlaDecodeVariant::kWide, MlaDecodeVariant::kWideCluster}) {
      in.variant = v;
      const MlaDecodeOutput got = mla_decode(in), want = mla_decode_ref(in, at::kDouble);
      EXPECT_LT(rel_err(got.acc, want.acc), kRelTol) << mla_decode_variant_name(v) << " " << c.str();
    }
  }
  st.print("wide");
  views_st.print("wide, the model's views");
  plain_st.print("wide, scores pass without clusters");
  w16_st.print("wide, values pass in 16 warps");
  cluster_st.print("wide-cluster");
  std::printf("[mla_decode wide] the scores pass took clusters of up to %d CTAs\n", ks_seen);
  EXPECT_EQ(ks_seen > 1, cc_major >= 9);  // (three sequences of up to 1,500 keys: 42 CTAs, clusters of 2 on an H200)
  EXPECT_EQ(st.failed, 0);
  EXPECT_EQ(views_st.failed, 0);
  EXPECT_EQ(plain_st.failed, 0);
  EXPECT_EQ(w16_st.failed, 0);
  EXPECT_EQ(cluster_st.failed, 0);
  // what it does not take: a clear error naming the condition
  Case bad = Case::qwen7b_md_int4({0}, {100});
  bad.r_kv = 1000;  // a multiple of 8, not of 64
  bad.group_c = 8;
  MlaDecodeInputs in = make_inputs(bad, at::Device(at::kCUDA, 0));
  in.variant = MlaDecodeVariant::kWide;
  const std::string narrow =
      testing::argument_error([&] { mla_decode(in); }, "the scores-first kernels on " + bad.str());
  EXPECT_NE(narrow.find("r_kv is not a multiple of 64"), std::string::npos) << narrow;
  in.variant = MlaDecodeVariant::kAuto;  // kAuto: the generic kernel, saying why
  const MlaDecodeLaunch launch(in);
  EXPECT_EQ(std::string(launch.kernel()), "generic");
  // the one-pass twin: at most 8 column blocks a cluster
  Case wider = Case::qwen7b_md_int4({0}, {100});
  wider.h_q = wider.h_kv = 4;
  wider.r_kv = 2304;
  MlaDecodeInputs win = make_inputs(wider, at::Device(at::kCUDA, 0));
  win.variant = MlaDecodeVariant::kWideCluster;
  const std::string wide = testing::argument_error([&] { mla_decode(win); }, "the one-pass kernel on " + wider.str());
  EXPECT_NE(wide.find("up to 2048"), std::string::npos) << wide;
  win.variant = MlaDecodeVariant::kWide;
  EXPECT_EQ(std::string(MlaDecodeLaunch(win).kernel()), "wide");
}

// A few small cases of each kernel path (run under compute-sanitizer by scripts/device/kernels.sh).
TEST(MlaDecodeCuda, SmallCases) {
  if (!cuda_ready()) GTEST_SKIP() << "no CUDA device (or no CUDA in this build)";
  Stats st;
  int seed = 0;
  auto small = [&](MlaCacheFormat f, int64_t n_mod) {
    Case c;
    c.format = f;
    c.n_mod = n_mod;
    c.h_q = 12;
    c.h_kv = 3;
    c.r_kv = 64;
    c.d_rope = 24;  // d_rope % 16 == 8: the RoPE tile's pad columns are read
    c.window = f == MlaCacheFormat::kInt4 ? 48 : 0;
    c.group_c = 32;
    c.group_r = 24;
    c.start = {0, 9, 130, 0};
    c.length = {200, 75, 130, 1};
    c.t_cap = 208;
    c.seed = 40 + seed++;
    return c;
  };
  for (MlaCacheFormat f : {MlaCacheFormat::kBf16, MlaCacheFormat::kInt4}) {
    for (int64_t n_mod : {1, 2}) {
      for (MlaDecodeVariant v : {MlaDecodeVariant::kTensorCore, MlaDecodeVariant::kGeneric}) {
        check_case(small(f, n_mod), v, st);
      }
    }
  }
  for (MlaCacheFormat f : {MlaCacheFormat::kBf16, MlaCacheFormat::kInt4}) {  // the warp-rows kernel's shapes
    for (int64_t n_mod : {1, 2}) {
      Case c = small(f, n_mod);
      c.h_q = 20;
      c.h_kv = 4;  // h_kv * d_rope = 96: whole int4 pieces
      c.group_r = 16;
      check_case(c, MlaDecodeVariant::kTensorCoreWarpRows, st);  // two sets: modality CTAs
      if (n_mod == 2) check_case(c, MlaDecodeVariant::kTensorCoreWarpRowsJoint, st);
    }
  }
  for (int64_t n_mod : {1, 2}) {  // the int4 products on the codes (their shapes: groups and d_rope of 16)
    Case c = small(MlaCacheFormat::kInt4, n_mod);
    c.d_rope = 16;
    c.group_c = 16;
    c.group_r = 16;
    check_case(c, MlaDecodeVariant::kTensorCoreCodes, st);
  }
  st.print("small");
}

// Two modalities in runs (tiles of one modality skip the other's products), all text, all image: the
// Qwen2.5-VL-7B shape and a small one with several head blocks, both stores, ranges starting mid-run.
TEST(MlaDecodeCuda, ModalityRunsMatchTheReference) {
  if (!cuda_ready()) GTEST_SKIP() << "no CUDA device (or no CUDA in this build)";
  Stats st;
  int seed = 0;
  for (MlaCacheFormat f : {MlaCacheFormat::kBf16, MlaCacheFormat::kInt4}) {
    for (Mods m : {Mods::kRuns, Mods::kText, Mods::kImage}) {
      for (int shape = 0; shape < 2; ++shape) {
        Case c = Case::qwen7b_md_int4({0, 150, 0}, {3000, 1234, 65});
        c.format = f;
        c.mods = m;
        c.run = shape == 0 ? 300 : 64;  // 64: runs aligned to whole tiles in sequence 0
        if (shape == 1) {
          c.h_q = 40;
          c.h_kv = 8;
          c.r_kv = 64;
          c.d_rope = 16;
          c.group_c = 32;
          c.group_r = 32;
        }
        c.window = f == MlaCacheFormat::kInt4 ? 128 : 0;
        c.seed = 300 + seed++;
        check_case(c, MlaDecodeVariant::kAuto, st);
      }
    }
  }
  st.print("modality runs");
}

// The modality CTAs find the tiles of their modality kThreads (256) tiles at a time: one split walking
// hundreds of tiles (a max_length hint far below the lengths leaves them all to the last split), runs of one
// modality longer than 256 tiles (whole windows without a tile of a CTA's modality) and short runs; both
// stores; against the reference and the joint layout.
TEST(MlaDecodeCuda, ModalityCtasFindTheirTilesInLongSplits) {
  if (!cuda_ready()) GTEST_SKIP() << "no CUDA device (or no CUDA in this build)";
  Stats mod, joint;
  int seed = 0;
  for (MlaCacheFormat f : {MlaCacheFormat::kBf16, MlaCacheFormat::kInt4}) {
    for (int64_t run : {17000, 300}) {
      Case c = Case::qwen7b_md_int4({0, 333}, {24000, 20000});
      c.format = f;
      c.mods = Mods::kRuns;
      c.run = run;
      c.t_cap = run == 300 ? 24001 : 24000;  // rows of whole 16-byte pieces (read as such) or not (bytes)
      c.max_length = 64;  // two tiles: one split (modality CTAs take four tiles or more) walks them all
      c.seed = 1200 + seed++;
      MlaDecodeInputs in = make_inputs(c, at::Device(at::kCUDA, 0));
      in.variant = MlaDecodeVariant::kTensorCoreWarpRows;
      EXPECT_EQ(layout_of(MlaDecodeLaunch(in).kernel()), "tc-rows-mod") << c.str();
      EXPECT_EQ(MlaDecodeLaunch(in).splits(), f == MlaCacheFormat::kInt4 ? 2 : 1) << c.str();
      check_case(c, MlaDecodeVariant::kTensorCoreWarpRows, mod);
      check_case(c, MlaDecodeVariant::kTensorCoreWarpRowsJoint, joint);
    }
  }
  std::printf("[mla_decode long splits] modality CTAs: %d cases, worst acc rel err %.3g; joint layout: %d cases, "
              "worst %.3g\n",
              mod.n, mod.worst_acc, joint.n, joint.worst_acc);
}

// The model's layout on the GPU (as_model_views): the kernel reads the strided bf16 queries in place and
// stores bf16 results into the views (or, shifted off 4-byte alignment, copies them in): the reference
// on the same values, and the kernel's own float32 results rounded once to bf16 (1 bf16 step).
TEST(MlaDecodeCuda, ReadsAndWritesTheModelsViews) {
  if (!cuda_ready()) GTEST_SKIP() << "no CUDA device (or no CUDA in this build)";
  Stats st;
  int seed = 0;
  // Qwen2.5-VL-7B's shape (the warp-rows kernel) and LLaVA-1.5-7B's at d_kv 32 (the scores-first kernels, whose
  // queries load as 16-byte vectors where the views' rows allow: without the k-bias terms)
  for (bool llava : {false, true}) {
    for (MlaCacheFormat f : {MlaCacheFormat::kBf16, MlaCacheFormat::kInt4}) {
      for (int64_t n_mod : {1, 2}) {
        for (bool odd : {false, true}) {
          Case c = Case::qwen7b_md_int4({0, 40}, {1500, 700});
          c.format = f;
          c.n_mod = n_mod;
          c.mods = Mods::kRuns;
          c.bias = !odd;
          c.window = f == MlaCacheFormat::kInt4 ? 128 : 0;
          c.seed = 500 + seed++;
          if (llava) {
            c.h_q = c.h_kv = 32;
            c.r_kv = 1024;
          }
          MlaDecodeInputs plain = make_inputs(c, at::Device(at::kCUDA, 0));
          if (llava) {
            EXPECT_EQ(std::string(MlaDecodeLaunch(plain).kernel()), "wide") << c.str();
          }
          const MlaDecodeInputs views = as_model_views(plain, c.h_kv, odd);
          plain.qa = views.qa.to(at::kFloat).contiguous();
          plain.qr = views.qr.to(at::kFloat).contiguous();
          if (plain.qb.defined()) plain.qb = views.qb.to(at::kFloat).contiguous();
          const MlaDecodeOutput mine = mla_decode(plain);  // float32 results, float32 queries
          const MlaDecodeOutput want = mla_decode_ref(plain, at::kDouble);
          EXPECT_EQ(MlaDecodeLaunch(views).stores_in_place(), !odd) << c.str();  // bf16 pairs, or float32 + copy
          const MlaDecodeOutput got = mla_decode(views);
          EXPECT_EQ(got.acc.data_ptr(), views.acc_out.data_ptr()) << c.str();
          const double ea = rel_err(views.acc_out, want.acc), em = rel_err(views.mass_out, want.mass);
          EXPECT_LT(ea, kRelTol) << c.str() << (odd ? " (copied in)" : "");
          EXPECT_LT(em, kRelTol) << c.str();
          const double step = max_abs(views.acc_out, mine.acc.to(at::kBFloat16));
          EXPECT_EQ(step, 0.0) << c.str() << ": bf16 stores differ from rounding the float32 results";
          EXPECT_EQ(max_abs(views.mass_out, mine.mass.to(at::kBFloat16)), 0.0) << c.str();
          ++st.n;
          st.worst_acc = std::max(st.worst_acc, ea);
        }
      }
    }
  }
  std::printf("[mla_decode model views] %d cases, worst acc rel err %.3g against the reference\n", st.n,
              st.worst_acc);
}

// The combine kernel's two layouts (MlaDecodeInputs::combine): one warp a (sequence, head) against one CTA, the
// same weights and sums in another order, so within float32 rounding of each other, and each within the
// reference's tolerance. Over both stores, one and two sets (text-only: the image accumulators empty), more
// than 32 and 64 splits (a lane's several splits; min_tiles_per_split 1 over one long sequence), wide latents
// (r_kv 1,024: several 128-column passes a lane; the block layout in column chunks, its form below a quarter of
// a wave of its CTAs), empty key ranges, float32 outputs and bf16 model views; kAuto takes the warps from half a
// wave of the block layout's CTAs on.
TEST(MlaDecodeCuda, WarpCombineMatchesBlockCombine) {
  if (!cuda_ready()) GTEST_SKIP() << "no CUDA device (or no CUDA in this build)";
  Stats st;
  double worst_pair = 0;
  int seed = 0;
  int sms = 0;
#ifdef VLM2MLA_WITH_CUDA_KERNELS
  ASSERT_EQ(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, 0), cudaSuccess);
#endif
  auto compare = [&](MlaDecodeInputs in, const std::string& what, bool views) {
    in.combine = MlaDecodeCombine::kBlock;
    const MlaDecodeLaunch block_launch(in);
    EXPECT_FALSE(block_launch.warp_combine()) << what;
    EXPECT_EQ(block_launch.combine_chunks(), 1) << what;
    const MlaDecodeOutput ref = mla_decode_ref(in, at::kDouble);
    MlaDecodeOutput block = mla_decode(in);
    block = {block.acc.clone(), block.mass.clone(), {}};  // (views: the next call writes the same buffer)
    // kAuto's block layout at these 128 pairs: r_kv 1,024 in 2 column chunks on the H200 (a quarter of a wave of
    // 8 CTAs an SM); kColumns: all (4 of 256)
    const int64_t most = std::max<int64_t>(1, in.qa.size(-1) / 256), fill = std::max<int64_t>(1, 2 * sms / 128);
    in.combine = MlaDecodeCombine::kAuto;
    EXPECT_EQ(MlaDecodeLaunch(in).combine_chunks(), std::clamp<int64_t>(fill, 1, most)) << what;
    for (MlaDecodeCombine other : {MlaDecodeCombine::kColumns, MlaDecodeCombine::kWarp}) {
      in.combine = other;
      const MlaDecodeLaunch launch(in);
      EXPECT_EQ(launch.warp_combine(), other == MlaDecodeCombine::kWarp) << what;
      EXPECT_EQ(launch.combine_chunks(), other == MlaDecodeCombine::kColumns ? most : 1) << what;
      MlaDecodeOutput got = mla_decode(in);
      got = {got.acc.clone(), got.mass.clone(), {}};
      const double pair = std::max(rel_err(got.acc, block.acc), rel_err(got.mass, block.mass));
      worst_pair = std::max(worst_pair, pair);
      EXPECT_LT(pair, views ? 4e-3 : 1e-5) << what << " [" << mla_decode_combine_name(other) << ", "
                                           << launch.kernel() << ", " << launch.splits() << " splits]";
      const double ea = rel_err(got.acc, ref.acc), em = rel_err(got.mass, ref.mass);
      EXPECT_LT(ea, kRelTol) << what;
      EXPECT_LT(em, kRelTol) << what;
      ++st.n;
      if (ea > st.worst_acc) {
        st.worst_acc = ea;
        st.worst_case = what + " (" + mla_decode_combine_name(other) + ")";
      }
      st.worst_mass = std::max(st.worst_mass, em);
    }
  };
  for (MlaCacheFormat f : {MlaCacheFormat::kBf16, MlaCacheFormat::kInt4}) {
    for (int64_t n_mod : {1, 2}) {
      for (int64_t r_kv : {128, 1024}) {
        for (Mods m : {Mods::kRuns, Mods::kText}) {
          if (n_mod == 1 && m != Mods::kRuns) continue;
          Case c = Case::qwen7b_md_int4({0, 40, 300, 7}, {5000, 2100, 300, 900});  // the third range is empty
          c.format = f;
          c.n_mod = n_mod;
          c.mods = m;
          c.run = 700;
          c.r_kv = r_kv;
          if (r_kv == 1024) c.h_q = c.h_kv = 32;
          c.window = f == MlaCacheFormat::kInt4 ? 128 : 0;
          c.bias = seed % 2 == 0;
          c.seed = 4200 + seed++;
          MlaDecodeInputs in = make_inputs(c, at::Device(at::kCUDA, 0));
          in.min_tiles_per_split = 1;  // as many splits as the card holds: more than 64 over 5,000 keys
          compare(in, c.str(), false);
          compare(as_model_views(in, c.h_kv), c.str() + " (model views)", true);
        }
      }
    }
  }
  st.print("warp and column-chunk combines");
  std::printf("[mla_decode combine] worst rel difference of the warps and column chunks from the block combine %.3g\n",
              worst_pair);
#ifdef VLM2MLA_WITH_CUDA_KERNELS
  // kAuto: the block layout for a few pairs, the warps from half a wave of its CTAs (8 of them an SM) on
  Case few = Case::qwen7b_md_int4({0, 0}, {300, 200});
  const int64_t b_many = (4 * sms + few.h_q - 1) / few.h_q;
  Case many = Case::qwen7b_md_int4(std::vector<int64_t>(b_many, 0), std::vector<int64_t>(b_many, 100));
  EXPECT_FALSE(MlaDecodeLaunch(make_inputs(few, at::Device(at::kCUDA, 0))).warp_combine());
  Case below = Case::qwen7b_md_int4(std::vector<int64_t>(b_many - 1, 0), std::vector<int64_t>(b_many - 1, 100));
  EXPECT_FALSE(MlaDecodeLaunch(make_inputs(below, at::Device(at::kCUDA, 0))).warp_combine()) << b_many - 1;
  MlaDecodeInputs in = make_inputs(many, at::Device(at::kCUDA, 0));
  EXPECT_TRUE(MlaDecodeLaunch(in).warp_combine()) << b_many << " x " << many.h_q << " pairs on " << sms << " SMs";
  const MlaDecodeOutput want = mla_decode_ref(in, at::kDouble), got = mla_decode(in);
  EXPECT_LT(rel_err(got.acc, want.acc), kRelTol);
  EXPECT_LT(rel_err(got.mass, want.mass), kRelTol);
#endif
}

// The combine with the output product (MlaDecodeInputs::w_out, o_out; MlaDecodePlan::combine_out), against the
// product of the model's bf16 buffer that the plain combine fills (its twin: kv_head_product over that buffer), in
// float64: o = [acc_0 | acc_1 | mass_0 mass_1] . w_out[kv head]. Its sums are the block combine's in the same order,
// so the rows it multiplies are the buffer's bits and o is within one bf16 rounding of the float64 product (plus
// float32 sums' error, far below it). Over both stores, one and two sets (text-only: the image accumulators empty),
// with and without v-bias rows, b = 1 and 4 (an empty key range: zeros), r_kv 128 and 32, d_h 128 and 64 (other
// thread layouts), w_out rows past the used ones (never read); bit for bit on a second run; and where the plan
// leaves it (the warp combine of large batches, a wide latent's column chunks), o undefined and the plain results.
TEST(MlaDecodeCuda, CombineOutEqualsTheProductOfTheBuffer) {
  if (!cuda_ready()) GTEST_SKIP() << "no CUDA device (or no CUDA in this build)";
  const auto bf = at::TensorOptions().dtype(at::kBFloat16).device(at::kCUDA, 0);
  // x: the buffer's rows [b, h_q, n_mod r + n_mod] from the acc_out/mass_out views
  auto rows_of = [](const MlaDecodeInputs& in) {
    const int64_t b = in.acc_out.size(1), h_q = in.acc_out.size(2);
    return at::cat({in.acc_out.permute({1, 2, 0, 3}).reshape({b, h_q, -1}), in.mass_out.permute({1, 2, 0})}, -1)
        .to(at::kDouble);
  };
  double worst = 0;
  int cases = 0, seed = 0;
  for (MlaCacheFormat f : {MlaCacheFormat::kBf16, MlaCacheFormat::kInt4}) {
    for (int64_t n_mod : {1, 2}) {
      for (int shape = 0; shape < 3; ++shape) {
        Case c;  // shape 1: Case's own small model (4 heads, 2 kv heads, r_kv 32, R 8), with d_h 64
        if (shape == 0) c = Case::qwen7b_md_int4({0}, {4000});
        if (shape == 1) {
          c.start = {0};
          c.length = {700};
        }
        if (shape == 2) c = Case::qwen7b_md_int4({0, 40, 300, 7}, {3000, 2100, 300, 900});  // the third is empty
        c.format = f;
        c.n_mod = n_mod;
        c.mods = Mods::kRuns;
        c.run = 500;
        c.window = f == MlaCacheFormat::kInt4 ? 128 : 0;
        c.bias = seed % 2 == 0;
        c.seed = 7100 + seed++;
        const int64_t d_h = shape == 1 ? 64 : 128;
        const MlaDecodeInputs plain = as_model_views(make_inputs(c, at::Device(at::kCUDA, 0)), c.h_kv);
        const int64_t used = n_mod * c.r_kv + n_mod, g = c.h_q / c.h_kv;
        at::Tensor w_out = (at::randn({c.h_kv, used + 5, d_h}, bf.dtype(at::kFloat)) / std::sqrt(double(used))).to(at::kBFloat16);
        if (!c.bias) w_out.narrow(1, n_mod * c.r_kv, n_mod).zero_();  // (the model's rows without v-biases)
        w_out.narrow(1, used, 5).fill_(NAN);  // never read
        const std::string what = c.str() + " d_h=" + std::to_string(d_h);
        mla_decode(plain);
        const at::Tensor x = rows_of(plain);  // [b, h_q, used]
        const at::Tensor wd = w_out.narrow(1, 0, used).to(at::kDouble);
        const at::Tensor xg = x.view({c.b(), c.h_kv, g, used});
        const at::Tensor ref = at::matmul(xg, wd.unsqueeze(0)).view({c.b(), c.h_q, d_h});
        const at::Tensor mag = at::matmul(xg.abs(), wd.abs().unsqueeze(0)).view({c.b(), c.h_q, d_h});
        MlaDecodeInputs in = as_model_views(make_inputs(c, at::Device(at::kCUDA, 0)), c.h_kv);
        in.w_out = w_out;
        in.o_out = at::full({c.b(), c.h_q, d_h}, 3.0, bf);
        const MlaDecodeLaunch launch(in);
        ASSERT_TRUE(launch.combine_out()) << what << ": " << launch.why_not_combine_out();
        take_mla_decode_kernels_used();
        const MlaDecodeOutput got = mla_decode(in);
        const std::vector<std::string> used_names = take_mla_decode_kernels_used();
        EXPECT_NE(std::find(used_names.begin(), used_names.end(), "combine-out"), used_names.end()) << what;
        ASSERT_TRUE(got.o.defined()) << what;
        EXPECT_EQ(got.o.data_ptr(), in.o_out.data_ptr()) << what;
        const at::Tensor o = got.o.to(at::kDouble);
        ASSERT_TRUE(at::isfinite(o).all().item<bool>()) << what;
        const double err =
            ((o - ref).abs() / (ref.abs() * std::ldexp(1.0, -8) + mag * 1e-5 + 1e-30)).max().item<double>();
        EXPECT_LE(err, 1.0) << what << ": against the float64 product of the buffer";
        worst = std::max(worst, err);
        if (shape == 2) {
          EXPECT_EQ(at::count_nonzero(got.o.select(0, 2)).item<int64_t>(), 0) << what << ": an empty range";
        }
        const at::Tensor first = got.o.clone();
        mla_decode(in);
        EXPECT_TRUE(at::equal(first, in.o_out)) << what << ": a second run";
        ++cases;
      }
    }
  }
  std::printf("[mla_decode combine-out] %d cases, worst error %.3g of the bf16-rounding bound\n", cases, worst);
#ifdef VLM2MLA_WITH_CUDA_KERNELS
  // where the plan leaves it: o undefined, the buffer written as without w_out
  int sms = 0;
  ASSERT_EQ(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, 0), cudaSuccess);
  const int64_t b_many = (4 * sms + 27) / 28;
  Case many = Case::qwen7b_md_int4(std::vector<int64_t>(b_many, 0), std::vector<int64_t>(b_many, 300));
  Case wide = Case::qwen7b_md_int4({0}, {2000});
  wide.h_q = wide.h_kv = 32;
  wide.r_kv = 1024;
  for (const Case& c : {many, wide}) {
    MlaDecodeInputs in = as_model_views(make_inputs(c, at::Device(at::kCUDA, 0)), c.h_kv);
    in.w_out = at::zeros({c.h_kv, 2 * c.r_kv + 2, 128}, bf);
    in.o_out = at::zeros({c.b(), c.h_q, 128}, bf);
    const MlaDecodeLaunch launch(in);
    EXPECT_FALSE(launch.combine_out()) << c.str();
    EXPECT_NE(launch.why_not_combine_out().find(c.r_kv == 1024 ? "column" : "warp"), std::string::npos)
        << c.str() << ": " << launch.why_not_combine_out();
    const MlaDecodeOutput got = mla_decode(in);
    EXPECT_FALSE(got.o.defined()) << c.str();
    const MlaDecodeOutput want = mla_decode_ref(in, at::kDouble);
    EXPECT_LT(rel_err(got.acc, want.acc), kRelTol) << c.str();
  }
#endif
}

TEST(MlaDecodeCuda, RepeatedRunsAgreeBitForBit) {
  if (!cuda_ready()) GTEST_SKIP() << "no CUDA device (or no CUDA in this build)";
  const Case c = Case::qwen7b_md_int4({0, 17, 0}, {4000, 2500, 777});
  const MlaDecodeInputs in = make_inputs(c, at::Device(at::kCUDA, 0));
  const MlaDecodeOutput a = mla_decode(in), b = mla_decode(in);
  EXPECT_TRUE(at::equal(a.acc, b.acc));
  EXPECT_TRUE(at::equal(a.mass, b.mass));
}

#ifdef VLM2MLA_WITH_CUDA_KERNELS
#define CUDA_OK(call) ASSERT_EQ((call), cudaSuccess) << #call

// Bytes the kernel must read: each key's latent and RoPE key (and scales, modality) once.
double bytes_read(const Case& c) {
  const int64_t hr = c.h_kv * c.d_rope;
  double total = 0;
  for (int64_t i = 0; i < c.b(); ++i) {
    const int64_t n = c.length[i] - c.start[i];
    const int64_t ring = c.format == MlaCacheFormat::kInt4 ? std::min(n, c.window) : n;
    const int64_t quant = n - ring;
    total += double(ring) * 2 * (c.r_kv + hr);
    total += double(quant) * ((c.r_kv + hr) / 2.0 + 4.0 * (c.r_kv / c.group_c + hr / c.group_r));
    if (c.n_mod == 2) total += double(n);
  }
  return total;
}

TEST(MlaDecodeCuda, DISABLED_Bandwidth) {
  if (!cuda_ready()) GTEST_SKIP() << "no CUDA device (or no CUDA in this build)";
  cudaEvent_t e0, e1;
  CUDA_OK(cudaEventCreate(&e0));
  CUDA_OK(cudaEventCreate(&e1));
  {  // the ceiling: a large device-to-device copy (bytes read + written)
    const int64_t n = int64_t(1) << 30;
    at::Tensor src = at::empty({n}, at::TensorOptions().dtype(at::kByte).device(at::kCUDA));
    at::Tensor dst = at::empty_like(src);
    src.fill_(1);
    dst.copy_(src);
    CUDA_OK(cudaEventRecord(e0));
    for (int r = 0; r < 10; ++r) dst.copy_(src);
    CUDA_OK(cudaEventRecord(e1));
    CUDA_OK(cudaEventSynchronize(e1));
    float ms = 0;
    CUDA_OK(cudaEventElapsedTime(&ms, e0, e1));
    std::printf("[bandwidth] device copy: %.0f GB/s (read + write)\n", 2.0 * n * 10 / (ms * 1e-3) / 1e9);
  }
  struct Cfg {
    MlaCacheFormat f;
    int64_t n_mod;
    int64_t b, t;
    MlaDecodeVariant v;
    int64_t h_q = 28, h_kv = 4, r_kv = 128, d_rope = 32;
    Mods mods = Mods::kRandom;
    int64_t min_tiles = 0;  // MlaDecodeInputs::min_tiles_per_split (0: the plan's default)
    int64_t run = 576;      // Mods::kRuns: tokens per run (576: LLaVA-1.5's image tokens)
  };
  std::vector<Cfg> cfgs;
  for (MlaCacheFormat f : {MlaCacheFormat::kBf16, MlaCacheFormat::kInt4})
    for (int64_t b : {1, 8, 32})
      for (int64_t t : {4096, 16384, 32768}) cfgs.push_back({f, 1, b, t, MlaDecodeVariant::kAuto});
  for (MlaCacheFormat f : {MlaCacheFormat::kBf16, MlaCacheFormat::kInt4}) {
    cfgs.push_back({f, 2, 32, 32768, MlaDecodeVariant::kAuto});  // random per token: every tile mixed
    cfgs.push_back({f, 2, 32, 32768, MlaDecodeVariant::kAuto, 28, 4, 128, 32, Mods::kRuns});  // images of 576
    cfgs.push_back({f, 2, 32, 32768, MlaDecodeVariant::kAuto, 28, 4, 128, 32, Mods::kText});
    // the large batches at 32k (one split a sequence: longer than the modality CTAs' scan window)
    cfgs.push_back({f, 1, 256, 32768, MlaDecodeVariant::kAuto});
    cfgs.push_back({f, 2, 256, 32768, MlaDecodeVariant::kAuto, 28, 4, 128, 32, Mods::kText});
    cfgs.push_back({f, 2, 256, 32768, MlaDecodeVariant::kAuto, 28, 4, 128, 32, Mods::kRuns});
    // int4's largest batch at 32k (b = 768 beside the weights)
    if (f == MlaCacheFormat::kInt4)
      cfgs.push_back({f, 2, 768, 32768, MlaDecodeVariant::kAuto, 28, 4, 128, 32, Mods::kText});
    // runs of 2304 (a 1344 x 1344 image in Qwen2.5-VL): long runs of one modality inside mixed splits
    for (int64_t b : {32, 256})
      cfgs.push_back({f, 2, b, 32768, MlaDecodeVariant::kAuto, 28, 4, 128, 32, Mods::kRuns, 0, 2304});
    // a prompt's one image of 2,304 tokens in every context, as the largest batches' image runs have it (one mixed
    // split a sequence where the plan makes one split of it: VLM2MLA_DECODE_MAX_TILES sets more)
    for (int64_t b : {32, 256, 768})
      if (b < 768 || f == MlaCacheFormat::kInt4)
        cfgs.push_back({f, 2, b, 32768, MlaDecodeVariant::kAuto, 28, 4, 128, 32, Mods::kPrompt, 0, 2304});
    // the split-keys kernel beside kAuto's warp-rows one
    for (int64_t b : {1, 8, 32}) cfgs.push_back({f, 1, b, 32768, MlaDecodeVariant::kTensorCore});
    cfgs.push_back({f, 2, 32, 32768, MlaDecodeVariant::kTensorCore});
    cfgs.push_back({f, 2, 32, 32768, MlaDecodeVariant::kTensorCore, 28, 4, 128, 32, Mods::kRuns});
    cfgs.push_back({f, 2, 32, 32768, MlaDecodeVariant::kTensorCore, 28, 4, 128, 32, Mods::kText});
    // the warp-rows kernel's joint layout beside kAuto's modality CTAs
    cfgs.push_back({f, 2, 32, 32768, MlaDecodeVariant::kTensorCoreWarpRowsJoint});
    cfgs.push_back({f, 2, 32, 32768, MlaDecodeVariant::kTensorCoreWarpRowsJoint, 28, 4, 128, 32, Mods::kRuns});
    cfgs.push_back({f, 2, 32, 32768, MlaDecodeVariant::kTensorCoreWarpRowsJoint, 28, 4, 128, 32, Mods::kText});
    // (and at the small batches where kAuto takes the joint layout, the modality CTAs beside it)
    cfgs.push_back({f, 2, 8, 32768, MlaDecodeVariant::kTensorCoreWarpRows, 28, 4, 128, 32, Mods::kRuns});
    cfgs.push_back({f, 2, 8, 32768, MlaDecodeVariant::kTensorCoreWarpRowsJoint, 28, 4, 128, 32, Mods::kRuns});
    cfgs.push_back({f, 2, 1, 32768, MlaDecodeVariant::kTensorCoreWarpRows, 28, 4, 128, 32, Mods::kText});
    cfgs.push_back({f, 2, 1, 32768, MlaDecodeVariant::kTensorCoreWarpRowsJoint, 28, 4, 128, 32, Mods::kText});
    cfgs.push_back({f, 2, 32, 32768, MlaDecodeVariant::kAuto, 28, 4, 256, 32, Mods::kRuns});  // D = 64
    cfgs.push_back({f, 2, 32, 32768, MlaDecodeVariant::kTensorCore, 28, 4, 256, 32, Mods::kRuns});
    // D = 128 (r_kv 512): bf16's warp-rows kernel with column splits beside the split-keys one
    cfgs.push_back({f, 2, 32, 32768, MlaDecodeVariant::kAuto, 28, 4, 512, 32, Mods::kText});
    cfgs.push_back({f, 2, 32, 32768, MlaDecodeVariant::kTensorCore, 28, 4, 512, 32, Mods::kText});
    cfgs.push_back({f, 2, 32, 32768, MlaDecodeVariant::kAuto, 28, 4, 512, 32, Mods::kRuns, 0, 2304});
    // and at small batches, where kAuto takes the modality CTAs for them (the joint layout does not fit)
    for (int64_t b : {1, 2, 4, 8}) {
      for (int64_t t : {4096, 32768}) {
        cfgs.push_back({f, 2, b, t, MlaDecodeVariant::kAuto, 28, 4, 512, 32, Mods::kText});
        cfgs.push_back({f, 2, b, t, MlaDecodeVariant::kTensorCore, 28, 4, 512, 32, Mods::kText});
      }
    }
    if (f == MlaCacheFormat::kInt4) {  // the warpgroup-MMA kernel (kAuto's above, on sm_90a) beside the warp-rows one
      for (MlaDecodeVariant v : {MlaDecodeVariant::kWgmma, MlaDecodeVariant::kTensorCoreWarpRows}) {
        for (int64_t b : {1, 8, 32, 256}) cfgs.push_back({f, 1, b, 32768, v});
        for (int64_t b : {8, 32, 256, 768}) cfgs.push_back({f, 2, b, 32768, v, 28, 4, 128, 32, Mods::kText});
        for (int64_t b : {32, 256}) cfgs.push_back({f, 2, b, 32768, v, 28, 4, 128, 32, Mods::kPrompt, 0, 2304});
        cfgs.push_back({f, 2, 32, 32768, v, 28, 4, 128, 32, Mods::kRuns});
        cfgs.push_back({f, 1, 1, 4096, v});
      }
    }
    if (f == MlaCacheFormat::kInt4) {  // the products on the codes, beside the dequantizing kernel
      for (int64_t b : {8, 32}) cfgs.push_back({f, 1, b, 32768, MlaDecodeVariant::kTensorCoreCodes});
      cfgs.push_back({f, 2, 32, 32768, MlaDecodeVariant::kTensorCoreCodes, 28, 4, 128, 32, Mods::kRuns});
      cfgs.push_back({f, 2, 32, 32768, MlaDecodeVariant::kTensorCoreCodes, 28, 4, 128, 32, Mods::kText});
    }
    cfgs.push_back({f, 1, 8, 16384, MlaDecodeVariant::kGeneric});
    cfgs.push_back({f, 1, 8, 16384, MlaDecodeVariant::kAuto, 28, 4, 512, 32});  // wide latent (d_kv 128)
    cfgs.push_back({f, 1, 8, 4096, MlaDecodeVariant::kAuto, 32, 32, 512, 16});  // MHA (LLaVA-like)
    // LLaVA-1.5-7B converted with d_kv 16 (r_kv 512, R 32: a RoPE key of 1,024 values): two sets over text
    for (auto [b, t] : {std::pair<int64_t, int64_t>{1, 4096}, {8, 4096}, {8, 32768}, {32, 32768}})
      cfgs.push_back({f, 2, b, t, MlaDecodeVariant::kAuto, 32, 32, 512, 32, Mods::kText});
    // ... at one sequence by the fewest tiles a split takes (the modality CTAs' default 4: 17 CTAs at 4k)
    for (int64_t t : {4096, 32768})
      for (int64_t mt : {1, 2, 8})
        cfgs.push_back({f, 2, 1, t, MlaDecodeVariant::kAuto, 32, 32, 512, 32, Mods::kText, mt});
    // LLaVA-1.5-7B with d_kv 32 and 64 (r_kv 1,024 and 2,048): the scores-first kernels
    // and their one-pass twin in clusters (kWideCluster) beside them, from one sequence to eight
    const std::pair<int64_t, int64_t> llava_bt[] = {{1, 4096},  {1, 32768}, {2, 16384},
                                                    {4, 16384}, {8, 4096},  {8, 32768}};
    for (MlaDecodeVariant v : {MlaDecodeVariant::kAuto, MlaDecodeVariant::kWideCluster})
      for (int64_t r_kv : {1024, 2048})
        for (auto [b, t] : llava_bt) cfgs.push_back({f, 2, b, t, v, 32, 32, r_kv, 32, Mods::kText});
    // ... and by the fewest tiles a split takes (default 4; it was 1: at one sequence of 4k, 65 splits whose
    // partials, 2 sets x 32 heads x r_kv floats each, outweighed the latent they read)
    for (int64_t r_kv : {1024, 2048})
      for (auto [b, t] : {std::pair<int64_t, int64_t>{1, 4096}, {1, 32768}, {2, 16384}, {8, 4096}})
        for (int64_t mt : {2, 4, 8, 16})
          cfgs.push_back({f, 2, b, t, MlaDecodeVariant::kAuto, 32, 32, r_kv, 32, Mods::kText, mt});
    // LLaVA-NeXT-8B (Llama-3-8B: h_kv 8) at d_kv 128 (r_kv 1,024): the scores-first kernels over a GQA model
    cfgs.push_back({f, 2, 8, 32768, MlaDecodeVariant::kAuto, 32, 8, 1024, 32, Mods::kText});
    // small batches: the modality CTAs' fewest tiles per split (fewer partials and CTAs against less
    // parallelism); two sets, all text (a converted model decoding text)
    for (auto [b, t] : {std::pair<int64_t, int64_t>{1, 4096}, {1, 32768}, {8, 4096}, {4, 16384}})
      for (int64_t mt : {1, 2, 4, 8})
        cfgs.push_back({f, 2, b, t, MlaDecodeVariant::kTensorCoreWarpRows, 28, 4, 128, 32, Mods::kText, mt});
    // the same for the joint layout (kAuto's below 16 pairs) and one set (one tile a split by default)
    for (auto [b, t] : {std::pair<int64_t, int64_t>{1, 4096}, {1, 32768}, {8, 4096}, {4, 16384}, {8, 32768}}) {
      for (int64_t mt : {1, 2, 4, 8}) {
        cfgs.push_back({f, 2, b, t, MlaDecodeVariant::kTensorCoreWarpRowsJoint, 28, 4, 128, 32, Mods::kText, mt});
        cfgs.push_back({f, 1, b, t, MlaDecodeVariant::kAuto, 28, 4, 128, 32, Mods::kRandom, mt});
      }
    }
  }
  // VLM2MLA_BANDWIDTH_ONLY=KEY keeps the configurations whose key "store/n_mod/mods/b/t/variant/r_kv/h_q" (e.g.
  // "bf16/1/random/32/32768/auto/128/28") contains KEY (for a profiler run over one configuration)
  if (const char* only = std::getenv("VLM2MLA_BANDWIDTH_ONLY")) {
    const char* mod_names[] = {"random", "runs", "text", "image", "prompt"};
    const char* variant_names[] = {"auto",       "keys", "generic",      "codes", "rows",
                                   "rows-joint", "wide", "wide-cluster", "wgmma"};
    std::vector<Cfg> kept;
    for (const Cfg& cfg : cfgs) {
      const std::string key = std::string(cfg.f == MlaCacheFormat::kBf16 ? "bf16" : "int4") + "/" +
                              std::to_string(cfg.n_mod) + "/" + mod_names[int(cfg.mods)] + "/" + std::to_string(cfg.b) +
                              "/" + std::to_string(cfg.t) + "/" + variant_names[int(cfg.v)] + "/" +
                              std::to_string(cfg.r_kv) + "/" + std::to_string(cfg.h_q);
      if (key.find(only) != std::string::npos) kept.push_back(cfg);
    }
    cfgs = kept;
  }
  std::printf("[bandwidth] %-5s %-12s %2s %6s %3s  %-15s %-17s %9s %9s %8s\n", "store", "n_mod", "b", "t", "spl",
              "kernel", "h_q/h_kv/r_kv/R", "MB read", "us/call", "GB/s");
  for (const Cfg& cfg : cfgs) {
    Case c;
    c.format = cfg.f;
    c.n_mod = cfg.n_mod;
    c.mods = cfg.mods;
    c.run = cfg.run;
    c.h_q = cfg.h_q;
    c.h_kv = cfg.h_kv;
    c.r_kv = cfg.r_kv;
    c.d_rope = cfg.d_rope;
    c.window = cfg.f == MlaCacheFormat::kInt4 ? 128 : 0;
    c.group_c = 64;
    c.group_r = 64;
    c.start.assign(cfg.b, 0);
    c.length.assign(cfg.b, cfg.t);
    const double bytes = bytes_read(c);
    // rotate over enough input sets that they do not fit in L2 together
    const int sets = int(std::clamp<double>(std::ceil(256e6 / bytes), 1, 32));
    std::vector<MlaDecodeInputs> ins;
    std::vector<std::unique_ptr<MlaDecodeLaunch>> launches;
    for (int s = 0; s < sets; ++s) {
      c.seed = 1000 + s;
      // as a decode step passes them (bf16 query views of one product, results into a bf16 buffer); until
      // session 17 (2026-11-29) these rows took make_inputs' float32 queries, which the scores-first kernels
      // converted on every load
      ins.push_back(as_model_views(make_inputs(c, at::Device(at::kCUDA, 0)), cfg.h_kv));
      ins.back().max_length = cfg.t;
      ins.back().variant = cfg.v;
      ins.back().min_tiles_per_split = cfg.min_tiles;
      ins.back().max_tiles_per_split = model_decode_max_tiles();  // VLM2MLA_DECODE_MAX_TILES: the most a split
      // as the model's steps pass it (its cache's holds_image): the image CTAs first, or the plan's cap, where the
      // keys hold an image
      ins.back().holds_image = cfg.n_mod == 2 && cfg.mods != Mods::kText;
      ins.back().image_first = model_decode_image_first();  // VLM2MLA_DECODE_IMAGE_FIRST=0: capped
      if (cfg.n_mod == 2 && model_decode_segments()) {  // VLM2MLA_DECODE_SEGMENTS=0: uniform splits
        // as the latent cache gives them at prefill (undefined for text alone, or more than 16 segments)
        const at::Tensor bounds = modality_segments(ins.back().modality);
        if (bounds.defined()) ins.back().split_bounds = bounds.to(ins.back().modality.device());
      }
      // as the latent cache keeps it (VLM2MLA_DECODE_IMAGE_END=0: every split's modality bytes read)
      if (cfg.n_mod == 2 && model_decode_image_end()) ins.back().image_end = image_end_of(ins.back().modality);
      ins.back().specialized = model_decode_specialized();  // VLM2MLA_DECODE_SPECIALIZED=0: the generic ones
      ins.back().grouped_rows = model_decode_grouped_rows();  // VLM2MLA_DECODE_GROUPED_ROWS=0: "-128"
      ins.back().pure_splits = model_decode_pure_splits();    // VLM2MLA_DECODE_PURE_SPLITS=0: every CTA scans
      ins.back().pure_launch = model_decode_pure_launch();    // VLM2MLA_DECODE_PURE_LAUNCH=0: one launch
      ins.back().combine = model_decode_combine();            // VLM2MLA_DECODE_COMBINE=block|columns|warp
      ins.back().score_clusters = model_decode_score_clusters();  // VLM2MLA_DECODE_SCORE_CLUSTERS=0: one CTA a group
      ins.back().wide_warps = model_decode_wide_warps();          // VLM2MLA_DECODE_WIDE_WARPS=16: 16 warps a CTA
      ins.back().wgmma_consumers = model_decode_wgmma_consumers();  // VLM2MLA_DECODE_WGMMA_CONSUMERS=2|3
      ins.back().wgmma_producers = model_decode_wgmma_producers();  // VLM2MLA_DECODE_WGMMA_PRODUCERS=1|2|none
      launches.push_back(std::make_unique<MlaDecodeLaunch>(ins.back()));
    }
    for (int s = 0; s < sets; ++s) launches[s]->run();  // warm-up
    CUDA_OK(cudaDeviceSynchronize());
    const int reps = std::max(20, 2 * sets);
    CUDA_OK(cudaEventRecord(e0));
    for (int r = 0; r < reps; ++r) launches[r % sets]->run();
    CUDA_OK(cudaEventRecord(e1));
    CUDA_OK(cudaEventSynchronize(e1));
    float ms = 0;
    CUDA_OK(cudaEventElapsedTime(&ms, e0, e1));
    const double us = ms * 1e3 / reps;
    const std::string shape = std::to_string(cfg.h_q) + "/" + std::to_string(cfg.h_kv) + "/" +
                              std::to_string(cfg.r_kv) + "/" + std::to_string(cfg.d_rope);
    const char* mod_names[] = {"random", "runs", "text", "image", "prompt"};
    std::string mods = std::to_string(cfg.n_mod) + (cfg.n_mod == 2 ? std::string(" ") + mod_names[int(cfg.mods)] : "");
    if (cfg.n_mod == 2 && ((cfg.mods == Mods::kRuns && cfg.run != 576) || cfg.mods == Mods::kPrompt))
      mods += std::to_string(cfg.run);  // "runs2304", "prompt2304"
    // (the plan's choices beyond the kernel: " first", the image CTAs first; " segK", splits along K segments)
    const std::string kernel =
        launches[0]->kernel() + (cfg.min_tiles > 0 ? " >=" + std::to_string(cfg.min_tiles) : std::string()) +
        (launches[0]->image_first() ? " first" : "") +
        (launches[0]->bound_segments() > 0 ? " seg" + std::to_string(launches[0]->bound_segments()) : std::string());
    std::printf("[bandwidth] %-5s %-12s %2lld %6lld %3d  %-15s %-17s %9.1f %9.1f %8.0f\n",
                cfg.f == MlaCacheFormat::kBf16 ? "bf16" : "int4", mods.c_str(), (long long)cfg.b,
                (long long)cfg.t, launches[0]->splits(), kernel.c_str(),
                shape.c_str(), bytes / 1e6, us, bytes / (us * 1e-6) / 1e9);
  }
  CUDA_OK(cudaEventDestroy(e0));
  CUDA_OK(cudaEventDestroy(e1));
}
#endif

}  // namespace
}  // namespace vlm2mla
