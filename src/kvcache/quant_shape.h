// The one rule a quantized store's shape obeys (kvcache/quant.h): codes of 2, 4 or 8 bits, in groups that
// divide the row width and fill whole bytes. Free of libtorch, so that the CUDA launchers check the rule
// they rely on with the words the host checks use.
#pragma once

#include <cstdint>

namespace vlm2mla {

// nullptr when rows of n values quantize to `bits`-bit codes in groups of `group`, else why not.
inline const char* quant_shape_problem(int64_t n, int64_t bits, int64_t group) {
  if (bits != 2 && bits != 4 && bits != 8) return "codes must have 2, 4 or 8 bits";
  if (group <= 0 || n % group != 0 || (group * bits) % 8 != 0)
    return "the group size must divide the row width and fill whole bytes";
  return nullptr;
}

}  // namespace vlm2mla
