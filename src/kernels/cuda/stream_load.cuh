// The weight loads of the projection kernels (gemv.cu, gemm_rows.cu), which stream each weight element once.
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

}  // namespace vlm2mla
