// Parsing and validating a safetensors header. Pure C++ (no libtorch), so it can be fuzzed alone.
//
// File layout: u64 little-endian N | N bytes of UTF-8 JSON header | data section.
// Header: {"__metadata__": {str: str}?, "<name>": {"dtype": "F32", "shape": [..], "data_offsets": [b, e]}, ...}
// Offsets are relative to the start of the data section.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace vlm2mla::io {

enum class StDtype { kF64, kF32, kF16, kBF16, kI64, kI32, kI16, kI8, kU8, kBool };

const char* st_dtype_name(StDtype dtype);       // "F32", ...
size_t st_dtype_size(StDtype dtype);            // bytes per element
bool st_dtype_from_name(const std::string& name, StDtype* out);

struct StTensorInfo {
  std::string name;
  StDtype dtype = StDtype::kF32;
  std::vector<int64_t> shape;
  uint64_t begin = 0;  // byte offsets into the data section, [begin, end)
  uint64_t end = 0;
  uint64_t numel() const;
};

struct StHeader {
  uint64_t data_offset = 0;  // absolute offset of the data section in the file (8 + N)
  std::vector<StTensorInfo> tensors;  // sorted by begin offset
  std::map<std::string, std::string> metadata;
  const StTensorInfo* find(const std::string& name) const;  // nullptr when absent
};

// Parses and validates the header of a safetensors file of `file_size` bytes whose first
// `available` bytes are at `data` (available may be less than file_size; the header must fit).
// Validates: header length within the file, JSON syntax, each entry's keys and types, known dtype,
// non-negative shape, data_offsets [b, e] with b <= e, e within the data section,
// e - b == numel * dtype size, no two tensors overlapping. Throws vlm2mla::FormatError naming
// `origin` (usually the path), the tensor and what was expected.
StHeader parse_safetensors_header(const uint8_t* data, size_t available, uint64_t file_size,
                                  const std::string& origin);

}  // namespace vlm2mla::io
