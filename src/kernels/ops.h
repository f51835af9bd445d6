// Kernel entry points on at::Tensors: host-side validation (ArgumentError naming the tensor and the
// expected shape), then dispatch: CPU tensors -> the reference twin (kernels/ref), CUDA tensors -> the
// CUDA kernel (kernels/cuda) in builds whose libtorch has CUDA and that found nvcc.
#pragma once

#include <ATen/ATen.h>

#include <string>
#include <utility>
#include <vector>

#include "kernels/mla_decode_io.h"

namespace vlm2mla {

// Absorbed MLA decode over a latent cache (params.h, METHOD.md §5/§7): per sequence and head, the
// softmax over keys [start, length) of scale * (qr . k_rope + qa[m_j] . c_j + qb[m_j]), returned as
// per-modality latent accumulators and probability masses (float32, on the inputs' device). The caller
// forms o_h = sum_m acc_m W_uv^(m) + mass_m b_v^(m). CUDA: the tensor-core products take bf16 operands
// (queries and int4-dequantized keys rounded to bf16, P rounded to bf16), fp32 accumulation.
MlaDecodeOutput mla_decode(const MlaDecodeInputs& in);

// The kernels mla_decode ran since the last call (sorted, each once): "reference" for CPU tensors, else
// MlaDecodeLaunch::kernel()'s names, and "combine-out" where the combine took the output product
// (MlaDecodeInputs::w_out); and forgets them. For benchmarks: which kernel the decode steps took
// (with CUDA graphs, those of the captured steps).
std::vector<std::string> take_mla_decode_kernels_used();

// Whether the combine kernel can store bf16 results into `t` as pairs: a 4-byte aligned start and every
// stride but the last even (the last dim contiguous), so each row starts on a 4-byte boundary. Otherwise
// mla_decode computes float32 results and copies them over (one more kernel for each of acc and mass).
bool bf16_pairs_storable(const at::Tensor& t);

// True when this build can run mla_decode on CUDA tensors.
bool mla_decode_has_cuda();

// Names of the decode kernel variants (params.h): "auto", "keys" (kTensorCore, the split-keys kernel),
// "generic", "codes" (kTensorCoreCodes), "rows" (kTensorCoreWarpRows), "rows-joint"
// (kTensorCoreWarpRowsJoint), "wide" (kWide, the scores-first kernels), "wide-cluster" (kWideCluster, their
// one-pass twin in thread-block clusters), "wgmma" (kWgmma, warpgroup MMAs over int4 stores, sm_90a); and back, ArgumentError naming `what` and the choices for anything else.
const char* mla_decode_variant_name(MlaDecodeVariant v);
MlaDecodeVariant parse_mla_decode_variant(const std::string& text, const std::string& what);

// The variant the models' decode steps ask for: VLM2MLA_DECODE_KERNEL (one of the names above, read once;
// default auto), to compare the kernels inside whole decode steps. A variant that cannot take a layer's
// shapes stops the step with the kernel's ArgumentError, which says why.
MlaDecodeVariant model_decode_variant();
// Whether the models' decode steps take the warp-rows instances built for r_kv 128, h_kv * d_rope 128 and
// d_rope 32 (MlaDecodeInputs::specialized): on unless VLM2MLA_DECODE_SPECIALIZED=0 (read once; EnvSwitch).
bool model_decode_specialized();
// Whether those take their grouped-rows twins (MlaDecodeInputs::grouped_rows): on unless
// VLM2MLA_DECODE_GROUPED_ROWS=0 (read once; EnvSwitch).
bool model_decode_grouped_rows();
// Whether modality CTAs whose keys are all of their modality skip the per-tile bookkeeping
// (MlaDecodeInputs::pure_splits): on unless VLM2MLA_DECODE_PURE_SPLITS=0 (read once; EnvSwitch).
bool model_decode_pure_splits();
// Whether those pure splits take a launch of their own (MlaDecodeInputs::pure_launch): on unless
// VLM2MLA_DECODE_PURE_LAUNCH=0 (read once; EnvSwitch).
bool model_decode_pure_launch();
// Whether modality CTAs over keys holding an image are dispatched image CTAs first, in the plan's own splits, where
// those fit the text CTAs in one wave (MlaDecodeInputs::image_first): on unless VLM2MLA_DECODE_IMAGE_FIRST=0 (read
// once; EnvSwitch).
bool model_decode_image_first();
// Whether the decode steps pass the cache's modality segments (MlaDecodeInputs::split_bounds): on unless
// VLM2MLA_DECODE_SEGMENTS=0 (read once; EnvSwitch), which leaves the holds_image cap.
bool model_decode_segments();
// Whether the decode steps pass the cache's image bound (MlaDecodeInputs::image_end), so that the modality CTAs
// read no modality bytes above it: on unless VLM2MLA_DECODE_IMAGE_END=0 (read once; EnvSwitch).
bool model_decode_image_end();
// Whether the scores-first kernels' scores pass may split the latent's columns over clusters
// (MlaDecodeInputs::score_clusters): on unless VLM2MLA_DECODE_SCORE_CLUSTERS=0 (read once; EnvSwitch).
bool model_decode_score_clusters();
// The fewest 64-token tiles per split CTA in the models' decode steps (MlaDecodeInputs::min_tiles_per_split):
// VLM2MLA_DECODE_MIN_TILES (read once; 0 or unset: the plan's own; else ArgumentError naming it).
constexpr const char* kEnvDecodeMinTiles = "VLM2MLA_DECODE_MIN_TILES";
int64_t model_decode_min_tiles();
// The most (MlaDecodeInputs::max_tiles_per_split): VLM2MLA_DECODE_MAX_TILES, read and checked the same way; unset
// or 0, the plan's own (which caps the modality CTAs' splits where the cache holds an image:
// MlaDecodeInputs::holds_image); 1048576 (2^20) never caps.
constexpr const char* kEnvDecodeMaxTiles = "VLM2MLA_DECODE_MAX_TILES";
int64_t model_decode_max_tiles();
// Their parse (nullptr or "": 0; errors name the variable `name`), exposed for tests.
int64_t parse_decode_tiles(const char* name, const char* value);
// The scores-first kernels' values pass in the decode steps, warps a CTA (MlaDecodeInputs::wide_warps):
// VLM2MLA_DECODE_WIDE_WARPS, 8 or 16 (read once; 0 or unset: the plan's own; else ArgumentError naming it); and
// its parse, exposed for tests.
int64_t model_decode_wide_warps();
int64_t parse_decode_wide_warps(const char* value);
// The warpgroup-MMA kernel's consumer warpgroups in the decode steps (MlaDecodeInputs::wgmma_consumers):
// VLM2MLA_DECODE_WGMMA_CONSUMERS, 2 or 3 (read once; 0 or unset: the plan's own; else ArgumentError naming it);
// and its parse, exposed for tests.
int64_t model_decode_wgmma_consumers();
int64_t parse_decode_wgmma_consumers(const char* value);
// ... and its producer warpgroups (MlaDecodeInputs::wgmma_producers): VLM2MLA_DECODE_WGMMA_PRODUCERS, 1 or 2, or
// "none" (-1: the consumers dequantize their own tiles) (read once; 0 or unset: the plan's own; else ArgumentError
// naming it); and its parse, exposed for tests.
int64_t model_decode_wgmma_producers();
int64_t parse_decode_wgmma_producers(const char* value);
// Names of the combine layouts (params.h's MlaDecodeCombine): "auto", "block", "warp", "columns"; and back,
// ArgumentError naming `what` and the choices for anything else.
const char* mla_decode_combine_name(MlaDecodeCombine c);
MlaDecodeCombine parse_mla_decode_combine(const std::string& text, const std::string& what);
// The combine layout the models' decode steps ask for (MlaDecodeInputs::combine): VLM2MLA_DECODE_COMBINE (one
// of the names above, read once; default auto).
MlaDecodeCombine model_decode_combine();

// CUDA builds only (ArgumentError elsewhere): the kernel call of mla_decode, prepared once (inputs
// checked, outputs and workspace allocated), for benchmarks that time the launches alone.
struct PreparedMlaDecode;
class MlaDecodeLaunch {
 public:
  explicit MlaDecodeLaunch(const MlaDecodeInputs& in);
  ~MlaDecodeLaunch();
  MlaDecodeLaunch(const MlaDecodeLaunch&) = delete;
  MlaDecodeLaunch& operator=(const MlaDecodeLaunch&) = delete;
  void run() const;                   // enqueues the kernels on the current CUDA stream
  const MlaDecodeOutput& out() const;  // written by run()
  bool tensor_core() const;           // which kernel the plan picked: a tensor-core one, or the generic one
  const char* kernel() const;         // "wgmma-0p2c" (-2p2c, -1p2c, -1p3c: its warpgroups),
                                      // "tc-rows", "tc-rows-mod"
                                      // (modality CTAs), "tc-keys", "tc-codes", the wide kernels' names or
                                      // "generic" (params.h's variants); "-128" after tc-rows[-mod]: the
                                      // instance built for r_kv 128 (MlaDecodeInputs::specialized), "-128g"
                                      // its grouped-rows twin (MlaDecodeInputs::grouped_rows)
  int splits() const;                 // split-KV CTAs per sequence and head block
  int column_splits() const;          // warp-rows kernel: warps sharing a row block's O columns (2 where r_kv >
                                      // 256), else 1
  bool rope_scores() const;           // warp-rows kernel: the RoPE scores computed apart (a RoPE key too wide for
                                      // its tiles, as MHA models')
  bool stores_in_place() const;       // the combine writes acc_out/mass_out itself (else float32, then a copy)
  bool warp_combine() const;          // the combine takes one warp a (sequence, head) (MlaDecodeCombine::kWarp)
  bool combine_out() const;           // the combine writes the heads' outputs (MlaDecodeInputs::w_out, o_out)
  const std::string& why_not_combine_out() const;  // w_out given and !combine_out(): why not
  int combine_chunks() const;         // the block combine's CTAs a (sequence, head): column chunks of a wide
                                      // latent at small batches (1: one CTA a pair)
  int score_ks() const;               // the scores-first kernels' scores pass: CTAs a cluster over the latent's
                                      // columns (1: no clusters)
  int wide_warps() const;             // the scores-first kernels' values pass: warps a CTA (0: not those kernels)
  bool pure_launch() const;           // modality CTAs: the pure splits in a launch of their own
                                      // (MlaDecodeInputs::pure_launch)
  bool image_first() const;           // modality CTAs: every image CTA dispatched before the text ones
                                      // (MlaDecodeInputs::image_first)
  int bound_segments() const;         // modality CTAs: segments a sequence the splits follow
                                      // (MlaDecodeInputs::split_bounds), 0 where uniform

 private:
  PreparedMlaDecode* impl_;
};

// Fused RMSNorm (kernels/cuda/rms_norm.h): x [..., d] and weight [d], CUDA tensors of one dtype (bf16,
// fp16 or float32), in one launch; what nn/layers.h's rms_norm computes step by step (its twin), up to the
// order of the float32 sum of squares. usable(): this build has the kernel and the tensors fit it (none
// requiring grad: the kernel has no backward).
bool fused_rms_norm_usable(const at::Tensor& x, const at::Tensor& weight);
// Rows of whole 16-byte vectors (up to 1,024 of them) take the kernel that holds a row in registers
// (kernels/cuda/rms_norm.h); VLM2MLA_RMS_NORM_VECTORS=0 (or set_rms_norm_vectors(false)) takes every row element
// by element, its twin (the same arithmetic, the sum of squares in another order).
void set_rms_norm_vectors(bool on);
bool rms_norm_vectors_enabled();
// The decode step's small kernels (norms, RoPE, SiLU, the cache writes, the head products, the decode combine)
// launch with programmatic stream serialization (kernels/cuda/pdl.cuh: a kernel's launch and scheduling overlap
// the tail of the kernel ahead of it, which it waits for before touching memory) unless VLM2MLA_PDL=0 or
// set_programmatic_launch(false), which launch them plainly, the twin (the same results: only when each starts).
void set_programmatic_launch(bool on);
bool programmatic_launch_enabled();
at::Tensor fused_rms_norm(const at::Tensor& x, const at::Tensor& weight, double eps);  // ArgumentError if not usable

// The residual add and the RMSNorm after it in one launch: {x + r, rms_norm(x + r) * weight}, the sum
// rounded to the dtype as libtorch's add rounds it (so only the norm's sum of squares differs from the
// steps). x and r of one shape [..., d]; otherwise as fused_rms_norm.
bool fused_add_rms_norm_usable(const at::Tensor& x, const at::Tensor& r, const at::Tensor& weight);
std::pair<at::Tensor, at::Tensor> fused_add_rms_norm(const at::Tensor& x, const at::Tensor& r, const at::Tensor& weight,
                                                     double eps);  // ArgumentError if not usable

// SwiGLU's input, silu(gate) * up, in one launch, bit-identical to libtorch's two (each computed in float32
// and rounded to the dtype). gate and up of one shape [..., d] (any strides: the halves of a fused gate/up
// product are views), CUDA tensors of one dtype (bf16, fp16 or float32), neither requiring grad. Returns a
// contiguous tensor. fused_silu_mul_unusable(): nullptr when usable, else why not.
const char* fused_silu_mul_unusable(const at::Tensor& gate, const at::Tensor& up);
at::Tensor fused_silu_mul(const at::Tensor& gate, const at::Tensor& up);  // ArgumentError if not usable

// y = x W^T (+ b) for one row of x (a decode step's projection at batch 1) by one launch of kernels/cuda/gemv.h:
// each weight row read once, float32 sums in a fixed order rounded once (at::linear, its twin, sums in cuBLAS's
// order: the two agree within bf16 rounding, not bit for bit). x [..., in] holding one row (numel == in), weight
// [out, in] contiguous, bias [out] or undefined; CUDA tensors of one dtype (bf16 or fp16) on one device, none
// requiring grad; in a multiple of 8 up to 24,576. Returns [..., out]. gemv_unusable(): nullptr when usable, else
// why not.
const char* gemv_unusable(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias);
at::Tensor fused_gemv(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias);  // ArgumentError if not
// How many times fused_gemv has launched its kernel in this process (for tests that check a path took it).
int64_t fused_gemv_launches();

// fused_silu_mul of the two halves of fused_gemv(x, weight, bias) in one launch (kernels/cuda/gemv.h's
// launch_gemv_silu_mul: the same bits as the two launches): weight [2 n, in], the gate's rows then up's (a fused
// gate/up block), bias [2 n] or undefined; otherwise as fused_gemv. Returns [..., n]. gemv_silu_mul_unusable():
// nullptr when usable, else why not. Counted in fused_gemv_launches() and in fused_gemv_silu_mul_launches().
const char* gemv_silu_mul_unusable(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias);
at::Tensor fused_gemv_silu_mul(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias);
int64_t fused_gemv_silu_mul_launches();

// y = x W^T (+ b) for 2 to 16 rows of x (a decode step's projection at batches 2 to 16) by one launch of
// kernels/cuda/gemm_rows.h: each weight element read once, on tensor cores, float32 sums in a fixed order rounded
// once with the bias (at::linear, its twin, sums in cuBLAS's order: the two agree within bf16 rounding, not bit for
// bit). x [..., in] holding 1 to 16 rows end to end (contiguous), weight [out, in] contiguous, bias [out] or
// undefined; CUDA tensors of one dtype (bf16 or fp16) on one device, none requiring grad; in a multiple of 8.
// Returns [..., out]. gemm_rows_unusable(): nullptr when usable, else why not.
const char* gemm_rows_unusable(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias);
at::Tensor fused_gemm_rows(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias);  // ArgumentError
// How many times fused_gemm_rows (and fused_gemm_rows_silu_mul) launched their kernel in this process.
int64_t fused_gemm_rows_launches();

// fused_silu_mul of the two halves of fused_gemm_rows(x, weight, bias) in one launch (kernels/cuda/gemm_rows.h's
// launch_gemm_rows_silu_mul: the same bits as the two launches): weight [2 n, in], the gate's rows then up's, bias
// [2 n] or undefined; otherwise as fused_gemm_rows. Returns [..., n]. Counted in fused_gemm_rows_launches().
const char* gemm_rows_silu_mul_unusable(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias);
at::Tensor fused_gemm_rows_silu_mul(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias);

// src.contiguous() by one launch of kernels/cuda/row_copy.h (16-byte pieces where the sizes, strides and
// addresses allow), where libtorch's copy of a strided view takes an element a thread: the same bits. src a CUDA
// tensor (bf16, fp16 or float32, not requiring grad) whose dimensions, once those that lie end to end in memory
// are merged, are at most 4 with the innermost contiguous (the transposes of whole rows kv_head_product makes, a
// product's narrowed rows). A contiguous src is returned as it is. fused_row_copy_unusable(): nullptr when
// usable, else why not.
const char* fused_row_copy_unusable(const at::Tensor& src);
at::Tensor fused_contiguous(const at::Tensor& src);  // ArgumentError if not usable

// The per-kv-head product y[b, k, i, :] = x[b, k, i, :] w[k] of the absorbed projections (models/mla_attention.cpp's
// kv_head_product, whose copy + bmm + copy is its twin) in one launch (kernels/cuda/head_product.h), x read in place;
// tensor-core MMAs with float32 sums, rounded once (agreeing with cuBLAS's to the dtype's rounding). x [b, h, m, d]
// with its last dimension contiguous, w [h, d, n] contiguous, CUDA tensors of one dtype (bf16 or fp16: float32 keeps
// the bmm) on one device, neither requiring grad, d, n and x's strides whole 16-byte pieces, 16-byte aligned, any d.
// Returns y [b, h, m, n] contiguous. fused_head_product_unusable(): nullptr when
// usable, else why not.
const char* fused_head_product_unusable(const at::Tensor& x, const at::Tensor& w);
at::Tensor fused_head_product(const at::Tensor& x, const at::Tensor& w);  // ArgumentError if not usable

// A decode step's write into a quantized store with a full-precision ring (kvcache/quant.h's
// quantized_ring_write, whose libtorch steps are its twin) in one launch (kernels/cuda/cache_write.h), the
// same bits in the store. rows [b, 1, n] in the ring's dtype (bf16, fp16 or float32); pos [1] int64; window
// [b, w, n]; q's data uint8 [b, cap, n * bits / 8], scale and lo float16 [b, cap, n / group]; every last dim
// contiguous; CUDA tensors on one device, none requiring grad. fused_ring_write_unusable(): nullptr when
// usable, else why not.
const char* fused_ring_write_unusable(const at::Tensor& rows, const at::Tensor& pos, const at::Tensor& window,
                                      const QuantizedRows& q, int64_t bits, int64_t group);
void fused_ring_write(const at::Tensor& rows, const at::Tensor& pos, at::Tensor& window, QuantizedRows& q,
                      int64_t bits, int64_t group);  // ArgumentError if not usable

// The decode step's RoPE made in a fused cache write's launch (fused_latent_write, fused_ring_write_pair; what
// nn/rope.h's apply_rope_pair and the write do in two): the RoPE key, given to the write unrotated as k_rope [b, 1, n],
// is rotated on its way into its store by cos and sin [b, 1, h_kv, R] (n = h_kv R, R even; any strides), and the
// queries' RoPE dims q (up to 8 dims, any strides, R last) by cos_q and sin_q (broadcastable to q) into the tensor
// the write returns (q's shape, contiguous where q is not dense): what fused_rope_pair(k_rope, cos, sin, q, cos_q,
// sin_q) and then the write store and return, bit for bit. All of the stores' dtype on their device.
// write_rope_unusable(): nullptr when the writes can take it, else why not.
struct WriteRope {
  at::Tensor cos, sin;         // the key's
  at::Tensor q, cos_q, sin_q;  // the queries' RoPE dims and theirs
};
const char* write_rope_unusable(const at::Tensor& k_rope, const WriteRope& rope);

// Both quantized stores of a latent cache's layer in one launch (kernels/cuda/cache_write.h's
// launch_ring_write_pair), each sequence's latent picked by its step token's modality: what
// LatentKvCache::write_at's twin does in at::where and a fused_ring_write a store, the same bits. latent [b, 1, r]
// (the text set's where latent_image is given), latent_image like it or undefined, image [b, 1] bool with it,
// k_rope [b, 1, n]; each store's arrays as fused_ring_write takes them (each its own bits and group), both rings
// of the rows' dtype on one device. fused_ring_write_pair_unusable(): nullptr when usable, else why not.
struct QuantizedStoreArrays {
  at::Tensor window;  // [b, w, n] full-precision ring
  QuantizedRows q;
  int64_t bits = 0, group = 0;
};
// With rope (WriteRope above), k_rope is rotated on its way in and the rotated queries returned; else an undefined
// tensor.
const char* fused_ring_write_pair_unusable(const at::Tensor& latent, const at::Tensor& latent_image,
                                           const at::Tensor& image, const at::Tensor& k_rope, const at::Tensor& pos,
                                           const QuantizedStoreArrays& latent_store,
                                           const QuantizedStoreArrays& rope_store, const WriteRope* rope = nullptr);
at::Tensor fused_ring_write_pair(const at::Tensor& latent, const at::Tensor& latent_image, const at::Tensor& image,
                                 const at::Tensor& k_rope, const at::Tensor& pos,
                                 const QuantizedStoreArrays& latent_store, const QuantizedStoreArrays& rope_store,
                                 const WriteRope* rope = nullptr);  // ArgumentError if not usable

// A decode step's write into a latent cache's plain stores in one launch (kernels/cuda/cache_write.h's
// launch_latent_write), where LatentKvCache::write_at's libtorch steps (its twin) are at::where choosing each
// sequence's latent by its step token's modality, and an index_copy_ into each store: the same bits. latent [b, 1, r]
// (the text set's, where latent_image is given), latent_image like it or undefined, image [b, 1] bool with it (the
// step token is an image), k_rope [b, 1, n], pos [1] int64, latent_store [b, cap, r] and rope_store [b, cap, n] of
// the rows' dtype (bf16, fp16 or float32); last dims contiguous, rows whole 16-byte pieces on 16-byte bounds; CUDA
// tensors on one device, none requiring grad. fused_latent_write_unusable(): nullptr when usable, else why not. With
// rope (WriteRope above), k_rope is rotated on its way in (its rows need only a contiguous last dim) and the rotated
// queries returned; else an undefined tensor.
const char* fused_latent_write_unusable(const at::Tensor& latent, const at::Tensor& latent_image,
                                        const at::Tensor& image, const at::Tensor& k_rope, const at::Tensor& pos,
                                        const at::Tensor& latent_store, const at::Tensor& rope_store,
                                        const WriteRope* rope = nullptr);
at::Tensor fused_latent_write(const at::Tensor& latent, const at::Tensor& latent_image, const at::Tensor& image,
                              const at::Tensor& k_rope, const at::Tensor& pos, const at::Tensor& latent_store,
                              const at::Tensor& rope_store,
                              const WriteRope* rope = nullptr);  // ArgumentError if not usable

// A decode step's keys and values into a dense cache in one launch (the same kernel, a row per kv head), where
// DenseKvCache::write_at's libtorch steps (its twin) are an index_copy_ into each: the same bits. k and v [b, h, 1, d],
// pos [1] int64, keys and values [b, h, cap, d] of k's dtype (bf16, fp16 or float32); last dims contiguous, rows whole
// 16-byte pieces on 16-byte bounds; CUDA tensors on one device, none requiring grad. fused_kv_write_unusable():
// nullptr when usable, else why not.
const char* fused_kv_write_unusable(const at::Tensor& k, const at::Tensor& v, const at::Tensor& pos,
                                    const at::Tensor& keys, const at::Tensor& values);
void fused_kv_write(const at::Tensor& k, const at::Tensor& v, const at::Tensor& pos, const at::Tensor& keys,
                    const at::Tensor& values);  // ArgumentError if not usable

// Fused rotary embedding (kernels/cuda/rope.h): x * cos + rotate_half(x) * sin, rotate_half(x) =
// cat(-x[..., d/2:], x[..., :d/2]), in one launch, bit-identical to those libtorch steps (nn/rope.h's
// apply_rope, its twin). x [..., d] (d even, at most 8 dims, any strides); cos and sin broadcastable to x's
// shape; CUDA tensors of one dtype (bf16, fp16 or float32) on one device, none requiring grad. The result
// has x's shape and, where x is dense, x's strides (as libtorch's result would), else it is contiguous.
// fused_rope_unusable(): nullptr when this build has the kernel and the tensors fit it, else why not.
const char* fused_rope_unusable(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin);
inline bool fused_rope_usable(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin) {
  return fused_rope_unusable(x, cos, sin) == nullptr;
}
at::Tensor fused_rope(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin);  // ArgumentError if not usable
// Two rotations in one launch (kernels/cuda/rope.h's launch_rope_pair: a decode step's queries and keys), each
// what fused_rope gives for its tensor, bit for bit; both tensors of one dtype on one device.
const char* fused_rope_pair_unusable(const at::Tensor& x1, const at::Tensor& cos1, const at::Tensor& sin1,
                                     const at::Tensor& x2, const at::Tensor& cos2, const at::Tensor& sin2);
std::pair<at::Tensor, at::Tensor> fused_rope_pair(const at::Tensor& x1, const at::Tensor& cos1, const at::Tensor& sin1,
                                                  const at::Tensor& x2, const at::Tensor& cos2,
                                                  const at::Tensor& sin2);  // ArgumentError if not usable

}  // namespace vlm2mla
