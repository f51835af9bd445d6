// Chat templates and the prompt -> tokens -> image expansion path of `generate --prompt --image`.
#include <gtest/gtest.h>

#include "core/error.h"
#include "core/fs.h"
#include "io/json_file.h"
#include "io/safetensors.h"
#include "models/model.h"
#include "support/fixtures.h"
#include "tokenizer/chat_template.h"

namespace vlm2mla {
namespace {

TEST(ChatTemplate, Llava15) {
  ChatFormat f = render_chat(ChatFamily::kLlava15, {{"user", "What is shown?", 1}}, "<s>");
  EXPECT_EQ(f.text, "USER: <image>\nWhat is shown? ASSISTANT:");
  EXPECT_TRUE(f.add_special_tokens);
  f = render_chat(ChatFamily::kLlava15, {{"system", "Be brief.", 0}, {"user", "Hi", 2}}, "<s>");
  EXPECT_EQ(f.text, "Be brief. USER: <image>\n<image>\nHi ASSISTANT:");
}

TEST(ChatTemplate, LlavaNextLlama3) {
  ChatFormat f = render_chat(ChatFamily::kLlavaNextLlama3, {{"user", " Describe. ", 1}}, "<|begin_of_text|>");
  EXPECT_EQ(f.text,
            "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\n<image>\nDescribe.<|eot_id|>"
            "<|start_header_id|>assistant<|end_header_id|>\n\n");
  EXPECT_FALSE(f.add_special_tokens);
  EXPECT_EQ(f.stop_tokens, std::vector<std::string>{"<|eot_id|>"});
}

TEST(ChatTemplate, Qwen25VLAddsTheDefaultSystemMessage) {
  ChatFormat f = render_chat(ChatFamily::kQwen2_5_VL, {{"user", "Describe this image.", 1}}, "");
  EXPECT_EQ(f.text,
            "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n"
            "<|vision_start|><|image_pad|><|vision_end|>Describe this image.<|im_end|>\n"
            "<|im_start|>assistant\n");
  f = render_chat(ChatFamily::kQwen2_5_VL, {{"system", "S", 0}, {"user", "U", 0}}, "");
  EXPECT_EQ(f.text, "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nU<|im_end|>\n<|im_start|>assistant\n");
  EXPECT_THROW(render_chat(ChatFamily::kQwen2_5_VL, {{"robot", "x", 0}}, ""), ArgumentError);
}

// A whole conversation (calibration data): assistant turns rendered like the others, no generation
// prompt. The expected strings are the families' Jinja templates evaluated by hand on
//   [user: image + "What is this?", assistant: "A cat.", user: "And its color?", assistant: "Gray."].
const std::vector<ChatMessage> kTwoTurns = {{"user", "What is this?", 1},
                                            {"assistant", "A cat.", 0},
                                            {"user", "And its color?", 0},
                                            {"assistant", "Gray.", 0}};

TEST(ChatTemplate, Llava15Conversation) {
  ChatFormat f = render_chat(ChatFamily::kLlava15, kTwoTurns, "<s>", /*add_generation_prompt=*/false);
  // {{ message['role'].upper() + ': '}}, '<image>\n' per image, {{ content['text'] + ' '}}.
  EXPECT_EQ(f.text, "USER: <image>\nWhat is this? ASSISTANT: A cat. USER: And its color? ASSISTANT: Gray. ");
  f = render_chat(ChatFamily::kLlava15, kTwoTurns, "<s>", /*add_generation_prompt=*/true);
  EXPECT_EQ(f.text, "USER: <image>\nWhat is this? ASSISTANT: A cat. USER: And its color? ASSISTANT: Gray. "
                    "ASSISTANT:");
}

TEST(ChatTemplate, LlavaNextLlama3Conversation) {
  ChatFormat f = render_chat(ChatFamily::kLlavaNextLlama3, kTwoTurns, "<|begin_of_text|>", false);
  EXPECT_EQ(f.text,
            "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\n<image>\nWhat is this?<|eot_id|>"
            "<|start_header_id|>assistant<|end_header_id|>\n\nA cat.<|eot_id|>"
            "<|start_header_id|>user<|end_header_id|>\n\nAnd its color?<|eot_id|>"
            "<|start_header_id|>assistant<|end_header_id|>\n\nGray.<|eot_id|>");
  // {% if loop.index0 == 0 %}{{ bos_token }}: nothing without messages.
  EXPECT_EQ(render_chat(ChatFamily::kLlavaNextLlama3, {}, "<|begin_of_text|>", false).text, "");
}

TEST(ChatTemplate, Qwen25VLConversation) {
  ChatFormat f = render_chat(ChatFamily::kQwen2_5_VL, kTwoTurns, "", false);
  EXPECT_EQ(f.text,
            "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
            "<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>What is this?<|im_end|>\n"
            "<|im_start|>assistant\nA cat.<|im_end|>\n"
            "<|im_start|>user\nAnd its color?<|im_end|>\n"
            "<|im_start|>assistant\nGray.<|im_end|>\n");
  // The default system message comes with the first message (`loop.first`): none without messages.
  EXPECT_EQ(render_chat(ChatFamily::kQwen2_5_VL, {}, "", true).text, "<|im_start|>assistant\n");
}

TEST(ImageTokens, ExpandOnePlaceholderPerImage) {
  at::Tensor ids = at::tensor({1, 9, 2, 9, 3}, at::kLong).view({1, 5});
  at::Tensor out = expand_image_tokens(ids, 9, {2, 3});
  EXPECT_TRUE(out.equal(at::tensor({1, 9, 9, 2, 9, 9, 9, 3}, at::kLong).view({1, 8})));
  EXPECT_THROW(expand_image_tokens(ids, 9, {2}), ArgumentError);
  EXPECT_THROW(expand_image_tokens(ids, 9, {1, 1, 1}), ArgumentError);
}

TEST(GeneratePrompt, QwenImageAndPromptThroughTheCli) {
  testing::TempDir dir;
  testing::write_tiny_qwen_chat_model(dir.path());
  const std::string image = testing::fixtures_dir() + "/images/images/gray_L_50x40.png";

  auto r = testing::run_cli({"generate", "--model", dir.path(), "--prompt", "Hi", "--image", image,
                             "--max-new-tokens", "5", "--greedy", "--out-ids", dir.file("g.safetensors")});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  at::Tensor g = io::read_safetensors(dir.file("g.safetensors")).at("generated");
  // The prompt: system message, user turn with the expanded image, assistant header.
  const int64_t image_tokens = g.eq(300).sum().item<int64_t>();
  EXPECT_GT(image_tokens, 0);
  EXPECT_EQ(g[0][0].item<int64_t>(), 304);  // <|im_start|>, no BOS for Qwen
  EXPECT_EQ(g.eq(302).sum().item<int64_t>(), 1);
  // The same run streaming text must succeed too (ids from a random model decode to bytes).
  r = testing::run_cli({"generate", "--model", dir.path(), "--prompt", "Hi", "--image", image,
                        "--max-new-tokens", "3", "--greedy"});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  // Two images, one given: a clear error; an image for a missing preprocessor config too.
  fs::remove_all(dir.file("preprocessor_config.json"));
  r = testing::run_cli({"generate", "--model", dir.path(), "--prompt", "Hi", "--image", image});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("preprocessor_config.json"), std::string::npos) << r.err;
}

}  // namespace
}  // namespace vlm2mla

namespace vlm2mla {
namespace {

// Qwen2.5-VL's template renders content items in order, so images may sit inside the text; LLaVA's puts
// a message's images first whatever their place.
TEST(ChatTemplate, InterleavedImagesKeepTheirPlaceForQwenOnly) {
  ChatMessage m{"user", "Compare  with  please", 2, {8, 14}};  // "Compare <image> with <image> please"
  const std::string vision = "<|vision_start|><|image_pad|><|vision_end|>";
  EXPECT_EQ(render_chat(ChatFamily::kQwen2_5_VL, {m}, "", false).text,
            "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\nCompare " + vision +
                " with " + vision + " please<|im_end|>\n");
  ChatMessage plain{"user", "Compare  with  please", 2, {}};
  EXPECT_EQ(render_chat(ChatFamily::kLlava15, {m}, "<s>", false).text,
            render_chat(ChatFamily::kLlava15, {plain}, "<s>", false).text);
}

}  // namespace
}  // namespace vlm2mla

namespace vlm2mla {
namespace {

TEST(ChatTemplate, Qwen25VLVideoItem) {
  ChatMessage m{"user", "What happens?", 1, {}, 1};
  ChatFormat f = render_chat(ChatFamily::kQwen2_5_VL, {m}, "", true);
  EXPECT_NE(f.text.find("<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>"
                        "<|vision_start|><|video_pad|><|vision_end|>What happens?<|im_end|>\n"),
            std::string::npos)
      << f.text;
  EXPECT_EQ(f.video_token, "<|video_pad|>");
}

// `generate --prompt --video`: the frames of tests/fixtures/vlm/qwen2_5_vl_video's video 0 with its
// video processor config; the prompt holds the expanded video, its tokens as the processor counts them.
TEST(GeneratePrompt, QwenVideoFramesThroughTheCli) {
  testing::TempDir dir;
  testing::write_tiny_qwen_chat_model(dir.path());
  const std::string fx = testing::fixtures_dir() + "/vlm/qwen2_5_vl_video";
  fs::copy_file(fx + "/video_preprocessor_config.json", dir.file("video_preprocessor_config.json"));
  std::vector<std::string> args = {"generate", "--model", dir.path(), "--prompt", "Hi", "--max-new-tokens", "3",
                                   "--greedy", "--out-ids", dir.file("g.safetensors"), "--fps", "0.5", "--video"};
  for (int j = 0; j < 4; ++j) args.push_back(fx + "/frames/v0_f" + std::to_string(j) + ".png");
  auto r = testing::run_cli(args);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  at::Tensor g = io::read_safetensors(dir.file("g.safetensors")).at("generated");
  EXPECT_EQ(g.eq(301).sum().item<int64_t>(), 60);  // video_grid_thw (2, 10, 12) / 4
  EXPECT_EQ(g.eq(302).sum().item<int64_t>(), 1);
  EXPECT_EQ(g.eq(300).sum().item<int64_t>(), 0);
  // --video for a model whose tokenizer lacks <|video_pad|> at config.json's video_token_id.
  nlohmann::json tok = testing::tiny_qwen_tokenizer();
  for (auto& t : tok["added_tokens"])
    if (t["content"] == "<|video_pad|>") t["id"] = 299;
  io::write_json_file(dir.file("tokenizer.json"), tok);
  r = testing::run_cli({"generate", "--model", dir.path(), "--prompt", "Hi", "--video", fx + "/frames/v0_f0.png"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("video token id is 301"), std::string::npos) << r.err;
}

}  // namespace
}  // namespace vlm2mla
