#include "tokenizer/pipeline.h"

#include <array>
#include <cstdlib>

#include "core/error.h"
#include "tokenizer/regex.h"
#include "tokenizer/utf8.h"

namespace vlm2mla::tok {

using nlohmann::json;

namespace {

std::string type_of(const json& j, const std::string& where, const char* what) {
  VLM2MLA_CHECK(j.is_object() && j.contains("type") && j["type"].is_string(), FormatError, where,
                ": ", what, " ", j.dump().substr(0, 200), " has no \"type\"");
  return j["type"].get<std::string>();
}

[[noreturn]] void unsupported(const std::string& where, const char* what, const std::string& type) {
  throw FormatError(detail::concat(where, ": unsupported ", what, " \"", type,
                                   "\" (supported: see src/tokenizer/pipeline.cpp)"));
}

// {"String": s} or {"Regex": r}.
Regex parse_pattern(const json& j, const std::string& where) {
  VLM2MLA_CHECK(j.is_object(), FormatError, where, ": pattern must be {\"String\": ...} or {\"Regex\": ...}");
  if (j.contains("String")) return Regex(j["String"].get<std::string>(), true, where);
  if (j.contains("Regex")) return Regex(j["Regex"].get<std::string>(), false, where);
  throw FormatError(detail::concat(where, ": pattern ", j.dump(), " is neither String nor Regex"));
}

std::string replace_all(const Regex& re, const std::string& s, const std::string& content) {
  const auto matches = re.find_all(s);
  if (matches.empty()) return s;
  std::string out;
  size_t last = 0;
  for (const auto& [b, e] : matches) {
    out.append(s, last, b - last);
    out += content;
    last = e;
  }
  out.append(s, last, std::string::npos);
  return out;
}

// ---- normalizers --------------------------------------------------------------------------------

class UnicodeNormalizer : public Normalizer {
 public:
  explicit UnicodeNormalizer(NormalForm f) : form_(f) {}
  std::string apply(std::string s) const override { return normalize_unicode(s, form_); }

 private:
  NormalForm form_;
};

class LowercaseNormalizer : public Normalizer {
 public:
  std::string apply(std::string s) const override { return to_lower(s); }
};

class PrependNormalizer : public Normalizer {
 public:
  explicit PrependNormalizer(std::string p) : prepend_(std::move(p)) {}
  std::string apply(std::string s) const override { return s.empty() ? s : prepend_ + s; }

 private:
  std::string prepend_;
};

class ReplaceNormalizer : public Normalizer {
 public:
  ReplaceNormalizer(Regex re, std::string content) : re_(std::move(re)), content_(std::move(content)) {}
  std::string apply(std::string s) const override { return replace_all(re_, s, content_); }

 private:
  Regex re_;
  std::string content_;
};

class StripNormalizer : public Normalizer {
 public:
  StripNormalizer(bool left, bool right) : left_(left), right_(right) {}
  std::string apply(std::string s) const override {
    size_t b = 0, e = s.size();
    if (left_) {
      while (b < e) {
        size_t i = b;
        if (!is_unicode_whitespace(next_codepoint(s, i))) break;
        b = i;
      }
    }
    if (right_) {
      while (e > b) {
        size_t start = e - 1;
        while (start > b && (static_cast<uint8_t>(s[start]) & 0xC0) == 0x80) --start;
        size_t i = start;
        if (!is_unicode_whitespace(next_codepoint(s, i))) break;
        e = start;
      }
    }
    return s.substr(b, e - b);
  }

 private:
  bool left_, right_;
};

class SequenceNormalizer : public Normalizer {
 public:
  explicit SequenceNormalizer(std::vector<std::unique_ptr<Normalizer>> parts) : parts_(std::move(parts)) {}
  std::string apply(std::string s) const override {
    for (const auto& p : parts_) s = p->apply(std::move(s));
    return s;
  }

 private:
  std::vector<std::unique_ptr<Normalizer>> parts_;
};

// ---- pre-tokenizers -----------------------------------------------------------------------------

enum class SplitBehavior { kRemoved, kIsolated, kMergedWithPrevious, kMergedWithNext, kContiguous };

// Splits `piece` at the matches of `re` the way Hugging Face's SplitDelimiterBehavior does.
void split_piece(const Piece& piece, const Regex& re, SplitBehavior behavior, bool invert,
                 std::vector<Piece>& out) {
  const std::string& s = piece.text;
  // (begin, end, is_delimiter) covering s.
  struct Span {
    size_t b, e;
    bool delim;
  };
  std::vector<Span> spans;
  size_t last = 0;
  for (const auto& [b, e] : re.find_all(s)) {
    if (b > last) spans.push_back({last, b, invert});
    spans.push_back({b, e, !invert});
    last = e;
  }
  if (last < s.size()) spans.push_back({last, s.size(), invert});

  std::vector<std::pair<size_t, size_t>> ranges;
  switch (behavior) {
    case SplitBehavior::kRemoved:
      for (const auto& sp : spans)
        if (!sp.delim) ranges.emplace_back(sp.b, sp.e);
      break;
    case SplitBehavior::kIsolated:
      for (const auto& sp : spans) ranges.emplace_back(sp.b, sp.e);
      break;
    case SplitBehavior::kMergedWithPrevious: {
      bool prev_delim = false;
      for (const auto& sp : spans) {
        if (sp.delim && !ranges.empty() && !prev_delim) ranges.back().second = sp.e;
        else ranges.emplace_back(sp.b, sp.e);
        prev_delim = sp.delim;
      }
      break;
    }
    case SplitBehavior::kMergedWithNext: {
      bool pending = false;
      for (const auto& sp : spans) {
        if (pending && !sp.delim) ranges.back().second = sp.e;
        else ranges.emplace_back(sp.b, sp.e);
        pending = sp.delim;
      }
      break;
    }
    case SplitBehavior::kContiguous: {
      bool prev_delim = false;
      for (const auto& sp : spans) {
        if (sp.delim && prev_delim && !ranges.empty()) ranges.back().second = sp.e;
        else ranges.emplace_back(sp.b, sp.e);
        prev_delim = sp.delim;
      }
      break;
    }
  }
  for (const auto& [b, e] : ranges) {
    if (e > b) out.push_back(Piece{s.substr(b, e - b), piece.at_text_start && b == 0});
  }
}

class SplitPreTokenizer : public PreTokenizer {
 public:
  SplitPreTokenizer(Regex re, SplitBehavior b, bool invert) : re_(std::move(re)), behavior_(b), invert_(invert) {}
  std::vector<Piece> apply(std::vector<Piece> pieces) const override {
    std::vector<Piece> out;
    for (const auto& p : pieces) split_piece(p, re_, behavior_, invert_, out);
    return out;
  }

 private:
  Regex re_;
  SplitBehavior behavior_;
  bool invert_;
};

const char* kGpt2Pattern =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";

class ByteLevelPreTokenizer : public PreTokenizer {
 public:
  ByteLevelPreTokenizer(bool add_prefix_space, bool use_regex, const std::string& where)
      : add_prefix_space_(add_prefix_space), use_regex_(use_regex), re_(kGpt2Pattern, false, where) {}
  std::vector<Piece> apply(std::vector<Piece> pieces) const override {
    std::vector<Piece> split;
    for (auto& p : pieces) {
      if (add_prefix_space_ && (p.text.empty() || p.text[0] != ' ')) p.text.insert(0, " ");
      if (use_regex_) split_piece(p, re_, SplitBehavior::kIsolated, false, split);
      else if (!p.text.empty()) split.push_back(std::move(p));
    }
    for (auto& p : split) {
      std::string mapped;
      mapped.reserve(p.text.size() * 2);
      for (char c : p.text) mapped += byte_to_unicode(static_cast<uint8_t>(c));
      p.text = std::move(mapped);
    }
    return split;
  }

 private:
  bool add_prefix_space_, use_regex_;
  Regex re_;
};

enum class PrependScheme { kAlways, kFirst, kNever };

PrependScheme parse_prepend_scheme(const json& j, const std::string& where) {
  if (j.contains("prepend_scheme")) {
    const std::string s = j["prepend_scheme"].get<std::string>();
    if (s == "always") return PrependScheme::kAlways;
    if (s == "first") return PrependScheme::kFirst;
    if (s == "never") return PrependScheme::kNever;
    throw FormatError(detail::concat(where, ": Metaspace prepend_scheme \"", s,
                                     "\" is not always, first or never"));
  }
  return j.value("add_prefix_space", true) ? PrependScheme::kAlways : PrependScheme::kNever;
}

class MetaspacePreTokenizer : public PreTokenizer {
 public:
  MetaspacePreTokenizer(std::string replacement, PrependScheme scheme, bool split, const std::string& where)
      : replacement_(std::move(replacement)), scheme_(scheme), split_(split),
        space_(" ", true, where), rep_re_(replacement_, true, where) {}
  std::vector<Piece> apply(std::vector<Piece> pieces) const override {
    std::vector<Piece> out;
    for (auto& p : pieces) {
      p.text = replace_all(space_, p.text, replacement_);
      const bool starts = p.text.compare(0, replacement_.size(), replacement_) == 0;
      if (!starts && (scheme_ == PrependScheme::kAlways ||
                      (scheme_ == PrependScheme::kFirst && p.at_text_start))) {
        p.text.insert(0, replacement_);
      }
      if (split_) split_piece(p, rep_re_, SplitBehavior::kMergedWithNext, false, out);
      else if (!p.text.empty()) out.push_back(std::move(p));
    }
    return out;
  }

 private:
  std::string replacement_;
  PrependScheme scheme_;
  bool split_;
  Regex space_, rep_re_;
};

class DigitsPreTokenizer : public PreTokenizer {
 public:
  DigitsPreTokenizer(bool individual, const std::string& where)
      : individual_(individual), re_(individual ? R"(\p{N})" : R"(\p{N}+)", false, where) {}
  std::vector<Piece> apply(std::vector<Piece> pieces) const override {
    std::vector<Piece> out;
    for (const auto& p : pieces) split_piece(p, re_, SplitBehavior::kIsolated, false, out);
    return out;
  }

 private:
  bool individual_;
  Regex re_;
};

class SequencePreTokenizer : public PreTokenizer {
 public:
  explicit SequencePreTokenizer(std::vector<std::unique_ptr<PreTokenizer>> parts) : parts_(std::move(parts)) {}
  std::vector<Piece> apply(std::vector<Piece> pieces) const override {
    for (const auto& p : parts_) pieces = p->apply(std::move(pieces));
    return pieces;
  }

 private:
  std::vector<std::unique_ptr<PreTokenizer>> parts_;
};

// ---- post-processors ----------------------------------------------------------------------------

class TemplateProcessor : public PostProcessor {
 public:
  // Each item: the ids of a special token, or empty with is_sequence.
  struct Item {
    bool is_sequence;
    std::vector<int64_t> ids;
  };
  explicit TemplateProcessor(std::vector<Item> items) : items_(std::move(items)) {}
  std::vector<int64_t> apply(std::vector<int64_t> ids) const override {
    std::vector<int64_t> out;
    for (const auto& it : items_) {
      if (it.is_sequence) out.insert(out.end(), ids.begin(), ids.end());
      else out.insert(out.end(), it.ids.begin(), it.ids.end());
    }
    return out;
  }

 private:
  std::vector<Item> items_;
};

class IdentityProcessor : public PostProcessor {
 public:
  std::vector<int64_t> apply(std::vector<int64_t> ids) const override { return ids; }
};

class SequenceProcessor : public PostProcessor {
 public:
  explicit SequenceProcessor(std::vector<std::unique_ptr<PostProcessor>> parts) : parts_(std::move(parts)) {}
  std::vector<int64_t> apply(std::vector<int64_t> ids) const override {
    for (const auto& p : parts_) ids = p->apply(std::move(ids));
    return ids;
  }

 private:
  std::vector<std::unique_ptr<PostProcessor>> parts_;
};

// ---- decoders -----------------------------------------------------------------------------------

class ByteLevelDecoder : public Decoder {
 public:
  std::vector<std::string> apply(std::vector<std::string> tokens) const override {
    std::string bytes;
    for (const auto& t : tokens) {
      std::string mapped;
      bool ok = true;
      for (size_t i = 0; i < t.size() && ok;) {
        const int b = unicode_to_byte(next_codepoint(t, i));
        if (b < 0) ok = false;
        else mapped += static_cast<char>(b);
      }
      bytes += ok ? mapped : t;  // a token with other characters is taken as its own bytes
    }
    return {utf8_lossy(bytes)};
  }
};

class ReplaceDecoder : public Decoder {
 public:
  ReplaceDecoder(Regex re, std::string content) : re_(std::move(re)), content_(std::move(content)) {}
  std::vector<std::string> apply(std::vector<std::string> tokens) const override {
    for (auto& t : tokens) t = replace_all(re_, t, content_);
    return tokens;
  }

 private:
  Regex re_;
  std::string content_;
};

int byte_token_value(const std::string& t) {
  if (t.size() != 6 || t.compare(0, 3, "<0x") != 0 || t[5] != '>') return -1;
  auto hex = [](char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    return -1;
  };
  const int hi = hex(t[3]), lo = hex(t[4]);
  return hi < 0 || lo < 0 ? -1 : hi * 16 + lo;
}

class ByteFallbackDecoder : public Decoder {
 public:
  std::vector<std::string> apply(std::vector<std::string> tokens) const override {
    std::vector<std::string> out;
    std::string bytes;
    size_t n_bytes = 0;
    auto flush = [&]() {
      if (n_bytes == 0) return;
      if (is_valid_utf8(bytes)) {
        out.push_back(bytes);
      } else {
        for (size_t k = 0; k < n_bytes; ++k) out.push_back("\xEF\xBF\xBD");
      }
      bytes.clear();
      n_bytes = 0;
    };
    for (auto& t : tokens) {
      const int b = byte_token_value(t);
      if (b >= 0) {
        bytes += static_cast<char>(b);
        ++n_bytes;
      } else {
        flush();
        out.push_back(std::move(t));
      }
    }
    flush();
    return out;
  }
};

class FuseDecoder : public Decoder {
 public:
  std::vector<std::string> apply(std::vector<std::string> tokens) const override {
    std::string all;
    for (const auto& t : tokens) all += t;
    return {all};
  }
};

class StripDecoder : public Decoder {
 public:
  StripDecoder(std::string content, size_t start, size_t stop)
      : content_(std::move(content)), start_(start), stop_(stop) {}
  std::vector<std::string> apply(std::vector<std::string> tokens) const override {
    for (auto& t : tokens) {
      size_t b = 0, e = t.size();
      for (size_t k = 0; k < start_ && t.compare(b, content_.size(), content_) == 0 && b < e; ++k)
        b += content_.size();
      for (size_t k = 0; k < stop_ && e >= b + content_.size() &&
                         t.compare(e - content_.size(), content_.size(), content_) == 0; ++k)
        e -= content_.size();
      t = t.substr(b, e - b);
    }
    return tokens;
  }

 private:
  std::string content_;
  size_t start_, stop_;
};

class MetaspaceDecoder : public Decoder {
 public:
  MetaspaceDecoder(std::string replacement, PrependScheme scheme)
      : replacement_(std::move(replacement)), scheme_(scheme) {}
  std::vector<std::string> apply(std::vector<std::string> tokens) const override {
    for (size_t i = 0; i < tokens.size(); ++i) {
      std::string out;
      const std::string& t = tokens[i];
      for (size_t p = 0; p < t.size();) {
        if (t.compare(p, replacement_.size(), replacement_) == 0) {
          // Hugging Face drops every replacement character of the first token when it prepends.
          if (!(i == 0 && scheme_ != PrependScheme::kNever)) out += ' ';
          p += replacement_.size();
        } else {
          out += t[p++];
        }
      }
      tokens[i] = std::move(out);
    }
    return tokens;
  }

 private:
  std::string replacement_;
  PrependScheme scheme_;
};

class SequenceDecoder : public Decoder {
 public:
  explicit SequenceDecoder(std::vector<std::unique_ptr<Decoder>> parts) : parts_(std::move(parts)) {}
  std::vector<std::string> apply(std::vector<std::string> tokens) const override {
    for (const auto& p : parts_) tokens = p->apply(std::move(tokens));
    return tokens;
  }

 private:
  std::vector<std::unique_ptr<Decoder>> parts_;
};

struct ByteTable {
  std::array<std::string, 256> to_char;
  std::vector<int> from_cp = std::vector<int>(512, -1);
  ByteTable() {
    int n = 0;
    for (int b = 0; b < 256; ++b) {
      const bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
      const uint32_t cp = printable ? static_cast<uint32_t>(b) : static_cast<uint32_t>(256 + n++);
      append_utf8(to_char[b], cp);
      from_cp[cp] = b;
    }
  }
};
const ByteTable& byte_table() {
  static const ByteTable table;
  return table;
}

}  // namespace

const std::string& byte_to_unicode(uint8_t b) { return byte_table().to_char[b]; }
int unicode_to_byte(uint32_t cp) { return cp < 512 ? byte_table().from_cp[cp] : -1; }

std::unique_ptr<Normalizer> parse_normalizer(const json& j, const std::string& where) {
  if (j.is_null()) return nullptr;
  const std::string type = type_of(j, where, "normalizer");
  const std::string ctx = where + ": normalizer " + type;
  try {
    if (type == "NFC") return std::make_unique<UnicodeNormalizer>(NormalForm::kNfc);
    if (type == "NFD") return std::make_unique<UnicodeNormalizer>(NormalForm::kNfd);
    if (type == "NFKC") return std::make_unique<UnicodeNormalizer>(NormalForm::kNfkc);
    if (type == "NFKD") return std::make_unique<UnicodeNormalizer>(NormalForm::kNfkd);
    if (type == "Lowercase") return std::make_unique<LowercaseNormalizer>();
    if (type == "Prepend") return std::make_unique<PrependNormalizer>(j.at("prepend").get<std::string>());
    if (type == "Replace")
      return std::make_unique<ReplaceNormalizer>(parse_pattern(j.at("pattern"), ctx),
                                                 j.at("content").get<std::string>());
    if (type == "Strip")
      return std::make_unique<StripNormalizer>(j.value("strip_left", true), j.value("strip_right", true));
    if (type == "Sequence") {
      std::vector<std::unique_ptr<Normalizer>> parts;
      for (const auto& p : j.at("normalizers"))
        if (auto n = parse_normalizer(p, where)) parts.push_back(std::move(n));
      return std::make_unique<SequenceNormalizer>(std::move(parts));
    }
  } catch (const json::exception& e) {
    throw FormatError(detail::concat(ctx, ": ", e.what()));
  }
  unsupported(where, "normalizer", type);
}

std::unique_ptr<PreTokenizer> parse_pre_tokenizer(const json& j, const std::string& where) {
  if (j.is_null()) return nullptr;
  const std::string type = type_of(j, where, "pre_tokenizer");
  const std::string ctx = where + ": pre_tokenizer " + type;
  try {
    if (type == "Split") {
      const std::string b = j.at("behavior").get<std::string>();
      SplitBehavior behavior;
      if (b == "Removed") behavior = SplitBehavior::kRemoved;
      else if (b == "Isolated") behavior = SplitBehavior::kIsolated;
      else if (b == "MergedWithPrevious") behavior = SplitBehavior::kMergedWithPrevious;
      else if (b == "MergedWithNext") behavior = SplitBehavior::kMergedWithNext;
      else if (b == "Contiguous") behavior = SplitBehavior::kContiguous;
      else throw FormatError(detail::concat(ctx, ": unknown behavior \"", b, "\""));
      return std::make_unique<SplitPreTokenizer>(parse_pattern(j.at("pattern"), ctx), behavior,
                                                 j.value("invert", false));
    }
    if (type == "ByteLevel")
      return std::make_unique<ByteLevelPreTokenizer>(j.value("add_prefix_space", true),
                                                     j.value("use_regex", true), ctx);
    if (type == "Metaspace")
      return std::make_unique<MetaspacePreTokenizer>(j.value("replacement", std::string("\u2581")),
                                                     parse_prepend_scheme(j, ctx), j.value("split", true), ctx);
    if (type == "Digits") return std::make_unique<DigitsPreTokenizer>(j.value("individual_digits", false), ctx);
    if (type == "Sequence") {
      std::vector<std::unique_ptr<PreTokenizer>> parts;
      for (const auto& p : j.at("pretokenizers"))
        if (auto n = parse_pre_tokenizer(p, where)) parts.push_back(std::move(n));
      return std::make_unique<SequencePreTokenizer>(std::move(parts));
    }
  } catch (const json::exception& e) {
    throw FormatError(detail::concat(ctx, ": ", e.what()));
  }
  unsupported(where, "pre_tokenizer", type);
}

std::unique_ptr<PostProcessor> parse_post_processor(const json& j, const std::string& where) {
  if (j.is_null()) return nullptr;
  const std::string type = type_of(j, where, "post_processor");
  const std::string ctx = where + ": post_processor " + type;
  try {
    if (type == "ByteLevel") return std::make_unique<IdentityProcessor>();
    if (type == "TemplateProcessing") {
      const json& specials = j.at("special_tokens");
      std::vector<TemplateProcessor::Item> items;
      for (const auto& it : j.at("single")) {
        if (it.contains("Sequence")) {
          items.push_back({true, {}});
        } else if (it.contains("SpecialToken")) {
          const std::string name = it["SpecialToken"].at("id").get<std::string>();
          VLM2MLA_CHECK(specials.contains(name), FormatError, ctx, ": special token ", name,
                        " is used in \"single\" but not listed in \"special_tokens\"");
          items.push_back({false, specials[name].at("ids").get<std::vector<int64_t>>()});
        } else {
          throw FormatError(detail::concat(ctx, ": template item ", it.dump(), " is neither Sequence nor SpecialToken"));
        }
      }
      return std::make_unique<TemplateProcessor>(std::move(items));
    }
    if (type == "RobertaProcessing" || type == "BertProcessing") {
      const int64_t cls = j.at("cls").at(1).get<int64_t>(), sep = j.at("sep").at(1).get<int64_t>();
      return make_bos_eos_processor({cls}, {sep});
    }
    if (type == "Sequence") {
      std::vector<std::unique_ptr<PostProcessor>> parts;
      for (const auto& p : j.at("processors"))
        if (auto n = parse_post_processor(p, where)) parts.push_back(std::move(n));
      return std::make_unique<SequenceProcessor>(std::move(parts));
    }
  } catch (const json::exception& e) {
    throw FormatError(detail::concat(ctx, ": ", e.what()));
  }
  unsupported(where, "post_processor", type);
}

std::unique_ptr<PostProcessor> make_bos_eos_processor(std::vector<int64_t> prefix, std::vector<int64_t> suffix) {
  std::vector<TemplateProcessor::Item> items;
  if (!prefix.empty()) items.push_back({false, std::move(prefix)});
  items.push_back({true, {}});
  if (!suffix.empty()) items.push_back({false, std::move(suffix)});
  return std::make_unique<TemplateProcessor>(std::move(items));
}

std::unique_ptr<Decoder> parse_decoder(const json& j, const std::string& where) {
  if (j.is_null()) return nullptr;
  const std::string type = type_of(j, where, "decoder");
  const std::string ctx = where + ": decoder " + type;
  try {
    if (type == "ByteLevel") return std::make_unique<ByteLevelDecoder>();
    if (type == "Replace")
      return std::make_unique<ReplaceDecoder>(parse_pattern(j.at("pattern"), ctx), j.at("content").get<std::string>());
    if (type == "ByteFallback") return std::make_unique<ByteFallbackDecoder>();
    if (type == "Fuse") return std::make_unique<FuseDecoder>();
    if (type == "Strip")
      return std::make_unique<StripDecoder>(j.at("content").get<std::string>(), j.value("start", 0),
                                            j.value("stop", 0));
    if (type == "Metaspace")
      return std::make_unique<MetaspaceDecoder>(j.value("replacement", std::string("\u2581")),
                                                parse_prepend_scheme(j, ctx));
    if (type == "Sequence") {
      std::vector<std::unique_ptr<Decoder>> parts;
      for (const auto& p : j.at("decoders"))
        if (auto n = parse_decoder(p, where)) parts.push_back(std::move(n));
      return std::make_unique<SequenceDecoder>(std::move(parts));
    }
  } catch (const json::exception& e) {
    throw FormatError(detail::concat(ctx, ": ", e.what()));
  }
  unsupported(where, "decoder", type);
}

}  // namespace vlm2mla::tok
