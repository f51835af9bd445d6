// The few differences between the libtorch versions we build against, in one place:
// Debian's libtorch 1.13 (CPU; CI and developer machines) and the torch 2.11 wheel (CUDA; the device).
#pragma once

#include <ATen/ATen.h>
#include <c10/util/Exception.h>
#include <torch/version.h>

#include <string>

// at::scaled_dot_product_attention exists from torch 2.0.
#if TORCH_VERSION_MAJOR >= 2
#define VLM2MLA_HAS_SDPA 1
#else
#define VLM2MLA_HAS_SDPA 0
#endif

// scaled_dot_product_attention's enable_gqa (kv heads shared by groups of query heads, read in place) exists
// from torch 2.5.
#if TORCH_VERSION_MAJOR > 2 || (TORCH_VERSION_MAJOR == 2 && TORCH_VERSION_MINOR >= 5)
#define VLM2MLA_HAS_SDPA_GQA 1
#else
#define VLM2MLA_HAS_SDPA_GQA 0
#endif

namespace vlm2mla::compat {

// Fused attention where this libtorch has it. q [b, h, s_q, d], k/v [b, h, s_kv, d] (same head count),
// mask bool [b, 1, s_q, s_kv] (true = attend) or undefined; is_causal (with no mask) lets the
// flash kernels apply the causal mask themselves. Only callable when VLM2MLA_HAS_SDPA. gqa: k/v may have
// h_q / g heads, query head h reading kv head h / g (only when VLM2MLA_HAS_SDPA_GQA).
inline at::Tensor sdpa(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                       const at::Tensor& mask, double scale, bool is_causal = false, bool gqa = false) {
#if VLM2MLA_HAS_SDPA
  c10::optional<at::Tensor> m;
  if (mask.defined()) m = mask;
#if VLM2MLA_HAS_SDPA_GQA
  return at::scaled_dot_product_attention(q, k, v, m, 0.0, is_causal, scale, gqa);
#else
  TORCH_CHECK(!gqa, "scaled_dot_product_attention's enable_gqa needs libtorch >= 2.5");
  return at::scaled_dot_product_attention(q, k, v, m, 0.0, is_causal, scale);
#endif
#else
  (void)q, (void)k, (void)v, (void)mask, (void)scale, (void)is_causal, (void)gqa;
  TORCH_CHECK(false, "scaled_dot_product_attention needs libtorch >= 2.0");
#endif
}

// Whether a libtorch error is an allocator's refusal of memory: c10::OutOfMemoryError (CUDA), or the CPU
// allocator's "can't allocate memory", which libtorch 1.13 raises as a plain c10::Error.
inline bool is_out_of_memory(const c10::Error& e) {
  if (dynamic_cast<const c10::OutOfMemoryError*>(&e) != nullptr) return true;
  const std::string what = e.what_without_backtrace();
  return what.find("out of memory") != std::string::npos || what.find("can't allocate memory") != std::string::npos;
}

// The first line of a libtorch error's message (CUDA's out-of-memory message goes on with advice about
// PYTORCH_CUDA_ALLOC_CONF, which is not ours to give).
inline std::string first_line(const c10::Error& e) {
  const std::string what = e.what_without_backtrace();
  return what.substr(0, what.find('\n'));
}

}  // namespace vlm2mla::compat
