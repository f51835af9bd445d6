// Minimal leveled logging to stderr. Progress for long work goes through here too.
#pragma once

#include <string>

#include "core/error.h"

namespace vlm2mla {

enum class LogLevel { kQuiet = 0, kInfo = 1, kDebug = 2 };

void set_log_level(LogLevel level);
LogLevel log_level();
void log_line(LogLevel level, const std::string& line);  // writes "line\n" to stderr if enabled

}  // namespace vlm2mla

#define VLM2MLA_INFO(...) ::vlm2mla::log_line(::vlm2mla::LogLevel::kInfo, ::vlm2mla::detail::concat(__VA_ARGS__))
#define VLM2MLA_DEBUG(...) ::vlm2mla::log_line(::vlm2mla::LogLevel::kDebug, ::vlm2mla::detail::concat(__VA_ARGS__))
