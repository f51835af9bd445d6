// A compiled PCRE2 pattern (UTF + Unicode properties, JIT when available) for pre-tokenizer splits.
#pragma once

#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace vlm2mla::tok {

class Regex {
 public:
  // `literal`: match `pattern` as plain text. `where` names the file and component for errors.
  Regex(const std::string& pattern, bool literal, const std::string& where);
  // Every non-overlapping match, left to right, as [begin, end) byte offsets; an empty match
  // advances by one code point. `text` must be valid UTF-8.
  std::vector<std::pair<size_t, size_t>> find_all(std::string_view text) const;

 private:
  struct Code;
  std::shared_ptr<Code> code_;
};

}  // namespace vlm2mla::tok
