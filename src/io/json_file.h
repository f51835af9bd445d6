// Reading and writing JSON files with errors that name the file.
#pragma once

#include <cstddef>
#include <functional>
#include <nlohmann/json.hpp>
#include <string>

namespace vlm2mla::io {

// Parses `path`; throws IoError if unreadable, FormatError (with the parser's position) if malformed.
nlohmann::json read_json_file(const std::string& path);

// Writes atomically (temp file + rename), pretty-printed with 2-space indent.
void write_json_file(const std::string& path, const nlohmann::json& value);

// Writes `bytes` to `path` atomically: temp file beside it, fsync, rename. Throws IoError.
void write_file_atomic(const std::string& path, const std::string& bytes);

// Appends `size` bytes to the file being written; throws IoError on a failed write.
using ByteSink = std::function<void(const void* data, size_t size)>;

// The streaming form of write_file_atomic, for outputs too large to hold in one string
// (write_safetensors): `produce` writes everything through the sink. If `produce` or any file
// operation throws, the temporary file is removed, `path` is left as it was, and the exception
// propagates (file operations throw IoError; produce's own exceptions pass through unchanged).
void write_file_atomic_streamed(const std::string& path,
                                const std::function<void(const ByteSink& sink)>& produce);

}  // namespace vlm2mla::io
