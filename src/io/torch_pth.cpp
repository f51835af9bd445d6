// PyTorch zip checkpoints: a ZIP reader (stored entries, optional DEFLATE through zlib, zip64) and a
// pickle VM subset. Written from the public format descriptions (PKWARE APPNOTE; CPython's
// Lib/pickletools.py opcode table; torch.serialization's documented record layout), no code copied.
#include "io/torch_pth.h"

#include <algorithm>
#include <array>
#include <cstring>
#include <limits>
#include <memory>
#include <unordered_map>

#include "core/error.h"
#include "io/mapped_file.h"

#ifdef VLM2MLA_WITH_ZLIB
#include <zlib.h>
#endif

namespace vlm2mla::io {
namespace {

// ---- ZIP -----------------------------------------------------------------------------------------

constexpr uint32_t kSigLocal = 0x04034b50;
constexpr uint32_t kSigCentral = 0x02014b50;
constexpr uint32_t kSigEnd = 0x06054b50;
constexpr uint32_t kSigEnd64 = 0x06064b50;
constexpr uint32_t kSigEnd64Locator = 0x07064b50;

uint16_t rd16(const uint8_t* p) { return static_cast<uint16_t>(p[0] | (p[1] << 8)); }
uint32_t rd32(const uint8_t* p) {
  return static_cast<uint32_t>(p[0]) | (static_cast<uint32_t>(p[1]) << 8) |
         (static_cast<uint32_t>(p[2]) << 16) | (static_cast<uint32_t>(p[3]) << 24);
}
uint64_t rd64(const uint8_t* p) {
  return static_cast<uint64_t>(rd32(p)) | (static_cast<uint64_t>(rd32(p + 4)) << 32);
}

uint32_t crc32_of(const uint8_t* data, size_t size) {
  static const std::array<uint32_t, 256> table = [] {
    std::array<uint32_t, 256> t{};
    for (uint32_t i = 0; i < 256; ++i) {
      uint32_t c = i;
      for (int k = 0; k < 8; ++k) c = (c & 1) ? 0xEDB88320u ^ (c >> 1) : c >> 1;
      t[i] = c;
    }
    return t;
  }();
  uint32_t c = 0xFFFFFFFFu;
  for (size_t i = 0; i < size; ++i) c = table[(c ^ data[i]) & 0xff] ^ (c >> 8);
  return c ^ 0xFFFFFFFFu;
}

struct ZipEntry {
  std::string name;
  uint16_t method = 0;
  uint32_t crc = 0;
  uint64_t compressed_size = 0;
  uint64_t size = 0;
  uint64_t data_offset = 0;  // absolute offset of the entry's bytes in the file
};

class ZipReader {
 public:
  ZipReader(const uint8_t* data, size_t size, std::string origin)
      : data_(data), size_(size), origin_(std::move(origin)) {
    parse();
  }

  const std::vector<ZipEntry>& entries() const { return entries_; }
  const ZipEntry* find(const std::string& name) const {
    auto it = index_.find(name);
    return it == index_.end() ? nullptr : &entries_[it->second];
  }

  // The entry's uncompressed bytes (a view into the file for stored entries, else inflated into
  // `buffer`). Checks the CRC.
  std::pair<const uint8_t*, size_t> bytes(const ZipEntry& e, std::string* buffer) const {
    const uint8_t* raw = data_ + e.data_offset;
    const uint8_t* out = raw;
    if (e.method == 8) {
#ifdef VLM2MLA_WITH_ZLIB
      inflate_into(e, buffer);
      out = reinterpret_cast<const uint8_t*>(buffer->data());
#else
      (void)buffer;
      fail("entry '", e.name, "' is DEFLATE-compressed, and this build has no zlib "
           "(only stored entries, as torch.save writes them, can be read)");
#endif
    }
    if (crc32_of(out, e.size) != e.crc) fail("entry '", e.name, "' fails its CRC-32 check");
    return {out, static_cast<size_t>(e.size)};
  }

  template <typename... Args>
  [[noreturn]] void fail(const Args&... args) const {
    throw FormatError(detail::concat(origin_, ": not a valid PyTorch zip checkpoint: ", args...));
  }

 private:
  bool in_file(uint64_t offset, uint64_t length) const {
    return offset <= size_ && length <= size_ - offset;
  }

  void parse() {
    if (size_ < 22) fail("the file is ", size_, " bytes, too short for a ZIP end-of-central-directory record");
    // The end record is 22 bytes plus a comment of at most 65535 bytes, at the very end.
    const size_t lowest = size_ > 22 + 65535 ? size_ - 22 - 65535 : 0;
    size_t end = size_;  // not found
    for (size_t pos = size_ - 22 + 1; pos-- > lowest;) {
      if (rd32(data_ + pos) == kSigEnd && pos + 22 + rd16(data_ + pos + 20) == size_) {
        end = pos;
        break;
      }
    }
    if (end == size_) fail("no ZIP end-of-central-directory record (truncated or not a zip file)");
    const uint8_t* e = data_ + end;
    if (rd16(e + 4) != 0 || rd16(e + 6) != 0) fail("multi-disk archives are not supported");
    uint64_t count = rd16(e + 10);
    uint64_t cd_size = rd32(e + 12);
    uint64_t cd_offset = rd32(e + 16);
    if (count == 0xFFFF || cd_size == 0xFFFFFFFF || cd_offset == 0xFFFFFFFF) {
      // zip64: a 20-byte locator just before the end record points at the zip64 end record.
      if (end < 20 || rd32(data_ + end - 20) != kSigEnd64Locator)
        fail("the end record needs zip64 values but there is no zip64 locator");
      const uint64_t off64 = rd64(data_ + end - 20 + 8);
      if (!in_file(off64, 56) || off64 > end - 20 || rd32(data_ + off64) != kSigEnd64)
        fail("the zip64 end-of-central-directory record is missing or out of the file");
      const uint8_t* z = data_ + off64;
      count = rd64(z + 32);
      cd_size = rd64(z + 40);
      cd_offset = rd64(z + 48);
    }
    if (!in_file(cd_offset, cd_size) || cd_offset + cd_size > end)
      fail("the central directory (offset ", cd_offset, ", ", cd_size,
           " bytes) lies outside the file of ", size_, " bytes");
    if (count > cd_size / 46) fail("the central directory claims ", count, " entries in ", cd_size, " bytes");

    uint64_t pos = cd_offset;
    const uint64_t cd_end = cd_offset + cd_size;
    entries_.reserve(static_cast<size_t>(count));
    for (uint64_t i = 0; i < count; ++i) {
      if (cd_end - pos < 46 || rd32(data_ + pos) != kSigCentral)
        fail("central directory entry ", i, " at offset ", pos, " is missing or truncated");
      const uint8_t* c = data_ + pos;
      const uint16_t flags = rd16(c + 8);
      ZipEntry entry;
      entry.method = rd16(c + 10);
      entry.crc = rd32(c + 16);
      entry.compressed_size = rd32(c + 20);
      entry.size = rd32(c + 24);
      const uint16_t name_len = rd16(c + 28), extra_len = rd16(c + 30), comment_len = rd16(c + 32);
      uint64_t local = rd32(c + 42);
      const uint64_t record = 46ull + name_len + extra_len + comment_len;
      if (cd_end - pos < record) fail("central directory entry ", i, " runs past the directory");
      entry.name.assign(reinterpret_cast<const char*>(c + 46), name_len);
      // zip64 extended information (header id 1): the 0xFFFFFFFF fields, in a fixed order.
      const uint8_t* x = c + 46 + name_len;
      for (uint32_t xp = 0; xp + 4 <= extra_len;) {
        const uint16_t id = rd16(x + xp), len = rd16(x + xp + 2);
        if (xp + 4 + len > extra_len) fail("entry '", entry.name, "' has a truncated extra field");
        if (id == 1) {
          uint32_t q = xp + 4;
          auto take = [&](uint64_t* field) {
            if (*field != 0xFFFFFFFF) return;
            if (q + 8 > xp + 4u + len) fail("entry '", entry.name, "' has a short zip64 extra field");
            *field = rd64(x + q);
            q += 8;
          };
          take(&entry.size);
          take(&entry.compressed_size);
          take(&local);
        }
        xp += 4 + len;
      }
      check_name(entry.name);
      if (flags & 1) fail("entry '", entry.name, "' is encrypted");
      if (entry.method != 0 && entry.method != 8)
        fail("entry '", entry.name, "' uses compression method ", entry.method,
             " (expected 0, stored, or 8, deflate)");
      if (entry.method == 0 && entry.compressed_size != entry.size)
        fail("stored entry '", entry.name, "' has compressed size ", entry.compressed_size,
             " != size ", entry.size);
      // The local header repeats the name; its extra field may differ (torch pads it to align data).
      if (!in_file(local, 30) || rd32(data_ + local) != kSigLocal)
        fail("entry '", entry.name, "': no local header at offset ", local);
      const uint16_t lname = rd16(data_ + local + 26), lextra = rd16(data_ + local + 28);
      if (!in_file(local + 30, lname) ||
          std::string(reinterpret_cast<const char*>(data_ + local + 30), lname) != entry.name)
        fail("entry '", entry.name, "': the local header's name differs from the central directory's");
      entry.data_offset = local + 30 + lname + lextra;
      if (!in_file(entry.data_offset, entry.compressed_size))
        fail("entry '", entry.name, "' (", entry.compressed_size, " bytes at offset ",
             entry.data_offset, ") runs past the end of the file of ", size_, " bytes");
      // DEFLATE expands at most ~1032:1; a larger claim is a lie that would allocate too much.
      if (entry.method == 8 && entry.size / 1032 > entry.compressed_size + 1)
        fail("entry '", entry.name, "' claims ", entry.size, " bytes from ", entry.compressed_size,
             " compressed (more than DEFLATE can expand)");
      if (!index_.emplace(entry.name, entries_.size()).second)
        fail("entry '", entry.name, "' appears twice");
      entries_.push_back(std::move(entry));
      pos += record;
    }
  }

  void check_name(const std::string& name) const {
    const bool bad = name.empty() || name[0] == '/' || name.find('\0') != std::string::npos ||
                     name.find('\\') != std::string::npos || name == ".." ||
                     name.rfind("../", 0) == 0 || name.find("/../") != std::string::npos ||
                     (name.size() >= 3 && name.compare(name.size() - 3, 3, "/..") == 0);
    if (bad) fail("entry name '", name, "' is empty, absolute or contains '..', '\\' or NUL");
  }

#ifdef VLM2MLA_WITH_ZLIB
  void inflate_into(const ZipEntry& e, std::string* out) const {
    out->assign(static_cast<size_t>(e.size), '\0');
    z_stream zs{};
    if (inflateInit2(&zs, -MAX_WBITS) != Z_OK) fail("zlib could not start inflating '", e.name, "'");
    zs.next_in = const_cast<Bytef*>(data_ + e.data_offset);
    zs.avail_in = static_cast<uInt>(std::min<uint64_t>(e.compressed_size, UINT32_MAX));
    zs.next_out = reinterpret_cast<Bytef*>(&(*out)[0]);
    zs.avail_out = static_cast<uInt>(std::min<uint64_t>(e.size, UINT32_MAX));
    const int rc = inflate(&zs, Z_FINISH);
    const uint64_t produced = zs.total_out;
    inflateEnd(&zs);
    if (rc != Z_STREAM_END || produced != e.size)
      fail("entry '", e.name, "' does not inflate to its stated ", e.size, " bytes");
  }
#endif

  const uint8_t* data_;
  size_t size_;
  std::string origin_;
  std::vector<ZipEntry> entries_;
  std::unordered_map<std::string, size_t> index_;
};

// ---- pickle VM -----------------------------------------------------------------------------------

struct Obj {
  enum class K { kNone, kBool, kInt, kFloat, kString, kTuple, kList, kDict, kGlobal, kStorage, kTensor };
  K k = K::kNone;
  bool b = false;
  int64_t i = 0;
  double f = 0.0;
  std::string s;                           // kString; kGlobal: "module.name"
  std::vector<Obj*> items;                 // kTuple, kList
  std::vector<std::pair<Obj*, Obj*>> dict; // kDict
  std::unordered_map<std::string, size_t> str_keys;  // kDict: string key -> index in `dict`
  at::Tensor tensor;                       // kStorage: flat typed storage [numel]; kTensor
};

const char* obj_kind_name(Obj::K k) {
  switch (k) {
    case Obj::K::kNone: return "None";
    case Obj::K::kBool: return "bool";
    case Obj::K::kInt: return "int";
    case Obj::K::kFloat: return "float";
    case Obj::K::kString: return "str";
    case Obj::K::kTuple: return "tuple";
    case Obj::K::kList: return "list";
    case Obj::K::kDict: return "dict";
    case Obj::K::kGlobal: return "global";
    case Obj::K::kStorage: return "storage";
    case Obj::K::kTensor: return "tensor";
  }
  return "?";
}

// torch.<X>Storage -> dtype; false if `name` is not one we know.
bool storage_dtype(const std::string& name, at::ScalarType* out) {
  static const std::map<std::string, at::ScalarType> kTypes = {
      {"torch.ByteStorage", at::kByte},       {"torch.CharStorage", at::kChar},
      {"torch.ShortStorage", at::kShort},     {"torch.IntStorage", at::kInt},
      {"torch.LongStorage", at::kLong},       {"torch.HalfStorage", at::kHalf},
      {"torch.BFloat16Storage", at::kBFloat16}, {"torch.FloatStorage", at::kFloat},
      {"torch.DoubleStorage", at::kDouble},   {"torch.BoolStorage", at::kBool}};
  auto it = kTypes.find(name);
  if (it == kTypes.end()) return false;
  *out = it->second;
  return true;
}

constexpr const char* kRebuildTensorV2 = "torch._utils._rebuild_tensor_v2";
constexpr const char* kRebuildParameter = "torch._utils._rebuild_parameter";
constexpr const char* kOrderedDict = "collections.OrderedDict";

class PickleVm {
 public:
  PickleVm(const uint8_t* data, size_t size, const ZipReader& zip, std::string prefix, std::string origin)
      : p_(data), n_(size), zip_(zip), prefix_(std::move(prefix)), origin_(std::move(origin)) {}

  Obj* run() {
    while (true) {
      if (pos_ >= n_) fail_at(pos_, "the pickle ends without a STOP opcode");
      op_pos_ = pos_;
      const uint8_t op = p_[pos_++];
      switch (op) {
        case 0x80: {  // PROTO
          const uint8_t v = u8();
          if (v < 2 || v > 5) fail("pickle protocol ", int(v), " (expected 2..5)");
          break;
        }
        case 0x95: take(8); break;  // FRAME: a length hint only
        case 'c': {  // GLOBAL "module\nname\n"
          std::string module = line(), name = line();
          std::string full = module + "." + name;
          at::ScalarType dt;
          if (full != kRebuildTensorV2 && full != kRebuildParameter && full != kOrderedDict &&
              !storage_dtype(full, &dt))
            fail("unsupported global '", full, "' (expected ", kRebuildTensorV2, ", ", kRebuildParameter,
                 ", ", kOrderedDict, " or a torch.<X>Storage)");
          Obj* g = make(Obj::K::kGlobal);
          g->s = full;
          push(g);
          break;
        }
        case 'Q': push(persistent_load(pop())); break;  // BINPERSID
        case 'P': {  // PERSID: a text id, which torch never writes
          Obj* s = make(Obj::K::kString);
          s->s = line();
          push(persistent_load(s));
          break;
        }
        case 'R': {  // REDUCE
          Obj* args = pop();
          Obj* fn = pop();
          push(reduce(fn, args));
          break;
        }
        case 'b': {  // BUILD: instance state. Tensor attributes and a state_dict's _metadata are dropped.
          Obj* state = pop();
          Obj* target = top();
          if (target->k != Obj::K::kTensor && target->k != Obj::K::kDict && state->k != Obj::K::kNone)
            fail("BUILD on a ", obj_kind_name(target->k), " (expected a tensor or a dict)");
          break;
        }
        case '(': marks_.push_back(stack_.size()); break;  // MARK
        case 't': {  // TUPLE
          Obj* t = make(Obj::K::kTuple);
          t->items = pop_to_mark();
          push(t);
          break;
        }
        case ')': push(make(Obj::K::kTuple)); break;  // EMPTY_TUPLE
        case 0x85: case 0x86: case 0x87: {  // TUPLE1..3
          const size_t k = op - 0x84;
          if (stack_.size() < k + stack_floor()) fail("TUPLE", k, " needs ", k, " items on the stack");
          Obj* t = make(Obj::K::kTuple);
          t->items.assign(stack_.end() - k, stack_.end());
          stack_.resize(stack_.size() - k);
          push(t);
          break;
        }
        case ']': push(make(Obj::K::kList)); break;  // EMPTY_LIST
        case 'a': {  // APPEND
          Obj* v = pop();
          Obj* list = top();
          if (list->k != Obj::K::kList) fail("APPEND to a ", obj_kind_name(list->k));
          list->items.push_back(v);
          break;
        }
        case 'e': {  // APPENDS
          std::vector<Obj*> vs = pop_to_mark();
          Obj* list = top();
          if (list->k != Obj::K::kList) fail("APPENDS to a ", obj_kind_name(list->k));
          list->items.insert(list->items.end(), vs.begin(), vs.end());
          break;
        }
        case '}': push(make(Obj::K::kDict)); break;  // EMPTY_DICT
        case 's': {  // SETITEM
          Obj* v = pop();
          Obj* key = pop();
          set_item(top(), key, v);
          break;
        }
        case 'u': {  // SETITEMS
          std::vector<Obj*> kv = pop_to_mark();
          if (kv.size() % 2) fail("SETITEMS with an odd number (", kv.size(), ") of items");
          Obj* d = top();
          for (size_t j = 0; j < kv.size(); j += 2) set_item(d, kv[j], kv[j + 1]);
          break;
        }
        case 'J': {  // BININT: signed 32-bit
          const uint8_t* q = take(4);
          push_int(static_cast<int32_t>(rd32(q)));
          break;
        }
        case 'K': push_int(u8()); break;            // BININT1
        case 'M': push_int(rd16(take(2))); break;   // BININT2
        case 0x8a: {  // LONG1: n bytes, little-endian two's complement
          const uint8_t len = u8();
          if (len > 8) fail("LONG1 of ", int(len), " bytes does not fit in 64 bits");
          const uint8_t* q = take(len);
          uint64_t v = 0;
          for (int j = 0; j < len; ++j) v |= static_cast<uint64_t>(q[j]) << (8 * j);
          if (len > 0 && len < 8 && (q[len - 1] & 0x80)) v |= ~uint64_t{0} << (8 * len);  // sign-extend
          push_int(static_cast<int64_t>(v));
          break;
        }
        case 'G': {  // BINFLOAT: big-endian IEEE double
          const uint8_t* q = take(8);
          uint64_t bits = 0;
          for (int j = 0; j < 8; ++j) bits = (bits << 8) | q[j];
          Obj* o = make(Obj::K::kFloat);
          std::memcpy(&o->f, &bits, 8);
          push(o);
          break;
        }
        case 0x88: case 0x89: {  // NEWTRUE, NEWFALSE
          Obj* o = make(Obj::K::kBool);
          o->b = op == 0x88;
          push(o);
          break;
        }
        case 'N': push(make(Obj::K::kNone)); break;
        case 'X': push_string(rd32(take(4))); break;   // BINUNICODE
        case 0x8c: push_string(u8()); break;          // SHORT_BINUNICODE
        case 'T': {  // BINSTRING: signed 32-bit length
          const int32_t len = static_cast<int32_t>(rd32(take(4)));
          if (len < 0) fail("BINSTRING with negative length ", len);
          push_string(static_cast<uint32_t>(len));
          break;
        }
        case 'U': push_string(u8()); break;  // SHORT_BINSTRING
        case 'q': memo_[u8()] = top(); break;                 // BINPUT
        case 'r': memo_[rd32(take(4))] = top(); break;        // LONG_BINPUT
        case 'h': push(memo_get(u8())); break;                 // BINGET
        case 'j': push(memo_get(rd32(take(4)))); break;        // LONG_BINGET
        case 0x94: memo_[static_cast<uint32_t>(memo_.size())] = top(); break;  // MEMOIZE
        case '.': {  // STOP
          Obj* result = pop();
          if (!stack_.empty() || !marks_.empty())
            fail("STOP leaves ", stack_.size(), " items and ", marks_.size(), " marks behind");
          return result;
        }
        default:
          fail("unsupported pickle opcode 0x", hex(op),
               (op >= 0x20 && op < 0x7f ? std::string(" ('") + char(op) + "')" : std::string()));
      }
    }
  }

  PthValue convert(const Obj* o, int depth = 0) const {
    if (depth > 200) fail_at(n_, "objects nested more than 200 deep (or a self-referencing container)");
    PthValue v;
    switch (o->k) {
      case Obj::K::kNone: v.kind = PthValue::Kind::kNone; break;
      case Obj::K::kBool: v.kind = PthValue::Kind::kBool; v.boolean = o->b; break;
      case Obj::K::kInt: v.kind = PthValue::Kind::kInt; v.integer = o->i; break;
      case Obj::K::kFloat: v.kind = PthValue::Kind::kFloat; v.real = o->f; break;
      case Obj::K::kString: v.kind = PthValue::Kind::kString; v.string = o->s; break;
      case Obj::K::kTensor: v.kind = PthValue::Kind::kTensor; v.tensor = o->tensor; break;
      case Obj::K::kTuple:
      case Obj::K::kList:
        v.kind = PthValue::Kind::kList;
        v.list.reserve(o->items.size());
        for (const Obj* item : o->items) v.list.push_back(convert(item, depth + 1));
        break;
      case Obj::K::kDict:
        v.kind = PthValue::Kind::kDict;
        for (const auto& [key, value] : o->dict) {
          if (key->k != Obj::K::kString)
            fail_at(n_, "a dict key is a ", obj_kind_name(key->k), " (expected str)");
          v.dict.emplace_back(key->s, convert(value, depth + 1));
        }
        break;
      case Obj::K::kGlobal:
      case Obj::K::kStorage:
        fail_at(n_, "the result holds a bare ", obj_kind_name(o->k), " (", o->s,
                "), not a tensor, container or plain value");
    }
    return v;
  }

 private:
  static std::string hex(unsigned v) {
    const char* digits = "0123456789abcdef";
    return std::string{digits[(v >> 4) & 15], digits[v & 15]};
  }

  template <typename... Args>
  [[noreturn]] void fail_at(size_t offset, const Args&... args) const {
    throw FormatError(detail::concat(origin_, ": ", prefix_, "data.pkl: ", args..., " (at byte ", offset, ")"));
  }
  template <typename... Args>
  [[noreturn]] void fail(const Args&... args) const {
    throw FormatError(detail::concat(origin_, ": ", prefix_, "data.pkl: ", args..., " (opcode 0x",
                                     hex(p_[op_pos_]), " at byte ", op_pos_, ")"));
  }

  Obj* make(Obj::K k) {
    arena_.push_back(std::make_unique<Obj>());
    arena_.back()->k = k;
    return arena_.back().get();
  }
  const uint8_t* take(size_t len) {
    if (len > n_ - pos_) fail("needs ", len, " more bytes but the pickle ends after ", n_ - pos_);
    const uint8_t* q = p_ + pos_;
    pos_ += len;
    return q;
  }
  uint8_t u8() { return *take(1); }
  std::string line() {
    const uint8_t* start = p_ + pos_;
    const void* nl = std::memchr(start, '\n', n_ - pos_);
    if (!nl) fail("a text argument has no terminating newline");
    const size_t len = static_cast<const uint8_t*>(nl) - start;
    pos_ += len + 1;
    return std::string(reinterpret_cast<const char*>(start), len);
  }
  size_t stack_floor() const { return marks_.empty() ? 0 : marks_.back(); }
  void push(Obj* o) { stack_.push_back(o); }
  Obj* top() {
    if (stack_.size() <= stack_floor()) fail("the stack is empty (above the last mark)");
    return stack_.back();
  }
  Obj* pop() {
    Obj* o = top();
    stack_.pop_back();
    return o;
  }
  std::vector<Obj*> pop_to_mark() {
    if (marks_.empty()) fail("no MARK on the stack");
    const size_t m = marks_.back();
    marks_.pop_back();
    std::vector<Obj*> out(stack_.begin() + m, stack_.end());
    stack_.resize(m);
    return out;
  }
  void push_int(int64_t v) {
    Obj* o = make(Obj::K::kInt);
    o->i = v;
    push(o);
  }
  void push_string(uint64_t len) {
    Obj* o = make(Obj::K::kString);
    const uint8_t* q = take(len);
    o->s.assign(reinterpret_cast<const char*>(q), len);
    push(o);
  }
  Obj* memo_get(uint32_t key) {
    auto it = memo_.find(key);
    if (it == memo_.end()) fail("memo entry ", key, " was never stored");
    return it->second;
  }
  void set_item(Obj* d, Obj* key, Obj* value) {
    if (d->k != Obj::K::kDict) fail("SETITEM(S) on a ", obj_kind_name(d->k), " (expected a dict)");
    if (key->k == Obj::K::kString) {
      auto [it, fresh] = d->str_keys.emplace(key->s, d->dict.size());
      if (!fresh) {
        d->dict[it->second].second = value;  // a repeated key replaces the value, as in Python
        return;
      }
    }
    d->dict.emplace_back(key, value);
  }

  int64_t as_int(const Obj* o, const char* what) const {
    if (o->k != Obj::K::kInt) fail(what, " is a ", obj_kind_name(o->k), " (expected int)");
    return o->i;
  }
  std::vector<int64_t> as_ints(const Obj* o, const char* what) const {
    if (o->k != Obj::K::kTuple && o->k != Obj::K::kList)
      fail(what, " is a ", obj_kind_name(o->k), " (expected a tuple of ints)");
    std::vector<int64_t> out;
    for (const Obj* item : o->items) out.push_back(as_int(item, what));
    return out;
  }

  // ('storage', torch.<X>Storage, key, location, numel) -> the storage's bytes as a typed tensor.
  Obj* persistent_load(Obj* pid) {
    if (pid->k != Obj::K::kTuple || pid->items.size() != 5 || pid->items[0]->k != Obj::K::kString ||
        pid->items[0]->s != "storage")
      fail("a persistent id is a ", obj_kind_name(pid->k),
           " (expected ('storage', storage_type, key, location, numel))");
    const Obj* type = pid->items[1];
    at::ScalarType dtype;
    if (type->k != Obj::K::kGlobal || !storage_dtype(type->s, &dtype))
      fail("storage type is ", type->k == Obj::K::kGlobal ? type->s : obj_kind_name(type->k),
           " (expected a torch.<X>Storage)");
    if (pid->items[2]->k != Obj::K::kString) fail("storage key is not a string");
    const std::string& key = pid->items[2]->s;
    const int64_t numel = as_int(pid->items[4], "storage numel");
    if (numel < 0) fail("storage '", key, "' has negative numel ", numel);
    auto cached = storages_.find(key);
    if (cached != storages_.end()) {
      if (cached->second->tensor.scalar_type() != dtype || cached->second->tensor.numel() != numel)
        fail("storage '", key, "' is referenced with two different types or sizes");
      return cached->second;
    }
    const std::string entry_name = prefix_ + "data/" + key;
    const ZipEntry* entry = zip_.find(entry_name);
    if (!entry) fail("storage '", key, "' has no entry '", entry_name, "' in the archive");
    const uint64_t elem = c10::elementSize(dtype);
    if (static_cast<uint64_t>(numel) > std::numeric_limits<uint64_t>::max() / elem ||
        entry->size != static_cast<uint64_t>(numel) * elem)
      fail("storage '", key, "' (", type->s, ", numel ", numel, ") needs ", numel * elem,
           " bytes but entry '", entry_name, "' holds ", entry->size);
    std::string buffer;
    const auto [bytes, size] = zip_.bytes(*entry, &buffer);
    Obj* s = make(Obj::K::kStorage);
    s->s = key;
    if (dtype == at::kBool) {  // any non-zero byte is true; never put other bytes into a bool
      at::Tensor raw = at::empty({numel}, at::kByte);
      if (size) std::memcpy(raw.data_ptr(), bytes, size);
      s->tensor = raw.ne(0);
    } else {
      s->tensor = at::empty({numel}, at::TensorOptions().dtype(dtype));
      if (size) std::memcpy(s->tensor.data_ptr(), bytes, size);
    }
    storages_[key] = s;
    return s;
  }

  Obj* reduce(Obj* fn, Obj* args) {
    if (fn->k != Obj::K::kGlobal) fail("REDUCE calls a ", obj_kind_name(fn->k), " (expected a global)");
    if (args->k != Obj::K::kTuple) fail("REDUCE arguments are a ", obj_kind_name(args->k), " (expected a tuple)");
    const auto& a = args->items;
    if (fn->s == kOrderedDict) {
      if (!a.empty()) fail(kOrderedDict, " called with ", a.size(), " arguments (expected none)");
      return make(Obj::K::kDict);
    }
    if (fn->s == kRebuildParameter) {
      if (a.size() < 2 || a.size() > 3 || a[0]->k != Obj::K::kTensor)
        fail(kRebuildParameter, " expects (tensor, requires_grad, backward_hooks)");
      return a[0];
    }
    if (fn->s == kRebuildTensorV2) return rebuild_tensor(a);
    fail("REDUCE calls ", fn->s, ", which builds no object here");
  }

  // _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad, backward_hooks[, metadata])
  Obj* rebuild_tensor(const std::vector<Obj*>& a) {
    if (a.size() < 6 || a.size() > 7 || a[0]->k != Obj::K::kStorage)
      fail(kRebuildTensorV2, " expects (storage, storage_offset, size, stride, requires_grad, "
           "backward_hooks[, metadata]), got ", a.size(), " arguments");
    const at::Tensor& storage = a[0]->tensor;
    const int64_t offset = as_int(a[1], "storage_offset");
    const std::vector<int64_t> sizes = as_ints(a[2], "size");
    const std::vector<int64_t> strides = as_ints(a[3], "stride");
    if (sizes.size() != strides.size())
      fail("tensor has ", sizes.size(), " sizes but ", strides.size(), " strides");
    if (offset < 0) fail("negative storage offset ", offset);
    // Highest element reached: offset + sum (size_i - 1) * stride_i, computed without overflow.
    bool empty = false;
    for (int64_t s : sizes) {
      if (s < 0) fail("negative size ", s);
      if (s == 0) empty = true;
    }
    uint64_t last = static_cast<uint64_t>(offset);
    const uint64_t limit = static_cast<uint64_t>(storage.numel());
    for (size_t d = 0; d < sizes.size() && !empty; ++d) {
      if (strides[d] < 0) fail("negative stride ", strides[d], " in dimension ", d);
      const uint64_t span = static_cast<uint64_t>(sizes[d] - 1);
      const uint64_t stride = static_cast<uint64_t>(strides[d]);
      if (stride != 0 && span > (limit + 1) / stride) fail_bounds(a[0]->s, offset, sizes, strides, limit);
      last += span * stride;
      if (last > limit) fail_bounds(a[0]->s, offset, sizes, strides, limit);
    }
    if (!empty && last >= limit) fail_bounds(a[0]->s, offset, sizes, strides, limit);
    if (empty && static_cast<uint64_t>(offset) > limit) fail_bounds(a[0]->s, offset, sizes, strides, limit);
    // The copy's size: stride-0 (expanded) views may be far larger than their storage; cap at 1 TiB.
    uint64_t count = 1;
    for (int64_t sz : sizes) {
      if (sz != 0 && count > (uint64_t{1} << 40) / static_cast<uint64_t>(sz)) {
        count = UINT64_MAX;
        break;
      }
      count *= static_cast<uint64_t>(sz);
    }
    if (count != 0 && count > (uint64_t{1} << 40) / storage.element_size())
      fail("tensor with sizes ", at::IntArrayRef(sizes), " would take more than 1 TiB");
    Obj* t = make(Obj::K::kTensor);
    try {
      if (empty) {
        t->tensor = at::empty(sizes, storage.options());
      } else {
        t->tensor = storage.as_strided(sizes, strides, offset).clone(at::MemoryFormat::Contiguous);
      }
    } catch (const c10::Error& e) {  // e.g. sizes whose product overflows in an empty tensor
      fail("cannot build a tensor with sizes ", at::IntArrayRef(sizes), " and strides ",
           at::IntArrayRef(strides), ": ", e.what_without_backtrace());
    } catch (const std::bad_alloc&) {
      fail("cannot allocate a tensor with sizes ", at::IntArrayRef(sizes));
    }
    return t;
  }

  [[noreturn]] void fail_bounds(const std::string& key, int64_t offset, const std::vector<int64_t>& sizes,
                                const std::vector<int64_t>& strides, uint64_t numel) const {
    fail("tensor with storage offset ", offset, ", sizes ", at::IntArrayRef(sizes), " and strides ",
         at::IntArrayRef(strides), " reaches past storage '", key, "' of ", numel, " elements");
  }

  const uint8_t* p_;
  size_t n_;
  size_t pos_ = 0;
  size_t op_pos_ = 0;
  const ZipReader& zip_;
  std::string prefix_;  // "<top>/"
  std::string origin_;
  std::vector<std::unique_ptr<Obj>> arena_;
  std::vector<Obj*> stack_;
  std::vector<size_t> marks_;
  std::unordered_map<uint32_t, Obj*> memo_;
  std::map<std::string, Obj*> storages_;
};

}  // namespace

const char* pth_kind_name(PthValue::Kind kind) {
  switch (kind) {
    case PthValue::Kind::kNone: return "None";
    case PthValue::Kind::kBool: return "bool";
    case PthValue::Kind::kInt: return "int";
    case PthValue::Kind::kFloat: return "float";
    case PthValue::Kind::kString: return "string";
    case PthValue::Kind::kTensor: return "tensor";
    case PthValue::Kind::kList: return "list";
    case PthValue::Kind::kDict: return "dict";
  }
  return "?";
}

PthValue parse_pth(const uint8_t* data, size_t size, const std::string& origin) {
  ZipReader zip(data, size, origin);
  if (zip.entries().empty()) zip.fail("the archive has no entries");
  // Every entry sits under one top folder.
  const std::string& first = zip.entries().front().name;
  const size_t slash = first.find('/');
  if (slash == std::string::npos || slash == 0)
    zip.fail("entry '", first, "' is not under a top folder (expected <name>/data.pkl, ...)");
  const std::string prefix = first.substr(0, slash + 1);
  for (const ZipEntry& e : zip.entries())
    if (e.name.compare(0, prefix.size(), prefix) != 0)
      zip.fail("entry '", e.name, "' is not under the top folder '", prefix, "' of the other entries");

  std::string buffer;
  if (const ZipEntry* order = zip.find(prefix + "byteorder")) {
    const auto [bytes, n] = zip.bytes(*order, &buffer);
    const std::string value(reinterpret_cast<const char*>(bytes), n);
    if (value != "little")
      zip.fail("byteorder is '", value.substr(0, 32), "' (expected 'little'; big-endian files are not supported)");
  }
  const ZipEntry* pkl = zip.find(prefix + "data.pkl");
  if (!pkl) zip.fail("no entry '", prefix, "data.pkl'");
  const auto [bytes, n] = zip.bytes(*pkl, &buffer);
  std::string pickle(reinterpret_cast<const char*>(bytes), n);  // own it: `buffer` may be reused
  PickleVm vm(reinterpret_cast<const uint8_t*>(pickle.data()), pickle.size(), zip, prefix, origin);
  return vm.convert(vm.run());
}

PthValue read_pth(const std::string& path) {
  MappedFile file(path);
  return parse_pth(file.data(), file.size(), path);
}

at::Tensor read_pth_tensor(const std::string& path) {
  PthValue v = read_pth(path);
  VLM2MLA_CHECK(v.is_tensor(), FormatError, path, ": the checkpoint holds a ", pth_kind_name(v.kind),
                " at the top level (expected one tensor)");
  return v.tensor;
}

std::map<std::string, at::Tensor> read_pth_state_dict(const std::string& path) {
  PthValue v = read_pth(path);
  VLM2MLA_CHECK(v.is_dict(), FormatError, path, ": the checkpoint holds a ", pth_kind_name(v.kind),
                " at the top level (expected a dict of tensors)");
  std::map<std::string, at::Tensor> out;
  for (auto& [key, value] : v.dict) {
    VLM2MLA_CHECK(value.is_tensor(), FormatError, path, ": entry '", key, "' is a ",
                  pth_kind_name(value.kind), " (expected a tensor)");
    out[key] = value.tensor;
  }
  return out;
}

}  // namespace vlm2mla::io
