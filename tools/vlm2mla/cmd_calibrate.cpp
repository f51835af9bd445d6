// vlm2mla calibrate --model DIR --calib {IN.safetensors,DATA.json} [--num-calib N] [--seed S]
//                   --rope-strategy {2-norm,mkl} --out RANKS.safetensors
// RoPE-pair importance from calibration data, observed on the model's own forward.
#include "common.h"
#include "convert/calib_data.h"
#include "convert/rope_ranks.h"
#include "convert/rope_scores.h"
#include "core/error.h"
#include "core/log.h"
#include "models/model.h"

namespace vlm2mla::cli {

using convert::CalibrationData;
using convert::MklScores;
using convert::RopeRanks;
using convert::TwoNormScores;

void register_calibrate(CLI::App& app) {
  struct Args {
    std::string model, strategy, out;
    CalibFlags calib;
    RunFlags run;
  };
  auto args = std::make_shared<Args>();
  CLI::App* cmd = app.add_subcommand(
      "calibrate", "Score each RoPE frequency pair per layer and kv head on calibration data and "
                   "write the ranks (rope_rank uint8 [layers, n_kv, head_dim], score float32)");
  cmd->add_option("--model", args->model, "model directory")->required();
  args->calib.add_to(cmd, /*required=*/true, "");
  cmd->add_option("--rope-strategy", args->strategy,
                  "2-norm (MHA2MLA: query x key pair norms) or mkl (MHA2MLA-VLM: modality-balanced KL "
                  "of attention without the pair)")
      ->required();
  cmd->add_option("--out", args->out, "output ranks .safetensors")->required();
  args->run.add_to(cmd);
  cmd->callback([args]() {
    VLM2MLA_CHECK(args->strategy == "2-norm" || args->strategy == "mkl", ArgumentError,
                  "--rope-strategy: unknown strategy '", args->strategy,
                  "' (calibrate supports 2-norm and mkl; high, low and uniform need no calibration)");
    auto model = load_model(args->model, args->run, ModelUse::kConversion);
    const std::shared_ptr<CalibrationData> opened = args->calib.open(*model, args->model);
    const CalibrationData& data = *opened;
    at::Tensor score;
    if (args->strategy == "2-norm") {
      TwoNormScores obs(model->text_config());
      convert::run_calibration(*model, data, obs);
      score = obs.scores();
      VLM2MLA_INFO("2-norm: scored ", obs.tokens(), " calibration tokens");
    } else {
      MklScores obs(model->text_config());
      convert::run_calibration(*model, data, obs);
      score = obs.scores();
      VLM2MLA_INFO("mkl: scored ", obs.image_queries(), " image and ", obs.text_queries(),
                   " text query tokens");
    }
    RopeRanks ranks = convert::ranks_from_scores(score);
    ranks.source = data.describe();
    ranks.strategy = args->strategy;
    convert::write_rope_ranks(args->out, ranks);
    VLM2MLA_INFO("wrote rope_rank ", ranks.rank.sizes(), " and score ", ranks.score.sizes(), " to ",
                 args->out);
  });
}

}  // namespace vlm2mla::cli
