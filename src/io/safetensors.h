// safetensors files: mmap'd reading into libtorch tensors, atomic writing.
#pragma once

#include <ATen/ATen.h>

#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "io/mapped_file.h"
#include "io/safetensors_header.h"

namespace vlm2mla::io {

at::ScalarType to_scalar_type(StDtype dtype);
StDtype to_st_dtype(at::ScalarType type);  // throws ArgumentError for types safetensors lacks

// One safetensors file, memory-mapped. Cheap to copy (shared mapping).
class SafetensorsFile {
 public:
  explicit SafetensorsFile(const std::string& path);  // maps and validates the header

  const std::string& path() const { return file_->path(); }
  const StHeader& header() const { return header_; }
  bool contains(const std::string& name) const { return header_.find(name) != nullptr; }
  std::vector<std::string> names() const;  // in file order
  const StTensorInfo& info(const std::string& name) const;  // throws FormatError if absent

  // CPU tensor over the mapped bytes (zero-copy when suitably aligned, else an aligned copy);
  // it keeps the mapping alive. Read-only: never write through it.
  at::Tensor tensor(const std::string& name) const;

 private:
  std::shared_ptr<MappedFile> file_;
  StHeader header_;
};

// Writes tensors (any device; copied to CPU, made contiguous) to `path` atomically: the bytes go to
// a temporary file beside it, which is fsync'd and renamed over `path`. Names must be unique.
void write_safetensors(const std::string& path,
                       const std::vector<std::pair<std::string, at::Tensor>>& tensors,
                       const std::map<std::string, std::string>& metadata = {});

// Convenience: all tensors of a file, copied into owned CPU tensors.
std::map<std::string, at::Tensor> read_safetensors(const std::string& path);

}  // namespace vlm2mla::io
