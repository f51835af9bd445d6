// EnvSwitch (core/env_switch.h): the on/off settings of the fast paths, read from the environment once.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdlib>
#include <string>
#include <vector>

#include "core/env_switch.h"
#include "core/error.h"
#include "support/test_support.h"

namespace vlm2mla {
namespace {

// Unset: on; "0" turns it off, anything else on; set() overrides the environment; the first reading is kept.
TEST(EnvSwitch, DefaultZeroOtherAndSet) {
  const char* name = "VLM2MLA_TEST_ENV_SWITCH";
  ::unsetenv(name);
  EnvSwitch unset(name);
  EXPECT_TRUE(unset.enabled());
  ::setenv(name, "0", 1);
  EXPECT_TRUE(unset.enabled()) << "read once, when first asked";
  EnvSwitch zero(name);
  EXPECT_FALSE(zero.enabled());
  ::setenv(name, "1", 1);
  EnvSwitch one(name);
  EXPECT_TRUE(one.enabled());
  one.set(false);
  EXPECT_FALSE(one.enabled());
  zero.set(true);
  EXPECT_TRUE(zero.enabled());
  ::unsetenv(name);
}

// The project's switches: named once each (VLM2MLA_...), checked as a whole (0, 1, empty or unset; anything else an
// ArgumentError naming the variable and its value) and reported as the environment sets them.
TEST(EnvSwitch, TheProjectsSwitchesAreCheckedAndReported) {
  std::vector<std::string> names;
  for (const char* n : kEnvSwitches) {
    EXPECT_EQ(std::string(n).rfind("VLM2MLA_", 0), 0u) << n;
    EXPECT_EQ(std::count(names.begin(), names.end(), n), 0) << n << " listed twice";
    names.emplace_back(n);
  }
  const char* name = kEnvDecodeScoreClusters;
  const char* old = std::getenv(name);
  const std::string saved = old ? old : "";
  for (const char* ok : {"0", "1", ""}) {
    ::setenv(name, ok, 1);
    EXPECT_NO_THROW(check_env_switches()) << ok;
    bool found = false;
    for (const auto& [n, on] : env_switch_states()) {
      if (n != name) continue;
      found = true;
      EXPECT_EQ(on, std::string(ok) != "0") << ok;
    }
    EXPECT_TRUE(found);
  }
  for (const char* bad : {"off", "false", "2", " 0"}) {
    ::setenv(name, bad, 1);
    const std::string what = testing::argument_error([] { check_env_switches(); });
    EXPECT_NE(what.find(std::string(name) + "='" + bad + "': expected 0 (off) or 1 (on)"), std::string::npos)
        << bad << ": " << what;
  }
  if (old) {
    ::setenv(name, saved.c_str(), 1);
  } else {
    ::unsetenv(name);
  }
}

}  // namespace
}  // namespace vlm2mla
