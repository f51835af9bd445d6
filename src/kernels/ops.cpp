#include "kernels/ops.h"

#include <ATen/ExpandUtils.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdlib>
#include <mutex>
#include <set>
#include <string_view>

#include "core/env_switch.h"
#include "core/error.h"
#include "core/names.h"
#include "kernels/ref/mla_decode_ref.h"
#include "kvcache/quant_shape.h"

#ifdef VLM2MLA_WITH_CUDA_KERNELS
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include "kernels/cuda/cache_write.h"
#include "kernels/cuda/gemm_rows.h"
#include "kernels/cuda/gemv.h"
#include "kernels/cuda/head_product.h"
#include "kernels/cuda/mla_decode.h"
#include "kernels/cuda/pdl.h"
#include "kernels/cuda/rms_norm.h"
#include "kernels/cuda/rope.h"
#include "kernels/cuda/row_copy.h"
#endif

namespace vlm2mla {

#ifdef VLM2MLA_WITH_CUDA_KERNELS
struct PreparedMlaDecode {
  MlaDecodeParams params;
  MlaDecodeVariant variant = MlaDecodeVariant::kAuto;
  MlaDecodePlan plan;
  MlaDecodeOutput out;
  at::Device device = at::kCPU;
  std::vector<at::Tensor> owned;  // converted inputs, workspace: alive as long as params points at them
  at::Tensor copy_acc, copy_mass;  // destinations the kernel cannot store into: copied after each run
};

namespace {

template <typename T>
const T* ptr(const at::Tensor& t) {
  return t.defined() ? reinterpret_cast<const T*>(t.data_ptr()) : nullptr;
}

// The element kernels' dtype of a tensor the usable() checks admitted (bf16, fp16 or float32).
ElementDtype element_dtype(at::ScalarType t) {
  return t == at::kBFloat16 ? ElementDtype::kBf16 : t == at::kHalf ? ElementDtype::kFp16 : ElementDtype::kFp32;
}

void prepare(const MlaDecodeInputs& in, PreparedMlaDecode& pr) {
  const MlaDecodeShape s = check_mla_decode_inputs(in);
  VLM2MLA_CHECK(s.device.is_cuda(), ArgumentError, "mla_decode: MlaDecodeLaunch needs CUDA tensors, got ", s.device);
  const int64_t max_length = in.max_length >= 0 ? in.max_length : check_mla_decode_ranges(in, s);
  VLM2MLA_CHECK(max_length <= INT32_MAX, ArgumentError, "mla_decode: max_length beyond int32");
  c10::cuda::CUDAGuard guard(s.device);
  pr.device = s.device;
  pr.variant = in.variant;
  auto keep = [&](at::Tensor t) {
    if (t.defined()) pr.owned.push_back(t);
    return t;
  };
  // The queries in place when they share float32 or bf16 and their last dims are contiguous, else as
  // float32 copies.
  const at::ScalarType qt = in.qa.scalar_type();
  const bool direct = (qt == at::kFloat || qt == at::kBFloat16) && in.qr.scalar_type() == qt &&
                      (!in.qb.defined() || in.qb.scalar_type() == qt) && in.qa.stride(3) == 1 && in.qr.stride(2) == 1;
  const auto f32 = [&](const at::Tensor& t) { return t.defined() && !direct ? t.to(at::kFloat).contiguous() : t; };
  at::Tensor qa = keep(f32(in.qa)), qr = keep(f32(in.qr)), qb = keep(f32(in.qb));
  at::Tensor length = keep(in.length.to(at::kInt).contiguous());
  at::Tensor start = keep(in.start.defined() ? in.start.to(at::kInt).contiguous() : at::zeros_like(length));
  at::Tensor modality = s.n_mod == 2 ? keep(in.modality.to(at::kByte).contiguous()) : at::Tensor();
  at::Tensor split_bounds;
  if (s.n_mod == 2 && in.split_bounds.defined()) {
    const at::Tensor& sb = in.split_bounds;
    VLM2MLA_CHECK(sb.scalar_type() == at::kInt && sb.dim() == 2 && sb.size(0) == s.b && sb.size(1) >= 2 &&
                      sb.size(1) <= kMaxSplitSegments + 1 && sb.device() == s.device,
                  ArgumentError, "mla_decode: split_bounds must be int32 [b = ", s.b, ", K + 1] with 1 <= K <= ",
                  kMaxSplitSegments, " on ", s.device, ", got ", c10::toString(sb.scalar_type()), " ", sb.sizes(), " on ", sb.device());
    split_bounds = keep(sb.contiguous());
  }
  at::Tensor image_end;
  if (s.n_mod == 2 && in.image_end.defined()) {
    const at::Tensor& ie = in.image_end;
    VLM2MLA_CHECK(ie.scalar_type() == at::kInt && ie.dim() == 1 && ie.size(0) == s.b && ie.device() == s.device,
                  ArgumentError, "mla_decode: image_end must be int32 [b = ", s.b, "] on ", s.device, ", got ",
                  c10::toString(ie.scalar_type()), " ", ie.sizes(), " on ", ie.device());
    image_end = keep(ie.contiguous());
  }

  MlaDecodeParams& p = pr.params;
  p.format = in.format;
  p.b = int(s.b);
  p.h_q = int(s.h_q);
  p.h_kv = int(s.h_kv);
  p.r_kv = int(s.r_kv);
  p.d_rope = int(s.d_rope);
  p.n_mod = int(s.n_mod);
  p.t_cap = int(s.t_cap);
  p.max_length = int(max_length);
  VLM2MLA_CHECK(in.min_tiles_per_split >= 0 && in.min_tiles_per_split <= 1 << 20, ArgumentError,
                "mla_decode: min_tiles_per_split must be in [0, 2^20], got ", in.min_tiles_per_split);
  p.min_tiles_per_split = int(in.min_tiles_per_split);
  VLM2MLA_CHECK(in.max_tiles_per_split >= 0 && in.max_tiles_per_split <= 1 << 20, ArgumentError,
                "mla_decode: max_tiles_per_split must be in [0, 2^20], got ", in.max_tiles_per_split);
  p.max_tiles_per_split = int(in.max_tiles_per_split);
  p.holds_image = in.holds_image && s.n_mod == 2 ? 1 : 0;
  p.image_first = p.holds_image && in.image_first ? 1 : 0;
  p.specialized = !in.specialized ? 0 : in.grouped_rows ? 2 : 1;
  p.pure_splits = in.pure_splits ? (in.pure_launch ? 2 : 1) : 0;
  p.combine = in.combine;
  p.score_clusters = in.score_clusters ? 1 : 0;
  p.wide_warps = int(in.wide_warps);  // (0, 8 or 16: check_mla_decode_inputs)
  p.wgmma_consumers = int(in.wgmma_consumers);  // (0, 2 or 3: check_mla_decode_inputs)
  p.wgmma_producers = int(in.wgmma_producers);  // (0, 1, 2 or -1: check_mla_decode_inputs)
  p.scale = float(in.scale);
  p.qa = qa.data_ptr();
  p.qr = qr.data_ptr();
  p.qb = qb.defined() ? qb.data_ptr() : nullptr;
  p.q_bf16 = qa.scalar_type() == at::kBFloat16 ? 1 : 0;
  for (int i = 0; i < 3; ++i) p.qa_stride[i] = qa.stride(i);
  for (int i = 0; i < 2; ++i) p.qr_stride[i] = qr.stride(i);
  if (qb.defined()) {
    for (int i = 0; i < 3; ++i) p.qb_stride[i] = qb.stride(i);
  }
  p.start = ptr<int32_t>(start);
  p.length = ptr<int32_t>(length);
  p.modality = ptr<uint8_t>(modality);
  if (split_bounds.defined()) {
    p.split_bounds = ptr<int32_t>(split_bounds);
    p.bound_segments = int(split_bounds.size(1) - 1);
  }
  p.image_end = ptr<int32_t>(image_end);
  switch (in.format) {
    case MlaCacheFormat::kBf16:
      p.latent = ptr<uint16_t>(in.latent);
      p.k_rope = ptr<uint16_t>(in.k_rope);
      break;
    case MlaCacheFormat::kInt4:
      p.group_c = int(s.group_c);
      p.group_r = int(s.group_r);
      p.window = int(in.window);
      p.latent_q = ptr<uint8_t>(in.latent_q.data);
      p.latent_scale = ptr<uint16_t>(in.latent_q.scale);
      p.latent_lo = ptr<uint16_t>(in.latent_q.lo);
      p.k_rope_q = ptr<uint8_t>(in.k_rope_q.data);
      p.k_rope_scale = ptr<uint16_t>(in.k_rope_q.scale);
      p.k_rope_lo = ptr<uint16_t>(in.k_rope_q.lo);
      if (in.window > 0) {
        p.latent_win = ptr<uint16_t>(in.latent_win);
        p.k_rope_win = ptr<uint16_t>(in.k_rope_win);
      }
      break;
  }
  const auto opts = at::TensorOptions().dtype(at::kFloat).device(s.device);
  // The caller's destinations where the combine kernel can store into them (bf16 pairs need 4-byte
  // aligned rows), else new float32 tensors copied over after the run (run_prepared).
  const bool into = in.acc_out.defined() && (in.acc_out.scalar_type() == at::kFloat || bf16_pairs_storable(in.acc_out));
  pr.out.acc = into ? in.acc_out : at::empty({s.n_mod, s.b, s.h_q, s.r_kv}, opts);  // [n_mod, b, h_q, r_kv]
  pr.out.mass = into ? in.mass_out : at::empty({s.n_mod, s.b, s.h_q}, opts);         // [n_mod, b, h_q]
  if (in.acc_out.defined() && !into) {
    pr.copy_acc = in.acc_out;
    pr.copy_mass = in.mass_out;
  }
  p.acc = pr.out.acc.data_ptr();
  p.mass = pr.out.mass.data_ptr();
  p.out_bf16 = pr.out.acc.scalar_type() == at::kBFloat16 ? 1 : 0;
  for (int i = 0; i < 3; ++i) {
    p.acc_stride[i] = pr.out.acc.stride(i);
    p.mass_stride[i] = pr.out.mass.stride(i);
  }
  if (in.w_out.defined()) {  // (shapes, dtypes and contiguity: check_mla_decode_inputs)
    p.w_out = in.w_out.data_ptr();
    p.o_out = in.o_out.data_ptr();
    p.d_h = int(in.w_out.size(2));
    p.w_out_rows = int(in.w_out.size(1));
  }
  pr.plan = plan_mla_decode(p, pr.variant);
  if (pr.plan.combine_out) pr.out.o = in.o_out;
  at::Tensor ws = keep(at::empty({std::max<int64_t>(1, pr.plan.workspace_floats)}, opts));
  p.workspace = ws.data_ptr<float>();
  p.workspace_floats = ws.numel();
}

void run_prepared(const PreparedMlaDecode& pr) {
  c10::cuda::CUDAGuard guard(pr.device);
  launch_mla_decode(pr.params, c10::cuda::getCurrentCUDAStream(pr.device.index()).stream(), pr.variant);
  if (pr.copy_acc.defined() && !pr.plan.combine_out) {  // (the combine wrote o alone: nothing to copy)
    pr.copy_acc.copy_(pr.out.acc);
    pr.copy_mass.copy_(pr.out.mass);
  }
}

}  // namespace

bool mla_decode_has_cuda() { return true; }

MlaDecodeLaunch::MlaDecodeLaunch(const MlaDecodeInputs& in) : impl_(new PreparedMlaDecode) {
  try {
    prepare(in, *impl_);
  } catch (...) {
    delete impl_;
    throw;
  }
}
MlaDecodeLaunch::~MlaDecodeLaunch() { delete impl_; }
void MlaDecodeLaunch::run() const { run_prepared(*impl_); }
const MlaDecodeOutput& MlaDecodeLaunch::out() const { return impl_->out; }
bool MlaDecodeLaunch::tensor_core() const { return impl_->plan.tensor_core; }
const char* MlaDecodeLaunch::kernel() const {
  if (!impl_->plan.tensor_core) return "generic";
  if (impl_->plan.wide) return impl_->plan.wide_cluster ? "wide-cluster" : "wide";
  if (impl_->plan.wgmma) {
    const MlaDecodePlan& pl = impl_->plan;
    return pl.wgmma_producers == 0   ? "wgmma-0p2c"
           : pl.wgmma_producers == 2 ? "wgmma-2p2c"
           : pl.wgmma_consumers == 3 ? "wgmma-1p3c"
                                     : "wgmma-1p2c";
  }
  if (impl_->plan.warp_rows) {  // by the instance taken (the plan's `specialized` level)
    static const char* const kRows[] = {"tc-rows", "tc-rows-128", "tc-rows-128g"};
    static const char* const kRowsMod[] = {"tc-rows-mod", "tc-rows-mod-128", "tc-rows-mod-128g"};
    return (impl_->plan.modality_ctas ? kRowsMod : kRows)[impl_->plan.specialized];
  }
  return impl_->variant == MlaDecodeVariant::kTensorCoreCodes ? "tc-codes" : "tc-keys";
}
int MlaDecodeLaunch::splits() const { return impl_->plan.splits + impl_->plan.ring_splits; }
int MlaDecodeLaunch::column_splits() const { return impl_->plan.column_splits; }
bool MlaDecodeLaunch::rope_scores() const { return impl_->plan.rope_scores; }
bool MlaDecodeLaunch::stores_in_place() const { return !impl_->copy_acc.defined(); }
bool MlaDecodeLaunch::warp_combine() const { return impl_->plan.warp_combine; }
bool MlaDecodeLaunch::combine_out() const { return impl_->plan.combine_out; }
const std::string& MlaDecodeLaunch::why_not_combine_out() const { return impl_->plan.why_not_combine_out; }
int MlaDecodeLaunch::combine_chunks() const { return impl_->plan.combine_chunks; }
int MlaDecodeLaunch::score_ks() const { return impl_->plan.score_ks; }
int MlaDecodeLaunch::wide_warps() const { return impl_->plan.wide_warps; }
bool MlaDecodeLaunch::pure_launch() const { return impl_->plan.pure_launch; }
bool MlaDecodeLaunch::image_first() const { return impl_->plan.image_first; }
int MlaDecodeLaunch::bound_segments() const { return impl_->plan.bound_segments; }

#else  // no CUDA kernels in this build

struct PreparedMlaDecode {};

bool mla_decode_has_cuda() { return false; }

MlaDecodeLaunch::MlaDecodeLaunch(const MlaDecodeInputs&) : impl_(nullptr) {
  throw ArgumentError("mla_decode: CUDA asked for, but this build has no CUDA");
}
MlaDecodeLaunch::~MlaDecodeLaunch() = default;
void MlaDecodeLaunch::run() const {}
const MlaDecodeOutput& MlaDecodeLaunch::out() const {
  static const MlaDecodeOutput none;
  return none;
}
bool MlaDecodeLaunch::tensor_core() const { return false; }
const char* MlaDecodeLaunch::kernel() const { return "none"; }
int MlaDecodeLaunch::splits() const { return 0; }
int MlaDecodeLaunch::column_splits() const { return 1; }
bool MlaDecodeLaunch::rope_scores() const { return false; }
bool MlaDecodeLaunch::stores_in_place() const { return false; }
bool MlaDecodeLaunch::warp_combine() const { return false; }
bool MlaDecodeLaunch::combine_out() const { return false; }
const std::string& MlaDecodeLaunch::why_not_combine_out() const {
  static const std::string none;
  return none;
}
int MlaDecodeLaunch::combine_chunks() const { return 1; }
int MlaDecodeLaunch::score_ks() const { return 1; }
int MlaDecodeLaunch::wide_warps() const { return 0; }
bool MlaDecodeLaunch::pure_launch() const { return false; }
bool MlaDecodeLaunch::image_first() const { return false; }
int MlaDecodeLaunch::bound_segments() const { return 0; }

#endif

const char* mla_decode_variant_name(MlaDecodeVariant v) {
  switch (v) {
    case MlaDecodeVariant::kAuto: return "auto";
    case MlaDecodeVariant::kTensorCore: return "keys";
    case MlaDecodeVariant::kGeneric: return "generic";
    case MlaDecodeVariant::kTensorCoreCodes: return "codes";
    case MlaDecodeVariant::kTensorCoreWarpRows: return "rows";
    case MlaDecodeVariant::kTensorCoreWarpRowsJoint: return "rows-joint";
    case MlaDecodeVariant::kWide: return "wide";
    case MlaDecodeVariant::kWideCluster: return "wide-cluster";
    case MlaDecodeVariant::kWgmma: return "wgmma";
  }
  return "?";
}

MlaDecodeVariant parse_mla_decode_variant(const std::string& text, const std::string& what) {
  return parse_choice(text, what, "decode kernel",
                      std::array{MlaDecodeVariant::kAuto, MlaDecodeVariant::kTensorCoreWarpRows,
                                 MlaDecodeVariant::kTensorCoreWarpRowsJoint, MlaDecodeVariant::kTensorCore,
                                 MlaDecodeVariant::kTensorCoreCodes, MlaDecodeVariant::kWide,
                                 MlaDecodeVariant::kWideCluster, MlaDecodeVariant::kWgmma, MlaDecodeVariant::kGeneric},
                      mla_decode_variant_name);
}

const char* mla_decode_combine_name(MlaDecodeCombine c) {
  switch (c) {
    case MlaDecodeCombine::kAuto: return "auto";
    case MlaDecodeCombine::kBlock: return "block";
    case MlaDecodeCombine::kWarp: return "warp";
    case MlaDecodeCombine::kColumns: return "columns";
  }
  return "?";
}

MlaDecodeCombine parse_mla_decode_combine(const std::string& text, const std::string& what) {
  return parse_choice(text, what, "combine layout",
                      std::array{MlaDecodeCombine::kAuto, MlaDecodeCombine::kBlock, MlaDecodeCombine::kColumns,
                                 MlaDecodeCombine::kWarp},
                      mla_decode_combine_name);
}

MlaDecodeCombine model_decode_combine() {
  static const MlaDecodeCombine c = [] {
    const char* env = std::getenv("VLM2MLA_DECODE_COMBINE");
    return env && *env ? parse_mla_decode_combine(env, "VLM2MLA_DECODE_COMBINE") : MlaDecodeCombine::kAuto;
  }();
  return c;
}

bool model_decode_specialized() {
  static EnvSwitch on(kEnvDecodeSpecialized);
  return on.enabled();
}

bool model_decode_grouped_rows() {
  static EnvSwitch on(kEnvDecodeGroupedRows);
  return on.enabled();
}

bool model_decode_pure_splits() {
  static EnvSwitch on(kEnvDecodePureSplits);
  return on.enabled();
}

bool model_decode_segments() {
  static EnvSwitch on(kEnvDecodeSegments);
  return on.enabled();
}

bool model_decode_image_end() {
  static EnvSwitch on(kEnvDecodeImageEnd);
  return on.enabled();
}

bool model_decode_pure_launch() {
  static EnvSwitch on(kEnvDecodePureLaunch);
  return on.enabled();
}

bool model_decode_image_first() {
  static EnvSwitch on(kEnvDecodeImageFirst);
  return on.enabled();
}

bool model_decode_score_clusters() {
  static EnvSwitch on(kEnvDecodeScoreClusters);
  return on.enabled();
}

int64_t parse_decode_tiles(const char* name, const char* value) {
  if (value == nullptr || *value == '\0') return 0;
  char* end = nullptr;
  errno = 0;
  const long long v = std::strtoll(value, &end, 10);
  VLM2MLA_CHECK(end != value && *end == '\0' && errno == 0 && v >= 0 && v <= (1 << 20), ArgumentError, name,
                "='", value, "': expected a whole number of 64-token tiles in [0, 2^20] (0: the plan's own)");
  return int64_t(v);
}

int64_t model_decode_min_tiles() {
  static const int64_t n = parse_decode_tiles(kEnvDecodeMinTiles, std::getenv(kEnvDecodeMinTiles));
  return n;
}

int64_t model_decode_max_tiles() {
  static const int64_t n = parse_decode_tiles(kEnvDecodeMaxTiles, std::getenv(kEnvDecodeMaxTiles));
  return n;
}

// A count setting of the decode kernels from the environment: unset or "" is 0 (the plan's own), else one of `allowed`
// as written ("0" among them), else ArgumentError naming the variable, the value and what was `expected`.
int64_t parse_count_setting(const char* name, const char* value, std::initializer_list<const char*> allowed,
                            const char* expected) {
  if (value == nullptr || *value == '\0') return 0;
  const std::string v(value);
  const bool ok = std::any_of(allowed.begin(), allowed.end(), [&](const char* a) { return v == a; });
  VLM2MLA_CHECK(ok, ArgumentError, name, "='", v, "': expected ", expected, " (0 or unset: the plan's own)");
  return std::stoll(v);
}

int64_t parse_decode_wide_warps(const char* value) {
  return parse_count_setting("VLM2MLA_DECODE_WIDE_WARPS", value, {"0", "8", "16"}, "8 or 16 warps a CTA");
}

int64_t model_decode_wide_warps() {
  static const int64_t n = parse_decode_wide_warps(std::getenv("VLM2MLA_DECODE_WIDE_WARPS"));
  return n;
}

int64_t parse_decode_wgmma_consumers(const char* value) {
  return parse_count_setting("VLM2MLA_DECODE_WGMMA_CONSUMERS", value, {"0", "2", "3"}, "2 or 3 consumer warpgroups");
}

int64_t model_decode_wgmma_consumers() {
  static const int64_t n = parse_decode_wgmma_consumers(std::getenv("VLM2MLA_DECODE_WGMMA_CONSUMERS"));
  return n;
}

int64_t parse_decode_wgmma_producers(const char* value) {
  if (value != nullptr && std::string(value) == "none") return -1;  // the consumers dequantize their own tiles
  return parse_count_setting("VLM2MLA_DECODE_WGMMA_PRODUCERS", value, {"0", "1", "2"},
                             "1 or 2 producer warpgroups, or none");
}

int64_t model_decode_wgmma_producers() {
  static const int64_t n = parse_decode_wgmma_producers(std::getenv("VLM2MLA_DECODE_WGMMA_PRODUCERS"));
  return n;
}

MlaDecodeVariant model_decode_variant() {
  static const MlaDecodeVariant v = [] {
    const char* env = std::getenv("VLM2MLA_DECODE_KERNEL");
    return env ? parse_mla_decode_variant(env, "VLM2MLA_DECODE_KERNEL") : MlaDecodeVariant::kAuto;
  }();
  return v;
}

namespace {
struct KernelsUsed {
  std::mutex mu;
  std::set<std::string, std::less<>> names;  // transparent: a name already noted is found without a copy
};
KernelsUsed& kernels_used() {
  static KernelsUsed k;
  return k;
}
void note_kernel_used(const char* name) {  // once per mla_decode call: no allocation once the name is known
  KernelsUsed& k = kernels_used();
  std::lock_guard<std::mutex> lock(k.mu);
  if (k.names.find(std::string_view(name)) == k.names.end()) k.names.emplace(name);
}
}  // namespace

std::vector<std::string> take_mla_decode_kernels_used() {
  KernelsUsed& k = kernels_used();
  std::lock_guard<std::mutex> lock(k.mu);
  std::vector<std::string> out(k.names.begin(), k.names.end());
  k.names.clear();
  return out;
}

bool bf16_pairs_storable(const at::Tensor& t) {
  if (reinterpret_cast<uintptr_t>(t.data_ptr()) % 4 != 0) return false;
  for (int64_t d = 0; d + 1 < t.dim(); ++d) {
    if (t.stride(d) % 2 != 0 && t.size(d) > 1) return false;
  }
  return t.dim() == 0 || t.stride(-1) == 1 || t.size(-1) == 1;
}

MlaDecodeOutput mla_decode(const MlaDecodeInputs& in) {
  const MlaDecodeShape s = check_mla_decode_inputs(in);
  if (s.device.is_cpu()) {
    note_kernel_used("reference");
    MlaDecodeOutput out = mla_decode_ref(in, at::kFloat);
    if (!in.acc_out.defined()) return out;
    in.acc_out.copy_(out.acc);
    in.mass_out.copy_(out.mass);
    return {in.acc_out, in.mass_out, {}};
  }
#ifdef VLM2MLA_WITH_CUDA_KERNELS
  MlaDecodeLaunch launch(in);
  note_kernel_used(launch.kernel());
  if (launch.combine_out()) note_kernel_used("combine-out");  // (the combine took the output product too)
  launch.run();
  if (in.acc_out.defined()) return {in.acc_out, in.mass_out, launch.out().o};
  return launch.out();
#else
  throw ArgumentError("mla_decode: CUDA asked for, but this build has no CUDA");
#endif
}

namespace {
EnvSwitch rms_norm_vectors_switch(kEnvRmsNormVectors);
}  // namespace
void set_rms_norm_vectors(bool on) { rms_norm_vectors_switch.set(on); }
bool rms_norm_vectors_enabled() { return rms_norm_vectors_switch.enabled(); }
#ifdef VLM2MLA_WITH_CUDA_KERNELS
void set_programmatic_launch(bool on) { set_programmatic_launches(on); }
bool programmatic_launch_enabled() { return programmatic_launches(); }
#else
namespace {
EnvSwitch programmatic_launch_switch(kEnvPdl);  // (no kernels to launch: reported as the environment sets it)
}  // namespace
void set_programmatic_launch(bool on) { programmatic_launch_switch.set(on); }
bool programmatic_launch_enabled() { return programmatic_launch_switch.enabled(); }
#endif

bool fused_rms_norm_usable(const at::Tensor& x, const at::Tensor& weight) {
#ifdef VLM2MLA_WITH_CUDA_KERNELS
  const at::ScalarType t = x.scalar_type();
  return x.defined() && weight.defined() && x.is_cuda() && weight.device() == x.device() && x.dim() >= 1 &&
         weight.dim() == 1 && weight.size(0) == x.size(-1) && weight.scalar_type() == t &&
         (t == at::kBFloat16 || t == at::kHalf || t == at::kFloat) && !x.requires_grad() &&
         !weight.requires_grad();  // no backward
#else
  (void)x, (void)weight;
  return false;
#endif
}

at::Tensor fused_rms_norm(const at::Tensor& x, const at::Tensor& weight, double eps) {
  VLM2MLA_CHECK(fused_rms_norm_usable(x, weight), ArgumentError,
                "fused_rms_norm: needs a CUDA build and CUDA tensors x [..., d], weight [d] of one dtype "
                "(bf16, fp16, float32); got x ", x.sizes(), " ", x.scalar_type(), " on ", x.device(), ", weight ",
                weight.sizes(), " ", weight.scalar_type());
#ifdef VLM2MLA_WITH_CUDA_KERNELS
  c10::cuda::CUDAGuard guard(x.device());
  at::Tensor xc = x.contiguous(), wc = weight.contiguous();
  at::Tensor out = at::empty_like(xc);
  const int64_t d = x.size(-1);
  if (xc.numel() == 0) return out;
  launch_rms_norm(xc.data_ptr(), wc.data_ptr(), out.data_ptr(), xc.numel() / d, d, float(eps),
                  element_dtype(x.scalar_type()), c10::cuda::getCurrentCUDAStream(x.device().index()).stream(),
                  rms_norm_vectors_enabled());
  return out;
#else
  (void)eps;
  return {};
#endif
}

bool fused_add_rms_norm_usable(const at::Tensor& x, const at::Tensor& r, const at::Tensor& weight) {
  return fused_rms_norm_usable(x, weight) && r.defined() && r.device() == x.device() &&
         r.scalar_type() == x.scalar_type() && r.sizes() == x.sizes() && !r.requires_grad();
}

std::pair<at::Tensor, at::Tensor> fused_add_rms_norm(const at::Tensor& x, const at::Tensor& r, const at::Tensor& weight,
                                                     double eps) {
  VLM2MLA_CHECK(fused_add_rms_norm_usable(x, r, weight), ArgumentError,
                "fused_add_rms_norm: needs a CUDA build and CUDA tensors x and r [..., d] of one shape, weight [d], "
                "of one dtype (bf16, fp16, float32); got x ", x.sizes(), " ", x.scalar_type(), " on ", x.device(),
                ", r ", r.sizes(), " ", r.scalar_type(), ", weight ", weight.sizes(), " ", weight.scalar_type());
#ifdef VLM2MLA_WITH_CUDA_KERNELS
  c10::cuda::CUDAGuard guard(x.device());
  at::Tensor xc = x.contiguous(), rc = r.contiguous(), wc = weight.contiguous();
  at::Tensor sum = at::empty_like(xc), out = at::empty_like(xc);
  const int64_t d = x.size(-1);
  if (xc.numel() == 0) return {sum, out};
  launch_add_rms_norm(xc.data_ptr(), rc.data_ptr(), wc.data_ptr(), sum.data_ptr(), out.data_ptr(), xc.numel() / d, d,
                      float(eps), element_dtype(x.scalar_type()),
                      c10::cuda::getCurrentCUDAStream(x.device().index()).stream(), rms_norm_vectors_enabled());
  return {sum, out};
#else
  (void)eps;
  return {};
#endif
}

const char* fused_silu_mul_unusable(const at::Tensor& gate, const at::Tensor& up) {
#ifdef VLM2MLA_WITH_CUDA_KERNELS
  if (!gate.defined() || !up.defined()) return "gate and up must be defined";
  if (!gate.is_cuda()) return "gate is not a CUDA tensor";
  if (up.device() != gate.device()) return "up is not on gate's device";
  const at::ScalarType t = gate.scalar_type();
  if (up.scalar_type() != t) return "gate and up differ in dtype";
  if (t != at::kBFloat16 && t != at::kHalf && t != at::kFloat) return "the dtype is not bf16, fp16 or float32";
  if (gate.dim() < 1 || gate.sizes() != up.sizes()) return "gate and up differ in shape";
  if (gate.requires_grad() || up.requires_grad()) return "a tensor requires grad (no backward)";
  return nullptr;
#else
  (void)gate, (void)up;
  return "this build has no CUDA kernels";
#endif
}

at::Tensor fused_silu_mul(const at::Tensor& gate, const at::Tensor& up) {
  const char* why = fused_silu_mul_unusable(gate, up);
  VLM2MLA_CHECK(!why, ArgumentError, "fused_silu_mul: ", why,
                " (it needs a CUDA build and CUDA tensors gate and up of one shape and dtype: bf16, fp16 or float32); "
                "got gate ", gate.sizes(), " ", gate.scalar_type(), " on ", gate.device(), ", up ", up.sizes(), " ",
                up.scalar_type());
#ifdef VLM2MLA_WITH_CUDA_KERNELS
  c10::cuda::CUDAGuard guard(gate.device());
  const int64_t d = gate.size(-1);
  at::Tensor out = at::empty(gate.sizes(), gate.options().memory_format(at::MemoryFormat::Contiguous));
  if (out.numel() == 0) return out;
  // [rows, d] views where the rows are evenly strided (the halves of a [..., 2d] product), else copies
  at::Tensor g = gate.reshape({-1, d}), u = up.reshape({-1, d});
  if (g.stride(1) != 1) g = g.contiguous();
  if (u.stride(1) != 1) u = u.contiguous();
  launch_silu_mul(g.data_ptr(), g.stride(0), u.data_ptr(), u.stride(0), out.data_ptr(), g.size(0), d,
                  element_dtype(gate.scalar_type()), c10::cuda::getCurrentCUDAStream(gate.device().index()).stream());
  return out;
#else
  return {};
#endif
}

namespace {
std::atomic<int64_t> gemv_launches{0}, gemv_silu_mul_launches{0};

// Why a SiLU x up projection's weight cannot be read as the gate's rows then up's, or nullptr (the one-row and the
// few-row kernels' SiLU forms, after their plain form's checks).
const char* odd_halves(const at::Tensor& weight) {
  return weight.size(0) % 2 != 0 ? "the weight's rows are odd (the gate's rows then up's: two halves)" : nullptr;
}

// ArgumentError from the projection entry point fn where its kernel refuses (why not null): why, what the kernel
// needs, and x's and the weight's sizes.
void check_projection(const char* fn, const char* why, const char* needs, const at::Tensor& x,
                      const at::Tensor& weight) {
  VLM2MLA_CHECK(!why, ArgumentError, fn, ": ", why, " (", needs, "); got x ",
                x.defined() ? x.sizes() : at::IntArrayRef{}, ", weight ",
                weight.defined() ? weight.sizes() : at::IntArrayRef{});
}

#ifdef VLM2MLA_WITH_CUDA_KERNELS
// A projection kernel's output for x [..., in]: [..., n], contiguous, on x's device
at::Tensor projection_output(const at::Tensor& x, int64_t n) {
  std::vector<int64_t> sizes = x.sizes().vec();
  sizes.back() = n;
  return at::empty(sizes, x.options().memory_format(at::MemoryFormat::Contiguous));
}

// y [..., n] = launch(x, weight, bias) on x's stream, by one of the one-row kernel's launches (launch_gemv,
// launch_gemv_silu_mul: the same arguments, n the results of y); counted in fused_gemv_launches()
at::Tensor run_gemv(decltype(&launch_gemv) launch, const at::Tensor& x, const at::Tensor& weight,
                    const at::Tensor& bias, int64_t n) {
  c10::cuda::CUDAGuard guard(x.device());
  at::Tensor y = projection_output(x, n);
  launch(x.data_ptr(), weight.data_ptr(), bias.defined() ? bias.data_ptr() : nullptr, y.data_ptr(), n, weight.size(1),
         element_dtype(x.scalar_type()), c10::cuda::getCurrentCUDAStream(x.device().index()).stream());
  gemv_launches.fetch_add(1);
  return y;
}
#endif
}  // namespace

int64_t fused_gemv_launches() { return gemv_launches.load(); }

#ifdef VLM2MLA_WITH_CUDA_KERNELS
namespace {
// What gemv_unusable and gemm_rows_unusable share: everything but the rows of x and the kernel's own sizes.
const char* projection_unusable(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias) {
  if (!x.defined() || !weight.defined()) return "x and the weight must be defined";
  if (!x.is_cuda()) return "x is not a CUDA tensor";
  if (weight.device() != x.device()) return "the weight is not on x's device";
  const at::ScalarType t = x.scalar_type();
  if (t != at::kBFloat16 && t != at::kHalf) return "the dtype is not bf16 or fp16";
  if (weight.scalar_type() != t) return "x and the weight differ in dtype";
  if (weight.dim() != 2 || !weight.is_contiguous()) return "the weight is not a contiguous [out, in] matrix";
  if (x.dim() < 1 || x.size(-1) != weight.size(1)) return "x's last size is not the weight's in-features";
  if (bias.defined() && (bias.device() != x.device() || bias.scalar_type() != t || bias.dim() != 1 ||
                         bias.size(0) != weight.size(0) || !bias.is_contiguous())) {
    return "the bias is not a contiguous [out] tensor of x's dtype and device";
  }
  if (x.requires_grad() || weight.requires_grad() || (bias.defined() && bias.requires_grad())) {
    return "a tensor requires grad (no backward)";
  }
  return nullptr;
}
}  // namespace
#endif

const char* gemv_unusable(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias) {
#ifdef VLM2MLA_WITH_CUDA_KERNELS
  if (const char* why = projection_unusable(x, weight, bias)) return why;
  if (x.numel() != x.size(-1)) return "x holds more than one row";
  if (x.stride(-1) != 1) return "x's row is not contiguous";
  return gemv_unsupported(weight.size(0), weight.size(1), element_dtype(x.scalar_type()), x.data_ptr(),
                          weight.data_ptr());
#else
  (void)x, (void)weight, (void)bias;
  return "this build has no CUDA kernels";
#endif
}

at::Tensor fused_gemv(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias) {
  const char* why = gemv_unusable(x, weight, bias);
  check_projection("fused_gemv", why,
                   "it needs a CUDA build, x [..., in] holding one row, a contiguous weight [out, in] and bias [out] "
                   "or none, of one dtype (bf16 or fp16) on one device, in a multiple of 8 up to 24,576",
                   x, weight);
#ifdef VLM2MLA_WITH_CUDA_KERNELS
  return run_gemv(launch_gemv, x, weight, bias, weight.size(0));
#else
  return {};
#endif
}

int64_t fused_gemv_silu_mul_launches() { return gemv_silu_mul_launches.load(); }

const char* gemv_silu_mul_unusable(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias) {
  if (const char* why = gemv_unusable(x, weight, bias)) return why;
  return odd_halves(weight);
}

at::Tensor fused_gemv_silu_mul(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias) {
  const char* why = gemv_silu_mul_unusable(x, weight, bias);
  check_projection("fused_gemv_silu_mul", why,
                   "x [..., in] one row, a contiguous weight [2 n, in]: the gate's rows then up's, bias [2 n] or "
                   "none, as fused_gemv",
                   x, weight);
#ifdef VLM2MLA_WITH_CUDA_KERNELS
  at::Tensor y = run_gemv(launch_gemv_silu_mul, x, weight, bias, weight.size(0) / 2);
  gemv_silu_mul_launches.fetch_add(1);
  return y;
#else
  return {};
#endif
}

namespace {
std::atomic<int64_t> gemm_rows_launches{0};
}  // namespace

int64_t fused_gemm_rows_launches() { return gemm_rows_launches.load(); }

const char* gemm_rows_unusable(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias) {
#ifdef VLM2MLA_WITH_CUDA_KERNELS
  if (const char* why = projection_unusable(x, weight, bias)) return why;
  if (!x.is_contiguous()) return "x's rows do not lie end to end (x is not contiguous)";
  const int64_t rows = x.size(-1) > 0 ? x.numel() / x.size(-1) : 0;
  return gemm_rows_unsupported(rows, weight.size(0), weight.size(1), element_dtype(x.scalar_type()), x.data_ptr(),
                               weight.data_ptr());
#else
  (void)x, (void)weight, (void)bias;
  return "this build has no CUDA kernels";
#endif
}

const char* gemm_rows_silu_mul_unusable(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias) {
  if (const char* why = gemm_rows_unusable(x, weight, bias)) return why;
  return odd_halves(weight);
}

namespace {
#ifdef VLM2MLA_WITH_CUDA_KERNELS
// y [..., n] = launch(x, weight, bias) on x's stream (launch_gemm_rows or launch_gemm_rows_silu_mul, n the results
// of a row of y); counted in fused_gemm_rows_launches()
at::Tensor run_gemm_rows(decltype(&launch_gemm_rows) launch, const at::Tensor& x, const at::Tensor& weight,
                         const at::Tensor& bias, int64_t n) {
  c10::cuda::CUDAGuard guard(x.device());
  at::Tensor y = projection_output(x, n);
  launch(x.data_ptr(), weight.data_ptr(), bias.defined() ? bias.data_ptr() : nullptr, y.data_ptr(),
         x.numel() / x.size(-1), n, weight.size(1), element_dtype(x.scalar_type()),
         c10::cuda::getCurrentCUDAStream(x.device().index()).stream());
  gemm_rows_launches.fetch_add(1);
  return y;
}
#endif
}  // namespace

at::Tensor fused_gemm_rows(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias) {
  const char* why = gemm_rows_unusable(x, weight, bias);
  check_projection("fused_gemm_rows", why,
                   "it needs a CUDA build, a contiguous x [..., in] of 1 to 16 rows, a contiguous weight [out, in] "
                   "and bias [out] or none, of one dtype (bf16 or fp16) on one device, in a multiple of 8",
                   x, weight);
#ifdef VLM2MLA_WITH_CUDA_KERNELS
  return run_gemm_rows(launch_gemm_rows, x, weight, bias, weight.size(0));
#else
  return {};
#endif
}

at::Tensor fused_gemm_rows_silu_mul(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias) {
  const char* why = gemm_rows_silu_mul_unusable(x, weight, bias);
  check_projection("fused_gemm_rows_silu_mul", why,
                   "a contiguous x [..., in] of 1 to 16 rows, a contiguous weight [2 n, in]: the gate's rows then "
                   "up's, bias [2 n] or none, as fused_gemm_rows",
                   x, weight);
#ifdef VLM2MLA_WITH_CUDA_KERNELS
  return run_gemm_rows(launch_gemm_rows_silu_mul, x, weight, bias, weight.size(0) / 2);
#else
  return {};
#endif
}

#ifdef VLM2MLA_WITH_CUDA_KERNELS
namespace {
// src's sizes and strides with the dimensions of size 1 dropped and those that lie end to end merged (dimension i
// into i + 1 where stride_i = size_{i+1} stride_{i+1}), outermost first.
std::vector<std::pair<int64_t, int64_t>> merged_dims(const at::Tensor& src) {
  std::vector<std::pair<int64_t, int64_t>> dims;
  for (int64_t i = src.dim() - 1; i >= 0; --i) {
    if (src.size(i) == 1) continue;
    if (!dims.empty() && src.stride(i) == dims.back().first * dims.back().second) {
      dims.back().first *= src.size(i);
    } else {
      dims.emplace_back(src.size(i), src.stride(i));
    }
  }
  std::reverse(dims.begin(), dims.end());
  return dims;
}
}  // namespace
#endif

const char* fused_row_copy_unusable(const at::Tensor& src) {
#ifdef VLM2MLA_WITH_CUDA_KERNELS
  if (!src.defined()) return "the tensor must be defined";
  if (!src.is_cuda()) return "the tensor is not a CUDA tensor";
  const at::ScalarType t = src.scalar_type();
  if (t != at::kBFloat16 && t != at::kHalf && t != at::kFloat) return "the dtype is not bf16, fp16 or float32";
  if (src.requires_grad()) return "the tensor requires grad (no backward)";
  if (src.is_contiguous() || src.numel() == 0) return nullptr;
  const auto dims = merged_dims(src);
  if (dims.size() > 4) return "more than 4 dimensions once those end to end are merged";
  if (dims.back().second != 1) return "the innermost dimension is not contiguous";
  return nullptr;
#else
  (void)src;
  return "this build has no CUDA kernels";
#endif
}

#ifdef VLM2MLA_WITH_CUDA_KERNELS
namespace {
// t's rows are whole 16-byte pieces on 16-byte bounds: its last dim contiguous and a whole number of pieces, its
// other strides too, its data 16-byte aligned (what the kernels' 16-byte loads and stores take).
bool whole_pieces(const at::Tensor& t) {
  const int64_t v = 16 / t.element_size();
  if (t.stride(-1) != 1 || (reinterpret_cast<uintptr_t>(t.data_ptr()) & 15u) != 0) return false;
  for (int64_t i = 0; i + 1 < t.dim(); ++i)
    if (t.stride(i) % v != 0) return false;
  return t.size(-1) % v == 0;
}

// A decode step's image mask, as the fused cache writes take it: bool [b, 1] (the step token is an image).
bool image_mask_fits(const at::Tensor& image, int64_t b) {
  return image.scalar_type() == at::kBool && image.dim() == 2 && image.size(0) == b && image.size(1) == 1;
}

RopeParams rope_params(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin, const at::Tensor& out);

// The write kernels' view of a WriteRope (checked by write_rope_unusable): the key's rotation over k_rope's rows, the
// queries' into the returned tensor.
at::Tensor write_rope_params(const at::Tensor& k_rope, const WriteRope& r, RowRope& k, RopeParams& q, int64_t& pairs) {
  k.x = k_rope.data_ptr();
  k.x_stride = k_rope.stride(0);
  k.cos = r.cos.data_ptr();
  k.sin = r.sin.data_ptr();
  for (int i = 0; i < 3; ++i) {  // [b, 1, h_kv, R]: dims 0, 2, 3
    const int d = i == 0 ? 0 : i + 1;
    k.cos_stride[i] = r.cos.stride(d);
    k.sin_stride[i] = r.sin.stride(d);
  }
  k.dims = r.cos.size(3);
  at::Tensor out = at::empty_like(r.q, at::MemoryFormat::Preserve);  // as fused_rope_pair's
  q = rope_params(r.q, r.cos_q, r.sin_q, out);
  pairs = r.q.numel() / 2;
  return out;
}
}  // namespace
#endif

const char* write_rope_unusable(const at::Tensor& k_rope, const WriteRope& r) {
#ifdef VLM2MLA_WITH_CUDA_KERNELS
  if (!k_rope.defined() || !r.cos.defined() || !r.sin.defined()) return "the RoPE key, its cos and its sin must be defined";
  if (const char* why = fused_rope_unusable(r.q, r.cos_q, r.sin_q)) return why;
  for (const at::Tensor* t : {&r.cos, &r.sin}) {
    if (t->device() != k_rope.device() || t->scalar_type() != k_rope.scalar_type())
      return "the key's cos or sin differs from its rows in device or dtype";
    if (t->requires_grad()) return "a tensor requires grad (no backward)";
  }
  if (r.q.device() != k_rope.device() || r.q.scalar_type() != k_rope.scalar_type())
    return "the queries differ from the key's rows in device or dtype";
  if (k_rope.dim() != 3 || k_rope.size(1) != 1 || k_rope.stride(2) != 1) return "the key's rows are not [b, 1, n] with n contiguous";
  const int64_t b = k_rope.size(0), n = k_rope.size(2);
  for (const at::Tensor* t : {&r.cos, &r.sin})
    if (t->dim() != 4 || t->size(0) != b || t->size(1) != 1 || t->size(2) * t->size(3) != n || t->size(3) % 2 != 0)
      return "the key's cos and sin are not [b, 1, h_kv, R] with h_kv R its row and R even";
  if (r.sin.sizes() != r.cos.sizes()) return "the key's cos and sin differ in shape";
  return nullptr;
#else
  (void)k_rope, (void)r;
  return "this build has no CUDA kernels";
#endif
}

const char* fused_head_product_unusable(const at::Tensor& x, const at::Tensor& w) {
#ifdef VLM2MLA_WITH_CUDA_KERNELS
  if (!x.defined() || !w.defined()) return "both tensors must be defined";
  if (!x.is_cuda() || !w.is_cuda() || x.device() != w.device()) return "x and w are not CUDA tensors on one device";
  const at::ScalarType t = x.scalar_type();
  if (t != at::kBFloat16 && t != at::kHalf) return "the dtype is not bf16 or fp16 (tensor cores)";
  if (w.scalar_type() != t) return "x and w differ in dtype";
  if (x.requires_grad() || w.requires_grad()) return "a tensor requires grad (no backward)";
  if (x.dim() != 4 || w.dim() != 3 || x.size(1) != w.size(0) || x.size(3) != w.size(1))
    return "the shapes do not match x [b, h, m, d] and w [h, d, n]";
  if (x.size(3) == 0) return "the inner size is 0";
  if (!w.is_contiguous()) return "w is not contiguous";
  if (x.stride(3) != 1) return "x's last dimension is not contiguous";
  if (!whole_pieces(x) || !whole_pieces(w)) return "d, n or x's strides are not whole 16-byte pieces on 16-byte bounds";
  return nullptr;
#else
  (void)x;
  (void)w;
  return "this build has no CUDA kernels";
#endif
}

at::Tensor fused_head_product(const at::Tensor& x, const at::Tensor& w) {
  const char* why = fused_head_product_unusable(x, w);
  VLM2MLA_CHECK(!why, ArgumentError, "fused_head_product: ", why, "; got x ",
                x.defined() ? c10::str(x.sizes(), " strides ", x.strides(), " ", x.scalar_type(), " on ", x.device())
                            : std::string("undefined"),
                " and w ",
                w.defined() ? c10::str(w.sizes(), " ", w.scalar_type(), " on ", w.device()) : std::string("undefined"));
#ifdef VLM2MLA_WITH_CUDA_KERNELS
  c10::cuda::CUDAGuard guard(x.device());
  at::Tensor y = at::empty({x.size(0), x.size(1), x.size(2), w.size(2)}, x.options().memory_format(at::MemoryFormat::Contiguous));
  HeadProductParams p;
  p.x = x.data_ptr();
  for (int i = 0; i < 3; ++i) p.x_stride[i] = x.stride(i);
  p.w = w.data_ptr();
  p.y = y.data_ptr();
  p.b = x.size(0);
  p.h = x.size(1);
  p.m = x.size(2);
  p.d = x.size(3);
  p.n = w.size(2);
  if (y.numel() > 0)
    launch_head_product(p, element_dtype(x.scalar_type()), c10::cuda::getCurrentCUDAStream(x.device().index()).stream());
  return y;
#else
  return {};
#endif
}

const char* fused_latent_write_unusable(const at::Tensor& latent, const at::Tensor& latent_image,
                                        const at::Tensor& image, const at::Tensor& k_rope, const at::Tensor& pos,
                                        const at::Tensor& latent_store, const at::Tensor& rope_store,
                                        const WriteRope* rope) {
#ifdef VLM2MLA_WITH_CUDA_KERNELS
  if (rope)
    if (const char* why = write_rope_unusable(k_rope, *rope)) return why;
  if (!latent.defined() || !k_rope.defined() || !pos.defined() || !latent_store.defined() || !rope_store.defined())
    return "the rows, the position and both stores must be defined";
  if (latent_image.defined() != image.defined()) return "the image set's rows and the image mask go together";
  const at::Device dev = latent.device();
  for (const at::Tensor* t : {&latent, &latent_image, &image, &k_rope, &pos, &latent_store, &rope_store}) {
    if (!t->defined()) continue;
    if (!t->is_cuda() || t->device() != dev) return "the tensors are not CUDA tensors on one device";
    if (t->requires_grad()) return "a tensor requires grad (no backward)";
  }
  const at::ScalarType dt = latent_store.scalar_type();
  if (dt != at::kBFloat16 && dt != at::kHalf && dt != at::kFloat) return "the stores are not bf16, fp16 or float32";
  if (rope_store.scalar_type() != dt || latent.scalar_type() != dt || k_rope.scalar_type() != dt ||
      (latent_image.defined() && latent_image.scalar_type() != dt))
    return "the rows' and the stores' dtypes differ";
  if (pos.scalar_type() != at::kLong || pos.numel() != 1) return "pos must be one int64";
  const int64_t b = latent_store.size(0);
  auto rows_fit = [&](const at::Tensor& rows, const at::Tensor& store) {
    return rows.dim() == 3 && store.dim() == 3 && rows.size(0) == b && store.size(0) == b && rows.size(1) == 1 &&
           rows.size(2) == store.size(2);
  };
  if (!rows_fit(latent, latent_store) || !rows_fit(k_rope, rope_store) ||
      (latent_image.defined() && !rows_fit(latent_image, latent_store)))
    return "the rows do not match the stores' [b, 1, n]";
  if (image.defined() && !image_mask_fits(image, b)) return "image must be bool [b, 1]";
  for (const at::Tensor* t : {&latent, &latent_image, &k_rope, &latent_store, &rope_store})
    if (t->defined() && !(rope && t == &k_rope) && !whole_pieces(*t))  // (rotated keys are read element by element)
      return "a row is not whole 16-byte pieces on 16-byte bounds";
  return nullptr;
#else
  (void)latent, (void)latent_image, (void)image, (void)k_rope, (void)pos, (void)latent_store, (void)rope_store,
      (void)rope;
  return "this build has no CUDA kernels";
#endif
}

at::Tensor fused_latent_write(const at::Tensor& latent, const at::Tensor& latent_image, const at::Tensor& image,
                              const at::Tensor& k_rope, const at::Tensor& pos, const at::Tensor& latent_store,
                              const at::Tensor& rope_store, const WriteRope* rope) {
  const char* why =
      fused_latent_write_unusable(latent, latent_image, image, k_rope, pos, latent_store, rope_store, rope);
  VLM2MLA_CHECK(!why, ArgumentError, "fused_latent_write: ", why);
  at::Tensor q_out;
#ifdef VLM2MLA_WITH_CUDA_KERNELS
  c10::cuda::CUDAGuard guard(latent.device());
  LatentWriteParams p;
  const at::Tensor* rows[2] = {&latent, &k_rope};
  const at::Tensor* stores[2] = {&latent_store, &rope_store};
  for (int q = 0; q < 2; ++q) {
    p.src[q] = rows[q]->data_ptr();
    p.src_stride[q] = rows[q]->stride(0);
    p.dst[q] = stores[q]->data_ptr();
    p.dst_stride[q][0] = stores[q]->stride(0);
    p.dst_stride[q][1] = stores[q]->stride(1);
    p.n[q] = stores[q]->size(2);
  }
  if (latent_image.defined()) {
    p.alt = latent_image.data_ptr();
    p.alt_stride = latent_image.stride(0);
    p.image = reinterpret_cast<const uint8_t*>(image.data_ptr());
    p.image_stride = image.stride(0);
  }
  p.pos = pos.data_ptr<int64_t>();
  p.b = latent_store.size(0);
  if (rope) q_out = write_rope_params(k_rope, *rope, p.rope_k, p.rope_q, p.q_pairs);
  launch_latent_write(p, int(latent_store.element_size()), c10::cuda::getCurrentCUDAStream(latent.device().index()).stream());
#endif
  return q_out;
}

const char* fused_kv_write_unusable(const at::Tensor& k, const at::Tensor& v, const at::Tensor& pos,
                                    const at::Tensor& keys, const at::Tensor& values) {
#ifdef VLM2MLA_WITH_CUDA_KERNELS
  if (!k.defined() || !v.defined() || !pos.defined() || !keys.defined() || !values.defined())
    return "the rows, the position and both stores must be defined";
  const at::Device dev = k.device();
  for (const at::Tensor* t : {&k, &v, &pos, &keys, &values}) {
    if (!t->is_cuda() || t->device() != dev) return "the tensors are not CUDA tensors on one device";
    if (t->requires_grad()) return "a tensor requires grad (no backward)";
  }
  const at::ScalarType dt = keys.scalar_type();
  if (dt != at::kBFloat16 && dt != at::kHalf && dt != at::kFloat) return "the stores are not bf16, fp16 or float32";
  if (values.scalar_type() != dt || k.scalar_type() != dt || v.scalar_type() != dt)
    return "the rows' and the stores' dtypes differ";
  if (pos.scalar_type() != at::kLong || pos.numel() != 1) return "pos must be one int64";
  auto rows_fit = [&](const at::Tensor& rows, const at::Tensor& store) {
    return rows.dim() == 4 && store.dim() == 4 && rows.size(0) == store.size(0) && rows.size(1) == store.size(1) &&
           rows.size(2) == 1 && rows.size(3) == store.size(3) && store.size(0) == keys.size(0) &&
           store.size(1) == keys.size(1);
  };
  if (!rows_fit(k, keys) || !rows_fit(v, values)) return "the rows do not match the stores' [b, h, 1, d]";
  if (keys.size(1) < 1) return "the stores have no kv heads";
  for (const at::Tensor* t : {&k, &v, &keys, &values})
    if (!whole_pieces(*t)) return "a row is not whole 16-byte pieces on 16-byte bounds";
  return nullptr;
#else
  (void)k, (void)v, (void)pos, (void)keys, (void)values;
  return "this build has no CUDA kernels";
#endif
}

void fused_kv_write(const at::Tensor& k, const at::Tensor& v, const at::Tensor& pos, const at::Tensor& keys,
                    const at::Tensor& values) {
  const char* why = fused_kv_write_unusable(k, v, pos, keys, values);
  VLM2MLA_CHECK(!why, ArgumentError, "fused_kv_write: ", why);
#ifdef VLM2MLA_WITH_CUDA_KERNELS
  c10::cuda::CUDAGuard guard(k.device());
  LatentWriteParams p;
  const at::Tensor* rows[2] = {&k, &v};
  const at::Tensor* stores[2] = {&keys, &values};
  for (int q = 0; q < 2; ++q) {
    p.src[q] = rows[q]->data_ptr();
    p.src_stride[q] = rows[q]->stride(0);
    p.src_head_stride[q] = rows[q]->stride(1);
    p.dst[q] = stores[q]->data_ptr();
    p.dst_stride[q][0] = stores[q]->stride(0);
    p.dst_stride[q][1] = stores[q]->stride(2);
    p.dst_head_stride[q] = stores[q]->stride(1);
    p.n[q] = stores[q]->size(3);
  }
  p.pos = pos.data_ptr<int64_t>();
  p.b = keys.size(0);
  p.heads = keys.size(1);
  launch_latent_write(p, int(keys.element_size()), c10::cuda::getCurrentCUDAStream(k.device().index()).stream());
#endif
}

at::Tensor fused_contiguous(const at::Tensor& src) {
  const char* why = fused_row_copy_unusable(src);
  VLM2MLA_CHECK(!why, ArgumentError, "fused_contiguous: ", why,
                " (it needs a CUDA build and a CUDA tensor of bf16, fp16 or float32 whose innermost dimension is "
                "contiguous, at most 4 dimensions once merged); got ",
                src.defined() ? c10::str(src.sizes(), " strides ", src.strides(), " ", src.scalar_type(), " on ",
                                         src.device())
                              : std::string("an undefined tensor"));
#ifdef VLM2MLA_WITH_CUDA_KERNELS
  if (src.is_contiguous()) return src;
  c10::cuda::CUDAGuard guard(src.device());
  at::Tensor out = at::empty(src.sizes(), src.options().memory_format(at::MemoryFormat::Contiguous));
  if (out.numel() == 0) return out;
  auto dims = merged_dims(src);
  while (dims.size() < 4) dims.insert(dims.begin(), {int64_t(1), int64_t(0)});
  const int64_t d[4] = {dims[0].first, dims[1].first, dims[2].first, dims[3].first};
  const int64_t s[3] = {dims[0].second, dims[1].second, dims[2].second};
  launch_row_copy(src.data_ptr(), out.data_ptr(), d, s, int(src.element_size()),
                  c10::cuda::getCurrentCUDAStream(src.device().index()).stream());
  return out;
#else
  return {};
#endif
}

const char* fused_ring_write_unusable(const at::Tensor& rows, const at::Tensor& pos, const at::Tensor& window,
                                      const QuantizedRows& q, int64_t bits, int64_t group) {
#ifdef VLM2MLA_WITH_CUDA_KERNELS
  for (const at::Tensor* t : {&rows, &pos, &window, &q.data, &q.scale, &q.lo})
    if (!t->defined()) return "rows, pos, the window and the quantized arrays must be defined";
  if (!window.is_cuda()) return "the store is not on a CUDA device";
  for (const at::Tensor* t : {&rows, &pos, &q.data, &q.scale, &q.lo})
    if (t->device() != window.device()) return "the tensors are not all on the window's device";
  for (const at::Tensor* t : {&rows, &window, &q.data, &q.scale, &q.lo})
    if (t->requires_grad()) return "a tensor requires grad (no backward)";
  const at::ScalarType t = window.scalar_type();
  if (t != at::kBFloat16 && t != at::kHalf && t != at::kFloat) return "the window is not bf16, fp16 or float32";
  if (rows.scalar_type() != t) return "rows and the window differ in dtype";
  if (pos.scalar_type() != at::kLong || pos.numel() != 1) return "pos is not one int64";
  if (window.dim() != 3 || rows.dim() != 3 || rows.size(1) != 1 || rows.size(0) != window.size(0) ||
      rows.size(2) != window.size(2))
    return "rows [b, 1, n] and the window [b, w, n] do not match";
  const int64_t b = window.size(0), n = window.size(2);
  if (const char* why = quant_shape_problem(n, bits, group)) return why;
  if (q.data.scalar_type() != at::kByte || q.scale.scalar_type() != at::kHalf || q.lo.scalar_type() != at::kHalf)
    return "the quantized arrays are not uint8 codes with float16 scales and minimums";
  if (q.data.dim() != 3 || q.data.size(0) != b || q.data.size(2) != n * bits / 8 || q.scale.sizes() != q.lo.sizes() ||
      q.scale.dim() != 3 || q.scale.size(0) != b || q.scale.size(1) != q.data.size(1) || q.scale.size(2) != n / group)
    return "the quantized arrays' shapes do not fit the window";
  for (const at::Tensor* a : {&rows, &window, &q.data, &q.scale, &q.lo})
    if (a->stride(2) != 1) return "a last dim is not contiguous";
  return nullptr;
#else
  (void)rows, (void)pos, (void)window, (void)q, (void)bits, (void)group;
  return "this build has no CUDA kernels";
#endif
}

#ifdef VLM2MLA_WITH_CUDA_KERNELS
namespace {
RingWriteParams ring_write_params(const at::Tensor& rows, const at::Tensor& pos, const at::Tensor& window,
                                  const QuantizedRows& q, int64_t bits, int64_t group) {
  RingWriteParams p;
  p.rows = rows.data_ptr();
  p.rows_stride = rows.stride(0);
  p.window = window.data_ptr();
  p.window_stride[0] = window.stride(0);
  p.window_stride[1] = window.stride(1);
  p.data = q.data.data_ptr<uint8_t>();
  p.data_stride[0] = q.data.stride(0);
  p.data_stride[1] = q.data.stride(1);
  p.scale = reinterpret_cast<uint16_t*>(q.scale.data_ptr());
  p.scale_stride[0] = q.scale.stride(0);
  p.scale_stride[1] = q.scale.stride(1);
  p.lo = reinterpret_cast<uint16_t*>(q.lo.data_ptr());
  p.lo_stride[0] = q.lo.stride(0);
  p.lo_stride[1] = q.lo.stride(1);
  p.pos = pos.data_ptr<int64_t>();
  p.b = window.size(0);
  p.n = window.size(2);
  p.window_size = window.size(1);
  p.bits = int(bits);
  p.group = int(group);
  return p;
}
}  // namespace
#endif

void fused_ring_write(const at::Tensor& rows, const at::Tensor& pos, at::Tensor& window, QuantizedRows& q,
                      int64_t bits, int64_t group) {
  const char* why = fused_ring_write_unusable(rows, pos, window, q, bits, group);
  VLM2MLA_CHECK(!why, ArgumentError, "fused_ring_write: ", why, "; got rows ", rows.sizes(), " ", rows.scalar_type(),
                ", window ", window.sizes(), " ", window.scalar_type(), " on ", window.device());
#ifdef VLM2MLA_WITH_CUDA_KERNELS
  c10::cuda::CUDAGuard guard(window.device());
  launch_ring_write(ring_write_params(rows, pos, window, q, bits, group), element_dtype(window.scalar_type()),
                    c10::cuda::getCurrentCUDAStream(window.device().index()).stream());
#endif
}

const char* fused_ring_write_pair_unusable(const at::Tensor& latent, const at::Tensor& latent_image,
                                           const at::Tensor& image, const at::Tensor& k_rope, const at::Tensor& pos,
                                           const QuantizedStoreArrays& latent_store,
                                           const QuantizedStoreArrays& rope_store, const WriteRope* rope) {
#ifdef VLM2MLA_WITH_CUDA_KERNELS
  if (latent_image.defined() != image.defined()) return "the image set's rows and the image mask go together";
  if (rope)
    if (const char* why = write_rope_unusable(k_rope, *rope)) return why;
  if (const char* why = fused_ring_write_unusable(latent, pos, latent_store.window, latent_store.q, latent_store.bits,
                                                  latent_store.group))
    return why;
  if (const char* why =
          fused_ring_write_unusable(k_rope, pos, rope_store.window, rope_store.q, rope_store.bits, rope_store.group))
    return why;
  if (rope_store.window.scalar_type() != latent_store.window.scalar_type() ||
      rope_store.window.device() != latent_store.window.device() ||
      rope_store.window.size(0) != latent_store.window.size(0))
    return "the two stores differ in dtype, device or batch";
  if (latent_image.defined()) {
    if (const char* why = fused_ring_write_unusable(latent_image, pos, latent_store.window, latent_store.q,
                                                    latent_store.bits, latent_store.group))
      return why;
    if (!image.is_cuda() || image.device() != latent.device()) return "the image mask is not on the rows' device";
    if (!image_mask_fits(image, latent.size(0))) return "image must be bool [b, 1]";
  }
  return nullptr;
#else
  (void)latent, (void)latent_image, (void)image, (void)k_rope, (void)pos, (void)latent_store, (void)rope_store,
      (void)rope;
  return "this build has no CUDA kernels";
#endif
}

at::Tensor fused_ring_write_pair(const at::Tensor& latent, const at::Tensor& latent_image, const at::Tensor& image,
                                 const at::Tensor& k_rope, const at::Tensor& pos,
                                 const QuantizedStoreArrays& latent_store, const QuantizedStoreArrays& rope_store,
                                 const WriteRope* rope) {
  const char* why =
      fused_ring_write_pair_unusable(latent, latent_image, image, k_rope, pos, latent_store, rope_store, rope);
  VLM2MLA_CHECK(!why, ArgumentError, "fused_ring_write_pair: ", why);
  at::Tensor q_out;
#ifdef VLM2MLA_WITH_CUDA_KERNELS
  const at::Device dev = latent_store.window.device();
  c10::cuda::CUDAGuard guard(dev);
  RingWritePairParams pp;
  pp.store[0] = ring_write_params(latent, pos, latent_store.window, latent_store.q, latent_store.bits, latent_store.group);
  pp.store[1] = ring_write_params(k_rope, pos, rope_store.window, rope_store.q, rope_store.bits, rope_store.group);
  if (latent_image.defined()) {
    pp.alt = latent_image.data_ptr();
    pp.alt_stride = latent_image.stride(0);
    pp.image = reinterpret_cast<const uint8_t*>(image.data_ptr());
    pp.image_stride = image.stride(0);
  }
  if (rope) q_out = write_rope_params(k_rope, *rope, pp.rope_k, pp.rope_q, pp.q_pairs);
  launch_ring_write_pair(pp, element_dtype(latent_store.window.scalar_type()),
                         c10::cuda::getCurrentCUDAStream(dev.index()).stream());
#endif
  return q_out;
}

const char* fused_rope_unusable(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin) {
#ifdef VLM2MLA_WITH_CUDA_KERNELS
  if (!x.defined() || !cos.defined() || !sin.defined()) return "x, cos and sin must be defined";
  if (!x.is_cuda()) return "x is not a CUDA tensor";
  if (cos.device() != x.device() || sin.device() != x.device()) return "cos and sin are not on x's device";
  const at::ScalarType t = x.scalar_type();
  if (cos.scalar_type() != t || sin.scalar_type() != t) return "x, cos and sin differ in dtype";
  if (t != at::kBFloat16 && t != at::kHalf && t != at::kFloat) return "the dtype is not bf16, fp16 or float32";
  if (x.dim() < 1 || x.dim() > kRopeMaxDims) return "x needs 1 to 8 dims";
  if (x.size(-1) % 2 != 0) return "x's last dim is odd";
  if (!at::is_expandable_to(cos.sizes(), x.sizes()) || !at::is_expandable_to(sin.sizes(), x.sizes())) {
    return "cos and sin do not broadcast to x's shape";
  }
  if (x.requires_grad() || cos.requires_grad() || sin.requires_grad()) return "a tensor requires grad (no backward)";
  return nullptr;
#else
  (void)x, (void)cos, (void)sin;
  return "this build has no CUDA kernels";
#endif
}

#ifdef VLM2MLA_WITH_CUDA_KERNELS
namespace {
// The kernel's view of out = rope(x): cos and sin expanded to x's shape (0 strides along the dims they broadcast).
RopeParams rope_params(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin, const at::Tensor& out) {
  const at::Tensor c = cos.expand(x.sizes()), s = sin.expand(x.sizes());
  RopeParams p{};
  p.x = x.data_ptr();
  p.cos = c.data_ptr();
  p.sin = s.data_ptr();
  p.out = out.data_ptr();
  p.dtype = element_dtype(x.scalar_type());
  p.dims = int(x.dim());
  for (int j = 0; j < p.dims; ++j) {
    p.size[j] = x.size(j);
    p.x_stride[j] = x.stride(j);
    p.cos_stride[j] = c.stride(j);
    p.sin_stride[j] = s.stride(j);
    p.out_stride[j] = out.stride(j);
  }
  return p;
}
}  // namespace
#endif

at::Tensor fused_rope(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin) {
  const char* why = fused_rope_unusable(x, cos, sin);
  VLM2MLA_CHECK(!why, ArgumentError, "fused_rope: ", why,
                " (it needs a CUDA build and CUDA tensors x [..., d], cos and sin broadcastable to x, of one dtype: "
                "bf16, fp16 or float32); got x ", x.sizes(), " ", x.scalar_type(), " on ", x.device(), ", cos ",
                cos.sizes(), " ", cos.scalar_type(), ", sin ", sin.sizes(), " ", sin.scalar_type());
#ifdef VLM2MLA_WITH_CUDA_KERNELS
  c10::cuda::CUDAGuard guard(x.device());
  at::Tensor out = at::empty_like(x, at::MemoryFormat::Preserve);  // x's strides where x is dense
  if (out.numel() == 0) return out;
  launch_rope(rope_params(x, cos, sin, out), c10::cuda::getCurrentCUDAStream(x.device().index()).stream());
  return out;
#else
  return {};
#endif
}

const char* fused_rope_pair_unusable(const at::Tensor& x1, const at::Tensor& cos1, const at::Tensor& sin1,
                                     const at::Tensor& x2, const at::Tensor& cos2, const at::Tensor& sin2) {
  if (const char* why = fused_rope_unusable(x1, cos1, sin1)) return why;
  if (const char* why = fused_rope_unusable(x2, cos2, sin2)) return why;
  if (x1.device() != x2.device() || x1.scalar_type() != x2.scalar_type())
    return "the two tensors differ in device or dtype";
  return nullptr;
}

std::pair<at::Tensor, at::Tensor> fused_rope_pair(const at::Tensor& x1, const at::Tensor& cos1, const at::Tensor& sin1,
                                                  const at::Tensor& x2, const at::Tensor& cos2, const at::Tensor& sin2) {
  const char* why = fused_rope_pair_unusable(x1, cos1, sin1, x2, cos2, sin2);
  VLM2MLA_CHECK(!why, ArgumentError, "fused_rope_pair: ", why, " (got x1 ", x1.sizes(), ", x2 ",
                x2.defined() ? c10::str(x2.sizes()) : std::string("undefined"), ")");
#ifdef VLM2MLA_WITH_CUDA_KERNELS
  c10::cuda::CUDAGuard guard(x1.device());
  at::Tensor out1 = at::empty_like(x1, at::MemoryFormat::Preserve), out2 = at::empty_like(x2, at::MemoryFormat::Preserve);
  launch_rope_pair(rope_params(x1, cos1, sin1, out1), rope_params(x2, cos2, sin2, out2),
                   c10::cuda::getCurrentCUDAStream(x1.device().index()).stream());
  return {out1, out2};
#else
  return {};
#endif
}

}  // namespace vlm2mla
