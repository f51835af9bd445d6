// The element-wise CUDA kernels' launch check: one error naming the kernel, the CUDA error's name and text.
#pragma once

#include <cuda_runtime.h>

#include "core/error.h"

namespace vlm2mla {

// Throws Error "<what>: launching the kernel failed: <name> (<text>)" where the last launch failed.
inline void check_kernel_launch(const char* what) {
  const cudaError_t err = cudaGetLastError();
  VLM2MLA_CHECK(err == cudaSuccess, Error, what, ": launching the kernel failed: ", cudaGetErrorName(err), " (",
                cudaGetErrorString(err), ")");
}

}  // namespace vlm2mla
