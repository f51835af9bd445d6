#include "kernels/cuda/l2_prefetch.h"

#include <algorithm>
#include <mutex>

#include "core/error.h"
#include "kernels/cuda/launch_check.cuh"

namespace vlm2mla {
namespace {

constexpr int kThreads = 32;          // a warp a CTA: the asks spread over many SMs' TMA units
constexpr int64_t kPiece = 8 * 1024;  // bytes a prefetch instruction asks for at most

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
}

void check_cuda(cudaError_t err, const char* what) {
  VLM2MLA_CHECK(err == cudaSuccess, Error, what, " failed: ", cudaGetErrorName(err), " (", cudaGetErrorString(err), ")");
}

// A device's side stream and the two events of its forks and joins, made at its first fork.
struct Side {
  cudaStream_t stream = nullptr;
  cudaEvent_t fork = nullptr, join = nullptr;
  bool pending = false;  // a fork not yet joined
};
constexpr int kMaxDevices = 64;
std::mutex sides_mutex;
Side sides[kMaxDevices];

Side& side_of_current_device() {
  int device = 0;
  check_cuda(cudaGetDevice(&device), "l2_prefetch: cudaGetDevice");
  VLM2MLA_CHECK(device >= 0 && device < kMaxDevices, Error, "l2_prefetch: device ", device, " beyond ", kMaxDevices);
  Side& s = sides[device];
  if (!s.stream) {
    check_cuda(cudaStreamCreateWithFlags(&s.stream, cudaStreamNonBlocking), "l2_prefetch: cudaStreamCreate");
    check_cuda(cudaEventCreateWithFlags(&s.fork, cudaEventDisableTiming), "l2_prefetch: cudaEventCreate");
    check_cuda(cudaEventCreateWithFlags(&s.join, cudaEventDisableTiming), "l2_prefetch: cudaEventCreate");
  }
  return s;
}

}  // namespace

void fork_l2_prefetch(const L2PrefetchSpan* spans, int n, cudaStream_t stream) {
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
  const unsigned blocks = unsigned(std::min<int64_t>((p.first[p.n] + kThreads - 1) / kThreads, 1056));
  std::lock_guard<std::mutex> lock(sides_mutex);
  Side& side = side_of_current_device();
  check_cuda(cudaEventRecord(side.fork, stream), "l2_prefetch: cudaEventRecord");
  check_cuda(cudaStreamWaitEvent(side.stream, side.fork, 0), "l2_prefetch: cudaStreamWaitEvent");
  l2_prefetch_kernel<<<blocks, kThreads, 0, side.stream>>>(p);
  check_kernel_launch("l2_prefetch");
  side.pending = true;
}

void join_l2_prefetch(cudaStream_t stream) {
  std::lock_guard<std::mutex> lock(sides_mutex);
  Side& side = side_of_current_device();
  if (!side.pending) return;
  check_cuda(cudaEventRecord(side.join, side.stream), "l2_prefetch: cudaEventRecord");
  check_cuda(cudaStreamWaitEvent(stream, side.join, 0), "l2_prefetch: cudaStreamWaitEvent");
  side.pending = false;
}

}  // namespace vlm2mla
