// The weights of a checkpoint directory: a single model.safetensors, or the shards named by
// model.safetensors.index.json ({"metadata": {...}, "weight_map": {tensor: shard file}}).
#pragma once

#include <ATen/ATen.h>

#include <map>
#include <string>
#include <vector>

#include "io/safetensors.h"

namespace vlm2mla::io {

class TensorStore {
 public:
  // Opens `dir`: model.safetensors.index.json if present, else model.safetensors, else the only
  // *.safetensors file. Throws IoError / FormatError naming the directory or file.
  static TensorStore open_dir(const std::string& dir);
  static TensorStore open_file(const std::string& path);

  const std::string& source() const { return source_; }
  std::vector<std::string> names() const;  // sorted
  bool contains(const std::string& name) const;
  const StTensorInfo& info(const std::string& name) const;  // throws FormatError naming the key
  at::Tensor tensor(const std::string& name) const;  // CPU view as SafetensorsFile::tensor

 private:
  std::string source_;
  std::vector<SafetensorsFile> files_;
  std::map<std::string, size_t> where_;  // tensor name -> index in files_
};

}  // namespace vlm2mla::io
