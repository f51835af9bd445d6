// A process-wide on/off setting for an optional fast path (a fused kernel): on unless the environment
// variable named at construction is "0" (read once, when first asked); set() overrides both. Thread-safe;
// constant-initialized, so a namespace-scope instance is usable from any static initializer.
// The project's switches are named here, one constant each, and listed in kEnvSwitches: the CLI checks their
// values before any work (check_env_switches) and bench reports them (env_switch_states).
#pragma once

#include <atomic>
#include <cstdlib>
#include <string>
#include <utility>
#include <vector>

namespace vlm2mla {

inline constexpr char kEnvFusedCacheWrite[] = "VLM2MLA_FUSED_CACHE_WRITE";
inline constexpr char kEnvFusedRope[] = "VLM2MLA_FUSED_ROPE";
inline constexpr char kEnvFusedRmsNorm[] = "VLM2MLA_FUSED_RMS_NORM";
inline constexpr char kEnvFusedSiluMul[] = "VLM2MLA_FUSED_SILU_MUL";
inline constexpr char kEnvDecodeSdpa[] = "VLM2MLA_DECODE_SDPA";
inline constexpr char kEnvKvHeadBmm[] = "VLM2MLA_KV_HEAD_BMM";
inline constexpr char kEnvFusedRowCopy[] = "VLM2MLA_FUSED_ROW_COPY";
inline constexpr char kEnvDecodeSpecialized[] = "VLM2MLA_DECODE_SPECIALIZED";
inline constexpr char kEnvDecodeGroupedRows[] = "VLM2MLA_DECODE_GROUPED_ROWS";
inline constexpr char kEnvDecodePureSplits[] = "VLM2MLA_DECODE_PURE_SPLITS";
inline constexpr char kEnvDecodePureLaunch[] = "VLM2MLA_DECODE_PURE_LAUNCH";
inline constexpr char kEnvDecodeScoreClusters[] = "VLM2MLA_DECODE_SCORE_CLUSTERS";
inline constexpr char kEnvDecodeImageFirst[] = "VLM2MLA_DECODE_IMAGE_FIRST";
inline constexpr char kEnvDecodeSegments[] = "VLM2MLA_DECODE_SEGMENTS";
inline constexpr char kEnvDecodeImageEnd[] = "VLM2MLA_DECODE_IMAGE_END";
inline constexpr char kEnvFusedHeadProduct[] = "VLM2MLA_FUSED_HEAD_PRODUCT";
inline constexpr char kEnvFusedLatentWrite[] = "VLM2MLA_FUSED_LATENT_WRITE";
inline constexpr char kEnvRmsNormVectors[] = "VLM2MLA_RMS_NORM_VECTORS";
inline constexpr char kEnvPdl[] = "VLM2MLA_PDL";
inline constexpr char kEnvSdpaMaskOnce[] = "VLM2MLA_SDPA_MASK_ONCE";
inline constexpr char kEnvFusedKvWrite[] = "VLM2MLA_FUSED_KV_WRITE";
inline constexpr char kEnvDecodeOutOnce[] = "VLM2MLA_DECODE_OUT_ONCE";
inline constexpr char kEnvGemv[] = "VLM2MLA_GEMV";
inline constexpr char kEnvDecodeCombineOut[] = "VLM2MLA_DECODE_COMBINE_OUT";
inline constexpr char kEnvGemvSiluMul[] = "VLM2MLA_GEMV_SILU_MUL";
inline constexpr char kEnvRopeWrite[] = "VLM2MLA_ROPE_WRITE";
inline constexpr char kEnvGemmRows[] = "VLM2MLA_GEMM_ROWS";
inline constexpr const char* kEnvSwitches[] = {
    kEnvFusedCacheWrite,   kEnvFusedRope,         kEnvFusedRmsNorm,      kEnvFusedSiluMul,
    kEnvDecodeSdpa,        kEnvKvHeadBmm,         kEnvDecodeSpecialized, kEnvDecodeGroupedRows,
    kEnvDecodePureSplits,  kEnvDecodePureLaunch,  kEnvDecodeScoreClusters, kEnvFusedRowCopy,
    kEnvDecodeImageFirst,  kEnvDecodeSegments,    kEnvDecodeImageEnd,    kEnvFusedHeadProduct,
    kEnvFusedLatentWrite,  kEnvRmsNormVectors,    kEnvPdl,               kEnvSdpaMaskOnce,
    kEnvFusedKvWrite,      kEnvDecodeOutOnce,     kEnvGemv,              kEnvDecodeCombineOut,
    kEnvGemvSiluMul,       kEnvRopeWrite,         kEnvGemmRows};

// What a switch's environment value means: on unless it is "0" (unset included).
inline bool env_switch_value_on(const char* value) { return !(value != nullptr && std::string(value) == "0"); }

// ArgumentError naming the first switch of kEnvSwitches whose environment value is neither unset, empty, "0" nor
// "1" (EnvSwitch reads anything but "0" as on, so a value such as "off" would silently keep a path on).
void check_env_switches();
// Each switch of kEnvSwitches as the environment sets it (on unless "0"), in kEnvSwitches' order.
std::vector<std::pair<std::string, bool>> env_switch_states();

class EnvSwitch {
 public:
  explicit constexpr EnvSwitch(const char* env) : env_(env) {}

  bool enabled() const {
    int f = flag_.load();
    if (f < 0) {
      f = env_switch_value_on(std::getenv(env_)) ? 1 : 0;
      flag_ = f;
    }
    return f == 1;
  }
  void set(bool on) { flag_ = on ? 1 : 0; }

 private:
  const char* env_;
  mutable std::atomic<int> flag_{-1};  // -1: not yet read from the environment
};

}  // namespace vlm2mla
