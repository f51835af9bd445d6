// A strided copy into a contiguous buffer whose innermost dimension is contiguous in the source too: the
// copies that put a tensor's rows in another order (transposes of whole rows, narrowed rows), as libtorch's
// `contiguous()` makes them, in 16-byte pieces where the sizes, strides and addresses allow. Bit for bit a copy.
// No libtorch here.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

namespace vlm2mla {

// dst[i0][i1][i2][i3] = src[i0 s0 + i1 s1 + i2 s2 + i3] for elements of elem_bytes (2 or 4) bytes; sizes d[4], the
// source's strides s[3] in elements (the innermost one is 1), dst contiguous and overlapping nothing of src.
// Throws ArgumentError for invalid sizes, Error when the launch fails.
void launch_row_copy(const void* src, void* dst, const int64_t (&d)[4], const int64_t (&s)[3], int elem_bytes,
                     cudaStream_t stream);

}  // namespace vlm2mla
