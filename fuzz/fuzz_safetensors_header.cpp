// libFuzzer target for parse_safetensors_header. For any bytes the parser must either return a
// header that keeps every promise safetensors_header.h makes, or throw vlm2mla::FormatError.
// Anything else is a finding: a sanitizer report, another exception type (uncaught, so it aborts),
// or a broken invariant (trap).
#include <cstddef>
#include <cstdint>
#include <string>

#include "core/error.h"
#include "io/safetensors_header.h"

namespace {

using vlm2mla::io::StHeader;
using vlm2mla::io::StTensorInfo;

void require(bool ok) {
  if (!ok) __builtin_trap();
}

void check_invariants(const StHeader& header, size_t available, uint64_t file_size) {
  require(header.data_offset >= 8);
  require(header.data_offset <= file_size && header.data_offset <= available);
  const uint64_t data_size = file_size - header.data_offset;
  const StTensorInfo* previous = nullptr;  // last tensor with bytes, in offset order
  for (size_t i = 0; i < header.tensors.size(); ++i) {
    const StTensorInfo& info = header.tensors[i];
    require(info.name != "__metadata__");
    require(header.find(info.name) == &info);  // names are unique
    require(info.begin <= info.end && info.end <= data_size);
    for (int64_t dim : info.shape) require(dim >= 0);
    require(info.end - info.begin == info.numel() * vlm2mla::io::st_dtype_size(info.dtype));
    if (i > 0) require(header.tensors[i - 1].begin <= info.begin);
    if (info.begin == info.end) continue;
    if (previous != nullptr) require(previous->end <= info.begin);
    previous = &info;
  }
}

void parse_and_check(const uint8_t* data, size_t available, uint64_t file_size) {
  StHeader header;
  try {
    header = vlm2mla::io::parse_safetensors_header(data, available, file_size, "fuzz-input");
  } catch (const vlm2mla::FormatError& e) {
    require(std::string(e.what()).find("fuzz-input") != std::string::npos);  // names the origin
    return;
  }
  check_invariants(header, available, file_size);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  // The whole file in memory, as SafetensorsFile calls it.
  parse_and_check(data, size, size);
  if (size == 0) return 0;
  // Only a prefix in memory with the data section beyond it (a header read without the tensors),
  // with the last byte choosing how much larger the file claims to be.
  parse_and_check(data, size, size + uint64_t{data[size - 1]} * 977);
  // A caller that has fewer bytes than the file holds: the header must still be bounded by them.
  parse_and_check(data, size / 2, size);
  return 0;
}
