// Names for dtypes and devices as the CLI and config files spell them.
#pragma once

#include <ATen/ATen.h>

#include <string>

namespace vlm2mla {

// "float32" | "bfloat16" | "float16" (also "fp32", "bf16", "fp16", "float", "half"); throws ArgumentError
// naming `what` (the flag or key) otherwise.
at::ScalarType parse_dtype(const std::string& name, const std::string& what);
std::string dtype_name(at::ScalarType type);  // "float32", "bfloat16", ...

// "cpu" | "cuda" | "cuda:N". Throws ArgumentError for other names, and when CUDA is asked for but this
// build of libtorch has no CUDA or no GPU is visible.
at::Device parse_device(const std::string& name, const std::string& what);

}  // namespace vlm2mla
