// Calibration data for conversion (METHOD.md sections 3-4): the forwards whose activations the
// observers (rope_scores.h, and the whitening statistics next) see.
//
// Two forms, told apart by the extension:
//  - an inputs .safetensors in the `logits` format (input_ids, attention_mask, position_ids,
//    pixel_values, image_sizes, image_grid_thw): one forward of the whole batch; no tokenizer needed.
//  - a .json dataset in the LLaVA-Instruct / LLaVA-NeXT-Data style: a list of samples
//      {"id": ..., "image": "rel/path.jpg" | ["a.jpg", "b.png"] (optional),
//       "conversations": [{"from": "human", "value": "<image>\nWhat is ...?"},
//                         {"from": "gpt", "value": "..."}, ...]}
//    one forward per sample (batch 1). Roles: human/user -> user, gpt/assistant -> assistant,
//    system -> system. Image paths are relative to the JSON file's directory (absolute allowed).
//    Each "<image>" mark takes the next image, in order; a turn's marks are removed, its text
//    stripped, and its images placed before its text (LLaVA's own preprocessing; the LLaVA
//    templates render a message's images first anyway, and Qwen2.5-VL's renders them where the
//    content list puts them, here first). A sample with images but no mark gets them all at the
//    start of its first user turn (LLaVA's convention). The whole conversation, assistant turns
//    included, is rendered with the model family's chat template without a generation prompt
//    (generate/chat_inputs.h), tokenized with the model directory's tokenizer, and its images
//    preprocessed with preprocessor_config.json and expanded into their tokens. Images are decoded
//    when a forward asks for them (get), not when the file is opened.
//
// Sampling: num_calib = 0 takes every sample (every row); num_calib = k takes k distinct samples
// chosen with std::mt19937_64(seed) by a partial Fisher-Yates shuffle written here (the same
// selection with every standard library), then keeps them in file order. A k larger than the file
// holds is an ArgumentError (never silently fewer). Only the selected samples are converted and
// checked (roles, marks, image files), so one bad sample elsewhere in a large file does not stop a
// run that does not use it; the file itself must be a non-empty JSON list.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "models/model.h"
#include "models/observer.h"

namespace vlm2mla::convert {

struct CalibOptions {
  int64_t num_calib = 0;   // 0 = all samples
  uint64_t seed = 0;       // selection of num_calib samples out of the file (deterministic)
};

class CalibrationData {
 public:
  // path: an inputs .safetensors in the `logits` format (one forward), or a .json LLaVA-style dataset.
  // model_dir: where tokenizer files and preprocessor_config.json are (JSON datasets only).
  // `model` must outlive the data (get renders with its image token counts). Errors name the file
  // and, for datasets, the sample (index and id): FormatError for a malformed file or sample,
  // IoError for a missing file or image, ArgumentError for bad options, for num_calib rows of a
  // batch with images (select samples of a dataset instead) and, in a build without tokenizers
  // (VLM2MLA_TOKENIZER=OFF), for any .json dataset.
  static CalibrationData open(const Model& model, const std::string& model_dir, const std::string& path,
                              const CalibOptions& options);
  int64_t size() const;                 // number of forward passes
  ModelInputs get(int64_t i) const;     // the i-th forward's inputs (loaded lazily: images decoded on demand)
  std::string describe() const;         // e.g. "12 of 665 conversations from data.json (seed 0)"

  // The i-th forward's text after templating (datasets; "" for an inputs file).
  std::string rendered(int64_t i) const;
  // Which samples of the file the forwards take (dataset samples, or rows of the inputs batch), in
  // the order they run: ascending file positions.
  const std::vector<int64_t>& selected() const;

  struct Source;  // the file's selected samples; defined in calib_data.cpp

 private:
  explicit CalibrationData(std::shared_ptr<const Source> source) : source_(std::move(source)) {}
  std::shared_ptr<const Source> source_;
};

// Calls `each` with every calibration forward's inputs (the `logits` tensors), in order: what the
// converter and the studies take, so that a file, a dataset or inputs built in memory serve alike.
using CalibrationInputs = std::function<void(const std::function<void(const ModelInputs&)>& each)>;
// Every forward of `data` (kept alive by the returned function).
CalibrationInputs calibration_inputs(std::shared_ptr<const CalibrationData> data);
// One forward of the given inputs.
CalibrationInputs calibration_inputs(ModelInputs one_batch);

struct CalibrationRun {
  std::string label = "calibration";  // progress lines: "<label> 3/64: 812 tokens (576 image), 1.2 s"
  int64_t forwards = 0;               // how many the inputs hold, for "3/64" (0: unknown, "3:")
  // The observers' image mask: false, the model's image tokens; true, every visual token (md's image
  // set: Qwen2.5-VL's vision start/end and pads too, Model::visual_token_ids).
  bool visual_set = false;
};

// Runs every calibration forward through model.decoder().forward_hidden(..., observer) with
// Prompt = model.prepare(inputs, /*forward_semantics=*/true) and its decoder_input(); logs progress
// after the first forward, at least every few seconds and at the end; returns the real tokens seen.
int64_t run_calibration(const Model& model, const CalibrationInputs& inputs, DecoderObserver& observer,
                        const CalibrationRun& run);
// The same over a calibration file ("calibration 3/64: ...").
int64_t run_calibration(const Model& model, const CalibrationData& data, DecoderObserver& observer);

// k distinct indices of [0, n), ascending, chosen by std::mt19937_64(seed) and a partial
// Fisher-Yates shuffle with rejection-sampled bounded integers (portable across standard
// libraries); k = 0 or k = n: all of them. ArgumentError (naming `what`) for k < 0, k > n or n < 1.
std::vector<int64_t> select_calibration_samples(int64_t n, int64_t k, uint64_t seed, const std::string& what);

}  // namespace vlm2mla::convert
