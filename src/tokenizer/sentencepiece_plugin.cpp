// The plugin behind sentencepiece_shim.h: thin wrappers over libsentencepiece. Built as a MODULE
// library that only libsentencepiece (and libsentencepiece_train) and the C++ runtime are linked to.
#include <sentencepiece_processor.h>
#include <sentencepiece_trainer.h>

#include "tokenizer/sentencepiece_shim.h"

// Declared in sentencepiece's common.h (not installed); exported by libsentencepiece.
namespace sentencepiece::logging {
void SetMinLogLevel(int v);
}

namespace {

using sentencepiece::SentencePieceProcessor;

// Deep binding resolves std::cerr inside libsentencepiece to libstdc++'s own (never constructed)
// object when the executable holds a copy-relocated std::cerr, so SentencePiece must not log: its
// INFO and WARNING messages are silenced before every call that could log (errors come back as
// Status values, which we pass on).
void quiet() { sentencepiece::logging::SetMinLogLevel(3); }
SentencePieceProcessor* sp(void* m) { return static_cast<SentencePieceProcessor*>(m); }

void* load(const std::string& path, std::string* error) {
  quiet();
  auto* p = new SentencePieceProcessor();
  const auto status = p->Load(path);
  if (!status.ok()) {
    *error = status.ToString();
    delete p;
    return nullptr;
  }
  return p;
}
void free_model(void* m) { delete sp(m); }
int piece_size(void* m) { return sp(m)->GetPieceSize(); }
bool encode(void* m, const std::string& text, std::vector<int>* ids, std::string* error) {
  const auto status = sp(m)->Encode(text, ids);
  if (!status.ok()) *error = status.ToString();
  return status.ok();
}
bool decode(void* m, const std::vector<int>& ids, std::string* text, std::string* error) {
  const auto status = sp(m)->Decode(ids, text);
  if (!status.ok()) *error = status.ToString();
  return status.ok();
}
std::string id_to_piece(void* m, int id) { return sp(m)->IdToPiece(id); }
int piece_to_id(void* m, const std::string& piece) { return sp(m)->PieceToId(piece); }
int piece_type(void* m, int id) {
  auto* p = sp(m);
  if (p->IsUnknown(id)) return 1;
  if (p->IsControl(id)) return 2;
  if (p->IsByte(id)) return 4;
  if (p->IsUnused(id)) return 5;
  return 0;
}
int unk_id(void* m) { return sp(m)->unk_id(); }
int bos_id(void* m) { return sp(m)->bos_id(); }
int eos_id(void* m) { return sp(m)->eos_id(); }
bool train(const std::string& args, std::string* error) {
  quiet();
  const auto status = sentencepiece::SentencePieceTrainer::Train(args);
  if (!status.ok()) *error = status.ToString();
  return status.ok();
}

const vlm2mla::tok::SpmApi kApi{vlm2mla::tok::kSpmApiVersion,
                               load, free_model, piece_size, encode, decode, id_to_piece,
                               piece_to_id, piece_type, unk_id, bos_id, eos_id, train};

}  // namespace

extern "C" __attribute__((visibility("default"))) const vlm2mla::tok::SpmApi* vlm2mla_spm_api() {
  return &kApi;
}
