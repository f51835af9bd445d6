// The fused row copy (kernels/ops.h's fused_contiguous): where it is usable and why not, and on a CUDA device the
// copies of the strided views it takes, bit for bit libtorch's contiguous(): kv_head_product's two transposes of
// whole rows, narrowed rows (16-byte pieces, and rows whose sizes or addresses allow only 4- or 2-byte ones),
// views of 1 to 4 merged dimensions, broadcast rows (stride 0), no elements, and a contiguous tensor returned
// as it is.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "kernels/ops.h"
#include "support/test_support.h"

namespace vlm2mla {
namespace {

TEST(FusedRowCopy, RefusesWhatItCannotCopyAndSaysWhy) {
  const at::Tensor cpu = at::randn({4, 8}).t();
  ASSERT_NE(fused_row_copy_unusable(cpu), nullptr);
  const std::string why = testing::argument_error([&] { fused_contiguous(cpu); });
  EXPECT_NE(why.find("fused_contiguous"), std::string::npos) << why;
  EXPECT_NE(why.find("CUDA"), std::string::npos) << why;
  if (!at::hasCUDA() || !mla_decode_has_cuda()) GTEST_SKIP() << "no CUDA device or no CUDA kernels in this build";
  const at::TensorOptions o = at::TensorOptions().device(at::kCUDA);
  const char* t = fused_row_copy_unusable(at::randn({4, 8}, o).t());
  ASSERT_NE(t, nullptr);  // a transpose of single elements: the innermost dimension is strided
  EXPECT_NE(std::string(t).find("innermost"), std::string::npos) << t;
  const char* five = fused_row_copy_unusable(at::randn({2, 3, 4, 5, 6, 8}, o).permute({4, 3, 2, 1, 0, 5}));
  ASSERT_NE(five, nullptr);
  EXPECT_NE(std::string(five).find("4 dimensions"), std::string::npos) << five;
  EXPECT_NE(fused_row_copy_unusable(at::zeros({4, 8}, o.dtype(at::kInt)).narrow(1, 0, 4)), nullptr);
}

TEST(FusedRowCopyCuda, CopiesTheBitsLibtorchCopies) {
  if (!at::hasCUDA() || !mla_decode_has_cuda()) GTEST_SKIP() << "no CUDA device or no CUDA kernels in this build";
  at::manual_seed(11);
  int n = 0;
  for (const at::ScalarType dtype : {at::kBFloat16, at::kHalf, at::kFloat}) {
    const at::TensorOptions o = at::TensorOptions().dtype(dtype).device(at::kCUDA);
    // kv_head_product's copies at Qwen2.5-VL-7B's shapes (b = 5): q's rows by kv head (a view of a wider product
    // row), and the product [h_kv, b, g, n] back by sequence, n = 258 (2 x 128 + 2 bias columns)
    const at::Tensor qkv = at::randn({5, 28 * 128 + 2 * 4 * 128}, o);
    const at::Tensor q = qkv.narrow(1, 0, 28 * 128).view({5, 4, 7, 128});
    const at::Tensor prod = at::randn({4, 5, 7, 258}, o);
    const at::Tensor ox = at::randn({5, 4, 7, 264}, o);  // a buffer's narrowed rows (258 of 264 columns)
    const at::Tensor flat = at::randn({3, 1000}, o);
    const std::vector<at::Tensor> views = {
        q.transpose(0, 1),                    // rows of 896 values, 16-byte pieces
        prod.transpose(0, 1),                 // rows of 258 values: 4-byte pieces (bf16), 8-byte (float32)
        ox.narrow(-1, 0, 258).transpose(0, 1),
        ox.narrow(-1, 1, 255),                // rows off 4-byte bounds: 2-byte pieces (bf16)
        flat.narrow(1, 3, 600),               // two dimensions
        flat.narrow(1, 0, 512).view({3, 2, 256}).transpose(0, 1),
        at::randn({6, 8}, o).unsqueeze(0).expand({3, 6, 8}),  // a broadcast (stride 0) dimension
        prod.narrow(1, 0, 0).transpose(0, 1),  // no elements
    };
    for (const at::Tensor& v : views) {
      const char* why = fused_row_copy_unusable(v);
      ASSERT_EQ(why, nullptr) << why << " " << v.sizes() << " " << v.strides();
      const at::Tensor got = fused_contiguous(v);
      ASSERT_TRUE(got.is_contiguous());
      ASSERT_EQ(got.sizes(), v.sizes());
      EXPECT_TRUE(at::equal(got, v.contiguous())) << c10::toString(dtype) << " " << v.sizes() << " " << v.strides();
      ++n;
    }
    const at::Tensor dense = at::randn({4, 7, 16}, o);  // contiguous: returned as it is
    EXPECT_EQ(fused_contiguous(dense).data_ptr(), dense.data_ptr());
  }
  EXPECT_EQ(n, 24);
}

}  // namespace
}  // namespace vlm2mla
