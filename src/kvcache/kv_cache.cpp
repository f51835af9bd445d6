#include "kvcache/kv_cache.h"

#include "core/error.h"
#include "core/names.h"

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
