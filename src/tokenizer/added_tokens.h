// Added tokens of tokenizer.json ("added_tokens"): found in the text before the model sees it, with
// Hugging Face's rules: leftmost-longest match; a match rejected by single_word is skipped, not
// retried shorter; lstrip/rstrip absorb the whitespace beside the token; tokens with
// normalized=false are matched in the raw text, normalized=true ones in the normalized text.
#pragma once

#include <cstdint>
#include <string>
#include <unordered_map>
#include <vector>

namespace vlm2mla::tok {

struct AddedToken {
  int64_t id = 0;
  std::string content;
  bool single_word = false, lstrip = false, rstrip = false, normalized = false, special = false;
};

// A run of text: either an added token (id >= 0) or text for the model (id < 0).
struct Segment {
  std::string text;
  int64_t id = -1;
  size_t offset = 0;  // where the segment starts in the string that was split
};

class AddedTokenMatcher {
 public:
  AddedTokenMatcher() = default;
  explicit AddedTokenMatcher(std::vector<AddedToken> tokens);
  bool empty() const { return tokens_.empty(); }
  // Splits `text` into added tokens and the text between them (empty text runs are dropped).
  std::vector<Segment> split(const std::string& text) const;

 private:
  std::vector<AddedToken> tokens_;
  std::vector<std::vector<size_t>> by_first_byte_;  // 256 lists of token indices, longest first
};

}  // namespace vlm2mla::tok
