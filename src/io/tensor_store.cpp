#include "io/tensor_store.h"

#include <algorithm>
#include <set>

#include "core/error.h"
#include "core/fs.h"
#include "io/json_file.h"

namespace vlm2mla::io {

namespace {

constexpr const char* kIndexName = "model.safetensors.index.json";
constexpr const char* kSingleName = "model.safetensors";

bool is_file(const std::string& path) { return fs::is_regular_file(path); }

// Shard names come from a file we did not write; keep them inside the checkpoint directory.
bool is_safe_relative(const std::string& name) {
  if (name.empty()) return false;
  if (name.front() == '/') return false;
  size_t start = 0;
  while (start <= name.size()) {
    size_t end = name.find('/', start);
    if (end == std::string::npos) end = name.size();
    if (name.compare(start, end - start, "..") == 0 && end - start == 2) return false;
    start = end + 1;
  }
  return true;
}

void open_index(const std::string& dir, const std::string& index_path,
                       std::vector<SafetensorsFile>* files, std::map<std::string, size_t>* where) {
  const std::string& index = index_path;
  const nlohmann::json root = read_json_file(index);
  VLM2MLA_CHECK(root.is_object(), FormatError, "index file '", index, "' is a JSON ",
                root.type_name(), ", expected an object with a \"weight_map\"");
  auto map_it = root.find("weight_map");
  VLM2MLA_CHECK(map_it != root.end(), FormatError, "index file '", index,
                "' has no \"weight_map\"");
  VLM2MLA_CHECK(map_it->is_object(), FormatError, "index file '", index, "': \"weight_map\" is a ",
                map_it->type_name(), ", expected an object of tensor name -> shard file");

  // Each shard is opened once, in order of first mention; where_ then maps names to shards.
  std::map<std::string, size_t> shard_index;
  std::vector<std::string> shard_names;
  std::map<std::string, std::string> shard_of;  // tensor -> shard file name
  for (auto it = map_it->begin(); it != map_it->end(); ++it) {
    VLM2MLA_CHECK(it->is_string(), FormatError, "index file '", index, "': tensor '", it.key(),
                  "' maps to a ", it->type_name(), ", expected a shard file name");
    const std::string& shard = it->get_ref<const std::string&>();
    VLM2MLA_CHECK(is_safe_relative(shard), FormatError, "index file '", index, "': tensor '",
                  it.key(), "' maps to shard '", shard,
                  "', expected a relative path inside the directory");
    shard_of.emplace(it.key(), shard);
    if (shard_index.count(shard) == 0) {
      const std::string shard_path = fs::join(dir, shard);
      VLM2MLA_CHECK(is_file(shard_path), IoError, "index file '", index,
                    "' names shard '", shard, "' (for tensor '", it.key(), "'), but '",
                    shard_path, "' does not exist or is not a file");
      shard_index.emplace(shard, shard_names.size());
      shard_names.push_back(shard);
    }
  }

  for (const std::string& shard : shard_names) {
    files->emplace_back(fs::join(dir, shard));
    const SafetensorsFile& file = files->back();
    const size_t file_index = files->size() - 1;
    for (const StTensorInfo& info : file.header().tensors) {
      // A tensor the index does not place in this shard means index and shards disagree; loading
      // it anyway (or dropping it) would hide a broken checkpoint.
      auto listed = shard_of.find(info.name);
      VLM2MLA_CHECK(listed != shard_of.end(), FormatError, "shard '", file.path(),
                    "' contains tensor '", info.name, "', which index file '", index,
                    "' does not list");
      VLM2MLA_CHECK(listed->second == shard, FormatError, "shard '", file.path(),
                    "' contains tensor '", info.name, "', but index file '", index,
                    "' places it in shard '", listed->second, "'");
      where->emplace(info.name, file_index);
    }
  }
  for (const auto& [name, shard] : shard_of) {
    VLM2MLA_CHECK(where->count(name) != 0, FormatError, "index file '", index, "' lists tensor '",
                  name, "' in shard '", shard, "', but '", fs::join(dir, shard),
                  "' has no such tensor");
  }
}

}  // namespace

TensorStore TensorStore::open_dir(const std::string& dir) {
  VLM2MLA_CHECK(fs::is_directory(dir), IoError, "checkpoint directory '", dir,
                "' does not exist or is not a directory");

  const std::string index_path = fs::join(dir, kIndexName);
  if (is_file(index_path)) {
    TensorStore store;
    store.source_ = index_path;
    open_index(dir, index_path, &store.files_, &store.where_);
    return store;
  }
  const std::string single = fs::join(dir, kSingleName);
  if (is_file(single)) return open_file(single);

  std::vector<std::string> candidates;
  for (const std::string& name : fs::list_directory(dir)) {
    const std::string path = fs::join(dir, name);
    if (fs::extension(name) == ".safetensors" && is_file(path)) candidates.push_back(path);
  }
  VLM2MLA_CHECK(!candidates.empty(), IoError, "checkpoint directory '", dir, "' has no ",
                kIndexName, ", no ", kSingleName, " and no other *.safetensors file");
  std::sort(candidates.begin(), candidates.end());
  if (candidates.size() > 1) {
    std::string list;
    for (const std::string& c : candidates) list += (list.empty() ? "'" : ", '") + c + "'";
    throw FormatError(detail::concat("checkpoint directory '", dir, "' has several *.safetensors "
                                     "files but no ", kIndexName, " to say how they combine: ",
                                     list));
  }
  return open_file(candidates.front());
}

TensorStore TensorStore::open_file(const std::string& path) {
  TensorStore store;
  store.source_ = path;
  store.files_.emplace_back(path);
  for (const StTensorInfo& info : store.files_.front().header().tensors) {
    store.where_.emplace(info.name, 0);  // names are unique: the header parser rejects duplicates
  }
  return store;
}

std::vector<std::string> TensorStore::names() const {
  std::vector<std::string> names;
  names.reserve(where_.size());
  for (const auto& [name, file] : where_) names.push_back(name);
  return names;
}

bool TensorStore::contains(const std::string& name) const { return where_.count(name) != 0; }

const StTensorInfo& TensorStore::info(const std::string& name) const {
  auto it = where_.find(name);
  VLM2MLA_CHECK(it != where_.end(), FormatError, "checkpoint '", source_, "' has no tensor '",
                name, "'");
  return files_[it->second].info(name);
}

at::Tensor TensorStore::tensor(const std::string& name) const {
  auto it = where_.find(name);
  VLM2MLA_CHECK(it != where_.end(), FormatError, "checkpoint '", source_, "' has no tensor '",
                name, "'");
  return files_[it->second].tensor(name);
}

}  // namespace vlm2mla::io
