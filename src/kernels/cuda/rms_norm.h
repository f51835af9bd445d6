// Fused RMSNorm on CUDA, exactly the steps transformers' Llama/Qwen2 RMSNorm takes (nn/layers.h):
// mean of x^2 in float32, x * rsqrt(mean + eps) rounded to the input dtype, times the weight (a product
// of two values of that dtype, rounded once). One kernel launch instead of libtorch's eight. Only the
// order of the float32 sum of squares differs from libtorch's reduction. Beside it, two more of a decoder
// layer's elementwise steps in one launch each: the residual add before the norm, and SwiGLU's silu * up.
// No libtorch here.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "kernels/cuda/element_dtype.h"

namespace vlm2mla {

// out[r, :] = rms_norm(x[r, :]) * w for rows r < rows of width d (row-major, contiguous; out may not
// alias x). `vectors`: rows of whole 16-byte vectors on 16-byte bounds, up to 1,024 vectors (bf16: width 8,192),
// go through the kernel that holds a row in registers; other rows, or all with vectors = false, element by
// element (the same arithmetic but the sum of squares' order). Throws ArgumentError for invalid sizes, Error
// when the launch fails.
void launch_rms_norm(const void* x, const void* w, void* out, int64_t rows, int64_t d, float eps, ElementDtype dtype,
                     cudaStream_t stream, bool vectors = true);

// The residual add before it as well: sum = x + r (rounded to the dtype, as libtorch's add), stored, and
// out = rms_norm(sum) * w, in one launch instead of two. x, r, sum and out contiguous [rows, d]; sum and
// out overlap nothing.
void launch_add_rms_norm(const void* x, const void* r, const void* w, void* sum, void* out, int64_t rows, int64_t d,
                         float eps, ElementDtype dtype, cudaStream_t stream, bool vectors = true);

// SwiGLU's input: out = silu(gate) * up, each step computed in float32 and rounded to the dtype as
// libtorch's silu and mul are (bit-identical to them), in one launch instead of two. gate and up [rows, d]
// with their own row strides (the halves of a fused gate/up product), out contiguous.
void launch_silu_mul(const void* gate, int64_t gate_stride, const void* up, int64_t up_stride, void* out, int64_t rows,
                     int64_t d, ElementDtype dtype, cudaStream_t stream);

}  // namespace vlm2mla
