// Fused RMSNorm on CUDA, exactly the steps transformers' Llama/Qwen2 RMSNorm takes (nn/layers.h):
// mean of x^2 in float32, x * rsqrt(mean + eps) rounded to the input dtype, times the weight (a product
// of two values of that dtype, rounded once). One kernel launch instead of libtorch's eight. Only the
// order of the float32 sum of squares differs from libtorch's reduction. No libtorch here.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "kernels/cuda/element_dtype.h"

namespace vlm2mla {

// out[r, :] = rms_norm(x[r, :]) * w for rows r < rows of width d (row-major, contiguous; out may not
// alias x). Throws ArgumentError for invalid sizes, Error when the launch fails.
void launch_rms_norm(const void* x, const void* w, void* out, int64_t rows, int64_t d, float eps, ElementDtype dtype,
                     cudaStream_t stream);

}  // namespace vlm2mla
