#include "models/mla_attention.h"

#include "core/env_switch.h"
#include "core/error.h"
#include "kernels/ops.h"
#include "kvcache/latent_kv_cache.h"

namespace vlm2mla {

at::Tensor mla_rope_dims(const std::vector<std::vector<int64_t>>& kept_pairs, int64_t head_dim) {
  std::vector<int64_t> dims;
  for (const auto& pairs : kept_pairs) {
    for (int64_t k : pairs) dims.push_back(k);
    for (int64_t k : pairs) dims.push_back(k + head_dim / 2);
  }
  return at::tensor(dims, at::kLong);  // [h_kv * R]
}

at::Tensor visual_token_mask(const std::vector<int64_t>& visual_token_ids, const at::Tensor& input_ids) {
  at::Tensor ids = at::tensor(visual_token_ids, at::kLong).to(input_ids.device());
  return at::isin(input_ids, ids);  // [b, s]
}

namespace {

// An md layer picks per token between its two projection sets whenever an image mask is given (the
// decoder passes none for steps without image tokens): no device sync, so steps can be captured.
bool any_image(const MlaConfig& m, const at::Tensor& image) { return m.modality_split && image.defined(); }

// The kv_a_proj of each projection set a step uses: the text set, and the image set when an md layer
// picks per token.
void add_latent_projections(const MlaConfig& m, const DecoderLayerWeights& w, const at::Tensor& image,
                            std::vector<const LinearWeights*>& members) {
  members.push_back(&w.kv.at(0).kv_a_proj);
  if (any_image(m, image)) members.push_back(&w.kv.at(1).kv_a_proj);
}

// Each token's latent [b, s, r_kv] from the sets' results (text, then image when given).
at::Tensor pick_latent(at::ArrayRef<at::Tensor> sets, const at::Tensor& image) {
  return sets.size() == 2 ? by_modality(sets[0], sets[1], image) : sets[0];
}

}  // namespace

at::Tensor mla_latent(const MlaConfig& mla, const DecoderLayerWeights& w, const at::Tensor& h,
                      const at::Tensor& image) {
  std::vector<const LinearWeights*> members;
  add_latent_projections(mla, w, image, members);
  const std::vector<at::Tensor> c = linear_group(h, members);  // [b, s, r_kv] per set
  return pick_latent(c, image);
}

MlaRopes::MlaRopes(const RopeCosSin& cs, const at::Tensor& all_rope_dims, int64_t layers, int64_t h_kv, int64_t R)
    : cs_(cs), dims_(all_rope_dims), layers_(layers), h_kv_(h_kv), R_(R) {
  VLM2MLA_CHECK(all_rope_dims.dim() == 1 && all_rope_dims.size(0) == layers * h_kv * R, ArgumentError, "MlaRopes: ",
                layers, " layers of ", h_kv, " x ", R, " RoPE dims expected, got ", all_rope_dims.sizes());
  const int64_t b = cs.cos.size(0), s = cs.cos.size(1);
  if (b * s <= kOneGatherMaxTokens) {
    all_.cos = cs.cos.index_select(-1, all_rope_dims).view({b, s, layers, h_kv, R});
    all_.sin = cs.sin.index_select(-1, all_rope_dims).view({b, s, layers, h_kv, R});
  }
}

MlaRope MlaRopes::layer(int64_t l) const {
  VLM2MLA_CHECK(l >= 0 && l < layers_, ArgumentError, "MlaRopes: layer ", l, " out of [0, ", layers_, ")");
  if (one_gather()) return {all_.cos.select(2, l), all_.sin.select(2, l)};
  const int64_t b = cs_.cos.size(0), s = cs_.cos.size(1), n = h_kv_ * R_;
  const at::Tensor dims = dims_.narrow(0, l * n, n);
  return {cs_.cos.index_select(-1, dims).view({b, s, h_kv_, R_}),
          cs_.sin.index_select(-1, dims).view({b, s, h_kv_, R_})};
}

namespace {
// A deferred step's rotated queries ([b, h_kv, groups, s, R], however made) as MlaStep holds them: its RoPE done.
void take_rotated_queries(MlaStep& st, const at::Tensor& q_rot) {
  const int64_t b = st.k_rope_pre.size(0), s = st.k_rope_pre.size(1);
  st.q_rot = q_rot.reshape({b, -1, s, st.q_rope_pre.size(-1)});
  st.rope_deferred = false;
}
}  // namespace

void mla_apply_rope(MlaStep& st) {
  VLM2MLA_CHECK(st.rope_deferred, ArgumentError, "mla_apply_rope: the step's RoPE was not deferred");
  auto [k_rot, q_rot] = apply_rope_pair(st.k_rope_pre, st.cos, st.sin, st.q_rope_pre, st.cos_q, st.sin_q);
  st.k_rope = k_rot.reshape({st.k_rope_pre.size(0), st.k_rope_pre.size(1), -1});
  take_rotated_queries(st, q_rot);
}

void mla_write_step(LatentKvCache& cache, int64_t layer, MlaStep& st, const at::Tensor& pos) {
  if (st.rope_deferred) {
    const int64_t b = st.k_rope_pre.size(0), s = st.k_rope_pre.size(1);
    const WriteRope rope{st.cos, st.sin, st.q_rope_pre, st.cos_q, st.sin_q};
    const at::Tensor q_rot = cache.write_at_rotating(layer, st.latent, st.k_rope_pre.reshape({b, s, -1}), pos,
                                                     st.latent_image, st.image, rope);
    if (q_rot.defined()) {  // written, the key rotated on its way in
      take_rotated_queries(st, q_rot);
      return;
    }
    mla_apply_rope(st);
  }
  cache.write_at(layer, st.latent, st.k_rope, pos, st.latent_image, st.image);
}

MlaStep mla_project(const TextConfig& c, const DecoderLayerWeights& w, const MlaRope& rope, const at::Tensor& h,
                    const at::Tensor& image, bool full_query, bool defer_pick, bool defer_rope) {
  VLM2MLA_CHECK(!(full_query && defer_rope), ArgumentError, "mla_project: a full query needs its RoPE");
  const MlaConfig& m = *c.mla;
  const int64_t b = h.size(0), s = h.size(1);
  const int64_t h_q = c.num_attention_heads, h_kv = c.num_key_value_heads, dh = c.head_dim;
  const int64_t R = m.qk_rope_head_dim, d_nope = dh - R;
  MlaStep out;
  // Every projection of h as one GEMM where the layer is fused: q, the RoPE key, then the latent's
  // kv_a_proj of each set used (low rank) or k_nope and v (svd none).
  std::vector<const LinearWeights*> members = {&w.q_proj, &w.k_rope_proj};
  if (m.low_rank()) {
    add_latent_projections(m, w, image, members);
  } else {
    members.push_back(&w.k_nope_proj);
    members.push_back(&w.v_proj);
  }
  const std::vector<at::Tensor> y = linear_group(h, members);  // [b, s, out_i] per member
  out.q_pre = y[0].view({b, s, h_q, dh}).transpose(1, 2);  // [b, h_q, s, d_h]
  const at::Tensor& cos = rope.cos;  // [b, s, h_kv, R]: each kv head's kept dims; query heads use their group's
  const at::Tensor& sin = rope.sin;
  out.k_rope_pre = y[1].view({b, s, h_kv, R});  // [b, s, h_kv, R]
  // Query head h uses kv head h / groups' dims: [b, h_kv, groups, s, R] against [b, h_kv, 1, s, R].
  const int64_t groups = h_q / h_kv;
  out.cos = cos;
  out.sin = sin;
  out.cos_q = cos.transpose(1, 2).unsqueeze(2);
  out.sin_q = sin.transpose(1, 2).unsqueeze(2);
  out.q_rope_pre = out.q_pre.narrow(-1, 0, R).reshape({b, h_kv, groups, s, R});
  out.rope_deferred = true;
  if (!defer_rope) mla_apply_rope(out);
  if (full_query) out.q = at::cat({out.q_rot, out.q_pre.narrow(-1, R, d_nope)}, -1);
  if (m.low_rank()) {
    const at::ArrayRef<at::Tensor> sets = at::ArrayRef<at::Tensor>(y).slice(2);
    if (defer_pick && sets.size() == 2) {  // the cache write picks (LatentKvCache::write_at)
      out.latent = sets[0];
      out.latent_image = sets[1];
      out.image = image;
    } else {
      out.latent = pick_latent(sets, image);  // [b, s, r_kv]
    }
  } else {
    out.k_nope = y[2].view({b, s, h_kv, d_nope});
    out.v = y[3].view({b, s, h_kv, dh});
  }
  return out;
}

std::pair<at::Tensor, at::Tensor> mla_expand(const TextConfig& c, const DecoderLayerWeights& w,
                                             const at::Tensor& latent, const at::Tensor& k_rope,
                                             const at::Tensor& image) {
  const MlaConfig& m = *c.mla;
  const int64_t b = latent.size(0), t = latent.size(1);
  const int64_t h_kv = c.num_key_value_heads, dh = c.head_dim, R = m.qk_rope_head_dim, d_nope = dh - R;
  at::Tensor kv = linear(latent, w.kv.at(0).kv_b_proj);  // [b, t, h_kv*(d_nope + d_h)]
  if (any_image(m, image)) kv = by_modality(kv, linear(latent, w.kv.at(1).kv_b_proj), image);
  at::Tensor k_nope = kv.narrow(-1, 0, h_kv * d_nope).view({b, t, h_kv, d_nope});
  at::Tensor v = kv.narrow(-1, h_kv * d_nope, h_kv * dh).view({b, t, h_kv, dh});
  at::Tensor k = at::cat({k_rope.view({b, t, h_kv, R}).to(k_nope.scalar_type()), k_nope}, -1);
  return {k.transpose(1, 2), v.transpose(1, 2)};  // [b, h_kv, t, d_h]
}

QkvHeads mla_qkv_expanded(const TextConfig& c, const DecoderLayerWeights& w, const MlaRope& rope,
                          const at::Tensor& h, const at::Tensor& image) {
  const MlaConfig& m = *c.mla;
  const int64_t b = h.size(0), s = h.size(1), h_kv = c.num_key_value_heads, R = m.qk_rope_head_dim;
  MlaStep st = mla_project(c, w, rope, h, image);
  QkvHeads out;
  out.q_pre = st.q_pre;
  out.q = st.q;
  at::Tensor k_nope;
  if (m.low_rank()) {
    std::tie(out.k, out.v) = mla_expand(c, w, st.latent, st.k_rope, image);
    k_nope = out.k.narrow(-1, R, c.head_dim - R);
  } else {
    k_nope = st.k_nope.transpose(1, 2);
    out.k = at::cat({st.k_rope.view({b, s, h_kv, R}).transpose(1, 2), k_nope}, -1);
    out.v = st.v.transpose(1, 2);
  }
  out.k_pre = at::cat({st.k_rope_pre.transpose(1, 2), k_nope}, -1);  // [b, h_kv, s, d_h]
  return out;
}

int64_t absorbed_width(int64_t n) { return (n + 7) / 8 * 8; }

AbsorbedWeights absorbed_weights(const TextConfig& c, const DecoderLayerWeights& w) {
  const MlaConfig& m = *c.mla;
  const int64_t h_kv = c.num_key_value_heads, dh = c.head_dim, R = m.qk_rope_head_dim, d_nope = dh - R;
  AbsorbedWeights aw;
  for (const KvLatentWeights& set : w.kv) {
    const at::Tensor& up = set.kv_b_proj.weight;  // [h_kv*(d_nope + d_h), r]
    const int64_t r = up.size(1);
    aw.w_uk.push_back(up.narrow(0, 0, h_kv * d_nope).view({h_kv, d_nope, r}).contiguous());
    aw.w_uv.push_back(up.narrow(0, h_kv * d_nope, h_kv * dh).view({h_kv, dh, r}).transpose(1, 2).contiguous());
    const at::Tensor& bias = set.kv_b_proj.bias;
    aw.b_k.push_back(bias.defined() ? bias.narrow(0, 0, h_kv * d_nope).view({h_kv, d_nope}) : at::Tensor());
    aw.b_v.push_back(bias.defined() ? bias.narrow(0, h_kv * d_nope, h_kv * dh).view({h_kv, dh}) : at::Tensor());
  }
  const int64_t sets = static_cast<int64_t>(aw.w_uk.size());
  if (sets == 0) return aw;
  const int64_t r = aw.w_uk[0].size(2);
  bool biased = true;
  for (int64_t i = 0; i < sets; ++i) biased = biased && aw.b_k[static_cast<size_t>(i)].defined();
  aw.n_bias = biased ? sets : 0;
  const int64_t n = sets * r + aw.n_bias;
  // widths rounded up to 8 columns: the two products' rows then lie on 16-byte bounds (cuBLAS's aligned kernels;
  // at 258 columns it took 2-byte-aligned ones, 13-24 us a product at b = 256-768 on the H200, session 18)
  aw.w_in = at::zeros({h_kv, dh, absorbed_width(n)}, aw.w_uk[0].options());
  aw.w_out = at::zeros({h_kv, absorbed_width(sets * r + sets), dh}, aw.w_uv[0].options());
  for (int64_t i = 0; i < sets; ++i) {
    const size_t si = static_cast<size_t>(i);
    aw.w_in.narrow(1, R, d_nope).narrow(2, i * r, r).copy_(aw.w_uk[si]);
    aw.w_out.narrow(1, i * r, r).copy_(aw.w_uv[si]);
    if (biased) {
      aw.w_in.narrow(1, R, d_nope).select(2, sets * r + i).copy_(aw.b_k[si]);
      aw.w_out.select(1, sets * r + i).copy_(aw.b_v[si]);
    }
  }
  return aw;
}

namespace {
EnvSwitch kv_head_bmm_switch(kEnvKvHeadBmm);
EnvSwitch fused_row_copy_switch(kEnvFusedRowCopy);
EnvSwitch fused_head_product_switch(kEnvFusedHeadProduct);

// t.contiguous(), by the fused row copy where it is on and takes t
at::Tensor rows_contiguous(const at::Tensor& t) {
  if (!t.is_contiguous() && fused_row_copy_switch.enabled() && !fused_row_copy_unusable(t)) return fused_contiguous(t);
  return t.contiguous();
}
}  // namespace

void set_kv_head_bmm(bool on) { kv_head_bmm_switch.set(on); }
bool kv_head_bmm_enabled() { return kv_head_bmm_switch.enabled(); }
void set_fused_row_copy(bool on) { fused_row_copy_switch.set(on); }
bool fused_row_copy_enabled() { return fused_row_copy_switch.enabled(); }
void set_fused_head_product(bool on) { fused_head_product_switch.set(on); }
bool fused_head_product_enabled() { return fused_head_product_switch.enabled(); }

at::Tensor kv_head_product(const at::Tensor& x, const at::Tensor& w) {
  VLM2MLA_CHECK(x.dim() == 4 && w.dim() == 3 && x.size(1) == w.size(0) && x.size(3) == w.size(1), ArgumentError,
                "kv_head_product: x [b, h_kv, m, k] and w [h_kv, k, n] expected, got ", x.sizes(), " and ", w.sizes());
  if (!kv_head_bmm_enabled()) return at::matmul(x, w.unsqueeze(0)).contiguous();
  const int64_t b = x.size(0), h_kv = x.size(1), m = x.size(2);
  if (b * m <= kFusedHeadProductMaxRows && fused_head_product_switch.enabled() && !fused_head_product_unusable(x, w))
    return fused_head_product(x, w);
  at::Tensor xs = rows_contiguous(x.transpose(0, 1)).view({h_kv, b * m, x.size(3)});  // no copy at b = 1
  return rows_contiguous(at::bmm(xs, w).view({h_kv, b, m, w.size(2)}).transpose(0, 1));
}

at::Tensor mla_attention_absorbed(const TextConfig& c, const AbsorbedWeights& aw, const at::Tensor& q,
                                  const at::Tensor& latent, const at::Tensor& k_rope,
                                  const at::Tensor& modality, const at::Tensor& mask, double scale) {
  const MlaConfig& m = *c.mla;
  const int64_t b = q.size(0), h_q = q.size(1), s = q.size(2), t = latent.size(1);
  const int64_t h_kv = c.num_key_value_heads, g = h_q / h_kv, dh = c.head_dim, R = m.qk_rope_head_dim;
  const int64_t d_nope = dh - R;
  const at::ScalarType dt = q.scalar_type();
  // Query heads grouped by kv head: [b, h_kv, g*s, *].
  at::Tensor qr = q.narrow(-1, 0, R).reshape({b, h_kv, g * s, R});
  at::Tensor qn = q.narrow(-1, R, d_nope).reshape({b, h_kv, g * s, d_nope});
  at::Tensor kr = k_rope.to(dt).view({b, t, h_kv, R}).permute({0, 2, 3, 1});  // [b, h_kv, R, t]
  // The latent is every kv head's: their rows go into one product per sequence ([b, h_kv*g*s, *]), where
  // at::matmul's broadcast of [b, 1, t, r] over the kv heads would copy the latent once per kv head.
  at::Tensor lat = latent.to(dt);  // [b, t, r]
  const int64_t r = lat.size(2), rows = h_kv * g * s;
  at::Tensor scores = at::matmul(qr, kr).to(at::kFloat);                        // [b, h_kv, g*s, t]
  const int64_t sets = static_cast<int64_t>(aw.w_uk.size());
  const bool split = sets == 2 && modality.defined();
  at::Tensor img = split ? modality.to(q.device()).view({b, 1, 1, t}) : at::Tensor();
  std::vector<at::Tensor> latent_scores, bias_terms;
  for (int64_t i = 0; i < (split ? 2 : 1); ++i) {
    at::Tensor qa = kv_head_product(qn, aw.w_uk[static_cast<size_t>(i)]);  // [b, h_kv, g*s, r]
    latent_scores.push_back(
        at::bmm(qa.view({b, rows, r}), lat.transpose(1, 2)).view({b, h_kv, g * s, t}).to(at::kFloat));
    const at::Tensor& bk = aw.b_k[static_cast<size_t>(i)];
    bias_terms.push_back(bk.defined() ? (qn * bk.view({1, h_kv, 1, d_nope})).sum(-1, true).to(at::kFloat)
                                      : at::Tensor());  // [b, h_kv, g*s, 1]
  }
  if (split) {
    scores = scores + at::where(img, latent_scores[1], latent_scores[0]);
    if (bias_terms[0].defined()) scores = scores + at::where(img, bias_terms[1], bias_terms[0]);
  } else {
    scores = scores + latent_scores[0];
    if (bias_terms[0].defined()) scores = scores + bias_terms[0];
  }
  scores = (scores * scale).view({b, h_q, s, t});
  if (mask.defined()) {  // one kernel (masked_fill would need the mask's negation first: two)
    scores = at::where(mask.scalar_type() == at::kBool ? mask : mask.ne(0), scores,
                       -std::numeric_limits<float>::infinity());
  }
  at::Tensor p = at::softmax(scores, -1).view({b, h_kv, g * s, t});  // float32
  at::Tensor out;
  for (int64_t i = 0; i < (split ? 2 : 1); ++i) {
    at::Tensor pi = split ? p * (i == 1 ? img : img.logical_not()) : p;
    at::Tensor acc = at::bmm(pi.to(dt).reshape({b, rows, t}), lat).view({b, h_kv, g * s, r});
    at::Tensor o = kv_head_product(acc, aw.w_uv[static_cast<size_t>(i)]);  // [b, h_kv, g*s, d_h]
    const at::Tensor& bv = aw.b_v[static_cast<size_t>(i)];
    if (bv.defined()) o = o + pi.sum(-1, true).to(dt) * bv.view({1, h_kv, 1, dh});
    out = out.defined() ? out + o : o;
  }
  return out.view({b, h_q, s, dh});
}

namespace {
EnvSwitch decode_out_once_switch(kEnvDecodeOutOnce);
EnvSwitch decode_combine_out_switch(kEnvDecodeCombineOut);
// The most sequences a step whose combine takes the output product. Measured on the H200 (session 32, Qwen2.5-VL-7B
// shapes, D = 32, the switch alternated on one binary, 2-5 runs each; docs/BENCHMARKS.md and its plot): with the
// combine's product steps took 1-2.5% less at b = 1, 4-5% less at 32k x 2, level to 3.5% less at b = 3, but 1-2%
// more at 32k x 4 and about 1% more at 16k / 32k x 8, where the head product after the plain combine (its weights
// issued before its programmatic wait, and the projection after it on the few-row kernel, since session 31) is the
// faster.
constexpr int64_t kCombineOutMostSequences = 3;
}  // namespace

bool decode_out_once_enabled() { return decode_out_once_switch.enabled(); }
void set_decode_out_once(bool on) { decode_out_once_switch.set(on); }

bool decode_combine_out_enabled() { return decode_combine_out_switch.enabled(); }
void set_decode_combine_out(bool on) { decode_combine_out_switch.set(on); }

at::Tensor decode_output_buffer(const TextConfig& c, const AbsorbedWeights& aw, int64_t b,
                                const at::TensorOptions& options) {
  const int64_t h_kv = c.num_key_value_heads, g = c.num_attention_heads / h_kv;
  return at::zeros({b, h_kv, g, aw.w_out.size(1)}, options);
}

bool mla_decode_kernel_usable(const LatentKvCache& cache, int64_t layer, at::Device device) {
  if (!device.is_cuda() || !mla_decode_has_cuda()) return false;
  const RowStore& c = cache.latent_store(layer);
  const RowStore& k = cache.rope_store(layer);
  const CacheType t = c.spec().type;
  if (t == CacheType::kBf16) return true;
  return t == CacheType::kInt4 && c.window().scalar_type() == at::kBFloat16 &&
         k.window().scalar_type() == at::kBFloat16;
}

at::Tensor mla_attention_absorbed_kernel(const TextConfig& c, const AbsorbedWeights& aw, const at::Tensor& q,
                                         const LatentKvCache& cache, int64_t layer, const at::Tensor& start,
                                         double scale, const at::Tensor& q_rot) {
  const int64_t total = cache.length() + 1;
  at::Tensor length = at::full({q.size(0)}, total, at::TensorOptions().dtype(at::kInt).device(q.device()));
  return mla_attention_absorbed_kernel(c, aw, q, cache, layer, start, length, total, scale, q_rot);
}

at::Tensor mla_attention_absorbed_kernel(const TextConfig& c, const AbsorbedWeights& aw, const at::Tensor& q,
                                         const LatentKvCache& cache, int64_t layer, const at::Tensor& start,
                                         const at::Tensor& length, int64_t max_length, double scale,
                                         const at::Tensor& q_rot, const at::Tensor& out) {
  const MlaConfig& m = *c.mla;
  const int64_t b = q.size(0), h_q = q.size(1), h_kv = c.num_key_value_heads, g = h_q / h_kv;
  const int64_t dh = c.head_dim, R = m.qk_rope_head_dim;
  const RowStore& cs = cache.latent_store(layer);
  const RowStore& ks = cache.rope_store(layer);
  const CacheType type = cs.spec().type;
  VLM2MLA_CHECK(type == CacheType::kBf16 || type == CacheType::kInt4, ArgumentError,
                "the decode kernel reads bf16 or int4 latent caches, got ", cache_type_name(type),
                " (mla_decode_kernel_usable says which caches it takes)");
  const int64_t n_mod = static_cast<int64_t>(aw.w_uk.size());
  const int64_t r = aw.w_uk[0].size(2);
  // One product gives every set's absorbed queries and k-bias terms: [b, h_kv, g, n_in]; the kernel reads
  // them in place through strided views (no copies), as it writes its results into the buffer that one
  // more product turns into the heads' outputs, v-biases included.
  at::Tensor qx = kv_head_product(q.reshape({b, h_kv, g, dh}), aw.w_in);
  MlaDecodeInputs in;
  in.qa = qx.narrow(-1, 0, n_mod * r).view({b, h_q, n_mod, r}).permute({2, 0, 1, 3});  // [n_mod, b, h_q, r]
  if (aw.n_bias > 0) in.qb = qx.narrow(-1, n_mod * r, n_mod).view({b, h_q, n_mod}).permute({2, 0, 1});
  in.qr = q_rot.defined() ? q_rot.reshape({b, h_q, R}) : q.reshape({b, h_q, dh}).narrow(-1, 0, R);  // [b, h_q, R]
  in.start = start;
  in.length = length;
  in.max_length = max_length;
  in.scale = scale;
  in.variant = model_decode_variant();  // auto unless VLM2MLA_DECODE_KERNEL asks for another kernel
  in.specialized = model_decode_specialized();
  in.grouped_rows = model_decode_grouped_rows();
  in.pure_splits = model_decode_pure_splits();
  in.pure_launch = model_decode_pure_launch();
  in.min_tiles_per_split = model_decode_min_tiles();
  in.max_tiles_per_split = model_decode_max_tiles();
  in.holds_image = n_mod == 2 && cache.holds_image();
  in.image_first = model_decode_image_first();
  if (n_mod == 2 && model_decode_segments()) in.split_bounds = cache.modality_segments();
  if (n_mod == 2 && model_decode_image_end()) in.image_end = cache.image_end();
  in.combine = model_decode_combine();
  in.score_clusters = model_decode_score_clusters();
  in.wide_warps = model_decode_wide_warps();
  in.wgmma_consumers = model_decode_wgmma_consumers();
  in.wgmma_producers = model_decode_wgmma_producers();
  if (n_mod == 2) in.modality = cache.modality_storage();
  if (type == CacheType::kBf16) {
    in.format = MlaCacheFormat::kBf16;
    in.latent = cs.plain();
    in.k_rope = ks.plain();
  } else {
    in.format = MlaCacheFormat::kInt4;
    in.latent_q = cs.quantized();
    in.k_rope_q = ks.quantized();
    in.window = cs.spec().window;
    in.latent_win = cs.window();
    in.k_rope_win = ks.window();
  }
  // [acc_0 | acc_1 | mass_0 mass_1 | zeros] per head, as wide as w_out's rows (absorbed_width): the mass columns
  // meet zero rows without v-biases, the pad columns always (zeroed: finite, so their products are 0)
  at::Tensor ox = out.defined() ? out : decode_output_buffer(c, aw, b, q.options());
  VLM2MLA_CHECK(ox.sizes() == at::IntArrayRef({b, h_kv, g, aw.w_out.size(1)}) && ox.scalar_type() == q.scalar_type() &&
                    ox.device() == q.device() && ox.is_contiguous(),
                ArgumentError, "mla_attention_absorbed_kernel: the output buffer is ", ox.sizes(), " ",
                ox.scalar_type(), ", expected a contiguous [", b, ", ", h_kv, ", ", g, ", ", aw.w_out.size(1), "] ",
                q.scalar_type(), " on ", q.device(), " (decode_output_buffer)");
  in.acc_out = ox.narrow(-1, 0, n_mod * r).view({b, h_q, n_mod, r}).permute({2, 0, 1, 3});
  in.mass_out = ox.narrow(-1, n_mod * r, n_mod).view({b, h_q, n_mod}).permute({2, 0, 1});
  // the output product by the combine kernel where its plan takes it, at most kCombineOutMostSequences sequences,
  // else the head product
  if (decode_combine_out_enabled() && b <= kCombineOutMostSequences && ox.is_cuda() &&
      ox.scalar_type() == at::kBFloat16 && aw.w_out.scalar_type() == at::kBFloat16 && aw.w_out.is_contiguous()) {
    in.w_out = aw.w_out;
    in.o_out = at::empty({b, h_q, dh}, q.options());
  }
  const MlaDecodeOutput res = mla_decode(in);
  if (res.o.defined()) return res.o.view({b, h_q, 1, dh});
  at::Tensor o = kv_head_product(ox, aw.w_out);  // [b, h_kv, g, d_h]
  return o.reshape({b, h_q, 1, dh});
}

}  // namespace vlm2mla
