// The split-keys tensor-core kernel over int4 stores, dequantized to bf16 tiles (instances of mla_decode_kernels.cuh's templates, compiled apart from the others).
#include "kernels/cuda/mla_decode_kernels.cuh"

namespace vlm2mla {
namespace mla_decode_detail {

KernelFn tc_kernel_int4(int n_mod, int mt, int ntw) {
  return n_mod == 1 ? tc_kernel_for<1, true, false>(mt, ntw) : tc_kernel_for<2, true, false>(mt, ntw);
}

}  // namespace mla_decode_detail
}  // namespace vlm2mla
