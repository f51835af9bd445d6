// End-to-end conversion of the fixture models (all families): exactness at full rank, the partial-RoPE
// surgery against its definition, md's errors, checkpoints that load and run, and bad options.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>

#include "convert/converter.h"
#include "convert/rope_ranks.h"
#include "convert/surgery.h"
#include "core/error.h"
#include "generate/generate.h"
#include "io/json_file.h"
#include "io/safetensors.h"
#include "io/tensor_store.h"
#include "models/model.h"
#include "nn/rope.h"
#include "support/fixtures.h"

namespace vlm2mla::convert {
namespace {

using testing::fixtures_dir;
using testing::max_rel_error;

const std::vector<std::string>& all_models() {
  static const std::vector<std::string> kModels = {"text/llama-mha", "text/llama3-gqa", "text/qwen2",
                                                   "vlm/llava",      "vlm/llava-next",  "vlm/qwen2_5_vl"};
  return kModels;
}

struct Loaded {
  std::string model_dir;
  std::shared_ptr<Model> model;
  ModelInputs inputs;
  CalibrationInputs calib;
};

Loaded load(const std::string& name) {
  Loaded l;
  const std::string dir = fixtures_dir() + "/" + name;
  l.model_dir = dir + "/model";
  l.model = Model::load(l.model_dir, LoadOptions{});
  l.model->set_attention_backend(AttentionBackend::kReference);
  l.inputs = ModelInputs::from_tensors(io::read_safetensors(dir + "/inputs.safetensors"), dir);
  l.calib = calibration_inputs(l.inputs);
  return l;
}


// The largest D whose r_kv reaches the rank of [W_kc; W_v] (the fixtures' dims make it exact).
int64_t full_rank_d(const TextConfig& c, int64_t R) {
  const int64_t rows = c.num_key_value_heads * (2 * c.head_dim - R);
  const int64_t max_r = std::min(rows, c.hidden_size);
  EXPECT_EQ(max_r % c.num_key_value_heads, 0);
  return max_r / c.num_key_value_heads;
}

class ConvertAll : public ::testing::TestWithParam<std::string> {};

TEST_P(ConvertAll, AllPairsAndFullRankReproduceTheOriginal) {
  Loaded l = load(GetParam());
  const TextConfig& c = l.model->text_config();
  at::Tensor ref = l.model->logits(l.inputs);
  for (SvdMethod svd : {SvdMethod::kNone, SvdMethod::kJoint}) {
    ConvertOptions o;
    o.rope_strategy = "high";
    o.rope_dims = c.head_dim;  // every pair keeps RoPE
    o.svd = svd;
    if (svd != SvdMethod::kNone) o.kv_rank = {full_rank_d(c, c.head_dim)};
    Conversion conv = convert_model(*l.model, o, &l.calib);
    at::Tensor got = conv.model->logits(l.inputs);
    EXPECT_LT(max_rel_error(got, ref, testing::real_positions(l.inputs)), 1e-4) << svd_method_name(svd);
  }
}

TEST_P(ConvertAll, FullRankFactorisationsReproduceStage1) {
  Loaded l = load(GetParam());
  const TextConfig& c = l.model->text_config();
  const int64_t R = c.head_dim / 2;
  std::vector<SvdMethod> methods = {SvdMethod::kJoint, SvdMethod::kWhitened};
  if (l.model->image_token_id() >= 0) methods.push_back(SvdMethod::kMd);
  ConvertOptions o;
  o.rope_strategy = "mkl";
  o.rope_dims = R;
  Conversion stage1 = convert_model(*l.model, o, &l.calib);
  at::Tensor ref = stage1.model->logits(l.inputs);
  // Partial RoPE changes the model (a test that could not fail otherwise).
  EXPECT_GT(max_rel_error(ref, l.model->logits(l.inputs), testing::real_positions(l.inputs)), 1e-3);
  for (SvdMethod svd : methods) {
    o.svd = svd;
    o.kv_rank = {full_rank_d(c, R)};
    Conversion conv = convert_model(*l.model, o, &l.calib);
    // whitened/md are exact on the calibration activations (these inputs), joint everywhere.
    EXPECT_LT(max_rel_error(conv.model->logits(l.inputs), ref, testing::real_positions(l.inputs)), 1e-4)
        << svd_method_name(svd);
  }
}

// Layer 0 by the definition: RoPE on the kept pairs only, the other dims untouched, then each head's
// dims reordered [kept first halves | kept second halves | the rest].
class QkTap : public DecoderObserver {
 public:
  void queries_keys(int64_t layer, const at::Tensor& q0, const at::Tensor& k0, const at::Tensor& q,
                    const at::Tensor& k, const at::Tensor&, const at::Tensor&) override {
    if (layer == 0) pre_q = q0, pre_k = k0, post_q = q, post_k = k;
  }
  at::Tensor pre_q, pre_k, post_q, post_k;
};

TEST_P(ConvertAll, PartialRopeMatchesItsDefinitionAtLayer0) {
  Loaded l = load(GetParam());
  const TextConfig& c = l.model->text_config();
  const int64_t dh = c.head_dim, R = 6 <= dh ? 6 : 2, hq = c.num_attention_heads, hkv = c.num_key_value_heads;
  ConvertOptions o;
  o.rope_strategy = "2-norm";
  o.rope_dims = R;
  Conversion conv = convert_model(*l.model, o, &l.calib);
  Prompt p = l.model->prepare(l.inputs, true);
  QkTap orig, conv_tap;
  l.model->decoder().forward_hidden(p.decoder_input(), nullptr, &orig);
  conv.model->decoder().forward_hidden(p.decoder_input(), nullptr, &conv_tap);
  at::Tensor positions = p.position_ids;
  if (!c.rope.mrope_section.empty() && positions.dim() == 2) positions = positions.unsqueeze(0).expand({3, -1, -1});
  RopeCosSin cs = rope_cos_sin(make_rope_table(c.rope, dh), positions, at::kFloat);
  at::Tensor q_full = apply_rope(orig.pre_q, cs), k_full = apply_rope(orig.pre_k, cs);
  auto kept = kept_pair_lists(conv.ranks, R / 2)[0];
  for (int64_t h = 0; h < hq; ++h) {
    const int64_t g = h / (hq / hkv);
    at::Tensor is_kept = at::zeros({dh}, at::kBool);
    for (int64_t k : kept[static_cast<size_t>(g)]) is_kept[k] = true, is_kept[k + dh / 2] = true;
    at::Tensor expect = at::where(is_kept, q_full.select(1, h), orig.pre_q.select(1, h))
                            .index_select(-1, head_permutation(kept[static_cast<size_t>(g)], dh));
    EXPECT_LT((conv_tap.post_q.select(1, h) - expect).abs().max().item<double>(), 1e-5) << "q head " << h;
  }
  for (int64_t g = 0; g < hkv; ++g) {
    at::Tensor is_kept = at::zeros({dh}, at::kBool);
    for (int64_t k : kept[static_cast<size_t>(g)]) is_kept[k] = true, is_kept[k + dh / 2] = true;
    at::Tensor expect = at::where(is_kept, k_full.select(1, g), orig.pre_k.select(1, g))
                            .index_select(-1, head_permutation(kept[static_cast<size_t>(g)], dh));
    EXPECT_LT((conv_tap.post_k.select(1, g) - expect).abs().max().item<double>(), 1e-5) << "k head " << g;
  }
}

TEST_P(ConvertAll, CheckpointLoadsAndRunsLikeTheInMemoryModel) {
  Loaded l = load(GetParam());
  const TextConfig& c = l.model->text_config();
  const bool vlm = l.model->image_token_id() >= 0;
  ConvertOptions o;
  o.rope_strategy = "uniform";
  o.rope_dims = 4;
  o.svd = vlm ? SvdMethod::kMd : SvdMethod::kWhitened;
  o.kv_rank = {};
  for (int64_t l2 = 0; l2 < c.num_hidden_layers; ++l2) o.kv_rank.push_back(2 + l2);  // per-layer ranks
  Conversion conv = convert_model(*l.model, o, &l.calib);
  testing::TempDir tmp;
  const std::string out = tmp.file("converted");
  write_converted(l.model_dir, out, conv);
  auto loaded = Model::load(out, LoadOptions{});
  loaded->set_attention_backend(AttentionBackend::kReference);
  ASSERT_TRUE(loaded->text_config().mla.has_value());
  EXPECT_EQ(loaded->text_config().mla->kv_lora_rank, conv.model->text_config().mla->kv_lora_rank);
  EXPECT_EQ(loaded->text_config().mla->modality_split, vlm);
  // Untouched tensors are copied bit for bit; the original attention tensors are gone.
  io::TensorStore src = io::TensorStore::open_dir(l.model_dir), dst = io::TensorStore::open_dir(out);
  const TextLayout layout = detect_text_layout(src);
  // The converted tensors are stored in the source's dtype (bfloat16 for the qwen2 fixture).
  const std::string q0 = layout.decoder_prefix + "layers.0.self_attn.q_proj.weight";
  EXPECT_EQ(dst.info(q0).dtype, src.info(q0).dtype);
  const bool exact_dtype = src.info(q0).dtype == io::StDtype::kF32;
  at::Tensor a = loaded->logits(l.inputs), b = conv.model->logits(l.inputs);
  EXPECT_LT(max_rel_error(a, b, testing::real_positions(l.inputs)), exact_dtype ? 1e-6 : 3e-2);
  const std::string embed = layout.decoder_prefix + "embed_tokens.weight";
  EXPECT_TRUE(at::equal(src.tensor(embed), dst.tensor(embed)));
  EXPECT_FALSE(dst.contains(layout.decoder_prefix + "layers.0.self_attn.k_proj.weight"));
  EXPECT_TRUE(dst.contains(layout.decoder_prefix + "layers.0.self_attn.k_rope_proj.weight"));
  EXPECT_EQ(dst.contains(layout.decoder_prefix + "layers.0.self_attn.kv_a_proj_image.weight"), vlm);
  for (const auto& name : src.names()) {
    if (name.find(".self_attn.") == std::string::npos) EXPECT_TRUE(dst.contains(name)) << name;
  }
  // Incremental decode equals the full forward on the converted model (images in the prompt).
  Prompt p = loaded->prepare(l.inputs, false);
  GenerateOptions g;
  g.max_new_tokens = 4;
  GenerateResult r = generate(loaded->decoder(), p, g);
  const int64_t s = p.input_ids.size(1);
  at::Tensor fresh = r.sequences.narrow(1, s, r.sequences.size(1) - s);  // [b, 4]
  ASSERT_EQ(fresh.size(1), 4);
  at::Tensor ids = r.sequences;
  ModelInputs full = l.inputs;
  full.input_ids = ids;
  full.attention_mask = at::cat({p.attention_mask, at::ones_like(fresh, at::kLong)}, 1);
  full.position_ids = at::Tensor();
  Prompt pf = loaded->prepare(full, false);
  at::Tensor logits = loaded->decoder().lm_head(loaded->decoder().forward_hidden(pf.decoder_input(), nullptr));
  at::Tensor greedy = logits.narrow(1, s - 1, 4).argmax(-1);
  EXPECT_TRUE(at::equal(greedy, fresh)) << greedy << fresh;
  // Converting the converted model is refused.
  const std::string again = testing::argument_error([&] { convert_model(*loaded, o, &l.calib); });
  EXPECT_NE(again.find("already converted"), std::string::npos) << again;
  EXPECT_THROW(write_converted(l.model_dir, out, conv), ArgumentError);  // out exists
}

INSTANTIATE_TEST_SUITE_P(Fixtures, ConvertAll, ::testing::ValuesIn(all_models()),
                         [](const auto& info) {
                           std::string n = info.param.substr(info.param.find('/') + 1);
                           for (char& ch : n) ch = std::isalnum(static_cast<unsigned char>(ch)) ? ch : '_';
                           return n;
                         });

// md's per-modality activation error is at most joint's and falls as the rank grows.
TEST(Conversion, MdErrorsAreBelowJointAndFallWithRank) {
  for (const std::string name : {"vlm/llava", "vlm/llava-next", "vlm/qwen2_5_vl"}) {
    Loaded l = load(name);
    std::map<std::pair<int64_t, std::string>, double> previous;
    for (int64_t D : {1, 2, 4, 8}) {
      ConvertOptions o;
      o.rope_strategy = "high";
      o.rope_dims = 4;
      o.kv_rank = {D};
      o.svd = SvdMethod::kJoint;
      nlohmann::json joint = convert_model(*l.model, o, &l.calib).report;
      o.svd = SvdMethod::kMd;
      nlohmann::json md = convert_model(*l.model, o, &l.calib).report;
      ASSERT_EQ(joint["layers"].size(), md["layers"].size());
      ASSERT_FALSE(md["layers"].empty());
      for (size_t i = 0; i < md["layers"].size(); ++i) {
        const auto& m = md["layers"][i];
        const auto& j = joint["layers"][i];
        ASSERT_EQ(m["modality"], j["modality"]);
        const double em = m["activation_rel_error"].get<double>(), ej = j["activation_rel_error"].get<double>();
        EXPECT_LE(em, ej + 1e-9) << name << " D=" << D << " " << m.dump();
        auto key = std::make_pair(m["layer"].get<int64_t>(), m["modality"].get<std::string>());
        if (previous.count(key)) EXPECT_LE(em, previous[key] + 1e-9) << name << " D=" << D;
        previous[key] = em;
      }
      if (D == 1) {  // at rank 1 md is strictly better somewhere (the test can fail)
        double gap = 0;
        for (size_t i = 0; i < md["layers"].size(); ++i)
          gap = std::max(gap, joint["layers"][i]["activation_rel_error"].get<double>() -
                                  md["layers"][i]["activation_rel_error"].get<double>());
        EXPECT_GT(gap, 1e-3) << name;
      }
    }
  }
}

TEST(Conversion, ReportCountsKvBytes) {
  Loaded l = load("vlm/qwen2_5_vl");
  const TextConfig& c = l.model->text_config();
  ConvertOptions o;
  o.rope_strategy = "high";
  o.rope_dims = 4;
  o.svd = SvdMethod::kMd;
  o.kv_rank = {3};
  nlohmann::json r = convert_model(*l.model, o, &l.calib).report;
  const int64_t L = c.num_hidden_layers, n_kv = c.num_key_value_heads, dh = c.head_dim;
  EXPECT_EQ(r["kv_bytes_per_token"]["before"].get<int64_t>(), L * 2 * n_kv * dh * 2);
  EXPECT_EQ(r["kv_bytes_per_token"]["after"].get<int64_t>(), L * (n_kv * 3 + n_kv * 4) * 2 + 1);
  EXPECT_EQ(r["layers"].size(), static_cast<size_t>(2 * L));
  EXPECT_EQ(r["layers"][0]["modality"], "text");
  EXPECT_EQ(r["layers"][1]["modality"], "image");
  EXPECT_GT(r["calibration"]["image_tokens"].get<int64_t>(), 0);
  EXPECT_FALSE(report_summary(r).empty());
}

void expect_error(const Model& m, const ConvertOptions& o, const CalibrationInputs* calib,
                  const std::string& needle) {
  try {
    convert_model(m, o, calib);
    ADD_FAILURE() << "expected an error mentioning '" << needle << "'";
  } catch (const ArgumentError& e) {
    EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
  } catch (const FormatError& e) {
    EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
  }
}

TEST(Conversion, BadOptionsAreClearErrors) {
  Loaded l = load("vlm/qwen2_5_vl");
  const TextConfig& c = l.model->text_config();
  ConvertOptions good;
  good.rope_strategy = "high";
  good.rope_dims = 4;
  good.svd = SvdMethod::kJoint;
  good.kv_rank = {2};
  auto with = [&](const std::function<void(ConvertOptions&)>& f) {
    ConvertOptions o = good;
    f(o);
    return o;
  };
  expect_error(*l.model, with([](auto& o) { o.rope_strategy = "random"; }), &l.calib, "unknown strategy 'random'");
  expect_error(*l.model, with([](auto& o) { o.rope_dims = 5; }), &l.calib, "--rope-dims: R = 5 must be even");
  expect_error(*l.model, with([&](auto& o) { o.rope_dims = c.head_dim + 2; }), &l.calib, "--rope-dims");
  expect_error(*l.model, with([](auto& o) { o.kv_rank = {1000}; }), &l.calib, "--kv-rank: D = 1000");
  expect_error(*l.model, with([](auto& o) { o.kv_rank = {}; }), &l.calib, "needs --kv-rank");
  expect_error(*l.model, with([](auto& o) { o.kv_rank = {1, 2, 3, 4, 5}; }), &l.calib, "one per layer");
  expect_error(*l.model, with([](auto& o) { o.svd = SvdMethod::kWhitened; }), nullptr, "needs calibration data");
  expect_error(*l.model, with([](auto& o) { o.rope_strategy = "mkl"; }), nullptr, "needs calibration data");
  // A rank file of the wrong shape.
  testing::TempDir tmp;
  RopeRanks wrong = fixed_ranks("high", c.num_hidden_layers, c.num_key_value_heads + 1, c.head_dim, 2);
  write_rope_ranks(tmp.file("wrong.safetensors"), wrong);
  expect_error(*l.model, with([&](auto& o) { o.rope_ranks_path = tmp.file("wrong.safetensors"); }), &l.calib,
               "wrong.safetensors");
  // md with calibration data that holds no image tokens.
  ModelInputs text_only;
  text_only.input_ids = at::tensor({1, 2, 3, 4, 5, 6}, at::kLong).unsqueeze(0);
  CalibrationInputs text_calib = calibration_inputs(text_only);
  expect_error(*l.model, with([](auto& o) { o.svd = SvdMethod::kMd; }), &text_calib, "no image tokens");
  // md on a text model.
  Loaded t = load("text/qwen2");
  expect_error(*t.model, with([](auto& o) { o.svd = SvdMethod::kMd; }), &t.calib, "text-only model");
}

TEST(Conversion, CliConvertsAndTheResultGenerates) {
  testing::TempDir tmp;
  const std::string fx = fixtures_dir() + "/vlm/llava";
  const std::string out = tmp.file("mla");
  auto r = testing::run_cli({"convert", "--model", fx + "/model", "--out", out, "--rope-strategy", "mkl",
                             "--rope-dims", "4", "--svd", "md", "--kv-rank", "4", "--calib",
                             fx + "/inputs.safetensors", "--report", tmp.file("report.json")});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.err.find("KV cache per token"), std::string::npos) << r.err;
  nlohmann::json report = io::read_json_file(tmp.file("report.json"));
  EXPECT_EQ(report["svd"], "md");
  auto g = testing::run_cli({"generate", "--model", out, "--inputs", fx + "/inputs.safetensors",
                             "--max-new-tokens", "3"});
  EXPECT_EQ(g.exit_code, 0) << g.err;
  auto inspect = testing::run_cli({"inspect", "--model", out});
  EXPECT_EQ(inspect.exit_code, 0) << inspect.err;
  EXPECT_NE(inspect.out.find("svd md"), std::string::npos) << inspect.out;
  EXPECT_NE(inspect.out.find("latent + RoPE key"), std::string::npos) << inspect.out;
  auto bad = testing::run_cli({"convert", "--model", fx + "/model", "--out", tmp.file("x"), "--rope-strategy",
                               "high", "--rope-dims", "4", "--svd", "fancy", "--kv-rank", "4"});
  EXPECT_NE(bad.exit_code, 0);
  EXPECT_NE(bad.err.find("unknown SVD method 'fancy'"), std::string::npos) << bad.err;
  EXPECT_FALSE(testing::path_exists(tmp.file("x")));
  // The report as a picture (gnuplot), and a file that is not a report.
  if (std::system("command -v gnuplot >/dev/null 2>&1") == 0) {
    auto plot = testing::run_cli({"plot", "--report", tmp.file("report.json"), "--out", tmp.file("e.png")});
    ASSERT_EQ(plot.exit_code, 0) << plot.err;
    EXPECT_EQ(testing::read_bytes(tmp.file("e.png")).substr(0, 4), "\x89PNG");
  }
  testing::write_bytes(tmp.file("other.json"), "{\"a\": 1}");
  auto not_report = testing::run_cli({"plot", "--report", tmp.file("other.json"), "--out", tmp.file("f.png")});
  EXPECT_NE(not_report.exit_code, 0);
  EXPECT_NE(not_report.err.find("not a conversion report"), std::string::npos) << not_report.err;
  EXPECT_FALSE(testing::path_exists(tmp.file("f.png")));
  auto again = testing::run_cli({"convert", "--model", out, "--out", tmp.file("y"), "--rope-strategy", "high",
                                 "--rope-dims", "4"});
  EXPECT_NE(again.exit_code, 0);
  EXPECT_NE(again.err.find("already converted"), std::string::npos) << again.err;
}

}  // namespace
}  // namespace vlm2mla::convert

namespace vlm2mla::convert {
namespace {

TEST(Conversion, MalformedMlaBlocksAreFormatErrors) {
  Loaded l = load("vlm/qwen2_5_vl");
  ConvertOptions o;
  o.rope_strategy = "high";
  o.rope_dims = 4;
  o.svd = SvdMethod::kMd;
  o.kv_rank = {2};
  Conversion conv = convert_model(*l.model, o, &l.calib);
  nlohmann::json root = io::read_json_file(l.model_dir + "/config.json");
  root["mla"] = mla_config_to_json(*conv.model->text_config().mla);
  EXPECT_NO_THROW(parse_text_config(root, "cfg.json"));
  auto expect_bad = [&](const std::function<void(nlohmann::json&)>& f, const std::string& needle) {
    nlohmann::json r = root;
    f(r["mla"]);
    try {
      parse_text_config(r, "cfg.json");
      ADD_FAILURE() << "expected a FormatError mentioning '" << needle << "'";
    } catch (const FormatError& e) {
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
    }
  };
  expect_bad([](auto& m) { m["format_version"] = 7; }, "format_version 7");
  expect_bad([](auto& m) { m["qk_rope_head_dim"] = 3; }, "qk_rope_head_dim");
  expect_bad([](auto& m) { m["kept_pairs"].erase(0); }, "kept_pairs must be a list of");
  expect_bad([](auto& m) { m["kept_pairs"][0][0] = {1, 0}; }, "strictly ascending");
  expect_bad([](auto& m) { m["kept_pairs"][0][0] = {0}; }, "kept_pairs[0][0] holds 1 pairs");
  expect_bad([](auto& m) { m["svd"] = "magic"; }, "unknown SVD method 'magic'");
  expect_bad([](auto& m) { m["kv_lora_rank"] = {4}; }, "one per layer");
  expect_bad([](auto& m) { m["kv_lora_rank"] = {4, 100000}; }, "kv_lora_rank holds 100000");
  expect_bad([](auto& m) { m["modality_split"] = false; }, "needs mla.modality_split");
  expect_bad([](auto& m) { m["visual_token_ids"] = nlohmann::json::array(); }, "visual_token_ids");
  expect_bad([](auto& m) { m.erase("svd"); }, "missing key 'mla.svd'");
}

}  // namespace
}  // namespace vlm2mla::convert

namespace vlm2mla::convert {
namespace {

// Layers kept in host memory (--offload-layers) visit the compute device one at a time: the same
// conversion, the same logits and the same latent-cache generation as with every layer resident, on
// `device` (on the CPU host and device coincide, so that ties the staging code path; on a GPU, the
// transfers too).
void expect_offloaded_layers_convert_the_same(at::Device device) {
  for (const std::string name : {"vlm/qwen2_5_vl", "text/llama3-gqa"}) {
    Loaded l = load(name);
    const LoadOptions resident{at::kFloat, device};
    LoadOptions host = resident;
    host.layers_on_host = true;
    auto model = Model::load(l.model_dir, resident);
    auto offloaded = Model::load(l.model_dir, host);
    model->set_attention_backend(AttentionBackend::kReference);
    offloaded->set_attention_backend(AttentionBackend::kReference);
    EXPECT_TRUE(offloaded->decoder().load_options().layers_on_host);
    EXPECT_EQ(offloaded->decoder().weights().layers[0].q_proj.weight.device().type(), at::kCPU);
    EXPECT_LT(max_rel_error(offloaded->logits(l.inputs).cpu(), model->logits(l.inputs).cpu()), 1e-6) << name;
    ConvertOptions o;
    o.rope_strategy = "mkl";
    o.rope_dims = 4;
    o.svd = model->image_token_id() >= 0 ? SvdMethod::kMd : SvdMethod::kWhitened;
    o.kv_rank = {3};
    Conversion a = convert_model(*model, o, &l.calib);
    Conversion b = convert_model(*offloaded, o, &l.calib);
    EXPECT_TRUE(b.model->decoder().load_options().layers_on_host);
    EXPECT_LT(max_rel_error(b.model->logits(l.inputs).cpu(), a.model->logits(l.inputs).cpu(),
                            testing::real_positions(l.inputs)),
              device.is_cpu() ? 1e-6 : 1e-5)
        << name;
    for (size_t i = 0; i < a.report["layers"].size(); ++i) {
      EXPECT_NEAR(a.report["layers"][i]["activation_rel_error"].get<double>(),
                  b.report["layers"][i]["activation_rel_error"].get<double>(), 1e-6)
          << name << " report row " << i;
    }
    // And its latent-cache generation (dynamic steps: offloaded layers cannot be captured).
    GenerateOptions g;
    g.max_new_tokens = 4;
    g.decode = DecodeMode::kDynamic;
    EXPECT_TRUE(at::equal(generate(b.model->decoder(), b.model->prepare(l.inputs, false), g).sequences,
                          generate(a.model->decoder(), a.model->prepare(l.inputs, false), g).sequences));
  }
}

TEST(Conversion, OffloadedLayersConvertTheSame) { expect_offloaded_layers_convert_the_same(at::kCPU); }

TEST(ConversionCuda, OffloadedLayersConvertTheSameOnTheGpu) {
  if (!at::hasCUDA()) GTEST_SKIP() << "no CUDA device";
  expect_offloaded_layers_convert_the_same(at::Device(at::kCUDA));
}

}  // namespace
}  // namespace vlm2mla::convert
