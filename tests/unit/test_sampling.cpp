// Sampling processors against hand-computed expectations.
#include <gtest/gtest.h>

#include <cmath>

#include "core/error.h"
#include "generate/generate.h"
#include "generate/sampling.h"

namespace vlm2mla {
namespace {

at::Tensor row(std::vector<float> v) { return at::tensor(v).view({1, -1}); }

TEST(Sampling, GreedyIsArgmaxAndIgnoresWarpers) {
  SamplingParams p;
  p.do_sample = false;
  p.top_k = 1;
  p.temperature = 0.1;
  Sampler s(p);
  EXPECT_EQ(s.next(row({0.1f, 2.0f, 1.0f}), {}).item<int64_t>(), 1);
}

TEST(Sampling, RepetitionPenaltyAsTransformers) {
  SamplingParams p;
  p.repetition_penalty = 2.0;
  Sampler s(p);
  at::Tensor out = s.process(row({4.0f, -1.0f, 3.0f}), at::tensor({0, 1}, at::kLong).view({1, 2}));
  EXPECT_FLOAT_EQ(out[0][0].item<float>(), 2.0f);   // positive: divided
  EXPECT_FLOAT_EQ(out[0][1].item<float>(), -2.0f);  // negative: multiplied
  EXPECT_FLOAT_EQ(out[0][2].item<float>(), 3.0f);   // unseen: unchanged
  EXPECT_EQ(s.next(row({4.0f, -1.0f, 3.0f}), at::tensor({0, 1}, at::kLong).view({1, 2})).item<int64_t>(), 2);
}

TEST(Sampling, TopKKeepsKBest) {
  SamplingParams p;
  p.do_sample = true;
  p.top_k = 2;
  p.top_p = 1.0;
  at::Tensor out = Sampler(p).process(row({1.0f, 5.0f, 3.0f, 0.0f}), {});
  EXPECT_TRUE(std::isinf(out[0][0].item<float>()));
  EXPECT_FLOAT_EQ(out[0][1].item<float>(), 5.0f);
  EXPECT_FLOAT_EQ(out[0][2].item<float>(), 3.0f);
  EXPECT_TRUE(std::isinf(out[0][3].item<float>()));
}

TEST(Sampling, TopPDropsTheTail) {
  SamplingParams p;
  p.do_sample = true;
  p.top_k = 0;
  p.top_p = 0.7;
  // probabilities 0.5, 0.3, 0.15, 0.05: the nucleus for 0.7 is {0, 1}
  at::Tensor logits = row({std::log(0.5f), std::log(0.3f), std::log(0.15f), std::log(0.05f)});
  at::Tensor out = Sampler(p).process(logits, {});
  EXPECT_FALSE(std::isinf(out[0][0].item<float>()));
  EXPECT_FALSE(std::isinf(out[0][1].item<float>()));
  EXPECT_TRUE(std::isinf(out[0][2].item<float>()));
  EXPECT_TRUE(std::isinf(out[0][3].item<float>()));
  p.top_p = 0.01;  // always keeps the best token
  out = Sampler(p).process(logits, {});
  EXPECT_FALSE(std::isinf(out[0][0].item<float>()));
  EXPECT_TRUE(std::isinf(out[0][1].item<float>()));
}

TEST(Sampling, TemperatureScales) {
  SamplingParams p;
  p.do_sample = true;
  p.top_k = 0;
  p.temperature = 0.5;
  at::Tensor out = Sampler(p).process(row({1.0f, 2.0f}), {});
  EXPECT_FLOAT_EQ(out[0][1].item<float>(), 4.0f);
}

TEST(Sampling, SeededDrawsAreReproducibleAndFollowTheDistribution) {
  SamplingParams p;
  p.do_sample = true;
  p.top_k = 0;
  p.seed = 42;
  at::Tensor logits = row({std::log(0.7f), std::log(0.2f), std::log(0.1f)}).repeat({4000, 1});
  at::Tensor a = Sampler(p).next(logits, {}), b = Sampler(p).next(logits, {});
  EXPECT_TRUE(a.equal(b));
  const double f0 = a.eq(0).sum().item<double>() / 4000;
  EXPECT_NEAR(f0, 0.7, 0.03);
  p.seed = 43;
  EXPECT_FALSE(Sampler(p).next(logits, {}).equal(a));
}

TEST(Sampling, InvalidParametersAreNamed) {
  SamplingParams p;
  p.temperature = 0;
  EXPECT_THROW(validate(p), ArgumentError);
  p = SamplingParams();
  p.top_p = 1.5;
  EXPECT_THROW(validate(p), ArgumentError);
}

TEST(Generate, PositionIdsFromMaskAsTransformers) {
  at::Tensor mask = at::tensor({0, 0, 1, 1, 1, 1, 1, 1, 1, 1}, at::kLong).view({2, 5});
  at::Tensor pos = position_ids_from_mask(mask);
  EXPECT_TRUE(pos.equal(at::tensor({1, 1, 0, 1, 2, 0, 1, 2, 3, 4}, at::kLong).view({2, 5})));
}

}  // namespace
}  // namespace vlm2mla
