// Qwen2.5-VL's vision transformer and its M-RoPE position ids.
//
// Vision: patches of temporal_patch_size x patch_size^2 pixels (a 3-D conv = one matmul), 2-D RoPE
// (height and width angles) in the merge-window order, window attention (windows of
// window_size / patch_size patches a side) except in fullatt_block_indexes, RMSNorm, SwiGLU MLPs,
// then a PatchMerger (2x2 patches -> one LM token). Weights under "visual." (Hub) or "model.visual.".
#pragma once

#include <ATen/ATen.h>

#include <set>
#include <string>
#include <vector>

#include "attention/attention.h"
#include "models/vision_config.h"
#include "models/weights.h"

namespace vlm2mla {

struct QwenVisionBlockWeights {
  at::Tensor norm1, norm2;      // [d]
  LinearWeights qkv, proj;      // qkv [3d, d]
  LinearWeights gate_proj, up_proj, down_proj;
};

struct QwenVisionWeights {
  at::Tensor patch_embed;  // [d, C, T, p, p]
  std::vector<QwenVisionBlockWeights> blocks;
  at::Tensor merger_ln_q;                // [d]
  LinearWeights merger_fc1, merger_fc2;  // mlp.0 [4d, 4d], mlp.2 [out, 4d]
};

void for_each_qwen_vision_param(const QwenVisionConfig& config, const std::string& prefix,
                                QwenVisionWeights& w, const std::function<void(const ParamRef&)>& fn);

// The two visual inputs the tower encodes, for the names of their tensors in messages.
enum class QwenVisual { kImage, kVideo };
const char* pixel_values_key(QwenVisual v);  // "pixel_values" / "pixel_values_videos"
const char* grid_thw_key(QwenVisual v);      // "image_grid_thw" / "video_grid_thw"

// Window layout of one forward: the permutation of merge units into window order and the segment
// boundaries (in patches) of windows and of whole images.
struct QwenWindows {
  at::Tensor window_index;  // [merged tokens] int64: window order -> original merged-token index
  std::vector<int64_t> cu_window_seqlens;  // boundaries, deduplicated, starting at 0
  std::vector<int64_t> cu_seqlens;         // per image (and frame) boundaries
};
QwenWindows qwen_window_layout(const QwenVisionConfig& config, const at::Tensor& grid_thw);

class QwenVisionTower {
 public:
  QwenVisionTower(QwenVisionConfig config, QwenVisionWeights weights, AttentionBackend backend);
  static QwenVisionTower load(const QwenVisionConfig& config, const std::string& prefix,
                              const ParamFiller& fill);
  const QwenVisionConfig& config() const { return config_; }
  void set_attention_backend(AttentionBackend backend) { backend_ = backend; }

  // pixel_values [sum t*h*w, C*T*p*p] as Qwen2VLImageProcessor (or, for videos,
  // Qwen2VLVideoProcessor) writes them, grid_thw [n, 3] -> [sum t*h*w / merge^2, out_hidden_size],
  // images (videos) in order. A video's t frame groups share its 2-D RoPE and its windows; full
  // attention stays within one frame group. `what` names the tensors in errors.
  // No attention crosses an image (video), so the images are encoded in runs of whole images of at
  // most max_chunk_patches patches together (one image alone where it has more): the attention masks
  // and scores grow with the square of a run's patches, which for a batch of large images taken
  // as one sequence would not fit (32 images of 1344 x 1344: an 81 GiB mask). transformers encodes
  // them all as one sequence; the results are the same (test: VlmParity.ImageFeaturesOneImageAtATime).
  static constexpr int64_t kMaxChunkPatches = 16384;
  at::Tensor forward(const at::Tensor& pixel_values, const at::Tensor& grid_thw,
                     QwenVisual what = QwenVisual::kImage, int64_t max_chunk_patches = kMaxChunkPatches) const;

 private:
  at::Tensor rotary(const at::Tensor& grid_thw) const;  // [patches, head_dim / 2] angles
  // forward over one run of whole images (validated by forward)
  at::Tensor encode(const at::Tensor& pixel_values, const at::Tensor& grid_thw) const;

  QwenVisionConfig config_;
  QwenVisionWeights weights_;
  AttentionBackend backend_;
  at::Tensor inv_freq_;  // [head_dim / 4]
};

struct QwenRopeIndex {
  at::Tensor position_ids;   // [3, b, s] int64 (t, h, w); padding positions hold 0
  // [3, b] int64: the first generated token's position on each axis, the row's last (valid)
  // position + 1, as transformers 5.17's generate continues position_ids. (Not rope_deltas' max + 1,
  // which only a forward with a cache and no position_ids uses: they differ when a video's
  // temporal positions outrun its spatial ones, or when the prompt ends inside a video.)
  at::Tensor next_position;
};

// transformers 5.17's get_rope_index: text tokens count up on all three axes from `current`; an
// image's or video's tokens take the grid positions (current + t * interval, current + y,
// current + x) over its merged (t, h/merge, w/merge) grid, and the text after it resumes at
// current + max(h, w) / merge. interval is 1 for images; for video i it is tokens_per_second *
// int(second_per_grid_ts[i]) (Python's int(): truncated, so 0 for less than a second per frame
// group; 1 when second_per_grid_ts is undefined). Positions are computed over the tokens where
// attention_mask (may be undefined) is set. Image (video) tokens are found from input_ids; each run
// of them must match the next image_grid_thw (video_grid_thw) row, in order over the batch.
QwenRopeIndex qwen_rope_index(const QwenVisionConfig& config, const at::Tensor& input_ids,
                              const at::Tensor& attention_mask, const at::Tensor& image_grid_thw,
                              const at::Tensor& video_grid_thw = {},
                              const at::Tensor& second_per_grid_ts = {});

}  // namespace vlm2mla
