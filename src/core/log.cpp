#include "core/log.h"

#include <atomic>
#include <cstdio>

namespace vlm2mla {

namespace {
std::atomic<int> g_level{static_cast<int>(LogLevel::kInfo)};
}

void set_log_level(LogLevel level) { g_level = static_cast<int>(level); }
LogLevel log_level() { return static_cast<LogLevel>(g_level.load()); }

void log_line(LogLevel level, const std::string& line) {
  if (static_cast<int>(level) > g_level.load()) return;
  std::fprintf(stderr, "%s\n", line.c_str());
}

}  // namespace vlm2mla
