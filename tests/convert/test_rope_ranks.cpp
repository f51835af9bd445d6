// RoPE-pair rank files: the authors' reference .pth files, our safetensors round trip, validation,
// and the rankings (from scores; fixed high/low/uniform) on hand-computed cases.
#include <gtest/gtest.h>

#include <ATen/ATen.h>

#include <string>
#include <vector>

#include "convert/rope_ranks.h"
#include "core/error.h"
#include "io/safetensors.h"
#include "io/torch_pth.h"
#include "support/test_support.h"

namespace vlm2mla::convert {
namespace {

using vlm2mla::testing::TempDir;

bool has(const std::string& s, const std::string& part) { return s.find(part) != std::string::npos; }

template <typename ErrorType, typename Fn>
std::string error_of(Fn fn) {
  try {
    fn();
  } catch (const ErrorType& e) {
    return e.what();
  }
  ADD_FAILURE() << "expected an exception";
  return "";
}

std::vector<int64_t> kept_indices(const at::Tensor& kept_row) {
  std::vector<int64_t> out;
  for (int64_t k = 0; k < kept_row.size(0); ++k)
    if (kept_row[k].item<bool>()) out.push_back(k);
  return out;
}

// ---- the authors' reference files ----------------------------------------------------------------

struct Reference {
  const char* file;
  int64_t layers, n_kv, head_dim;
};

void PrintTo(const Reference& r, std::ostream* os) { *os << r.file; }

class RopeRanksReference : public ::testing::TestWithParam<Reference> {};

TEST_P(RopeRanksReference, ReadsAndValidates) {
  const Reference ref = GetParam();
  const std::string path = vlm2mla::testing::shared_dir() + "/reference-ranks/" + ref.file;
  if (!vlm2mla::testing::path_exists(path)) GTEST_SKIP() << "reference rank file missing: " << path;
  // The pickle's top level is one tensor.
  const io::PthValue v = io::read_pth(path);
  ASSERT_TRUE(v.is_tensor()) << "top level is a " << io::pth_kind_name(v.kind);
  const RopeRanks ranks = read_rope_ranks(path);
  EXPECT_EQ(ranks.rank.scalar_type(), at::kByte);
  EXPECT_EQ(ranks.rank.sizes(), at::IntArrayRef({ref.layers, ref.n_kv, ref.head_dim}));
  EXPECT_FALSE(ranks.score.defined());
  EXPECT_NO_THROW(validate_rope_ranks(ranks, ref.layers, ref.n_kv, ref.head_dim, path));
  // A wrong expectation names the file and both shapes.
  const std::string msg = error_of<FormatError>(
      [&] { validate_rope_ranks(ranks, ref.layers + 1, ref.n_kv, ref.head_dim, path); });
  EXPECT_TRUE(has(msg, path) && has(msg, "expected [")) << msg;
  // Per head, kept_pairs(r) keeps exactly r pairs.
  const int64_t r = ref.head_dim / 8;
  EXPECT_TRUE(kept_pairs(ranks, r).sum(2).eq(r).all().item<bool>());
}

INSTANTIATE_TEST_SUITE_P(
    Files, RopeRanksReference,
    ::testing::Values(Reference{"llava-1.5-mkl-ranks.pth", 32, 32, 128},
                      Reference{"llava-next-mkl-ranks.pth", 32, 8, 128},
                      Reference{"qwen2.5-vl-mkl-ranks.pth", 28, 4, 128},
                      Reference{"llama2-7b-2norm-ranks.pth", 32, 32, 128},
                      Reference{"qwen2-0.5b-2norm-ranks.pth", 24, 2, 64}),
    [](const ::testing::TestParamInfo<Reference>& info) {
      std::string name = info.param.file;
      for (char& c : name)
        if (!isalnum(static_cast<unsigned char>(c))) c = '_';
      return name;
    });

// ---- round trip and validation -------------------------------------------------------------------

TEST(RopeRanks, SafetensorsRoundTrip) {
  TempDir dir;
  const RopeRanks fixed = fixed_ranks("uniform", 3, 2, 16, 4);
  write_rope_ranks(dir.file("u.safetensors"), fixed);
  const RopeRanks back = read_rope_ranks(dir.file("u.safetensors"));
  EXPECT_TRUE(back.rank.equal(fixed.rank));
  EXPECT_FALSE(back.score.defined());
  EXPECT_EQ(back.strategy, "uniform");
  EXPECT_EQ(back.source, dir.file("u.safetensors"));
  io::SafetensorsFile file(dir.file("u.safetensors"));
  EXPECT_EQ(file.header().metadata.at("format"), "vlm2mla-rope-ranks");

  const RopeRanks scored = ranks_from_scores(at::rand({2, 3, 8}));
  write_rope_ranks(dir.file("s.safetensors"), scored);
  const RopeRanks back2 = read_rope_ranks(dir.file("s.safetensors"));
  EXPECT_TRUE(back2.rank.equal(scored.rank));
  ASSERT_TRUE(back2.score.defined());
  EXPECT_TRUE(back2.score.equal(scored.score));
  EXPECT_NO_THROW(validate_rope_ranks(back2, 2, 3, 16, "s"));
}

TEST(RopeRanks, ValidationNamesTheBadRow) {
  RopeRanks ranks = fixed_ranks("high", 2, 3, 8, 2);
  ranks.rank[1][2][1] = 0;  // duplicate rank 0 in the first half of (1, 2)
  std::string msg = error_of<FormatError>([&] { validate_rope_ranks(ranks, 2, 3, 8, "f.pth"); });
  EXPECT_TRUE(has(msg, "f.pth") && has(msg, "layer 1, kv head 2")) << msg;

  ranks = fixed_ranks("high", 2, 3, 8, 2);
  ranks.rank[0][1][5] = 3;  // second half differs at pair 1
  msg = error_of<FormatError>([&] { validate_rope_ranks(ranks, 2, 3, 8, "f.pth"); });
  EXPECT_TRUE(has(msg, "layer 0, kv head 1") && has(msg, "halves differ")) << msg;

  ranks = fixed_ranks("high", 2, 3, 8, 2);
  ranks.rank[0][0][0] = 9;  // out of range
  msg = error_of<FormatError>([&] { validate_rope_ranks(ranks, 2, 3, 8, "f.pth"); });
  EXPECT_TRUE(has(msg, "layer 0, kv head 0") && has(msg, "out of")) << msg;

  ranks = fixed_ranks("high", 2, 3, 8, 2);
  ranks.rank = ranks.rank.to(at::kLong);
  EXPECT_THROW(validate_rope_ranks(ranks, 2, 3, 8, "f.pth"), FormatError);
}

TEST(RopeRanks, WritingInvalidRanksOrReadingABadFileFails) {
  TempDir dir;
  RopeRanks ranks = fixed_ranks("high", 1, 1, 8, 2);
  ranks.rank[0][0][0] = 1;
  EXPECT_THROW(write_rope_ranks(dir.file("x.safetensors"), ranks), FormatError);
  io::write_safetensors(dir.file("y.safetensors"), {{"other", at::zeros({1, 1, 8}, at::kByte)}});
  const std::string msg = error_of<FormatError>([&] { read_rope_ranks(dir.file("y.safetensors")); });
  EXPECT_TRUE(has(msg, "y.safetensors") && has(msg, "rope_rank")) << msg;
  EXPECT_THROW(read_rope_ranks(dir.file("z.txt")), ArgumentError);
}

// ---- rankings ------------------------------------------------------------------------------------

TEST(RopeRanks, FixedStrategiesKeepMethodSets) {
  // d_h = 16 (8 pairs), r = 4.
  const std::vector<std::pair<std::string, std::vector<int64_t>>> cases = {
      {"high", {0, 1, 2, 3}}, {"low", {4, 5, 6, 7}}, {"uniform", {0, 2, 4, 6}}};
  for (const auto& [strategy, expected] : cases) {
    const RopeRanks ranks = fixed_ranks(strategy, 2, 3, 16, 4);
    EXPECT_NO_THROW(validate_rope_ranks(ranks, 2, 3, 16, strategy));
    const at::Tensor kept = kept_pairs(ranks, 4);
    ASSERT_EQ(kept.sizes(), at::IntArrayRef({2, 3, 8}));
    for (int64_t l = 0; l < 2; ++l)
      for (int64_t g = 0; g < 3; ++g) EXPECT_EQ(kept_indices(kept[l][g]), expected) << strategy;
  }
  // The documented order: kept pairs first, then the others, each by pair index.
  const RopeRanks low = fixed_ranks("low", 1, 1, 16, 4);
  EXPECT_TRUE(low.rank[0][0].equal(
      at::tensor({4, 5, 6, 7, 0, 1, 2, 3, 4, 5, 6, 7, 0, 1, 2, 3}, at::kByte)));
  const RopeRanks uni = fixed_ranks("uniform", 1, 1, 16, 4);
  EXPECT_TRUE(uni.rank[0][0].slice(0, 0, 8).equal(at::tensor({0, 4, 1, 5, 2, 6, 3, 7}, at::kByte)));
  // uniform with r = 3 of 8 pairs: floor(i * 16 / 6) = 0, 2, 5.
  EXPECT_EQ(kept_indices(kept_pairs(fixed_ranks("uniform", 1, 1, 16, 3), 3)[0][0]),
            (std::vector<int64_t>{0, 2, 5}));
  // uniform with r = all pairs keeps everything.
  EXPECT_TRUE(kept_pairs(fixed_ranks("uniform", 1, 1, 16, 8), 8).all().item<bool>());
  EXPECT_THROW(fixed_ranks("random", 1, 1, 16, 4), ArgumentError);
  EXPECT_THROW(fixed_ranks("high", 1, 1, 16, 0), ArgumentError);
  EXPECT_THROW(fixed_ranks("high", 1, 1, 16, 9), ArgumentError);
  EXPECT_THROW(fixed_ranks("high", 1, 1, 15, 2), ArgumentError);
}

TEST(RopeRanks, KeptPairsChecksR) {
  const RopeRanks ranks = fixed_ranks("high", 1, 1, 16, 4);
  EXPECT_THROW(kept_pairs(ranks, 0), ArgumentError);
  EXPECT_THROW(kept_pairs(ranks, 9), ArgumentError);
  EXPECT_EQ(kept_pairs(ranks, 8).sum().item<int64_t>(), 8);
  EXPECT_EQ(kept_indices(kept_pairs(ranks, 1)[0][0]), (std::vector<int64_t>{0}));
}

TEST(RopeRanks, RanksFromScoresIsAStableDescendingArgsort) {
  // Row 0: [1, 3, 3, 0] -> order 1, 2, 0, 3 (the tie 1 = 2 keeps pair 1 first) -> rank [2, 0, 1, 3].
  // Row 1: all equal -> ranks by index.  Row 2: [0.5, -1, 2, 0.5] -> order 2, 0, 3, 1 -> [1, 3, 0, 2].
  const at::Tensor score = at::tensor({1.f, 3.f, 3.f, 0.f, 7.f, 7.f, 7.f, 7.f, .5f, -1.f, 2.f, .5f}).view({1, 3, 4});
  const RopeRanks ranks = ranks_from_scores(score);
  ASSERT_EQ(ranks.rank.sizes(), at::IntArrayRef({1, 3, 8}));
  EXPECT_TRUE(ranks.rank[0][0].equal(at::tensor({2, 0, 1, 3, 2, 0, 1, 3}, at::kByte)));
  EXPECT_TRUE(ranks.rank[0][1].equal(at::tensor({0, 1, 2, 3, 0, 1, 2, 3}, at::kByte)));
  EXPECT_TRUE(ranks.rank[0][2].equal(at::tensor({1, 3, 0, 2, 1, 3, 0, 2}, at::kByte)));
  EXPECT_TRUE(ranks.score.equal(score));
  EXPECT_EQ(kept_indices(kept_pairs(ranks, 2)[0][0]), (std::vector<int64_t>{1, 2}));
  // Long rows with many ties stay stable (the sort must not fall back to an unstable one).
  const at::Tensor flat = at::zeros({1, 1, 64});
  EXPECT_TRUE(ranks_from_scores(flat).rank[0][0].slice(0, 0, 64).equal(at::arange(64).to(at::kByte)));
  EXPECT_THROW(ranks_from_scores(at::full({1, 1, 4}, NAN)), ArgumentError);
  EXPECT_THROW(ranks_from_scores(at::zeros({1, 4})), ArgumentError);
  EXPECT_THROW(ranks_from_scores(at::zeros({1, 1, 300})), ArgumentError);
}

}  // namespace
}  // namespace vlm2mla::convert
