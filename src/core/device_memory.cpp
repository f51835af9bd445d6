#include "core/device_memory.h"

#include <chrono>

#include <sys/resource.h>

#ifdef VLM2MLA_WITH_CUDA
#include <c10/cuda/CUDACachingAllocator.h>
#include <c10/cuda/CUDAFunctions.h>
#endif

namespace vlm2mla {

void reset_peak_memory(at::Device device) {
#ifdef VLM2MLA_WITH_CUDA
  if (device.is_cuda()) c10::cuda::CUDACachingAllocator::resetPeakStats(device.index() < 0 ? 0 : device.index());
#endif
  (void)device;
}

int64_t peak_memory_bytes(at::Device device) {
#ifdef VLM2MLA_WITH_CUDA
  if (device.is_cuda()) {
    auto stats = c10::cuda::CUDACachingAllocator::getDeviceStats(device.index() < 0 ? 0 : device.index());
    return stats.allocated_bytes[0].peak;  // index 0: the aggregate over all pools
  }
#endif
  struct rusage usage {};
  getrusage(RUSAGE_SELF, &usage);
  return static_cast<int64_t>(usage.ru_maxrss) * 1024;  // Linux reports KiB
}

void synchronize(at::Device device) {
#ifdef VLM2MLA_WITH_CUDA
  if (device.is_cuda()) c10::cuda::device_synchronize();
#endif
  (void)device;
}

double copy_bandwidth(at::Device device) {
  const int64_t n = (device.is_cuda() ? 512 : 256) * (int64_t{1} << 20);
  at::Tensor src = at::empty({n}, at::TensorOptions().dtype(at::kByte).device(device));
  at::Tensor dst = at::empty_like(src);
  dst.copy_(src);
  synchronize(device);
  const int copies = 5;
  const auto t0 = std::chrono::steady_clock::now();
  for (int i = 0; i < copies; ++i) dst.copy_(src);
  synchronize(device);
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return 2.0 * static_cast<double>(n) * copies / s;
}

}  // namespace vlm2mla
