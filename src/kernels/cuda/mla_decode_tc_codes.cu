// The split-keys tensor-core kernel with int4 products on the codes (instances of mla_decode_kernels.cuh's templates, compiled apart from the others).
#include "kernels/cuda/mla_decode_kernels.cuh"

namespace vlm2mla {
namespace mla_decode_detail {

KernelFn tc_kernel_codes(int n_mod, int mt, int ntw) {
  return n_mod == 1 ? tc_kernel_for<1, true, true>(mt, ntw) : tc_kernel_for<2, true, true>(mt, ntw);
}

}  // namespace mla_decode_detail
}  // namespace vlm2mla
