// safetensors reading/writing, sharded checkpoints, atomic writes, JSON files.
#include <gtest/gtest.h>

#include <ATen/ATen.h>

#include <cstring>
#include <functional>
#include <string>
#include <utility>
#include <vector>

#include "core/error.h"
#include "core/fs.h"
#include "io/json_file.h"
#include "io/mapped_file.h"
#include "io/safetensors.h"
#include "io/tensor_store.h"
#include "support/test_support.h"

namespace vlm2mla::io {
namespace {

using vlm2mla::testing::read_bytes;
using vlm2mla::testing::TempDir;
using vlm2mla::testing::write_bytes;

// ---- helpers ------------------------------------------------------------------------------------

std::string le64(uint64_t n) {
  std::string out(8, '\0');
  for (int i = 0; i < 8; ++i) out[i] = static_cast<char>((n >> (8 * i)) & 0xff);
  return out;
}

// A safetensors file built by hand: u64 length | header | data. With `pad`, the header is padded
// with spaces to a multiple of 8, as the Python library writes it.
std::string st_bytes(std::string header, const std::string& data, bool pad = true) {
  if (pad) header.append((8 - header.size() % 8) % 8, ' ');
  return le64(header.size()) + header + data;
}

template <typename T>
std::string raw(const std::vector<T>& values) {
  return std::string(reinterpret_cast<const char*>(values.data()), values.size() * sizeof(T));
}

std::string tensor_bytes(const at::Tensor& t) {
  const at::Tensor c = t.cpu().contiguous();
  return std::string(static_cast<const char*>(c.data_ptr()), c.numel() * c.element_size());
}

bool contains(const std::string& haystack, const std::string& needle) {
  return haystack.find(needle) != std::string::npos;
}

// Runs `fn`, expects ErrorType, and returns its message (empty if nothing or something else threw).
template <typename ErrorType>
std::string error_of(const std::function<void()>& fn) {
  try {
    fn();
  } catch (const ErrorType& e) {
    return e.what();
  } catch (const std::exception& e) {
    ADD_FAILURE() << "unexpected exception type: " << e.what();
    return "";
  }
  ADD_FAILURE() << "no exception thrown";
  return "";
}

// Writes `bytes` as a .safetensors file, opens it, expects a FormatError whose message names the
// file and every one of `parts`.
void expect_bad_file(const std::string& bytes, const std::vector<std::string>& parts) {
  TempDir dir;
  const std::string path = dir.file("bad.safetensors");
  write_bytes(path, bytes);
  const std::string msg = error_of<FormatError>([&] { SafetensorsFile file(path); });
  EXPECT_TRUE(contains(msg, path)) << msg;
  for (const std::string& part : parts) {
    EXPECT_TRUE(contains(msg, part)) << "'" << part << "' not in: " << msg;
  }
}

std::vector<std::string> files_in(const std::string& dir) {
  std::vector<std::string> names;
  for (const auto& name : fs::list_directory(dir)) names.push_back(name);
  std::sort(names.begin(), names.end());
  return names;
}

// ---- round trips --------------------------------------------------------------------------------

TEST(Safetensors, RoundTripEveryDtypeBitExact) {
  TempDir dir;
  const std::string path = dir.file("all.safetensors");
  at::manual_seed(0);
  // Floats include values whose bits must survive untouched: NaN, infinity, -0, a denormal.
  at::Tensor f32 = at::randn({3, 5});
  f32.view(-1)[0] = std::numeric_limits<float>::quiet_NaN();
  f32.view(-1)[1] = -0.0f;
  f32.view(-1)[2] = std::numeric_limits<float>::infinity();
  f32.view(-1)[3] = std::numeric_limits<float>::denorm_min();
  at::Tensor u16_bits = at::arange(0, 65536, 257, at::kInt);  // spans every exponent
  std::vector<std::pair<std::string, at::Tensor>> tensors = {
      {"f64", at::randn({4}, at::kDouble)},
      {"f32", f32},
      {"f16", at::randn({2, 3}).to(at::kHalf)},
      {"bf16", at::randn({7}).to(at::kBFloat16)},
      {"i64", at::randint(-(int64_t{1} << 40), int64_t{1} << 40, {3}, at::kLong)},
      {"i32", at::randint(-100000, 100000, {2, 2}, at::kInt)},
      {"i16", at::randint(-30000, 30000, {5}, at::kShort)},
      {"i8", at::randint(-128, 128, {9}, at::kChar)},
      {"u8", at::randint(0, 256, {1, 1, 3}, at::kByte)},
      {"bool", at::randint(0, 2, {6}, at::kByte).to(at::kBool)},
      {"scalar", at::scalar_tensor(3.5, at::kFloat)},       // 0-d
      {"empty", at::empty({0, 4}, at::kFloat)},              // zero elements
      {"empty_bf16", at::empty({2, 0}, at::kBFloat16)},
      {"noncontig", at::arange(12, at::kFloat).view({3, 4}).t()},
      {"f16_bits", u16_bits.to(at::kShort).view(at::kHalf)},
  };
  const std::map<std::string, std::string> metadata = {{"format", "pt"}, {"note", "héllo"}};
  write_safetensors(path, tensors, metadata);

  const SafetensorsFile file(path);
  EXPECT_EQ(file.header().metadata, metadata);
  EXPECT_EQ(file.names().size(), tensors.size());
  EXPECT_EQ(file.header().data_offset % 8, 0u);
  for (const auto& [name, expected] : tensors) {
    SCOPED_TRACE(name);
    ASSERT_TRUE(file.contains(name));
    const at::Tensor got = file.tensor(name);
    EXPECT_EQ(got.scalar_type(), expected.scalar_type());
    EXPECT_EQ(got.sizes(), expected.sizes());
    EXPECT_EQ(tensor_bytes(got), tensor_bytes(expected));
    EXPECT_EQ(to_scalar_type(file.info(name).dtype), expected.scalar_type());
  }
  const auto owned = read_safetensors(path);
  ASSERT_EQ(owned.size(), tensors.size());
  for (const auto& [name, expected] : tensors) {
    EXPECT_EQ(tensor_bytes(owned.at(name)), tensor_bytes(expected)) << name;
  }
  EXPECT_EQ(file.tensor("scalar").dim(), 0);
  EXPECT_EQ(file.tensor("empty").numel(), 0);
}

TEST(Safetensors, DtypeMapIsABijection) {
  for (StDtype d : {StDtype::kF64, StDtype::kF32, StDtype::kF16, StDtype::kBF16, StDtype::kI64,
                    StDtype::kI32, StDtype::kI16, StDtype::kI8, StDtype::kU8, StDtype::kBool}) {
    EXPECT_EQ(to_st_dtype(to_scalar_type(d)), d);
    EXPECT_EQ(static_cast<size_t>(at::empty({0}, to_scalar_type(d)).element_size()),
              st_dtype_size(d));
    StDtype parsed = StDtype::kF32;
    ASSERT_TRUE(st_dtype_from_name(st_dtype_name(d), &parsed));
    EXPECT_EQ(parsed, d);
  }
  const std::string msg = error_of<ArgumentError>([] { to_st_dtype(at::kComplexFloat); });
  EXPECT_TRUE(contains(msg, "safetensors")) << msg;
}

TEST(Safetensors, WritesWhatThePythonLibraryWrites) {
  // safetensors.torch.save_file({"a": torch.tensor([1., 2.])}, p, metadata={"format": "pt"})
  TempDir dir;
  const std::string path = dir.file("a.safetensors");
  write_safetensors(path, {{"a", at::tensor({1.0f, 2.0f})}}, {{"format", "pt"}});
  const std::string header =
      R"({"__metadata__":{"format":"pt"},"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})";
  EXPECT_EQ(read_bytes(path), st_bytes(header, raw(std::vector<float>{1.0f, 2.0f})));
}

TEST(Safetensors, ReadsAFileThePythonLibraryWrites) {
  // Layout as written by safetensors (Python): metadata first, header padded with spaces, tensors
  // back to back in the data section.
  const std::string header =
      R"({"__metadata__":{"format":"pt"},)"
      R"("w":{"dtype":"BF16","shape":[2,2],"data_offsets":[16,24]},)"
      R"("b":{"dtype":"I64","shape":[2],"data_offsets":[0,16]},)"
      R"("z":{"dtype":"F32","shape":[0],"data_offsets":[24,24]}})";
  // bf16 bits of 1.0, -2.0, 0.5, 3.0
  const std::string data = raw(std::vector<int64_t>{7, -9}) +
                           raw(std::vector<uint16_t>{0x3f80, 0xc000, 0x3f00, 0x4040});
  TempDir dir;
  const std::string path = dir.file("py.safetensors");
  write_bytes(path, st_bytes(header, data));

  const SafetensorsFile file(path);
  EXPECT_EQ(file.header().metadata.at("format"), "pt");
  EXPECT_EQ(file.names(), (std::vector<std::string>{"b", "w", "z"}));  // data order
  const at::Tensor w = file.tensor("w");
  EXPECT_EQ(w.scalar_type(), at::kBFloat16);
  EXPECT_TRUE(at::equal(w.to(at::kFloat), at::tensor({1.0f, -2.0f, 0.5f, 3.0f}).view({2, 2})));
  EXPECT_TRUE(at::equal(file.tensor("b"), at::tensor({int64_t{7}, int64_t{-9}})));
  EXPECT_EQ(file.tensor("z").numel(), 0);
}

TEST(Safetensors, UnalignedDataIsCopiedWithCorrectValues) {
  // Unpadded header of odd length and a tensor at an odd offset: the F32 data is misaligned in the
  // mapping, so the reader must copy it.
  const std::string header =
      R"({"pad":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},)"
      R"("x":{"dtype":"F32","shape":[3],"data_offsets":[1,13]}})";
  const std::vector<float> values = {1.5f, -2.25f, 1e30f};
  TempDir dir;
  const std::string path = dir.file("unaligned.safetensors");
  write_bytes(path, st_bytes(header, std::string(1, '\x07') + raw(values), /*pad=*/false));

  const SafetensorsFile file(path);
  const at::Tensor x = file.tensor("x");
  EXPECT_EQ(reinterpret_cast<uintptr_t>(x.data_ptr()) % alignof(float), 0u);
  EXPECT_EQ(tensor_bytes(x), raw(values));
  EXPECT_EQ(file.tensor("pad").item<uint8_t>(), 7);
}

TEST(Safetensors, TensorViewsOutliveTheFileObject) {
  TempDir dir;
  const std::string path = dir.file("t.safetensors");
  write_safetensors(path, {{"x", at::arange(1000, at::kFloat)}});
  at::Tensor x;
  {
    const SafetensorsFile file(path);
    x = file.tensor("x");
  }
  // The view keeps the mapping alive (ASan would flag a use after unmap as a crash).
  EXPECT_FLOAT_EQ(x[999].item<float>(), 999.0f);
}

TEST(Safetensors, AlignedDataIsAZeroCopyView) {
  TempDir dir;
  const std::string path = dir.file("t.safetensors");
  write_safetensors(path, {{"x", at::arange(16, at::kDouble)}});
  const SafetensorsFile file(path);
  EXPECT_EQ(file.tensor("x").data_ptr(), file.tensor("x").data_ptr());  // both views of the map
}

TEST(Safetensors, RewritingAFileWhileViewsOfItAreAlive) {
  // The rename gives `path` a new inode; views keep reading the old, still-mapped one.
  TempDir dir;
  const std::string path = dir.file("t.safetensors");
  write_safetensors(path, {{"x", at::arange(8, at::kFloat)}});
  const at::Tensor old_x = SafetensorsFile(path).tensor("x");
  write_safetensors(path, {{"x", old_x * 2}, {"y", old_x}});
  EXPECT_TRUE(at::equal(old_x, at::arange(8, at::kFloat)));
  EXPECT_TRUE(at::equal(SafetensorsFile(path).tensor("x"), at::arange(8, at::kFloat) * 2));
}

TEST(Safetensors, ZeroSizeTensorsAnywhereAndGapsAreAllowed) {
  const std::string header =
      R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
      R"("e":{"dtype":"F32","shape":[0,5],"data_offsets":[4,4]},)"
      R"("b":{"dtype":"I8","shape":[2],"data_offsets":[12,14]}})";
  TempDir dir;
  const std::string path = dir.file("gaps.safetensors");
  write_bytes(path, st_bytes(header, std::string(20, '\0')));
  const SafetensorsFile file(path);
  EXPECT_EQ(file.tensor("e").sizes(), (std::vector<int64_t>{0, 5}));
  EXPECT_EQ(file.tensor("b").numel(), 2);
}

TEST(Safetensors, EmptyHeaderObjectIsAValidEmptyFile) {
  TempDir dir;
  const std::string path = dir.file("none.safetensors");
  write_safetensors(path, {});
  const SafetensorsFile file(path);
  EXPECT_TRUE(file.names().empty());
  EXPECT_TRUE(read_safetensors(path).empty());
}

TEST(Safetensors, MissingTensorNamesFileAndKey) {
  TempDir dir;
  const std::string path = dir.file("t.safetensors");
  write_safetensors(path, {{"x", at::zeros({1})}});
  const SafetensorsFile file(path);
  const std::string msg = error_of<FormatError>([&] { file.info("nope"); });
  EXPECT_TRUE(contains(msg, path) && contains(msg, "nope")) << msg;
}

// ---- malformed files: one test per defect -------------------------------------------------------

const char* const kGoodEntry = R"("t":{"dtype":"F32","shape":[2],"data_offsets":[0,8]})";

TEST(SafetensorsBad, EmptyFile) { expect_bad_file("", {"0 bytes"}); }

TEST(SafetensorsBad, ShorterThanTheLengthField) { expect_bad_file("abc", {"3 bytes", "8-byte"}); }

TEST(SafetensorsBad, DataSectionShorterThanOffsets) {
  const std::string full = st_bytes(std::string("{") + kGoodEntry + "}", std::string(8, '\0'));
  expect_bad_file(full.substr(0, full.size() - 3), {"'t'", "[0, 8]", "5 bytes"});
}

TEST(SafetensorsBad, HeaderLengthBeyondTheFile) {
  expect_bad_file(le64(1000) + "{}", {"header length 1000", "past the end"});
}

TEST(SafetensorsBad, HugeHeaderLength) {
  expect_bad_file(le64(uint64_t{1} << 63) + "{}", {"exceeds the limit"});
  expect_bad_file(le64(100'000'001) + "{}", {"exceeds the limit"});
}

TEST(SafetensorsBad, MalformedJson) {
  expect_bad_file(st_bytes(R"({"t": {"dtype": )", ""), {"not valid JSON", "parse error"});
}

TEST(SafetensorsBad, InvalidUtf8InHeader) {
  expect_bad_file(st_bytes("{\"t\xff\": 1}", ""), {"not valid JSON"});
}

TEST(SafetensorsBad, NulByteEndsNothing) {
  // nlohmann would stop at the NUL and accept "{}"; the bytes after it must not be ignored.
  expect_bad_file(st_bytes(std::string("{}\0garbage", 10), ""), {"NUL byte at header offset 2"});
}

TEST(SafetensorsBad, HeaderNotAnObject) {
  expect_bad_file(st_bytes("[1, 2]", ""), {"array", "expected an object"});
}

TEST(SafetensorsBad, EntryNotAnObject) {
  expect_bad_file(st_bytes(R"({"t": 3})", ""), {"'t'", "number"});
}

TEST(SafetensorsBad, DuplicateTensorName) {
  expect_bad_file(st_bytes(std::string("{") + kGoodEntry + "," + kGoodEntry + "}",
                           std::string(8, '\0')),
                  {"'t'", "twice"});
}

TEST(SafetensorsBad, UnknownDtype) {
  expect_bad_file(st_bytes(R"({"t":{"dtype":"F8_E4M3","shape":[2],"data_offsets":[0,2]}})",
                           std::string(8, '\0')),
                  {"'t'", "F8_E4M3", "BF16"});
}

TEST(SafetensorsBad, DtypeWrongType) {
  expect_bad_file(st_bytes(R"({"t":{"dtype":4,"shape":[2],"data_offsets":[0,8]}})",
                           std::string(8, '\0')),
                  {"'t'", "\"dtype\"", "expected a string"});
}

TEST(SafetensorsBad, MissingShape) {
  expect_bad_file(st_bytes(R"({"t":{"dtype":"F32","data_offsets":[0,8]}})", std::string(8, '\0')),
                  {"'t'", "missing \"shape\""});
}

TEST(SafetensorsBad, NegativeDim) {
  expect_bad_file(st_bytes(R"({"t":{"dtype":"F32","shape":[2,-1],"data_offsets":[0,8]}})",
                           std::string(8, '\0')),
                  {"'t'", "negative dimension -1"});
}

TEST(SafetensorsBad, FractionalDim) {
  expect_bad_file(st_bytes(R"({"t":{"dtype":"F32","shape":[2.0],"data_offsets":[0,8]}})",
                           std::string(8, '\0')),
                  {"'t'", "shape[0]", "non-negative integer"});
}

TEST(SafetensorsBad, OffsetsNotAPair) {
  expect_bad_file(st_bytes(R"({"t":{"dtype":"F32","shape":[2],"data_offsets":[0,8,9]}})",
                           std::string(8, '\0')),
                  {"'t'", "3 elements", "[begin, end]"});
}

TEST(SafetensorsBad, OffsetsOutOfRange) {
  expect_bad_file(st_bytes(R"({"t":{"dtype":"F32","shape":[2],"data_offsets":[8,16]}})",
                           std::string(8, '\0')),
                  {"'t'", "[8, 16]", "8 bytes"});
}

TEST(SafetensorsBad, OffsetsReversed) {
  expect_bad_file(st_bytes(R"({"t":{"dtype":"F32","shape":[2],"data_offsets":[8,0]}})",
                           std::string(8, '\0')),
                  {"'t'", "[8, 0]", "reversed"});
}

TEST(SafetensorsBad, OverlappingTensors) {
  expect_bad_file(st_bytes(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                           R"("b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})",
                           std::string(12, '\0')),
                  {"'a'", "'b'", "overlap"});
}

TEST(SafetensorsBad, ByteSizeDoesNotMatchShapeAndDtype) {
  expect_bad_file(st_bytes(R"({"t":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}})",
                           std::string(12, '\0')),
                  {"'t'", "span 8 bytes", "needs 12 bytes"});
}

TEST(SafetensorsBad, NumelOverflow) {
  expect_bad_file(
      st_bytes(R"({"t":{"dtype":"F32","shape":[4294967296,4294967296,16],"data_offsets":[0,0]}})",
               ""),
      {"'t'", "overflow"});
  // Dimensions beyond int64 (what at::Tensor sizes hold), even with a zero elsewhere.
  expect_bad_file(st_bytes(R"({"t":{"dtype":"F32","shape":[0,18446744073709551615],)"
                           R"("data_offsets":[0,0]}})",
                           ""),
                  {"'t'", "int64"});
}

TEST(SafetensorsBad, MetadataValueNotAString) {
  expect_bad_file(st_bytes(R"({"__metadata__":{"format":1}})", ""),
                  {"__metadata__", "'format'", "expected a string"});
}

TEST(SafetensorsBad, BoolBytesOtherThanZeroOrOne) {
  TempDir dir;
  const std::string path = dir.file("bool.safetensors");
  write_bytes(path, st_bytes(R"({"m":{"dtype":"BOOL","shape":[3],"data_offsets":[0,3]}})",
                             std::string("\x01\x00\x02", 3)));
  const SafetensorsFile file(path);
  const std::string msg = error_of<FormatError>([&] { file.tensor("m"); });
  EXPECT_TRUE(contains(msg, path) && contains(msg, "'m'") && contains(msg, "byte 2")) << msg;
}

// ---- MappedFile ---------------------------------------------------------------------------------

TEST(MappedFile, EmptyFileHasNoBytes) {
  TempDir dir;
  write_bytes(dir.file("empty"), "");
  const MappedFile file(dir.file("empty"));
  EXPECT_EQ(file.size(), 0u);
}

TEST(MappedFile, MissingFileAndDirectoryAreIoErrors) {
  TempDir dir;
  std::string msg = error_of<IoError>([&] { MappedFile file(dir.file("missing")); });
  EXPECT_TRUE(contains(msg, dir.file("missing")) && contains(msg, "No such file")) << msg;
  msg = error_of<IoError>([&] { MappedFile file(dir.path()); });
  EXPECT_TRUE(contains(msg, dir.path()) && contains(msg, "not a regular file")) << msg;
}

// ---- TensorStore --------------------------------------------------------------------------------

// Two shards and their index, as transformers' save_pretrained lays them out.
void write_sharded(const TempDir& dir, const nlohmann::json& weight_map) {
  write_safetensors(dir.file("model-00001-of-00002.safetensors"),
                    {{"a.weight", at::arange(6, at::kFloat).view({2, 3})},
                     {"b.bias", at::ones({3}, at::kBFloat16)}});
  write_safetensors(dir.file("model-00002-of-00002.safetensors"),
                    {{"c.weight", at::full({2}, 7, at::kLong)}});
  write_json_file(dir.file("model.safetensors.index.json"),
                  {{"metadata", {{"total_size", 38}}}, {"weight_map", weight_map}});
}

const nlohmann::json kGoodWeightMap = {{"a.weight", "model-00001-of-00002.safetensors"},
                                       {"b.bias", "model-00001-of-00002.safetensors"},
                                       {"c.weight", "model-00002-of-00002.safetensors"}};

TEST(TensorStore, ReadsTwoShardsThroughTheIndex) {
  TempDir dir;
  write_sharded(dir, kGoodWeightMap);
  const TensorStore store = TensorStore::open_dir(dir.path());
  EXPECT_EQ(store.names(), (std::vector<std::string>{"a.weight", "b.bias", "c.weight"}));
  EXPECT_TRUE(contains(store.source(), "model.safetensors.index.json"));
  EXPECT_TRUE(at::equal(store.tensor("a.weight"), at::arange(6, at::kFloat).view({2, 3})));
  EXPECT_EQ(store.tensor("b.bias").scalar_type(), at::kBFloat16);
  EXPECT_TRUE(at::equal(store.tensor("c.weight"), at::full({2}, 7, at::kLong)));
  EXPECT_EQ(store.info("c.weight").dtype, StDtype::kI64);
  EXPECT_FALSE(store.contains("d"));
  const std::string msg = error_of<FormatError>([&] { store.tensor("d"); });
  EXPECT_TRUE(contains(msg, "'d'")) << msg;
}

TEST(TensorStore, MissingShardFile) {
  TempDir dir;
  nlohmann::json map = kGoodWeightMap;
  map["c.weight"] = "model-00003-of-00002.safetensors";
  write_sharded(dir, map);
  const std::string msg = error_of<IoError>([&] { TensorStore::open_dir(dir.path()); });
  EXPECT_TRUE(contains(msg, "model.safetensors.index.json") &&
              contains(msg, "model-00003-of-00002.safetensors"))
      << msg;
}

TEST(TensorStore, KeyListedButAbsentFromItsShard) {
  TempDir dir;
  nlohmann::json map = kGoodWeightMap;
  map["ghost"] = "model-00002-of-00002.safetensors";
  write_sharded(dir, map);
  const std::string msg = error_of<FormatError>([&] { TensorStore::open_dir(dir.path()); });
  EXPECT_TRUE(contains(msg, "'ghost'") && contains(msg, "model-00002-of-00002")) << msg;
}

TEST(TensorStore, TensorInShardButNotListed) {
  TempDir dir;
  nlohmann::json map = kGoodWeightMap;
  map.erase("b.bias");
  write_sharded(dir, map);
  const std::string msg = error_of<FormatError>([&] { TensorStore::open_dir(dir.path()); });
  EXPECT_TRUE(contains(msg, "'b.bias'") && contains(msg, "does not list")) << msg;
}

TEST(TensorStore, TensorListedInTheOtherShard) {
  TempDir dir;
  nlohmann::json map = kGoodWeightMap;
  map["b.bias"] = "model-00002-of-00002.safetensors";
  write_sharded(dir, map);
  const std::string msg = error_of<FormatError>([&] { TensorStore::open_dir(dir.path()); });
  EXPECT_TRUE(contains(msg, "'b.bias'") && contains(msg, "model-00001-of-00002")) << msg;
}

TEST(TensorStore, WeightMapWrongTypes) {
  TempDir dir;
  write_sharded(dir, nlohmann::json::array());
  std::string msg = error_of<FormatError>([&] { TensorStore::open_dir(dir.path()); });
  EXPECT_TRUE(contains(msg, "weight_map") && contains(msg, "index.json")) << msg;
  nlohmann::json map = kGoodWeightMap;
  map["a.weight"] = 1;
  write_sharded(dir, map);
  msg = error_of<FormatError>([&] { TensorStore::open_dir(dir.path()); });
  EXPECT_TRUE(contains(msg, "'a.weight'") && contains(msg, "number")) << msg;
  map["a.weight"] = "../elsewhere.safetensors";
  write_sharded(dir, map);
  msg = error_of<FormatError>([&] { TensorStore::open_dir(dir.path()); });
  EXPECT_TRUE(contains(msg, "../elsewhere.safetensors")) << msg;
}

TEST(TensorStore, SingleFileAndOnlySafetensorsFile) {
  TempDir dir;
  write_safetensors(dir.file("model.safetensors"), {{"x", at::ones({2})}});
  write_safetensors(dir.file("other.safetensors"), {{"y", at::ones({2})}});
  EXPECT_EQ(TensorStore::open_dir(dir.path()).names(), std::vector<std::string>{"x"});

  TempDir lone;
  write_safetensors(lone.file("weights.safetensors"), {{"y", at::ones({2})}});
  EXPECT_EQ(TensorStore::open_dir(lone.path()).names(), std::vector<std::string>{"y"});

  fs::remove_all(dir.file("model.safetensors"));
  write_safetensors(dir.file("third.safetensors"), {{"z", at::ones({2})}});
  const std::string msg = error_of<FormatError>([&] { TensorStore::open_dir(dir.path()); });
  EXPECT_TRUE(contains(msg, dir.path()) && contains(msg, "several")) << msg;
}

TEST(TensorStore, EmptyOrMissingDirectoryIsIoError) {
  TempDir dir;
  std::string msg = error_of<IoError>([&] { TensorStore::open_dir(dir.path()); });
  EXPECT_TRUE(contains(msg, dir.path())) << msg;
  msg = error_of<IoError>([&] { TensorStore::open_dir(dir.file("nope")); });
  EXPECT_TRUE(contains(msg, dir.file("nope"))) << msg;
}

// ---- atomic writes ------------------------------------------------------------------------------

TEST(AtomicWrite, ReplacesAnExistingFile) {
  TempDir dir;
  const std::string path = dir.file("w.safetensors");
  write_bytes(path, "old contents");
  write_safetensors(path, {{"x", at::full({3}, 2.0f)}});
  EXPECT_TRUE(at::equal(SafetensorsFile(path).tensor("x"), at::full({3}, 2.0f)));
  EXPECT_EQ(files_in(dir.path()), std::vector<std::string>{"w.safetensors"});
}

TEST(AtomicWrite, MissingDirectoryIsIoErrorAndLeavesNothing) {
  TempDir dir;
  const std::string path = dir.file("missing/w.safetensors");
  const std::string msg =
      error_of<IoError>([&] { write_safetensors(path, {{"x", at::ones({1})}}); });
  EXPECT_TRUE(contains(msg, path) && contains(msg, "No such file")) << msg;
  EXPECT_TRUE(files_in(dir.path()).empty());
}

TEST(AtomicWrite, UnsupportedDtypeLeavesOldFileAndNoTemp) {
  TempDir dir;
  const std::string path = dir.file("w.safetensors");
  write_bytes(path, "old contents");
  const std::string msg = error_of<ArgumentError>([&] {
    write_safetensors(path, {{"ok", at::ones({1})}, {"c", at::ones({2}, at::kComplexFloat)}});
  });
  EXPECT_TRUE(contains(msg, path) && contains(msg, "'c'")) << msg;
  EXPECT_EQ(read_bytes(path), "old contents");
  EXPECT_EQ(files_in(dir.path()), std::vector<std::string>{"w.safetensors"});
}

TEST(AtomicWrite, FailureMidStreamLeavesOldFileAndNoTemp) {
  TempDir dir;
  const std::string path = dir.file("w.bin");
  write_bytes(path, "old contents");
  EXPECT_THROW(write_file_atomic_streamed(path,
                                          [](const ByteSink& sink) {
                                            sink("partial", 7);
                                            throw std::runtime_error("producer failed");
                                          }),
               std::runtime_error);
  EXPECT_EQ(read_bytes(path), "old contents");
  EXPECT_EQ(files_in(dir.path()), std::vector<std::string>{"w.bin"});
}

TEST(AtomicWrite, RenameOntoADirectoryFailsCleanly) {
  TempDir dir;
  fs::create_directories(dir.file("target"));
  const std::string msg = error_of<IoError>([&] { write_file_atomic(dir.file("target"), "x"); });
  EXPECT_TRUE(contains(msg, dir.file("target")) && contains(msg, "rename")) << msg;
  EXPECT_EQ(files_in(dir.path()), std::vector<std::string>{"target"});
}

TEST(AtomicWrite, DuplicateNamesAreArgumentErrors) {
  TempDir dir;
  const std::string path = dir.file("w.safetensors");
  const std::string msg = error_of<ArgumentError>(
      [&] { write_safetensors(path, {{"x", at::ones({1})}, {"x", at::zeros({1})}}); });
  EXPECT_TRUE(contains(msg, "'x'") && contains(msg, "duplicate")) << msg;
  EXPECT_TRUE(files_in(dir.path()).empty());
}

// ---- JSON files ---------------------------------------------------------------------------------

TEST(JsonFile, RoundTripIsPrettyPrinted) {
  TempDir dir;
  const std::string path = dir.file("c.json");
  const nlohmann::json value = {{"hidden_size", 64}, {"rope_scaling", {{"mrope_section", {1, 2}}}}};
  write_json_file(path, value);
  EXPECT_EQ(read_bytes(path), value.dump(2) + "\n");
  EXPECT_EQ(read_json_file(path), value);
}

TEST(JsonFile, MissingIsIoErrorMalformedIsFormatError) {
  TempDir dir;
  std::string msg = error_of<IoError>([&] { read_json_file(dir.file("none.json")); });
  EXPECT_TRUE(contains(msg, dir.file("none.json"))) << msg;
  msg = error_of<IoError>([&] { read_json_file(dir.path()); });
  EXPECT_TRUE(contains(msg, dir.path())) << msg;
  write_bytes(dir.file("bad.json"), "{\n  \"a\": 1,\n  \"b\": }\n");
  msg = error_of<FormatError>([&] { read_json_file(dir.file("bad.json")); });
  EXPECT_TRUE(contains(msg, dir.file("bad.json")) && contains(msg, "line 3")) << msg;
  write_bytes(dir.file("nul.json"), std::string("{}\0{", 4));
  msg = error_of<FormatError>([&] { read_json_file(dir.file("nul.json")); });
  EXPECT_TRUE(contains(msg, dir.file("nul.json")) && contains(msg, "NUL")) << msg;
}

}  // namespace
}  // namespace vlm2mla::io
