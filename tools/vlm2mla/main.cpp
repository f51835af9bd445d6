// vlm2mla: convert vision-language models to Multi-head Latent Attention and serve them.
// One CLI; one file per subcommand. Errors: the library throws, main prints "error: ..." and
// exits 1 (2 for command-line usage errors).
#include <CLI/CLI.hpp>
#include <c10/util/Exception.h>

#include <cstdio>
#include <exception>

#include "common.h"
#include "core/env_switch.h"
#include "core/error.h"
#include "core/log.h"
#include "core/torch_compat.h"

int main(int argc, char** argv) {
  CLI::App app{"vlm2mla: vision-language models with Multi-head Latent Attention"};
  app.require_subcommand(1);
  bool verbose = false, quiet = false;
  app.add_flag("-v,--verbose", verbose, "more detail on stderr (load and step times)");
  app.add_flag("-q,--quiet", quiet, "only errors on stderr");
  vlm2mla::cli::register_logits(app);
  vlm2mla::cli::register_generate(app);
  vlm2mla::cli::register_inspect(app);
  vlm2mla::cli::register_init_random(app);
  vlm2mla::cli::register_bench(app);
  vlm2mla::cli::register_calibrate(app);
  vlm2mla::cli::register_convert(app);
  vlm2mla::cli::register_cache_study(app);
  vlm2mla::cli::register_plot(app);
  vlm2mla::cli::register_preprocess(app);
  vlm2mla::cli::register_tokenize(app);
  app.parse_complete_callback([&]() {
    vlm2mla::set_log_level(quiet     ? vlm2mla::LogLevel::kQuiet
                           : verbose ? vlm2mla::LogLevel::kDebug
                                     : vlm2mla::LogLevel::kInfo);
    vlm2mla::check_env_switches();  // a fast path's switch set to anything but 0 or 1 stops before any work
  });
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  } catch (const vlm2mla::Error& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  } catch (const c10::Error& e) {
    if (vlm2mla::compat::is_out_of_memory(e)) {  // (the KV caches say which of theirs; this is any other tensor)
      std::fprintf(stderr,
                   "error: out of memory: %s; fewer sequences or positions, or a quantized --kv-cache, take less\n",
                   vlm2mla::compat::first_line(e).c_str());
      return 1;
    }
    std::fprintf(stderr, "error: internal (libtorch): %s\n", e.what_without_backtrace());
    return 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
  return 0;
}
