#include "kernels/cuda/l2_prefetch.h"

#include <algorithm>

#include "core/error.h"
#include "kernels/cuda/launch_check.cuh"
#include "kernels/cuda/pdl.cuh"

namespace vlm2mla {
namespace {

constexpr int kThreads = 256;
constexpr int64_t kPiece = 32 * 1024;  // bytes a prefetch instruction asks for at most

struct Spans {
  const unsigned char* base[kL2PrefetchMaxSpans];
  int64_t row_stride[kL2PrefetchMaxSpans];
  int64_t row_bytes[kL2PrefetchMaxSpans];
  int64_t pieces_per_row[kL2PrefetchMaxSpans];
  int64_t first[kL2PrefetchMaxSpans + 1];  // span s's pieces are [first[s], first[s + 1])
  int n;
};

// Piece e of all spans' pieces a thread (grid-stride): span s, row r, piece j of the row.
__global__ void __launch_bounds__(kThreads) l2_prefetch_kernel(Spans p) {
  grid_launch_dependents();  // the next kernel may be scheduled at once: this one only asks
  const int64_t total = p.first[p.n];
  for (int64_t e = int64_t(blockIdx.x) * kThreads + threadIdx.x; e < total; e += int64_t(gridDim.x) * kThreads) {
    int s = 0;
    while (e >= p.first[s + 1]) ++s;
    const int64_t i = e - p.first[s], r = i / p.pieces_per_row[s], j = i - r * p.pieces_per_row[s];
    const unsigned char* at = p.base[s] + r * p.row_stride[s] + j * kPiece;
    const int64_t left = p.row_bytes[s] - j * kPiece;
    const uint32_t bytes = uint32_t(left < kPiece ? left : kPiece);
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("cp.async.bulk.prefetch.L2.global [%0], %1;\n" ::"l"(at), "r"(bytes) : "memory");
#else
    for (uint32_t o = 0; o < bytes; o += 128) asm volatile("prefetch.global.L2 [%0];\n" ::"l"(at + o));
#endif
  }
  // Launched programmatically, this kernel may have started before the one ahead ended: it ends only after that one,
  // so that the kernels behind it, which wait for it, wait for that one too.
  grid_dependency_wait();
}

}  // namespace

void launch_l2_prefetch(const L2PrefetchSpan* spans, int n, cudaStream_t stream) {
  VLM2MLA_CHECK(n >= 0 && n <= kL2PrefetchMaxSpans, ArgumentError, "l2_prefetch: ", n, " spans, expected 0 to ",
                kL2PrefetchMaxSpans);
  Spans p = {};
  p.n = 0;
  p.first[0] = 0;
  for (int s = 0; s < n; ++s) {
    const L2PrefetchSpan& x = spans[s];
    VLM2MLA_CHECK(x.rows >= 0 && x.row_bytes >= 0 && x.row_stride >= 0, ArgumentError, "l2_prefetch: span ", s,
                  " has ", x.rows, " rows of ", x.row_bytes, " bytes ", x.row_stride, " apart, expected none negative");
    if (x.rows == 0 || x.row_bytes == 0) continue;
    VLM2MLA_CHECK(x.base != nullptr && reinterpret_cast<uintptr_t>(x.base) % 16 == 0 && x.row_stride % 16 == 0 &&
                      x.row_bytes % 16 == 0,
                  ArgumentError, "l2_prefetch: span ", s, " (rows of ", x.row_bytes, " bytes, ", x.row_stride,
                  " apart) is not in whole 16-byte pieces on 16-byte bounds");
    p.base[p.n] = static_cast<const unsigned char*>(x.base);
    p.row_stride[p.n] = x.row_stride;
    p.row_bytes[p.n] = x.row_bytes;
    p.pieces_per_row[p.n] = (x.row_bytes + kPiece - 1) / kPiece;
    p.first[p.n + 1] = p.first[p.n] + x.rows * p.pieces_per_row[p.n];
    ++p.n;
  }
  if (p.first[p.n] == 0) return;
  // a few pieces a thread over a few CTAs per SM's worth: the asks are cheap, and the TMA units queue them
  const unsigned blocks = unsigned(std::min<int64_t>((p.first[p.n] + kThreads - 1) / kThreads, 264));
  launch_programmatic(l2_prefetch_kernel, blocks, kThreads, 0, stream, p);
  check_kernel_launch("l2_prefetch");
}

}  // namespace vlm2mla
