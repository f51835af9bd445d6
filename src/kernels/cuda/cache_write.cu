// A decode step's quantized cache write in one launch (cache_write.h). One CTA per sequence: its warps
// quantize the leaving ring row a group each, then, after a barrier (the slot is read before it is
// overwritten), copy the step's rows into the slot.
#include "kernels/cuda/cache_write.h"

#include <cuda_fp16.h>

#include <algorithm>

#include "core/error.h"
#include "kernels/cuda/element.cuh"
#include "kernels/cuda/launch_check.cuh"
#include "kernels/cuda/pdl.cuh"
#include "kernels/cuda/rope.cuh"
#include "kvcache/quant_shape.h"

namespace vlm2mla {
namespace {

using rope_detail::rope_pairs;
using rope_detail::rope_row_element;

constexpr int kThreads = 128;

// A warp per group (groups in turn over the CTA's warps): the lanes' minima and maxima over the group's values
// reduced by shuffles (fminf / fmaxf: the same float32 result in any order, but for the sign of a zero), then each
// lane packs whole bytes. The first form took a group per thread, its values one after another with a runtime trip
// count: ~11 us a launch on the H200 (two a layer; Nsight Systems, session 22), the loads' latency in series.
// row(e): element e of the step's row (a load, or the rotated key's element).
template <typename T, typename Row>
__device__ __forceinline__ void ring_write_row(const RingWriteParams& p, int64_t b, Row row) {
  const int64_t pos = *p.pos;
  const int64_t slot = pos % p.window_size;
  const int64_t qpos = pos >= p.window_size ? pos - p.window_size : 0;
  T* ring = static_cast<T*>(p.window) + b * p.window_stride[0] + slot * p.window_stride[1];
  const int groups = int(p.n / p.group), per_byte = 8 / p.bits, bytes = p.group / per_byte;
  const float levels = float((1 << p.bits) - 1);
  // libtorch's CUDA division by a host scalar multiplies by the scalar's float32 reciprocal (its
  // BinaryDivTrueKernel): the twin's scale is (max - min) * (1 / levels), not a division
  const float inv_levels = 1.f / levels;
  uint8_t* data = p.data + b * p.data_stride[0] + qpos * p.data_stride[1];
  const int lane = threadIdx.x & 31;
  for (int g = threadIdx.x >> 5; g < groups; g += kThreads / 32) {
    const T* x = ring + int64_t(g) * p.group;
    float lo = INFINITY, hi = -INFINITY;
    for (int i = lane; i < p.group; i += 32) {
      const float v = to_float(x[i]);
      lo = fminf(lo, v);
      hi = fmaxf(hi, v);
    }
#pragma unroll
    for (int off = 16; off > 0; off >>= 1) {
      lo = fminf(lo, __shfl_xor_sync(0xffffffffu, lo, off));
      hi = fmaxf(hi, __shfl_xor_sync(0xffffffffu, hi, off));
    }
    float scale = (hi - lo) * inv_levels;
    if (!(scale > 0.f)) scale = 1.f;
    const __half s16 = __float2half_rn(scale), l16 = __float2half_rn(lo);
    const float s = __half2float(s16), l = __half2float(l16);
    uint8_t* d = data + int64_t(g) * bytes;
    for (int j = lane; j < bytes; j += 32) {
      unsigned byte = 0;
      for (int k = 0; k < per_byte; ++k) {
        const float c = fminf(fmaxf(rintf((to_float(x[j * per_byte + k]) - l) / s), 0.f), levels);
        byte |= unsigned(c) << (k * p.bits);
      }
      d[j] = uint8_t(byte);
    }
    {  // every lane stores the same halves (one transaction; a lane-0 branch made ptxas spill 8 bytes)
      p.scale[b * p.scale_stride[0] + qpos * p.scale_stride[1] + g] = __half_as_ushort(s16);
      p.lo[b * p.lo_stride[0] + qpos * p.lo_stride[1] + g] = __half_as_ushort(l16);
    }
  }
  __syncthreads();  // the leaving row is read: its slot takes the step's rows
  for (int64_t e = threadIdx.x; e < p.n; e += kThreads) ring[e] = row(e);
}

template <typename T>
__device__ __forceinline__ void ring_write_row(const RingWriteParams& p, int64_t b, const T* rows) {
  ring_write_row<T>(p, b, [rows](int64_t e) { return rows[e]; });
}

// One CTA per sequence.
template <typename T>
__global__ void __launch_bounds__(kThreads) ring_write_kernel(const RingWriteParams p) {
  grid_dependency_wait();  // (pdl.cuh: launched programmatically, the kernel ahead has ended)
  grid_launch_dependents();
  const int64_t b = blockIdx.x;
  ring_write_row<T>(p, b, static_cast<const T*>(p.rows) + b * p.rows_stride);
}

// Grid (b, 2): CTA (b, q) writes sequence b's row into store q, store 0's row the image set's where the sequence's
// step token is an image. With the step's RoPE (pp.q_pairs > 0): store 1's row rotated on its way into the ring
// (pp.rope_k), and a third row of CTAs rotating the queries (pp.rope_q) as rope.cu's kernels do.
template <typename T>
__global__ void __launch_bounds__(kThreads) ring_write_pair_kernel(const RingWritePairParams pp) {
  grid_dependency_wait();  // (pdl.cuh: launched programmatically, the kernel ahead has ended)
  grid_launch_dependents();
  const int64_t b = blockIdx.x;
  if (blockIdx.y == 2) {
    rope_pairs<T>(pp.rope_q, pp.q_pairs, blockIdx.x, gridDim.x);
    return;
  }
  if (b >= pp.store[0].b) return;  // (a row wider than the batch: the queries' CTAs)
  if (blockIdx.y == 1) {  // (two calls, each with its store's parameters at fixed offsets: indexing them by
                          // blockIdx.y made ptxas spill)
    if (pp.rope_k.x) {
      ring_write_row<T>(pp.store[1], b, [&pp, b](int64_t e) { return rope_row_element<T>(pp.rope_k, b, e); });
    } else {
      ring_write_row<T>(pp.store[1], b, static_cast<const T*>(pp.store[1].rows) + b * pp.store[1].rows_stride);
    }
    return;
  }
  const bool alt = pp.alt != nullptr && pp.image[b * pp.image_stride] != 0;
  ring_write_row<T>(pp.store[0], b,
                    alt ? static_cast<const T*>(pp.alt) + b * pp.alt_stride
                        : static_cast<const T*>(pp.store[0].rows) + b * pp.store[0].rows_stride);
}

// CTA (b heads + h, q) of latent_write_kernel: sequence b's row (of head h) of store q in 16-byte pieces.
__device__ __forceinline__ void latent_write_row(const LatentWriteParams& p, int q, int elem_bytes) {
  const int64_t b = blockIdx.x / p.heads, h = blockIdx.x - b * p.heads;
  const int64_t pos = *p.pos;
  const bool alt = q == 0 && p.alt != nullptr && p.image[b * p.image_stride] != 0;
  const auto* src = static_cast<const unsigned char*>(alt ? p.alt : p.src[q]) +
                    (b * (alt ? p.alt_stride : p.src_stride[q]) + h * p.src_head_stride[q]) * elem_bytes;
  auto* dst = static_cast<unsigned char*>(p.dst[q]) +
              (b * p.dst_stride[q][0] + h * p.dst_head_stride[q] + pos * p.dst_stride[q][1]) * elem_bytes;
  const int64_t pieces = p.n[q] * elem_bytes / 16;
  for (int64_t e = threadIdx.x; e < pieces; e += kThreads)
    reinterpret_cast<uint4*>(dst)[e] = reinterpret_cast<const uint4*>(src)[e];
}

// Grid (b heads, 2): CTA (b heads + h, q) copies sequence b's row (of head h) of store q.
__global__ void __launch_bounds__(kThreads) latent_write_kernel(const LatentWriteParams p, int elem_bytes) {
  grid_dependency_wait();  // (pdl.cuh: launched programmatically, the kernel ahead has ended)
  grid_launch_dependents();
  latent_write_row(p, int(blockIdx.y), elem_bytes);
}

// With the step's RoPE (a latent cache: heads 1): grid (rope_grid_x, 3), CTA (b, 0) copies the latent's row as above,
// CTA (b, 1) stores the RoPE key's row rotated (p.rope_k, element by element), the CTAs (*, 2) rotate the queries
// (p.rope_q) a pair a thread (rope_grid_x: enough of them for one pass; a first form took b CTAs, one at b = 1 doing
// 4 rounds of loads for Qwen2.5-VL-7B's 448 pairs, and the launch it saved bought nothing).
template <typename T>
__global__ void __launch_bounds__(kThreads) latent_rope_write_kernel(const LatentWriteParams p) {
  grid_dependency_wait();  // (pdl.cuh: launched programmatically, the kernel ahead has ended)
  grid_launch_dependents();
  if (blockIdx.y == 2) {
    rope_pairs<T>(p.rope_q, p.q_pairs, blockIdx.x, gridDim.x);
  } else if (blockIdx.x >= p.b) {
    return;  // (a row wider than the batch: the queries' CTAs)
  } else if (blockIdx.y == 1) {
    const int64_t b = blockIdx.x;
    T* dst = static_cast<T*>(p.dst[1]) + b * p.dst_stride[1][0] + *p.pos * p.dst_stride[1][1];
    for (int64_t e = threadIdx.x; e < p.n[1]; e += kThreads) dst[e] = rope_row_element<T>(p.rope_k, b, e);
  } else {
    latent_write_row(p, 0, int(sizeof(T)));
  }
}

// The writes' grid width with the queries' rotation: the batch, or the CTAs that rotate every pair in one pass.
int64_t rope_grid_x(int64_t b, int64_t q_pairs) {
  return std::min<int64_t>(0x7fffffff, std::max(b, (q_pairs + kThreads - 1) / kThreads));
}

// The step's RoPE as the writes take it: the key's rows heads x dims (dims even), the queries' pairs set.
void check_write_rope(const RowRope& k, const RopeParams& q, int64_t n, const char* what) {
  VLM2MLA_CHECK(k.x && k.cos && k.sin && k.dims >= 2 && k.dims % 2 == 0 && n % k.dims == 0, ArgumentError, what,
                ": the RoPE key's rotation needs its rows, cos and sin, and an even head width dividing the row (got ",
                k.dims, " of ", n, ")");
  VLM2MLA_CHECK(q.x && q.cos && q.sin && q.out && q.dims >= 1 && q.dims <= kRopeMaxDims && q.size[q.dims - 1] % 2 == 0,
                ArgumentError, what, ": the queries' rotation needs x, cos, sin, out and an even last dim");
}

}  // namespace

void launch_latent_write(const LatentWriteParams& p, int elem_bytes, cudaStream_t stream) {
  VLM2MLA_CHECK(elem_bytes == 2 || elem_bytes == 4, ArgumentError, "latent_write: elements of 2 or 4 bytes, got ",
                elem_bytes);
  VLM2MLA_CHECK(p.b >= 0 && p.heads >= 1 && p.b * p.heads <= 0x7fffffff && p.src[0] && p.src[1] && p.dst[0] &&
                    p.dst[1] && p.pos && (!p.alt || p.image) && (p.heads == 1 || !p.alt),
                ArgumentError,
                "latent_write: every array must be set (the image mask with the image set's rows, which take one "
                "row a sequence), b x heads within 2^31");
  const int v = 16 / elem_bytes;
  for (int q = 0; q < 2; ++q) {
    VLM2MLA_CHECK(p.n[q] > 0 && p.n[q] % v == 0 && p.src_stride[q] % v == 0 && p.dst_stride[q][0] % v == 0 &&
                      p.dst_stride[q][1] % v == 0 && p.src_head_stride[q] % v == 0 &&
                      p.dst_head_stride[q] % v == 0 && aligned16(p.src[q]) && aligned16(p.dst[q]),
                  ArgumentError, "latent_write: store ", q, "'s rows (", p.n[q],
                  " elements) and strides must be whole 16-byte pieces on 16-byte bounds");
  }
  VLM2MLA_CHECK(!p.alt || (p.alt_stride % v == 0 && aligned16(p.alt)), ArgumentError,
                "latent_write: the image set's rows must lie on 16-byte bounds");
  if (p.q_pairs > 0) check_write_rope(p.rope_k, p.rope_q, p.n[1], "latent_write");
  VLM2MLA_CHECK(p.q_pairs == 0 || (p.heads == 1 && (p.rope_q.dtype == ElementDtype::kFp32 ? 4 : 2) == elem_bytes),
                ArgumentError,
                "latent_write: the step's RoPE goes with a latent cache's rows (heads 1) of the queries' dtype");
  if (p.b == 0) return;
  if (p.q_pairs > 0) {
    const dim3 grid(unsigned(rope_grid_x(p.b, p.q_pairs)), 3);
    switch (p.rope_q.dtype) {
      case ElementDtype::kBf16:
        launch_programmatic(latent_rope_write_kernel<__nv_bfloat16>, grid, kThreads, 0, stream, p);
        break;
      case ElementDtype::kFp16: launch_programmatic(latent_rope_write_kernel<__half>, grid, kThreads, 0, stream, p); break;
      case ElementDtype::kFp32: launch_programmatic(latent_rope_write_kernel<float>, grid, kThreads, 0, stream, p); break;
    }
  } else {
    launch_programmatic(latent_write_kernel, dim3(unsigned(p.b * p.heads), 2), kThreads, 0, stream, p, elem_bytes);
  }
  check_kernel_launch("latent_write");
}

namespace {
void check_ring_write(const RingWriteParams& p, const char* what) {
  const char* why = p.n > 0 ? quant_shape_problem(p.n, p.bits, p.group) : "the row width must be positive";
  VLM2MLA_CHECK(!why, ArgumentError, what, ": ", why, " (got ", p.bits, " bits, group size ", p.group, ", row width ",
                p.n, ")");
  VLM2MLA_CHECK(p.window_size >= 1 && p.b >= 0 && p.b <= 0x7fffffff, ArgumentError, what, ": window ", p.window_size,
                ", batch ", p.b, " out of range");
  VLM2MLA_CHECK(p.rows && p.window && p.data && p.scale && p.lo && p.pos, ArgumentError, what,
                ": every array must be set");
}
}  // namespace

void launch_ring_write_pair(const RingWritePairParams& pp, ElementDtype dtype, cudaStream_t stream) {
  check_ring_write(pp.store[0], "ring_write_pair (the latent's store)");
  check_ring_write(pp.store[1], "ring_write_pair (the RoPE key's store)");
  VLM2MLA_CHECK(pp.store[0].b == pp.store[1].b && pp.store[0].pos == pp.store[1].pos, ArgumentError,
                "ring_write_pair: the stores differ in batch (", pp.store[0].b, ", ", pp.store[1].b, ") or position");
  VLM2MLA_CHECK(!pp.alt || pp.image, ArgumentError, "ring_write_pair: the image set's rows need the image mask");
  if (pp.q_pairs > 0) check_write_rope(pp.rope_k, pp.rope_q, pp.store[1].n, "ring_write_pair");
  VLM2MLA_CHECK(pp.q_pairs == 0 || pp.rope_q.dtype == dtype, ArgumentError,
                "ring_write_pair: the queries' dtype differs from the rings'");
  const int64_t b = pp.store[0].b;
  if (b == 0) return;
  const dim3 grid(unsigned(pp.q_pairs > 0 ? rope_grid_x(b, pp.q_pairs) : b), pp.q_pairs > 0 ? 3 : 2);
  switch (dtype) {
    case ElementDtype::kBf16:
      launch_programmatic(ring_write_pair_kernel<__nv_bfloat16>, grid, kThreads, 0, stream, pp);
      break;
    case ElementDtype::kFp16:
      launch_programmatic(ring_write_pair_kernel<__half>, grid, kThreads, 0, stream, pp);
      break;
    case ElementDtype::kFp32:
      launch_programmatic(ring_write_pair_kernel<float>, grid, kThreads, 0, stream, pp);
      break;
  }
  check_kernel_launch("ring_write_pair");
}

void launch_ring_write(const RingWriteParams& p, ElementDtype dtype, cudaStream_t stream) {
  check_ring_write(p, "ring_write");
  if (p.b == 0) return;
  switch (dtype) {
    case ElementDtype::kBf16:
      launch_programmatic(ring_write_kernel<__nv_bfloat16>, unsigned(p.b), kThreads, 0, stream, p);
      break;
    case ElementDtype::kFp16:
      launch_programmatic(ring_write_kernel<__half>, unsigned(p.b), kThreads, 0, stream, p);
      break;
    case ElementDtype::kFp32:
      launch_programmatic(ring_write_kernel<float>, unsigned(p.b), kThreads, 0, stream, p);
      break;
  }
  check_kernel_launch("ring_write");
}

}  // namespace vlm2mla
