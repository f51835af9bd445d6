#include "kvcache/kv_cache.h"

#include <c10/util/Exception.h>
#include <c10/util/accumulate.h>

#include <cstdio>

#include "core/error.h"
#include "core/names.h"
#include "core/torch_compat.h"

namespace vlm2mla {

const char* cache_type_name(CacheType t) {
  switch (t) {
    case CacheType::kBf16: return "bf16";
    case CacheType::kFp16: return "fp16";
    case CacheType::kFp32: return "fp32";
    case CacheType::kInt8: return "int8";
    case CacheType::kInt4: return "int4";
    case CacheType::kInt2: return "int2";
  }
  return "?";
}

CacheType cache_type_from_name(const std::string& name, const std::string& what) {
  return parse_choice(name, what, "cache type",
                      std::array{CacheType::kBf16, CacheType::kFp16, CacheType::kFp32, CacheType::kInt8,
                                 CacheType::kInt4, CacheType::kInt2},
                      cache_type_name);
}

int64_t cache_type_bits(CacheType t) {
  switch (t) {
    case CacheType::kInt8: return 8;
    case CacheType::kInt4: return 4;
    case CacheType::kInt2: return 2;
    case CacheType::kBf16:
    case CacheType::kFp16:
    case CacheType::kFp32:
      return 0;
  }
  return 0;
}

at::Tensor cache_zeros(at::IntArrayRef shape, const at::TensorOptions& options) {
  try {
    return at::zeros(shape, options);
  } catch (const c10::Error& e) {
    if (!compat::is_out_of_memory(e)) throw;
    const double bytes = static_cast<double>(c10::multiply_integers(shape)) *
                         static_cast<double>(c10::elementSize(options.dtype().toScalarType()));
    char size[32];
    std::snprintf(size, sizeof size, "%.2f GiB", bytes / static_cast<double>(int64_t(1) << 30));
    throw ArgumentError(detail::concat(
        "the KV cache does not fit on ", options.device().str(), ": a ", shape, " ",
        c10::toString(options.dtype().toScalarType()), " buffer (", size, ") could not be allocated (",
        compat::first_line(e),
        "); fewer sequences or positions (bench: --batch, --context, --new-tokens; generate: fewer prompts, "
        "--max-new-tokens), a quantized --kv-cache (int8, int4) or an MLA conversion with a smaller latent take less"));
  }
}

at::ScalarType cache_float_dtype(CacheType t) {
  switch (t) {
    case CacheType::kBf16: return at::kBFloat16;
    case CacheType::kFp16: return at::kHalf;
    case CacheType::kFp32: return at::kFloat;
    case CacheType::kInt8:
    case CacheType::kInt4:
    case CacheType::kInt2:
      return at::kBFloat16;
  }
  return at::kBFloat16;
}

}  // namespace vlm2mla
