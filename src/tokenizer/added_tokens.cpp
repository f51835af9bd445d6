#include "tokenizer/added_tokens.h"

#include <algorithm>

#include "tokenizer/utf8.h"

namespace vlm2mla::tok {

namespace {
// The code point that ends just before `pos` (pos > 0).
uint32_t codepoint_before(const std::string& s, size_t pos, size_t* start) {
  size_t b = pos - 1;
  while (b > 0 && (static_cast<uint8_t>(s[b]) & 0xC0) == 0x80) --b;
  *start = b;
  size_t i = b;
  return next_codepoint(s, i);
}
}  // namespace

AddedTokenMatcher::AddedTokenMatcher(std::vector<AddedToken> tokens) : tokens_(std::move(tokens)) {
  by_first_byte_.resize(256);
  for (size_t k = 0; k < tokens_.size(); ++k) {
    if (tokens_[k].content.empty()) continue;
    by_first_byte_[static_cast<uint8_t>(tokens_[k].content[0])].push_back(k);
  }
  for (auto& list : by_first_byte_) {
    std::stable_sort(list.begin(), list.end(), [&](size_t a, size_t b) {
      return tokens_[a].content.size() > tokens_[b].content.size();
    });
  }
}

std::vector<Segment> AddedTokenMatcher::split(const std::string& text) const {
  std::vector<Segment> out;
  if (tokens_.empty()) {
    if (!text.empty()) out.push_back(Segment{text, -1, 0});
    return out;
  }
  size_t emitted = 0;  // end of the last accepted match (text before it is already emitted)
  size_t pos = 0;
  while (pos < text.size()) {
    // Leftmost-longest: the first position where some token matches, the longest token there.
    const AddedToken* hit = nullptr;
    for (size_t k : by_first_byte_[static_cast<uint8_t>(text[pos])]) {
      const auto& t = tokens_[k];
      if (text.compare(pos, t.content.size(), t.content) == 0) {
        hit = &t;
        break;
      }
    }
    if (!hit) {
      ++pos;
      continue;
    }
    size_t start = pos, stop = pos + hit->content.size();
    pos = stop;  // a rejected match is not retried
    if (hit->single_word) {
      size_t dummy;
      const bool word_before = start > 0 && is_word_char(codepoint_before(text, start, &dummy));
      size_t i = stop;
      const bool word_after = stop < text.size() && is_word_char(next_codepoint(text, i));
      if (word_before || word_after) continue;
    }
    if (hit->lstrip) {
      while (start > emitted) {
        size_t prev;
        if (!is_unicode_whitespace(codepoint_before(text, start, &prev))) break;
        start = prev;
      }
    }
    if (hit->rstrip) {
      while (stop < text.size()) {
        size_t i = stop;
        if (!is_unicode_whitespace(next_codepoint(text, i))) break;
        stop = i;
      }
      pos = stop;
    }
    if (start > emitted) out.push_back(Segment{text.substr(emitted, start - emitted), -1, emitted});
    out.push_back(Segment{text.substr(start, stop - start), hit->id, start});
    emitted = stop;
  }
  if (emitted < text.size()) out.push_back(Segment{text.substr(emitted), -1, emitted});
  return out;
}

}  // namespace vlm2mla::tok
