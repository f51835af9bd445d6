// Parsing and validating a safetensors header. Everything here treats its input as hostile: the
// fuzzer (fuzz/fuzz_safetensors_header.cpp) runs it under ASan/UBSan, so every length, offset and
// element count is range-checked before it is used.
#include "io/safetensors_header.h"

#include <algorithm>
#include <cstring>
#include <limits>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>
#include <tuple>
#include <utility>

#include "core/error.h"

namespace vlm2mla::io {

namespace {

using nlohmann::json;

// The Python safetensors library refuses headers above 100 MB (MAX_HEADER_SIZE); a larger length is
// a corrupt or hostile file, and refusing it early bounds what the JSON parser may allocate.
constexpr uint64_t kMaxHeaderBytes = 100'000'000;
constexpr uint64_t kLengthBytes = 8;
constexpr uint64_t kInt64Max = static_cast<uint64_t>(std::numeric_limits<int64_t>::max());

constexpr const char* kMetadataKey = "__metadata__";
constexpr const char* kKnownDtypes = "F64, F32, F16, BF16, I64, I32, I16, I8, U8, BOOL";

template <typename... Args>
[[noreturn]] void fail(const std::string& origin, const Args&... args) {
  throw FormatError(detail::concat("safetensors file '", origin, "': ", args...));
}

template <typename... Args>
[[noreturn]] void fail_tensor(const std::string& origin, const std::string& name,
                              const Args&... args) {
  fail(origin, "tensor '", name, "': ", args...);
}

template <typename T>
std::string format_list(const std::vector<T>& values) {
  std::ostringstream os;
  os << '[';
  for (size_t i = 0; i < values.size(); ++i) os << (i ? ", " : "") << values[i];
  os << ']';
  return os.str();
}

std::string format_range(uint64_t begin, uint64_t end) {
  return detail::concat('[', begin, ", ", end, ']');
}

// A non-negative JSON integer that fits in uint64 (nlohmann stores those as number_unsigned; a
// negative integer is number_integer, anything fractional or too large is number_float).
bool as_unsigned(const json& value, uint64_t* out) {
  if (!value.is_number_unsigned()) return false;
  *out = value.get<uint64_t>();
  return true;
}

std::vector<int64_t> parse_shape(const json& entry, const std::string& origin,
                                 const std::string& name) {
  auto it = entry.find("shape");
  if (it == entry.end()) fail_tensor(origin, name, "missing \"shape\"");
  if (!it->is_array()) {
    fail_tensor(origin, name, "\"shape\" is a ", it->type_name(),
                ", expected an array of integers");
  }
  std::vector<int64_t> shape;
  shape.reserve(it->size());
  for (size_t i = 0; i < it->size(); ++i) {
    const json& dim = (*it)[i];
    uint64_t value = 0;
    if (dim.is_number_integer() && !dim.is_number_unsigned()) {
      fail_tensor(origin, name, "negative dimension ", dim.get<int64_t>(), " at shape[", i,
                  "] (expected a non-negative integer)");
    }
    if (!as_unsigned(dim, &value)) {
      fail_tensor(origin, name, "shape[", i, "] is a ", dim.type_name(),
                  ", expected a non-negative integer");
    }
    // Dimensions become at::Tensor sizes (int64_t).
    if (value > kInt64Max) {
      fail_tensor(origin, name, "shape[", i, "] = ", value, " does not fit in int64");
    }
    shape.push_back(static_cast<int64_t>(value));
  }
  return shape;
}

std::pair<uint64_t, uint64_t> parse_offsets(const json& entry, const std::string& origin,
                                            const std::string& name) {
  auto it = entry.find("data_offsets");
  if (it == entry.end()) fail_tensor(origin, name, "missing \"data_offsets\"");
  if (!it->is_array() || it->size() != 2) {
    fail_tensor(origin, name, "\"data_offsets\" is ",
                it->is_array() ? detail::concat("an array of ", it->size(), " elements")
                               : detail::concat("a ", it->type_name()),
                ", expected [begin, end]");
  }
  uint64_t begin = 0, end = 0;
  if (!as_unsigned((*it)[0], &begin) || !as_unsigned((*it)[1], &end)) {
    fail_tensor(origin, name, "\"data_offsets\" must hold two non-negative integers, found ",
                (*it)[0].type_name(), " and ", (*it)[1].type_name());
  }
  return {begin, end};
}

// Byte size of a tensor, or fails when the element count overflows. Beyond the product of all
// dimensions, the product of the non-zero ones (times the element size) must fit in int64: ATen
// computes strides and byte counts from it even for zero-element tensors, so a shape like
// [0, 2^62, 2^62] would overflow there.
uint64_t checked_byte_size(const std::vector<int64_t>& shape, StDtype dtype,
                           const std::string& origin, const std::string& name) {
  uint64_t nonzero_product = 1;
  bool has_zero = false;
  for (int64_t dim : shape) {
    if (dim == 0) {
      has_zero = true;
      continue;
    }
    uint64_t next = 0;
    if (__builtin_mul_overflow(nonzero_product, static_cast<uint64_t>(dim), &next) ||
        next > kInt64Max) {
      fail_tensor(origin, name, "shape ", format_list(shape),
                  " has too many elements (numel overflows int64)");
    }
    nonzero_product = next;
  }
  uint64_t nonzero_bytes = 0;
  if (__builtin_mul_overflow(nonzero_product, uint64_t{st_dtype_size(dtype)}, &nonzero_bytes) ||
      nonzero_bytes > kInt64Max) {
    fail_tensor(origin, name, "shape ", format_list(shape), " of dtype ", st_dtype_name(dtype),
                " is too large (byte size overflows int64)");
  }
  return has_zero ? 0 : nonzero_bytes;
}

StTensorInfo parse_tensor(const std::string& name, const json& entry, uint64_t data_size,
                          const std::string& origin) {
  if (!entry.is_object()) {
    fail_tensor(origin, name, "entry is a ", entry.type_name(),
                ", expected an object with \"dtype\", \"shape\" and \"data_offsets\"");
  }
  // Unknown keys are ignored, as the reference (Rust/Python) reader does, so files carrying extra
  // per-tensor fields still load.
  StTensorInfo info;
  info.name = name;

  auto dtype_it = entry.find("dtype");
  if (dtype_it == entry.end()) fail_tensor(origin, name, "missing \"dtype\"");
  if (!dtype_it->is_string()) {
    fail_tensor(origin, name, "\"dtype\" is a ", dtype_it->type_name(), ", expected a string");
  }
  const std::string& dtype_name = dtype_it->get_ref<const std::string&>();
  if (!st_dtype_from_name(dtype_name, &info.dtype)) {
    fail_tensor(origin, name, "unsupported dtype \"", dtype_name, "\" (expected one of ",
                kKnownDtypes, ")");
  }

  info.shape = parse_shape(entry, origin, name);
  std::tie(info.begin, info.end) = parse_offsets(entry, origin, name);
  if (info.begin > info.end) {
    fail_tensor(origin, name, "data_offsets ", format_range(info.begin, info.end),
                " are reversed (expected begin <= end)");
  }
  if (info.end > data_size) {
    fail_tensor(origin, name, "data_offsets ", format_range(info.begin, info.end),
                " run past the end of the data section (", data_size, " bytes)");
  }
  const uint64_t expected = checked_byte_size(info.shape, info.dtype, origin, name);
  if (info.end - info.begin != expected) {
    fail_tensor(origin, name, "data_offsets ", format_range(info.begin, info.end), " span ",
                info.end - info.begin, " bytes, but shape ", format_list(info.shape), " of dtype ",
                st_dtype_name(info.dtype), " needs ",
                expected, " bytes");
  }
  return info;
}

std::map<std::string, std::string> parse_metadata(const json& value, const std::string& origin) {
  if (!value.is_object()) {
    fail(origin, "\"", kMetadataKey, "\" is a ", value.type_name(),
         ", expected an object of strings");
  }
  std::map<std::string, std::string> metadata;
  for (auto it = value.begin(); it != value.end(); ++it) {
    if (!it->is_string()) {
      fail(origin, "\"", kMetadataKey, "\" entry '", it.key(), "' is a ", it->type_name(),
           ", expected a string");
    }
    metadata.emplace(it.key(), it->get<std::string>());
  }
  return metadata;
}

// Parses the JSON text, rejecting duplicate keys. nlohmann keeps the last of two equal keys
// silently; for a header that would hide a tensor (or make two readers disagree on its offsets),
// so the parser callback tracks the keys of every open object.
json parse_json_strict(const char* begin, const char* end, const std::string& origin) {
  std::vector<std::set<std::string>> open_objects;
  std::string duplicate;
  int duplicate_depth = 0;
  auto callback = [&](int depth, json::parse_event_t event, json& parsed) {
    switch (event) {
      case json::parse_event_t::object_start:
        open_objects.emplace_back();
        break;
      case json::parse_event_t::object_end:
        if (!open_objects.empty()) open_objects.pop_back();
        break;
      case json::parse_event_t::key:
        if (!open_objects.empty() && parsed.is_string() &&
            !open_objects.back().insert(parsed.get_ref<const std::string&>()).second &&
            duplicate.empty()) {
          duplicate = parsed.get<std::string>();
          duplicate_depth = depth;
        }
        break;
      case json::parse_event_t::array_start:
      case json::parse_event_t::array_end:
      case json::parse_event_t::value:
        break;
    }
    return true;
  };
  // nlohmann's lexer takes a NUL byte for the end of input and would silently ignore whatever
  // follows it; valid JSON text never contains a raw NUL, so refuse it outright.
  if (const void* nul = std::memchr(begin, '\0', static_cast<size_t>(end - begin))) {
    fail(origin, "header is not valid JSON: NUL byte at header offset ",
         static_cast<const char*>(nul) - begin);
  }
  json root;
  try {
    root = json::parse(begin, end, callback, /*allow_exceptions=*/true);
  } catch (const json::exception& e) {
    fail(origin, "header is not valid JSON: ", e.what());
  }
  if (!duplicate.empty()) {
    if (duplicate_depth == 1) fail(origin, "key '", duplicate, "' appears twice in the header");
    fail(origin, "key '", duplicate, "' appears twice in a nested header object");
  }
  return root;
}

}  // namespace

const char* st_dtype_name(StDtype dtype) {
  switch (dtype) {
    case StDtype::kF64: return "F64";
    case StDtype::kF32: return "F32";
    case StDtype::kF16: return "F16";
    case StDtype::kBF16: return "BF16";
    case StDtype::kI64: return "I64";
    case StDtype::kI32: return "I32";
    case StDtype::kI16: return "I16";
    case StDtype::kI8: return "I8";
    case StDtype::kU8: return "U8";
    case StDtype::kBool: return "BOOL";
  }
  return "?";
}

size_t st_dtype_size(StDtype dtype) {
  switch (dtype) {
    case StDtype::kF64: return 8;
    case StDtype::kF32: return 4;
    case StDtype::kF16: return 2;
    case StDtype::kBF16: return 2;
    case StDtype::kI64: return 8;
    case StDtype::kI32: return 4;
    case StDtype::kI16: return 2;
    case StDtype::kI8: return 1;
    case StDtype::kU8: return 1;
    case StDtype::kBool: return 1;
  }
  return 1;
}

bool st_dtype_from_name(const std::string& name, StDtype* out) {
  static constexpr StDtype kAll[] = {StDtype::kF64, StDtype::kF32, StDtype::kF16, StDtype::kBF16,
                                     StDtype::kI64, StDtype::kI32, StDtype::kI16, StDtype::kI8,
                                     StDtype::kU8,  StDtype::kBool};
  for (StDtype dtype : kAll) {
    if (name == st_dtype_name(dtype)) {
      *out = dtype;
      return true;
    }
  }
  return false;
}

uint64_t StTensorInfo::numel() const {
  // Unsigned arithmetic: wraps instead of UB for hand-built infos; parsed ones never overflow.
  uint64_t n = 1;
  for (int64_t dim : shape) n *= static_cast<uint64_t>(dim);
  return n;
}

const StTensorInfo* StHeader::find(const std::string& name) const {
  for (const StTensorInfo& info : tensors) {
    if (info.name == name) return &info;
  }
  return nullptr;
}

StHeader parse_safetensors_header(const uint8_t* data, size_t available, uint64_t file_size,
                                  const std::string& origin) {
  // Bytes past the end of the file are never trusted, whatever the caller says it has.
  const uint64_t usable = std::min<uint64_t>(available, file_size);
  if (file_size < kLengthBytes) {
    fail(origin, "file is ", file_size, " bytes, too short for the 8-byte header length");
  }
  if (usable < kLengthBytes || data == nullptr) {
    fail(origin, "only ", usable, " bytes available, expected at least the 8-byte header length");
  }
  uint64_t header_len = 0;
  for (int i = 7; i >= 0; --i) header_len = (header_len << 8) | data[i];  // little-endian u64

  if (header_len > kMaxHeaderBytes) {
    fail(origin, "header length ", header_len, " exceeds the limit of ", kMaxHeaderBytes,
         " bytes");
  }
  if (header_len > file_size - kLengthBytes) {
    fail(origin, "header length ", header_len, " runs past the end of the file (file is ",
         file_size, " bytes, so at most ", file_size - kLengthBytes, " expected)");
  }
  if (header_len > usable - kLengthBytes) {
    fail(origin, "header length ", header_len, " but only ", usable - kLengthBytes,
         " header bytes are available");
  }

  StHeader header;
  header.data_offset = kLengthBytes + header_len;
  const uint64_t data_size = file_size - header.data_offset;

  const char* text = reinterpret_cast<const char*>(data + kLengthBytes);
  const json root = parse_json_strict(text, text + header_len, origin);
  if (!root.is_object()) {
    fail(origin, "header is a JSON ", root.type_name(), ", expected an object");
  }

  for (auto it = root.begin(); it != root.end(); ++it) {
    if (it.key() == kMetadataKey) {
      header.metadata = parse_metadata(it.value(), origin);
    } else {
      header.tensors.push_back(parse_tensor(it.key(), it.value(), data_size, origin));
    }
  }

  // Sorted by offset (name breaks ties, for zero-size tensors) so overlaps are neighbours.
  std::sort(header.tensors.begin(), header.tensors.end(),
            [](const StTensorInfo& a, const StTensorInfo& b) {
              return std::tie(a.begin, a.end, a.name) < std::tie(b.begin, b.end, b.name);
            });
  // Zero-size tensors occupy no bytes and may sit anywhere (the Python writer puts them at the
  // offset where they would start). Gaps between tensors are allowed: padding is harmless.
  const StTensorInfo* previous = nullptr;
  for (const StTensorInfo& info : header.tensors) {
    if (info.begin == info.end) continue;
    if (previous != nullptr && info.begin < previous->end) {
      fail(origin, "tensors '", previous->name, "' ", format_range(previous->begin, previous->end),
           " and '", info.name, "' ", format_range(info.begin, info.end),
           " overlap in the data section");
    }
    previous = &info;
  }
  return header;
}

}  // namespace vlm2mla::io
