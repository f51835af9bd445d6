// Peak memory, for benchmarks: the CUDA caching allocator's peak on GPUs, the process's peak
// resident set on the CPU.
#pragma once

#include <ATen/ATen.h>

#include <cstdint>

namespace vlm2mla {

// Starts a new peak window for `device` (CUDA: the allocator's peak statistics; CPU: no-op, the
// resident-set peak cannot be reset).
void reset_peak_memory(at::Device device);

// CUDA: peak bytes allocated by libtorch's caching allocator since the last reset.
// CPU: the process's peak resident set size (bytes) since it started.
int64_t peak_memory_bytes(at::Device device);

// Waits for the device's queued work (no-op on CPU).
void synchronize(at::Device device);

// The device's copy rate in bytes per second, read and write counted (a step that reads N bytes takes at
// least N / this): five copies of a 512 MiB buffer (CUDA) or 256 MiB (CPU) timed after one warm-up.
double copy_bandwidth(at::Device device);

}  // namespace vlm2mla
