// UTF-8 and the few Unicode properties the tokenizers need (utf8proc for normalization forms).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace vlm2mla::tok {

// Decodes the code point at s[i] and advances i. A malformed sequence yields U+FFFD and advances by
// the length of its maximal valid prefix (at least one byte), as Rust's from_utf8_lossy does.
uint32_t next_codepoint(std::string_view s, size_t& i);
void append_utf8(std::string& out, uint32_t cp);

// True when `s` is well-formed UTF-8; `bad_offset` gets the first bad byte's offset otherwise.
bool is_valid_utf8(std::string_view s, size_t* bad_offset = nullptr);

// Bytes to text with every malformed subpart replaced by U+FFFD (Rust's String::from_utf8_lossy).
std::string utf8_lossy(std::string_view bytes);

// The Unicode White_Space property (what Rust's char::is_whitespace tests).
bool is_unicode_whitespace(uint32_t cp);
// Unicode \w as Rust's regex has it (letters, marks, decimal digits, connector punctuation such as
// '_', ZWNJ/ZWJ): the "word" characters that single_word added tokens must not touch.
bool is_word_char(uint32_t cp);

enum class NormalForm { kNfc, kNfd, kNfkc, kNfkd };
// Unicode normalization of valid UTF-8 text (utf8proc).
std::string normalize_unicode(std::string_view s, NormalForm form);
// Full-text lowercase, code point by code point (simple case mapping).
std::string to_lower(std::string_view s);

}  // namespace vlm2mla::tok
