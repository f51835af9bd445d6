// vlm2mla inspect --model DIR [--json]: what a checkpoint is, from config.json and the safetensors
// headers alone (no weights are read).
#include <cstdio>
#include <map>

#include "common.h"
#include "io/tensor_store.h"
#include "models/text_config.h"
#include "models/model.h"
#include "models/weights.h"

namespace vlm2mla::cli {

namespace {
std::string human_bytes(double bytes) {
  const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  int u = 0;
  while (bytes >= 1024 && u < 4) bytes /= 1024, ++u;
  char buf[64];
  std::snprintf(buf, sizeof(buf), u == 0 ? "%.0f %s" : "%.2f %s", bytes, units[u]);
  return buf;
}
}  // namespace

void register_inspect(CLI::App& app) {
  struct Args {
    std::string model;
    bool json = false;
  };
  auto args = std::make_shared<Args>();
  CLI::App* cmd = app.add_subcommand(
      "inspect", "Show a checkpoint's architecture, dimensions, parameter count, dtype and KV-cache "
                 "bytes per token; checks every tensor's shape from the headers");
  cmd->add_option("--model", args->model, "model directory")->required();
  cmd->add_flag("--json", args->json, "print one JSON object");
  cmd->callback([args]() {
    TextConfig config = load_text_config(args->model);
    const int64_t params = Model::check_checkpoint(args->model);  // strict, headers only
    io::TensorStore store = io::TensorStore::open_dir(args->model);

    std::map<std::string, int64_t> stored;  // dtype -> parameters
    int64_t checkpoint_bytes = 0, stored_params = 0;
    for (const auto& name : store.names()) {
      const io::StTensorInfo& info = store.info(name);
      stored[io::st_dtype_name(info.dtype)] += static_cast<int64_t>(info.numel());
      checkpoint_bytes += static_cast<int64_t>(info.end - info.begin);
      stored_params += static_cast<int64_t>(info.numel());
    }
    // bf16 cache, every layer: dense keys and values, or (converted) the latent and the RoPE key.
    const MlaConfig* mla = config.mla ? &*config.mla : nullptr;
    const int64_t kv_bytes = kv_values_per_token(mla, config.num_hidden_layers,
                                                 config.num_key_value_heads, config.head_dim) * 2 +
                             (mla && mla->modality_split ? 1 : 0);  // md: one modality byte per position
    const bool latent = mla && mla->low_rank();
    nlohmann::json j;
    j["model"] = args->model;
    j["architecture"] = config.architecture.empty() ? arch_hf_name(config.arch) : config.architecture;
    j["config"] = text_config_to_json(config);
    j["parameters"] = params;
    j["dtype"] = config.torch_dtype.empty() ? "unspecified" : config.torch_dtype;
    j["stored_dtypes"] = stored;
    j["checkpoint_bytes"] = checkpoint_bytes;
    j["tensors"] = store.names().size();
    j["kv_cache"] = {{"kind", latent ? "latent" : "dense"}, {"dtype", "bfloat16"}};
    j["kv_bytes_per_token"] = kv_bytes;
    if (args->json) {
      std::printf("%s\n", j.dump(2).c_str());
      return;
    }
    const auto& c = config;
    std::printf("model:         %s\n", args->model.c_str());
    std::printf("architecture:  %s (language model: %s)\n", j["architecture"].get<std::string>().c_str(),
                arch_name(c.arch));
    std::printf("layers:        %lld, hidden %lld, intermediate %lld, vocab %lld\n",
                (long long)c.num_hidden_layers, (long long)c.hidden_size,
                (long long)c.intermediate_size, (long long)c.vocab_size);
    std::printf("attention:     %lld heads, %lld kv heads (%s), head_dim %lld, bias q/k/v %s, o %s\n",
                (long long)c.num_attention_heads, (long long)c.num_key_value_heads,
                c.num_key_value_heads == c.num_attention_heads ? "MHA" : "GQA",
                (long long)c.head_dim, c.qkv_bias ? "yes" : "no", c.o_bias ? "yes" : "no");
    std::printf("rope:          %s\n", j["config"]["rope_parameters"].dump().c_str());
    std::printf("embeddings:    %s\n", c.tie_word_embeddings ? "tied" : "separate lm_head");
    std::printf("parameters:    %lld (%.3f B)\n", (long long)params, params / 1e9);
    std::string stored_str;
    for (const auto& [k, v] : stored) stored_str += (stored_str.empty() ? "" : ", ") + k + " " + std::to_string(v);
    std::printf("dtype:         %s (config); stored: %s\n", j["dtype"].get<std::string>().c_str(),
                stored_str.c_str());
    std::printf("checkpoint:    %zu tensors, %s, all shapes as expected\n", store.names().size(),
                human_bytes(static_cast<double>(checkpoint_bytes)).c_str());
    if (mla) {
      std::string ranks;
      for (int64_t r : mla->kv_lora_rank) ranks += (ranks.empty() ? "" : ",") + std::to_string(r);
      std::printf("mla:           rope dims %lld of %lld (%s), svd %s%s%s\n", (long long)mla->qk_rope_head_dim,
                  (long long)c.head_dim, mla->rope_strategy.c_str(), svd_method_name(mla->svd),
                  ranks.empty() ? "" : ", kv_lora_rank per layer ", ranks.c_str());
    }
    std::printf("kv_bytes_per_token: %lld (%s, bf16, all layers)\n", (long long)kv_bytes,
                latent ? "latent + RoPE key" : "dense K+V");
  });
}

}  // namespace vlm2mla::cli
