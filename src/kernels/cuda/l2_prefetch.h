// Bytes pulled into the GPU's L2 ahead of the kernel that reads them (sm_90's cp.async.bulk.prefetch.L2): a
// decode step at small batches leaves DRAM idle while its attention runs (a few MB of cache, tens of
// microseconds of dependent round trips), and the projections after it then stream their weights from DRAM. A
// launch here, made before the attention, asks for the next projections' weights (or the head of each of their
// rows: a GEMM's CTAs walk their rows' columns in order) so that the GEMM finds them in the L2. Values are not
// touched: a prefetch is a hint, and the results are the same bits with it or without. No libtorch here.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

namespace vlm2mla {

// `rows` rows of `row_bytes` bytes each, the first at `base`, each `row_stride` bytes after the one before (a whole
// contiguous tensor: one row of all its bytes). base, row_stride and row_bytes multiples of 16.
struct L2PrefetchSpan {
  const void* base = nullptr;
  int64_t rows = 0;
  int64_t row_stride = 0;
  int64_t row_bytes = 0;
};
constexpr int kL2PrefetchMaxSpans = 4;

// One launch (programmatic where pdl.h's switch is on: it asks for the bytes before it waits for the kernel ahead,
// so that those bytes start on their way while that kernel ends) over n <= kL2PrefetchMaxSpans spans, in pieces
// of at most 32 KiB. Throws ArgumentError for spans that break the rules above, Error when the launch fails.
void launch_l2_prefetch(const L2PrefetchSpan* spans, int n, cudaStream_t stream);

}  // namespace vlm2mla
