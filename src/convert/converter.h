// MHA2MLA(-VLM) conversion of a loaded model (METHOD.md sections 3-4): RoPE-pair selection,
// partial-RoPE weight surgery (stage 1), calibration statistics observed on the stage-1 model, and
// the low-rank K/V factorisation (joint, split, whitened, md); plus the report and the checkpoint.
#pragma once

#include <nlohmann/json.hpp>

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "convert/calib_data.h"
#include "convert/rope_ranks.h"
#include "models/mla_config.h"
#include "models/model.h"

namespace vlm2mla::convert {

struct ConvertOptions {
  std::string rope_strategy;    // high, low, uniform, 2-norm, mkl; may be empty with rope_ranks_path
  std::string rope_ranks_path;  // a rank file (safetensors or the authors' .pth) instead of a strategy
  int64_t rope_dims = 0;        // R: rope dims kept per head (even, 2..head_dim)
  SvdMethod svd = SvdMethod::kNone;
  // D (latent width per kv head, r_kv = n_kv * D): one value for every layer, or one per layer.
  std::vector<int64_t> kv_rank;
};

struct Conversion {
  std::shared_ptr<Model> model;   // the converted model, in memory (the original's device and dtype)
  std::shared_ptr<Model> stage1;  // partial RoPE only (svd none)
  RopeRanks ranks;                // the ranks used
  nlohmann::json report;          // see convert_model
};

// Converts `original` (which must not be converted already). `calib` (may be null) is needed for
// 2-norm/mkl ranks and for the whitened/md SVDs; when given, the report carries every layer's
// activation errors. Throws ArgumentError for bad options (naming the flag: --rope-dims,
// --rope-strategy, --kv-rank, --rope-ranks, --calib) before any heavy work.
//
// The report: {"layers": [{"layer", "modality": "text"|"image", "activation_rel_error",
// "parameter_rel_error", "tokens"}...], "kv_bytes_per_token": {"before", "after", "dtype"},
// "rope", "svd", "kv_lora_rank", "calibration", "regularisation", "timings_s", ...}.
Conversion convert_model(const Model& original, const ConvertOptions& options,
                         const CalibrationInputs* calib);

// The human summary of a report (stderr).
std::string report_summary(const nlohmann::json& report);

// Writes the converted checkpoint to `out_dir` (which must not exist): config.json (the source's,
// plus the `mla` block), model.safetensors (the converted attention tensors in the source's dtype,
// every other tensor copied from the source), and the source's other files (tokenizer,
// preprocessor, generation config). Written to a temporary directory beside it, then renamed.
void write_converted(const std::string& source_dir, const std::string& out_dir, const Conversion& c);

}  // namespace vlm2mla::convert
