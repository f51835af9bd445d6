#include "nn/layers.h"

#include "core/env_switch.h"
#include "kernels/ops.h"

namespace vlm2mla {

namespace {
EnvSwitch fused_rms_norm_switch(kEnvFusedRmsNorm);
EnvSwitch fused_silu_mul_switch(kEnvFusedSiluMul);
EnvSwitch gemv_switch(kEnvGemv);
EnvSwitch gemv_silu_mul_switch(kEnvGemvSiluMul);
EnvSwitch gemm_rows_switch(kEnvGemmRows);
// the most rows of x given to the few-row kernel: it takes 16 (kernels/cuda/gemm_rows.h), but at 16 rows its second
// row block of x's loads made a 7B step's projections 4% slower than cuBLAS's (H200, 2026-12-01: 0.96x; 1.04-1.07x
// at 2 to 8 rows; BENCHMARKS.md)
constexpr int64_t kGemmRowsTaken = 8;
}  // namespace

void set_gemv_silu_mul(bool on) { gemv_silu_mul_switch.set(on); }

bool gemv_silu_mul_enabled() { return gemv_silu_mul_switch.enabled(); }

void set_gemv(bool on) { gemv_switch.set(on); }

bool gemv_enabled() { return gemv_switch.enabled(); }

void set_gemm_rows(bool on) { gemm_rows_switch.set(on); }

bool gemm_rows_enabled() { return gemm_rows_switch.enabled(); }

namespace {
// x's rows where x is a CUDA tensor of 1 to kGemmRowsTaken of them (a decode step's), else 0: the cheap tests first, so
// that other calls pay for no more than them
int64_t few_cuda_rows(const at::Tensor& x) {
  if (!x.is_cuda() || x.dim() < 1 || x.size(-1) < 1) return 0;
  const int64_t rows = x.numel() / x.size(-1);
  return rows <= kGemmRowsTaken ? rows : 0;
}
}  // namespace

at::Tensor dense(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias) {
  const int64_t rows = few_cuda_rows(x);
  if (rows == 1 && gemv_enabled() && !gemv_unusable(x, weight, bias)) return fused_gemv(x, weight, bias);
  if (rows > 1 && gemm_rows_enabled() && !gemm_rows_unusable(x, weight, bias)) return fused_gemm_rows(x, weight, bias);
  return at::linear(x, weight, bias);
}

void set_fused_rms_norm(bool on) { fused_rms_norm_switch.set(on); }

bool fused_rms_norm_enabled() { return fused_rms_norm_switch.enabled(); }

void set_fused_silu_mul(bool on) { fused_silu_mul_switch.set(on); }

bool fused_silu_mul_enabled() { return fused_silu_mul_switch.enabled(); }

namespace {

// b's elements follow a's in one storage: what lets two row blocks run as one.
bool continues(const at::Tensor& a, const at::Tensor& b) {
  return a.defined() && b.defined() && a.dim() >= 1 && a.dim() == b.dim() &&
         a.scalar_type() == b.scalar_type() && a.device() == b.device() && !a.requires_grad() &&
         !b.requires_grad() && a.is_contiguous() && b.is_contiguous() && a.sizes().slice(1) == b.sizes().slice(1) &&
         a.storage().unsafeGetStorageImpl() == b.storage().unsafeGetStorageImpl() &&
         b.storage_offset() == a.storage_offset() + a.numel();
}

bool adjacent(const LinearWeights& a, const LinearWeights& b) {
  if (!continues(a.weight, b.weight) || a.bias.defined() != b.bias.defined()) return false;
  return !a.bias.defined() || continues(a.bias, b.bias);
}

// `rows` rows of the storage from `first`'s first row on: [rows, ...] with first's strides.
at::Tensor rows_from(const at::Tensor& first, int64_t rows) {
  std::vector<int64_t> sizes = first.sizes().vec();
  sizes[0] = rows;
  return first.as_strided(sizes, first.strides(), first.storage_offset());
}

}  // namespace

bool fusable(at::ArrayRef<const LinearWeights*> members) {
  for (size_t i = 1; i < members.size(); ++i) {
    if (!adjacent(*members[i - 1], *members[i])) return false;
  }
  return true;
}

std::vector<at::Tensor> linear_group(const at::Tensor& x, at::ArrayRef<const LinearWeights*> members) {
  std::vector<at::Tensor> out;
  out.reserve(members.size());
  for (size_t i = 0; i < members.size();) {
    size_t j = i + 1;  // the run [i, j)
    int64_t rows = members[i]->weight.size(0);
    while (j < members.size() && adjacent(*members[j - 1], *members[j])) rows += members[j++]->weight.size(0);
    if (j == i + 1) {
      out.push_back(linear(x, *members[i]));
    } else {
      const LinearWeights& first = *members[i];
      at::Tensor y = dense(x, rows_from(first.weight, rows),
                           first.bias.defined() ? rows_from(first.bias, rows) : at::Tensor());  // [..., rows]
      int64_t offset = 0;
      for (size_t k = i; k < j; ++k) {
        const int64_t n = members[k]->weight.size(0);
        out.push_back(y.narrow(-1, offset, n));  // [..., out_k]
        offset += n;
      }
    }
    i = j;
  }
  return out;
}

void fuse_linears(at::ArrayRef<LinearWeights*> members) {
  for (const LinearWeights* m : members) {
    if (!m->weight.defined()) return;
  }
  // Tensors of one kind: the same dtype, device and sizes but the first (out-features for a weight).
  auto same_kind = [](const at::Tensor& a, const at::Tensor& b) {
    return a.scalar_type() == b.scalar_type() && a.device() == b.device() && a.dim() == b.dim() &&
           a.sizes().slice(1) == b.sizes().slice(1);
  };
  for (size_t i = 0; i < members.size();) {
    // The block [i, j): weights of one kind, and the biases that are defined of one kind (bias_like,
    // the first of them; undefined when no member has one).
    at::Tensor bias_like;
    size_t j = i;
    for (; j < members.size(); ++j) {
      const LinearWeights& m = *members[j];
      if (!same_kind(members[i]->weight, m.weight)) break;
      if (m.bias.defined()) {
        if (bias_like.defined() && !same_kind(bias_like, m.bias)) break;
        if (!bias_like.defined()) bias_like = m.bias;
      }
    }
    std::vector<const LinearWeights*> run(members.begin() + static_cast<std::ptrdiff_t>(i),
                                          members.begin() + static_cast<std::ptrdiff_t>(j));
    if (run.size() > 1 && !fusable(run)) {
      std::vector<at::Tensor> weights;
      int64_t rows = 0;
      for (const LinearWeights* m : run) {
        weights.push_back(m->weight);
        rows += m->weight.size(0);
      }
      at::Tensor w = at::cat(weights, 0);  // [sum out, in]
      // [sum out]: the members' biases, zeros in the rows of members without one (exact: a GEMM with a
      // bias rounds acc + b, and with b = 0 that is acc, what it rounds without one).
      at::Tensor b = bias_like.defined() ? at::zeros({rows}, bias_like.options()) : at::Tensor();
      int64_t offset = 0;
      for (size_t k = i; k < j; ++k) {
        LinearWeights& m = *members[k];
        const int64_t n = m.weight.size(0);
        m.weight = w.narrow(0, offset, n);
        if (b.defined()) {
          at::Tensor slice = b.narrow(0, offset, n);  // [out_k]
          if (m.bias.defined()) slice.copy_(m.bias);
          m.bias = slice;
        }
        offset += n;
      }
    }
    i = j;
  }
}

at::Tensor rms_norm(const at::Tensor& x, const at::Tensor& weight, double eps) {
  if (fused_rms_norm_enabled() && fused_rms_norm_usable(x, weight)) {  // usable: CUDA tensors only
    return fused_rms_norm(x, weight, eps);
  }
  at::Tensor xf = x.to(at::kFloat);
  at::Tensor variance = xf.pow(2).mean(-1, /*keepdim=*/true);
  at::Tensor normed = (xf * at::rsqrt(variance + eps)).to(x.scalar_type());
  return weight * normed;
}

std::pair<at::Tensor, at::Tensor> add_rms_norm(const at::Tensor& x, const at::Tensor& r, const at::Tensor& weight,
                                               double eps) {
  if (fused_rms_norm_enabled() && fused_add_rms_norm_usable(x, r, weight)) return fused_add_rms_norm(x, r, weight, eps);
  at::Tensor sum = x + r;
  return {sum, rms_norm(sum, weight, eps)};
}

at::Tensor silu_mul(const at::Tensor& gate, const at::Tensor& up) {
  if (fused_silu_mul_enabled() && !fused_silu_mul_unusable(gate, up)) return fused_silu_mul(gate, up);
  return at::silu(gate) * up;
}

at::Tensor swiglu_mlp(const at::Tensor& x, const LinearWeights& gate, const LinearWeights& up,
                      const LinearWeights& down) {
  // 1 to kGemmRowsTaken rows on CUDA (the cheap tests first): SiLU x up in the gate/up projection's launch
  const int64_t x_rows = few_cuda_rows(x);
  const bool kernel_on = x_rows == 1 ? gemv_enabled() : gemm_rows_enabled();
  if (x_rows > 0 && kernel_on && gemv_silu_mul_enabled() && fused_silu_mul_enabled() && gate.weight.defined() &&
      up.weight.defined() && gate.weight.size(0) == up.weight.size(0) && fusable({&gate, &up})) {
    const int64_t rows = 2 * gate.weight.size(0);
    const at::Tensor w = rows_from(gate.weight, rows);  // the block linear_group would take
    const at::Tensor b = gate.bias.defined() ? rows_from(gate.bias, rows) : at::Tensor();
    if (x_rows == 1 && !gemv_silu_mul_unusable(x, w, b)) return linear(fused_gemv_silu_mul(x, w, b), down);
    if (x_rows > 1 && !gemm_rows_silu_mul_unusable(x, w, b)) return linear(fused_gemm_rows_silu_mul(x, w, b), down);
  }
  std::vector<at::Tensor> gate_up = linear_group(x, {&gate, &up});  // [..., i] each
  return linear(silu_mul(gate_up[0], gate_up[1]), down);
}

}  // namespace vlm2mla
