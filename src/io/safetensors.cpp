#include "io/safetensors.h"

#include <cstdint>
#include <cstring>
#include <set>

#include "core/error.h"
#include "io/json_file.h"

namespace vlm2mla::io {

// safetensors stores little-endian data and we hand out views of the mapped bytes unconverted.
static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__,
              "vlm2mla reads and writes safetensors data in host order: little-endian hosts only");

namespace {

bool st_dtype_for(at::ScalarType type, StDtype* out) {
  switch (type) {
    case at::kDouble: *out = StDtype::kF64; return true;
    case at::kFloat: *out = StDtype::kF32; return true;
    case at::kHalf: *out = StDtype::kF16; return true;
    case at::kBFloat16: *out = StDtype::kBF16; return true;
    case at::kLong: *out = StDtype::kI64; return true;
    case at::kInt: *out = StDtype::kI32; return true;
    case at::kShort: *out = StDtype::kI16; return true;
    case at::kChar: *out = StDtype::kI8; return true;
    case at::kByte: *out = StDtype::kU8; return true;
    case at::kBool: *out = StDtype::kBool; return true;
    default: return false;  // ScalarType is open-ended across libtorch versions
  }
}

// A C++ bool holding anything but 0 or 1 is undefined behaviour once a kernel reads it, so BOOL
// data is checked before it becomes a tensor.
void check_bool_bytes(const uint8_t* bytes, uint64_t count, const std::string& path,
                      const std::string& name) {
  for (uint64_t i = 0; i < count; ++i) {
    if (bytes[i] > 1) {
      throw FormatError(detail::concat("safetensors file '", path, "': tensor '", name,
                                       "': BOOL element ", i, " is byte ", int{bytes[i]},
                                       " (expected 0 or 1)"));
    }
  }
}

}  // namespace

at::ScalarType to_scalar_type(StDtype dtype) {
  switch (dtype) {
    case StDtype::kF64: return at::kDouble;
    case StDtype::kF32: return at::kFloat;
    case StDtype::kF16: return at::kHalf;
    case StDtype::kBF16: return at::kBFloat16;
    case StDtype::kI64: return at::kLong;
    case StDtype::kI32: return at::kInt;
    case StDtype::kI16: return at::kShort;
    case StDtype::kI8: return at::kChar;
    case StDtype::kU8: return at::kByte;
    case StDtype::kBool: return at::kBool;
  }
  throw ArgumentError("invalid StDtype value");
}

StDtype to_st_dtype(at::ScalarType type) {
  StDtype dtype = StDtype::kF32;
  VLM2MLA_CHECK(st_dtype_for(type, &dtype), ArgumentError, "tensor dtype ", type,
                " has no safetensors equivalent (supported: float64, float32, float16, bfloat16, "
                "int64, int32, int16, int8, uint8, bool)");
  return dtype;
}

SafetensorsFile::SafetensorsFile(const std::string& path)
    : file_(std::make_shared<MappedFile>(path)),
      header_(parse_safetensors_header(file_->data(), file_->size(), file_->size(), path)) {}

std::vector<std::string> SafetensorsFile::names() const {
  std::vector<std::string> names;
  names.reserve(header_.tensors.size());
  for (const StTensorInfo& info : header_.tensors) names.push_back(info.name);
  return names;
}

const StTensorInfo& SafetensorsFile::info(const std::string& name) const {
  const StTensorInfo* info = header_.find(name);
  VLM2MLA_CHECK(info != nullptr, FormatError, "safetensors file '", path(), "' has no tensor '",
                name, "'");
  return *info;
}

at::Tensor SafetensorsFile::tensor(const std::string& name) const {
  const StTensorInfo& meta = info(name);
  const at::TensorOptions options = at::TensorOptions().dtype(to_scalar_type(meta.dtype))
                                                       .device(at::kCPU);
  const uint64_t nbytes = meta.end - meta.begin;
  if (nbytes == 0) return at::empty(meta.shape, options);  // zero elements: nothing to map

  // The header was validated against this file's size, so the range lies inside the mapping.
  const uint8_t* bytes = file_->data() + header_.data_offset + meta.begin;
  if (meta.dtype == StDtype::kBool) check_bool_bytes(bytes, nbytes, path(), name);

  const size_t element_size = st_dtype_size(meta.dtype);
  if (reinterpret_cast<uintptr_t>(bytes) % element_size == 0) {
    // Zero-copy view; the deleter holds the mapping open for as long as the tensor lives.
    std::shared_ptr<MappedFile> keep_alive = file_;
    return at::from_blob(const_cast<uint8_t*>(bytes), meta.shape,
                         [keep_alive](void*) mutable { keep_alive.reset(); }, options);
  }
  // Misaligned data (a writer that did not pad its header): typed loads from it would be UB on
  // some targets, so copy into a freshly allocated (aligned) tensor.
  at::Tensor copy = at::empty(meta.shape, options);
  std::memcpy(copy.data_ptr(), bytes, nbytes);
  return copy;
}

void write_safetensors(const std::string& path,
                       const std::vector<std::pair<std::string, at::Tensor>>& tensors,
                       const std::map<std::string, std::string>& metadata) {
  // Everything is validated and the header built before any file is created, so bad arguments
  // never touch the disk.
  nlohmann::ordered_json header = nlohmann::ordered_json::object();
  if (!metadata.empty()) header["__metadata__"] = metadata;
  std::set<std::string> seen;
  uint64_t offset = 0;
  for (const auto& entry : tensors) {
    // Not a structured binding: C++17 lambdas cannot capture those.
    const std::string& name = entry.first;
    const at::Tensor& tensor = entry.second;
    auto fail = [&](const auto&... parts) {
      throw ArgumentError(detail::concat("cannot write '", path, "': tensor '", name, "': ",
                                         parts...));
    };
    if (name == "__metadata__") fail("the name is reserved for the metadata");
    if (!seen.insert(name).second) fail("duplicate tensor name");
    if (!tensor.defined()) fail("undefined tensor");
    if (tensor.layout() != at::kStrided) fail("only dense (strided) tensors can be written");
    StDtype dtype = StDtype::kF32;
    if (!st_dtype_for(tensor.scalar_type(), &dtype)) {
      fail("dtype ", tensor.scalar_type(), " has no safetensors equivalent");
    }
    const uint64_t nbytes = static_cast<uint64_t>(tensor.numel()) * st_dtype_size(dtype);
    std::vector<int64_t> shape(tensor.sizes().begin(), tensor.sizes().end());
    header[name] = {{"dtype", st_dtype_name(dtype)},
                    {"shape", shape},
                    {"data_offsets", {offset, offset + nbytes}}};
    offset += nbytes;
  }

  std::string header_text;
  try {
    header_text = header.dump();
  } catch (const nlohmann::json::exception& e) {  // names or metadata that are not UTF-8
    throw ArgumentError(detail::concat("cannot write '", path, "': ", e.what()));
  }
  // Pad with spaces to a multiple of 8, as the Python library does, so every tensor's data starts
  // 8-byte aligned in the file (and in the mapping when read back).
  header_text.append((8 - header_text.size() % 8) % 8, ' ');
  // Readers (ours and the Python library) refuse headers above 100 MB; never write one.
  VLM2MLA_CHECK(header_text.size() <= 100'000'000, ArgumentError, "cannot write '", path,
                "': the header would be ", header_text.size(), " bytes, above the 100 MB limit");

  write_file_atomic_streamed(path, [&](const ByteSink& sink) {
    uint8_t length[8];
    uint64_t n = header_text.size();
    for (uint8_t& byte : length) {
      byte = static_cast<uint8_t>(n & 0xff);
      n >>= 8;
    }
    sink(length, sizeof(length));
    sink(header_text.data(), header_text.size());
    for (const auto& [name, tensor] : tensors) {
      // One tensor at a time on the CPU, so peak memory is one tensor's copy, not the whole file.
      const at::Tensor cpu = tensor.cpu().contiguous();
      const size_t nbytes = static_cast<size_t>(cpu.numel()) * cpu.element_size();
      if (nbytes > 0) sink(cpu.data_ptr(), nbytes);
    }
  });
}

std::map<std::string, at::Tensor> read_safetensors(const std::string& path) {
  const SafetensorsFile file(path);
  std::map<std::string, at::Tensor> tensors;
  for (const StTensorInfo& info : file.header().tensors) {
    tensors.emplace(info.name, file.tensor(info.name).clone());
  }
  return tensors;
}

}  // namespace vlm2mla::io
