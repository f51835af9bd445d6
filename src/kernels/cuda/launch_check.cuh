// The element-wise CUDA kernels' launch helpers: the 16- and 4-byte alignment tests, and the launch check (one error naming the
// kernel, the CUDA error's name and text).
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "core/error.h"

namespace vlm2mla {

// Whether ptr lies on a 16-byte bound, as the kernels' 16-byte loads and stores need (a null pointer does).
inline bool aligned16(const void* ptr) { return (reinterpret_cast<uintptr_t>(ptr) & 15u) == 0; }
// ... on a 4-byte bound, as a 32-bit load of two float16 values needs
inline bool aligned4(const void* ptr) { return (reinterpret_cast<uintptr_t>(ptr) & 3u) == 0; }

// The current device's streaming multiprocessors (what a grid of one wave is sized by); Error where CUDA cannot say.
inline int current_device_sms() {
  int dev = 0, sms = 0;
  cudaError_t err = cudaGetDevice(&dev);
  if (err == cudaSuccess) err = cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev);
  VLM2MLA_CHECK(err == cudaSuccess && sms > 0, Error, "the device's multiprocessor count: ", cudaGetErrorName(err),
                " (", cudaGetErrorString(err), ")");
  return sms;
}

// Throws Error "<what>: launching the kernel failed: <name> (<text>)" where the last launch failed.
inline void check_kernel_launch(const char* what) {
  const cudaError_t err = cudaGetLastError();
  VLM2MLA_CHECK(err == cudaSuccess, Error, what, ": launching the kernel failed: ", cudaGetErrorName(err), " (",
                cudaGetErrorString(err), ")");
}

}  // namespace vlm2mla
