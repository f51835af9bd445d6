// 2-norm and MKL RoPE-pair scores of our observers against an independent reference computed with
// transformers (scripts/make_rope_score_fixtures.py: q, k captured from transformers' own forward,
// scores written from the definitions in float64), on every text and VLM fixture; and the ranks
// derived from both agree wherever the reference scores are not near-tied.
#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <sstream>
#include <string>
#include <vector>

#include "convert/rope_ranks.h"
#include "convert/rope_scores.h"
#include "io/safetensors.h"
#include "models/model.h"
#include "support/fixtures.h"

namespace vlm2mla {
namespace {

using convert::MklScores;
using convert::TwoNormScores;

// Elementwise: |ours - ref| <= kScoreRtol * |ref|. Both sides see the same float32 checkpoint and
// inputs; they differ by float32 rounding in the two forwards (scores are accumulated in float64).
// Measured: with Debian's libtorch 1.13 (CPU, OpenBLAS) at most 3.2e-7 (2-norm) and 1.5e-6 (MKL);
// built against the torch 2.11 wheel (the GPU machine) 0 for the 1-D RoPE fixtures and 6.5e-7 for
// Qwen2.5-VL.
constexpr double kScoreRtol = 1e-5;
// Reference scores of one (layer, kv head) closer than this (relative) count as tied for the ranks.
constexpr double kTieRtol = 1e-3;

struct HfScores {
  at::Tensor two_norm, mkl;  // ours, float32 [layers, n_kv, d/2]
  at::Tensor ref_two_norm, ref_mkl;
};

HfScores compute(const std::string& family_name) {
  const std::string dir = testing::fixtures_dir() + "/" + family_name;
  const std::string ref_path = dir + "/rope_scores.safetensors";
  HfScores out;
  if (!std::filesystem::exists(ref_path)) {
    ADD_FAILURE() << "missing " << ref_path
                  << ": run scripts/make_rope_score_fixtures.py where transformers is installed";
    return out;
  }
  auto ref = io::read_safetensors(ref_path);
  out.ref_two_norm = ref.at("two_norm");
  out.ref_mkl = ref.at("mkl");

  auto model = Model::load(dir + "/model", LoadOptions{});
  ModelInputs in = ModelInputs::from_tensors(io::read_safetensors(dir + "/inputs.safetensors"), dir);
  // Positions as transformers' forward computes them (what the reference ran), as calibrate does.
  const DecoderInput d = model->prepare(in, /*forward_semantics=*/true).decoder_input();
  TwoNormScores two_norm(model->text_config());
  MklScores mkl(model->text_config());
  model->decoder().forward_hidden(d, nullptr, &two_norm);
  model->decoder().forward_hidden(d, nullptr, &mkl);
  out.two_norm = two_norm.scores();
  out.mkl = mkl.scores();
  return out;
}

// max over elements of |a - b| / |b|.
double max_elementwise_rel(const at::Tensor& ours, const at::Tensor& ref) {
  at::Tensor a = ours.to(at::kDouble), b = ref.to(at::kDouble);
  return ((a - b).abs() / b.abs()).max().item<double>();
}

// Checks the ranks of ours against the ranks of the reference. A row (layer, kv head) whose sorted
// reference scores have no neighbours within kTieRtol must rank identically; in every row, each
// pair of pairs that is not near-tied must be ordered the same. Returns "rows identical / rows".
std::string check_ranks(const at::Tensor& ours, const at::Tensor& ref, const std::string& what) {
  const at::Tensor r_ours = convert::ranks_from_scores(ours).rank;
  const at::Tensor r_ref = convert::ranks_from_scores(ref).rank;
  const int64_t layers = ref.size(0), n_kv = ref.size(1), half = ref.size(2);
  const at::Tensor s = ref.to(at::kDouble).contiguous();
  auto sa = s.accessor<double, 3>();
  auto ro = r_ours.accessor<uint8_t, 3>();
  auto rr = r_ref.accessor<uint8_t, 3>();
  auto tied = [](double x, double y) { return std::abs(x - y) <= kTieRtol * std::max(std::abs(x), std::abs(y)); };
  int64_t identical = 0, untied_rows = 0;
  for (int64_t l = 0; l < layers; ++l) {
    for (int64_t g = 0; g < n_kv; ++g) {
      bool any_tie = false, same = true;
      for (int64_t a = 0; a < half; ++a) {
        same = same && ro[l][g][a] == rr[l][g][a];
        for (int64_t b = a + 1; b < half; ++b) {
          if (tied(sa[l][g][a], sa[l][g][b])) {
            any_tie = true;
            continue;
          }
          const bool a_first = sa[l][g][a] > sa[l][g][b];
          EXPECT_EQ(ro[l][g][a] < ro[l][g][b], a_first)
              << what << " layer " << l << " kv head " << g << ": pairs " << a << " and " << b
              << " (reference scores " << sa[l][g][a] << ", " << sa[l][g][b] << ") ordered differently";
          EXPECT_EQ(rr[l][g][a] < rr[l][g][b], a_first) << what << ": ranks_from_scores order";
        }
      }
      if (!any_tie) {
        ++untied_rows;
        EXPECT_TRUE(same) << what << " layer " << l << " kv head " << g << ": ranks differ";
      }
      identical += same ? 1 : 0;
    }
  }
  std::ostringstream msg;
  msg << identical << "/" << layers * n_kv << " rows identical (" << untied_rows << " without near-ties)";
  return msg.str();
}

class RopeScoresVsTransformers : public ::testing::TestWithParam<std::string> {};

TEST_P(RopeScoresVsTransformers, ScoresAndRanksMatch) {
  const std::string name = GetParam();
  HfScores s = compute(name);
  if (!s.ref_two_norm.defined()) return;  // the missing fixture already failed the test
  ASSERT_EQ(s.two_norm.sizes(), s.ref_two_norm.sizes()) << name;
  ASSERT_EQ(s.mkl.sizes(), s.ref_mkl.sizes()) << name;
  ASSERT_TRUE((s.ref_two_norm > 0).all().item<bool>()) << name;
  ASSERT_TRUE((s.ref_mkl > 0).all().item<bool>()) << name;

  const double e2 = max_elementwise_rel(s.two_norm, s.ref_two_norm);
  const double em = max_elementwise_rel(s.mkl, s.ref_mkl);
  EXPECT_LE(e2, kScoreRtol) << name << " 2-norm\nours " << s.two_norm << "\nref " << s.ref_two_norm;
  EXPECT_LE(em, kScoreRtol) << name << " mkl\nours " << s.mkl << "\nref " << s.ref_mkl;
  const std::string r2 = check_ranks(s.two_norm, s.ref_two_norm, name + " 2-norm");
  const std::string rm = check_ranks(s.mkl, s.ref_mkl, name + " mkl");
  std::cout << "[ rope-scores vs transformers ] " << name << ": 2-norm max rel " << e2 << ", ranks " << r2
            << "; mkl max rel " << em << ", ranks " << rm << "\n";
}

INSTANTIATE_TEST_SUITE_P(Fixtures, RopeScoresVsTransformers,
                         ::testing::Values("text/llama-mha", "text/llama3-gqa", "text/qwen2", "vlm/llava",
                                           "vlm/llava-next", "vlm/qwen2_5_vl"),
                         [](const ::testing::TestParamInfo<std::string>& info) {
                           std::string n = info.param;
                           std::replace_if(n.begin(), n.end(), [](char c) { return !std::isalnum(static_cast<unsigned char>(c)); }, '_');
                           return n;
                         });

}  // namespace
}  // namespace vlm2mla
