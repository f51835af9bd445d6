#include "tokenizer/sentencepiece_shim.h"

#include <dlfcn.h>
#include <unistd.h>

#include <cstdlib>
#include <mutex>

#include "core/error.h"
#include "core/fs.h"

namespace vlm2mla::tok {

namespace {
std::string executable_dir() {
  char buf[4096];
  const ssize_t n = readlink("/proc/self/exe", buf, sizeof(buf) - 1);
  if (n <= 0) return "";
  std::string p(buf, static_cast<size_t>(n));
  const size_t slash = p.rfind('/');
  return slash == std::string::npos ? "" : p.substr(0, slash);
}

const SpmApi* load_plugin() {
  std::vector<std::string> candidates;
  if (const char* env = std::getenv("VLM2MLA_SPM_PLUGIN"); env && *env) candidates.push_back(env);
  const std::string exe_dir = executable_dir();
  if (!exe_dir.empty()) {
    candidates.push_back(fs::join(exe_dir, "libvlm2mla_spm.so"));
    candidates.push_back(fs::join(exe_dir, "../libvlm2mla_spm.so"));  // tests/ under the build dir
  }
#ifdef VLM2MLA_SPM_PLUGIN_PATH
  candidates.push_back(VLM2MLA_SPM_PLUGIN_PATH);
#endif
  std::string tried;
  for (const auto& path : candidates) {
    if (!fs::is_regular_file(path)) {
      tried += " " + path + " (absent)";
      continue;
    }
    void* handle = dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL | RTLD_DEEPBIND);
    if (!handle) {
      const char* e = dlerror();
      tried += " " + path + " (" + (e ? e : "dlopen failed") + ")";
      continue;
    }
    auto entry = reinterpret_cast<const SpmApi* (*)()>(dlsym(handle, "vlm2mla_spm_api"));
    const SpmApi* api = entry ? entry() : nullptr;
    if (api && api->version == kSpmApiVersion) return api;
    tried += " " + path + " (no vlm2mla_spm_api of version " + std::to_string(kSpmApiVersion) + ")";
  }
  throw IoError("the SentencePiece plugin libvlm2mla_spm.so could not be loaded; tried:" + tried +
                " (set VLM2MLA_SPM_PLUGIN to its path)");
}
}  // namespace

const SpmApi& spm_api() {
  static std::once_flag once;
  static const SpmApi* api = nullptr;
  std::call_once(once, [] { api = load_plugin(); });
  return *api;
}

}  // namespace vlm2mla::tok
