#include "support/fixtures.h"

#include "core/fs.h"
#include "io/json_file.h"
#include "io/safetensors.h"

namespace vlm2mla::testing {

const std::vector<std::string>& text_fixture_names() {
  static const std::vector<std::string> names = {"llama-mha", "llama3-gqa", "qwen2"};
  return names;
}

TextFixture load_text_fixture(const std::string& name) {
  TextFixture f;
  f.name = name;
  f.dir = fixtures_dir() + "/text/" + name;
  f.model_dir = f.dir + "/model";
  f.inputs = io::read_safetensors(f.dir + "/inputs.safetensors");
  f.inputs_row1 = io::read_safetensors(f.dir + "/inputs_row1.safetensors");
  f.expected = io::read_safetensors(f.dir + "/expected.safetensors");
  nlohmann::json meta = io::read_json_file(f.dir + "/meta.json");
  f.pad = meta.at("pad").get<int64_t>();
  f.hf_bf16_error = meta.value("hf_bf16_cuda_vs_fp32_max_abs", 0.0);
  return f;
}

GenerateOptions greedy_options(const std::string& model_dir, const TextConfig& config, int64_t n) {
  GenerateOptions o = load_generate_defaults(model_dir, config);
  o.max_new_tokens = n;
  o.sampling.do_sample = false;
  return o;
}

namespace {
at::Tensor select_valid(const at::Tensor& x, const at::Tensor& valid) {
  at::Tensor xf = x.to(at::kCPU).to(at::kDouble);
  if (!valid.defined()) return xf.reshape({-1});
  return xf.index({valid.to(at::kCPU).to(at::kBool)}).reshape({-1});
}
}  // namespace

double max_abs_error(const at::Tensor& a, const at::Tensor& b, const at::Tensor& valid) {
  return (select_valid(a, valid) - select_valid(b, valid)).abs().max().item<double>();
}

at::Tensor real_positions(const ModelInputs& in) {
  return in.attention_mask.defined() ? in.attention_mask.ne(0) : at::ones_like(in.input_ids, at::kBool);
}

double max_rel_error(const at::Tensor& a, const at::Tensor& b, const at::Tensor& valid) {
  return max_abs_error(a, b, valid) / select_valid(b, valid).abs().max().item<double>();
}

nlohmann::json tiny_qwen_tokenizer() {
  nlohmann::json vocab = nlohmann::json::object();
  int extra = 0;
  for (int b = 0; b < 256; ++b) {
    const bool printable = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174);
    const int cp = printable ? b : 256 + extra++;
    std::string utf8;
    if (cp < 0x80) {
      utf8 = std::string(1, static_cast<char>(cp));
    } else {
      utf8 = {static_cast<char>(0xC0 | (cp >> 6)), static_cast<char>(0x80 | (cp & 0x3F))};
    }
    vocab[utf8] = b;
  }
  nlohmann::json added = nlohmann::json::array();
  const std::vector<std::pair<std::string, int>> specials = {
      {"<|image_pad|>", 300}, {"<|video_pad|>", 301}, {"<|vision_start|>", 302}, {"<|vision_end|>", 303},
      {"<|im_start|>", 304},  {"<|im_end|>", 305},       {"<|endoftext|>", 306}};
  for (const auto& [t, id] : specials) {
    added.push_back({{"id", id}, {"content", t}, {"single_word", false}, {"lstrip", false},
                     {"rstrip", false}, {"normalized", false}, {"special", true}});
  }
  return {{"version", "1.0"},
          {"added_tokens", added},
          {"normalizer", nullptr},
          {"pre_tokenizer", {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"trim_offsets", true},
                             {"use_regex", true}}},
          {"post_processor", nullptr},
          {"decoder", {{"type", "ByteLevel"}, {"add_prefix_space", true}, {"trim_offsets", true},
                       {"use_regex", true}}},
          {"model", {{"type", "BPE"}, {"dropout", nullptr}, {"unk_token", nullptr},
                     {"continuing_subword_prefix", ""}, {"end_of_word_suffix", ""},
                     {"fuse_unk", false}, {"byte_fallback", false}, {"ignore_merges", false},
                     {"vocab", vocab}, {"merges", nlohmann::json::array()}}}};
}

void write_tiny_qwen_chat_model(const std::string& dir) {
  const std::string src = fixtures_dir() + "/vlm/qwen2_5_vl/model";
  for (const char* f : {"config.json", "model.safetensors", "generation_config.json"}) {
    fs::copy_file(src + "/" + f, dir + "/" + f);
  }
  fs::copy_file(fixtures_dir() + "/../../configs/preprocessor/tiny-qwen2-vl.json",
                dir + "/preprocessor_config.json");
  io::write_json_file(dir + "/tokenizer.json", tiny_qwen_tokenizer());
}

}  // namespace vlm2mla::testing
