#include "convert/calib_data.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <limits>
#include <numeric>
#include <random>

#include "core/error.h"
#include "core/fs.h"
#include "core/log.h"
#include "io/json_file.h"
#include "io/safetensors.h"
#ifdef VLM2MLA_WITH_TOKENIZER
#include "generate/chat_inputs.h"
#include "models/mla_attention.h"
#endif

namespace vlm2mla::convert {

std::vector<int64_t> select_calibration_samples(int64_t n, int64_t k, uint64_t seed, const std::string& what) {
  VLM2MLA_CHECK(n >= 1, ArgumentError, "calibration: there are no ", what);
  VLM2MLA_CHECK(k >= 0, ArgumentError, "calibration: num_calib must be >= 0 (0 = all), got ", k);
  VLM2MLA_CHECK(k <= n, ArgumentError, "calibration: num_calib is ", k, " but there are only ", n, " ", what,
                " (give at most ", n, ", or 0 for all)");
  std::vector<int64_t> idx(static_cast<size_t>(n));
  std::iota(idx.begin(), idx.end(), int64_t{0});
  if (k == 0 || k == n) return idx;
  // Partial Fisher-Yates: position i takes a uniform pick of the positions not yet taken. The bounded
  // integers are drawn by rejection (std::uniform_int_distribution differs between libraries).
  std::mt19937_64 rng(seed);
  auto below = [&rng](uint64_t bound) {  // uniform in [0, bound)
    const uint64_t max = std::numeric_limits<uint64_t>::max();
    const uint64_t excess = (max % bound + 1) % bound;  // 2^64 mod bound: the values to reject
    uint64_t x;
    do {
      x = rng();
    } while (x > max - excess);
    return x % bound;
  };
  for (int64_t i = 0; i < k; ++i) {
    const int64_t j = i + static_cast<int64_t>(below(static_cast<uint64_t>(n - i)));
    std::swap(idx[static_cast<size_t>(i)], idx[static_cast<size_t>(j)]);
  }
  idx.resize(static_cast<size_t>(k));
  std::sort(idx.begin(), idx.end());  // run in file order
  return idx;
}

struct CalibrationData::Source {
  bool dataset = false;          // a .json dataset, else an inputs .safetensors
  std::string path;
  int64_t total = 0;             // samples (rows) in the file
  CalibOptions options;
  std::vector<int64_t> selected;
  ModelInputs batch;             // inputs file: the selected rows
#ifdef VLM2MLA_WITH_TOKENIZER
  struct Conversation {
    std::string where;           // "data.json: sample 3 (id "x")", for messages
    std::vector<ChatMessage> messages;
    std::vector<std::string> images;  // resolved paths, in order
  };
  std::vector<Conversation> conversations;
  std::shared_ptr<const ChatInputBuilder> builder;
#endif
};

namespace {

CalibrationData::Source read_inputs(const std::string& path, const CalibOptions& options) {
  CalibrationData::Source src;
  src.path = path;
  src.options = options;
  src.batch = ModelInputs::from_tensors(io::read_safetensors(path), path);
  ModelInputs& in = src.batch;
  src.total = in.input_ids.size(0);
  src.selected =
      select_calibration_samples(src.total, options.num_calib, options.seed, "rows in the batch of " + path);
  if (static_cast<int64_t>(src.selected.size()) < src.total) {
    VLM2MLA_CHECK(!in.pixel_values.defined() && !in.pixel_values_videos.defined(), ArgumentError, path,
                  ": num_calib ", options.num_calib,
                  " would select rows of a batch with images or videos (pixel_values, pixel_values_videos), "
                  "which is not supported; use "
                  "num_calib 0 for the whole batch, or a .json dataset to select samples from");
    const at::Tensor rows = at::tensor(src.selected, at::kLong);
    in.input_ids = in.input_ids.index_select(0, rows);
    if (in.attention_mask.defined()) in.attention_mask = in.attention_mask.index_select(0, rows);
    // [b, s] or [3, b, s]: the batch is the second-to-last dimension
    if (in.position_ids.defined()) in.position_ids = in.position_ids.index_select(in.position_ids.dim() - 2, rows);
  }
  return src;
}

#ifdef VLM2MLA_WITH_TOKENIZER

using nlohmann::json;
using Conversation = CalibrationData::Source::Conversation;

const char* const kImageMark = "<image>";

std::string strip(const std::string& s) {
  const char* ws = " \t\n\r\f\v";
  const size_t a = s.find_first_not_of(ws);
  if (a == std::string::npos) return "";
  return s.substr(a, s.find_last_not_of(ws) - a + 1);
}

std::string parent_directory(const std::string& path) {
  const size_t slash = path.find_last_of('/');
  if (slash == std::string::npos) return ".";
  return slash == 0 ? "/" : path.substr(0, slash);
}

// One sample of a LLaVA-style list -> the messages and image files of one forward.
Conversation convert_sample(const json& s, int64_t index, const std::string& dir, const std::string& origin) {
  Conversation c;
  c.where = detail::concat(origin, ": sample ", index);
  VLM2MLA_CHECK(s.is_object(), FormatError, c.where, ": expected an object with \"conversations\", got ",
                s.type_name());
  if (s.contains("id")) c.where += " (id " + s.at("id").dump() + ")";

  if (s.contains("image") && !s.at("image").is_null()) {
    const json& im = s.at("image");
    std::vector<std::string> names;
    if (im.is_string()) {
      names.push_back(im.get<std::string>());
    } else if (im.is_array()) {
      for (const json& e : im) {
        VLM2MLA_CHECK(e.is_string(), FormatError, c.where, ": \"image\" must be a path or a list of paths, found ",
                      e.dump());
        names.push_back(e.get<std::string>());
      }
    } else {
      throw FormatError(detail::concat(c.where, ": \"image\" must be a path or a list of paths, got ", im.dump()));
    }
    for (const auto& name : names) {
      const std::string resolved = !name.empty() && name[0] == '/' ? name : fs::join(dir, name);
      VLM2MLA_CHECK(fs::is_regular_file(resolved), IoError, c.where, ": image file '", name, "' not found (",
                    resolved, "; relative paths start at the JSON file's directory)");
      c.images.push_back(resolved);
    }
  }

  VLM2MLA_CHECK(s.contains("conversations") && s.at("conversations").is_array(), FormatError, c.where,
                ": missing \"conversations\" (expected a list of {\"from\", \"value\"} turns)");
  const json& turns = s.at("conversations");
  VLM2MLA_CHECK(!turns.empty(), FormatError, c.where, ": \"conversations\" is empty");
  int64_t marks = 0;
  for (size_t j = 0; j < turns.size(); ++j) {
    const json& t = turns[j];
    VLM2MLA_CHECK(t.is_object() && t.contains("from") && t.at("from").is_string() && t.contains("value") &&
                      t.at("value").is_string(),
                  FormatError, c.where, ": turn ", j, " must be {\"from\": string, \"value\": string}, got ",
                  t.dump());
    const std::string from = t.at("from").get<std::string>();
    ChatMessage m;
    if (from == "human" || from == "user") {
      m.role = "user";
    } else if (from == "gpt" || from == "assistant") {
      m.role = "assistant";
    } else if (from == "system") {
      m.role = "system";
    } else {
      throw FormatError(detail::concat(c.where, ": turn ", j, ": unknown role '", from,
                                       "' in \"from\" (expected human, user, gpt, assistant or system)"));
    }
    m.text = t.at("value").get<std::string>();
    for (size_t pos = m.text.find(kImageMark); pos != std::string::npos; pos = m.text.find(kImageMark, pos)) {
      m.text.erase(pos, std::char_traits<char>::length(kImageMark));
      m.image_at.push_back(pos);
      ++m.images;
    }
    if (m.images > 0) {  // strip the turn, keeping each image's place in the stripped text
      const size_t first = m.text.find_first_not_of(" \t\n\r\f\v");
      const size_t lead = first == std::string::npos ? m.text.size() : first;
      m.text = strip(m.text);
      for (size_t& at : m.image_at) at = std::min(at > lead ? at - lead : 0, m.text.size());
    }
    marks += m.images;
    c.messages.push_back(std::move(m));
  }

  const int64_t n = static_cast<int64_t>(c.images.size());
  VLM2MLA_CHECK(marks <= n, FormatError, c.where, ": ", marks, " <image> mark(s) but ", n, " image(s)");
  VLM2MLA_CHECK(marks == n || marks == 0, FormatError, c.where, ": ", n, " images but ", marks,
                " <image> mark(s) (give one mark per image, or none to put every image at the start of the "
                "first user turn)");
  if (marks == 0 && n > 0) {  // LLaVA's convention: the image opens the first human turn
    auto first_user = std::find_if(c.messages.begin(), c.messages.end(),
                                   [](const ChatMessage& m) { return m.role == "user"; });
    VLM2MLA_CHECK(first_user != c.messages.end(), FormatError, c.where, ": ", n,
                  " image(s) without <image> marks and no user turn to put them in");
    first_user->images = n;
  }
  return c;
}

CalibrationData::Source read_dataset(const Model& model, const std::string& model_dir, const std::string& path,
                                     const CalibOptions& options) {
  CalibrationData::Source src;
  src.dataset = true;
  src.path = path;
  src.options = options;
  const json root = io::read_json_file(path);
  VLM2MLA_CHECK(root.is_array(), FormatError, path, ": expected a JSON list of samples ({\"image\", "
                "\"conversations\"}), got ", root.type_name());
  VLM2MLA_CHECK(!root.empty(), FormatError, path, ": the dataset is empty (no samples)");
  src.total = static_cast<int64_t>(root.size());
  src.selected = select_calibration_samples(src.total, options.num_calib, options.seed, "samples in " + path);
  const std::string dir = parent_directory(path);
  for (int64_t index : src.selected) {
    Conversation c = convert_sample(root[static_cast<size_t>(index)], index, dir, path);
    VLM2MLA_CHECK(c.images.empty() || model.image_token_id() >= 0, ArgumentError, c.where, ": has ",
                  c.images.size(), " image(s), but ", model.text_config().architecture,
                  " is a text-only model");
    src.conversations.push_back(std::move(c));
  }
  src.builder = std::make_shared<const ChatInputBuilder>(model, model_dir);
  return src;
}

// Rethrows the error being handled with `where: ` in front, keeping its type.
[[noreturn]] void rethrow_in(const std::string& where) {
  try {
    throw;
  } catch (const IoError& e) {
    throw IoError(where + ": " + e.what());
  } catch (const FormatError& e) {
    throw FormatError(where + ": " + e.what());
  } catch (const ArgumentError& e) {
    throw ArgumentError(where + ": " + e.what());
  }
}

#endif  // VLM2MLA_WITH_TOKENIZER

}  // namespace

CalibrationData CalibrationData::open(const Model& model, const std::string& model_dir, const std::string& path,
                                      const CalibOptions& options) {
  const std::string ext = fs::extension(path);
  if (ext == ".safetensors") return CalibrationData(std::make_shared<const Source>(read_inputs(path, options)));
  if (ext == ".json") {
#ifdef VLM2MLA_WITH_TOKENIZER
    return CalibrationData(std::make_shared<const Source>(read_dataset(model, model_dir, path, options)));
#else
    (void)model, (void)model_dir;
    throw ArgumentError(path + ": JSON calibration datasets need the tokenizers, but this vlm2mla was built "
                               "without tokenizers (-DVLM2MLA_TOKENIZER=OFF); give an inputs .safetensors");
#endif
  }
  throw ArgumentError(detail::concat(path, ": unknown calibration data '", ext,
                                     "' (expected an inputs .safetensors or a LLaVA-style .json dataset)"));
}

int64_t CalibrationData::size() const {
#ifdef VLM2MLA_WITH_TOKENIZER
  if (source_->dataset) return static_cast<int64_t>(source_->conversations.size());
#endif
  return 1;
}

ModelInputs CalibrationData::get(int64_t i) const {
  VLM2MLA_CHECK(i >= 0 && i < size(), ArgumentError, "calibration data ", source_->path, ": forward ", i,
                " is out of range [0, ", size(), ")");
#ifdef VLM2MLA_WITH_TOKENIZER
  if (source_->dataset) {
    const auto& c = source_->conversations[static_cast<size_t>(i)];
    try {
      return source_->builder->chat(c.messages, c.images, /*add_generation_prompt=*/false).inputs;
    } catch (const Error&) {
      rethrow_in(c.where);
    }
  }
#endif
  return source_->batch;
}

std::string CalibrationData::rendered(int64_t i) const {
  VLM2MLA_CHECK(i >= 0 && i < size(), ArgumentError, "calibration data ", source_->path, ": forward ", i,
                " is out of range [0, ", size(), ")");
#ifdef VLM2MLA_WITH_TOKENIZER
  if (source_->dataset) {
    const auto& c = source_->conversations[static_cast<size_t>(i)];
    return source_->builder->format(c.messages, /*add_generation_prompt=*/false).text;
  }
#endif
  return "";
}

const std::vector<int64_t>& CalibrationData::selected() const { return source_->selected; }

std::string CalibrationData::describe() const {
  const Source& s = *source_;
  const int64_t k = static_cast<int64_t>(s.selected.size());
  const std::string of = k < s.total ? detail::concat(k, " of ") : "";
  const std::string how = k < s.total ? detail::concat(" (seed ", s.options.seed, ")") : " (all)";
  const char* unit = s.dataset ? (s.total == 1 ? " conversation" : " conversations")
                               : (s.total == 1 ? " row" : " rows");
  return detail::concat(s.dataset ? "" : "1 batch of ", of, s.total, unit, " from ", s.path, how);
}

namespace {
void each_forward(const CalibrationData& data, const std::function<void(const ModelInputs&)>& each) {
  for (int64_t i = 0; i < data.size(); ++i) each(data.get(i));
}
}  // namespace

CalibrationInputs calibration_inputs(std::shared_ptr<const CalibrationData> data) {
  return [data](const std::function<void(const ModelInputs&)>& each) { each_forward(*data, each); };
}

CalibrationInputs calibration_inputs(ModelInputs one_batch) {
  return [in = std::move(one_batch)](const std::function<void(const ModelInputs&)>& each) { each(in); };
}

int64_t run_calibration(const Model& model, const CalibrationInputs& inputs, DecoderObserver& observer,
                        const CalibrationRun& run) {
  using Clock = std::chrono::steady_clock;
  const auto every = std::chrono::seconds(3);
  const auto start = Clock::now();
  auto last = start;
  const std::vector<int64_t> visual = run.visual_set ? model.visual_token_ids() : std::vector<int64_t>{};
  int64_t forwards = 0, tokens = 0, image_tokens = 0;
  auto progress = [&](bool force) {
    const auto now = Clock::now();
    if (!force && now - last < every) return;
    const double secs = std::chrono::duration<double>(now - start).count();
    VLM2MLA_INFO(run.label, " ", forwards, run.forwards > 0 ? "/" + std::to_string(run.forwards) : std::string(),
                 ": ", tokens, " tokens (", image_tokens, " image), ", std::round(secs * 10) / 10, " s");
    last = now;
  };
  inputs([&](const ModelInputs& in) {
    const Prompt p = model.prepare(in, /*forward_semantics=*/true);
    DecoderInput d = p.decoder_input();
    if (!visual.empty()) d.image_mask = visual_token_mask(visual, p.input_ids);
    model.decoder().forward_hidden(d, nullptr, &observer);
    const at::Tensor valid = p.attention_mask.ne(0);  // [b, s]
    tokens += valid.sum().item<int64_t>();
    if (d.image_mask.defined()) image_tokens += (d.image_mask.to(valid.device()) & valid).sum().item<int64_t>();
    ++forwards;
    progress(/*force=*/forwards == 1 || forwards == run.forwards);
  });
  if (forwards != run.forwards && forwards > 1) progress(/*force=*/true);  // the end, when not yet logged
  return tokens;
}

int64_t run_calibration(const Model& model, const CalibrationData& data, DecoderObserver& observer) {
  // The caller keeps `data` alive for the call: a non-owning view serves.
  const CalibrationInputs inputs = [&data](const std::function<void(const ModelInputs&)>& each) {
    each_forward(data, each);
  };
  return run_calibration(model, inputs, observer, CalibrationRun{"calibration", data.size(), false});
}

}  // namespace vlm2mla::convert
