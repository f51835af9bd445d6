// A process-wide on/off setting for an optional fast path (a fused kernel): on unless the environment
// variable named at construction is "0" (read once, when first asked); set() overrides both. Thread-safe;
// constant-initialized, so a namespace-scope instance is usable from any static initializer.
#pragma once

#include <atomic>
#include <cstdlib>
#include <string>

namespace vlm2mla {

class EnvSwitch {
 public:
  explicit constexpr EnvSwitch(const char* env) : env_(env) {}

  bool enabled() const {
    int f = flag_.load();
    if (f < 0) {
      const char* v = std::getenv(env_);
      f = v && std::string(v) == "0" ? 0 : 1;
      flag_ = f;
    }
    return f == 1;
  }
  void set(bool on) { flag_ = on ? 1 : 0; }

 private:
  const char* env_;
  mutable std::atomic<int> flag_{-1};  // -1: not yet read from the environment
};

}  // namespace vlm2mla
