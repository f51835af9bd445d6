// The torch .pth (zip) reader on archives built byte by byte here, independent of any writer:
// a small STORED-zip writer and hand-assembled protocol-2 pickles. Malformed inputs must raise
// FormatError naming the file, never crash.
#include <gtest/gtest.h>

#include <ATen/ATen.h>

#include <cstdint>
#include <cstring>
#include <functional>
#include <string>
#include <utility>
#include <vector>

#include "core/error.h"
#include "io/torch_pth.h"
#include "support/test_support.h"

namespace vlm2mla::io {
namespace {

using vlm2mla::testing::TempDir;
using vlm2mla::testing::write_bytes;

// ---- a minimal ZIP writer (STORED entries) -------------------------------------------------------

uint32_t test_crc32(const std::string& s) {
  uint32_t c = 0xFFFFFFFFu;
  for (unsigned char byte : s) {
    c ^= byte;
    for (int k = 0; k < 8; ++k) c = (c >> 1) ^ (0xEDB88320u & (0u - (c & 1u)));
  }
  return ~c;
}

void put16(std::string* out, uint32_t v) {
  out->push_back(static_cast<char>(v & 0xff));
  out->push_back(static_cast<char>((v >> 8) & 0xff));
}
void put32(std::string* out, uint32_t v) {
  put16(out, v & 0xffff);
  put16(out, v >> 16);
}

// Entries in order; each local header gets `pad` bytes of extra field (torch aligns data so).
// A raw DEFLATE stream of one final "stored" block (BFINAL=1, BTYPE=00): valid input for any
// inflater, written without a compressor. Data up to 65535 bytes.
std::string deflate_stored(const std::string& data) {
  std::string out(1, '\x01');
  put16(&out, data.size());
  put16(&out, ~data.size() & 0xffff);
  return out + data;
}

// With `deflate`, every entry is method 8 (a DEFLATE stream of stored blocks) instead of 0.
std::string make_zip(const std::vector<std::pair<std::string, std::string>>& entries, uint16_t pad = 0,
                     bool deflate = false) {
  std::string out, central;
  for (const auto& [name, plain] : entries) {
    const uint32_t offset = static_cast<uint32_t>(out.size());
    const uint32_t crc = test_crc32(plain);
    const std::string data = deflate ? deflate_stored(plain) : plain;
    const uint16_t method = deflate ? 8 : 0;
    put32(&out, 0x04034b50);
    put16(&out, 20); put16(&out, 0); put16(&out, method); put16(&out, 0); put16(&out, 0);
    put32(&out, crc); put32(&out, data.size()); put32(&out, plain.size());
    put16(&out, name.size()); put16(&out, pad + (pad ? 4 : 0));
    out += name;
    if (pad) { put16(&out, 0xcafe); put16(&out, pad); out.append(pad, 'Z'); }
    out += data;
    put32(&central, 0x02014b50);
    put16(&central, 20); put16(&central, 20); put16(&central, 0); put16(&central, method);
    put16(&central, 0); put16(&central, 0);
    put32(&central, crc); put32(&central, data.size()); put32(&central, plain.size());
    put16(&central, name.size()); put16(&central, 0); put16(&central, 0);
    put16(&central, 0); put16(&central, 0); put32(&central, 0); put32(&central, offset);
    central += name;
  }
  const uint32_t cd_offset = static_cast<uint32_t>(out.size());
  out += central;
  put32(&out, 0x06054b50);
  put16(&out, 0); put16(&out, 0); put16(&out, entries.size()); put16(&out, entries.size());
  put32(&out, central.size()); put32(&out, cd_offset); put16(&out, 0);
  return out;
}

void put64(std::string* out, uint64_t v) {
  put32(out, static_cast<uint32_t>(v));
  put32(out, static_cast<uint32_t>(v >> 32));
}

// The same archive in zip64 form: sizes and offsets in zip64 extra fields, a zip64 end record and
// its locator, and 0xFFFF.. placeholders in the classic records (what large torch.save files hold).
std::string make_zip64(const std::vector<std::pair<std::string, std::string>>& entries) {
  std::string out, central;
  for (const auto& [name, data] : entries) {
    const uint64_t offset = out.size();
    const uint32_t crc = test_crc32(data);
    put32(&out, 0x04034b50);
    put16(&out, 45); put16(&out, 0); put16(&out, 0); put16(&out, 0); put16(&out, 0);
    put32(&out, crc); put32(&out, 0xFFFFFFFF); put32(&out, 0xFFFFFFFF);
    put16(&out, name.size()); put16(&out, 20);
    out += name;
    put16(&out, 1); put16(&out, 16); put64(&out, data.size()); put64(&out, data.size());
    out += data;
    put32(&central, 0x02014b50);
    put16(&central, 45); put16(&central, 45); put16(&central, 0); put16(&central, 0);
    put16(&central, 0); put16(&central, 0);
    put32(&central, crc); put32(&central, 0xFFFFFFFF); put32(&central, 0xFFFFFFFF);
    put16(&central, name.size()); put16(&central, 28); put16(&central, 0);
    put16(&central, 0); put16(&central, 0); put32(&central, 0); put32(&central, 0xFFFFFFFF);
    central += name;
    put16(&central, 1); put16(&central, 24);
    put64(&central, data.size()); put64(&central, data.size()); put64(&central, offset);
  }
  const uint64_t cd_offset = out.size();
  out += central;
  const uint64_t end64 = out.size();
  put32(&out, 0x06064b50); put64(&out, 44); put16(&out, 45); put16(&out, 45);
  put32(&out, 0); put32(&out, 0); put64(&out, entries.size()); put64(&out, entries.size());
  put64(&out, central.size()); put64(&out, cd_offset);
  put32(&out, 0x07064b50); put32(&out, 0); put64(&out, end64); put32(&out, 1);
  put32(&out, 0x06054b50);
  put16(&out, 0); put16(&out, 0); put16(&out, 0xFFFF); put16(&out, 0xFFFF);
  put32(&out, 0xFFFFFFFF); put32(&out, 0xFFFFFFFF); put16(&out, 0);
  return out;
}

// ---- a protocol-2 pickle assembler ---------------------------------------------------------------

struct Pickle {
  std::string b = std::string("\x80\x02", 2);
  Pickle& op(char c) { b.push_back(c); return *this; }
  Pickle& op(unsigned char c) { b.push_back(static_cast<char>(c)); return *this; }
  Pickle& global(const std::string& module, const std::string& name) {
    b += "c" + module + "\n" + name + "\n";
    return *this;
  }
  Pickle& str(const std::string& s) {  // BINUNICODE
    b.push_back('X');
    put32(&b, s.size());
    b += s;
    return *this;
  }
  Pickle& integer(int64_t v) {
    if (v >= 0 && v < 256) { b.push_back('K'); b.push_back(static_cast<char>(v)); }
    else if (v >= 0 && v < 65536) { b.push_back('M'); put16(&b, v); }
    else if (v >= INT32_MIN && v <= INT32_MAX) { b.push_back('J'); put32(&b, static_cast<uint32_t>(v)); }
    else {  // LONG1, 8 bytes
      b.push_back('\x8a'); b.push_back(8);
      for (int i = 0; i < 8; ++i) b.push_back(static_cast<char>((static_cast<uint64_t>(v) >> (8 * i)) & 0xff));
    }
    return *this;
  }
  Pickle& ints(const std::vector<int64_t>& v) {  // a tuple of ints
    op('(');
    for (int64_t x : v) integer(x);
    return op('t');
  }
  Pickle& put(uint8_t i) { b.push_back('q'); b.push_back(static_cast<char>(i)); return *this; }
  Pickle& get(uint8_t i) { b.push_back('h'); b.push_back(static_cast<char>(i)); return *this; }

  // _rebuild_tensor_v2(storage(type, key, numel), offset, sizes, strides, False, OrderedDict())
  Pickle& tensor(const std::string& storage_type, const std::string& key, int64_t numel, int64_t offset,
                 const std::vector<int64_t>& sizes, const std::vector<int64_t>& strides) {
    global("torch._utils", "_rebuild_tensor_v2");
    op('(');
    op('(').str("storage").global("torch", storage_type).str(key).str("cpu").integer(numel).op('t');
    op('Q');
    integer(offset).ints(sizes).ints(strides);
    op('\x89');
    global("collections", "OrderedDict").op(')').op('R');
    op('t').op('R');
    return *this;
  }
  std::string stop() const { return b + "."; }
};

template <typename T>
std::string raw(const std::vector<T>& values) {
  return std::string(reinterpret_cast<const char*>(values.data()), values.size() * sizeof(T));
}

std::string pth(const std::string& pickle, const std::vector<std::pair<std::string, std::string>>& storages,
                const std::string& byteorder = "little", const std::string& top = "archive") {
  std::vector<std::pair<std::string, std::string>> entries = {{top + "/data.pkl", pickle},
                                                              {top + "/byteorder", byteorder}};
  for (const auto& [key, bytes] : storages) entries.emplace_back(top + "/data/" + key, bytes);
  entries.emplace_back(top + "/version", "3\n");
  return make_zip(entries, 20);
}

std::string uint8_tensor_pth() {
  Pickle p;
  p.tensor("ByteStorage", "0", 6, 0, {2, 3}, {3, 1});
  return pth(p.stop(), {{"0", raw<uint8_t>({1, 2, 3, 4, 5, 250})}});
}

// {'a': float [2, 3] at offset 1, strides (1, 2) (a transposed view), 'b': long [3] at offset 1}
std::string dict_pth(bool ordered) {
  Pickle p;
  if (ordered) p.global("collections", "OrderedDict").put(0).op(')').op('R');
  else p.op('}');
  p.op('(');
  p.str("a").tensor("FloatStorage", "0", 8, 1, {2, 3}, {1, 2});
  p.str("b").tensor("LongStorage", "1", 4, 1, {3}, {1});
  p.op('u');
  return pth(p.stop(), {{"0", raw<float>({0, 1, 2, 3, 4, 5, 6, 7})},
                        {"1", raw<int64_t>({10, -20, 30, 4000000000LL})}});
}

std::string pth_error(const std::string& bytes, const std::string& name = "bad.pth") {
  TempDir dir;
  const std::string path = dir.file(name);
  write_bytes(path, bytes);
  try {
    read_pth(path);
  } catch (const FormatError& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find(path), std::string::npos) << "the message should name the file: " << msg;
    return msg;
  }
  ADD_FAILURE() << "expected a FormatError";
  return "";
}

bool has(const std::string& s, const std::string& part) { return s.find(part) != std::string::npos; }

// ---- tests ---------------------------------------------------------------------------------------

TEST(Pth, ReadsAUint8Tensor) {
  TempDir dir;
  write_bytes(dir.file("t.pth"), uint8_tensor_pth());
  const at::Tensor t = read_pth_tensor(dir.file("t.pth"));
  ASSERT_EQ(t.scalar_type(), at::kByte);
  ASSERT_EQ(t.sizes(), at::IntArrayRef({2, 3}));
  EXPECT_TRUE(t.equal(at::tensor({1, 2, 3, 4, 5, 250}, at::kByte).view({2, 3})));
}

TEST(Pth, ReadsADictWithOffsetsAndTransposedStrides) {
  for (bool ordered : {false, true}) {
    TempDir dir;
    write_bytes(dir.file("d.pth"), dict_pth(ordered));
    const PthValue v = read_pth(dir.file("d.pth"));
    ASSERT_TRUE(v.is_dict());
    ASSERT_EQ(v.dict.size(), 2u);
    EXPECT_EQ(v.dict[0].first, "a");
    EXPECT_EQ(v.dict[1].first, "b");
    const auto sd = read_pth_state_dict(dir.file("d.pth"));
    const at::Tensor a = sd.at("a"), b = sd.at("b");
    ASSERT_EQ(a.scalar_type(), at::kFloat);
    ASSERT_EQ(a.sizes(), at::IntArrayRef({2, 3}));
    EXPECT_TRUE(a.is_contiguous());
    // a[i][j] = storage[1 + i + 2j]
    EXPECT_TRUE(a.equal(at::tensor({1.f, 3.f, 5.f, 2.f, 4.f, 6.f}).view({2, 3})));
    ASSERT_EQ(b.scalar_type(), at::kLong);
    EXPECT_TRUE(b.equal(at::tensor(std::vector<int64_t>{-20, 30, 4000000000LL})));
    EXPECT_THROW(read_pth_tensor(dir.file("d.pth")), FormatError);
  }
}

TEST(Pth, PlainValuesListsAndMemo) {
  // [1, -2, 3.5, 'x', None, True, (7, 8), <memo of 'x'>, 2**40]
  Pickle p;
  p.op(']').op('(').integer(1).integer(-2);
  p.op('G');
  const double d = 3.5;
  uint64_t bits;
  std::memcpy(&bits, &d, 8);
  for (int i = 7; i >= 0; --i) p.b.push_back(static_cast<char>((bits >> (8 * i)) & 0xff));
  p.str("x").put(1).op('N').op('\x88').integer(7).integer(8).op('\x86').get(1).integer(int64_t{1} << 40);
  p.op('e');
  TempDir dir;
  write_bytes(dir.file("v.pth"), pth(p.stop(), {}));
  const PthValue v = read_pth(dir.file("v.pth"));
  ASSERT_TRUE(v.is_list());
  ASSERT_EQ(v.list.size(), 9u);
  EXPECT_EQ(v.list[0].integer, 1);
  EXPECT_EQ(v.list[1].integer, -2);
  EXPECT_EQ(v.list[2].real, 3.5);
  EXPECT_EQ(v.list[3].string, "x");
  EXPECT_EQ(v.list[4].kind, PthValue::Kind::kNone);
  EXPECT_TRUE(v.list[5].boolean);
  ASSERT_EQ(v.list[6].list.size(), 2u);
  EXPECT_EQ(v.list[6].list[1].integer, 8);
  EXPECT_EQ(v.list[7].string, "x");
  EXPECT_EQ(v.list[8].integer, int64_t{1} << 40);
}

TEST(Pth, DeflatedEntries) {
  Pickle p;
  p.tensor("ByteStorage", "0", 6, 0, {2, 3}, {3, 1});
  const std::string zip = make_zip({{"archive/data.pkl", p.stop()},
                                    {"archive/byteorder", "little"},
                                    {"archive/data/0", raw<uint8_t>({1, 2, 3, 4, 5, 250})}},
                                   0, /*deflate=*/true);
#ifdef VLM2MLA_WITH_ZLIB
  TempDir dir;
  write_bytes(dir.file("z.pth"), zip);
  EXPECT_TRUE(read_pth_tensor(dir.file("z.pth")).equal(at::tensor({1, 2, 3, 4, 5, 250}, at::kByte).view({2, 3})));
  std::string bad = zip;  // a corrupt stream: the stored block's NLEN no longer matches LEN
  bad[bad.find(p.stop().substr(0, 4)) - 1] ^= 0x55;
  EXPECT_FALSE(pth_error(bad).empty());
#else
  EXPECT_TRUE(has(pth_error(zip), "zlib"));
#endif
}

TEST(Pth, Zip64Archive) {
  Pickle p;
  p.tensor("ByteStorage", "0", 6, 0, {2, 3}, {3, 1});
  const std::string zip = make_zip64({{"archive/data.pkl", p.stop()},
                                      {"archive/byteorder", "little"},
                                      {"archive/data/0", raw<uint8_t>({1, 2, 3, 4, 5, 250})}});
  TempDir dir;
  write_bytes(dir.file("z64.pth"), zip);
  EXPECT_TRUE(read_pth_tensor(dir.file("z64.pth")).equal(at::tensor({1, 2, 3, 4, 5, 250}, at::kByte).view({2, 3})));
  std::string no_locator = zip;  // break the locator's signature
  no_locator[no_locator.size() - 22 - 20] = 'X';
  EXPECT_TRUE(has(pth_error(no_locator), "zip64")) << pth_error(no_locator);
}

TEST(Pth, TruncatedZipIsAFormatError) {
  const std::string good = uint8_tensor_pth();
  EXPECT_TRUE(has(pth_error(good.substr(0, good.size() / 2)), "end-of-central-directory"));
  EXPECT_FALSE(pth_error(good.substr(0, good.size() - 1)).empty());
  EXPECT_FALSE(pth_error("").empty());
}

TEST(Pth, WrongByteorderIsAFormatError) {
  Pickle p;
  p.tensor("ByteStorage", "0", 2, 0, {2}, {1});
  EXPECT_TRUE(has(pth_error(pth(p.stop(), {{"0", "ab"}}, "big")), "byteorder"));
}

TEST(Pth, StorageTooSmallIsAFormatError) {
  Pickle p;
  p.tensor("FloatStorage", "0", 8, 0, {8}, {1});
  const std::string msg = pth_error(pth(p.stop(), {{"0", std::string(31, '\0')}}));
  EXPECT_TRUE(has(msg, "needs 32 bytes")) << msg;
}

TEST(Pth, ViewOutsideTheStorageIsAFormatError) {
  Pickle p;  // offset 3 + (2-1)*3 + (3-1)*1 = 8: one past a storage of 8
  p.tensor("ByteStorage", "0", 8, 3, {2, 3}, {3, 1});
  const std::string msg = pth_error(pth(p.stop(), {{"0", std::string(8, '\0')}}));
  EXPECT_TRUE(has(msg, "reaches past storage")) << msg;
  Pickle q;  // huge stride: no overflow, still an error
  q.tensor("ByteStorage", "0", 8, 0, {2, 2}, {1, int64_t{1} << 62});
  EXPECT_TRUE(has(pth_error(pth(q.stop(), {{"0", std::string(8, '\0')}})), "reaches past storage"));
}

TEST(Pth, HugeOrEmptyShapesAreSafe) {
  Pickle p;  // an empty tensor with a huge other dimension: fine, no allocation
  p.tensor("ByteStorage", "0", 1, 0, {0, int64_t{1} << 50}, {1, 1});
  TempDir dir;
  write_bytes(dir.file("e.pth"), pth(p.stop(), {{"0", "x"}}));
  EXPECT_EQ(read_pth_tensor(dir.file("e.pth")).numel(), 0);
  Pickle q;  // a stride-0 view of 2^60 elements over one byte: in bounds, but refused (too large)
  q.tensor("ByteStorage", "0", 1, 0, {int64_t{1} << 30, int64_t{1} << 30}, {0, 0});
  EXPECT_TRUE(has(pth_error(pth(q.stop(), {{"0", "x"}})), "1 TiB"));
  Pickle e;  // a small stride-0 (expanded) view is legitimate
  e.tensor("ByteStorage", "0", 1, 0, {2, 3}, {0, 0});
  write_bytes(dir.file("x.pth"), pth(e.stop(), {{"0", "x"}}));
  EXPECT_TRUE(read_pth_tensor(dir.file("x.pth")).eq('x').all().item<bool>());
}

TEST(Pth, UnknownOpcodeIsAFormatErrorNamingItAndItsOffset) {
  Pickle p;
  p.op('I');  // INT (text): not in the subset; at byte 2, after PROTO 2
  const std::string msg = pth_error(pth(p.b + "1\n.", {}));
  EXPECT_TRUE(has(msg, "opcode 0x49")) << msg;
  EXPECT_TRUE(has(msg, "at byte 2")) << msg;
}

TEST(Pth, UnknownGlobalIsAFormatError) {
  Pickle p;
  p.global("os", "system").op(')').op('R');
  EXPECT_TRUE(has(pth_error(pth(p.stop(), {})), "unsupported global 'os.system'"));
}

TEST(Pth, MissingDataPklIsAFormatError) {
  const std::string zip = make_zip({{"archive/byteorder", "little"}, {"archive/version", "3\n"}});
  EXPECT_TRUE(has(pth_error(zip), "data.pkl"));
}

TEST(Pth, MissingStorageEntryAndMixedTopFoldersAreFormatErrors) {
  Pickle p;
  p.tensor("ByteStorage", "7", 2, 0, {2}, {1});
  EXPECT_TRUE(has(pth_error(pth(p.stop(), {})), "archive/data/7"));
  const std::string zip = make_zip({{"a/data.pkl", p.stop()}, {"b/data/7", "xy"}});
  EXPECT_TRUE(has(pth_error(zip), "top folder"));
}

std::string dict_pickle() {
  Pickle p;
  p.global("collections", "OrderedDict").put(0).op(')').op('R').op('(');
  p.str("a").tensor("FloatStorage", "0", 8, 1, {2, 3}, {1, 2});
  p.str("b").tensor("LongStorage", "1", 4, 1, {3}, {1});
  p.op('u');
  return p.stop();
}

TEST(Pth, CorruptedPickleNeverCrashes) {
  // Every truncation and single-byte overwrite of the pickle (in a zip with valid CRCs) either
  // parses or raises FormatError.
  const std::string pickle = dict_pickle();
  const std::vector<std::pair<std::string, std::string>> storages = {
      {"0", raw<float>({0, 1, 2, 3, 4, 5, 6, 7})}, {"1", raw<int64_t>({10, -20, 30, 40})}};
  auto attempt = [&](const std::string& pk) {
    const std::string zip = pth(pk, storages);
    try {
      parse_pth(reinterpret_cast<const uint8_t*>(zip.data()), zip.size(), "mutant");
    } catch (const FormatError&) {
    }
  };
  for (size_t n = 0; n < pickle.size(); ++n) attempt(pickle.substr(0, n));
  for (size_t i = 0; i < pickle.size(); ++i)
    for (int v : {0x00, 0x01, 0x7f, 0x80, 0xff, int('h'), int('Q'), int('R'), int('t'), int('('), int('u'), int('a')}) {
      std::string bad = pickle;
      bad[i] = static_cast<char>(v);
      attempt(bad);
    }
}

TEST(Pth, RandomlyMutatedPicklesNeverCrash) {
  // A seeded sweep of multi-byte mutations (overwrite, insert, delete) of a valid pickle, in zips
  // with valid CRCs, so the VM (not the CRC check) sees them.
  const std::string pickle = dict_pickle();
  const std::vector<std::pair<std::string, std::string>> storages = {
      {"0", raw<float>({0, 1, 2, 3, 4, 5, 6, 7})}, {"1", raw<int64_t>({10, -20, 30, 40})}};
  static const char kOps[] = "()tQRbaeu}]sqhjKMJG.XNX\x85\x86\x87\x88\x89\x8a\x94\x95\x00\xff";
  const std::string alphabet(kOps, sizeof(kOps) - 1);  // opcodes and edge bytes, NUL included
  uint64_t state = 0x9E3779B97F4A7C15ull;
  auto next = [&] {  // xorshift64
    state ^= state << 13;
    state ^= state >> 7;
    state ^= state << 17;
    return state;
  };
  int parsed = 0;
  for (int iter = 0; iter < 3000; ++iter) {
    std::string bad = pickle;
    const int edits = 1 + static_cast<int>(next() % 4);
    for (int e = 0; e < edits && !bad.empty(); ++e) {
      const size_t at = next() % bad.size();
      const char c = (next() & 1) ? alphabet[next() % alphabet.size()] : static_cast<char>(next());
      switch (next() % 3) {
        case 0: bad[at] = c; break;
        case 1: bad.insert(bad.begin() + at, c); break;
        default: bad.erase(at, 1); break;
      }
    }
    const std::string zip = pth(bad, storages);
    try {
      parse_pth(reinterpret_cast<const uint8_t*>(zip.data()), zip.size(), "mutant");
      ++parsed;
    } catch (const FormatError&) {
    }
  }
  EXPECT_LT(parsed, 3000);
}

TEST(Pth, CorruptedZipNeverCrashes) {
  // Every truncation and every single-byte overwrite, of a classic and of a zip64 archive, either
  // parses or raises FormatError.
  std::vector<std::pair<std::string, std::string>> entries = {{"archive/data.pkl", dict_pickle()},
                                                              {"archive/byteorder", "little"}};
  entries.emplace_back("archive/data/0", raw<float>({0, 1, 2, 3, 4, 5, 6, 7}));
  entries.emplace_back("archive/data/1", raw<int64_t>({10, -20, 30, 40}));
  for (const std::string& good : {dict_pth(true), make_zip64(entries)}) {
    ASSERT_NO_THROW(parse_pth(reinterpret_cast<const uint8_t*>(good.data()), good.size(), "good"));
    for (size_t n = 0; n < good.size(); ++n) {
      const std::string cut = good.substr(0, n);
      try {
        parse_pth(reinterpret_cast<const uint8_t*>(cut.data()), cut.size(), "cut");
      } catch (const FormatError&) {
      }
    }
    for (size_t i = 0; i < good.size(); ++i) {
      for (int v : {0x00, 0x7f, 0xff}) {
        std::string bad = good;
        bad[i] = static_cast<char>(v);
        try {
          parse_pth(reinterpret_cast<const uint8_t*>(bad.data()), bad.size(), "flip");
        } catch (const FormatError&) {
        }
      }
    }
  }
}

}  // namespace
}  // namespace vlm2mla::io
