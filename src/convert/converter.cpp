#include "convert/converter.h"

#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <iomanip>
#include <set>
#include <sstream>

#include "convert/covariance.h"
#include "convert/low_rank.h"
#include "convert/rope_scores.h"
#include "convert/surgery.h"
#include "core/device_memory.h"
#include "core/dtype.h"
#include "core/error.h"
#include "core/fs.h"
#include "core/log.h"
#include "io/json_file.h"
#include "io/safetensors.h"
#include "io/tensor_store.h"

namespace vlm2mla::convert {

using nlohmann::json;

namespace {

using Clock = std::chrono::steady_clock;
double seconds_since(Clock::time_point t) {
  return std::chrono::duration<double>(Clock::now() - t).count();
}

bool needs_scores(const std::string& s) { return s == "2-norm" || s == "mkl"; }
bool fixed_strategy(const std::string& s) { return s == "high" || s == "low" || s == "uniform"; }

// Latent widths per layer (r_kv = n_kv * D) from --kv-rank, checked.
std::vector<int64_t> kv_lora_ranks(const TextConfig& c, const ConvertOptions& o) {
  std::vector<int64_t> out;
  if (o.svd == SvdMethod::kNone) {
    VLM2MLA_CHECK(o.kv_rank.empty(), ArgumentError,
                  "--kv-rank given with --svd none (the stage-1 model keeps full K and V)");
    return out;
  }
  VLM2MLA_CHECK(!o.kv_rank.empty(), ArgumentError, "--svd ", svd_method_name(o.svd),
                " needs --kv-rank D (latent width per kv head) or --kv-rank-per-layer");
  const int64_t L = c.num_hidden_layers, n_kv = c.num_key_value_heads, dh = c.head_dim;
  VLM2MLA_CHECK(o.kv_rank.size() == 1 || static_cast<int64_t>(o.kv_rank.size()) == L, ArgumentError,
                "--kv-rank-per-layer lists ", o.kv_rank.size(), " ranks, expected one per layer (", L, ")");
  const int64_t rows = n_kv * (dh - o.rope_dims) + n_kv * dh;
  const int64_t max_r = std::min(rows, c.hidden_size);
  for (int64_t l = 0; l < L; ++l) {
    const int64_t D = o.kv_rank.size() == 1 ? o.kv_rank[0] : o.kv_rank[static_cast<size_t>(l)];
    const int64_t r = n_kv * D;
    VLM2MLA_CHECK(D > 0 && r <= max_r, ArgumentError, "--kv-rank: D = ", D, " (r_kv = ", n_kv, " x ", D,
                  " = ", r, ") is out of range: the layer's [W_kc; W_v] is [", rows, ", ", c.hidden_size,
                  "], so r_kv <= ", max_r, ", i.e. 1 <= D <= ", max_r / n_kv);
    VLM2MLA_CHECK(o.svd != SvdMethod::kSplit || r % 2 == 0, ArgumentError, "--svd split: r_kv = ", r,
                  " must be even (r_kv/2 for K and for V)");
    out.push_back(r);
  }
  return out;
}

void check_options(const Model& m, const ConvertOptions& o, bool have_calib) {
  const TextConfig& c = m.text_config();
  VLM2MLA_CHECK(!c.mla, ArgumentError, "the model is already converted (its config.json has an 'mla' "
                "block, svd ", c.mla ? svd_method_name(c.mla->svd) : "", "); convert the original model");
  VLM2MLA_CHECK(o.rope_dims > 0 && o.rope_dims % 2 == 0 && o.rope_dims <= c.head_dim, ArgumentError,
                "--rope-dims: R = ", o.rope_dims, " must be even and in [2, head_dim = ", c.head_dim,
                "] (R/2 frequency pairs keep RoPE per head)");
  if (o.rope_ranks_path.empty()) {
    VLM2MLA_CHECK(fixed_strategy(o.rope_strategy) || needs_scores(o.rope_strategy), ArgumentError,
                  "--rope-strategy: unknown strategy '", o.rope_strategy,
                  "' (expected high, low, uniform, 2-norm or mkl, or give --rope-ranks FILE)");
  }
  VLM2MLA_CHECK(!needs_scores(o.rope_strategy) || !o.rope_ranks_path.empty() || have_calib, ArgumentError,
                "--rope-strategy ", o.rope_strategy, " needs calibration data (--calib)");
  const bool activation_aware = o.svd == SvdMethod::kWhitened || o.svd == SvdMethod::kMd;
  VLM2MLA_CHECK(!activation_aware || have_calib, ArgumentError, "--svd ", svd_method_name(o.svd),
                " is activation-aware and needs calibration data (--calib)");
  VLM2MLA_CHECK(o.svd != SvdMethod::kMd || !m.visual_token_ids().empty(), ArgumentError,
                "--svd md decouples image and text tokens, but ", c.architecture,
                " is a text-only model (use whitened)");
  kv_lora_ranks(c, o);
}

// The calibration forwards of `model` with `observer` watching (see run_calibration); at least one token.
void observe(const Model& model, const CalibrationInputs& calib, DecoderObserver& observer, const char* what,
             bool visual_set) {
  const int64_t tokens = run_calibration(model, calib, observer, CalibrationRun{what, 0, visual_set});
  VLM2MLA_CHECK(tokens > 0, ArgumentError, "--calib: the calibration data holds no tokens");
}

RopeRanks choose_ranks(const Model& m, const ConvertOptions& o, const CalibrationInputs* calib) {
  const TextConfig& c = m.text_config();
  const int64_t L = c.num_hidden_layers, n_kv = c.num_key_value_heads, dh = c.head_dim;
  if (!o.rope_ranks_path.empty()) {
    RopeRanks r = read_rope_ranks(o.rope_ranks_path);
    validate_rope_ranks(r, L, n_kv, dh, "--rope-ranks " + o.rope_ranks_path);
    if (r.strategy.empty()) r.strategy = "file";
    return r;
  }
  if (fixed_strategy(o.rope_strategy)) {
    RopeRanks r = fixed_ranks(o.rope_strategy, L, n_kv, dh, o.rope_dims / 2);
    return r;
  }
  at::Tensor score;
  if (o.rope_strategy == "2-norm") {
    TwoNormScores obs(c);
    observe(m, *calib, obs, "2-norm scores", /*visual_set=*/false);
    score = obs.scores();
  } else {
    MklScores obs(c);
    observe(m, *calib, obs, "mkl scores", /*visual_set=*/false);
    score = obs.scores();
  }
  RopeRanks r = ranks_from_scores(score);
  r.strategy = o.rope_strategy;
  r.source = "calibration";
  return r;
}

LinearWeights as_linear(const at::Tensor& w, const at::Tensor& b, at::ScalarType dtype) {
  LinearWeights out;
  out.weight = w.to(dtype).contiguous();
  if (b.defined()) out.bias = b.to(dtype).clone();  // each projection set owns its bias (they diverge)
  return out;
}

}  // namespace

Conversion convert_model(const Model& original, const ConvertOptions& o, const CalibrationInputs* calib) {
  const auto t_start = Clock::now();
  check_options(original, o, calib != nullptr);
  const TextConfig& c = original.text_config();
  const TextDecoder& dec = original.decoder();
  const at::Device device = dec.device();
  const at::ScalarType dtype = dec.dtype();
  const int64_t L = c.num_hidden_layers, n_kv = c.num_key_value_heads, dh = c.head_dim;
  const int64_t R = o.rope_dims, d = c.hidden_size;
  const std::vector<int64_t> ranks_kv = kv_lora_ranks(c, o);
  reset_peak_memory(device);
  json timings = json::object();

  // 1. RoPE pairs.
  auto t = Clock::now();
  Conversion out;
  out.ranks = choose_ranks(original, o, calib);
  timings["rope_ranks"] = seconds_since(t);
  MlaConfig mla;
  mla.qk_rope_head_dim = R;
  mla.kept_pairs = kept_pair_lists(out.ranks, R / 2);
  mla.rope_strategy = out.ranks.strategy;
  mla.visual_token_ids = original.visual_token_ids();

  // 2. Stage 1: partial RoPE (svd none).
  t = Clock::now();
  TextConfig c1 = c;
  c1.mla = mla;
  DecoderWeights w1 = dec.weights();
  for (int64_t l = 0; l < L; ++l) {
    w1.layers[static_cast<size_t>(l)] =
        partial_rope_layer(c, dec.weights().layers[static_cast<size_t>(l)], mla.kept_pairs[static_cast<size_t>(l)]);
  }
  LoadOptions lo = dec.load_options();  // layers stay where the original's are (host or device)
  lo.fuse_projections = false;          // conversion's decoders read and rewrite single weights
  auto stage1_decoder = std::make_shared<TextDecoder>(c1, w1, lo);
  stage1_decoder->set_attention_backend(dec.attention_backend());
  out.stage1 = original.with_decoder(stage1_decoder);
  timings["partial_rope"] = seconds_since(t);

  // 3. Calibration statistics on the stage-1 model.
  std::unique_ptr<CovarianceObserver> cov;
  if (calib) {
    t = Clock::now();
    cov = std::make_unique<CovarianceObserver>(L, d, device);
    observe(*out.stage1, *calib, *cov, "activation statistics", /*visual_set=*/true);
    timings["calibration"] = seconds_since(t);
    VLM2MLA_CHECK(o.svd != SvdMethod::kMd || cov->tokens(Modality::kImage) > 0, ArgumentError,
                  "--svd md: the calibration data holds no image tokens (token ids ",
                  json(mla.visual_token_ids).dump(), "), so there is nothing to fit the image projections "
                  "to; give --calib with images, or use --svd whitened");
  }

  // 4. Low-rank K/V.
  t = Clock::now();
  mla.svd = o.svd;
  mla.kv_lora_rank = ranks_kv;
  mla.modality_split = o.svd == SvdMethod::kMd;
  TextConfig c2 = c;
  c2.mla = mla;
  DecoderWeights w2 = w1;
  json layers = json::array();
  json whitening = json::array();
  const int64_t rows_k = n_kv * (dh - R);
  auto last_log = Clock::now();
  for (int64_t l = 0; l < L; ++l) {
    DecoderLayerWeights& lw = w2.layers[static_cast<size_t>(l)];
    const at::Device layer_device = lw.q_proj.weight.device();  // host with layers_on_host
    const at::Tensor W = stacked_kv_weight(lw).to(device, at::kDouble);  // [rows, d], factorised on the device
    const at::Tensor bias = stacked_kv_bias(lw);
    std::vector<at::Tensor> approx;  // per set (text, image): W'
    if (o.svd != SvdMethod::kNone) {
      const int64_t r = ranks_kv[static_cast<size_t>(l)];
      std::vector<LowRank> sets;
      switch (o.svd) {
        case SvdMethod::kNone:
          break;
        case SvdMethod::kJoint:
          sets.push_back(joint_svd(W, r));
          break;
        case SvdMethod::kSplit:
          sets.push_back(split_svd(W.narrow(0, 0, rows_k), W.narrow(0, rows_k, W.size(0) - rows_k), r));
          break;
        case SvdMethod::kWhitened:
        case SvdMethod::kMd: {
          const bool md = o.svd == SvdMethod::kMd;
          std::vector<std::pair<Modality, at::Tensor>> covs;
          if (md) {
            covs = {{Modality::kText, cov->covariance(l, Modality::kText)},
                    {Modality::kImage, cov->covariance(l, Modality::kImage)}};
          } else {
            covs = {{Modality::kText, cov->covariance_all(l)}};
          }
          for (auto& [mod, C] : covs) {
            VLM2MLA_CHECK(C.defined(), ArgumentError, "--svd ", svd_method_name(o.svd), ": layer ", l,
                          " saw no ", md ? modality_name(mod) : "", " calibration tokens");
            WhiteningInfo info;
            sets.push_back(whitened_svd(W, C, r, &info));
            whitening.push_back({{"layer", l},
                                 {"modality", md ? modality_name(mod) : "all"},
                                 {"dim", info.dim},
                                 {"covariance_rank", info.numerical_rank},
                                 {"clamped_negative_eigenvalues", info.clamped},
                                 {"floored_singular_values", info.floored_singular},
                                 {"condition", std::isfinite(info.condition) ? json(info.condition) : json()}});
          }
          break;
        }
      }
      lw.k_nope_proj = LinearWeights{};
      lw.v_proj = LinearWeights{};
      lw.kv.clear();
      for (const LowRank& s : sets) {
        KvLatentWeights kw;
        kw.kv_a_proj = as_linear(s.down.to(layer_device), {}, dtype);
        kw.kv_b_proj = as_linear(s.up.to(layer_device), bias, dtype);
        lw.kv.push_back(kw);
        approx.push_back(s.approx());
      }
    } else {
      approx.push_back(W);
    }
    // The report: each modality's activation error under the set it uses.
    for (Modality mod : {Modality::kText, Modality::kImage}) {
      const at::Tensor& Wa = approx.size() == 2 ? approx[static_cast<size_t>(mod)] : approx[0];
      at::Tensor C = cov ? cov->covariance(l, mod) : at::Tensor();
      if (cov && !C.defined()) continue;  // the calibration had no tokens of this modality
      if (!cov && mod == Modality::kImage) continue;
      json e = {{"layer", l},
                {"modality", modality_name(mod)},
                {"activation_rel_error", C.defined() ? json(activation_rel_error(W, Wa, C)) : json()},
                {"parameter_rel_error", parameter_rel_error(W, Wa)},
                {"tokens", cov ? cov->tokens(mod) : 0}};
      layers.push_back(e);
    }
    if (seconds_since(last_log) > 5 || l + 1 == L) {
      last_log = Clock::now();
      VLM2MLA_INFO("low-rank K/V (", svd_method_name(o.svd), "): layer ", l + 1, "/", L, ", ",
                   std::fixed, std::setprecision(1), seconds_since(t), " s");
    }
  }
  timings["svd"] = seconds_since(t);
  auto decoder2 = std::make_shared<TextDecoder>(c2, w2, lo);
  decoder2->set_attention_backend(dec.attention_backend());
  out.model = original.with_decoder(decoder2);
  timings["total"] = seconds_since(t_start);

  const int64_t before = kv_values_per_token(nullptr, L, n_kv, dh) * 2;
  const int64_t after = kv_values_per_token(&mla, L, n_kv, dh) * 2 + (mla.modality_split ? 1 : 0);
  json calibration;
  if (cov) {
    calibration = {{"text_tokens", cov->tokens(Modality::kText)}, {"image_tokens", cov->tokens(Modality::kImage)},
                   {"collected_on", "the stage-1 (partial-RoPE) model, input_layernorm outputs"}};
  }
  std::vector<int64_t> d_per_head;
  for (int64_t r : ranks_kv) d_per_head.push_back(r / n_kv);
  out.report = {
      {"architecture", c.architecture},
      {"rope", {{"strategy", mla.rope_strategy}, {"qk_rope_head_dim", R}, {"kept_pairs_per_head", R / 2},
                {"source", out.ranks.source}}},
      {"svd", svd_method_name(o.svd)},
      {"kv_lora_rank", ranks_kv},
      {"kv_rank_per_head", d_per_head},
      {"calibration", calibration},
      {"regularisation",
       "whitened/md: W' = U_d U_d^T W with U_d the top singular vectors of W C^(1/2); no inverse of C is "
       "formed, so a rank-deficient C needs no damping (negative round-off eigenvalues are clamped to 0, "
       "counted below); equal to the exact whitened SVD when C is well-conditioned; singular values of "
       "W C^(1/2) below 1e-10 of the largest are floored only for the up/down balance"},
      {"whitening", whitening},
      {"layers", layers},
      {"kv_bytes_per_token",
       {{"before", before}, {"after", after}, {"dtype", "bfloat16"},
        {"reduction", 1.0 - static_cast<double>(after) / static_cast<double>(before)},
        {"note", mla.modality_split ? "after includes 1 byte per token for the modality flag" : ""}}},
      {"timings_s", timings},
      {"peak_memory_bytes", peak_memory_bytes(device)},
      {"device", device.str()}};
  return out;
}

std::string report_summary(const json& r) {
  std::ostringstream os;
  os << "conversion: rope " << r["rope"]["strategy"].get<std::string>() << " R="
     << r["rope"]["qk_rope_head_dim"].get<int64_t>() << ", svd " << r["svd"].get<std::string>();
  if (!r["kv_rank_per_head"].empty()) os << ", D=" << r["kv_rank_per_head"][0].get<int64_t>() << " per kv head";
  os << "\n";
  os << "  layer modality  activation_err  parameter_err\n";
  for (const auto& e : r["layers"]) {
    char line[128], act[32] = "-";
    const json& a = e["activation_rel_error"];
    if (!a.is_null()) std::snprintf(act, sizeof act, "%.4g", a.get<double>());
    std::snprintf(line, sizeof line, "  %5lld %-8s  %14s  %13.4g\n", static_cast<long long>(e["layer"].get<int64_t>()),
                  e["modality"].get<std::string>().c_str(), act, e["parameter_rel_error"].get<double>());
    os << line;
  }
  const json& kv = r["kv_bytes_per_token"];
  os << "  KV cache per token (bf16): " << kv["before"].get<int64_t>() << " -> " << kv["after"].get<int64_t>()
     << " bytes (" << std::fixed << std::setprecision(2) << 100.0 * kv["reduction"].get<double>() << "% smaller)\n";
  return os.str();
}

void write_converted(const std::string& source_dir, const std::string& out_dir, const Conversion& conv) {
  VLM2MLA_CHECK(!fs::exists(out_dir), ArgumentError, "--out ", out_dir,
                " already exists; remove it or choose another directory");
  const std::string config_path = fs::join(source_dir, "config.json");
  json root = io::read_json_file(config_path);
  const TextConfig& c2 = conv.model->text_config();
  root["mla"] = mla_config_to_json(*c2.mla);

  io::TensorStore store = io::TensorStore::open_dir(source_dir);
  const TextLayout layout = detect_text_layout(store);
  // The source's decoder tensors (replaced) and the converted ones (walked on the converted weights).
  std::set<std::string> original_names;
  {
    DecoderWeights scratch;
    scratch.layers.resize(static_cast<size_t>(c2.num_hidden_layers));
    TextConfig c0 = c2;
    c0.mla.reset();
    for_each_param(c0, layout, scratch, [&](const ParamRef& ref) { original_names.insert(ref.name); });
  }
  const at::ScalarType out_dtype =
      io::to_scalar_type(store.info(layout.decoder_prefix + "layers.0.self_attn.q_proj.weight").dtype);
  std::vector<std::pair<std::string, at::Tensor>> tensors;
  std::set<std::string> written;
  DecoderWeights w2 = conv.model->decoder().weights();
  for_each_param(c2, layout, w2, [&](const ParamRef& ref) {
    const bool attention = ref.name.find(".self_attn.") != std::string::npos &&
                           ref.name.find(".o_proj.") == std::string::npos;
    if (!attention && store.contains(ref.name)) {
      tensors.emplace_back(ref.name, store.tensor(ref.name));  // untouched: copied as stored
    } else {
      tensors.emplace_back(ref.name, ref.slot->to(at::kCPU, out_dtype).contiguous());
    }
    written.insert(ref.name);
  });
  for (const auto& name : store.names()) {
    if (!original_names.count(name) && !written.count(name)) tensors.emplace_back(name, store.tensor(name));
  }

  const std::string tmp = out_dir + ".tmp-" + std::to_string(::getpid());
  fs::remove_all(tmp);
  fs::create_directories(tmp);
  try {
    io::write_safetensors(fs::join(tmp, "model.safetensors"), tensors, {{"format", "pt"}});
    io::write_json_file(fs::join(tmp, "config.json"), root);
    for (const auto& name : fs::list_directory(source_dir)) {
      const std::string from = fs::join(source_dir, name);
      if (!fs::is_regular_file(from) || name == "config.json" || fs::extension(name) == ".safetensors" ||
          name == "model.safetensors.index.json") {
        continue;
      }
      fs::copy_file(from, fs::join(tmp, name));
    }
    VLM2MLA_CHECK(::rename(tmp.c_str(), out_dir.c_str()) == 0, IoError, "cannot rename ", tmp, " to ",
                  out_dir);
  } catch (...) {
    fs::remove_all(tmp);
    throw;
  }
}

}  // namespace vlm2mla::convert
