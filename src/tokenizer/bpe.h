// The BPE model of tokenizer.json ("model": {"type": "BPE"}): vocabulary, ranked merges, byte
// fallback, unknown-token fusing, ignore_merges; merges applied lowest rank first (leftmost among
// equal ranks) with a heap over a linked list of symbols, as Hugging Face tokenizers does.
#pragma once

#include <cstdint>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

namespace vlm2mla::tok {

class BpeModel {
 public:
  // `model` is tokenizer.json's "model" object; `where` names the file for errors.
  BpeModel(const nlohmann::json& model, const std::string& where);

  // Appends the ids of one pre-token (already normalized and pre-tokenized) to `out`.
  void encode_word(const std::string& word, std::vector<int64_t>& out) const;

  std::optional<int64_t> token_to_id(const std::string& token) const;
  const std::string* id_to_token(int64_t id) const;  // nullptr when absent
  int64_t max_id() const { return max_id_; }

 private:
  void merge_word(const std::string& word, std::vector<int64_t>& out) const;

  std::unordered_map<std::string, int64_t> vocab_;
  std::unordered_map<int64_t, std::string> vocab_r_;
  struct MergeInfo {
    uint32_t rank;
    int64_t new_id;
  };
  std::unordered_map<uint64_t, MergeInfo> merges_;  // (left id << 32 | right id) -> rank, result
  std::optional<int64_t> unk_id_;
  std::string continuing_subword_prefix_, end_of_word_suffix_;
  bool fuse_unk_ = false, byte_fallback_ = false, ignore_merges_ = false;
  int64_t byte_ids_[256];  // ids of "<0xNN>" or -1
  int64_t max_id_ = -1;

  // Per-word cache (short words only; cleared when full).
  mutable std::mutex cache_mutex_;
  mutable std::unordered_map<std::string, std::vector<int64_t>> cache_;
};

}  // namespace vlm2mla::tok
