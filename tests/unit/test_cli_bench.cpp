// `vlm2mla bench` end to end on the CPU: the JSON it prints (each decode step's time and the median, the
// roofline floor's weight bytes against the checkpoint's own tensors,
// the decode mode, the cache bytes as allocated: sequences x the capacity rounded up to 64 positions x
// the bytes per position), --synthetic-cache, --image on the vision-language fixtures, and --decode errors;
// `vlm2mla plot --bench` over such lines.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdlib>
#include <map>
#include <string>
#include <nlohmann/json.hpp>

#include "core/env_switch.h"
#include "io/safetensors.h"
#include "support/test_support.h"

namespace vlm2mla {
namespace {

using testing::run_cli;

nlohmann::json bench_json(std::vector<std::string> extra) {
  std::vector<std::string> args = {"-q", "bench", "--model", testing::fixtures_dir() + "/text/qwen2/model", "--context", "16",
                                   "--batch", "2", "--new-tokens", "4", "--warmup", "0", "--json"};
  args.insert(args.end(), extra.begin(), extra.end());
  testing::CliResult r = run_cli(args);
  EXPECT_EQ(r.exit_code, 0) << r.err;
  return nlohmann::json::parse(r.out);
}

// bench with environment variable `var` set to `good` (its JSON) and to `bad` (that run), `var` restored after.
struct EnvRequestRuns {
  nlohmann::json good;
  testing::CliResult bad;
};
EnvRequestRuns bench_with_env(const char* var, const char* good, const char* bad) {
  const char* old = std::getenv(var);
  const std::string saved = old ? old : "";
  EnvRequestRuns runs;
  ::setenv(var, good, 1);
  runs.good = bench_json({});
  ::setenv(var, bad, 1);
  runs.bad = run_cli({"-q", "bench", "--model", testing::fixtures_dir() + "/text/qwen2/model", "--context", "16",
                      "--batch", "1", "--new-tokens", "2", "--json"});
  if (old) {
    ::setenv(var, saved.c_str(), 1);
  } else {
    ::unsetenv(var);
  }
  EXPECT_NE(runs.bad.exit_code, 0) << var << "=" << bad;
  EXPECT_FALSE(runs.bad.crashed) << var << "=" << bad;
  EXPECT_TRUE(runs.bad.out.empty()) << runs.bad.out;
  return runs;
}

// VLM2MLA_DECODE_KERNEL is read before the model loads: a known name is reported in the JSON, an unknown one
// stops the run with an error naming the variable and the choices.
TEST(CliBench, DecodeKernelRequestIsReportedAndChecked) {
  const EnvRequestRuns runs = bench_with_env("VLM2MLA_DECODE_KERNEL", "keys", "fastest");
  EXPECT_EQ(runs.good["decode_kernel_request"], "keys");
  EXPECT_NE(runs.bad.err.find("VLM2MLA_DECODE_KERNEL"), std::string::npos) << runs.bad.err;
  EXPECT_NE(runs.bad.err.find("'fastest'"), std::string::npos) << runs.bad.err;
}

// VLM2MLA_DECODE_COMBINE likewise: reported in the JSON, and a misspelt layout stops the run before the model loads.
TEST(CliBench, DecodeCombineRequestIsReportedAndChecked) {
  const EnvRequestRuns runs = bench_with_env("VLM2MLA_DECODE_COMBINE", "warp", "warps");
  EXPECT_EQ(runs.good["decode_combine_request"], "warp");
  EXPECT_NE(runs.bad.err.find("VLM2MLA_DECODE_COMBINE: unknown combine layout 'warps'"), std::string::npos)
      << runs.bad.err;
}

// The fast paths' switches: reported as set (env_switches), and a value other than 0 or 1 stops any command before
// it starts, naming the variable; VLM2MLA_DECODE_MIN_TILES, VLM2MLA_DECODE_MAX_TILES, VLM2MLA_DECODE_WIDE_WARPS and
// the wgmma kernel's VLM2MLA_DECODE_WGMMA_PRODUCERS / _CONSUMERS are reported too and checked before the
// model loads.
TEST(CliBench, EnvSwitchesAreReportedAndChecked) {
  const EnvRequestRuns runs = bench_with_env("VLM2MLA_FUSED_ROPE", "0", "off");
  ASSERT_TRUE(runs.good.contains("env_switches")) << runs.good.dump();
  EXPECT_EQ(runs.good["env_switches"]["VLM2MLA_FUSED_ROPE"], false);
  EXPECT_EQ(runs.good["env_switches"].size(), std::size(kEnvSwitches));
  EXPECT_NE(runs.bad.err.find("VLM2MLA_FUSED_ROPE='off': expected 0 (off) or 1 (on)"), std::string::npos)
      << runs.bad.err;
  // a count setting: `good` reported as the JSON's `key` (`want`), `bad` refused naming the variable and the value
  auto count_setting = [](const char* var, const char* key, const char* good, int64_t want, const char* bad) {
    const EnvRequestRuns r = bench_with_env(var, good, bad);
    EXPECT_EQ(r.good[key], want) << var;
    EXPECT_NE(r.bad.err.find(std::string(var) + "='" + bad + "'"), std::string::npos) << r.bad.err;
  };
  count_setting("VLM2MLA_DECODE_MIN_TILES", "decode_min_tiles", "4", 4, "four");
  count_setting("VLM2MLA_DECODE_MAX_TILES", "decode_max_tiles", "64", 64, "-8");
  count_setting("VLM2MLA_DECODE_WIDE_WARPS", "decode_wide_warps", "16", 16, "12");
  count_setting("VLM2MLA_DECODE_WGMMA_PRODUCERS", "decode_wgmma_producers", "1", 1, "4");
  count_setting("VLM2MLA_DECODE_WGMMA_CONSUMERS", "decode_wgmma_consumers", "3", 3, "1");
}

TEST(CliBench, JsonReportsStepsModeAndTheCacheAsAllocated) {
  for (const std::string mode : {"dynamic", "static"}) {
    nlohmann::json j = bench_json({"--decode", mode});
    EXPECT_EQ(j["decode_mode"], mode);
    const char* kernel_env = std::getenv("VLM2MLA_DECODE_KERNEL");
    EXPECT_EQ(j["decode_kernel_request"], kernel_env ? kernel_env : "auto");
    const char* combine_env = std::getenv("VLM2MLA_DECODE_COMBINE");
    EXPECT_EQ(j["decode_combine_request"], combine_env && *combine_env ? combine_env : "auto");
    EXPECT_EQ(j["decode_kernels"], nlohmann::json::array());  // an unconverted model: no latent-cache kernel
    EXPECT_EQ(j["decode_step_kernels"], -1);  // counted from a captured CUDA graph only (graph mode)
    EXPECT_EQ(j["new_tokens"], 4);
    ASSERT_EQ(j["decode_step_ms"].size(), 3u);  // the first token comes out of the prefill
    std::vector<double> ms = j["decode_step_ms"].get<std::vector<double>>();
    std::sort(ms.begin(), ms.end());
    EXPECT_DOUBLE_EQ(j["decode_ms_per_step_median"].get<double>(), ms[1]);
    EXPECT_GT(ms[0], 0.0);
    // 2 sequences x (16 + 4 positions, rounded up to 64) x the float32 K/V bytes of every layer.
    EXPECT_EQ(j["kv_bytes_allocated"].get<int64_t>(), 2 * 64 * j["kv_bytes_per_token"].get<int64_t>());
    EXPECT_FALSE(j["synthetic_cache"].get<bool>());
    EXPECT_GT(j["prefill_tokens_per_s"].get<double>(), 0.0);
  }
  // The floor's weights: every float32 parameter of the checkpoint but the embedding table (the LM head
  // instead, when tied), counted here from the file itself.
  int64_t params = 0, embed = 0;
  bool lm_head = false;
  for (const auto& [name, t] : io::read_safetensors(testing::fixtures_dir() + "/text/qwen2/model/model.safetensors")) {
    if (name.find("embed_tokens") != std::string::npos) {
      embed = t.numel();
      continue;
    }
    lm_head = lm_head || name.find("lm_head") != std::string::npos;
    params += t.numel();
  }
  nlohmann::json f = bench_json({});
  EXPECT_EQ(f["step_weight_bytes"].get<int64_t>(), 4 * (params + (lm_head ? 0 : embed)));
  const double bw = f["copy_bandwidth_bytes_per_s"].get<double>();
  EXPECT_GT(bw, 0.0);
  EXPECT_NEAR(f["floor_ms"].get<double>(),
              1e3 * double(f["step_weight_bytes"].get<int64_t>() + f["kv_bytes_allocated"].get<int64_t>()) / bw, 1e-9);

  nlohmann::json s = bench_json({"--synthetic-cache", "--decode", "static"});
  EXPECT_TRUE(s["synthetic_cache"].get<bool>());
  EXPECT_TRUE(s["prefill_tokens_per_s"].is_null());  // no prefill ran
  EXPECT_EQ(s["decode_step_ms"].size(), 3u);
  EXPECT_EQ(s["kv_bytes_allocated"], 2 * 64 * s["kv_bytes_per_token"].get<int64_t>());
}

TEST(CliBench, DecodeModesTheRunCannotHaveAreClearErrors) {
  const std::string model = testing::fixtures_dir() + "/text/qwen2/model";
  testing::CliResult bad = run_cli({"bench", "--model", model, "--context", "8", "--new-tokens", "2", "--decode", "fast"});
  EXPECT_NE(bad.exit_code, 0);
  EXPECT_FALSE(bad.crashed);
  EXPECT_NE(bad.err.find("--decode"), std::string::npos) << bad.err;
  EXPECT_NE(bad.err.find("fast"), std::string::npos) << bad.err;
  testing::CliResult graph = run_cli({"bench", "--model", model, "--context", "8", "--new-tokens", "2", "--decode", "graph"});
  EXPECT_NE(graph.exit_code, 0);
  EXPECT_NE(graph.err.find("CUDA"), std::string::npos) << graph.err;
}

// More sequences and positions than memory holds: the allocator's refusal is an "out of memory" error that says
// what takes less (it was printed as an internal libtorch error), not a crash; the KV cache's own buffers name
// themselves (KvCache.AnAllocationThatDoesNotFitIsAClearError).
TEST(CliBench, MoreThanMemoryHoldsIsAClearError) {
  const std::string model = testing::fixtures_dir() + "/text/qwen2/model";
  testing::CliResult r = run_cli({"-q", "bench", "--model", model, "--context", "1000000000", "--batch", "100000",
                                  "--new-tokens", "2", "--synthetic-cache"});
  EXPECT_EQ(r.exit_code, 1) << r.err;
  EXPECT_FALSE(r.crashed);
  EXPECT_EQ(r.err.find("internal"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("error: out of memory: "), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("a quantized --kv-cache"), std::string::npos) << r.err;
}

// --fuse-projections: auto fuses on CUDA only, on fuses on the CPU too (the same tokens, logits within
// the GEMM's blocking of the unfused ones); the JSON says which ran; an unknown value is a clear error.
TEST(CliBench, FuseProjectionsIsReportedAndKeepsTheResults) {
  EXPECT_FALSE(bench_json({})["fused_projections"].get<bool>());  // auto on the CPU
  EXPECT_TRUE(bench_json({"--fuse-projections", "on", "--decode", "static"})["fused_projections"].get<bool>());
  const std::string model = testing::fixtures_dir() + "/text/qwen2";
  testing::TempDir dir;
  std::map<std::string, at::Tensor> logits;
  for (const std::string fuse : {"off", "on"}) {
    testing::CliResult r = run_cli({"-q", "logits", "--model", model + "/model", "--inputs", model + "/inputs.safetensors",
                                    "--out", dir.file(fuse + ".safetensors"), "--fuse-projections", fuse});
    ASSERT_EQ(r.exit_code, 0) << r.err;
    logits[fuse] = io::read_safetensors(dir.file(fuse + ".safetensors")).at("logits");
  }
  const at::Tensor& off = logits["off"];
  EXPECT_LT((logits["on"] - off).abs().max().item<double>() / off.abs().max().item<double>(), 1e-5);
  testing::CliResult bad = run_cli({"generate", "--model", model + "/model", "--inputs", model + "/inputs.safetensors",
                                    "--max-new-tokens", "2", "--fuse-projections", "yes"});
  EXPECT_NE(bad.exit_code, 0);
  EXPECT_FALSE(bad.crashed);
  EXPECT_NE(bad.err.find("--fuse-projections"), std::string::npos) << bad.err;
  EXPECT_NE(bad.err.find("yes"), std::string::npos) << bad.err;
}

// --image on the tiny vision-language fixtures: a random image of that size before the context's text, encoded
// (vision_seconds) once for the warm-up on a few sequences and once for the timed run; the report counts its
// tokens; with --synthetic-cache too. A text-only model refuses --image.
TEST(CliBench, ImageContextsOnTheVisionLanguageFixtures) {
  for (const std::string name : {"qwen2_5_vl", "llava"}) {
    for (const std::string synthetic : {"", "--synthetic-cache"}) {
      std::vector<std::string> args = {"-q", "bench", "--model", testing::fixtures_dir() + "/vlm/" + name + "/model",
                                       "--context", "16", "--batch", "3", "--new-tokens", "3", "--warmup", "1",
                                       "--image", "56x84", "--json"};
      if (!synthetic.empty()) args.push_back(synthetic);
      testing::CliResult r = run_cli(args);
      ASSERT_EQ(r.exit_code, 0) << name << " " << synthetic << ": " << r.err;
      const nlohmann::json j = nlohmann::json::parse(r.out);
      EXPECT_EQ(j["image"], "56x84");
      const int64_t image_tokens = j["image_tokens"].get<int64_t>();
      EXPECT_GT(image_tokens, 0) << name;
      // Qwen2.5-VL: vision_start, the image's tokens, vision_end, then the text
      EXPECT_EQ(j["context"].get<int64_t>(), image_tokens + 16 + (name == "qwen2_5_vl" ? 2 : 0)) << name;
      EXPECT_GT(j["vision_seconds"].get<double>(), 0.0) << name;
      EXPECT_EQ(j["decode_step_ms"].size(), 2u) << name;
      EXPECT_EQ(j["synthetic_cache"].get<bool>(), !synthetic.empty()) << name;
    }
  }
  testing::CliResult text = run_cli({"-q", "bench", "--model", testing::fixtures_dir() + "/text/qwen2/model",
                                     "--context", "8", "--new-tokens", "2", "--image", "56x84"});
  EXPECT_NE(text.exit_code, 0);
  EXPECT_FALSE(text.crashed);
  EXPECT_NE(text.err.find("--image"), std::string::npos) << text.err;
}

// plot --bench draws bench_mla.sh's JSON lines (a failed run's line, without a result, skipped): ms per step, or with
// --metric tokens decode tokens/s, an image context labelled as its own shape; a file without results, a line that
// is not JSON, a result without its numbers and an unknown metric are errors naming what is wrong, and leave no
// image behind.
TEST(CliPlot, BenchLinesAsStepsOrTokens) {
  testing::TempDir tmp;
  auto line = [](const std::string& variant, int64_t context, int64_t batch, double ms, const std::string& image) {
    nlohmann::json r = {{"context", context}, {"batch", batch}, {"decode_ms_per_step", ms * 1.5},
                        {"decode_ms_per_step_median", ms}, {"image", image}};
    return nlohmann::json{{"variant", variant}, {"decode", "graph"}, {"result", r}}.dump() + "\n";
  };
  testing::write_bytes(tmp.file("bench.jsonl"),
                       line("gqa", 32768, 64, 32.0, "") + line("mla:32:bf16", 32768, 256, 43.2, "") +
                           "{\"variant\": \"mla:32:int4\", \"error\": \"out of memory\"}\n\n" +
                           line("mla:32:bf16", 32770, 256, 49.7, "1344x1344"));
  if (std::system("command -v gnuplot >/dev/null 2>&1") == 0) {
    for (const std::string metric : {"step", "tokens"}) {
      const std::string png = tmp.file(metric + ".png");
      testing::CliResult r = run_cli({"plot", "--bench", tmp.file("bench.jsonl"), "--metric", metric, "--out", png});
      ASSERT_EQ(r.exit_code, 0) << metric << ": " << r.err;
      EXPECT_EQ(testing::read_bytes(png).substr(0, 4), "\x89PNG") << metric;
      EXPECT_FALSE(testing::path_exists(png + ".tmp")) << metric;
    }
  }
  {  // --script: the same plot's gnuplot script, drawing to --out; shapes by context then batch, variants in the order
     // of their first line (here not the lines' order, nor alphabetical)
    testing::write_bytes(tmp.file("order.jsonl"), line("mla:128:bf16", 32768, 8, 10.4, "") +
                                                      line("mla:32:bf16", 4096, 1, 5.8, "") +
                                                      line("gqa", 32768, 8, 8.6, "") + line("mla:128:bf16", 4096, 1, 6.7, "") +
                                                      line("gqa", 4096, 32, 7.0, ""));
    const std::string png = tmp.file("order.png"), gp = tmp.file("order.gp");
    testing::CliResult r = run_cli({"plot", "--bench", tmp.file("order.jsonl"), "--out", png, "--script", gp});
    if (std::system("command -v gnuplot >/dev/null 2>&1") == 0) {
      ASSERT_EQ(r.exit_code, 0) << r.err;
      const std::string script = testing::read_bytes(gp);
      EXPECT_NE(script.find("set output \"" + png + "\""), std::string::npos) << script;
      EXPECT_NE(script.find("shape \"mla:128:bf16\" \"mla:32:bf16\" \"gqa\"\n"), std::string::npos) << script;
      const size_t a = script.find("\"4k x 1\""), b = script.find("\"4k x 32\""), c = script.find("\"32k x 8\"");
      ASSERT_NE(a, std::string::npos);
      EXPECT_TRUE(a < b && b < c) << script;
      // 4k x 1: mla:128 6.7, mla:32 5.8, no gqa
      EXPECT_NE(script.find("\"4k x 1\" 6.700000 5.800000 NaN"), std::string::npos) << script;
      EXPECT_FALSE(testing::path_exists(gp + ".tmp"));
    } else {
      EXPECT_NE(r.exit_code, 0);
    }
  }
  auto refused = [&](const std::string& content, const std::vector<std::string>& extra, const std::string& says) {
    testing::write_bytes(tmp.file("bad.jsonl"), content);
    std::vector<std::string> args = {"plot", "--bench", tmp.file("bad.jsonl"), "--out", tmp.file("bad.png")};
    args.insert(args.end(), extra.begin(), extra.end());
    testing::CliResult r = run_cli(args);
    EXPECT_NE(r.exit_code, 0) << says;
    EXPECT_FALSE(r.crashed) << says;
    EXPECT_NE(r.err.find(says), std::string::npos) << r.err;
    EXPECT_FALSE(testing::path_exists(tmp.file("bad.png"))) << says;
  };
  refused("{\"variant\": \"gqa\", \"error\": \"x\"}\n", {}, "no benchmark results");
  refused(line("gqa", 4096, 1, 5.2, "") + "\n{not json\n", {}, "line 3 is not JSON");
  refused("{\"variant\": \"gqa\", \"result\": {\"context\": 4096}}\n", {}, "result.batch missing");
  refused(line("gqa", 4096, 1, 5.2, ""), {"--metric", "bytes"}, "--metric");
}

}  // namespace
}  // namespace vlm2mla
