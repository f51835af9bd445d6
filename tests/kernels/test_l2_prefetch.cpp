// kernels/ops.h's l2_prefetch: what it takes and refuses, and that asking changes no byte of what it asks for. (Its
// effect, GEMMs over prefetched cold weights, is timed by LinearProbeCuda.DISABLED_L2PrefetchedWeights.)
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include <ATen/ATen.h>

#include "core/error.h"
#include "kernels/ops.h"

namespace vlm2mla {
namespace {

// The reason l2_prefetch_unusable gives for (weights, fractions), and that l2_prefetch throws an ArgumentError
// carrying it.
void expect_refused(const std::vector<at::Tensor>& w, const std::vector<double>& f, const std::string& why) {
  const char* got = l2_prefetch_unusable(w, f);
  ASSERT_NE(got, nullptr) << "accepted, expected: " << why;
  EXPECT_NE(std::string(got).find(why), std::string::npos) << got;
  try {
    l2_prefetch(w, f);
    ADD_FAILURE() << "no error, expected: " << why;
  } catch (const ArgumentError& e) {
    EXPECT_NE(std::string(e.what()).find("l2_prefetch: "), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find(why), std::string::npos) << e.what();
  }
}

TEST(L2Prefetch, RefusesCpuTensorsAndBuildsWithoutKernels) {
  const at::Tensor w = at::zeros({64, 64}, at::kBFloat16);
  expect_refused({w}, {1.0}, mla_decode_has_cuda() ? "a weight is not a CUDA tensor" : "this build has no CUDA kernels");
}

TEST(L2Prefetch, CudaAsksWithoutChangingAByteAndRefusesWhatItCannotTake) {
  if (!mla_decode_has_cuda() || !at::hasCUDA()) GTEST_SKIP() << "no CUDA device or no CUDA kernels in this build";
  const auto o = at::TensorOptions().dtype(at::kBFloat16).device(at::kCUDA);
  const at::Tensor a = at::randn({3584, 3584}, o), b = at::randn({4096, 1024}, o), c = at::randn({8, 40}, o);
  const at::Tensor a0 = a.clone(), b0 = b.clone(), c0 = c.clone();
  // whole tensors, the heads of rows (rounded up to 16 bytes), a strided view of whole rows, an empty one
  l2_prefetch({a, b.narrow(1, 0, 512), c, at::empty({0, 64}, o)}, {1.0, 0.3, 0.01, 1.0});
  l2_prefetch({}, {});
  (void)a.sum().item<float>();  // after the prefetch launches in stream order: any launch error surfaces here
  EXPECT_TRUE(at::equal(a, a0));
  EXPECT_TRUE(at::equal(b, b0));
  EXPECT_TRUE(at::equal(c, c0));
  expect_refused({a}, {1.0, 1.0}, "one fraction a weight");
  expect_refused({a, a, a, a, a}, {1, 1, 1, 1, 1}, "more than 4 weights");
  expect_refused({a.view({56, 64, 3584})}, {1.0}, "not 2-D");
  expect_refused({a}, {0.0}, "outside (0, 1]");
  expect_refused({a}, {1.5}, "outside (0, 1]");
  expect_refused({a.narrow(1, 1, 64)}, {1.0}, "whole 16-byte pieces");  // rows start 2 bytes off a 16-byte bound
  expect_refused({at::randn({4, 12}, o)}, {1.0}, "whole 16-byte pieces");  // 24-byte rows
  expect_refused({a.t()}, {1.0}, "whole 16-byte pieces");                   // columns apart: not a row layout
  expect_refused({a, a.cpu()}, {1.0, 1.0}, "not a CUDA tensor");
}

}  // namespace
}  // namespace vlm2mla
