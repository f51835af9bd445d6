#include "tokenizer/bpe.h"

#include <cstdio>
#include <queue>

#include "core/error.h"
#include "tokenizer/utf8.h"

namespace vlm2mla::tok {

namespace {
constexpr size_t kCacheMaxWordBytes = 256;
constexpr size_t kCacheMaxEntries = 200000;

uint64_t pair_key(int64_t a, int64_t b) {
  return (static_cast<uint64_t>(a) << 32) | static_cast<uint64_t>(b & 0xFFFFFFFF);
}

std::string optional_string(const nlohmann::json& j, const char* key) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return "";
  return it->get<std::string>();
}
}  // namespace

BpeModel::BpeModel(const nlohmann::json& model, const std::string& where) {
  const std::string ctx = where + ": model (BPE)";
  try {
    const auto& vocab = model.at("vocab");
    VLM2MLA_CHECK(vocab.is_object(), FormatError, ctx, ": \"vocab\" must be an object");
    vocab_.reserve(vocab.size());
    for (auto it = vocab.begin(); it != vocab.end(); ++it) {
      const int64_t id = it.value().get<int64_t>();
      VLM2MLA_CHECK(id >= 0 && id < (int64_t{1} << 31), FormatError, ctx, ": token ", it.key(),
                    " has id ", id, " outside [0, 2^31)");
      vocab_[it.key()] = id;
      vocab_r_[id] = it.key();
      max_id_ = std::max(max_id_, id);
    }
    if (auto d = model.find("dropout"); d != model.end() && !d->is_null()) {
      VLM2MLA_CHECK(d->get<double>() == 0.0, FormatError, ctx, ": dropout ", d->dump(),
                    " is not supported (deterministic encoding only)");
    }
    continuing_subword_prefix_ = optional_string(model, "continuing_subword_prefix");
    end_of_word_suffix_ = optional_string(model, "end_of_word_suffix");
    fuse_unk_ = model.value("fuse_unk", false);
    byte_fallback_ = model.value("byte_fallback", false);
    ignore_merges_ = model.value("ignore_merges", false);
    const std::string unk = optional_string(model, "unk_token");
    if (!unk.empty()) {
      auto it = vocab_.find(unk);
      VLM2MLA_CHECK(it != vocab_.end(), FormatError, ctx, ": unk_token ", unk,
                    " is not in the vocabulary");
      unk_id_ = it->second;
    }
    for (int b = 0; b < 256; ++b) {
      char name[8];
      std::snprintf(name, sizeof(name), "<0x%02X>", b);
      auto it = vocab_.find(name);
      byte_ids_[b] = it == vocab_.end() ? -1 : it->second;
    }
    const auto& merges = model.at("merges");
    VLM2MLA_CHECK(merges.is_array(), FormatError, ctx, ": \"merges\" must be an array");
    merges_.reserve(merges.size());
    const size_t prefix_len = continuing_subword_prefix_.size();
    for (size_t rank = 0; rank < merges.size(); ++rank) {
      const auto& m = merges[rank];
      std::string a, b;
      if (m.is_string()) {  // "a b"
        const std::string s = m.get<std::string>();
        const size_t sp = s.find(' ');
        VLM2MLA_CHECK(sp != std::string::npos && s.find(' ', sp + 1) == std::string::npos,
                      FormatError, ctx, ": merge ", rank, " (", s,
                      ") is not two tokens separated by one space");
        a = s.substr(0, sp);
        b = s.substr(sp + 1);
      } else {  // ["a", "b"]
        VLM2MLA_CHECK(m.is_array() && m.size() == 2 && m[0].is_string() && m[1].is_string(),
                      FormatError, ctx, ": merge ", rank, " is ", m.dump(),
                      ", expected \"a b\" or [\"a\", \"b\"]");
        a = m[0].get<std::string>();
        b = m[1].get<std::string>();
      }
      auto ia = vocab_.find(a), ib = vocab_.find(b);
      VLM2MLA_CHECK(ia != vocab_.end() && ib != vocab_.end(), FormatError, ctx, ": merge ", rank,
                    " (", a, " ", b, ") uses a token that is not in the vocabulary");
      // The merged token drops the right part's continuing-subword prefix.
      const std::string merged =
          a + (prefix_len && b.compare(0, prefix_len, continuing_subword_prefix_) == 0
                   ? b.substr(prefix_len)
                   : b);
      auto im = vocab_.find(merged);
      VLM2MLA_CHECK(im != vocab_.end(), FormatError, ctx, ": merge ", rank, " (", a, " ", b,
                    ") makes ", merged, ", which is not in the vocabulary");
      // The first occurrence of a pair wins, as in Hugging Face tokenizers.
      merges_.emplace(pair_key(ia->second, ib->second),
                      MergeInfo{static_cast<uint32_t>(rank), im->second});
    }
  } catch (const nlohmann::json::exception& e) {
    throw FormatError(detail::concat(ctx, ": ", e.what()));
  }
}

std::optional<int64_t> BpeModel::token_to_id(const std::string& token) const {
  auto it = vocab_.find(token);
  if (it == vocab_.end()) return std::nullopt;
  return it->second;
}

const std::string* BpeModel::id_to_token(int64_t id) const {
  auto it = vocab_r_.find(id);
  return it == vocab_r_.end() ? nullptr : &it->second;
}

void BpeModel::encode_word(const std::string& word, std::vector<int64_t>& out) const {
  if (word.empty()) return;
  if (ignore_merges_) {
    if (auto it = vocab_.find(word); it != vocab_.end()) {
      out.push_back(it->second);
      return;
    }
  }
  if (word.size() > kCacheMaxWordBytes) {
    merge_word(word, out);
    return;
  }
  {
    std::lock_guard<std::mutex> lock(cache_mutex_);
    auto it = cache_.find(word);
    if (it != cache_.end()) {
      out.insert(out.end(), it->second.begin(), it->second.end());
      return;
    }
  }
  std::vector<int64_t> ids;
  merge_word(word, ids);
  out.insert(out.end(), ids.begin(), ids.end());
  std::lock_guard<std::mutex> lock(cache_mutex_);
  if (cache_.size() >= kCacheMaxEntries) cache_.clear();
  cache_.emplace(word, std::move(ids));
}

void BpeModel::merge_word(const std::string& word, std::vector<int64_t>& out) const {
  struct Symbol {
    int64_t id;
    int prev, next;
    bool alive;
  };
  std::vector<Symbol> sym;
  sym.reserve(word.size());
  bool last_was_unk = false;
  auto push = [&](int64_t id) {
    const int n = static_cast<int>(sym.size());
    sym.push_back(Symbol{id, n - 1, -1, true});
    if (n > 0) sym[n - 1].next = n;
  };
  std::string piece;
  for (size_t i = 0; i < word.size();) {
    const size_t start = i;
    next_codepoint(word, i);
    piece.clear();
    if (start > 0) piece += continuing_subword_prefix_;
    piece.append(word, start, i - start);
    if (i == word.size()) piece += end_of_word_suffix_;
    if (auto it = vocab_.find(piece); it != vocab_.end()) {
      push(it->second);
      last_was_unk = false;
      continue;
    }
    if (byte_fallback_) {
      bool all = true;
      for (size_t k = start; k < i; ++k) all = all && byte_ids_[static_cast<uint8_t>(word[k])] >= 0;
      if (all) {
        for (size_t k = start; k < i; ++k) push(byte_ids_[static_cast<uint8_t>(word[k])]);
        last_was_unk = false;
        continue;
      }
    }
    if (unk_id_) {
      if (!(fuse_unk_ && last_was_unk)) push(*unk_id_);
      last_was_unk = true;
    }
  }
  if (sym.empty()) return;

  struct Cand {
    uint32_t rank;
    int pos;
    int64_t new_id;
  };
  auto worse = [](const Cand& x, const Cand& y) {
    return x.rank != y.rank ? x.rank > y.rank : x.pos > y.pos;
  };
  std::priority_queue<Cand, std::vector<Cand>, decltype(worse)> heap(worse);
  auto consider = [&](int left) {
    if (left < 0) return;
    const int right = sym[left].next;
    if (right < 0) return;
    auto it = merges_.find(pair_key(sym[left].id, sym[right].id));
    if (it != merges_.end()) heap.push(Cand{it->second.rank, left, it->second.new_id});
  };
  for (int p = 0; p + 1 < static_cast<int>(sym.size()); ++p) consider(p);
  while (!heap.empty()) {
    const Cand c = heap.top();
    heap.pop();
    Symbol& left = sym[c.pos];
    if (!left.alive || left.next < 0) continue;
    Symbol& right = sym[left.next];
    auto it = merges_.find(pair_key(left.id, right.id));
    if (it == merges_.end() || it->second.new_id != c.new_id) continue;  // stale entry
    left.id = c.new_id;
    right.alive = false;
    left.next = right.next;
    if (left.next >= 0) sym[left.next].prev = c.pos;
    consider(left.prev);
    consider(c.pos);
  }
  for (int p = 0; p >= 0; p = sym[p].next) out.push_back(sym[p].id);
}

}  // namespace vlm2mla::tok
