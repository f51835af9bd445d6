// The project's on/off switches checked and read as a whole (core/env_switch.h).
#include "core/env_switch.h"

#include "core/error.h"

namespace vlm2mla {

void check_env_switches() {
  for (const char* name : kEnvSwitches) {
    const char* v = std::getenv(name);
    if (v == nullptr || *v == '\0') continue;
    const std::string value(v);
    VLM2MLA_CHECK(value == "0" || value == "1", ArgumentError, name, "='", value,
                  "': expected 0 (off) or 1 (on); unset is on");
  }
}

std::vector<std::pair<std::string, bool>> env_switch_states() {
  std::vector<std::pair<std::string, bool>> out;
  for (const char* name : kEnvSwitches) out.emplace_back(name, env_switch_value_on(std::getenv(name)));
  return out;
}

}  // namespace vlm2mla
