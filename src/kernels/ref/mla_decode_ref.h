// CPU reference twin of the absorbed-MLA decode kernel (kernels/cuda/mla_decode*.cu): plain torch ops in
// float64 over exactly the keys the kernel reads (int4 keys dequantized with kvcache/quant.h's
// dequantize_rows, the ring read at position % window). The test oracle of the kernel, and the CPU path
// of ops.h's mla_decode.
#pragma once

#include "kernels/mla_decode_io.h"

namespace vlm2mla {

// Validates like mla_decode (check_mla_decode_inputs and the start/length values); tensors may live on
// any device (they are copied to the CPU). Outputs are CPU tensors in `dtype` (kFloat or kDouble).
MlaDecodeOutput mla_decode_ref(const MlaDecodeInputs& in, at::ScalarType dtype = at::kFloat);

}  // namespace vlm2mla
