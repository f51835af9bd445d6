// Attention of a converted (MLA) layer (METHOD.md sections 3-5): partial RoPE on the kept dims, and
// K/V either projected directly (svd none) or through the latent c. Two forms that must agree:
//   expanded: rebuild K and V from the latent and run ordinary attention (the reference twin);
//   absorbed: fold W_uk into the query and W_uv after the weighted sum, attending over the latent
//   itself (what the latent cache serves), with the per-modality k- and v-bias terms.
// See models/mla_config.h for the tensors.
#pragma once

#include <ATen/ATen.h>

#include <vector>

#include "models/text_config.h"
#include "models/weights.h"
#include "nn/rope.h"

namespace vlm2mla {

// int64 [h_kv * R]: per kv head, the head_dim indices of its kept pairs in the rotate_half order of
// an R-dim vector (first halves k_1..k_r, then second halves k_1 + d_h/2 .. k_r + d_h/2).
at::Tensor mla_rope_dims(const std::vector<std::vector<int64_t>>& kept_pairs, int64_t head_dim);

// Bool [b, s]: input_ids among the visual token ids (the md image set); all false without ids.
at::Tensor visual_token_mask(const std::vector<int64_t>& visual_token_ids, const at::Tensor& input_ids);

// One step's projections of a converted layer.
struct MlaStep {
  at::Tensor q_pre;   // [b, h_q, s, d_h] before RoPE (converted layout: [rope R | nope])
  at::Tensor q;       // [b, h_q, s, d_h] with RoPE on the first R dims (undefined unless full_query)
  at::Tensor q_rot;   // [b, h_q, s, R]: q's first R dims, rotated
  at::Tensor k_rope_pre;  // [b, s, h_kv, R] before RoPE (for observers)
  at::Tensor k_rope;  // [b, s, h_kv*R] rotated (what the latent cache stores)
  at::Tensor latent;  // [b, s, r_kv] (low rank), or undefined; with defer_pick, the text set's
  at::Tensor latent_image;  // with defer_pick and an image mask (md): the image set's [b, s, r_kv], else undefined
  at::Tensor image;         // ... and the mask [b, s] that picks between the two (LatentKvCache::write_at)
  at::Tensor k_nope;  // [b, s, h_kv, d_h - R] (svd none), or undefined
  at::Tensor v;       // [b, s, h_kv, d_h] (svd none), or undefined
  // With defer_rope: k_rope, q_rot (and q) left undefined, for the cache write to rotate (LatentKvCache::
  // write_at_rotating) or mla_apply_rope: the queries' RoPE dims [b, h_kv, groups, s, R] and the cos and sin of
  // the keys ([b, s, h_kv, R]) and of the queries ([b, h_kv, 1, s, R]).
  bool rope_deferred = false;
  at::Tensor q_rope_pre, cos, sin, cos_q, sin_q;
};

// A converted layer's RoPE: cos and sin of each kv head's kept dims, [b, s, h_kv, R] (any strides; query
// heads use their group's).
struct MlaRope {
  at::Tensor cos, sin;
};
// Every converted layer's MlaRope of one step, from the full-width cos/sin [b, s, d_h] and all layers'
// mla_rope_dims one after another, [layers * h_kv * R]. A step of at most kOneGatherMaxTokens tokens (b * s:
// decode steps) gathers cos and sin once for all layers (layer(l) views [b, s, layers, h_kv, R]): two launches
// a step instead of two a layer; a longer one (a prefill chunk, whose every-layer copy would take `layers`
// times the memory) gathers each layer's when asked. The values are the same either way.
class MlaRopes {
 public:
  static constexpr int64_t kOneGatherMaxTokens = 4096;
  MlaRopes() = default;
  MlaRopes(const RopeCosSin& cs, const at::Tensor& all_rope_dims, int64_t layers, int64_t h_kv, int64_t R);
  MlaRope layer(int64_t l) const;
  bool one_gather() const { return all_.cos.defined(); }

 private:
  RopeCosSin cs_;
  at::Tensor dims_;
  int64_t layers_ = 0, h_kv_ = 0, R_ = 0;
  MlaRope all_;  // one gather: [b, s, layers, h_kv, R]
};

// h [b, s, d] (the input_layernorm output); rope this layer's (mla_ropes); image [b, s] bool selects the image
// projection set of an md layer (ignored otherwise; undefined = all text). full_query = false leaves q
// undefined (q_pre and q_rot hold it, unconcatenated: what the decode kernel's step takes, one copy fewer).
// defer_pick = true leaves an md layer's choice of latent per token to the cache write (latent, latent_image and
// image of MlaStep; LatentKvCache::write_at), where a static step's write takes it in the same launch.
// defer_rope = true (with full_query = false) leaves the RoPE to the caller (MlaStep's rope_deferred fields).
MlaStep mla_project(const TextConfig& config, const DecoderLayerWeights& w, const MlaRope& rope, const at::Tensor& h,
                    const at::Tensor& image, bool full_query = true, bool defer_pick = false, bool defer_rope = false);
// A deferred step's RoPE (one launch on CUDA: nn/rope.h's apply_rope_pair): sets k_rope and q_rot.
void mla_apply_rope(MlaStep& st);

class LatentKvCache;
// A one-token step's rows into the latent cache at pos (LatentKvCache::write_at, the latent picked there where
// defer_pick left it): a deferred RoPE made in the write's launch where the cache takes it (write_at_rotating),
// else by mla_apply_rope first; st's k_rope and q_rot are set after.
void mla_write_step(LatentKvCache& cache, int64_t layer, MlaStep& st, const at::Tensor& pos);

// Keys and values [b, h_kv, t, d_h] of positions with latents [b, t, r_kv], rotated RoPE keys
// [b, t, h_kv*R] and modality [b, t] (image = true; undefined = all text). Low-rank layers only.
std::pair<at::Tensor, at::Tensor> mla_expand(const TextConfig& config, const DecoderLayerWeights& w,
                                             const at::Tensor& latent, const at::Tensor& k_rope,
                                             const at::Tensor& image);

// The expanded heads of a step (both layer kinds): q [b, h_q, s, d_h] after RoPE, k, v [b, h_kv, s, d_h].
struct QkvHeads {
  at::Tensor q_pre, k_pre;  // before RoPE (converted layout)
  at::Tensor q, k, v;
};
QkvHeads mla_qkv_expanded(const TextConfig& config, const DecoderLayerWeights& w, const MlaRope& rope,
                          const at::Tensor& h, const at::Tensor& image);

// The latent c of each token, [b, s, r_kv]: kv_a_proj of its modality's set.
at::Tensor mla_latent(const MlaConfig& mla, const DecoderLayerWeights& w, const at::Tensor& h,
                      const at::Tensor& image);

// The absorbed form's matrices of one layer, per projection set (text, then image for md), derived
// from kv_b_proj once when the decoder is built.
struct AbsorbedWeights {
  std::vector<at::Tensor> w_uk;  // [h_kv, d_h - R, r_kv]
  std::vector<at::Tensor> w_uv;  // [h_kv, r_kv, d_h] (transposed for o = acc @ w_uv)
  std::vector<at::Tensor> b_k;   // [h_kv, d_h - R] or undefined (no bias)
  std::vector<at::Tensor> b_v;   // [h_kv, d_h] or undefined
  // The decode kernel's two products over all sets at once (mla_attention_absorbed_kernel):
  //   w_in  [h_kv, d_h, n_in]:  q [.., d_h] @ w_in = [qa_0 | qa_1 | qb_0 qb_1] (rows of the first R dims,
  //         the RoPE part, are zero; the k-bias columns only when there are biases; n_in rounded up to 8 by zero
  //         columns: absorbed_width)
  //   w_out [h_kv, n_out, d_h]: [acc_0 | acc_1 | mass_0 mass_1 | 0] @ w_out = o (the v-bias rows likewise, zero
  //         without v-biases; n_out = absorbed_width(sets * r + sets), the rows past the masses zero)
  at::Tensor w_in, w_out;
  int64_t n_bias = 0;  // bias columns/rows: the number of sets when there are biases, else 0
};
AbsorbedWeights absorbed_weights(const TextConfig& config, const DecoderLayerWeights& w);
// n rounded up to a multiple of 8: the width of w_in's columns and w_out's rows (16-byte rows in bf16)
int64_t absorbed_width(int64_t n);

// x [b, h_kv, m, k] times w [h_kv, k, n] per kv head -> [b, h_kv, m, n] (contiguous), as one bmm over the
// kv heads with the sequences' rows stacked: at::matmul(x, w.unsqueeze(0)) would expand w to a copy per
// sequence before its bmm (b copies of the absorbed weights, a layer's ~0.5 MB each at 7B shapes, for every
// product of a b > 1 step). Copies x (and the result) instead, which are n / m and k / m times smaller; at
// b = 1 nothing is copied. VLM2MLA_KV_HEAD_BMM=0 (or set_kv_head_bmm(false)) takes at::matmul's broadcast
// instead, its twin, to compare the two inside whole decode steps (one copy of the weights against two
// small copies: launches decide at small b, bytes at large).
// Its two copies (x's rows by kv head, the product's back by sequence) take kernels/ops.h's fused_contiguous on
// CUDA (one launch of 16-byte pieces, where libtorch's strided copy moved an element a thread: the same bits);
// VLM2MLA_FUSED_ROW_COPY=0 (or set_fused_row_copy(false)) takes libtorch's, its twin.
// Up to kFusedHeadProductMaxRows rows a kv head (b m: decode steps of small batches), where kernels/ops.h's
// fused_head_product takes the sizes (CUDA, bf16 or fp16, whole 16-byte pieces), the product is one tensor-core
// launch instead of the two copies and the bmm (float32 sums in another order than cuBLAS's: equal to the dtype's
// rounding, not bit for bit); VLM2MLA_FUSED_HEAD_PRODUCT=0 (or set_fused_head_product(false)) keeps the bmm, its
// twin. H200, 32k x 8: 6.3 µs a launch, where the copies and the bmm of a product took ~10.4 (docs/KERNELS.md).
inline constexpr int64_t kFusedHeadProductMaxRows = 256;
at::Tensor kv_head_product(const at::Tensor& x, const at::Tensor& w);
void set_kv_head_bmm(bool on);
bool kv_head_bmm_enabled();
void set_fused_row_copy(bool on);
bool fused_row_copy_enabled();
void set_fused_head_product(bool on);
bool fused_head_product_enabled();

// Absorbed attention: q [b, h_q, s, d_h] (RoPE applied to the first R dims), cached latents
// [b, t, r_kv], RoPE keys [b, t, h_kv*R], modality [b, t] (undefined = all text), mask bool
// [b, 1, s, t] (true = attend; undefined = all). Returns [b, h_q, s, d_h]. Softmax in float32.
at::Tensor mla_attention_absorbed(const TextConfig& config, const AbsorbedWeights& aw, const at::Tensor& q,
                                  const at::Tensor& latent, const at::Tensor& k_rope,
                                  const at::Tensor& modality, const at::Tensor& mask, double scale);

class LatentKvCache;

// True when one decode step of `layer` can run on the CUDA decode kernel: a CUDA build, a CUDA device,
// a latent store in bf16 or int4 (bf16 window), and keys forming one range per sequence.
bool mla_decode_kernel_usable(const LatentKvCache& cache, int64_t layer, at::Device device);

// Absorbed attention of one new token per sequence over the cache (its latest position already
// written), on the decode kernel: q [b, h_q, 1, d_h]; keys [start[b], length) with length the cache's
// length + 1. Returns [b, h_q, 1, d_h]. The kernel's twin is mla_attention_absorbed.
// q_rot [b, h_q, 1, R], where given, holds the rotated RoPE dims and q's first R dims are not read
// (MlaStep's q_pre will do: no concatenation; the absorbed product's rows for them are zero).
at::Tensor mla_attention_absorbed_kernel(const TextConfig& config, const AbsorbedWeights& aw,
                                         const at::Tensor& q, const LatentKvCache& cache, int64_t layer,
                                         const at::Tensor& start, double scale, const at::Tensor& q_rot = {});
// The same with the key ranges on the device: keys [start[b], length[b]) (int32 [b]), max_length an
// upper bound on length - start (it sizes the kernel's split grid): shape-static decode steps pass
// the cache's capacity, so that one captured launch serves every step.
// The kernel is told whether the cache holds an image (LatentKvCache::holds_image; MlaDecodeInputs::holds_image):
// where it takes the modality CTAs (two sets), it then dispatches the image CTAs first where its splits fit the text
// CTAs in one wave (MlaDecodeInputs::image_first; VLM2MLA_DECODE_IMAGE_FIRST=0 off), else takes shorter splits, so
// that an image leaves most of them pure (docs/KERNELS.md, "Shorter splits where a context holds an image", "The
// image CTAs first"); VLM2MLA_DECODE_MAX_TILES sets the most tiles a split takes for every step instead.
// out, where given: decode_output_buffer's buffer for this layer's shapes, which the kernel's results go into (each
// call makes and zeroes its own where it is not given).
at::Tensor mla_attention_absorbed_kernel(const TextConfig& config, const AbsorbedWeights& aw,
                                         const at::Tensor& q, const LatentKvCache& cache, int64_t layer,
                                         const at::Tensor& start, const at::Tensor& length,
                                         int64_t max_length, double scale, const at::Tensor& q_rot = {},
                                         const at::Tensor& out = {});

// The buffer the decode kernel's results go into for b sequences and a layer of absorbed weights aw: [b, h_kv, g,
// aw.w_out's rows], zeroed. [acc_0 | acc_1 | mass_0 mass_1 | pad] per head: every call writes the accumulators and
// masses in full, and the pad columns (which meet w_out's zero rows) are never written, so one buffer serves every
// layer of a step whose w_out has as many rows: shape-static steps make one a step (VLM2MLA_DECODE_OUT_ONCE=0 or
// set_decode_out_once(false): one a layer, zeroed each time, the twin; the same bits).
at::Tensor decode_output_buffer(const TextConfig& config, const AbsorbedWeights& aw, int64_t b,
                                const at::TensorOptions& options);
bool decode_out_once_enabled();
void set_decode_out_once(bool on);

// Whether the decode kernel's combine takes the output product too where its plan allows (MlaDecodeInputs::w_out:
// bf16 CUDA steps of one to three sequences, one launch a layer fewer; the accumulators and masses rounded to bf16 as
// the buffer holds them, float32 sums in another order than the head product's): on unless
// VLM2MLA_DECODE_COMBINE_OUT=0 or set_decode_combine_out(false), which keep kv_head_product over the buffer, the
// twin (logits within bf16 rounding of each other).
bool decode_combine_out_enabled();
void set_decode_combine_out(bool on);

}  // namespace vlm2mla
