// Which grouping should a quantized latent cache use? Measures, on a converted model's own cached rows
// (the latent c and the rotated RoPE key of every layer, after a forward over calibration data), the
// mean over cached positions of the relative reconstruction error ||x_hat_t - x_t|| / ||x_t|| (per
// position, so that a few rows of huge norm, which real and random models both have, do not decide
// the aggregate) of group-wise asymmetric quantization
// (kvcache/quant.h) with per-token groups (consecutive channels of one position) against per-channel
// groups (one channel over consecutive positions, KIVI's choice for keys), at 8, 4 and 2 bits.
#pragma once

#include <nlohmann/json.hpp>

#include <functional>

#include "convert/converter.h"

namespace vlm2mla::convert {

struct QuantStudyOptions {
  int64_t group = 32;  // values per group, both groupings
};

// `model` must be converted with a latent (has_latent). Returns {"rows": [{"tensor": "latent"|"k_rope",
// "bits", "grouping": "token"|"channel", "rel_error" (over all layers and forwards), "per_layer": [...]}],
// "positions": N, "group": G}. Per-channel groups cover the first floor(T/G)*G positions of each
// forward (the rest would sit in the full-precision window); both groupings are scored on those.
nlohmann::json cache_quant_study(const Model& model, const CalibrationInputs& calib, const QuantStudyOptions& options);

}  // namespace vlm2mla::convert
