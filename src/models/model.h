// A loaded checkpoint of any supported architecture: the language model (TextDecoder) and, for
// vision-language models, its vision side. Turns the tensors a transformers forward takes into the
// decoder's input (embeddings with image features scattered in, position ids).
#pragma once

#include <ATen/ATen.h>

#include <map>
#include <memory>
#include <optional>
#include <string>

#include "models/decoder.h"
#include "models/llava.h"
#include "models/qwen2_5_vl.h"

namespace vlm2mla {

// The tensors of an inputs file, under transformers' names.
struct ModelInputs {
  at::Tensor input_ids;       // int64 [b, s]
  at::Tensor attention_mask;  // [b, s] or undefined
  at::Tensor position_ids;    // [b, s] / [3, b, s] or undefined
  at::Tensor pixel_values;    // LLaVA [n, C, H, W]; NeXT [n, P, C, H, W]; Qwen [patches, C*T*p*p]
  at::Tensor image_sizes;     // NeXT: [n, 2] (height, width)
  at::Tensor image_grid_thw;  // Qwen: [n, 3]
  // Qwen videos (frames already sampled), as Qwen2VLVideoProcessor and Qwen2_5_VLProcessor write them:
  at::Tensor pixel_values_videos;  // [sum t*h*w patches, C*T*p*p] float
  at::Tensor video_grid_thw;       // [videos, 3] int64 (t = frame groups of temporal_patch_size)
  at::Tensor second_per_grid_ts;   // [videos] float: seconds per frame group; undefined = 1 each
  // Reads and checks them from a safetensors map (unknown names, mm_token_type_ids among them, are
  // ignored: token types follow from input_ids); errors name `origin` and the tensor.
  static ModelInputs from_tensors(const std::map<std::string, at::Tensor>& tensors,
                                  const std::string& origin);
};

// ids [1, s] with one `image_token_id` placeholder per image -> each placeholder repeated
// counts[i] times, in order (as the HF processors expand them). ArgumentError when the number of
// placeholders is not counts.size(); `what` ("image", "video") names the placeholders there.
at::Tensor expand_image_tokens(const at::Tensor& ids, int64_t image_token_id,
                               const std::vector<int64_t>& counts, const char* what = "image");

class Model {
 public:
  // A checkpoint directory: config.json and safetensors, loaded strictly.
  static std::shared_ptr<Model> load(const std::string& dir, const LoadOptions& options);
  // Checks a checkpoint from its headers alone, as load would (every tensor present with its shape,
  // none left over), without reading weights. Returns the parameter count.
  static int64_t check_checkpoint(const std::string& dir);
  // The shapes of a config.json with random weights (benchmarks of real shapes).
  static std::shared_ptr<Model> random(const std::string& config_path, const LoadOptions& options,
                                       uint64_t seed);
  // Every tensor of such a random model under its Hub checkpoint name (vision side included), in
  // walk order: what init-random writes.
  static std::vector<std::pair<std::string, at::Tensor>> random_checkpoint(const std::string& config_path,
                                                                           const LoadOptions& options,
                                                                           uint64_t seed);
  // The image token id of a VLM, -1 for text models.
  int64_t image_token_id() const { return image_token_id_; }
  // The video token id (Qwen2.5-VL), -1 for models without video input.
  int64_t video_token_id() const { return qwen_ ? qwen_->config().video_token_id : -1; }
  // Every token id that belongs to the visual side (MD-SVD's image set, METHOD.md section 4):
  // LLaVA/NeXT the image token; Qwen2.5-VL image and video pads, vision start and end. Empty for
  // text models.
  std::vector<int64_t> visual_token_ids() const;
  // The same from a config.json alone (no weights).
  static std::vector<int64_t> visual_token_ids_of(const nlohmann::json& root, const std::string& origin);
  // This model with another language model (same vision side): conversion's stage-1 and converted
  // models share the original's vision tower.
  std::shared_ptr<Model> with_decoder(std::shared_ptr<TextDecoder> decoder) const;
  const LlavaVision* llava() const { return llava_ ? &*llava_ : nullptr; }
  const QwenVisionTower* qwen_vision() const { return qwen_ ? &*qwen_ : nullptr; }

  ArchId arch() const { return decoder_->config().model_arch; }
  const TextConfig& text_config() const { return decoder_->config(); }
  const TextDecoder& decoder() const { return *decoder_; }
  void set_attention_backend(AttentionBackend backend);
  void set_mla_attention(MlaAttention mode) { decoder_->set_mla_attention(mode); }
  AttentionBackend attention_backend() const { return decoder_->attention_backend(); }

  // forward_semantics: positions as transformers' forward takes them (0..s-1 for 1-D RoPE unless
  // position_ids is given); otherwise as generate takes them (from the attention mask). M-RoPE
  // positions come from input_ids and image_grid_thw in both cases.
  Prompt prepare(const ModelInputs& inputs, bool forward_semantics) const;

  // logits float32-or-compute-dtype [b, s, V] of a forward pass.
  at::Tensor logits(const ModelInputs& inputs) const;

  // The projected image features of the inputs' images, [image tokens, d] (empty if no images).
  at::Tensor image_features(const ModelInputs& inputs) const;

  // Image tokens each of the inputs' images takes in input_ids (LLaVA: the tower's patches; NeXT:
  // from image_sizes; Qwen: t*h*w / merge^2 of image_grid_thw).
  std::vector<int64_t> image_token_counts(const ModelInputs& inputs) const;

  // The same for videos (Qwen2.5-VL: the same tower over pixel_values_videos and video_grid_thw).
  at::Tensor video_features(const ModelInputs& inputs) const;  // [video tokens, d] or undefined
  std::vector<int64_t> video_token_counts(const ModelInputs& inputs) const;

 private:
  struct VisionNames {  // where the vision side's tensors are
    LlavaWeightNames llava;
    std::string qwen;
  };
  static VisionNames vision_names(const io::TensorStore& store, const TextLayout& layout);
  static std::shared_ptr<Model> build(const nlohmann::json& root, const std::string& origin,
                                      const TextLayout& layout, const VisionNames& names,
                                      const ParamFiller& fill, const LoadOptions& options);

  std::shared_ptr<TextDecoder> decoder_;
  std::optional<LlavaVision> llava_;
  std::optional<QwenVisionTower> qwen_;
  int64_t image_token_id_ = -1;
};

}  // namespace vlm2mla
