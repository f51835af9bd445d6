// The element types of the element-wise CUDA kernels (RMSNorm, RoPE): all their tensors share one.
// No CUDA headers here, so the kernels' parameter headers stay plain.
#pragma once

namespace vlm2mla {

enum class ElementDtype { kBf16, kFp16, kFp32 };

}  // namespace vlm2mla
