// The per-kv-head product of a decode step in one launch (head_product.h). Grid (column slices of 64, kv heads,
// row blocks of 16 (sequence, row) pairs); 256 threads: the CTA copies w[k]'s slice (d x 64) and its 16 rows of x
// (d each) into shared memory in 16-byte pieces, then thread t sums column t % 64 for rows 4 (t / 64) .. + 3 over
// the inner dimension in order, in float32, and rounds once.
#include "kernels/cuda/head_product.h"

#include <algorithm>

#include "core/error.h"
#include "kernels/cuda/element.cuh"
#include "kernels/cuda/launch_check.cuh"

namespace vlm2mla {
namespace {

constexpr int kThreads = 256;
constexpr int kCols = 64;              // columns of y a CTA
constexpr int kRows = 16;              // (sequence, row) pairs a CTA
constexpr int kRowsPerThread = kRows / (kThreads / kCols);
constexpr int64_t kSmemLimit = 48 * 1024;

template <typename T>
__global__ void __launch_bounds__(kThreads) head_product_kernel(const HeadProductParams p) {
  extern __shared__ __align__(16) unsigned char smem[];
  constexpr int V = 16 / sizeof(T);  // elements a 16-byte piece
  const int64_t d = p.d, n = p.n, rows = p.b * p.m;
  const int c0 = blockIdx.x * kCols, k = blockIdx.y;
  const int64_t r0 = int64_t(blockIdx.z) * kRows;
  T* ws = reinterpret_cast<T*>(smem);  // [d][kCols]
  T* xs = ws + d * kCols;              // [kRows][d]
  const int tid = threadIdx.x;
  const int cols = int(n - c0 < kCols ? n - c0 : kCols);  // a multiple of V
  {  // w[k][:, c0 .. c0 + cols), zeros past n
    const T* wk = static_cast<const T*>(p.w) + int64_t(k) * d * n + c0;
    const int pr = kCols / V;  // pieces a row of the slice
    for (int64_t e = tid; e < d * pr; e += kThreads) {
      const int64_t j = e / pr;
      const int c = int(e - j * pr) * V;
      uint4 v = make_uint4(0, 0, 0, 0);
      if (c < cols) v = *reinterpret_cast<const uint4*>(wk + j * n + c);
      *reinterpret_cast<uint4*>(ws + j * kCols + c) = v;
    }
  }
  {  // rows r0 .. r0 + kRows of x (zeros past the last)
    const int64_t pr = d / V;
    for (int64_t e = tid; e < kRows * pr; e += kThreads) {
      const int r = int(e / pr);
      const int64_t c = (e - int64_t(r) * pr) * V;
      const int64_t row = r0 + r;
      uint4 v = make_uint4(0, 0, 0, 0);
      if (row < rows) {
        const int64_t bi = row / p.m, i = row - bi * p.m;
        const T* xr = static_cast<const T*>(p.x) + bi * p.x_stride[0] + int64_t(k) * p.x_stride[1] + i * p.x_stride[2];
        v = *reinterpret_cast<const uint4*>(xr + c);
      }
      *reinterpret_cast<uint4*>(xs + int64_t(r) * d + c) = v;
    }
  }
  __syncthreads();
  const int col = tid % kCols, rg = tid / kCols;
  float acc[kRowsPerThread];
#pragma unroll
  for (int r = 0; r < kRowsPerThread; ++r) acc[r] = 0.f;
  const T* xrow = xs + int64_t(rg) * kRowsPerThread * d;
#pragma unroll 4
  for (int64_t j = 0; j < d; ++j) {
    const float wv = to_float(ws[j * kCols + col]);
#pragma unroll
    for (int r = 0; r < kRowsPerThread; ++r) acc[r] = fmaf(to_float(xrow[r * d + j]), wv, acc[r]);
  }
  if (col >= cols) return;
#pragma unroll
  for (int r = 0; r < kRowsPerThread; ++r) {
    const int64_t row = r0 + rg * kRowsPerThread + r;
    if (row >= rows) break;
    const int64_t bi = row / p.m, i = row - bi * p.m;
    static_cast<T*>(p.y)[((bi * p.h + k) * p.m + i) * n + c0 + col] = from_float<T>(acc[r]);
  }
}

}  // namespace

int64_t head_product_smem_bytes(int64_t d, int elem_bytes) { return (d * kCols + kRows * d) * elem_bytes; }

bool head_product_fits(int64_t d, int elem_bytes) { return head_product_smem_bytes(d, elem_bytes) <= kSmemLimit; }

void launch_head_product(const HeadProductParams& p, ElementDtype dtype, cudaStream_t stream) {
  const int eb = dtype == ElementDtype::kFp32 ? 4 : 2, v = 16 / eb;
  VLM2MLA_CHECK(p.b >= 0 && p.h > 0 && p.m > 0 && p.d > 0 && p.n > 0, ArgumentError, "head_product: sizes b ", p.b,
                ", h ", p.h, ", m ", p.m, ", d ", p.d, ", n ", p.n, " out of range");
  VLM2MLA_CHECK(p.d % v == 0 && p.n % v == 0 && p.x_stride[0] % v == 0 && p.x_stride[1] % v == 0 &&
                    p.x_stride[2] % v == 0,
                ArgumentError, "head_product: d (", p.d, "), n (", p.n, ") and x's strides must be multiples of ", v,
                " elements (16-byte pieces)");
  auto aligned = [](const void* ptr) { return (reinterpret_cast<uintptr_t>(ptr) & 15u) == 0; };
  VLM2MLA_CHECK(aligned(p.x) && aligned(p.w) && aligned(p.y), ArgumentError,
                "head_product: x, w and y must be 16-byte aligned");
  VLM2MLA_CHECK(head_product_fits(p.d, eb), ArgumentError, "head_product: an inner size of ", p.d, " needs ",
                head_product_smem_bytes(p.d, eb), " bytes of shared memory, more than ", kSmemLimit);
  const int64_t blocks_z = (p.b * p.m + kRows - 1) / kRows;
  VLM2MLA_CHECK(p.h <= 65535 && blocks_z <= 65535, ArgumentError, "head_product: ", p.h, " heads or ", p.b * p.m,
                " rows a head: too many for one launch");
  if (p.b == 0) return;
  const dim3 grid(unsigned((p.n + kCols - 1) / kCols), unsigned(p.h), unsigned(blocks_z));
  const size_t smem = size_t(head_product_smem_bytes(p.d, eb));
  switch (dtype) {
    case ElementDtype::kBf16: head_product_kernel<__nv_bfloat16><<<grid, kThreads, smem, stream>>>(p); break;
    case ElementDtype::kFp16: head_product_kernel<__half><<<grid, kThreads, smem, stream>>>(p); break;
    case ElementDtype::kFp32: head_product_kernel<float><<<grid, kThreads, smem, stream>>>(p); break;
  }
  check_kernel_launch("head_product");
}

}  // namespace vlm2mla
