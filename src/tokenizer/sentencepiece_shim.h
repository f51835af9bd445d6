// The SentencePiece functions vlm2mla uses, behind a plugin loaded with dlopen(RTLD_DEEPBIND).
//
// Why a plugin: Debian's libsentencepiece.so carries (and exports) its own copy of protobuf-lite,
// and libtorch loads the system libprotobuf.so.32. Linked into one executable, the two copies
// interpose on each other and the process crashes before main (libprotobuf's static initializer
// calls into sentencepiece's protobuf). Loaded as a local, deep-bound plugin, libsentencepiece
// resolves protobuf to its own copy and stays invisible to libtorch.
#pragma once

#include <string>
#include <vector>

namespace vlm2mla::tok {

// Entry points of the plugin (libvlm2mla_spm.so); the plugin is built with the same compiler and
// standard library, so C++ types cross the boundary. Errors come back as a non-empty string.
struct SpmApi {
  int version;  // kSpmApiVersion
  void* (*load)(const std::string& path, std::string* error);
  void (*free_model)(void* model);
  int (*piece_size)(void* model);
  bool (*encode)(void* model, const std::string& text, std::vector<int>* ids, std::string* error);
  bool (*decode)(void* model, const std::vector<int>& ids, std::string* text, std::string* error);
  std::string (*id_to_piece)(void* model, int id);
  int (*piece_to_id)(void* model, const std::string& piece);  // unk id when absent
  // 0 normal (or user defined), 1 unknown, 2 control, 4 byte, 5 unused
  int (*piece_type)(void* model, int id);
  int (*unk_id)(void* model);
  int (*bos_id)(void* model);
  int (*eos_id)(void* model);
  // SentencePieceTrainer::Train(args) (tests train tiny models with it).
  bool (*train)(const std::string& args, std::string* error);
};
constexpr int kSpmApiVersion = 1;

// Loads the plugin once (from $VLM2MLA_SPM_PLUGIN, beside the executable, or where the build put
// it); throws IoError saying where it looked.
const SpmApi& spm_api();

}  // namespace vlm2mla::tok

extern "C" const vlm2mla::tok::SpmApi* vlm2mla_spm_api();
