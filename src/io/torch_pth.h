// PyTorch checkpoints in the zip format that torch.save writes since 1.6 (read only).
//
// Layout: a ZIP archive whose entries all sit under one top folder <name>/:
//   <name>/data.pkl      a pickle (protocol 2) of the saved object; tensors refer to storages by a
//                        persistent id ('storage', torch.<X>Storage, key, location, numel)
//   <name>/data/<key>    the raw little-endian bytes of storage <key> (numel * element size)
//   <name>/byteorder     "little" (absent in files from older torch: little-endian is assumed)
//   <name>/version       the format version, e.g. "3"
// Entries are normally STORED (uncompressed). DEFLATE entries are read when the build found zlib
// (VLM2MLA_WITH_ZLIB), else rejected with a FormatError. Zip64 records are understood.
//
// The pickle is run by a small VM that knows only what torch.save writes for tensors and
// dicts/lists/tuples of tensors (see torch_pth.cpp for the opcode list). Anything else (another
// opcode, another global, a malformed archive, a storage too small for its tensor, offsets or
// strides out of the storage) is a vlm2mla::FormatError naming the file and what was expected.
#pragma once

#include <ATen/ATen.h>

#include <cstdint>
#include <map>
#include <string>
#include <utility>
#include <vector>

namespace vlm2mla::io {

// A value read from a .pth file. Tuples and lists both become kList; dicts keep their keys in file
// order and must have string keys. Tensors are owned, contiguous CPU tensors (no aliasing between
// two tensors that shared a storage in the file).
struct PthValue {
  enum class Kind { kNone, kBool, kInt, kFloat, kString, kTensor, kList, kDict };

  Kind kind = Kind::kNone;
  bool boolean = false;
  int64_t integer = 0;
  double real = 0.0;
  std::string string;
  at::Tensor tensor;
  std::vector<PthValue> list;                            // kList
  std::vector<std::pair<std::string, PthValue>> dict;    // kDict, in file order

  bool is_tensor() const { return kind == Kind::kTensor; }
  bool is_dict() const { return kind == Kind::kDict; }
  bool is_list() const { return kind == Kind::kList; }
};

const char* pth_kind_name(PthValue::Kind kind);  // "tensor", "dict", ...

// Parses the checkpoint at `path`. Throws IoError if unreadable, FormatError if malformed.
PthValue read_pth(const std::string& path);

// The checkpoint's top-level object must be one tensor; FormatError naming what it is otherwise.
at::Tensor read_pth_tensor(const std::string& path);

// The checkpoint's top-level object must be a dict (e.g. an OrderedDict state_dict) whose values are
// all tensors; FormatError naming the first key that is not.
std::map<std::string, at::Tensor> read_pth_state_dict(const std::string& path);

// The same, from the bytes of a .pth file held in memory; `origin` names it in errors.
PthValue parse_pth(const uint8_t* data, size_t size, const std::string& origin);

}  // namespace vlm2mla::io
