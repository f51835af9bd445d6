// The switch of pdl.cuh's programmatic launches.
#include "kernels/cuda/pdl.cuh"

#include "core/env_switch.h"

namespace vlm2mla {
namespace {
EnvSwitch pdl_switch(kEnvPdl);
}  // namespace

bool programmatic_launches() { return pdl_switch.enabled(); }
void set_programmatic_launches(bool on) { pdl_switch.set(on); }

}  // namespace vlm2mla
