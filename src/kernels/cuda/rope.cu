#include "kernels/cuda/rope.h"

#include <algorithm>

#include "core/error.h"
#include "kernels/cuda/element.cuh"
#include "kernels/cuda/launch_check.cuh"
#include "kernels/cuda/pdl.cuh"
#include "kernels/cuda/rope.cuh"

namespace vlm2mla {
namespace {

using rope_detail::rope_pairs;

constexpr int kThreads = 256;
constexpr int64_t kMaxBlocks = 4096;  // a grid-stride loop covers the rest

template <typename T>
__global__ void __launch_bounds__(kThreads) rope_kernel(const RopeParams p, int64_t pairs) {
  grid_dependency_wait();  // (pdl.cuh: launched programmatically, the kernel ahead has ended)
  grid_launch_dependents();
  rope_pairs<T>(p, pairs, blockIdx.x, gridDim.x);
}

// Two tensors in one launch: blocks [0, blocks_a) rotate a's pairs, the rest b's (each its own grid-stride loop;
// two calls, each with its tensor's parameters at fixed offsets).
template <typename T>
__global__ void __launch_bounds__(kThreads) rope_pair_kernel(const RopeParams a, int64_t pairs_a, int64_t blocks_a,
                                                             const RopeParams b, int64_t pairs_b) {
  grid_dependency_wait();  // (pdl.cuh: launched programmatically, the kernel ahead has ended)
  grid_launch_dependents();
  if (blockIdx.x < blocks_a) {
    rope_pairs<T>(a, pairs_a, blockIdx.x, blocks_a);
  } else {
    rope_pairs<T>(b, pairs_b, blockIdx.x - blocks_a, gridDim.x - blocks_a);
  }
}

int64_t rope_blocks(int64_t pairs) { return std::min<int64_t>((pairs + kThreads - 1) / kThreads, kMaxBlocks); }

template <typename T>
void launch_typed(const RopeParams& p, int64_t pairs, cudaStream_t stream) {
  launch_programmatic(rope_kernel<T>, dim3(unsigned(rope_blocks(pairs))), kThreads, 0, stream, p, pairs);
}

// x's elements (0 for an empty x) after the checks every launch makes.
int64_t checked_numel(const RopeParams& p, const char* what) {
  VLM2MLA_CHECK(p.dims >= 1 && p.dims <= kRopeMaxDims, ArgumentError, what, ": x has ", p.dims,
                " dims; the kernel takes 1 to ", kRopeMaxDims);
  const int64_t d = p.size[p.dims - 1];
  VLM2MLA_CHECK(d >= 0 && d % 2 == 0, ArgumentError, what, ": the last dim (", d, ") must be even");
  int64_t numel = 1;
  for (int j = 0; j < p.dims; ++j) {
    VLM2MLA_CHECK(p.size[j] >= 0, ArgumentError, what, ": size ", p.size[j], " of dim ", j, " is negative");
    numel *= p.size[j];
  }
  return numel;
}

}  // namespace

void launch_rope_pair(const RopeParams& a, const RopeParams& b, cudaStream_t stream) {
  const int64_t na = checked_numel(a, "rope_pair (the first tensor)"), nb = checked_numel(b, "rope_pair (the second)");
  VLM2MLA_CHECK(a.dtype == b.dtype, ArgumentError, "rope_pair: the two tensors differ in dtype");
  if (na == 0 || nb == 0) {  // one launch of the other, if any
    if (na > 0) launch_rope(a, stream);
    if (nb > 0) launch_rope(b, stream);
    return;
  }
  const int64_t blocks_a = rope_blocks(na / 2), blocks = blocks_a + rope_blocks(nb / 2);
  switch (a.dtype) {
    case ElementDtype::kBf16:
      launch_programmatic(rope_pair_kernel<__nv_bfloat16>, dim3(unsigned(blocks)), kThreads, 0, stream, a, na / 2,
                          blocks_a, b, nb / 2);
      break;
    case ElementDtype::kFp16:
      launch_programmatic(rope_pair_kernel<__half>, dim3(unsigned(blocks)), kThreads, 0, stream, a, na / 2, blocks_a, b,
                          nb / 2);
      break;
    case ElementDtype::kFp32:
      launch_programmatic(rope_pair_kernel<float>, dim3(unsigned(blocks)), kThreads, 0, stream, a, na / 2, blocks_a, b,
                          nb / 2);
      break;
  }
  check_kernel_launch("rope_pair");
}

void launch_rope(const RopeParams& p, cudaStream_t stream) {
  const int64_t numel = checked_numel(p, "rope");
  if (numel == 0) return;
  switch (p.dtype) {
    case ElementDtype::kBf16: launch_typed<__nv_bfloat16>(p, numel / 2, stream); break;
    case ElementDtype::kFp16: launch_typed<__half>(p, numel / 2, stream); break;
    case ElementDtype::kFp32: launch_typed<float>(p, numel / 2, stream); break;
  }
  check_kernel_launch("rope");
}

}  // namespace vlm2mla
