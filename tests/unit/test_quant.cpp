// Cache quantization format: round trip error bounds, packing layout, byte counts.
#include <gtest/gtest.h>

#include "core/error.h"
#include "kvcache/quant.h"

namespace vlm2mla {
namespace {

TEST(Quant, RoundTripWithinHalfAStep) {
  auto gen = at::detail::createCPUGenerator(3);
  at::Tensor x = at::normal(0.0, 2.0, {3, 5, 64}, gen, at::TensorOptions().dtype(at::kFloat));
  for (int64_t bits : {8, 4, 2}) {
    for (int64_t group : {16, 32, 64}) {
      QuantizedRows q = quantize_rows(x, bits, group);
      EXPECT_EQ(q.data.sizes(), (std::vector<int64_t>{3, 5, 64 * bits / 8}));
      EXPECT_EQ(q.scale.sizes(), (std::vector<int64_t>{3, 5, 64 / group}));
      at::Tensor back = dequantize_rows(q, bits, group, at::kFloat);
      at::Tensor step = q.scale.to(at::kFloat).repeat_interleave(group, -1);
      // half a step, plus float16 rounding of the group minimum
      at::Tensor bound = step * 0.5 + q.lo.to(at::kFloat).abs().repeat_interleave(group, -1) * 1e-3 + 1e-6;
      EXPECT_TRUE(((back - x).abs() <= bound).all().item<bool>()) << bits << " bits, group " << group;
    }
  }
}

TEST(Quant, Int4PacksElementPairsLowNibbleFirst) {
  at::Tensor x = at::tensor({0.f, 15.f, 3.f, 7.f, 1.f, 2.f, 4.f, 5.f}).view({1, 8});
  QuantizedRows q = quantize_rows(x, 4, 8);  // lo 0, scale 1
  EXPECT_EQ(q.data[0][0].item<int>(), 0 | (15 << 4));
  EXPECT_EQ(q.data[0][1].item<int>(), 3 | (7 << 4));
  EXPECT_EQ(q.data[0][3].item<int>(), 4 | (5 << 4));
  EXPECT_TRUE(at::equal(dequantize_rows(q, 4, 8, at::kFloat), x));
}

TEST(Quant, ConstantGroupsAndBytes) {
  at::Tensor x = at::full({2, 32}, 1.5f);
  QuantizedRows q = quantize_rows(x, 2, 16);
  EXPECT_TRUE(at::equal(dequantize_rows(q, 2, 16, at::kFloat), x));
  EXPECT_EQ(quantized_row_bytes(128, 4, 64), 64 + 8);
  EXPECT_THROW(check_quant_shape(100, 4, 64, "t"), ArgumentError);
  EXPECT_THROW(check_quant_shape(64, 3, 16, "t"), ArgumentError);
  EXPECT_THROW(check_quant_shape(64, 2, 2, "t"), ArgumentError);
}

}  // namespace
}  // namespace vlm2mla
