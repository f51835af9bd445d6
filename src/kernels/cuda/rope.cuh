// The rotary embedding's device arithmetic, shared by rope.cu's kernels and the cache writes that rotate a decode
// step's keys on their way into a store and its queries beside them (cache_write.cu): the same operations in the
// same order, so the same bits wherever it runs.
#pragma once

#include <cstdint>

#include "kernels/cuda/element.cuh"
#include "kernels/cuda/rope.h"

namespace vlm2mla {
namespace rope_detail {

// libtorch's steps for one output element: a = x * c and r = y * s each rounded to T (libtorch computes a
// 16-bit product in float32 and rounds it; a float32 product is one rounding), then a + r in float32,
// rounded to T. The _rn intrinsics are never contracted into an FMA, which would skip a rounding.
template <typename T>
__device__ __forceinline__ T rope_element(float x, float c, float y, float s) {
  const float a = to_float(from_float<T>(__fmul_rn(x, c)));
  const float r = to_float(from_float<T>(__fmul_rn(y, s)));
  return from_float<T>(__fadd_rn(a, r));
}

// One thread per frequency pair (i, i + d/2) of a row: reads x's two elements once and writes
//   out[i]       = x[i] * cos[i] + (-x[i + d/2]) * sin[i]
//   out[i + d/2] = x[i + d/2] * cos[i + d/2] + x[i] * sin[i + d/2]
// Rows are x's leading dims in row-major order, each tensor addressed through its own strides. The pairs
// block, block + blocks, ... of blockDim.x threads each are this CTA's.
template <typename T>
__device__ __forceinline__ void rope_pairs(const RopeParams& p, int64_t pairs, int64_t block, int64_t blocks) {
  const T* __restrict__ x = static_cast<const T*>(p.x);
  const T* __restrict__ cos_p = static_cast<const T*>(p.cos);
  const T* __restrict__ sin_p = static_cast<const T*>(p.sin);
  T* __restrict__ out = static_cast<T*>(p.out);
  const int last = p.dims - 1;
  const int64_t half = p.size[last] / 2;
  for (int64_t i = block * blockDim.x + threadIdx.x; i < pairs; i += blocks * blockDim.x) {
    const int64_t k = i % half;
    int64_t row = i / half;
    int64_t xo = k * p.x_stride[last], co = k * p.cos_stride[last], so = k * p.sin_stride[last];
    int64_t oo = k * p.out_stride[last];
    for (int j = last - 1; j >= 0; --j) {
      const int64_t idx = row % p.size[j];
      row /= p.size[j];
      xo += idx * p.x_stride[j];
      co += idx * p.cos_stride[j];
      so += idx * p.sin_stride[j];
      oo += idx * p.out_stride[j];
    }
    const float x1 = to_float(x[xo]), x2 = to_float(x[xo + half * p.x_stride[last]]);
    const float c1 = to_float(cos_p[co]), c2 = to_float(cos_p[co + half * p.cos_stride[last]]);
    const float s1 = to_float(sin_p[so]), s2 = to_float(sin_p[so + half * p.sin_stride[last]]);
    out[oo] = rope_element<T>(x1, c1, -x2, s1);
    out[oo + half * p.out_stride[last]] = rope_element<T>(x2, c2, x1, s2);
  }
}

// Element e of sequence b's row [heads x dims] rotated (rope_pairs' two formulas, by which half of its head's dims e
// lies in): what the rotated row would hold, computed element by element where a store takes the row.
template <typename T>
__device__ __forceinline__ T rope_row_element(const RowRope& r, int64_t b, int64_t e) {
  const T* __restrict__ x = static_cast<const T*>(r.x) + b * r.x_stride;
  const int64_t h = e / r.dims, k = e - h * r.dims, half = r.dims / 2;
  const float c = to_float(static_cast<const T*>(r.cos)[b * r.cos_stride[0] + h * r.cos_stride[1] + k * r.cos_stride[2]]);
  const float s = to_float(static_cast<const T*>(r.sin)[b * r.sin_stride[0] + h * r.sin_stride[1] + k * r.sin_stride[2]]);
  const float xe = to_float(x[e]);
  return k < half ? rope_element<T>(xe, c, -to_float(x[e + half]), s) : rope_element<T>(xe, c, to_float(x[e - half]), s);
}

}  // namespace rope_detail
}  // namespace vlm2mla
