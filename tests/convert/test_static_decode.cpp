// Shape-static decode steps (TextDecoder::forward_static) against their dynamic twin (forward_hidden
// with a cache): step by step on every fixture family, unconverted (dense K/V cache) and converted
// (latent cache), float and quantized caches (windows crossed during the steps, and prompts shorter
// than the window); greedy generation through each decode mode; and, on a GPU, the CUDA graph that
// replays the static step against the step run eagerly; the fused RMSNorm, RoPE, silu * up and quantized-cache
// write switches.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdio>
#include <optional>
#include <string>
#include <vector>

#include "attention/attention.h"
#include "convert/converted_fixture.h"
#include "convert/converter.h"
#include "core/error.h"
#include "core/torch_compat.h"
#include "generate/decode_graph.h"
#include "generate/generate.h"
#include "generate/sampling.h"
#include "io/safetensors.h"
#include "kernels/ops.h"
#include "kvcache/dense_kv_cache.h"
#include "kvcache/latent_kv_cache.h"
#include "kvcache/quant.h"
#include "models/model.h"
#include "nn/layers.h"
#include "nn/rope.h"
#include "support/fixtures.h"

namespace vlm2mla {
namespace {

using testing::converted;
using testing::fixtures_dir;
using testing::max_rel_error;

ModelInputs fixture_inputs(const std::string& name) {
  const std::string dir = fixtures_dir() + "/" + name;
  return ModelInputs::from_tensors(io::read_safetensors(dir + "/inputs.safetensors"), dir);
}

// Prefill, then `steps` one-token steps fed the dynamic path's greedy tokens, on two caches: the worst
// relative difference of the static step's logits (StaticDecodeSteps, generate's own) from the dynamic
// step's over all steps. With `graph`, the static steps replay as a CUDA graph. With `logits`, every
// step's dynamic [b, 1, V] and static [b, V] logits (float32, CPU) are appended to it; `step_kernels` gets
// the captured step's kernel launches (StaticDecodeSteps::step_kernels: -1 without a graph).
double static_vs_dynamic(const Model& m, const ModelInputs& in, const CacheSpec* spec, int64_t steps,
                         bool graph = false, std::vector<at::Tensor>* logits = nullptr,
                         int64_t* step_kernels = nullptr) {
  const TextDecoder& dec = m.decoder();
  Prompt p = m.prepare(in, false);
  const int64_t b = p.input_ids.size(0), t = p.input_ids.size(1);
  std::unique_ptr<KvCache> dyn = dec.make_kv_cache(b, t + steps, spec);
  std::unique_ptr<KvCache> sta = dec.make_kv_cache(b, t + steps, spec);
  at::Tensor h = dec.forward_hidden(p.decoder_input(), dyn.get());
  dec.forward_hidden(p.decoder_input(), sta.get());
  at::Tensor tok = dec.lm_head(h.narrow(1, t - 1, 1)).argmax(-1).cpu();  // [b, 1]
  const bool mrope = p.position_ids.dim() == 3;
  at::Tensor mask = p.attention_mask, pos = p.next_position.to(at::kLong).view({b, 1});
  StaticDecodeSteps fixed(dec, *sta, mrope ? pos.unsqueeze(0).expand({3, b, 1}) : pos, mask.eq(0).sum(-1), graph);
  double worst = 0;
  for (int64_t k = 0; k < steps; ++k) {
    DecoderInput step;
    step.input_ids = tok;
    mask = at::cat({mask, at::ones({b, 1}, at::kLong)}, 1);
    step.attention_mask = mask;
    step.position_ids = mrope ? pos.unsqueeze(0).expand({3, b, 1}) : pos;
    at::Tensor ld = dec.lm_head(dec.forward_hidden(step, dyn.get())).to(at::kFloat).cpu();  // [b, 1, V]
    at::Tensor ls = fixed.step(tok).to(at::kFloat).cpu();                                     // [b, V]
    worst = std::max(worst, max_rel_error(ls.unsqueeze(1), ld));
    if (logits) logits->insert(logits->end(), {ld, ls});
    tok = ld.argmax(-1);
    pos = pos + 1;
  }
  EXPECT_EQ(sta->length(), dyn->length());
  if (step_kernels) *step_kernels = fixed.step_kernels();
  return worst;
}

// Each of `on` bit for bit its `off` twin: a mismatch names `what`, which logits (the prompt's where
// `prompt` leads the lists, then each decode step's dynamic and static ones, as static_vs_dynamic appends
// them) and the largest difference.
void expect_identical_logits(const std::vector<at::Tensor>& on, const std::vector<at::Tensor>& off,
                             const std::string& what, bool prompt) {
  ASSERT_EQ(on.size(), off.size()) << what;
  for (size_t i = 0; i < on.size(); ++i) {
    const size_t k = i - (prompt ? 1 : 0);
    const std::string which = prompt && i == 0 ? "prompt logits"
                                               : "decode step " + std::to_string(k / 2) +
                                                     (k % 2 ? " logits (static)" : " logits (dynamic)");
    EXPECT_TRUE(at::equal(on[i], off[i])) << what << ": " << which << ", max abs. difference "
                                          << (on[i] - off[i]).abs().max().item<double>();
  }
}

// Each of `on` within bf16 rounding of its `off` twin (max relative difference below 3e-2 over all of them): for
// switches whose fast path sums in another order than its twin. Prints the worst under `tag`.
void expect_logits_within_bf16(const std::vector<at::Tensor>& on, const std::vector<at::Tensor>& off,
                               const std::string& what, const char* tag) {
  ASSERT_EQ(on.size(), off.size()) << what;
  double worst = 0;
  for (size_t i = 0; i < on.size(); ++i) worst = std::max(worst, max_rel_error(on[i], off[i]));
  std::printf("[%s] %s: decode logits with the fast path vs its twin, max rel. %.3g\n", tag, what.c_str(), worst);
  EXPECT_LT(worst, 3e-2) << what;
}

class StaticDecode : public ::testing::TestWithParam<std::string> {};

TEST_P(StaticDecode, UnconvertedStepsEqualDynamic) {
  const std::string dir = fixtures_dir() + "/" + GetParam();
  auto m = Model::load(dir + "/model", LoadOptions{});
  ModelInputs in = fixture_inputs(GetParam());
  const int64_t t = in.input_ids.size(1), steps = 6;
  EXPECT_LT(static_vs_dynamic(*m, in, nullptr, steps), 1e-5) << "float32 cache";
  const TextConfig& c = m->text_config();
  // int8 rows of h_kv * d_h: a window of 4 (crossed by every step), and one reaching past the prompt
  // (the first steps write ring slots below the window).
  for (int64_t window : {int64_t{4}, t + 3}) {
    CacheSpec int8{CacheType::kInt8, c.head_dim, window};
    EXPECT_LT(static_vs_dynamic(*m, in, &int8, steps), 1e-5) << "int8, window " << window;
  }
}

TEST_P(StaticDecode, ConvertedStepsEqualDynamic) {
  testing::Converted cv = converted(GetParam());
  const TextConfig& c = cv.model->text_config();
  const int64_t t = cv.inputs.input_ids.size(1), steps = 6;
  EXPECT_LT(static_vs_dynamic(*cv.model, cv.inputs, nullptr, steps), 1e-5) << "float32 latent cache";
  // r_kv = 3 n_kv and the RoPE key's width 4 n_kv: groups of n_kv divide both.
  for (int64_t window : {int64_t{4}, t + 3}) {
    CacheSpec int8{CacheType::kInt8, c.num_key_value_heads, window};
    EXPECT_LT(static_vs_dynamic(*cv.model, cv.inputs, &int8, steps), 1e-5) << "int8 latent, window " << window;
  }
  // The expanded twin over a dense cache, static too.
  auto& dec = const_cast<TextDecoder&>(cv.model->decoder());
  dec.set_mla_attention(MlaAttention::kExpanded);
  const double expanded = static_vs_dynamic(*cv.model, cv.inputs, nullptr, steps);
  dec.set_mla_attention(MlaAttention::kAuto);
  EXPECT_LT(expanded, 1e-5) << "expanded attention, dense cache";
}

TEST_P(StaticDecode, GreedyGenerationIsTheSameInEveryMode) {
  testing::Converted cv = converted(GetParam());
  auto plain = Model::load(fixtures_dir() + "/" + GetParam() + "/model", LoadOptions{});
  for (const Model* m : {plain.get(), cv.model.get()}) {
    GenerateOptions g;
    g.max_new_tokens = 8;
    Prompt p = m->prepare(cv.inputs, false);
    g.decode = DecodeMode::kDynamic;
    GenerateResult dynamic = generate(m->decoder(), p, g);
    g.decode = DecodeMode::kStatic;
    GenerateResult fixed = generate(m->decoder(), p, g);
    EXPECT_EQ(dynamic.decode, DecodeMode::kDynamic);
    EXPECT_EQ(fixed.decode, DecodeMode::kStatic);
    EXPECT_TRUE(at::equal(fixed.sequences, dynamic.sequences)) << (m == plain.get() ? "unconverted" : "converted");
    g.decode = DecodeMode::kAuto;  // on the CPU: dynamic
    EXPECT_EQ(generate(m->decoder(), p, g).decode, DecodeMode::kDynamic);
  }
}

INSTANTIATE_TEST_SUITE_P(Fixtures, StaticDecode,
                         ::testing::Values("text/llama-mha", "text/llama3-gqa", "text/qwen2", "vlm/llava",
                                           "vlm/llava-next", "vlm/qwen2_5_vl"),
                         [](const auto& info) {
                           std::string n = info.param.substr(info.param.find('/') + 1);
                           for (char& ch : n) ch = std::isalnum(static_cast<unsigned char>(ch)) ? ch : '_';
                           return n;
                         });

// generate keeps the prompt's tokens and each step's in one buffer, and its mask likewise, written in place
// (no [b, s] copies a step): with a repetition penalty every step must see the prompt and every token generated
// so far. The twin: the same dynamic steps with the history and the mask concatenated anew each step. On a
// left-padded batch, unconverted and converted, through dynamic and static steps; the penalty changes the tokens
// here (else the test could not fail).
TEST(Generate, RepetitionPenaltySeesThePromptAndEveryGeneratedToken) {
  testing::Converted cv = converted("text/qwen2");
  auto plain = Model::load(fixtures_dir() + "/text/qwen2/model", LoadOptions{});
  const at::Tensor ids = cv.inputs.input_ids;
  const int64_t b = ids.size(0), t = ids.size(1), steps = 10;
  ASSERT_GE(b, 2);
  at::Tensor mask = at::ones_like(ids);
  mask.index_put_({1, at::indexing::Slice(0, 2)}, 0);  // row 1 left-padded by two
  SamplingParams sp;
  sp.repetition_penalty = 1.8;
  for (const Model* m : {plain.get(), cv.model.get()}) {
    const TextDecoder& dec = m->decoder();
    const char* which = m == plain.get() ? "unconverted" : "converted";
    // the twin
    Prompt p = text_prompt(ids, mask);
    std::unique_ptr<KvCache> cache = dec.make_kv_cache(b, t + steps, nullptr);
    at::Tensor h = dec.forward_hidden(p.decoder_input(), cache.get());
    at::Tensor logits = dec.lm_head(h.narrow(1, t - 1, 1)).squeeze(1);
    Sampler sampler(sp);
    at::Tensor seen = ids, grown = p.attention_mask, pos = p.next_position.to(at::kLong).view({b, 1});
    for (int64_t k = 0; k < steps; ++k) {
      at::Tensor tok = sampler.next(logits, seen);
      seen = at::cat({seen, tok.unsqueeze(1)}, 1);
      if (k + 1 == steps) break;
      grown = at::cat({grown, at::ones({b, 1}, at::kLong)}, 1);
      DecoderInput step;
      step.input_ids = tok.unsqueeze(1);
      step.attention_mask = grown;
      step.position_ids = pos;
      logits = dec.lm_head(dec.forward_hidden(step, cache.get())).squeeze(1);
      pos = pos + 1;
    }
    GenerateOptions g;
    g.max_new_tokens = steps;
    g.sampling = sp;
    for (DecodeMode mode : {DecodeMode::kDynamic, DecodeMode::kStatic}) {
      g.decode = mode;
      GenerateResult r = generate(dec, ids, mask, g);
      EXPECT_TRUE(at::equal(r.sequences, seen)) << which << (mode == DecodeMode::kStatic ? ", static" : ", dynamic")
                                                << ": " << r.sequences << " against " << seen;
    }
    g.sampling.repetition_penalty = 1.0;
    g.decode = DecodeMode::kDynamic;
    EXPECT_FALSE(at::equal(generate(dec, ids, mask, g).sequences, seen)) << which << ": the penalty changed nothing";
  }
}

TEST(StaticDecodeErrors, ModesTheRunCannotHaveAreClearErrors) {
  const std::string name = "text/qwen2";
  auto m = Model::load(fixtures_dir() + "/" + name + "/model", LoadOptions{});
  ModelInputs in = fixture_inputs(name);
  GenerateOptions g;
  g.max_new_tokens = 3;
  // Padding inside a row: the keys of a row are not one range.
  at::Tensor mask = at::ones_like(in.input_ids);
  mask.index_put_({0, 2}, 0);
  g.decode = DecodeMode::kStatic;
  const std::string padded = testing::argument_error([&] { generate(m->decoder(), in.input_ids, mask, g); });
  EXPECT_NE(padded.find("left padding"), std::string::npos) << padded;
  // The same batch decodes dynamically.
  g.decode = DecodeMode::kDynamic;
  EXPECT_EQ(generate(m->decoder(), in.input_ids, mask, g).new_tokens, 3);
  if (!DecodeGraph::available()) {
    g.decode = DecodeMode::kGraph;
    EXPECT_THROW(generate(m->decoder(), in.input_ids, at::Tensor(), g), ArgumentError);
  }
  EXPECT_THROW(decode_mode_from_name("fast", "--decode"), ArgumentError);
  EXPECT_EQ(decode_mode_from_name("graph", "--decode"), DecodeMode::kGraph);
  // A static step needs room in the cache.
  const TextDecoder& dec = m->decoder();
  std::unique_ptr<KvCache> cache = dec.make_kv_cache(1, 2, nullptr);
  DecoderInput two;
  two.input_ids = in.input_ids.narrow(0, 0, 1).narrow(1, 0, 2);
  two.position_ids = at::arange(2, at::kLong).view({1, 2});
  dec.forward_hidden(two, cache.get());
  StaticDecodeInput si{at::zeros({1, 1}, at::kLong), at::full({1, 1}, 2, at::kLong), at::full({1}, 2, at::kLong),
                       at::zeros({1}, at::kLong)};
  EXPECT_THROW(dec.forward_static(si, *cache), ArgumentError);
}

// bench --synthetic-cache: random rows for every prompt position but the last, committed; decode
// continues from there in every mode.
TEST(SyntheticCache, FillsThePromptPositionsAndDecodes) {
  testing::Converted cv = converted("vlm/qwen2_5_vl");
  auto plain = Model::load(fixtures_dir() + "/vlm/qwen2_5_vl/model", LoadOptions{});
  const int64_t n_kv = cv.model->text_config().num_key_value_heads;
  for (const Model* m : {plain.get(), cv.model.get()}) {
    for (std::optional<CacheSpec> spec : {std::optional<CacheSpec>(), std::optional<CacheSpec>(CacheSpec{CacheType::kInt8, n_kv, 4})}) {
      const TextDecoder& dec = m->decoder();
      std::unique_ptr<KvCache> cache = dec.make_kv_cache(2, 12, spec ? &*spec : nullptr);
      cache->fill_synthetic(9, at::Tensor());
      EXPECT_EQ(cache->length(), 9);
      EXPECT_THROW(cache->fill_synthetic(3, at::Tensor()), ArgumentError);
      at::Tensor last = at::full({1}, 8, at::kLong);
      at::Tensor rows = cache->kind() == CacheKind::kDense ? static_cast<DenseKvCache&>(*cache).read_upto(0, last).first.transpose(1, 2)
                                                           : static_cast<LatentKvCache&>(*cache).read_upto(0, last).first;  // [b, cap, *]
      EXPECT_TRUE(rows.narrow(1, 0, 9).isfinite().all().item<bool>());
      EXPECT_GT(rows.narrow(1, 0, 9).abs().amin(-1).amin().item<double>() + rows.narrow(1, 0, 9).std().item<double>(), 0.3);
      GenerateOptions g;
      g.max_new_tokens = 4;
      g.cache = spec;
      g.synthetic_cache = true;
      for (DecodeMode mode : {DecodeMode::kDynamic, DecodeMode::kStatic}) {
        g.decode = mode;
        GenerateResult r = generate(dec, m->prepare(cv.inputs, false), g);
        EXPECT_EQ(r.new_tokens, 4);
        EXPECT_EQ(r.step_seconds.size(), 3u);
      }
    }
  }
}

// A synthetic cache keeps the prompt's image positions as image tokens (the modality a two-set model's decode
// reads its keys by), as a prompt that ran would have left them; the plain model's cache has no modality, and
// an image mask of the wrong shape is refused by name.
TEST(SyntheticCache, KeepsThePromptsImagePositions) {
  testing::Converted cv = converted("vlm/qwen2_5_vl");
  const TextDecoder& dec = cv.model->decoder();
  const int64_t img = cv.model->image_token_id();
  ASSERT_GE(img, 0);
  at::Tensor ids = at::full({2, 10}, 1, at::kLong);
  ids[0].narrow(0, 2, 4).fill_(img);
  ids[1].narrow(0, 4, 3).fill_(img);
  const at::Tensor image = dec.visual_mask(ids.narrow(1, 0, 9));
  ASSERT_TRUE(image.defined());
  EXPECT_EQ(image.sum().item<int64_t>(), 7);
  std::unique_ptr<KvCache> cache = dec.make_kv_cache(2, 12, nullptr);
  ASSERT_EQ(cache->kind(), CacheKind::kLatent);
  cache->fill_synthetic(9, image);
  const at::Tensor mod = static_cast<LatentKvCache&>(*cache).modality_all();
  ASSERT_TRUE(mod.defined());
  EXPECT_TRUE(mod.narrow(1, 0, 9).equal(image));
  EXPECT_FALSE(mod.narrow(1, 9, mod.size(1) - 9).any().item<bool>());
  std::unique_ptr<KvCache> other = dec.make_kv_cache(2, 12, nullptr);
  const std::string shape = testing::argument_error([&] { other->fill_synthetic(9, image.narrow(1, 0, 8)); },
                                                    "a mask of the wrong shape");
  EXPECT_NE(shape.find("image must be bool [2, 9]"), std::string::npos) << shape;
  auto plain = Model::load(fixtures_dir() + "/vlm/qwen2_5_vl/model", LoadOptions{});
  EXPECT_FALSE(plain->decoder().visual_mask(ids).defined());  // one projection set: no modality to keep
  // what generate's synthetic_cache does with the fixture's own prompt (an image, then text)
  const DecoderInput prompt = cv.model->prepare(cv.inputs, false).decoder_input();
  const int64_t t = prompt.input_ids.size(1);
  std::unique_ptr<KvCache> filled = dec.make_kv_cache(prompt.input_ids.size(0), t + 4, nullptr);
  fill_synthetic_prompt(dec, prompt, *filled);
  EXPECT_EQ(filled->length(), t - 1);
  // the converted config's visual ids: the image pads and the vision markers around them
  const at::Tensor ids_cached = prompt.input_ids.narrow(1, 0, t - 1);
  const at::Tensor want = at::isin(ids_cached, at::tensor(cv.model->text_config().mla->visual_token_ids, at::kLong));
  EXPECT_GT(ids_cached.eq(img).sum().item<int64_t>(), 0);
  EXPECT_TRUE(want.logical_or(ids_cached.ne(img)).all().item<bool>());  // every image pad among them
  EXPECT_TRUE(static_cast<LatentKvCache&>(*filled).modality_all().narrow(1, 0, t - 1).equal(want));
}

// The fixture's model md-converted (R = 4, D = 4), written to `path` and loaded with `load`.
std::shared_ptr<Model> md_converted(const std::string& name, const std::string& path, const LoadOptions& load) {
  const std::string dir = fixtures_dir() + "/" + name;
  auto original = Model::load(dir + "/model", LoadOptions{});
  convert::CalibrationInputs calib = convert::calibration_inputs(fixture_inputs(name));
  convert::ConvertOptions o;
  o.rope_strategy = "2-norm";
  o.rope_dims = 4;
  o.svd = SvdMethod::kMd;
  o.kv_rank = {4};
  convert::write_converted(dir + "/model", path, convert::convert_model(*original, o, &calib));
  return Model::load(path, load);
}

// On a GPU: the static step replayed as a CUDA graph against the same step run eagerly (identical
// launches: equal logits), and against the dynamic step (bf16: different reduction splits), for an
// unconverted model over a bf16 dense cache and for an md-converted Qwen2.5-VL over bf16 and int4
// latent caches (the decode kernel); then greedy generation, graph against static.
TEST(StaticDecodeCuda, GraphReplaysEqualTheEagerStaticStep) {
  if (!at::hasCUDA() || !DecodeGraph::available()) GTEST_SKIP() << "no CUDA device or no CUDA graphs in this build";
  const LoadOptions bf16{at::kBFloat16, at::Device(at::kCUDA)};
  testing::TempDir tmp;
  struct Case {
    std::string what;
    std::shared_ptr<Model> model;
    ModelInputs inputs;
    CacheSpec spec;
  };
  std::vector<Case> cases;
  const std::string dir = fixtures_dir() + "/vlm/qwen2_5_vl";
  const ModelInputs in = fixture_inputs("vlm/qwen2_5_vl");
  cases.push_back({"unconverted, bf16 dense cache", Model::load(dir + "/model", bf16), in,
                   CacheSpec{CacheType::kBf16, 8, 4}});
  auto mla = md_converted("vlm/qwen2_5_vl", tmp.file("mla"), bf16);
  cases.push_back({"md, bf16 latent cache", mla, in, CacheSpec{CacheType::kBf16, 8, 4}});
  cases.push_back({"md, int4 latent cache", mla, in, CacheSpec{CacheType::kInt4, 8, 4}});
  for (const Case& c : cases) {
    const double eager = static_vs_dynamic(*c.model, c.inputs, &c.spec, 6, false);
    const double graph = static_vs_dynamic(*c.model, c.inputs, &c.spec, 6, true);
    std::printf("[%s] static step vs dynamic, max rel. logit difference: eager %.3g, graph %.3g\n", c.what.c_str(),
                eager, graph);
    EXPECT_EQ(graph, eager) << c.what << ": the graph must replay the eager step exactly";
    EXPECT_LT(eager, 3e-2) << c.what;
    GenerateOptions g;
    g.max_new_tokens = 8;
    g.cache = c.spec;
    Prompt p = c.model->prepare(c.inputs, false);
    g.decode = DecodeMode::kStatic;
    GenerateResult fixed = generate(c.model->decoder(), p, g);
    g.decode = DecodeMode::kAuto;
    GenerateResult graphed = generate(c.model->decoder(), p, g);
    EXPECT_EQ(graphed.decode, DecodeMode::kGraph);
    EXPECT_TRUE(at::equal(graphed.sequences, fixed.sequences)) << c.what;
  }
}

// The fused RMSNorm switch: no effect on CPU tensors (the steps run either way); on a GPU, a bf16 model's
// logits with the kernel against the libtorch steps, and the kernel inside captured decode steps.
TEST(FusedRmsNormSwitch, CpuUnchangedAndGpuWithinBf16) {
  const std::string dir = fixtures_dir() + "/vlm/qwen2_5_vl";
  const ModelInputs in = fixture_inputs("vlm/qwen2_5_vl");
  auto cpu = Model::load(dir + "/model", LoadOptions{});
  const bool was = fused_rms_norm_enabled();  // on by default; restored for the tests after this one
  set_fused_rms_norm(false);
  at::Tensor off = cpu->logits(in);
  set_fused_rms_norm(true);
  at::Tensor on = cpu->logits(in);
  EXPECT_TRUE(at::equal(on, off));
  if (!at::hasCUDA() || !DecodeGraph::available()) {
    set_fused_rms_norm(was);
    GTEST_SKIP() << "no CUDA device";
  }
  auto gpu = Model::load(dir + "/model", LoadOptions{at::kBFloat16, at::Device(at::kCUDA)});
  set_fused_rms_norm(false);
  at::Tensor steps = gpu->logits(in).to(at::kFloat).cpu();
  set_fused_rms_norm(true);
  at::Tensor fused = gpu->logits(in).to(at::kFloat).cpu();
  const double err = max_rel_error(fused, steps, testing::real_positions(in));
  CacheSpec bf16{CacheType::kBf16, 8, 4};
  const double graph = static_vs_dynamic(*gpu, in, &bf16, 6, true);
  set_fused_rms_norm(was);
  std::printf("[fused rms_norm] bf16 logits vs the libtorch steps: max rel. %.3g; graph vs dynamic steps %.3g\n", err,
              graph);
  EXPECT_LT(err, 3e-2);
  EXPECT_LT(graph, 3e-2);
}

// The fused RoPE switch (on by default): bit-identical to the libtorch steps, so switching it changes
// nothing anywhere: not on the CPU (the steps run either way), and on a GPU neither the bf16 logits of a
// prompt (vision tower, M-RoPE decoder) nor decode steps, dynamic and replayed as CUDA graphs, of an
// unconverted model (apply_rope on q and k) and an md-converted one (the MLA key and query), over bf16
// and int4 caches.
TEST(FusedRopeSwitch, ChangesNoLogitsOnCpuNorGpu) {
  const std::string name = "vlm/qwen2_5_vl", dir = fixtures_dir() + "/" + name;
  const ModelInputs in = fixture_inputs(name);
  const testing::SwitchRestore restore{set_fused_rope, fused_rope_enabled()};
  struct Case {
    std::string what;
    std::shared_ptr<Model> model;
    std::optional<CacheSpec> spec;
  };
  // Prompt logits, then the dynamic and static (graph: replayed) decode steps' logits.
  auto run = [&](const Case& c, bool fused, bool graph) {
    set_fused_rope(fused);
    std::vector<at::Tensor> out = {c.model->logits(in).to(at::kFloat).cpu()};
    static_vs_dynamic(*c.model, in, c.spec ? &*c.spec : nullptr, 4, graph, &out);
    return out;
  };
  auto expect_unchanged = [&](const Case& c, bool graph) {
    const std::vector<at::Tensor> off = run(c, false, graph), on = run(c, true, graph);
    expect_identical_logits(on, off, c.what, /*prompt=*/true);
  };
  expect_unchanged({"cpu, unconverted", Model::load(dir + "/model", LoadOptions{}), std::nullopt}, false);
  expect_unchanged({"cpu, md", converted(name).model, std::nullopt}, false);
  if (!at::hasCUDA() || !DecodeGraph::available()) GTEST_SKIP() << "no CUDA device";
  const LoadOptions bf16{at::kBFloat16, at::Device(at::kCUDA)};
  testing::TempDir tmp;
  auto mla = md_converted(name, tmp.file("mla"), bf16);
  for (const Case& c : {Case{"unconverted, bf16 dense cache", Model::load(dir + "/model", bf16), CacheSpec{CacheType::kBf16, 8, 4}},
                        Case{"md, bf16 latent cache", mla, CacheSpec{CacheType::kBf16, 8, 4}},
                        Case{"md, int4 latent cache", mla, CacheSpec{CacheType::kInt4, 8, 4}}}) {
    expect_unchanged(c, true);
  }
}

// A switch's two sides over a prompt and its decode steps: with `set` off, then on, model m's prompt logits and
// `steps` decode steps' logits (static_vs_dynamic, over a cache of `spec`, static steps replayed as CUDA graphs with
// `graph`) are identical; a mismatch names `what`.
void expect_switch_keeps_logits(void (*set)(bool), const std::string& what, const Model& m, const ModelInputs& in,
                                const CacheSpec* spec, int64_t steps, bool graph) {
  auto run = [&](bool on) {
    set(on);
    std::vector<at::Tensor> out = {m.logits(in).to(at::kFloat).cpu()};
    static_vs_dynamic(m, in, spec, steps, graph, &out);
    return out;
  };
  const std::vector<at::Tensor> off = run(false), on = run(true);
  expect_identical_logits(on, off, what, /*prompt=*/true);
}

// The fused silu * up switch (on by default): bit-identical to libtorch's steps, so switching it changes
// no logits: not on the CPU (the steps run either way), nor on a GPU, for the prompt (the vision tower's
// and the decoder's MLPs) and decode steps (dynamic, and static replayed as CUDA graphs) of an unconverted
// and an md-converted bf16 model.
TEST(FusedSiluMulSwitch, ChangesNoLogitsOnCpuNorGpu) {
  const std::string name = "vlm/qwen2_5_vl", dir = fixtures_dir() + "/" + name;
  const ModelInputs in = fixture_inputs(name);
  const testing::SwitchRestore restore{set_fused_silu_mul, fused_silu_mul_enabled()};
  auto expect_unchanged = [&](const char* what, const Model& m, const CacheSpec* spec, bool graph) {
    expect_switch_keeps_logits(set_fused_silu_mul, what, m, in, spec, 3, graph);
  };
  expect_unchanged("cpu, unconverted", *Model::load(dir + "/model", LoadOptions{}), nullptr, false);
  if (!at::hasCUDA() || !DecodeGraph::available()) GTEST_SKIP() << "no CUDA device";
  const LoadOptions bf16{at::kBFloat16, at::Device(at::kCUDA)};
  testing::TempDir tmp;
  const CacheSpec spec{CacheType::kBf16, 8, 4};
  expect_unchanged("unconverted, bf16 dense cache", *Model::load(dir + "/model", bf16), &spec, true);
  expect_unchanged("md, bf16 latent cache", *md_converted(name, tmp.file("mla"), bf16), &spec, true);
}

// A cache-write switch's two sides over the fixture's decode steps (static_vs_dynamic, 5 tokens): with it off, then
// on, model m over a cache of `spec` gives identical logits; with graph, the captured step has at least `fewer`
// launches fewer with it on (`tag` names the printed counts).
void expect_write_switch_changes_no_logits(const char* tag, void (*set)(bool), const ModelInputs& in,
                                           const std::string& what, const Model& m, const CacheSpec& spec, bool graph,
                                           int64_t fewer) {
  int64_t kernels = -1;  // the last run's captured step
  auto run = [&](bool fused) {
    set(fused);
    std::vector<at::Tensor> out;
    static_vs_dynamic(m, in, &spec, 5, graph, &out, &kernels);
    return out;
  };
  const std::vector<at::Tensor> off = run(false);
  const int64_t kernels_off = kernels;
  const std::vector<at::Tensor> on = run(true);
  if (graph) {
    std::printf("[%s] %s: %ld kernels a step with the libtorch steps, %ld with the kernel\n", tag, what.c_str(),
                long(kernels_off), long(kernels));
    EXPECT_GT(kernels_off, 0) << what;
    EXPECT_LE(kernels, kernels_off - fewer) << what;
  }
  expect_identical_logits(on, off, what, /*prompt=*/false);
}

// The fused quantized-cache write (RowStore::write_at; VLM2MLA_FUSED_CACHE_WRITE=0 turns it off): it
// writes the twin's bits, so switching it changes no logits: not on the CPU (the steps run either way), nor
// on a GPU over the decode steps (dynamic, and static replayed as CUDA graphs, whose cache writes it is) of
// an unconverted model over an int4 dense cache and an md-converted one over int4, int8 and int2 latent
// caches, with windows the steps cross.
TEST(FusedCacheWriteSwitch, ChangesNoLogitsOnCpuNorGpu) {
  const std::string name = "vlm/qwen2_5_vl", dir = fixtures_dir() + "/" + name;
  const ModelInputs in = fixture_inputs(name);
  const testing::SwitchRestore restore{set_fused_ring_write, fused_ring_write_enabled()};
  // the launches it removes: ~33 of the libtorch steps for each store's one, 2 stores a layer
  auto expect_unchanged = [&](const std::string& what, const Model& m, const CacheSpec& spec, bool graph) {
    expect_write_switch_changes_no_logits("fused cache write", set_fused_ring_write, in, what, m, spec, graph,
                                          10 * 2 * m.text_config().num_hidden_layers);
  };
  testing::TempDir tmp;
  expect_unchanged("cpu, md, int4", *md_converted(name, tmp.file("mla_cpu"), LoadOptions{}),
                   CacheSpec{CacheType::kInt4, 8, 2}, false);
  if (!at::hasCUDA() || !DecodeGraph::available()) GTEST_SKIP() << "no CUDA device";
  const LoadOptions bf16{at::kBFloat16, at::Device(at::kCUDA)};
  auto mla = md_converted(name, tmp.file("mla"), bf16);
  expect_unchanged("unconverted, int4 dense cache", *Model::load(dir + "/model", bf16), CacheSpec{CacheType::kInt4, 8, 2},
                   true);
  for (const CacheType type : {CacheType::kInt4, CacheType::kInt8, CacheType::kInt2}) {
    expect_unchanged(std::string("md, ") + cache_type_name(type) + " latent cache", *mla, CacheSpec{type, 8, 2}, true);
  }
}

// The fused latent write (LatentKvCache::write_at over plain stores; VLM2MLA_FUSED_LATENT_WRITE=0 turns it off): the
// step's latent picked by its token's modality and both stores' rows in one launch, the twin's bits, so switching it
// changes no logits: not on the CPU (the twin runs either way), nor on a GPU over the decode steps (dynamic, and
// static replayed as CUDA graphs, whose writes it is) of an md-converted bf16 model over a bf16 latent cache, and over
// int4 and int8 ones with windows the steps cross (the quantized pair, fused_ring_write_pair); the captured step has two
// launches a layer fewer (at::where and one index_copy_, or at::where and one store's ring write).
TEST(FusedLatentWriteSwitch, ChangesNoLogitsOnCpuNorGpu) {
  const std::string name = "vlm/qwen2_5_vl";
  const ModelInputs in = fixture_inputs(name);
  const testing::SwitchRestore restore{set_fused_latent_write, fused_latent_write_enabled()};
  auto expect_unchanged = [&](const std::string& what, const Model& m, const CacheSpec& spec, bool graph) {
    expect_write_switch_changes_no_logits("fused latent write", set_fused_latent_write, in, what, m, spec, graph,
                                          2 * m.text_config().num_hidden_layers);
  };
  testing::TempDir tmp;
  expect_unchanged("cpu, md, bf16", *md_converted(name, tmp.file("mla_cpu"), LoadOptions{}),
                   CacheSpec{CacheType::kBf16, 8, 4}, false);
  if (!at::hasCUDA() || !DecodeGraph::available()) GTEST_SKIP() << "no CUDA device";
  const LoadOptions bf16{at::kBFloat16, at::Device(at::kCUDA)};
  auto mla = md_converted(name, tmp.file("mla"), bf16);
  expect_unchanged("md, bf16 latent cache", *mla, CacheSpec{CacheType::kBf16, 8, 4}, true);
  for (const CacheType type : {CacheType::kInt4, CacheType::kInt8}) {
    expect_unchanged(std::string("md, ") + cache_type_name(type) + " latent cache", *mla, CacheSpec{type, 8, 2}, true);
  }
}

// The small kernels' programmatic launches (VLM2MLA_PDL=0 or set_programmatic_launch(false) launch them plainly):
// only when each kernel starts changes, never what it computes, so switching them changes no logits: not on the
// CPU (no kernels), nor on a GPU for a prompt and decode steps (dynamic, and static replayed as CUDA graphs, where
// the launches become programmatic edges) of an unconverted model over a bf16 dense cache and an md-converted one
// over bf16 and int4 latent caches.
TEST(ProgrammaticLaunchSwitch, ChangesNoLogitsOnCpuNorGpu) {
  const std::string name = "vlm/qwen2_5_vl", dir = fixtures_dir() + "/" + name;
  const ModelInputs in = fixture_inputs(name);
  const testing::SwitchRestore restore{set_programmatic_launch, programmatic_launch_enabled()};
  auto expect_unchanged = [&](const std::string& what, const Model& m, const CacheSpec* spec, bool graph) {
    expect_switch_keeps_logits(set_programmatic_launch, what, m, in, spec, 4, graph);
  };
  expect_unchanged("cpu, unconverted", *Model::load(dir + "/model", LoadOptions{}), nullptr, false);
  if (!at::hasCUDA() || !DecodeGraph::available()) GTEST_SKIP() << "no CUDA device";
  const LoadOptions bf16{at::kBFloat16, at::Device(at::kCUDA)};
  testing::TempDir tmp;
  const CacheSpec plain{CacheType::kBf16, 8, 4}, int4{CacheType::kInt4, 8, 4};
  expect_unchanged("unconverted, bf16 dense cache", *Model::load(dir + "/model", bf16), &plain, true);
  auto mla = md_converted(name, tmp.file("mla"), bf16);
  expect_unchanged("md, bf16 latent cache", *mla, &plain, true);
  expect_unchanged("md, int4 latent cache", *mla, &int4, true);
}

// A switch's two sides on the CPU, where its kernel never runs: the model at `model_dir` (`what`) gives identical
// logits over the fixture's decode steps (static_vs_dynamic, 5 tokens) with it off, then on.
void expect_cpu_switch_changes_no_logits(void (*set)(bool), const ModelInputs& in, const std::string& model_dir,
                                         const std::string& what = "cpu, unconverted") {
  auto cpu = Model::load(model_dir, LoadOptions{});
  std::vector<at::Tensor> off, on;
  set(false);
  static_vs_dynamic(*cpu, in, nullptr, 5, false, &off);
  set(true);
  static_vs_dynamic(*cpu, in, nullptr, 5, false, &on);
  expect_identical_logits(on, off, what, /*prompt=*/false);
}

// Qwen2.5-VL's fixture md-converted into tmp, the switch `set` checked to change no logits on it on the CPU; then, where
// there is a CUDA device with graphs, the model loaded there in bf16 for the GPU half of a switch test (else null: the
// caller skips).
std::shared_ptr<Model> md_model_after_cpu_check(void (*set)(bool), const ModelInputs& in, testing::TempDir& tmp) {
  md_converted("vlm/qwen2_5_vl", tmp.file("mla"), LoadOptions{});
  expect_cpu_switch_changes_no_logits(set, in, tmp.file("mla"), "cpu, md");
  if (!at::hasCUDA() || !DecodeGraph::available()) return nullptr;
  return Model::load(tmp.file("mla"), LoadOptions{at::kBFloat16, at::Device(at::kCUDA)});
}

// SDPA's additive mask made once a step (VLM2MLA_SDPA_MASK_ONCE=0 leaves the conversion to libtorch in every layer):
// the values libtorch makes, so switching it changes no logits: not on the CPU (no SDPA decode path), nor on a GPU
// over an unconverted model's decode steps over a bf16 dense cache (dynamic, and static replayed as CUDA graphs,
// whose bool mask it is), and the captured step has at least two launches fewer with it on for each layer but the
// first (libtorch's conversion, a where and its scalars' fills, runs once instead of in every layer; measured on the
// H200 with libtorch 2.11, 2026-11-30: 51 -> 48 launches for the fixture's 2 layers).
TEST(SdpaMaskOnceSwitch, ChangesNoLogitsOnCpuNorGpu) {
  const std::string name = "vlm/qwen2_5_vl", dir = fixtures_dir() + "/" + name;
  const ModelInputs in = fixture_inputs(name);
  const testing::SwitchRestore restore{set_sdpa_mask_once, sdpa_mask_once_enabled()};
  expect_cpu_switch_changes_no_logits(set_sdpa_mask_once, in, dir + "/model");
  if (!at::hasCUDA() || !DecodeGraph::available()) GTEST_SKIP() << "no CUDA device";
  if (!VLM2MLA_HAS_SDPA_GQA) GTEST_SKIP() << "this libtorch has no SDPA decode path (enable_gqa)";
  const LoadOptions bf16{at::kBFloat16, at::Device(at::kCUDA)};
  auto m = Model::load(dir + "/model", bf16);
  expect_write_switch_changes_no_logits("sdpa mask once", set_sdpa_mask_once, in, "unconverted, bf16 dense cache", *m,
                                        CacheSpec{CacheType::kBf16, 8, 4}, true,
                                        2 * (m->text_config().num_hidden_layers - 1));
}

// The fused K/V write (DenseKvCache::write_at; VLM2MLA_FUSED_KV_WRITE=0 turns it off): the twin's bits, so switching
// it changes no logits: not on the CPU (the index_copy_ steps run either way), nor on a GPU over an unconverted
// model's decode steps over a bf16 dense cache (dynamic, and static replayed as CUDA graphs, whose K/V writes it
// is), and the captured step has at least one launch a layer fewer with it on.
TEST(FusedKvWriteSwitch, ChangesNoLogitsOnCpuNorGpu) {
  const std::string name = "vlm/qwen2_5_vl", dir = fixtures_dir() + "/" + name;
  const ModelInputs in = fixture_inputs(name);
  const testing::SwitchRestore restore{set_fused_kv_write, fused_kv_write_enabled()};
  expect_cpu_switch_changes_no_logits(set_fused_kv_write, in, dir + "/model");
  if (!at::hasCUDA() || !DecodeGraph::available()) GTEST_SKIP() << "no CUDA device";
  const LoadOptions bf16{at::kBFloat16, at::Device(at::kCUDA)};
  auto m = Model::load(dir + "/model", bf16);
  expect_write_switch_changes_no_logits("fused kv write", set_fused_kv_write, in, "unconverted, bf16 dense cache", *m,
                                        CacheSpec{CacheType::kBf16, 8, 4}, true, m->text_config().num_hidden_layers);
}

// The decode kernel's output buffer made once a step (decode_output_buffer; VLM2MLA_DECODE_OUT_ONCE=0 makes and zeroes
// one a layer, the twin): every layer writes its accumulators and masses in full and never its pad columns, so
// switching it changes no logits: not on the CPU (no decode kernel), nor on a GPU over an md-converted model's decode
// steps (dynamic, and static replayed as CUDA graphs, whose buffer it is) over bf16 and int4 latent caches; and the
// captured step has one launch (the zeroing) fewer for each layer but the first where the layers' ranks agree.
TEST(DecodeOutOnceSwitch, ChangesNoLogitsOnCpuNorGpu) {
  const ModelInputs in = fixture_inputs("vlm/qwen2_5_vl");
  const testing::SwitchRestore restore{set_decode_out_once, decode_out_once_enabled()};
  testing::TempDir tmp;
  auto m = md_model_after_cpu_check(set_decode_out_once, in, tmp);
  if (!m) GTEST_SKIP() << "no CUDA device";
  const std::vector<int64_t>& ranks = m->text_config().mla->kv_lora_rank;
  ASSERT_FALSE(ranks.empty());
  const bool uniform = std::all_of(ranks.begin(), ranks.end(), [&](int64_t r) { return r == ranks.front(); });
  const int64_t fewer = uniform ? m->text_config().num_hidden_layers - 1 : 0;
  for (const CacheType type : {CacheType::kBf16, CacheType::kInt4}) {
    expect_write_switch_changes_no_logits("decode out once", set_decode_out_once, in,
                                          std::string("md, ") + cache_type_name(type) + " latent cache", *m,
                                          CacheSpec{type, 8, 4}, true, fewer);
  }
}

// The step's RoPE in the latent write's launch (LatentKvCache::write_at_rotating, kernels/ops.h's WriteRope;
// VLM2MLA_ROPE_WRITE=0 keeps the RoPE's own launch, the twin): never taken on the CPU, so switching it changes no logits
// there; on a GPU, over an md-converted model's decode steps (dynamic, and static replayed as CUDA graphs) over bf16,
// int4 and int8 latent caches (plain stores and quantized ones with windows the steps cross), the same logits bit for
// bit, and the captured step has one launch a layer fewer where a fused write takes the rows (bf16, int4; the int8
// cache of this fixture's shapes takes no fused write, so the RoPE keeps its launch there: on the H200, 2026-11-30,
// 64 -> 62 launches a step over bf16 and int4, 210 both ways over int8).
TEST(RopeWriteSwitch, ChangesNoLogitsOnCpuNorGpu) {
  const ModelInputs in = fixture_inputs("vlm/qwen2_5_vl");
  const testing::SwitchRestore restore{set_rope_write, rope_write_enabled()};
  testing::TempDir tmp;
  auto m = md_model_after_cpu_check(set_rope_write, in, tmp);
  if (!m) GTEST_SKIP() << "no CUDA device";
  const int64_t layers = m->text_config().num_hidden_layers;
  for (const CacheType type : {CacheType::kBf16, CacheType::kInt4, CacheType::kInt8}) {
    expect_write_switch_changes_no_logits("rope write", set_rope_write, in,
                                          std::string("md, ") + cache_type_name(type) + " latent cache", *m,
                                          CacheSpec{type, 8, 2}, true, type == CacheType::kInt8 ? 0 : layers);
  }
}

// Twelve text tokens of one sequence: the decode steps' projections take one row (the one-row kernel's paths).
ModelInputs one_text_sequence() {
  ModelInputs one;
  one.input_ids = at::arange(1, 13, at::kLong).mul(23).remainder(290).add(1).view({1, 12});
  one.attention_mask = at::ones({1, 12}, at::kLong);
  return one;
}

// A projection kernel's switch over decode steps on a GPU (the caller checks the CPU and skips without a GPU): the
// fixture's unconverted model over a bf16 dense cache and its md conversion over bf16 and int4 latent caches (bf16
// weights, gate and up one block where `fuse`), each decoded from `in` (dynamic, and static replayed as CUDA graphs)
// with the switch off (the kernel never launched: `launches` unchanged) and on (launched), the logits within bf16
// rounding of each other (printed under `tag`).
void expect_projection_switch_within_bf16(void (*set)(bool), int64_t (*launches)(), const ModelInputs& in, bool fuse,
                                          const char* tag) {
  const std::string name = "vlm/qwen2_5_vl", dir = fixtures_dir() + "/" + name;
  LoadOptions bf16{at::kBFloat16, at::Device(at::kCUDA)};
  bf16.fuse_projections = fuse;
  testing::TempDir tmp;
  auto plain = Model::load(dir + "/model", bf16);
  auto mla = md_converted(name, tmp.file("mla"), bf16);
  struct Case {
    const char* what;
    const Model* model;
    CacheSpec spec;
  };
  const Case cases[] = {{"unconverted, bf16 dense cache", plain.get(), CacheSpec{CacheType::kBf16, 8, 4}},
                        {"md, bf16 latent cache", mla.get(), CacheSpec{CacheType::kBf16, 8, 4}},
                        {"md, int4 latent cache", mla.get(), CacheSpec{CacheType::kInt4, 8, 4}}};
  for (const Case& c : cases) {
    std::vector<at::Tensor> off, on;
    set(false);
    const int64_t before = launches();
    static_vs_dynamic(*c.model, in, &c.spec, 5, true, &off);
    EXPECT_EQ(launches(), before) << c.what << ": the kernel ran with the switch off";
    set(true);
    static_vs_dynamic(*c.model, in, &c.spec, 5, true, &on);
    EXPECT_GT(launches(), before) << c.what << ": the decode steps never took the kernel";
    expect_logits_within_bf16(on, off, c.what, tag);
  }
}

// The one-row projection kernel (nn/layers.h's dense; VLM2MLA_GEMV=0 keeps at::linear, the twin): never taken on the
// CPU, so switching it changes no logits there; on a GPU, over one sequence's decode steps (dynamic, and static
// replayed as CUDA graphs) of an unconverted model over a bf16 dense cache and an md-converted one over bf16 and
// int4 latent caches, it is taken (its launches counted) and the logits stay within bf16 rounding of at::linear's.
TEST(GemvSwitch, CpuUnchangedAndGpuWithinBf16) {
  const std::string name = "vlm/qwen2_5_vl", dir = fixtures_dir() + "/" + name;
  const testing::SwitchRestore restore{set_gemv, gemv_enabled()};
  expect_cpu_switch_changes_no_logits(set_gemv, fixture_inputs(name), dir + "/model");
  if (!at::hasCUDA() || !DecodeGraph::available()) GTEST_SKIP() << "no CUDA device";
  expect_projection_switch_within_bf16(set_gemv, fused_gemv_launches, one_text_sequence(), false, "gemv");
}

// SiLU x up in the gate/up projection's launch at one row (nn/layers.h's swiglu_mlp, kernels/ops.h's
// fused_gemv_silu_mul; VLM2MLA_GEMV_SILU_MUL=0 keeps the SiLU x up launch, the twin): never taken on the CPU, so
// switching it changes no logits there; on a GPU, over one sequence's decode steps (dynamic, and static replayed as
// CUDA graphs) of an unconverted model over a bf16 dense cache and an md-converted one over bf16 and int4 latent
// caches, it is taken (its launches counted) and gives the same logits bit for bit, one launch a layer fewer in the
// captured step.
TEST(GemvSiluMulSwitch, ChangesNoLogitsOnCpuNorGpu) {
  const std::string name = "vlm/qwen2_5_vl", dir = fixtures_dir() + "/" + name;
  const testing::SwitchRestore restore{set_gemv_silu_mul, gemv_silu_mul_enabled()};
  expect_cpu_switch_changes_no_logits(set_gemv_silu_mul, fixture_inputs(name), dir + "/model");
  if (!at::hasCUDA() || !DecodeGraph::available()) GTEST_SKIP() << "no CUDA device";
  const ModelInputs one = one_text_sequence();
  LoadOptions bf16{at::kBFloat16, at::Device(at::kCUDA)};
  bf16.fuse_projections = true;  // (as generate and bench load: gate and up one weight block)
  testing::TempDir tmp;
  auto plain = Model::load(dir + "/model", bf16);
  auto mla = md_converted(name, tmp.file("mla"), bf16);
  const int64_t fewer = plain->text_config().num_hidden_layers;
  auto check = [&](const std::string& what, const Model& m, const CacheSpec& spec) {
    const int64_t before = fused_gemv_silu_mul_launches();
    expect_write_switch_changes_no_logits("gemv silu x up", set_gemv_silu_mul, one, what, m, spec, true, fewer);
    EXPECT_GT(fused_gemv_silu_mul_launches(), before) << what << ": the decode steps never took it";
  };
  check("unconverted, bf16 dense cache", *plain, CacheSpec{CacheType::kBf16, 8, 4});
  for (const CacheType type : {CacheType::kBf16, CacheType::kInt4})
    check(std::string("md, ") + cache_type_name(type) + " latent cache", *mla, CacheSpec{type, 8, 4});
}

// The few-row projection kernel (nn/layers.h's dense and swiglu_mlp at 2 to 8 rows; VLM2MLA_GEMM_ROWS=0 keeps
// at::linear and the SiLU x up launch, the twin): never taken on the CPU, so switching it changes no logits there; on
// a GPU, over the fixture's two sequences (text and images) decoded as one batch (dynamic, and static replayed as
// CUDA graphs), of an unconverted model over a bf16 dense cache and an md-converted one over bf16 and int4 latent
// caches, it is taken (its launches counted) and the logits stay within bf16 rounding of at::linear's.
TEST(GemmRowsSwitch, CpuUnchangedAndGpuWithinBf16) {
  const std::string name = "vlm/qwen2_5_vl", dir = fixtures_dir() + "/" + name;
  const testing::SwitchRestore restore{set_gemm_rows, gemm_rows_enabled()};
  const ModelInputs in = fixture_inputs(name);
  ASSERT_GE(in.input_ids.size(0), 2) << "the fixture's batch: the kernel takes 2 rows or more";
  expect_cpu_switch_changes_no_logits(set_gemm_rows, in, dir + "/model");
  if (!at::hasCUDA() || !DecodeGraph::available()) GTEST_SKIP() << "no CUDA device";
  // (gate and up one block, as generate and bench load them: SiLU x up in the kernel's launch)
  expect_projection_switch_within_bf16(set_gemm_rows, fused_gemm_rows_launches, in, true, "gemm rows");
}

// The combine with the output product (mla_attention_absorbed_kernel passes w_out and o_out; VLM2MLA_DECODE_COMBINE_OUT=0
// keeps kv_head_product over the buffer, the twin): never taken on the CPU, so switching it changes no logits there; on a
// GPU, over an md-converted model's decode steps (dynamic, and static replayed as CUDA graphs) over bf16 and int4 latent
// caches, the combine takes it (mla_decode records "combine-out") and the logits stay within bf16 rounding of the
// head product's; over four sequences (more than mla_attention's kCombineOutMostSequences) it leaves it.
TEST(DecodeCombineOutSwitch, CpuUnchangedAndGpuWithinBf16) {
  const ModelInputs in = fixture_inputs("vlm/qwen2_5_vl");
  const testing::SwitchRestore restore{set_decode_combine_out, decode_combine_out_enabled()};
  testing::TempDir tmp;
  auto m = md_model_after_cpu_check(set_decode_combine_out, in, tmp);
  if (!m) GTEST_SKIP() << "no CUDA device";
  auto took = [] {
    const std::vector<std::string> used = take_mla_decode_kernels_used();
    return std::find(used.begin(), used.end(), "combine-out") != used.end();
  };
  for (const CacheType type : {CacheType::kBf16, CacheType::kInt4}) {
    const std::string what = std::string("md, ") + cache_type_name(type) + " latent cache";
    const CacheSpec spec{type, 8, 4};
    std::vector<at::Tensor> off, on;
    take_mla_decode_kernels_used();
    set_decode_combine_out(false);
    static_vs_dynamic(*m, in, &spec, 5, true, &off);
    EXPECT_FALSE(took()) << what << ": the combine took the product with the switch off";
    set_decode_combine_out(true);
    static_vs_dynamic(*m, in, &spec, 5, true, &on);
    EXPECT_TRUE(took()) << what << ": the decode steps never took the combine's product";
    expect_logits_within_bf16(on, off, what, "combine-out");
  }
  // more sequences than kCombineOutMostSequences (3): the head product, the switch on (the fixture's two prompts twice)
  ModelInputs four = in;
  for (at::Tensor ModelInputs::*t : {&ModelInputs::input_ids, &ModelInputs::attention_mask, &ModelInputs::pixel_values,
                                     &ModelInputs::image_grid_thw}) {
    if ((in.*t).defined()) four.*t = at::cat({in.*t, in.*t}, 0);
  }
  const CacheSpec spec{CacheType::kBf16, 8, 4};
  take_mla_decode_kernels_used();
  set_decode_combine_out(true);
  EXPECT_LT(static_vs_dynamic(*m, four, &spec, 2, true), 3e-2) << "four sequences";
  EXPECT_FALSE(took()) << "four sequences: the combine took the product";
}

}  // namespace
}  // namespace vlm2mla
