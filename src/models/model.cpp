#include "models/model.h"

#include "core/error.h"
#include "io/json_file.h"
#include "io/tensor_store.h"

namespace vlm2mla {

namespace {

at::Tensor optional_tensor(const std::map<std::string, at::Tensor>& t, const char* name) {
  auto it = t.find(name);
  return it == t.end() ? at::Tensor() : it->second;
}

at::Tensor integral(const at::Tensor& x, const std::string& origin, const char* name) {
  if (!x.defined()) return x;
  VLM2MLA_CHECK(!at::isFloatingType(x.scalar_type()), FormatError, origin, ": tensor '", name,
                "' has dtype ", x.scalar_type(), ", expected an integer type (int64)");
  return x.to(at::kLong);
}

}  // namespace

ModelInputs ModelInputs::from_tensors(const std::map<std::string, at::Tensor>& t,
                                      const std::string& origin) {
  ModelInputs in;
  VLM2MLA_CHECK(t.count("input_ids"), FormatError, origin,
                ": missing tensor 'input_ids' (expected int64 [batch, tokens])");
  in.input_ids = integral(t.at("input_ids"), origin, "input_ids");
  VLM2MLA_CHECK(in.input_ids.dim() == 2 && in.input_ids.numel() > 0, FormatError, origin,
                ": tensor 'input_ids' has shape ", in.input_ids.sizes(), ", expected [batch, tokens]");
  in.attention_mask = integral(optional_tensor(t, "attention_mask"), origin, "attention_mask");
  in.position_ids = integral(optional_tensor(t, "position_ids"), origin, "position_ids");
  in.image_sizes = integral(optional_tensor(t, "image_sizes"), origin, "image_sizes");
  in.image_grid_thw = integral(optional_tensor(t, "image_grid_thw"), origin, "image_grid_thw");
  in.pixel_values = optional_tensor(t, "pixel_values");
  VLM2MLA_CHECK(!in.pixel_values.defined() || at::isFloatingType(in.pixel_values.scalar_type()),
                FormatError, origin, ": tensor 'pixel_values' must be floating point");
  in.pixel_values_videos = optional_tensor(t, "pixel_values_videos");
  in.video_grid_thw = integral(optional_tensor(t, "video_grid_thw"), origin, "video_grid_thw");
  in.second_per_grid_ts = optional_tensor(t, "second_per_grid_ts");
  if (in.pixel_values_videos.defined()) {
    const auto& v = in.pixel_values_videos;
    VLM2MLA_CHECK(at::isFloatingType(v.scalar_type()) && v.dim() == 2, FormatError, origin,
                  ": tensor 'pixel_values_videos' has dtype ", v.scalar_type(), " and shape ", v.sizes(),
                  ", expected floating point [patches, C*T*p*p]");
    VLM2MLA_CHECK(in.video_grid_thw.defined(), FormatError, origin,
                  ": missing tensor 'video_grid_thw' (expected int64 [videos, 3] beside "
                  "'pixel_values_videos')");
  }
  if (in.video_grid_thw.defined()) {
    VLM2MLA_CHECK(in.video_grid_thw.dim() == 2 && in.video_grid_thw.size(1) == 3, FormatError, origin,
                  ": tensor 'video_grid_thw' has shape ", in.video_grid_thw.sizes(),
                  ", expected [videos, 3] (t, h, w)");
  }
  if (in.second_per_grid_ts.defined()) {
    const auto& sec = in.second_per_grid_ts;
    const int64_t videos = in.video_grid_thw.defined() ? in.video_grid_thw.size(0) : 0;
    VLM2MLA_CHECK(in.video_grid_thw.defined(), FormatError, origin,
                  ": tensor 'second_per_grid_ts' given without 'video_grid_thw' (expected int64 "
                  "[videos, 3])");
    VLM2MLA_CHECK(sec.dim() == 1 && sec.size(0) == videos, FormatError, origin,
                  ": tensor 'second_per_grid_ts' has shape ", sec.sizes(), ", expected [", videos,
                  "] (one value per video of 'video_grid_thw')");
  }
  VLM2MLA_CHECK(!in.attention_mask.defined() || in.attention_mask.sizes() == in.input_ids.sizes(),
                FormatError, origin, ": tensor 'attention_mask' has shape ", in.attention_mask.sizes(),
                ", expected that of input_ids ", in.input_ids.sizes());
  if (in.position_ids.defined()) {
    const auto& p = in.position_ids;
    VLM2MLA_CHECK(p.size(-1) == in.input_ids.size(1) && p.size(-2) == in.input_ids.size(0) &&
                      (p.dim() == 2 || (p.dim() == 3 && p.size(0) == 3)),
                  FormatError, origin, ": tensor 'position_ids' has shape ", p.sizes(),
                  ", expected [batch, tokens] or [3, batch, tokens]");
  }
  return in;
}

std::shared_ptr<Model> Model::build(const nlohmann::json& root, const std::string& origin,
                                    const TextLayout& layout, const VisionNames& names,
                                    const ParamFiller& fill, const LoadOptions& options) {
  TextConfig config = parse_text_config(root, origin);
  DecoderWeights weights = fill_decoder_weights(config, layout, fill);
  auto model = std::make_shared<Model>();
  switch (config.model_arch) {
    case ArchId::kLlama:
    case ArchId::kQwen2:
      break;
    case ArchId::kLlava:
    case ArchId::kLlavaNext: {
      const bool next = config.model_arch == ArchId::kLlavaNext;
      LlavaConfig lc = parse_llava_config(root, origin, next);
      model->llava_ = LlavaVision::load(lc, next, config.hidden_size, names.llava, fill);
      model->image_token_id_ = lc.image_token_id;
      break;
    }
    case ArchId::kQwen2_5_VL: {
      QwenVisionConfig qc = parse_qwen_vision_config(root, origin);
      VLM2MLA_CHECK(qc.out_hidden_size == config.hidden_size, FormatError, origin,
                    ": vision_config.out_hidden_size (", qc.out_hidden_size,
                    ") must equal the language model's hidden_size (", config.hidden_size, ")");
      model->qwen_ = QwenVisionTower::load(qc, names.qwen, fill);
      model->image_token_id_ = qc.image_token_id;
      break;
    }
  }
  model->decoder_ = std::make_shared<TextDecoder>(std::move(config), std::move(weights), options);
  return model;
}

Model::VisionNames Model::vision_names(const io::TensorStore& store, const TextLayout& layout) {
  // Where the vision side sits follows from where the language model does: the Hub's LLaVA keys
  // (vision_tower.vision_model.*, multi_modal_projector.*, image_newline), what transformers 5
  // saves (vision_tower.* without vision_model.), or transformers 5's in-memory names (model.*).
  const bool hf5 = layout.decoder_prefix == "model.language_model.";
  VisionNames names;
  names.llava = hf5 ? LlavaWeightNames{"model.vision_tower.", "model.multi_modal_projector.",
                                       "model.image_newline"}
                    : LlavaWeightNames{"vision_tower.", "multi_modal_projector.", "image_newline"};
  if (store.contains(names.llava.vision_tower + "vision_model.embeddings.class_embedding")) {
    names.llava.vision_tower += "vision_model.";
  }
  names.qwen = hf5 ? "model.visual." : "visual.";
  return names;
}

int64_t Model::check_checkpoint(const std::string& dir) {
  const std::string config_path = dir + "/config.json";
  nlohmann::json root = io::read_json_file(config_path);
  const TextConfig config = parse_text_config(root, config_path);
  io::TensorStore store = io::TensorStore::open_dir(dir);
  TextLayout layout = detect_text_layout(store);
  std::set<std::string> consumed;
  int64_t params = 0;
  ParamFiller check = [&](const ParamRef& ref) {
    check_param(store, ref);
    consumed.insert(ref.name);
    int64_t n = 1;
    for (int64_t d : ref.shape) n *= d;
    params += n;
  };
  build(root, config_path, layout, vision_names(store, layout), check, LoadOptions{});
  consume_tied_head(config, layout, store, &consumed);
  check_all_consumed(store, consumed, config.architecture.empty() ? arch_hf_name(config.model_arch)
                                                                  : config.architecture);
  return params;
}

std::shared_ptr<Model> Model::load(const std::string& dir, const LoadOptions& options) {
  const std::string config_path = dir + "/config.json";
  nlohmann::json root = io::read_json_file(config_path);
  const TextConfig config = parse_text_config(root, config_path);  // fail on the config first
  io::TensorStore store = io::TensorStore::open_dir(dir);
  TextLayout layout = detect_text_layout(store);
  std::set<std::string> consumed;
  ParamFiller fill = checkpoint_filler(store, options, &consumed);
  if (options.layers_on_host) {  // decoder layers in host memory, everything else on the device
    LoadOptions host = options;
    host.device = at::Device(at::kCPU);
    ParamFiller on_host = checkpoint_filler(store, host, &consumed);
    const std::string layers = layout.decoder_prefix + "layers.";
    fill = [fill, on_host, layers](const ParamRef& ref) {
      (ref.name.compare(0, layers.size(), layers) == 0 ? on_host : fill)(ref);
    };
  }
  auto model = build(root, config_path, layout, vision_names(store, layout), fill, options);
  consume_tied_head(config, layout, store, &consumed);
  check_all_consumed(store, consumed, config.architecture.empty() ? arch_hf_name(config.model_arch)
                                                                  : config.architecture);
  return model;
}

namespace {
const char* const kHubVision[] = {"vision_tower.vision_model.", "multi_modal_projector.", "image_newline", "visual."};
}

std::shared_ptr<Model> Model::random(const std::string& config_path, const LoadOptions& options,
                                     uint64_t seed) {
  nlohmann::json root = io::read_json_file(config_path);
  VisionNames names{{kHubVision[0], kHubVision[1], kHubVision[2]}, kHubVision[3]};
  return build(root, config_path, TextLayout{}, names, random_filler(options, seed), options);
}

std::vector<std::pair<std::string, at::Tensor>> Model::random_checkpoint(const std::string& config_path,
                                                                         const LoadOptions& options,
                                                                         uint64_t seed) {
  nlohmann::json root = io::read_json_file(config_path);
  VisionNames names{{kHubVision[0], kHubVision[1], kHubVision[2]}, kHubVision[3]};
  std::vector<std::pair<std::string, at::Tensor>> out;
  ParamFiller random = random_filler(options, seed);
  ParamFiller record = [&](const ParamRef& ref) {
    random(ref);
    out.emplace_back(ref.name, *ref.slot);
  };
  build(root, config_path, TextLayout{}, names, record, options);
  return out;
}

std::vector<int64_t> Model::visual_token_ids() const {
  if (qwen_) {
    const QwenVisionConfig& c = qwen_->config();
    return {c.image_token_id, c.video_token_id, c.vision_start_token_id, c.vision_end_token_id};
  }
  if (image_token_id_ >= 0) return {image_token_id_};
  return {};
}

std::vector<int64_t> Model::visual_token_ids_of(const nlohmann::json& root, const std::string& origin) {
  const TextConfig c = parse_text_config(root, origin);
  switch (c.model_arch) {
    case ArchId::kLlama:
    case ArchId::kQwen2:
      return {};
    case ArchId::kLlava:
    case ArchId::kLlavaNext:
      return {parse_llava_config(root, origin, c.model_arch == ArchId::kLlavaNext).image_token_id};
    case ArchId::kQwen2_5_VL: {
      const QwenVisionConfig q = parse_qwen_vision_config(root, origin);
      return {q.image_token_id, q.video_token_id, q.vision_start_token_id, q.vision_end_token_id};
    }
  }
  return {};
}

std::shared_ptr<Model> Model::with_decoder(std::shared_ptr<TextDecoder> decoder) const {
  auto m = std::make_shared<Model>(*this);
  m->decoder_ = std::move(decoder);
  return m;
}

void Model::set_attention_backend(AttentionBackend backend) {
  decoder_->set_attention_backend(backend);
  if (llava_) llava_->set_attention_backend(backend);
  if (qwen_) qwen_->set_attention_backend(backend);
}

at::Tensor Model::image_features(const ModelInputs& in) const {
  if (!in.pixel_values.defined()) return {};
  if (llava_) return llava_->image_features(in.pixel_values, in.image_sizes);
  if (qwen_) {
    VLM2MLA_CHECK(in.image_grid_thw.defined(), ArgumentError,
                  "Qwen2.5-VL needs image_grid_thw [images, 3] beside pixel_values");
    return qwen_->forward(in.pixel_values, in.image_grid_thw);
  }
  throw ArgumentError(detail::concat("pixel_values given, but ", arch_hf_name(arch()),
                                     " is a text-only model"));
}

std::vector<int64_t> Model::image_token_counts(const ModelInputs& in) const {
  std::vector<int64_t> counts;
  if (!in.pixel_values.defined()) return counts;
  if (llava_) {
    const int64_t n = in.pixel_values.size(0);
    for (int64_t i = 0; i < n; ++i) {
      if (llava_->next()) {
        VLM2MLA_CHECK(in.image_sizes.defined() && in.image_sizes.size(0) == n, ArgumentError,
                      "LLaVA-NeXT needs image_sizes [", n, ", 2] beside pixel_values");
        counts.push_back(llava_->tokens_per_image(in.image_sizes[i][0].item<int64_t>(),
                                                  in.image_sizes[i][1].item<int64_t>()));
      } else {
        counts.push_back(llava_->tokens_per_image(0, 0));
      }
    }
  } else if (qwen_) {
    VLM2MLA_CHECK(in.image_grid_thw.defined(), ArgumentError, "Qwen2.5-VL needs image_grid_thw");
    const int64_t unit = qwen_->config().spatial_merge_size * qwen_->config().spatial_merge_size;
    at::Tensor g = in.image_grid_thw.to(at::kCPU);
    for (int64_t i = 0; i < g.size(0); ++i) {
      counts.push_back(g[i][0].item<int64_t>() * g[i][1].item<int64_t>() * g[i][2].item<int64_t>() / unit);
    }
  }
  return counts;
}

at::Tensor expand_image_tokens(const at::Tensor& ids, int64_t image_token_id,
                               const std::vector<int64_t>& counts, const char* what) {
  VLM2MLA_CHECK(ids.dim() == 2 && ids.size(0) == 1, ArgumentError, "expand_image_tokens: ids must be [1, s]");
  at::Tensor row = ids[0].to(at::kCPU).to(at::kLong);
  std::vector<int64_t> out;
  size_t image = 0;
  for (int64_t j = 0; j < row.size(0); ++j) {
    const int64_t id = row[j].item<int64_t>();
    if (id != image_token_id) {
      out.push_back(id);
      continue;
    }
    VLM2MLA_CHECK(image < counts.size(), ArgumentError, "the prompt has more ", what,
                  " placeholders than the ", counts.size(), " ", what, "(s) given");
    out.insert(out.end(), static_cast<size_t>(counts[image++]), image_token_id);
  }
  VLM2MLA_CHECK(image == counts.size(), ArgumentError, "the prompt has ", image, " ", what,
                " placeholder(s) but ", counts.size(), " ", what, "(s) were given");
  return at::tensor(out, at::kLong).unsqueeze(0);
}

at::Tensor Model::video_features(const ModelInputs& in) const {
  if (!in.pixel_values_videos.defined()) return {};
  VLM2MLA_CHECK(qwen_.has_value(), ArgumentError, "pixel_values_videos given, but ", arch_hf_name(arch()),
                " takes no video input (only Qwen2.5-VL does)");
  VLM2MLA_CHECK(in.video_grid_thw.defined(), ArgumentError,
                "Qwen2.5-VL needs video_grid_thw [videos, 3] beside pixel_values_videos");
  return qwen_->forward(in.pixel_values_videos, in.video_grid_thw, QwenVisual::kVideo);
}

std::vector<int64_t> Model::video_token_counts(const ModelInputs& in) const {
  std::vector<int64_t> counts;
  if (!in.video_grid_thw.defined() || !qwen_) return counts;
  const int64_t unit = qwen_->config().spatial_merge_size * qwen_->config().spatial_merge_size;
  at::Tensor g = in.video_grid_thw.to(at::kCPU).to(at::kLong);
  for (int64_t i = 0; i < g.size(0); ++i) {
    counts.push_back(g[i][0].item<int64_t>() * g[i][1].item<int64_t>() * g[i][2].item<int64_t>() / unit);
  }
  return counts;
}

Prompt Model::prepare(const ModelInputs& in, bool forward_semantics) const {
  const TextConfig& c = decoder_->config();
  Prompt p;
  p.input_ids = in.input_ids.to(at::kCPU).to(at::kLong);
  const int64_t b = p.input_ids.size(0), s = p.input_ids.size(1);
  check_token_ids(p.input_ids, c.vocab_size, "input_ids");
  p.attention_mask = in.attention_mask.defined() ? in.attention_mask.to(at::kCPU).to(at::kLong)
                                                 : at::ones({b, s}, at::kLong);
  at::Tensor features = image_features(in);
  at::Tensor video = video_features(in);  // errors for models without video input
  if (image_token_id_ >= 0) {
    // The features go in as the decoder embeds each step's positions (DecoderInput::features): feature_rows
    // numbers the image tokens in row-major order (masked_scatter's), then the video tokens after them.
    std::vector<at::Tensor> feats;
    at::Tensor rows = at::full({b, s}, -1, at::kLong);
    int64_t n_rows = 0;
    // Checks that `token` occurs once per feature row (ArgumentError: `counted` says where the features
    // came from, `detail` what their count means) and numbers its positions.
    auto place = [&](int64_t token, const char* noun, const at::Tensor& f, const char* counted, const char* detail) {
      at::Tensor is_token = p.input_ids.eq(token);
      const int64_t n_tokens = is_token.sum().item<int64_t>();
      const int64_t n_features = f.defined() ? f.size(0) : 0;
      VLM2MLA_CHECK(n_tokens == n_features, ArgumentError, "input_ids holds ", n_tokens, " ", noun, " tokens (id ",
                    token, ") but ", counted, " ", n_features, " ", noun, " features", detail);
      if (n_tokens > 0) {
        at::Tensor number = is_token.view({-1}).to(at::kLong).cumsum(0).view({b, s}) - 1 + n_rows;
        rows = at::where(is_token, number, rows);
        feats.push_back(f);
        n_rows += n_tokens;
      }
      return std::make_pair(is_token, n_tokens);
    };
    // The visual tokens (observers' image set): image tokens, and video tokens where there are any.
    p.image_mask = place(image_token_id_, "image", features, "the images give",
                         features.defined() && features.size(0) > 0 ? "" : " (no pixel_values)")
                       .first;
    const int64_t video_id = video_token_id();
    if (video_id >= 0) {
      auto [is_video, n_video] = place(video_id, "video", video, "video_grid_thw gives",
                                       video.defined() ? " (sum of t*h*w / spatial_merge_size^2)"
                                                       : " (no pixel_values_videos)");
      if (n_video > 0) p.image_mask = p.image_mask | is_video;
    }
    if (!feats.empty()) {
      p.features = feats.size() == 1 ? feats[0]
                                     : at::cat({feats[0], feats[1].to(feats[0].device(), feats[0].scalar_type())});
      p.feature_rows = rows;
    }
  } else {
    VLM2MLA_CHECK(!in.pixel_values.defined(), ArgumentError, "pixel_values given, but ",
                  arch_hf_name(arch()), " is a text-only model");
  }

  if (qwen_) {
    QwenRopeIndex r = qwen_rope_index(qwen_->config(), p.input_ids, p.attention_mask,
                                      in.image_grid_thw, in.video_grid_thw, in.second_per_grid_ts);
    p.position_ids = in.position_ids.defined() ? in.position_ids : r.position_ids;
    p.next_mrope_position = r.next_position;
    p.next_position = r.next_position[0];
  } else {
    at::Tensor from_mask = position_ids_from_mask(p.attention_mask);
    if (in.position_ids.defined()) {
      p.position_ids = in.position_ids;
    } else if (forward_semantics) {
      p.position_ids = at::arange(s, at::kLong).unsqueeze(0).expand({b, s}).contiguous();
    } else {
      p.position_ids = from_mask;
    }
    p.next_position = std::get<0>(p.position_ids.masked_fill(p.attention_mask.eq(0), -1).max(-1)) + 1;
  }
  return p;
}

at::Tensor Model::logits(const ModelInputs& inputs) const {
  Prompt p = prepare(inputs, /*forward_semantics=*/true);
  return decoder_->lm_head(decoder_->forward_hidden(p.decoder_input(), nullptr));
}

}  // namespace vlm2mla
