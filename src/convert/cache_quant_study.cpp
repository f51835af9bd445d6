#include "convert/cache_quant_study.h"

#include <cmath>

#include "core/error.h"
#include "kvcache/latent_kv_cache.h"
#include "kvcache/quant.h"

namespace vlm2mla::convert {

namespace {

// x [b, t, n] -> reconstruction by per-token groups (along n) or per-channel groups (along t).
at::Tensor reconstruct(const at::Tensor& x, int64_t bits, int64_t group, bool per_channel) {
  if (!per_channel) return dequantize_rows(quantize_rows(x, bits, group), bits, group, at::kFloat);
  at::Tensor xt = x.transpose(1, 2).contiguous();  // [b, n, t]
  return dequantize_rows(quantize_rows(xt, bits, group), bits, group, at::kFloat).transpose(1, 2);
}

}  // namespace

nlohmann::json cache_quant_study(const Model& model, const CalibrationInputs& calib, const QuantStudyOptions& o) {
  const TextDecoder& dec = model.decoder();
  VLM2MLA_CHECK(dec.has_latent(), ArgumentError,
                "the cache quantization study needs a converted low-rank (MLA) model; this one caches full K and V");
  const int64_t L = dec.config().num_hidden_layers;
  const char* kTensors[] = {"latent", "k_rope"};
  const int64_t kBits[] = {8, 4, 2};
  // [tensor][bits][grouping][layer] -> sums of squared error and of squared values
  double err[2][3][2][256] = {}, ref[2][256] = {};
  VLM2MLA_CHECK(L <= 256, ArgumentError, "cache_quant_study: at most 256 layers");
  int64_t positions = 0;
  calib([&](const ModelInputs& in) {
    Prompt p = model.prepare(in, /*forward_semantics=*/true);
    const int64_t b = p.input_ids.size(0), t = p.input_ids.size(1);
    const int64_t tg = t / o.group * o.group;  // positions both groupings score
    if (tg == 0) return;
    CacheSpec exact;
    exact.type = CacheType::kFp32;
    std::unique_ptr<KvCache> cache = dec.make_kv_cache(b, t, &exact);
    VLM2MLA_CHECK(cache->kind() == CacheKind::kLatent, ArgumentError,
                  "cache_quant_study: the model's attention mode does not use the latent cache");
    dec.forward_hidden(p.decoder_input(), cache.get());
    const auto& lc = static_cast<const LatentKvCache&>(*cache);
    for (int64_t l = 0; l < L; ++l) {
      for (int ti = 0; ti < 2; ++ti) {
        const RowStore& store = ti == 0 ? lc.latent_store(l) : lc.rope_store(l);
        at::Tensor x = store.read(t).to(at::kFloat).narrow(1, t - tg, tg).contiguous();  // [b, tg, n]
        at::Tensor norms = x.norm(2, -1).clamp_min(1e-30);  // [b, tg]
        ref[ti][l] += static_cast<double>(norms.numel());
        for (int bi = 0; bi < 3; ++bi) {
          for (int g = 0; g < 2; ++g) {
            check_quant_shape(g == 0 ? x.size(2) : tg, kBits[bi], o.group, "--group");
            at::Tensor e = (reconstruct(x, kBits[bi], o.group, g == 1) - x).norm(2, -1);  // [b, tg]
            err[ti][bi][g][l] += (e / norms).sum().item<double>();
          }
        }
      }
    }
    positions += b * tg;
  });
  VLM2MLA_CHECK(positions > 0, ArgumentError, "cache_quant_study: no forward had at least --group (", o.group,
                ") positions");
  nlohmann::json rows = nlohmann::json::array();
  for (int ti = 0; ti < 2; ++ti) {
    for (int bi = 0; bi < 3; ++bi) {
      for (int g = 0; g < 2; ++g) {
        double e = 0, r = 0;
        nlohmann::json per_layer = nlohmann::json::array();
        for (int64_t l = 0; l < L; ++l) {
          e += err[ti][bi][g][l], r += ref[ti][l];
          per_layer.push_back(ref[ti][l] > 0 ? err[ti][bi][g][l] / ref[ti][l] : 0.0);
        }
        rows.push_back({{"tensor", kTensors[ti]}, {"bits", kBits[bi]}, {"grouping", g == 0 ? "token" : "channel"},
                        {"rel_error", r > 0 ? e / r : 0.0}, {"per_layer", per_layer}});
      }
    }
  }
  return {{"rows", rows}, {"positions", positions}, {"group", o.group}};
}

}  // namespace vlm2mla::convert
