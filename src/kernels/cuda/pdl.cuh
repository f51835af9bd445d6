// Programmatic dependent launch (sm_90) for the decode step's small kernels: a kernel launched with programmatic
// stream serialization may be scheduled before the kernel ahead of it in the stream has ended (once each of that
// one's CTAs has called grid_launch_dependents, or ended), and waits for it, its writes visible, in
// grid_dependency_wait. A decode step at small batches is ~530 launches one after another, each a few
// microseconds: the next one's launch and scheduling then overlap the previous one's tail instead of following it.
// A kernel launched through launch_programmatic calls grid_dependency_wait before it touches global memory (a
// no-op where it was launched without the attribute), and grid_launch_dependents where it no longer holds up the
// next (at its start: the next one's CTAs then wait resident, and the last CTAs of this one are already running).
// VLM2MLA_PDL=0 (set_programmatic_launches(false)) launches them plainly, the twin.
#pragma once

#include <cuda_runtime.h>

#include <utility>

#include "kernels/cuda/pdl.h"

namespace vlm2mla {

__device__ __forceinline__ void grid_launch_dependents() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.launch_dependents;\n" ::: "memory");
#endif
}
__device__ __forceinline__ void grid_dependency_wait() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.wait;\n" ::: "memory");
#endif
}

// (whether launch_programmatic sets the attribute: programmatic_launches(), pdl.h)

// The launch attribute of programmatic stream serialization (for cudaLaunchKernelEx)
inline cudaLaunchAttribute programmatic_serialization() {
  cudaLaunchAttribute attr;
  attr.id = cudaLaunchAttributeProgrammaticStreamSerialization;
  attr.val.programmaticStreamSerializationAllowed = 1;
  return attr;
}

// kernel<<<grid, block, smem, stream>>>(args...), with programmatic stream serialization where
// programmatic_launches() (the kernel calls grid_dependency_wait first).
template <typename... Params, typename... Args>
void launch_programmatic(void (*kernel)(Params...), dim3 grid, dim3 block, size_t smem, cudaStream_t stream,
                         Args&&... args) {
  if (!programmatic_launches()) {
    kernel<<<grid, block, smem, stream>>>(std::forward<Args>(args)...);
    return;
  }
  cudaLaunchConfig_t config = {};
  config.gridDim = grid;
  config.blockDim = block;
  config.dynamicSmemBytes = smem;
  config.stream = stream;
  cudaLaunchAttribute attr = programmatic_serialization();
  config.attrs = &attr;
  config.numAttrs = 1;
  cudaLaunchKernelEx(&config, kernel, std::forward<Args>(args)...);  // (errors: the caller's check_kernel_launch)
}

}  // namespace vlm2mla
