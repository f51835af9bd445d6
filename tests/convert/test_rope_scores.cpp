// 2-norm RoPE-pair scores from the observer against a brute-force computation from the weights.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>

#include "convert/rope_ranks.h"
#include "convert/rope_scores.h"
#include "core/error.h"
#include "io/safetensors.h"
#include "models/model.h"
#include "nn/layers.h"
#include "support/fixtures.h"

namespace vlm2mla {
namespace {

using convert::MklScores;
using convert::TwoNormScores;

// Layer 0 by hand: x = embed(ids), h = rms_norm(x), q = h Wq^T + b, per head and pair the mean over
// real tokens of sqrt(q_k^2 + q_{k+d/2}^2), likewise k; product summed over each group's q heads.
at::Tensor brute_force_layer0(const TextDecoder& m, const at::Tensor& ids, const at::Tensor& mask) {
  const auto& c = m.config();
  const auto& w = m.weights();
  at::Tensor x = at::embedding(w.embed_tokens, ids).to(at::kDouble);
  at::Tensor h = rms_norm(x, w.layers[0].input_layernorm.to(at::kDouble), c.rms_norm_eps);
  auto proj = [&](const LinearWeights& lw) {
    return at::linear(h, lw.weight.to(at::kDouble), lw.bias.defined() ? lw.bias.to(at::kDouble) : at::Tensor());
  };
  const int64_t dh = c.head_dim, half = dh / 2, hq = c.num_attention_heads, hkv = c.num_key_value_heads;
  at::Tensor q = proj(w.layers[0].q_proj), k = proj(w.layers[0].k_proj);  // [b, s, h*d]
  at::Tensor valid = mask.ne(0);
  const double n = valid.sum().item<double>();
  at::Tensor out = at::zeros({hkv, half}, at::kDouble);
  for (int64_t g = 0; g < hkv; ++g) {
    for (int64_t p = 0; p < half; ++p) {
      double k_mean = 0;
      for (int64_t bi = 0; bi < ids.size(0); ++bi)
        for (int64_t t = 0; t < ids.size(1); ++t) {
          if (!valid[bi][t].item<bool>()) continue;
          const double a = k[bi][t][g * dh + p].item<double>(), b = k[bi][t][g * dh + p + half].item<double>();
          k_mean += std::sqrt(a * a + b * b) / n;
        }
      double total = 0;
      for (int64_t hh = g * (hq / hkv); hh < (g + 1) * (hq / hkv); ++hh) {
        double q_mean = 0;
        for (int64_t bi = 0; bi < ids.size(0); ++bi)
          for (int64_t t = 0; t < ids.size(1); ++t) {
            if (!valid[bi][t].item<bool>()) continue;
            const double a = q[bi][t][hh * dh + p].item<double>(), b = q[bi][t][hh * dh + p + half].item<double>();
            q_mean += std::sqrt(a * a + b * b) / n;
          }
        total += q_mean * k_mean;
      }
      out[g][p] = total;
    }
  }
  return out;
}

TEST(TwoNormScores, Layer0EqualsBruteForceForMhaAndGqaWithBias) {
  for (const std::string name : {"llama-mha", "llama3-gqa", "qwen2"}) {
    const std::string dir = testing::fixtures_dir() + "/text/" + name;
    auto model = Model::load(dir + "/model", LoadOptions{});
    auto in = io::read_safetensors(dir + "/inputs.safetensors");
    at::Tensor ids = in.at("input_ids"), mask = in.at("attention_mask");
    TwoNormScores obs(model->text_config());
    DecoderInput d;
    d.input_ids = ids;
    d.attention_mask = mask;
    d.position_ids = position_ids_from_mask(mask);
    model->decoder().forward_hidden(d, nullptr, &obs);
    at::Tensor s = obs.scores();
    const auto& c = model->text_config();
    ASSERT_EQ(s.sizes(), (std::vector<int64_t>{c.num_hidden_layers, c.num_key_value_heads, c.head_dim / 2}));
    EXPECT_EQ(obs.tokens(), mask.sum().item<int64_t>());
    at::Tensor ref = brute_force_layer0(model->decoder(), ids, mask);
    EXPECT_TRUE(at::allclose(s[0].to(at::kDouble), ref, 1e-5, 1e-7)) << name << "\n" << s[0] << "\n" << ref;
    EXPECT_TRUE(at::isfinite(s).all().item<bool>());
    EXPECT_TRUE((s > 0).all().item<bool>());
  }
}

// Captures layer 0's rotated queries and keys.
struct Layer0Capture : DecoderObserver {
  at::Tensor q, k, valid, image;
  void queries_keys(int64_t layer, const at::Tensor&, const at::Tensor&, const at::Tensor& qr,
                    const at::Tensor& kr, const at::Tensor& v, const at::Tensor& im) override {
    if (layer != 0) return;
    q = qr.to(at::kDouble).contiguous(), k = kr.to(at::kDouble).contiguous(), valid = v, image = im;
  }
};

// KL(P_i || P_i^-pair) by explicit loops, with the modality-balanced mean of METHOD.md.
at::Tensor brute_force_mkl(const Layer0Capture& c) {
  const int64_t b = c.q.size(0), hq = c.q.size(1), s = c.q.size(2), d = c.q.size(3);
  const int64_t hkv = c.k.size(1), g = hq / hkv, half = d / 2;
  auto q = c.q.accessor<double, 4>();
  auto k = c.k.accessor<double, 4>();
  at::Tensor img_sum = at::zeros({hkv, half}, at::kDouble), txt_sum = at::zeros({hkv, half}, at::kDouble);
  double n_img = 0, n_txt = 0;
  for (int64_t bi = 0; bi < b; ++bi) {
    for (int64_t i = 0; i < s; ++i) {
      if (!c.valid[bi][i].item<bool>()) continue;
      const bool is_image = c.image.defined() && c.image[bi][i].item<bool>();
      (is_image ? n_img : n_txt) += 1;
      for (int64_t h = 0; h < hq; ++h) {
        const int64_t kv = h / g;
        std::vector<double> full, part;  // scores over allowed keys
        std::vector<std::vector<double>> pair_dot(static_cast<size_t>(half));
        for (int64_t j = 0; j <= i; ++j) {
          if (!c.valid[bi][j].item<bool>()) continue;
          double dot = 0;
          for (int64_t e = 0; e < d; ++e) dot += q[bi][h][i][e] * k[bi][kv][j][e];
          full.push_back(dot / std::sqrt(double(d)));
          for (int64_t p = 0; p < half; ++p) {
            const double pd = q[bi][h][i][p] * k[bi][kv][j][p] + q[bi][h][i][p + half] * k[bi][kv][j][p + half];
            pair_dot[static_cast<size_t>(p)].push_back(pd / std::sqrt(double(d)));
          }
        }
        auto softmax = [](const std::vector<double>& x) {
          double m = *std::max_element(x.begin(), x.end()), z = 0;
          std::vector<double> y(x.size());
          for (size_t t = 0; t < x.size(); ++t) z += std::exp(x[t] - m);
          for (size_t t = 0; t < x.size(); ++t) y[t] = std::exp(x[t] - m) / z;
          return y;
        };
        const std::vector<double> P = softmax(full);
        for (int64_t p = 0; p < half; ++p) {
          std::vector<double> without(full.size());
          for (size_t t = 0; t < full.size(); ++t) without[t] = full[t] - pair_dot[static_cast<size_t>(p)][t];
          const std::vector<double> Q = softmax(without);
          double kl = 0;
          for (size_t t = 0; t < P.size(); ++t) kl += P[t] * (std::log(P[t]) - std::log(Q[t]));
          (is_image ? img_sum : txt_sum)[kv][p] += kl / double(g);
        }
      }
    }
  }
  if (n_img == 0) return txt_sum / n_txt;
  return (img_sum / n_img + txt_sum / n_txt) / 2.0;
}

TEST(MklScores, Layer0EqualsBruteForceWithImageAndTextQueries) {
  const std::string dir = testing::fixtures_dir() + "/vlm/qwen2_5_vl";
  auto model = Model::load(dir + "/model", LoadOptions{});
  ModelInputs in = ModelInputs::from_tensors(io::read_safetensors(dir + "/inputs.safetensors"), dir);
  Prompt p = model->prepare(in, true);
  const DecoderInput d = p.decoder_input();
  MklScores mkl(model->text_config());
  Layer0Capture cap;
  model->decoder().forward_hidden(d, nullptr, &mkl);
  model->decoder().forward_hidden(d, nullptr, &cap);
  EXPECT_EQ(mkl.image_queries(), d.image_mask.sum().item<int64_t>());
  EXPECT_GT(mkl.text_queries(), 0);
  at::Tensor s = mkl.scores();
  at::Tensor ref = brute_force_mkl(cap);
  EXPECT_TRUE(at::allclose(s[0].to(at::kDouble), ref, 1e-4, 1e-9)) << s[0] << "\n" << ref;
  EXPECT_TRUE((s >= 0).all().item<bool>());
}

TEST(MklScores, TextOnlyUsesTheTextMean) {
  const std::string dir = testing::fixtures_dir() + "/text/llama3-gqa";
  auto model = Model::load(dir + "/model", LoadOptions{});
  auto in = io::read_safetensors(dir + "/inputs.safetensors");
  DecoderInput d;
  d.input_ids = in.at("input_ids");
  d.attention_mask = in.at("attention_mask");
  d.position_ids = position_ids_from_mask(d.attention_mask);
  MklScores mkl(model->text_config());
  Layer0Capture cap;
  model->decoder().forward_hidden(d, nullptr, &mkl);
  model->decoder().forward_hidden(d, nullptr, &cap);
  EXPECT_EQ(mkl.image_queries(), 0);
  EXPECT_TRUE(at::allclose(mkl.scores()[0].to(at::kDouble), brute_force_mkl(cap), 1e-4, 1e-9));
}

TEST(Calibrate, CliWritesValidRanksOrderedByScore) {
  const std::string dir = testing::fixtures_dir() + "/vlm/qwen2_5_vl";
  testing::TempDir tmp;
  for (const std::string strategy : {"2-norm", "mkl"}) {
    const std::string out = tmp.file(strategy + ".safetensors");
    auto r = testing::run_cli({"calibrate", "--model", dir + "/model", "--calib",
                               dir + "/inputs.safetensors", "--rope-strategy", strategy, "--out", out});
    ASSERT_EQ(r.exit_code, 0) << r.err;
    convert::RopeRanks ranks = convert::read_rope_ranks(out);
    convert::validate_rope_ranks(ranks, 2, 2, 16, out);
    ASSERT_TRUE(ranks.score.defined());
    // rank 0 is the highest score of its (layer, kv head)
    at::Tensor best = ranks.score.argmax(-1);
    at::Tensor rank0 = (ranks.rank.narrow(-1, 0, 8) == 0).to(at::kLong).argmax(-1);
    EXPECT_TRUE(best.equal(rank0)) << strategy;
  }
  auto r = testing::run_cli({"calibrate", "--model", dir + "/model", "--calib", dir + "/inputs.safetensors",
                             "--rope-strategy", "low", "--out", tmp.file("x")});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("unknown strategy 'low'"), std::string::npos) << r.err;
}

TEST(TwoNormScores, NothingObservedIsAnError) {
  auto model = Model::load(testing::fixtures_dir() + "/text/qwen2/model", LoadOptions{});
  TwoNormScores obs(model->text_config());
  EXPECT_THROW(obs.scores(), ArgumentError);
}

}  // namespace
}  // namespace vlm2mla
