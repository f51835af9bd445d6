// vlm2mla generate --model DIR (--inputs IN.safetensors | --prompt TEXT [--image PATH ...]
//                  [--video FRAME FRAME ... [--fps X]])
//                  --max-new-tokens N [--greedy] [--out-ids F]
#include <algorithm>
#include <cstdio>

#include "common.h"
#include "core/error.h"
#include "core/log.h"
#include "generate/generate.h"
#include "io/safetensors.h"
#include "models/model.h"
#ifdef VLM2MLA_WITH_TOKENIZER
#include "generate/chat_inputs.h"
#include "tokenizer/tokenizer.h"
#endif

namespace vlm2mla::cli {

namespace {

// Streams the text of row 0 as it grows: decodes all new ids each step and prints what was added,
// holding back a trailing incomplete UTF-8 character (decoded as U+FFFD).
class TextStreamer {
 public:
  explicit TextStreamer(std::function<std::string(const std::vector<int64_t>&)> decode)
      : decode_(std::move(decode)) {}
  void push(int64_t id) {
    ids_.push_back(id);
    const std::string text = decode_(ids_);
    const std::string replacement = "\xEF\xBF\xBD";
    if (text.size() >= replacement.size() &&
        text.compare(text.size() - replacement.size(), replacement.size(), replacement) == 0) {
      return;
    }
    if (text.size() > printed_ && text.compare(0, printed_, shown_, 0, printed_) == 0) {
      std::fputs(text.c_str() + printed_, stdout);
    } else if (text != shown_) {  // the decoder rewrote earlier text (rare): print the rest anyway
      std::fputs(text.substr(std::min(printed_, text.size())).c_str(), stdout);
    }
    std::fflush(stdout);
    shown_ = text;
    printed_ = text.size();
  }

 private:
  std::function<std::string(const std::vector<int64_t>&)> decode_;
  std::vector<int64_t> ids_;
  std::string shown_;
  size_t printed_ = 0;
};

}  // namespace

void register_generate(CLI::App& app) {
  struct Args {
    std::string model, inputs, out_ids, prompt, system;
    std::vector<std::string> images, video;
    double fps = 0;
    bool raw = false;
    int64_t max_new_tokens = 32;
    bool greedy = false, sample = false;
    double temperature = -1, top_p = -1, repetition_penalty = -1;
    int64_t top_k = -1;
    uint64_t seed = 0;
    RunFlags run;
    CacheFlags cache;
  };
  auto args = std::make_shared<Args>();
  CLI::App* cmd = app.add_subcommand(
      "generate", "Generate after a prompt (--prompt, with --image files for VLMs; the answer streams "
                  "as text) or after token ids (--inputs), as transformers' generate");
  cmd->add_option("--model", args->model, "model directory")->required();
  auto* inputs = cmd->add_option(
      "--inputs", args->inputs,
      "safetensors with input_ids int64 [B,T], optional attention_mask (left padding), pixel_values, "
      "image_sizes, image_grid_thw");
  auto* prompt = cmd->add_option("--prompt", args->prompt,
                                 "the user's message, rendered with the model family's chat template");
  inputs->excludes(prompt);
  cmd->add_option("--image", args->images, "an image file (PNG or JPEG) for the prompt; repeatable")
      ->needs(prompt);
  auto* video = cmd->add_option("--video", args->video,
                                "Qwen2.5-VL: one video as its frames, already sampled (PNG or JPEG files in "
                                "order; no video-file decoding), placed after the images, before the text")
                     ->needs(prompt);
  cmd->add_option("--fps", args->fps,
                  "frames per second of the --video frames (default 24, transformers' default for frames)")
      ->check(CLI::PositiveNumber)
      ->needs(video);
  cmd->add_option("--system", args->system, "a system message for the chat template")->needs(prompt);
  cmd->add_flag("--raw", args->raw, "encode --prompt as given (with BOS), without the chat template")
      ->needs(prompt);
  cmd->add_option("--max-new-tokens", args->max_new_tokens, "tokens to generate at most")
      ->capture_default_str()
      ->check(CLI::NonNegativeNumber);
  auto* greedy = cmd->add_flag("--greedy", args->greedy, "argmax decoding (do_sample=False)");
  cmd->add_flag("--sample", args->sample, "sample (do_sample=True)")->excludes(greedy);
  cmd->add_option("--temperature", args->temperature, "sampling temperature (default: "
                                                       "generation_config.json, else 1)");
  cmd->add_option("--top-k", args->top_k, "keep the k most likely tokens (0: off; default: "
                                          "generation_config.json, else 50)");
  cmd->add_option("--top-p", args->top_p, "nucleus sampling mass (default: generation_config.json, "
                                          "else 1 = off)");
  cmd->add_option("--repetition-penalty", args->repetition_penalty,
                  "penalty for tokens already seen (default: generation_config.json, else 1)");
  cmd->add_option("--seed", args->seed, "random seed for sampling")->capture_default_str();
  cmd->add_option("--out-ids", args->out_ids,
                  "write 'generated' int64 [B, T+N] here instead of printing the new tokens");
  args->run.add_to(cmd);
  args->run.add_fuse_to(cmd);
  args->cache.add_to(cmd);
  cmd->callback([args]() {
    VLM2MLA_CHECK(!args->inputs.empty() || !args->prompt.empty(), ArgumentError,
                  "generate: give --inputs IN.safetensors or --prompt TEXT");
    auto model = load_model(args->model, args->run, ModelUse::kInference);
    GenerateOptions opts = load_generate_defaults(args->model, model->text_config());
    opts.cache = args->cache.spec();
    opts.decode = args->cache.decode_mode();
    opts.max_new_tokens = args->max_new_tokens;
    if (args->greedy) opts.sampling.do_sample = false;
    if (args->sample) opts.sampling.do_sample = true;
    if (args->temperature >= 0) opts.sampling.temperature = args->temperature;
    if (args->top_k >= 0) opts.sampling.top_k = args->top_k;
    if (args->top_p >= 0) opts.sampling.top_p = args->top_p;
    if (args->repetition_penalty >= 0) opts.sampling.repetition_penalty = args->repetition_penalty;
    opts.sampling.seed = args->seed;
    validate(opts.sampling);

    ModelInputs in;
    std::function<std::string(const std::vector<int64_t>&)> decode;  // set for text prompts
    if (!args->prompt.empty()) {
#ifdef VLM2MLA_WITH_TOKENIZER
      const ChatInputBuilder builder(*model, args->model);
      ChatInputs chat;
      VLM2MLA_CHECK(args->video.empty() || model->video_token_id() >= 0, ArgumentError, "--video given, but ",
                    model->text_config().architecture, " takes no video input (only Qwen2.5-VL does)");
      if (args->raw || model->image_token_id() < 0) {  // text-only models take the prompt as given
        VLM2MLA_CHECK(args->images.empty() || model->image_token_id() >= 0, ArgumentError,
                      "--image given, but ", model->text_config().architecture, " is a text-only model");
        VLM2MLA_CHECK(args->images.empty() && args->video.empty(), ArgumentError,
                      "--raw prompts cannot carry --image or --video: the placeholders come from the template");
        chat = builder.raw(args->prompt);
      } else {
        std::vector<ChatMessage> messages;
        if (!args->system.empty()) messages.push_back({"system", args->system, 0, {}, 0});
        const int64_t videos = args->video.empty() ? 0 : 1;
        messages.push_back({"user", args->prompt, static_cast<int64_t>(args->images.size()), {}, videos});
        std::vector<ChatVideo> chat_videos;
        if (videos > 0) chat_videos.push_back({args->video, args->fps});
        chat = builder.chat(messages, args->images, /*add_generation_prompt=*/true, chat_videos);
      }
      in = chat.inputs;
      for (int64_t id : chat.stop_ids) {
        if (std::find(opts.eos_token_ids.begin(), opts.eos_token_ids.end(), id) == opts.eos_token_ids.end()) {
          opts.eos_token_ids.push_back(id);
        }
      }
      auto tok = builder.tokenizer();
      decode = [tok](const std::vector<int64_t>& ids) { return tok->decode(ids, /*skip_special_tokens=*/true); };
      VLM2MLA_DEBUG("prompt: ", chat.rendered, " (", in.input_ids.size(1), " tokens)");
#else
      throw ArgumentError("--prompt needs tokenizers: this build has VLM2MLA_TOKENIZER=OFF (use --inputs)");
#endif
    } else {
      in = read_model_inputs(args->inputs);
    }

    const int64_t b = in.input_ids.size(0);
    const bool stream_ids = args->out_ids.empty() && b == 1 && !decode;
    const bool stream_text = args->out_ids.empty() && b == 1 && decode;
    auto first = std::make_shared<bool>(true);
    auto streamer = decode ? std::make_shared<TextStreamer>(decode) : nullptr;
    if (stream_ids) {
      std::printf("[");
      std::fflush(stdout);
    }
    if (stream_ids || stream_text) {
      const std::vector<int64_t> eos = opts.eos_token_ids;
      opts.on_step = [first, streamer, eos](const at::Tensor& tok, const at::Tensor& running) {
        if (!running[0].item<bool>()) return;
        const int64_t id = tok[0].item<int64_t>();
        if (streamer) {
          if (std::find(eos.begin(), eos.end(), id) == eos.end()) streamer->push(id);
          return;
        }
        std::printf("%s%lld", *first ? "" : ", ", static_cast<long long>(id));
        std::fflush(stdout);
        *first = false;
      };
    }
    GenerateResult r = generate(model->decoder(), model->prepare(in, /*forward_semantics=*/false), opts);
    if (stream_ids) {
      std::printf("]\n");
    } else if (stream_text) {
      std::printf("\n");
    } else if (args->out_ids.empty()) {
      // One line per row: the new ids as a JSON array (or their text), up to and including the
      // row's end-of-sequence token.
      const int64_t t = in.input_ids.size(1);
      for (int64_t row = 0; row < b; ++row) {
        std::vector<int64_t> ids;
        for (int64_t j = t; j < r.sequences.size(1); ++j) {
          const int64_t id = r.sequences[row][j].item<int64_t>();
          ids.push_back(id);
          if (std::find(opts.eos_token_ids.begin(), opts.eos_token_ids.end(), id) != opts.eos_token_ids.end()) break;
        }
        std::string line = "[";
        for (size_t k = 0; k < ids.size(); ++k) line += (k ? ", " : "") + std::to_string(ids[k]);
        std::printf("%s]\n", line.c_str());
      }
    } else {
      io::write_safetensors(args->out_ids, {{"generated", r.sequences.contiguous()}});
      VLM2MLA_INFO("wrote generated ", r.sequences.sizes(), " to ", args->out_ids);
    }
    const double decode_tps = r.decode_seconds > 0 ? b * (r.new_tokens - 1) / r.decode_seconds : 0;
    VLM2MLA_DEBUG("prefill ", r.prefill_seconds, " s, decode ", r.new_tokens, " steps, ",
                  decode_tps, " tokens/s");
  });
}

}  // namespace vlm2mla::cli
