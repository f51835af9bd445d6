#include "vision/processor_config.h"

#include <cmath>

#include "core/error.h"
#include "core/fs.h"
#include "io/json_file.h"

namespace vlm2mla::vision {

namespace {

const std::vector<double> kClipMean = {0.48145466, 0.4578275, 0.40821073};
const std::vector<double> kClipStd = {0.26862954, 0.26130258, 0.27577711};

struct TypeEntry {
  const char* name;
  ProcessorKind kind;
  std::optional<Backend> backend;  // nullopt: the default (torchvision)
};
const TypeEntry kTypes[] = {
    {"CLIPImageProcessor", ProcessorKind::kClip, std::nullopt},
    {"CLIPImageProcessorFast", ProcessorKind::kClip, Backend::kTorchvision},
    {"CLIPImageProcessorPil", ProcessorKind::kClip, Backend::kPil},
    {"LlavaNextImageProcessor", ProcessorKind::kLlavaNext, std::nullopt},
    {"LlavaNextImageProcessorFast", ProcessorKind::kLlavaNext, Backend::kTorchvision},
    {"LlavaNextImageProcessorPil", ProcessorKind::kLlavaNext, Backend::kPil},
    {"Qwen2VLImageProcessor", ProcessorKind::kQwen2Vl, std::nullopt},
    {"Qwen2VLImageProcessorFast", ProcessorKind::kQwen2Vl, Backend::kTorchvision},
    {"Qwen2VLImageProcessorPil", ProcessorKind::kQwen2Vl, Backend::kPil},
};

int64_t get_int(const nlohmann::json& j, const std::string& key, const std::string& src) {
  const auto& v = j.at(key);
  VLM2MLA_CHECK(v.is_number_integer() || (v.is_number_float() && std::floor(v.get<double>()) == v.get<double>()),
                FormatError, src, ": '", key, "' must be an integer, got ", v.dump());
  return v.is_number_integer() ? v.get<int64_t>() : static_cast<int64_t>(v.get<double>());
}

bool get_bool(const nlohmann::json& j, const std::string& key, bool def, const std::string& src) {
  if (!j.contains(key) || j.at(key).is_null()) return def;
  VLM2MLA_CHECK(j.at(key).is_boolean(), FormatError, src, ": '", key, "' must be true or false, got ",
                j.at(key).dump());
  return j.at(key).get<bool>();
}

std::vector<double> get_triple(const nlohmann::json& j, const std::string& key, const std::vector<double>& def,
                               const std::string& src) {
  if (!j.contains(key) || j.at(key).is_null()) return def;
  const auto& v = j.at(key);
  if (v.is_number()) return std::vector<double>(3, v.get<double>());
  VLM2MLA_CHECK(v.is_array() && v.size() == 3, FormatError, src, ": '", key,
                "' must be a number or a list of 3 numbers, got ", v.dump());
  std::vector<double> out;
  for (const auto& e : v) {
    VLM2MLA_CHECK(e.is_number(), FormatError, src, ": '", key, "' must hold numbers, got ", v.dump());
    out.push_back(e.get<double>());
  }
  return out;
}

void parse_size(const nlohmann::json& j, ProcessorConfig& c, const std::string& src) {
  if (!j.contains("size") || j.at("size").is_null()) return;
  const auto& s = j.at("size");
  c.size_shortest_edge = c.size_longest_edge = c.size_height = c.size_width = 0;
  if (s.is_number_integer()) {  // get_size_dict(int, default_to_square=False) -> shortest_edge
    c.size_shortest_edge = s.get<int64_t>();
    return;
  }
  VLM2MLA_CHECK(s.is_object(), FormatError, src, ": 'size' must be an integer or an object, got ", s.dump());
  if (s.contains("shortest_edge")) c.size_shortest_edge = get_int(s, "shortest_edge", src);
  if (s.contains("longest_edge")) c.size_longest_edge = get_int(s, "longest_edge", src);
  if (s.contains("height")) c.size_height = get_int(s, "height", src);
  if (s.contains("width")) c.size_width = get_int(s, "width", src);
  if (s.contains("min_pixels")) c.size_shortest_edge = get_int(s, "min_pixels", src);
  if (s.contains("max_pixels")) c.size_longest_edge = get_int(s, "max_pixels", src);
}

void parse_crop(const nlohmann::json& j, ProcessorConfig& c, const std::string& src) {
  if (!j.contains("crop_size") || j.at("crop_size").is_null()) return;
  const auto& s = j.at("crop_size");
  if (s.is_number_integer()) {  // get_size_dict(int, default_to_square=True)
    c.crop_height = c.crop_width = s.get<int64_t>();
    return;
  }
  VLM2MLA_CHECK(s.is_object() && s.contains("height") && s.contains("width"), FormatError, src,
                ": 'crop_size' must be an integer or {\"height\", \"width\"}, got ", s.dump());
  c.crop_height = get_int(s, "height", src);
  c.crop_width = get_int(s, "width", src);
}

}  // namespace

const char* to_string(ProcessorKind k) {
  switch (k) {
    case ProcessorKind::kClip: return "clip";
    case ProcessorKind::kLlavaNext: return "llava_next";
    case ProcessorKind::kQwen2Vl: return "qwen2_vl";
  }
  return "?";
}

const char* to_string(Backend b) {
  switch (b) {
    case Backend::kTorchvision: return "torchvision";
    case Backend::kPil: return "pil";
  }
  return "?";
}

Backend parse_backend(const std::string& s, const std::string& what) {
  if (s == "torchvision" || s == "torch" || s == "fast") return Backend::kTorchvision;
  if (s == "pil" || s == "slow") return Backend::kPil;
  throw ArgumentError(what + ": unknown backend '" + s + "' (expected torchvision or pil)");
}

const std::vector<std::string>& supported_processor_types() {
  static const std::vector<std::string> names = [] {
    std::vector<std::string> v;
    for (const auto& t : kTypes) v.push_back(t.name);
    return v;
  }();
  return names;
}

ProcessorConfig parse_processor_config(const nlohmann::json& j, const std::string& src,
                                       std::optional<Backend> backend) {
  VLM2MLA_CHECK(j.is_object(), FormatError, src, ": expected a JSON object");
  VLM2MLA_CHECK(j.contains("image_processor_type") && j.at("image_processor_type").is_string(), FormatError, src,
                ": missing 'image_processor_type' (supported: CLIPImageProcessor, LlavaNextImageProcessor, "
                "Qwen2VLImageProcessor and their Fast/Pil variants)");
  ProcessorConfig c;
  c.source = src;
  c.image_processor_type = j.at("image_processor_type").get<std::string>();
  const TypeEntry* entry = nullptr;
  for (const auto& t : kTypes)
    if (c.image_processor_type == t.name) entry = &t;
  if (entry == nullptr) {
    std::string list;
    for (const auto& n : supported_processor_types()) list += (list.empty() ? "" : ", ") + n;
    throw FormatError(src + ": unsupported image_processor_type '" + c.image_processor_type +
                      "' (supported: " + list + ")");
  }
  c.kind = entry->kind;
  c.backend = backend ? *backend : entry->backend.value_or(Backend::kTorchvision);

  // Class defaults (transformers' class attributes).
  switch (c.kind) {
    case ProcessorKind::kClip:
    case ProcessorKind::kLlavaNext:
      c.size_shortest_edge = 224;
      c.crop_height = c.crop_width = 224;
      c.do_center_crop = true;
      c.do_pad = c.kind == ProcessorKind::kLlavaNext;
      if (c.kind == ProcessorKind::kLlavaNext)
        c.image_grid_pinpoints = {{336, 672}, {672, 336}, {672, 672}, {1008, 336}, {336, 1008}};
      break;
    case ProcessorKind::kQwen2Vl:
      c.size_shortest_edge = 56 * 56;
      c.size_longest_edge = 28 * 28 * 1280;
      c.do_center_crop = false;
      c.do_pad = false;
      break;
  }
  c.image_mean = kClipMean;
  c.image_std = kClipStd;

  c.do_resize = get_bool(j, "do_resize", c.do_resize, src);
  c.do_rescale = get_bool(j, "do_rescale", c.do_rescale, src);
  c.do_normalize = get_bool(j, "do_normalize", c.do_normalize, src);
  c.do_convert_rgb = get_bool(j, "do_convert_rgb", c.do_convert_rgb, src);
  if (c.kind != ProcessorKind::kQwen2Vl) c.do_center_crop = get_bool(j, "do_center_crop", c.do_center_crop, src);
  if (c.kind == ProcessorKind::kLlavaNext) c.do_pad = get_bool(j, "do_pad", c.do_pad, src);
  parse_size(j, c, src);
  parse_crop(j, c, src);
  if (j.contains("resample") && !j.at("resample").is_null()) c.resample = static_cast<int>(get_int(j, "resample", src));
  VLM2MLA_CHECK(c.resample == 3, FormatError, src, ": resample ", c.resample,
                " is not supported (only 3 = BICUBIC, what the supported models publish)");
  if (j.contains("rescale_factor") && !j.at("rescale_factor").is_null()) {
    VLM2MLA_CHECK(j.at("rescale_factor").is_number(), FormatError, src, ": 'rescale_factor' must be a number");
    c.rescale_factor = j.at("rescale_factor").get<double>();
    VLM2MLA_CHECK(c.rescale_factor != 0.0, FormatError, src, ": 'rescale_factor' must not be 0");
  }
  c.image_mean = get_triple(j, "image_mean", c.image_mean, src);
  c.image_std = get_triple(j, "image_std", c.image_std, src);
  for (double s : c.image_std) VLM2MLA_CHECK(s != 0.0, FormatError, src, ": 'image_std' holds a 0");

  switch (c.kind) {
    case ProcessorKind::kClip:
    case ProcessorKind::kLlavaNext:
      VLM2MLA_CHECK(!c.do_resize || c.size_shortest_edge > 0 || (c.size_height > 0 && c.size_width > 0),
                    FormatError, src, ": 'size' must give shortest_edge or height and width");
      VLM2MLA_CHECK(!c.do_center_crop || (c.crop_height > 0 && c.crop_width > 0), FormatError, src,
                    ": 'crop_size' must be positive");
      if (c.kind == ProcessorKind::kLlavaNext && j.contains("image_grid_pinpoints")) {
        const auto& p = j.at("image_grid_pinpoints");
        VLM2MLA_CHECK(p.is_array() && !p.empty(), FormatError, src,
                      ": 'image_grid_pinpoints' must be a non-empty list of [height, width]");
        c.image_grid_pinpoints.clear();
        for (const auto& e : p) {
          VLM2MLA_CHECK(e.is_array() && e.size() == 2 && e[0].is_number_integer() && e[1].is_number_integer() &&
                            e[0].get<int64_t>() > 0 && e[1].get<int64_t>() > 0,
                        FormatError, src, ": 'image_grid_pinpoints' entry ", e.dump(),
                        " is not [height, width] of positive integers");
          c.image_grid_pinpoints.emplace_back(e[0].get<int64_t>(), e[1].get<int64_t>());
        }
      }
      break;
    case ProcessorKind::kQwen2Vl:
      if (j.contains("min_pixels") && !j.at("min_pixels").is_null()) c.size_shortest_edge = get_int(j, "min_pixels", src);
      if (j.contains("max_pixels") && !j.at("max_pixels").is_null()) c.size_longest_edge = get_int(j, "max_pixels", src);
      VLM2MLA_CHECK(c.size_shortest_edge > 0 && c.size_longest_edge > 0, FormatError, src,
                    ": size must contain 'shortest_edge' and 'longest_edge' (or min_pixels and max_pixels)");
      if (j.contains("patch_size")) c.patch_size = get_int(j, "patch_size", src);
      if (j.contains("temporal_patch_size")) c.temporal_patch_size = get_int(j, "temporal_patch_size", src);
      if (j.contains("merge_size")) c.merge_size = get_int(j, "merge_size", src);
      VLM2MLA_CHECK(c.patch_size > 0 && c.temporal_patch_size > 0 && c.merge_size > 0, FormatError, src,
                    ": patch_size, temporal_patch_size and merge_size must be positive");
      break;
  }
  return c;
}

ProcessorConfig load_processor_config(const std::string& model_dir, std::optional<Backend> backend) {
  // A directory (or a path that is not a .json file) names the model directory.
  const bool is_file_path = !fs::is_directory(model_dir) && fs::extension(model_dir) == ".json";
  const std::string path = is_file_path ? model_dir : fs::join(model_dir, "preprocessor_config.json");
  VLM2MLA_CHECK(fs::is_regular_file(path), IoError, path,
                ": missing (the image processor's preprocessor_config.json is needed to preprocess images)");
  return parse_processor_config(io::read_json_file(path), path, backend);
}

}  // namespace vlm2mla::vision
