// The warp-rows kernel over int4 stores (instances of mla_decode_kernels.cuh's templates, compiled apart from the others).
#include "kernels/cuda/mla_decode_kernels.cuh"

namespace vlm2mla {
namespace mla_decode_detail {

KernelFn rows_kernel_int4(int n_mod, int mt, int no, bool modality_ctas, int specialized, int cs,
                          bool ext, bool pure_only) {
  if (pure_only) return modality_ctas ? rows_kernel_for<1, true, true, true>(mt, no, specialized, cs, ext) : nullptr;
  if (modality_ctas) return rows_kernel_for<1, true, true>(mt, no, specialized, cs, ext);
  return n_mod == 1 ? rows_kernel_for<1, true>(mt, no, specialized, cs, ext)
                    : rows_kernel_for<2, true>(mt, no, specialized, cs, ext);
}

}  // namespace mla_decode_detail
}  // namespace vlm2mla
