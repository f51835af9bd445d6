// Errors: the library throws, never exits. The CLI catches in main, prints "error: ...", exits non-zero.
#pragma once

#include <sstream>
#include <stdexcept>
#include <string>

namespace vlm2mla {

// Base of every error the library raises on purpose. what() is a complete, user-facing sentence that
// names the file, key or argument at fault and what was expected.
class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& msg) : std::runtime_error(msg) {}
};

// A file on disk is malformed (safetensors, config.json, index files, rank files, ...).
class FormatError : public Error {
 public:
  using Error::Error;
};

// A file or directory is missing or unreadable.
class IoError : public Error {
 public:
  using Error::Error;
};

// A caller (CLI argument, API argument, input tensor) asked for something invalid or unsupported.
class ArgumentError : public Error {
 public:
  using Error::Error;
};

namespace detail {
template <typename... Args>
std::string concat(const Args&... args) {
  std::ostringstream os;
  (os << ... << args);
  return os.str();
}
}  // namespace detail

}  // namespace vlm2mla

// VLM2MLA_CHECK(cond, ErrorType, parts...): throw ErrorType(concat(parts...)) when cond is false.
#define VLM2MLA_CHECK(cond, ErrorType, ...)                              \
  do {                                                                   \
    if (!(cond)) throw ErrorType(::vlm2mla::detail::concat(__VA_ARGS__)); \
  } while (0)
