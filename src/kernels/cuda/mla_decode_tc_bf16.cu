// The split-keys tensor-core kernel over bf16 stores (instances of mla_decode_kernels.cuh's templates, compiled apart from the others).
#include "kernels/cuda/mla_decode_kernels.cuh"

namespace vlm2mla {
namespace mla_decode_detail {

KernelFn tc_kernel_bf16(int n_mod, int mt, int ntw) {
  return n_mod == 1 ? tc_kernel_for<1, false, false>(mt, ntw) : tc_kernel_for<2, false, false>(mt, ntw);
}

}  // namespace mla_decode_detail
}  // namespace vlm2mla
