// RoPE-pair rank files: reading (.safetensors, .pth), validation, writing, and the rankings
// themselves (from scores, or the fixed high/low/uniform strategies).
#include "convert/rope_ranks.h"

#include <map>
#include <sstream>
#include <utility>
#include <vector>

#include "core/error.h"
#include "core/fs.h"
#include "io/safetensors.h"
#include "io/torch_pth.h"

namespace vlm2mla::convert {
namespace {

constexpr const char* kRankName = "rope_rank";
constexpr const char* kScoreName = "score";
constexpr const char* kFormat = "vlm2mla-rope-ranks";

std::string shape_of(const at::Tensor& t) {
  std::ostringstream os;
  os << t.sizes() << " " << t.scalar_type();
  return os.str();
}

// The first (layer, head) whose row is not a permutation of 0..h-1 written twice; throws FormatError.
void check_rows(const at::Tensor& rank, const std::string& what) {
  const at::Tensor r = rank.contiguous();
  const int64_t layers = r.size(0), heads = r.size(1), d = r.size(2), h = d / 2;
  const uint8_t* p = r.data_ptr<uint8_t>();
  std::vector<int> seen(static_cast<size_t>(h));
  for (int64_t l = 0; l < layers; ++l) {
    for (int64_t g = 0; g < heads; ++g) {
      const uint8_t* row = p + (l * heads + g) * d;
      std::fill(seen.begin(), seen.end(), -1);
      for (int64_t k = 0; k < h; ++k) {
        VLM2MLA_CHECK(row[k] < h, FormatError, what, ": RoPE ranks of layer ", l, ", kv head ", g,
                      ": rank ", int(row[k]), " at pair ", k, " is out of 0..", h - 1,
                      " (expected a permutation of 0..", h - 1, ")");
        VLM2MLA_CHECK(seen[row[k]] < 0, FormatError, what, ": RoPE ranks of layer ", l, ", kv head ",
                      g, ": rank ", int(row[k]), " appears at pairs ", seen[row[k]], " and ", k,
                      " (expected a permutation of 0..", h - 1, ")");
        seen[row[k]] = static_cast<int>(k);
      }
      for (int64_t k = 0; k < h; ++k)
        VLM2MLA_CHECK(row[k] == row[h + k], FormatError, what, ": RoPE ranks of layer ", l,
                      ", kv head ", g, ": the two halves differ at pair ", k, " (", int(row[k]),
                      " vs ", int(row[h + k]), "; expected the permutation written twice)");
    }
  }
}

void check_structure(const at::Tensor& rank, const std::string& what) {
  VLM2MLA_CHECK(rank.defined(), FormatError, what, ": no RoPE rank tensor");
  VLM2MLA_CHECK(rank.scalar_type() == at::kByte && rank.dim() == 3, FormatError, what,
                ": RoPE ranks are ", shape_of(rank), " (expected uint8 [layers, n_kv, head_dim])");
  VLM2MLA_CHECK(rank.size(2) > 0 && rank.size(2) % 2 == 0 && rank.size(2) <= 512, FormatError, what,
                ": RoPE ranks have head_dim ", rank.size(2), " (expected an even number in 2..512)");
}

}  // namespace

void validate_rope_ranks(const RopeRanks& ranks, int64_t layers, int64_t n_kv, int64_t head_dim,
                         const std::string& what) {
  check_structure(ranks.rank, what);
  VLM2MLA_CHECK(ranks.rank.sizes() == at::IntArrayRef({layers, n_kv, head_dim}), FormatError, what,
                ": RoPE ranks are ", ranks.rank.sizes(), " (expected [", layers, ", ", n_kv, ", ",
                head_dim, "] = [layers, n_kv, head_dim])");
  if (ranks.score.defined()) {
    VLM2MLA_CHECK(ranks.score.scalar_type() == at::kFloat &&
                      ranks.score.sizes() == at::IntArrayRef({layers, n_kv, head_dim / 2}),
                  FormatError, what, ": RoPE scores are ", shape_of(ranks.score), " (expected float32 [",
                  layers, ", ", n_kv, ", ", head_dim / 2, "])");
  }
  check_rows(ranks.rank.cpu(), what);
}

RopeRanks read_rope_ranks(const std::string& path) {
  RopeRanks out;
  out.source = path;
  const std::string ext = fs::extension(path);
  if (ext == ".safetensors") {
    io::SafetensorsFile file(path);
    VLM2MLA_CHECK(file.contains(kRankName), FormatError, path, ": no tensor '", kRankName,
                  "' (expected a vlm2mla RoPE rank file)");
    for (const std::string& name : file.names())
      VLM2MLA_CHECK(name == kRankName || name == kScoreName, FormatError, path, ": unexpected tensor '",
                    name, "' (a rank file holds '", kRankName, "' and optionally '", kScoreName, "')");
    out.rank = file.tensor(kRankName).clone();
    if (file.contains(kScoreName)) out.score = file.tensor(kScoreName).clone();
    const auto& meta = file.header().metadata;
    if (auto it = meta.find("strategy"); it != meta.end()) out.strategy = it->second;
  } else if (ext == ".pth" || ext == ".pt") {
    out.rank = io::read_pth_tensor(path);
  } else {
    throw ArgumentError(detail::concat(path, ": unknown RoPE rank file type '", ext,
                                       "' (expected .safetensors or .pth)"));
  }
  check_structure(out.rank, path);
  validate_rope_ranks(out, out.rank.size(0), out.rank.size(1), out.rank.size(2), path);
  return out;
}

void write_rope_ranks(const std::string& path, const RopeRanks& ranks) {
  check_structure(ranks.rank, "write_rope_ranks(" + path + ")");
  validate_rope_ranks(ranks, ranks.layers(), ranks.n_kv(), ranks.head_dim(), "write_rope_ranks(" + path + ")");
  std::vector<std::pair<std::string, at::Tensor>> tensors = {{kRankName, ranks.rank}};
  if (ranks.score.defined()) tensors.emplace_back(kScoreName, ranks.score);
  std::map<std::string, std::string> meta = {{"format", kFormat}};
  if (!ranks.strategy.empty()) meta["strategy"] = ranks.strategy;
  if (!ranks.source.empty()) meta["source"] = ranks.source;
  io::write_safetensors(path, tensors, meta);
}

at::Tensor kept_pairs(const RopeRanks& ranks, int64_t r) {
  VLM2MLA_CHECK(ranks.rank.defined() && ranks.rank.dim() == 3, ArgumentError,
                "kept_pairs: no [layers, n_kv, head_dim] rank tensor");
  const int64_t h = ranks.head_dim() / 2;
  VLM2MLA_CHECK(r > 0 && r <= h, ArgumentError, "kept_pairs: r = ", r, " pairs is out of 1..", h,
                " (head_dim ", ranks.head_dim(), ")");
  return ranks.rank.slice(2, 0, h).lt(r);  // [layers, n_kv, h]
}

RopeRanks ranks_from_scores(const at::Tensor& score) {
  VLM2MLA_CHECK(score.defined() && score.dim() == 3 && score.is_floating_point(), ArgumentError,
                "ranks_from_scores: scores must be a floating [layers, n_kv, head_dim/2] tensor");
  const int64_t h = score.size(2);
  VLM2MLA_CHECK(h > 0 && h <= 256, ArgumentError, "ranks_from_scores: ", h,
                " pairs per head (expected 1..256, so that ranks fit in uint8)");
  const at::Tensor s = score.detach().to(at::kCPU, at::kFloat).contiguous();
  VLM2MLA_CHECK(s.isfinite().all().item<bool>(), ArgumentError, "ranks_from_scores: scores contain NaN or inf");
  // order[..., j] = the pair with the j-th highest score; ties keep the lower index first.
  const at::Tensor order = std::get<1>(s.sort(/*stable=*/true, /*dim=*/2, /*descending=*/true));
  at::Tensor rank = at::empty_like(order);
  rank.scatter_(2, order, at::arange(h, order.options()).expand_as(order));  // [L, n_kv, h]
  RopeRanks out;
  out.rank = at::cat({rank, rank}, 2).to(at::kByte);  // [L, n_kv, 2h]
  out.score = s;
  out.source = "scores";
  out.strategy = "scores";
  return out;
}

RopeRanks fixed_ranks(const std::string& strategy, int64_t layers, int64_t n_kv, int64_t head_dim, int64_t r) {
  VLM2MLA_CHECK(layers > 0 && n_kv > 0 && head_dim > 0 && head_dim % 2 == 0 && head_dim <= 512,
                ArgumentError, "fixed_ranks: layers ", layers, ", n_kv ", n_kv, ", head_dim ", head_dim,
                " (expected positive sizes and an even head_dim <= 512)");
  const int64_t h = head_dim / 2;
  VLM2MLA_CHECK(r > 0 && r <= h, ArgumentError, "fixed_ranks: r = ", r, " is out of 1..", h);
  std::vector<bool> kept(static_cast<size_t>(h), false);
  if (strategy == "high") {
    for (int64_t k = 0; k < r; ++k) kept[k] = true;
  } else if (strategy == "low") {
    for (int64_t k = h - r; k < h; ++k) kept[k] = true;
  } else if (strategy == "uniform") {
    for (int64_t i = 0; i < r; ++i) kept[(i * head_dim) / (2 * r)] = true;  // floor(i*d_h/(2r)), distinct
  } else {
    throw ArgumentError("fixed_ranks: unknown strategy '" + strategy + "' (expected high, low or uniform)");
  }
  std::vector<uint8_t> row(static_cast<size_t>(head_dim));
  int64_t next = 0;
  for (int pass = 0; pass < 2; ++pass)  // kept pairs first, then the others, each in index order
    for (int64_t k = 0; k < h; ++k)
      if (kept[k] == (pass == 0)) row[k] = row[h + k] = static_cast<uint8_t>(next++);
  at::Tensor one = at::from_blob(row.data(), {head_dim}, at::kByte).clone();
  RopeRanks out;
  out.rank = one.expand({layers, n_kv, head_dim}).contiguous();
  out.source = "fixed:" + strategy;
  out.strategy = strategy;
  return out;
}

}  // namespace vlm2mla::convert
