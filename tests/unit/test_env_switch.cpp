// EnvSwitch (core/env_switch.h): the on/off settings of the fast paths, read from the environment once.
#include <gtest/gtest.h>

#include <cstdlib>

#include "core/env_switch.h"

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

}  // namespace
}  // namespace vlm2mla
