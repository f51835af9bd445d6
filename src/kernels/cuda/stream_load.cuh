// The weight loads of the projection kernels (gemv.cu: into registers; gemm_rows.cu: into shared memory), which
// stream each weight element once.
#pragma once

#include <cstdint>

namespace vlm2mla {

// A 16-byte piece of the weight, read once: no L1 allocation, the L2 asked for the 256 bytes around it.
__device__ __forceinline__ uint4 load_weight(const void* p) {
  uint4 v;
  asm("ld.global.nc.L1::no_allocate.L2::256B.v4.u32 {%0, %1, %2, %3}, [%4];"
      : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w)
      : "l"(p));
  return v;
}

// The same piece copied into shared memory (cp.async: L1 bypassed, the L2 asked for the 256 bytes around it), or
// zeros there where !valid (src not read); committed and waited for with tensor_core.cuh's cp_async_commit/wait.
__device__ __forceinline__ void copy_weight_async(uint32_t dst, const void* src, bool valid) {
  asm volatile("cp.async.cg.shared.global.L2::256B [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(src), "r"(valid ? 16 : 0)
               : "memory");
}

}  // namespace vlm2mla
