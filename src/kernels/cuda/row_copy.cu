#include "kernels/cuda/row_copy.h"

#include <algorithm>

#include "core/error.h"
#include "kernels/cuda/launch_check.cuh"
#include "kernels/cuda/pdl.cuh"

namespace vlm2mla {
namespace {

constexpr int kThreads = 256;

template <int U>
struct Unit;
template <>
struct Unit<16> {
  using T = uint4;
};
template <>
struct Unit<8> {
  using T = uint2;
};
template <>
struct Unit<4> {
  using T = uint32_t;
};
template <>
struct Unit<2> {
  using T = uint16_t;
};

// One U-byte unit a thread (grid-stride): unit e of dst is unit e % w of row e / w, the row (i0, i1, i2) at
// src byte offset i0 S0 + i1 S1 + i2 S2. 32-bit indices (the launcher takes fewer than 2^31 units).
template <int U>
__global__ void __launch_bounds__(kThreads) row_copy_kernel(const unsigned char* __restrict__ src,
                                                            unsigned char* __restrict__ dst, uint32_t units,
                                                            uint32_t w, uint32_t d1, uint32_t d2, int64_t S0,
                                                            int64_t S1, int64_t S2) {
  grid_dependency_wait();  // (pdl.cuh: launched programmatically, the kernel ahead has ended)
  grid_launch_dependents();
  using T = typename Unit<U>::T;
  for (uint32_t e = blockIdx.x * kThreads + threadIdx.x; e < units; e += gridDim.x * kThreads) {
    const uint32_t row = e / w, u = e - row * w;
    const uint32_t i12 = row / d2, i2 = row - i12 * d2;
    const uint32_t i0 = i12 / d1, i1 = i12 - i0 * d1;
    const T* from = reinterpret_cast<const T*>(src + i0 * S0 + i1 * S1 + i2 * S2) + u;
    reinterpret_cast<T*>(dst)[e] = __ldg(from);
  }
}

}  // namespace

void launch_row_copy(const void* src, void* dst, const int64_t (&d)[4], const int64_t (&s)[3], int elem_bytes,
                     cudaStream_t stream) {
  VLM2MLA_CHECK(elem_bytes == 2 || elem_bytes == 4, ArgumentError, "row_copy: elements of 2 or 4 bytes, got ",
                elem_bytes);
  for (int i = 0; i < 4; ++i)
    VLM2MLA_CHECK(d[i] >= 0, ArgumentError, "row_copy: size ", i, " is ", d[i], ", expected >= 0");
  const int64_t row_bytes = d[3] * elem_bytes, rows = d[0] * d[1] * d[2];
  if (rows == 0 || row_bytes == 0) return;
  // the widest unit that divides the row, every stride and both addresses
  const int64_t S[3] = {s[0] * elem_bytes, s[1] * elem_bytes, s[2] * elem_bytes};
  int U = 16;
  auto fits = [&](int u) {
    const bool strides = S[0] % u == 0 && S[1] % u == 0 && S[2] % u == 0;
    return u >= elem_bytes && row_bytes % u == 0 && strides && reinterpret_cast<uintptr_t>(src) % u == 0 &&
           reinterpret_cast<uintptr_t>(dst) % u == 0;
  };
  while (U > elem_bytes && !fits(U)) U /= 2;
  const int64_t w = row_bytes / U, units = rows * w;
  VLM2MLA_CHECK(units < (int64_t(1) << 31) && d[1] * d[2] < (int64_t(1) << 31), ArgumentError, "row_copy: ", units,
                " units of ", U, " bytes: too many for one launch (fewer than 2^31)");
  const unsigned blocks = unsigned(std::min<int64_t>((units + kThreads - 1) / kThreads, 8192));
  const auto* from = static_cast<const unsigned char*>(src);
  auto* to = static_cast<unsigned char*>(dst);
  const uint32_t n = uint32_t(units), uw = uint32_t(w), d1 = uint32_t(d[1]), d2 = uint32_t(d[2]);
  switch (U) {
    case 16:
      launch_programmatic(row_copy_kernel<16>, blocks, kThreads, 0, stream, from, to, n, uw, d1, d2, S[0], S[1], S[2]);
      break;
    case 8:
      launch_programmatic(row_copy_kernel<8>, blocks, kThreads, 0, stream, from, to, n, uw, d1, d2, S[0], S[1], S[2]);
      break;
    case 4:
      launch_programmatic(row_copy_kernel<4>, blocks, kThreads, 0, stream, from, to, n, uw, d1, d2, S[0], S[1], S[2]);
      break;
    default:
      launch_programmatic(row_copy_kernel<2>, blocks, kThreads, 0, stream, from, to, n, uw, d1, d2, S[0], S[1], S[2]);
      break;
  }
  check_kernel_launch("row_copy");
}

}  // namespace vlm2mla
