// Fused projections (LoadOptions::fuse_projections, models/weights.h fuse_layer_projections): every
// layer's projections of one input stored as one tensor per group and run as one GEMM. Against the
// unfused model (float32 on the CPU): the same logits and the same greedy tokens (dynamic and static
// decode steps), for the unconverted and the converted (md for the VLMs) fixture models; the same
// parameter bytes (the members are views of one storage each); layers kept in host memory; and, on a
// GPU, the fused model's decode steps captured as a CUDA graph.
#include <gtest/gtest.h>

#include <algorithm>
#include <set>

#include "convert/converted_fixture.h"
#include "convert/converter.h"
#include "generate/decode_graph.h"
#include "generate/generate.h"
#include "io/safetensors.h"
#include "models/model.h"
#include "nn/layers.h"
#include "support/fixtures.h"

namespace vlm2mla {
namespace {

using testing::fixtures_dir;
using testing::max_rel_error;

ModelInputs fixture_inputs(const std::string& name) {
  const std::string dir = fixtures_dir() + "/" + name;
  return ModelInputs::from_tensors(io::read_safetensors(dir + "/inputs.safetensors"), dir);
}

// The same model with its decoder's projections fused (a new decoder over the same tensors: the
// original keeps its own).
std::shared_ptr<Model> fused_twin(const Model& m) {
  const TextDecoder& d = m.decoder();
  LoadOptions o = d.load_options();
  o.fuse_projections = true;
  auto f = std::make_shared<TextDecoder>(d.config(), d.weights(), o);
  f->set_attention_backend(d.attention_backend());
  f->set_mla_attention(d.mla_attention());
  return m.with_decoder(f);
}

void for_each_tensor(const DecoderLayerWeights& w, const std::function<void(const at::Tensor&)>& fn) {
  auto lin = [&](const LinearWeights& l) {
    if (l.weight.defined()) fn(l.weight);
    if (l.bias.defined()) fn(l.bias);
  };
  fn(w.input_layernorm);
  fn(w.post_attention_layernorm);
  for (const LinearWeights* l : {&w.q_proj, &w.k_proj, &w.v_proj, &w.o_proj, &w.k_rope_proj, &w.k_nope_proj,
                                 &w.gate_proj, &w.up_proj, &w.down_proj}) {
    lin(*l);
  }
  for (const KvLatentWeights& kv : w.kv) lin(kv.kv_a_proj), lin(kv.kv_b_proj);
}

struct LayerBytes {
  int64_t tensors = 0;   // bytes of the layer's tensors
  int64_t storages = 0;  // bytes of the distinct storages they view
  int64_t count = 0;     // distinct storages
};

LayerBytes layer_bytes(const DecoderLayerWeights& w) {
  LayerBytes b;
  std::set<const void*> seen;
  for_each_tensor(w, [&](const at::Tensor& t) {
    b.tensors += static_cast<int64_t>(t.nbytes());
    if (seen.insert(t.storage().unsafeGetStorageImpl()).second) {
      b.storages += static_cast<int64_t>(t.storage().nbytes());
      ++b.count;
    }
  });
  return b;
}

// A layer's groups of projections of one input, as fuse_layer_projections makes them: gate/up, and q/k/v
// or (converted) q, k_rope, then k_nope and v (svd none) or kv_a_proj of every set.
std::vector<std::vector<const LinearWeights*>> projection_groups(const DecoderLayerWeights& w) {
  std::vector<std::vector<const LinearWeights*>> groups = {{&w.gate_proj, &w.up_proj}};
  if (!w.k_rope_proj.weight.defined()) {
    groups.push_back({&w.q_proj, &w.k_proj, &w.v_proj});
  } else {
    std::vector<const LinearWeights*> g = {&w.q_proj, &w.k_rope_proj};
    if (w.k_nope_proj.weight.defined()) g.insert(g.end(), {&w.k_nope_proj, &w.v_proj});
    for (const KvLatentWeights& kv : w.kv) g.push_back(&kv.kv_a_proj);
    groups.push_back(g);
  }
  return groups;
}

// Each layer's groups are one block each, and its bytes: the fused layer's storages hold exactly its
// tensors (no copy kept, nothing wasted), as many bytes as the unfused layer's tensors plus the zero
// biases given to the unbiased members of a biased group, which in these models are exactly the
// converted Qwen2 layers' kv_a_proj of every set (r_kv x the element size each).
void expect_fused_layers(const TextDecoder& unfused, const TextDecoder& fused) {
  const auto& a = unfused.weights().layers;
  const auto& f = fused.weights().layers;
  ASSERT_EQ(a.size(), f.size());
  for (size_t l = 0; l < f.size(); ++l) {
    const DecoderLayerWeights& w = f[l];
    int64_t merged = 0;  // storages fewer than the unfused layer's: n - 1 per block of n, and its biases'
    int64_t added = 0;   // bytes of the zero biases given to unbiased members
    const auto groups = projection_groups(w), before_groups = projection_groups(a[l]);
    ASSERT_EQ(groups.size(), before_groups.size());
    for (size_t g = 0; g < groups.size(); ++g) {
      const auto& members = groups[g];
      ASSERT_EQ(members.size(), before_groups[g].size());
      EXPECT_TRUE(fusable(members)) << "layer " << l << ", group " << g;
      int64_t biased = 0;  // members with a bias of their own
      for (size_t k = 0; k < members.size(); ++k) {
        const LinearWeights& m = *members[k];
        const LinearWeights& original = *before_groups[g][k];
        EXPECT_TRUE(at::equal(m.weight, original.weight)) << "layer " << l << ", group " << g << ", member " << k;
        if (original.bias.defined()) {
          ++biased;
          EXPECT_TRUE(at::equal(m.bias, original.bias)) << "layer " << l << ", group " << g << ", member " << k;
        } else if (m.bias.defined()) {  // a zero bias, rows of the block's bias
          EXPECT_EQ(m.bias.sizes(), at::IntArrayRef({m.weight.size(0)})) << "layer " << l << ", member " << k;
          EXPECT_EQ(m.bias.count_nonzero().item<int64_t>(), 0) << "layer " << l << ", member " << k;
          added += static_cast<int64_t>(m.bias.nbytes());
        }
      }
      EXPECT_EQ(members[0]->bias.defined(), biased > 0) << "layer " << l << ", group " << g;
      merged += static_cast<int64_t>(members.size() - 1) + std::max<int64_t>(biased - 1, 0);
    }
    // The added bytes, counted from the model: kv_a_proj's out-features x element size per set where q
    // has a bias (converted Qwen2 layers); nothing elsewhere.
    int64_t expected_added = 0;
    if (w.k_rope_proj.weight.defined() && a[l].q_proj.bias.defined()) {
      for (const KvLatentWeights& kv : a[l].kv) {
        EXPECT_FALSE(kv.kv_a_proj.bias.defined()) << "layer " << l << ": no checkpoint has a kv_a_proj bias";
        expected_added += kv.kv_a_proj.weight.size(0) * static_cast<int64_t>(a[l].q_proj.bias.element_size());
      }
    }
    EXPECT_EQ(added, expected_added) << "layer " << l;
    EXPECT_FALSE(fusable({&a[l].gate_proj, &a[l].up_proj})) << "the unfused decoder's layer " << l;
    const LayerBytes before = layer_bytes(a[l]), after = layer_bytes(f[l]);
    EXPECT_EQ(after.tensors, before.tensors + expected_added) << "layer " << l;
    EXPECT_EQ(after.storages, after.tensors) << "layer " << l;
    EXPECT_EQ(after.count + merged, before.count) << "layer " << l;
  }
  // The checkpoint's parameters (the zero biases are none of them).
  EXPECT_EQ(fused.step_weight_bytes(), unfused.step_weight_bytes());
}

// Logits of the whole inputs, then greedy generation in dynamic and static decode steps: the same
// tokens. Returns the logits' max relative difference.
double expect_same_outputs(const Model& unfused, const Model& fused, const ModelInputs& in, const std::string& what) {
  at::Tensor la = unfused.logits(in), lf = fused.logits(in);
  const double err = max_rel_error(lf, la, testing::real_positions(in));
  EXPECT_LT(err, 1e-5) << what << ": logits";
  GenerateOptions g;
  g.max_new_tokens = 8;
  for (DecodeMode mode : {DecodeMode::kDynamic, DecodeMode::kStatic}) {
    g.decode = mode;
    GenerateResult ra = generate(unfused.decoder(), unfused.prepare(in, false), g);
    GenerateResult rf = generate(fused.decoder(), fused.prepare(in, false), g);
    EXPECT_EQ(rf.decode, mode);
    EXPECT_TRUE(at::equal(rf.sequences, ra.sequences)) << what << ", " << decode_mode_name(mode) << " steps:\n"
                                                       << rf.sequences << "\n" << ra.sequences;
  }
  return err;
}

class FusedProjections : public ::testing::TestWithParam<std::string> {};

TEST_P(FusedProjections, UnconvertedLoadedFusedEqualsUnfused) {
  const std::string dir = fixtures_dir() + "/" + GetParam() + "/model";
  auto plain = Model::load(dir, LoadOptions{});
  LoadOptions o;
  o.fuse_projections = true;
  auto fused = Model::load(dir, o);
  EXPECT_TRUE(fused->decoder().load_options().fuse_projections);
  expect_fused_layers(plain->decoder(), fused->decoder());
  const double err = expect_same_outputs(*plain, *fused, fixture_inputs(GetParam()), "unconverted");
  std::printf("[%s unconverted] fused vs unfused logits: max rel. %.3g\n", GetParam().c_str(), err);
}

TEST_P(FusedProjections, ConvertedFusedEqualsUnfused) {
  testing::Converted cv = testing::converted(GetParam());  // md for the VLMs, whitened for text
  auto fused = fused_twin(*cv.model);
  EXPECT_EQ(cv.model->text_config().mla->modality_split, cv.model->image_token_id() >= 0);
  expect_fused_layers(cv.model->decoder(), fused->decoder());
  const double err = expect_same_outputs(*cv.model, *fused, cv.inputs, "converted");
  std::printf("[%s converted] fused vs unfused logits: max rel. %.3g\n", GetParam().c_str(), err);
  // The expanded twin (q, the RoPE key and the latent of the fused GEMM, K and V rebuilt) too.
  auto& dec = const_cast<TextDecoder&>(fused->decoder());
  auto& ref = const_cast<TextDecoder&>(cv.model->decoder());
  dec.set_mla_attention(MlaAttention::kExpanded);
  ref.set_mla_attention(MlaAttention::kExpanded);
  expect_same_outputs(*cv.model, *fused, cv.inputs, "converted, expanded");
  ref.set_mla_attention(MlaAttention::kAuto);
}

// Qwen2 (q/k/v biases; converted: biased q and k_rope, kv_a_proj given a zero bias, one block), LLaVA
// (no biases; md: one block of q, k_rope and both sets' kv_a_proj), Qwen2.5-VL (biases, M-RoPE, md).
INSTANTIATE_TEST_SUITE_P(Fixtures, FusedProjections,
                         ::testing::Values("text/qwen2", "vlm/llava", "vlm/qwen2_5_vl"), [](const auto& info) {
                           std::string n = info.param.substr(info.param.find('/') + 1);
                           for (char& ch : n) ch = std::isalnum(static_cast<unsigned char>(ch)) ? ch : '_';
                           return n;
                         });

// Conversion never fuses: its decoders are built unfused from the original's options.
TEST(FusedProjectionsScope, ConversionBuildsUnfusedDecoders) {
  testing::Converted cv = testing::converted("text/qwen2");
  EXPECT_FALSE(cv.model->decoder().load_options().fuse_projections);
  const DecoderLayerWeights& w = cv.model->decoder().weights().layers[0];
  EXPECT_FALSE(fusable({&w.gate_proj, &w.up_proj}));
}

// Layers in host memory visit the device one at a time (layer_to copies every tensor on its own): on
// the CPU they stay the fused views; on a GPU each arrives as a tensor of its own and runs separately.
TEST(FusedProjectionsScope, LayersOnHostDecodeTheSame) {
  const std::string name = "vlm/qwen2_5_vl";
  const ModelInputs in = fixture_inputs(name);
  std::vector<at::Device> devices = {at::Device(at::kCPU)};
  if (at::hasCUDA()) devices.push_back(at::Device(at::kCUDA));
  for (at::Device device : devices) {
    LoadOptions resident{at::kFloat, device};
    LoadOptions host = resident;
    host.layers_on_host = true;
    host.fuse_projections = true;
    auto plain = Model::load(fixtures_dir() + "/" + name + "/model", resident);
    auto offloaded = Model::load(fixtures_dir() + "/" + name + "/model", host);
    const DecoderLayerWeights& w = offloaded->decoder().weights().layers[0];
    EXPECT_EQ(w.q_proj.weight.device().type(), at::kCPU);
    EXPECT_TRUE(fusable({&w.q_proj, &w.k_proj, &w.v_proj}));
    const DecoderLayerWeights staged = layer_to(w, device);
    EXPECT_EQ(fusable({&staged.q_proj, &staged.k_proj, &staged.v_proj}), device.is_cpu()) << device;
    EXPECT_LT(max_rel_error(offloaded->logits(in).cpu(), plain->logits(in).cpu(), testing::real_positions(in)), 1e-5)
        << device;
    GenerateOptions g;
    g.max_new_tokens = 6;
    g.decode = DecodeMode::kDynamic;  // offloaded layers cannot be captured: dynamic steps
    EXPECT_TRUE(at::equal(generate(offloaded->decoder(), offloaded->prepare(in, false), g).sequences,
                          generate(plain->decoder(), plain->prepare(in, false), g).sequences))
        << device;
  }
}

// On a GPU: a fused bf16 md model's static steps replayed as a CUDA graph equal the steps run eagerly
// (the fused GEMMs are captured like any other launch), and its logits stay within bf16 of the
// unfused model's.
TEST(FusedProjectionsCuda, GraphReplaysTheFusedSteps) {
  if (!at::hasCUDA() || !DecodeGraph::available()) GTEST_SKIP() << "no CUDA device or no CUDA graphs in this build";
  const std::string dir = fixtures_dir() + "/vlm/qwen2_5_vl";
  const ModelInputs in = fixture_inputs("vlm/qwen2_5_vl");
  testing::TempDir tmp;
  {
    auto original = Model::load(dir + "/model", LoadOptions{});
    convert::CalibrationInputs calib = convert::calibration_inputs(in);
    convert::ConvertOptions o;
    o.rope_strategy = "2-norm";
    o.rope_dims = 4;
    o.svd = SvdMethod::kMd;
    o.kv_rank = {4};
    convert::write_converted(dir + "/model", tmp.file("mla"), convert::convert_model(*original, o, &calib));
  }
  LoadOptions bf16{at::kBFloat16, at::Device(at::kCUDA)};
  LoadOptions bf16_fused = bf16;
  bf16_fused.fuse_projections = true;
  for (const std::string& what : {std::string("unconverted"), std::string("md")}) {
    const std::string model_dir = what == "md" ? tmp.file("mla") : dir + "/model";
    auto m = Model::load(model_dir, bf16);
    auto fused = Model::load(model_dir, bf16_fused);
    expect_fused_layers(m->decoder(), fused->decoder());
    EXPECT_TRUE(fused->decoder().weights().layers[0].gate_proj.weight.is_cuda());
    GenerateOptions g;
    g.max_new_tokens = 8;
    Prompt p = fused->prepare(in, false);
    g.decode = DecodeMode::kStatic;
    GenerateResult eager = generate(fused->decoder(), p, g);
    g.decode = DecodeMode::kGraph;
    GenerateResult graphed = generate(fused->decoder(), p, g);
    EXPECT_EQ(graphed.decode, DecodeMode::kGraph);
    EXPECT_TRUE(at::equal(graphed.sequences, eager.sequences)) << what;
    const double err = max_rel_error(fused->logits(in).to(at::kFloat).cpu(), m->logits(in).to(at::kFloat).cpu(),
                                     testing::real_positions(in));
    std::printf("[%s, CUDA bf16] fused vs unfused logits: max rel. %.3g\n", what.c_str(), err);
    EXPECT_LT(err, 3e-2) << what;
  }
}

}  // namespace
}  // namespace vlm2mla
