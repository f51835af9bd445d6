// A process-wide on/off setting for an optional fast path (a fused kernel): the environment variable named
// at construction turns it off when "0" and on when set to anything else (read once, when first asked);
// unset, it is `default_on` (on; off for a path not yet measured on the device). set() overrides both.
// Thread-safe; constant-initialized, so a namespace-scope instance is usable from any static initializer.
#pragma once

#include <atomic>
#include <cstdlib>
#include <string>

namespace vlm2mla {

class EnvSwitch {
 public:
  explicit constexpr EnvSwitch(const char* env, bool default_on = true) : env_(env), default_on_(default_on) {}

  bool enabled() const {
    int f = flag_.load();
    if (f < 0) {
      const char* v = std::getenv(env_);
      f = v ? (std::string(v) == "0" ? 0 : 1) : (default_on_ ? 1 : 0);
      flag_ = f;
    }
    return f == 1;
  }
  void set(bool on) { flag_ = on ? 1 : 0; }

 private:
  const char* env_;
  bool default_on_;
  mutable std::atomic<int> flag_{-1};  // -1: not yet read from the environment
};

}  // namespace vlm2mla
