#include "models/qwen2_5_vl.h"

#include <algorithm>
#include <cmath>

#include "core/error.h"
#include "nn/layers.h"
#include "nn/rope.h"

namespace vlm2mla {

void for_each_qwen_vision_param(const QwenVisionConfig& c, const std::string& prefix,
                                QwenVisionWeights& w, const std::function<void(const ParamRef&)>& fn) {
  const int64_t d = c.hidden_size, m2 = c.spatial_merge_size * c.spatial_merge_size;
  auto linear = [&](const std::string& name, LinearWeights& lw, int64_t out, int64_t in) {
    fn({name + ".weight", {out, in}, &lw.weight});
    fn({name + ".bias", {out}, &lw.bias});
  };
  fn({prefix + "patch_embed.proj.weight",
      {d, c.in_channels, c.temporal_patch_size, c.patch_size, c.patch_size}, &w.patch_embed});
  for (int64_t i = 0; i < c.depth; ++i) {
    QwenVisionBlockWeights& b = w.blocks.at(static_cast<size_t>(i));
    const std::string bp = prefix + "blocks." + std::to_string(i) + ".";
    fn({bp + "norm1.weight", {d}, &b.norm1});
    fn({bp + "norm2.weight", {d}, &b.norm2});
    linear(bp + "attn.qkv", b.qkv, 3 * d, d);
    linear(bp + "attn.proj", b.proj, d, d);
    linear(bp + "mlp.gate_proj", b.gate_proj, c.intermediate_size, d);
    linear(bp + "mlp.up_proj", b.up_proj, c.intermediate_size, d);
    linear(bp + "mlp.down_proj", b.down_proj, d, c.intermediate_size);
  }
  fn({prefix + "merger.ln_q.weight", {d}, &w.merger_ln_q});
  linear(prefix + "merger.mlp.0", w.merger_fc1, d * m2, d * m2);
  linear(prefix + "merger.mlp.2", w.merger_fc2, c.out_hidden_size, d * m2);
}

QwenVisionTower::QwenVisionTower(QwenVisionConfig config, QwenVisionWeights weights,
                                 AttentionBackend backend)
    : config_(std::move(config)), weights_(std::move(weights)), backend_(backend) {
  // VisionRotaryEmbedding(head_dim / 2, theta 10000): one table shared by the height and width axes.
  RopeParameters p;
  p.rope_theta = 10000.0;
  inv_freq_ = make_rope_table(p, config_.head_dim() / 2).inv_freq;
}

QwenVisionTower QwenVisionTower::load(const QwenVisionConfig& config, const std::string& prefix,
                                      const ParamFiller& fill) {
  QwenVisionWeights w;
  w.blocks.resize(static_cast<size_t>(config.depth));
  for_each_qwen_vision_param(config, prefix, w, fill);
  return QwenVisionTower(config, std::move(w), default_attention_backend());
}

namespace {

struct Grid {
  int64_t t, h, w;
};

std::vector<Grid> read_grids(const at::Tensor& grid_thw, const QwenVisionConfig& c,
                             QwenVisual what = QwenVisual::kImage) {
  const char* key = grid_thw_key(what);
  VLM2MLA_CHECK(grid_thw.defined() && grid_thw.dim() == 2 && grid_thw.size(1) == 3, ArgumentError,
                key, " must be [", what == QwenVisual::kVideo ? "videos" : "images",
                ", 3] (t, h, w), got ", grid_thw.defined() ? grid_thw.sizes() : at::IntArrayRef{});
  at::Tensor g = grid_thw.to(at::kCPU).to(at::kLong);
  std::vector<Grid> grids;
  for (int64_t i = 0; i < g.size(0); ++i) {
    Grid x{g[i][0].item<int64_t>(), g[i][1].item<int64_t>(), g[i][2].item<int64_t>()};
    VLM2MLA_CHECK(x.t > 0 && x.h > 0 && x.w > 0 && x.h % c.spatial_merge_size == 0 &&
                      x.w % c.spatial_merge_size == 0,
                  ArgumentError, key, "[", i, "] = (", x.t, ", ", x.h, ", ", x.w,
                  "): sizes must be positive and h, w multiples of spatial_merge_size ",
                  c.spatial_merge_size);
    grids.push_back(x);
  }
  return grids;
}

// [s, heads, hd] rotated in float32 with [s, hd] cos/sin, back in x's dtype.
at::Tensor rope_vision(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin) {
  return apply_rope(x.to(at::kFloat), cos.unsqueeze(-2), sin.unsqueeze(-2)).to(x.scalar_type());  // [s, 1, hd]
}

// Block-diagonal mask over segments [cu[i], cu[i+1]): [1, 1, n, n] bool.
at::Tensor segment_mask(const std::vector<int64_t>& cu, int64_t n, at::Device device) {
  at::Tensor seg = at::empty({n}, at::kLong);
  auto acc = seg.accessor<int64_t, 1>();
  for (size_t i = 0; i + 1 < cu.size(); ++i) {
    for (int64_t j = cu[i]; j < cu[i + 1]; ++j) acc[j] = static_cast<int64_t>(i);
  }
  seg = seg.to(device);
  return seg.view({n, 1}).eq(seg.view({1, n})).view({1, 1, n, n});
}

}  // namespace

const char* pixel_values_key(QwenVisual v) {
  switch (v) {
    case QwenVisual::kImage: return "pixel_values";
    case QwenVisual::kVideo: return "pixel_values_videos";
  }
  return "?";
}

const char* grid_thw_key(QwenVisual v) {
  switch (v) {
    case QwenVisual::kImage: return "image_grid_thw";
    case QwenVisual::kVideo: return "video_grid_thw";
  }
  return "?";
}

QwenWindows qwen_window_layout(const QwenVisionConfig& c, const at::Tensor& grid_thw) {
  const int64_t m = c.spatial_merge_size, unit = m * m;
  const int64_t ws = c.window_size / m / c.patch_size;  // window side in merged tokens
  QwenWindows out;
  std::vector<int64_t> index;
  std::vector<int64_t> cu = {0};
  out.cu_seqlens = {0};
  int64_t base = 0;
  for (const Grid& g : read_grids(grid_thw, c)) {
    const int64_t gh = g.h / m, gw = g.w / m;
    // Pad the merged grid up to whole windows (a full extra window when already divisible, as
    // transformers does; those windows are empty and vanish), then walk window by window.
    const int64_t ph = gh + (ws - gh % ws), pw = gw + (ws - gw % ws);
    for (int64_t t = 0; t < g.t; ++t) {
      for (int64_t wy = 0; wy < ph / ws; ++wy) {
        for (int64_t wx = 0; wx < pw / ws; ++wx) {
          int64_t count = 0;
          for (int64_t y = wy * ws; y < (wy + 1) * ws; ++y) {
            for (int64_t x = wx * ws; x < (wx + 1) * ws; ++x) {
              if (y < gh && x < gw) {
                index.push_back(base + t * gh * gw + y * gw + x);
                ++count;
              }
            }
          }
          const int64_t next = cu.back() + count * unit;
          if (next != cu.back()) cu.push_back(next);  // unique_consecutive drops empty windows
        }
      }
      out.cu_seqlens.push_back(out.cu_seqlens.back() + g.h * g.w);
    }
    base += g.t * gh * gw;
  }
  out.window_index = at::tensor(index, at::kLong);
  out.cu_window_seqlens = cu;
  return out;
}

at::Tensor QwenVisionTower::rotary(const at::Tensor& grid_thw) const {
  const int64_t m = config_.spatial_merge_size;
  std::vector<int64_t> hpos, wpos;
  for (const Grid& g : read_grids(grid_thw, config_)) {
    for (int64_t t = 0; t < g.t; ++t) {
      // Patches in merge-unit order: (h/m, w/m) blocks of m x m patches.
      for (int64_t by = 0; by < g.h / m; ++by)
        for (int64_t bx = 0; bx < g.w / m; ++bx)
          for (int64_t y = 0; y < m; ++y)
            for (int64_t x = 0; x < m; ++x) {
              hpos.push_back(by * m + y);
              wpos.push_back(bx * m + x);
            }
    }
  }
  at::Tensor inv = inv_freq_;
  at::Tensor h = at::tensor(hpos, at::kLong).to(at::kFloat).unsqueeze(1) * inv.unsqueeze(0);
  at::Tensor w = at::tensor(wpos, at::kLong).to(at::kFloat).unsqueeze(1) * inv.unsqueeze(0);
  return at::cat({h, w}, 1);  // [patches, head_dim / 2]
}

at::Tensor QwenVisionTower::forward(const at::Tensor& pixel_values, const at::Tensor& grid_thw, QwenVisual what,
                                   int64_t max_chunk_patches) const {
  const auto& c = config_;
  const std::vector<Grid> grids = read_grids(grid_thw, c, what);
  int64_t patches = 0;
  for (const Grid& g : grids) patches += g.t * g.h * g.w;
  VLM2MLA_CHECK(pixel_values.dim() == 2 && pixel_values.size(0) == patches &&
                    pixel_values.size(1) == c.patch_dim(),
                ArgumentError, pixel_values_key(what), " has shape ", pixel_values.sizes(),
                ", expected [", patches, ", ", c.patch_dim(), "] for ", grid_thw_key(what),
                " (sum of t*h*w patches of C*T*p*p values)");
  VLM2MLA_CHECK(max_chunk_patches > 0, ArgumentError, "QwenVisionTower::forward: max_chunk_patches must be > 0");
  if (patches <= max_chunk_patches) return encode(pixel_values, grid_thw);
  // runs of whole images (videos), each at most max_chunk_patches patches unless one image has more
  const at::Tensor grid_cpu = grid_thw.to(at::kCPU);
  std::vector<at::Tensor> out;
  int64_t first = 0, row = 0, run = 0;
  for (size_t i = 0; i <= grids.size(); ++i) {
    const int64_t n = i < grids.size() ? grids[i].t * grids[i].h * grids[i].w : 0;
    if (i == grids.size() || (run > 0 && run + n > max_chunk_patches)) {
      const int64_t count = static_cast<int64_t>(i) - first;
      out.push_back(encode(pixel_values.narrow(0, row, run), grid_cpu.narrow(0, first, count)));
      first = static_cast<int64_t>(i);
      row += run;
      run = 0;
    }
    run += n;
  }
  return at::cat(out, 0);
}

at::Tensor QwenVisionTower::encode(const at::Tensor& pixel_values, const at::Tensor& grid_thw) const {
  const auto& c = config_;
  const int64_t patches = pixel_values.size(0);
  const at::Tensor& pe = weights_.patch_embed;
  const int64_t d = c.hidden_size, unit = c.spatial_merge_size * c.spatial_merge_size;
  // The 3-D conv with kernel = stride = one patch is a matmul over the flattened patch.
  at::Tensor x = at::matmul(pixel_values.to(pe.device(), pe.scalar_type()), pe.view({d, -1}).t());

  QwenWindows win = qwen_window_layout(c, grid_thw);
  at::Tensor order = win.window_index.to(pe.device());
  x = x.view({patches / unit, unit, d}).index_select(0, order).view({patches, d});
  at::Tensor rot = rotary(grid_thw).view({patches / unit, unit, -1}).index_select(0, win.window_index)
                       .view({patches, -1});
  at::Tensor emb = at::cat({rot, rot}, -1).to(pe.device());  // [patches, head_dim]
  at::Tensor cos = emb.cos(), sin = emb.sin();

  const int64_t heads = c.num_heads, hd = c.head_dim();
  const double scale = 1.0 / std::sqrt(static_cast<double>(hd));
  at::Tensor full_mask = segment_mask(win.cu_seqlens, patches, pe.device());
  at::Tensor window_mask = segment_mask(win.cu_window_seqlens, patches, pe.device());
  for (int64_t i = 0; i < c.depth; ++i) {
    const QwenVisionBlockWeights& b = weights_.blocks[static_cast<size_t>(i)];
    const bool full = std::find(c.fullatt_block_indexes.begin(), c.fullatt_block_indexes.end(), i) !=
                      c.fullatt_block_indexes.end();
    at::Tensor h = rms_norm(x, b.norm1, 1e-6);
    at::Tensor qkv = linear(h, b.qkv).view({patches, 3, heads, hd}).permute({1, 0, 2, 3});
    at::Tensor q = rope_vision(qkv[0], cos, sin), k = rope_vision(qkv[1], cos, sin);
    // [1, heads, patches, hd]
    at::Tensor a = attention(backend_, q.transpose(0, 1).unsqueeze(0), k.transpose(0, 1).unsqueeze(0),
                             qkv[2].transpose(0, 1).unsqueeze(0), full ? full_mask : window_mask, scale);
    x = x + linear(a.squeeze(0).transpose(0, 1).reshape({patches, d}), b.proj);
    x = x + swiglu_mlp(rms_norm(x, b.norm2, 1e-6), b.gate_proj, b.up_proj, b.down_proj);
  }
  at::Tensor merged = rms_norm(x, weights_.merger_ln_q, 1e-6).view({patches / unit, unit * d});
  merged = linear(at::gelu(linear(merged, weights_.merger_fc1)), weights_.merger_fc2);
  at::Tensor reverse = at::argsort(win.window_index).to(pe.device());
  return merged.index_select(0, reverse);  // [patches / unit, out_hidden]
}

QwenRopeIndex qwen_rope_index(const QwenVisionConfig& c, const at::Tensor& input_ids,
                              const at::Tensor& attention_mask, const at::Tensor& image_grid_thw,
                              const at::Tensor& video_grid_thw, const at::Tensor& second_per_grid_ts) {
  at::Tensor ids = input_ids.to(at::kCPU).to(at::kLong);
  const int64_t b = ids.size(0), s = ids.size(1), m = c.spatial_merge_size;
  at::Tensor mask = attention_mask.defined() ? attention_mask.to(at::kCPU).ne(0)
                                             : at::ones({b, s}, at::kBool);
  std::vector<Grid> grids[2];  // QwenVisual order: images, videos
  if (image_grid_thw.defined() && image_grid_thw.numel() > 0) grids[0] = read_grids(image_grid_thw, c);
  if (video_grid_thw.defined() && video_grid_thw.numel() > 0) {
    grids[1] = read_grids(video_grid_thw, c, QwenVisual::kVideo);
  }
  // Temporal spacing per video: tokens_per_second * int(second_per_grid_t), int() truncating.
  std::vector<int64_t> interval(grids[1].size(), c.tokens_per_second);
  if (second_per_grid_ts.defined()) {
    VLM2MLA_CHECK(second_per_grid_ts.dim() == 1 &&
                      second_per_grid_ts.size(0) == static_cast<int64_t>(grids[1].size()),
                  ArgumentError, "second_per_grid_ts has shape ", second_per_grid_ts.sizes(),
                  ", expected [", grids[1].size(), "] (one value per video of video_grid_thw)");
    at::Tensor sec = second_per_grid_ts.to(at::kCPU).to(at::kDouble);
    for (size_t i = 0; i < interval.size(); ++i) {
      const double v = sec[static_cast<int64_t>(i)].item<double>();
      VLM2MLA_CHECK(std::isfinite(v) && v >= 0, ArgumentError, "second_per_grid_ts[", i, "] = ", v,
                    ": must be a finite number of seconds >= 0");
      interval[i] = c.tokens_per_second * static_cast<int64_t>(std::trunc(v));
    }
  }
  QwenRopeIndex out;
  out.position_ids = at::zeros({3, b, s}, at::kLong);  // padding keeps 0, as transformers 5
  out.next_position = at::zeros({3, b}, at::kLong);
  auto pos = out.position_ids.accessor<int64_t, 3>();
  auto id = ids.accessor<int64_t, 2>();
  auto valid = mask.accessor<bool, 2>();
  size_t next_grid[2] = {0, 0};
  const char* noun[2] = {"image", "video"};
  for (int64_t r = 0; r < b; ++r) {
    int64_t current = 0, last = -1;  // last: the row's last valid token
    int64_t j = 0;
    while (j < s) {
      if (!valid[r][j]) {
        ++j;
        continue;
      }
      const int kind = id[r][j] == c.image_token_id ? 0 : id[r][j] == c.video_token_id ? 1 : -1;
      if (kind < 0) {
        for (int64_t a = 0; a < 3; ++a) pos[a][r][j] = current;
        last = j;
        ++current, ++j;
        continue;
      }
      // A run of image (video) tokens: the next image's (video's) grid.
      const int64_t token = kind == 0 ? c.image_token_id : c.video_token_id;
      const char* key = kind == 0 ? "image_grid_thw" : "video_grid_thw";
      int64_t end = j;
      while (end < s && valid[r][end] && id[r][end] == token) ++end;
      const size_t index = next_grid[kind]++;
      VLM2MLA_CHECK(index < grids[kind].size(), ArgumentError, "input_ids holds more runs of ",
                    noun[kind], " tokens (id ", token, ") than ", key, " has ", noun[kind], "s (",
                    grids[kind].size(), ")");
      const Grid g = grids[kind][index];
      const int64_t gh = g.h / m, gw = g.w / m;
      VLM2MLA_CHECK(end - j == g.t * gh * gw, ArgumentError, "input_ids row ", r, ": a run of ",
                    end - j, " ", noun[kind], " tokens at position ", j, " does not match ", noun[kind],
                    " ", index, " of ", key, " (", g.t, "x", g.h, "x", g.w, " patches = ",
                    g.t * gh * gw, " tokens after merging)");
      const int64_t step = kind == 0 ? 1 : interval[index];
      int64_t k = j;
      for (int64_t t = 0; t < g.t; ++t)
        for (int64_t y = 0; y < gh; ++y)
          for (int64_t x = 0; x < gw; ++x, ++k) {
            pos[0][r][k] = current + t * step;
            pos[1][r][k] = current + y;
            pos[2][r][k] = current + x;
          }
      last = end - 1;
      current += std::max(gh, gw);
      j = end;
    }
    for (int64_t a = 0; a < 3; ++a) out.next_position[a][r] = last < 0 ? 0 : pos[a][r][last] + 1;
  }
  for (int kind = 0; kind < 2; ++kind) {
    const int64_t token = kind == 0 ? c.image_token_id : c.video_token_id;
    VLM2MLA_CHECK(next_grid[kind] == grids[kind].size(), ArgumentError,
                  kind == 0 ? "image_grid_thw" : "video_grid_thw", " has ", grids[kind].size(), " ",
                  noun[kind], "s but input_ids holds ", next_grid[kind], " runs of ", noun[kind],
                  " tokens (id ", token, ")");
  }
  return out;
}

}  // namespace vlm2mla
