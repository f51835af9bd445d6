// Small building blocks shared by the decoders.
#pragma once

#include <ATen/ATen.h>

#include <utility>
#include <vector>

namespace vlm2mla {

struct LinearWeights {
  at::Tensor weight;  // [out, in]
  at::Tensor bias;    // [out] or undefined
};

// x [..., in] -> [..., out]: x weight^T + bias (bias [out] or undefined). at::linear, except for one row of x on
// CUDA (a decode step's projection at batch 1), which takes kernels/ops.h's fused_gemv where it can (each weight
// row read once; at::linear is its twin, within bf16 rounding). On by default; set_gemv(false), or VLM2MLA_GEMV=0
// in the environment, keeps at::linear everywhere. Two to 8 rows on CUDA (a decode step's projections at batches
// 2 to 8) take kernels/ops.h's fused_gemm_rows where they can (tensor cores, each weight element read once, no
// split-K launch; at::linear its twin within bf16 rounding): set_gemm_rows(false), or VLM2MLA_GEMM_ROWS=0, keeps
// at::linear there.
at::Tensor dense(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias = {});
void set_gemv(bool on);
bool gemv_enabled();
void set_gemm_rows(bool on);
bool gemm_rows_enabled();

// x [..., in] -> [..., out]
inline at::Tensor linear(const at::Tensor& x, const LinearWeights& w) { return dense(x, w.weight, w.bias); }

// Projections of one input as one GEMM. Members are adjacent when each one's weight continues the
// one before it in memory: one storage, same dtype and device, contiguous, the same in-features, its
// first row right after the previous member's last (and their biases the same way, or all undefined),
// and no gradient wanted. fuse_linears stores a group that way.

// True when every member is adjacent to the one before it: linear_group runs them as one GEMM.
bool fusable(at::ArrayRef<const LinearWeights*> members);

// x [..., in] -> one [..., out_i] per member, in order. Each run of adjacent members is one dense()
// over their rows (the results are narrow() slices of its [..., sum out_i]); other members run
// separately (the slow twin: the same values up to the GEMM's blocking). Host metadata only: no
// device sync, so it can run inside a CUDA graph capture.
std::vector<at::Tensor> linear_group(const at::Tensor& x, at::ArrayRef<const LinearWeights*> members);

// Inference only: stores the members as adjacent row blocks of one new tensor cat(weights, 0) (biases
// likewise) and makes each member's weight and bias a narrow() view of it, releasing the originals:
// the same bytes, one GEMM. Where only some members of a block have a bias, the others get a zero bias,
// rows of the block's bias tensor (out-features elements each, the only bytes added): exact, since a
// GEMM with a bias rounds acc + b and with b = 0 that is acc, what it rounds without one. Consecutive
// members of another dtype, device or in-features (or whose biases differ in dtype or device) go to
// separate blocks; a block of one member is left as it is (no zero bias), and so is a group with an
// undefined weight. Weights that get gradients or are rewritten (conversion, fine-tuning) must not be
// fused.
void fuse_linears(at::ArrayRef<LinearWeights*> members);

// Llama/Qwen2 RMSNorm as transformers computes it: normalise in float32, cast back to x's dtype,
// then multiply by the weight. x [..., d], weight [d].
// On CUDA tensors, one launch of kernels/cuda/rms_norm (this function's steps are its twin; the float32
// sum of squares is added in another order). On by default; set_fused_rms_norm(false), or
// VLM2MLA_FUSED_RMS_NORM=0 in the environment, keeps libtorch's eight kernels.
at::Tensor rms_norm(const at::Tensor& x, const at::Tensor& weight, double eps);
void set_fused_rms_norm(bool on);
bool fused_rms_norm_enabled();

// {x + r, rms_norm(x + r, weight, eps)}: a residual add and the norm after it. On CUDA tensors with the
// fused RMSNorm on, one launch (kernels/ops.h's fused_add_rms_norm; the add rounds as libtorch's does).
std::pair<at::Tensor, at::Tensor> add_rms_norm(const at::Tensor& x, const at::Tensor& r, const at::Tensor& weight,
                                               double eps);

// silu(gate) * up. On CUDA tensors, one launch, bit-identical to libtorch's two (kernels/ops.h's
// fused_silu_mul; these steps are its twin). On by default; set_fused_silu_mul(false), or
// VLM2MLA_FUSED_SILU_MUL=0 in the environment, keeps libtorch's kernels.
at::Tensor silu_mul(const at::Tensor& gate, const at::Tensor& up);
void set_fused_silu_mul(bool on);
bool fused_silu_mul_enabled();

// SwiGLU MLP: down(silu(gate(x)) * up(x)), gate and up as one GEMM where fused. x [..., d] -> [..., d]
// For one row on CUDA with gate and up fused (one weight block of equal halves), the gate/up projection's launch also
// takes SiLU x up (kernels/ops.h's fused_gemv_silu_mul, with the one-row kernel and the fused SiLU x up on: the bits
// of the two launches, one launch fewer); for 2 to 8 rows with the few-row kernel on, fused_gemm_rows_silu_mul the
// same way. On by default; set_gemv_silu_mul(false), or VLM2MLA_GEMV_SILU_MUL=0 in the environment, keeps the SiLU x
// up launch (the twin) at any row count.
at::Tensor swiglu_mlp(const at::Tensor& x, const LinearWeights& gate, const LinearWeights& up,
                      const LinearWeights& down);
void set_gemv_silu_mul(bool on);
bool gemv_silu_mul_enabled();

}  // namespace vlm2mla
