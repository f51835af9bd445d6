// The switch of the small kernels' programmatic launches (pdl.cuh), for host code that does not include CUDA device
// code: on unless VLM2MLA_PDL=0 (read once), or as last set.
#pragma once

namespace vlm2mla {

bool programmatic_launches();
void set_programmatic_launches(bool on);

}  // namespace vlm2mla
