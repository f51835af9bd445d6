#include "kvcache/modality_segments.h"

#include <algorithm>
#include <limits>
#include <vector>

#include "core/error.h"
#include "kernels/split_map.h"

namespace vlm2mla {

at::Tensor modality_segments(const at::Tensor& modality, int64_t max_segments) {
  VLM2MLA_CHECK(modality.defined() && modality.dim() == 2, ArgumentError,
                "modality_segments: modality [b, n] expected, got ",
                modality.defined() ? modality.sizes() : at::IntArrayRef{});
  VLM2MLA_CHECK(max_segments >= 1, ArgumentError, "modality_segments: max_segments must be >= 1, got ", max_segments);
  const at::Tensor m = modality.to(at::kCPU).to(at::kByte).contiguous();
  const int64_t b = m.size(0), n = m.size(1), tiles = (n + kSplitTileTokens - 1) / kSplitTileTokens;
  const uint8_t* data = m.data_ptr<uint8_t>();
  if (n == 0 || !std::any_of(data, data + b * n, [](uint8_t v) { return v != 0; })) return {};
  std::vector<std::vector<int32_t>> starts(static_cast<size_t>(b));
  size_t most = 1;
  for (int64_t i = 0; i < b; ++i) {
    const uint8_t* row = data + i * n;
    std::vector<int32_t>& st = starts[static_cast<size_t>(i)];
    int kind = -1;  // 0 text only, 1 image only, 2 both
    for (int64_t t = 0; t < tiles; ++t) {
      bool text = false, image = false;
      const int64_t end = std::min(n, (t + 1) * kSplitTileTokens);
      for (int64_t j = t * kSplitTileTokens; j < end; ++j) (row[j] ? image : text) = true;
      const int k = text && image ? 2 : image ? 1 : 0;
      if (k != kind) st.push_back(int32_t(t));
      kind = k;
    }
    if (kind != 0) {  // the generated text after an image's last tile; a partial last tile, which it will join, alone
      if (n % kSplitTileTokens != 0 && st.back() != int32_t(tiles - 1)) st.push_back(int32_t(tiles - 1));
      st.push_back(int32_t(tiles));
    }
    if (static_cast<int64_t>(st.size()) > max_segments) return {};
    most = std::max(most, st.size());
  }
  at::Tensor out = at::full({b, static_cast<int64_t>(most) + 1}, std::numeric_limits<int32_t>::max(), at::kInt);
  int32_t* o = out.data_ptr<int32_t>();
  for (int64_t i = 0; i < b; ++i) {
    const std::vector<int32_t>& st = starts[static_cast<size_t>(i)];
    std::copy(st.begin(), st.end(), o + i * (static_cast<int64_t>(most) + 1));  // st[0] == 0
  }
  return out;
}

}  // namespace vlm2mla
