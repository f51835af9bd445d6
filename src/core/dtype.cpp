#include "core/dtype.h"

#include "core/error.h"

namespace vlm2mla {

at::ScalarType parse_dtype(const std::string& name, const std::string& what) {
  if (name == "float32" || name == "fp32" || name == "float") return at::kFloat;
  if (name == "bfloat16" || name == "bf16") return at::kBFloat16;
  if (name == "float16" || name == "fp16" || name == "half") return at::kHalf;
  throw ArgumentError(detail::concat(what, ": unknown dtype '", name,
                                     "' (expected float32, bfloat16 or float16)"));
}

std::string dtype_name(at::ScalarType type) {
  switch (type) {
    case at::kFloat: return "float32";
    case at::kBFloat16: return "bfloat16";
    case at::kHalf: return "float16";
    case at::kDouble: return "float64";
    case at::kLong: return "int64";
    case at::kInt: return "int32";
    case at::kShort: return "int16";
    case at::kChar: return "int8";
    case at::kByte: return "uint8";
    case at::kBool: return "bool";
    default: return c10::toString(type);
  }
}

at::Device parse_device(const std::string& name, const std::string& what) {
  if (name == "cpu") return at::Device(at::kCPU);
  if (name == "cuda" || name.rfind("cuda:", 0) == 0) {
    VLM2MLA_CHECK(at::hasCUDA(), ArgumentError, what, ": '", name,
                  "' asked for, but this build has no CUDA or no GPU is visible (use --device cpu)");
    int index = 0;
    if (name.size() > 5) {
      try {
        size_t used = 0;
        index = std::stoi(name.substr(5), &used);
        VLM2MLA_CHECK(used == name.size() - 5, ArgumentError, what, ": bad device '", name, "'");
      } catch (const std::logic_error&) {
        throw ArgumentError(detail::concat(what, ": bad device '", name, "' (expected cuda:N)"));
      }
    }
    return at::Device(at::kCUDA, static_cast<c10::DeviceIndex>(index));
  }
  throw ArgumentError(detail::concat(what, ": unknown device '", name, "' (expected cpu or cuda)"));
}

}  // namespace vlm2mla
