// vlm2mla convert --model DIR --out DIR2 --rope-strategy S --rope-dims R [--rope-ranks F]
//   --svd {none,joint,split,whitened,md} [--kv-rank D | --kv-rank-per-layer D0,D1,...]
//   [--calib F [--num-calib N] [--seed S]] [--report REPORT.json]
// MHA2MLA(-VLM) conversion (METHOD.md sections 3-4) to a checkpoint with an `mla` config block.
#include <sstream>

#include "common.h"
#include "convert/calib_data.h"
#include "convert/cache_quant_study.h"
#include "convert/converter.h"
#include "core/error.h"
#include "core/log.h"
#include "io/json_file.h"
#include "models/model.h"

namespace vlm2mla::cli {

namespace {

std::vector<int64_t> parse_int_list(const std::string& text, const char* flag) {
  std::vector<int64_t> out;
  std::stringstream ss(text);
  std::string item;
  while (std::getline(ss, item, ',')) {
    size_t used = 0;
    int64_t v = 0;
    try {
      v = std::stoll(item, &used);
    } catch (const std::exception&) {
      used = 0;
    }
    VLM2MLA_CHECK(used == item.size() && !item.empty(), ArgumentError, flag, ": '", item,
                  "' is not an integer (expected a comma-separated list such as 32,32,64)");
    out.push_back(v);
  }
  return out;
}

}  // namespace

void register_convert(CLI::App& app) {
  struct Args {
    std::string model, out, strategy, rope_ranks, svd = "none", per_layer, report;
    int64_t rope_dims = 0, kv_rank = 0;
    bool offload = false;
    CalibFlags calib;
    RunFlags run;
  };
  auto args = std::make_shared<Args>();
  CLI::App* cmd = app.add_subcommand(
      "convert", "Convert a model's attention to MLA: partial RoPE (keep R rope dims per head) and a "
                 "low-rank joint K/V latent; writes a checkpoint with an `mla` block in config.json");
  cmd->add_option("--model", args->model, "model directory (original, not converted)")->required();
  cmd->add_option("--out", args->out, "output directory (must not exist)")->required();
  cmd->add_option("--rope-strategy", args->strategy,
                  "which RoPE pairs to keep: high | low | uniform | 2-norm | mkl (the last two need --calib)");
  cmd->add_option("--rope-dims", args->rope_dims, "R: rope dims kept per head (even; the paper uses 32)")
      ->required();
  cmd->add_option("--rope-ranks", args->rope_ranks,
                  "pair ranks from a file (vlm2mla calibrate's .safetensors or the authors' .pth) instead of a strategy");
  cmd->add_option("--svd", args->svd,
                  "none (stage 1: partial RoPE only) | joint | split | whitened | md (modality-decoupled)")
      ->capture_default_str();
  cmd->add_option("--kv-rank", args->kv_rank, "D: latent width per kv head (r_kv = n_kv x D)");
  cmd->add_option("--kv-rank-per-layer", args->per_layer, "D per layer, comma-separated (instead of --kv-rank)");
  args->calib.add_to(cmd, /*required=*/false, "; needed by 2-norm, mkl, whitened and md");
  cmd->add_option("--report", args->report, "write the conversion report (JSON) here");
  cmd->add_flag("--offload-layers", args->offload,
                "keep the decoder layers in host memory; each visits --device only while it runs (converts "
                "models larger than device memory)");
  args->run.add_to(cmd);
  cmd->callback([args]() {
    convert::ConvertOptions o;
    o.rope_strategy = args->strategy;
    o.rope_ranks_path = args->rope_ranks;
    o.rope_dims = args->rope_dims;
    o.svd = svd_method_from_name(args->svd, "--svd");
    VLM2MLA_CHECK(!(args->kv_rank && !args->per_layer.empty()), ArgumentError,
                  "give either --kv-rank or --kv-rank-per-layer, not both");
    if (args->kv_rank) o.kv_rank = {args->kv_rank};
    if (!args->per_layer.empty()) o.kv_rank = parse_int_list(args->per_layer, "--kv-rank-per-layer");
    VLM2MLA_CHECK(!args->strategy.empty() || !args->rope_ranks.empty(), ArgumentError,
                  "give --rope-strategy (high, low, uniform, 2-norm, mkl) or --rope-ranks FILE");
    RunFlags run = args->run;
    if (run.dtype.empty()) run.dtype = "float32";  // factorisations in float32 weights (float64 inside)
    auto model = load_model(args->model, run, ModelUse::kConversion, args->offload);
    convert::CalibrationInputs calib;
    if (args->calib.given()) calib = convert::calibration_inputs(args->calib.open(*model, args->model));
    convert::Conversion c = convert::convert_model(*model, o, args->calib.given() ? &calib : nullptr);
    convert::write_converted(args->model, args->out, c);
    std::fprintf(stderr, "%s", convert::report_summary(c.report).c_str());
    if (!args->report.empty()) io::write_json_file(args->report, c.report);
    VLM2MLA_INFO("wrote ", args->out, args->report.empty() ? "" : " and " + args->report);
  });
}

void register_cache_study(CLI::App& app) {
  struct Args {
    std::string model;
    int64_t group = 32;
    bool json = false;
    CalibFlags calib;
    RunFlags run;
  };
  auto args = std::make_shared<Args>();
  CLI::App* cmd = app.add_subcommand(
      "cache-study", "On a converted model's own cached latents and RoPE keys: the reconstruction error of "
                     "int8/int4/int2 quantization with per-token against per-channel groups");
  cmd->add_option("--model", args->model, "converted model directory")->required();
  args->calib.add_to(cmd, /*required=*/true, "");
  cmd->add_option("--group", args->group, "values per group (both groupings)")->capture_default_str();
  cmd->add_flag("--json", args->json, "print the JSON result");
  args->run.add_to(cmd);
  cmd->callback([args]() {
    RunFlags run = args->run;
    if (run.dtype.empty()) run.dtype = "float32";
    auto model = load_model(args->model, run, ModelUse::kConversion);
    convert::CalibrationInputs calib = convert::calibration_inputs(args->calib.open(*model, args->model));
    nlohmann::json r = convert::cache_quant_study(*model, calib, convert::QuantStudyOptions{args->group});
    if (args->json) {
      std::printf("%s\n", r.dump(2).c_str());
      return;
    }
    std::printf("cache quantization error over %lld positions, group %lld (mean of ||x_hat_t - x_t|| / ||x_t||)\n",
                static_cast<long long>(r["positions"].get<int64_t>()), static_cast<long long>(args->group));
    std::printf("%-7s %4s  %10s  %10s\n", "tensor", "bits", "per-token", "per-channel");
    for (size_t i = 0; i + 1 < r["rows"].size(); i += 2) {
      const auto& tok = r["rows"][i];
      const auto& ch = r["rows"][i + 1];
      std::printf("%-7s %4lld  %10.4g  %10.4g\n", tok["tensor"].get<std::string>().c_str(),
                  static_cast<long long>(tok["bits"].get<int64_t>()), tok["rel_error"].get<double>(),
                  ch["rel_error"].get<double>());
    }
  });
}

}  // namespace vlm2mla::cli
