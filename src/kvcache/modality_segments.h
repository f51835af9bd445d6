// Each sequence's segments of keys of one kind, which the decode kernel's modality CTAs split along
// (MlaDecodeInputs::split_bounds; kernels/split_map.h's segment_split_tiles): so that a prompt's image leaves only
// the 64-token tiles on its edges mixed, where uniform splits as long as the whole context make every split mixed.
#pragma once

#include <ATen/ATen.h>

#include <cstdint>

#include "kernels/params.h"

namespace vlm2mla {

// Over positions [0, n) of `modality` ([b, n], bool or uint8, nonzero image; on any device: read on the host, a
// sync), each 64-token tile is text only, image only or both (the last tile by its positions below n); a segment is
// a maximal run of tiles of one kind. Where the last run is not text only, the tiles from ceil(n / 64) on (the
// generated tokens) start one more, and a partial last tile (n not a multiple of 64), which they will join, is a
// segment of its own. Returns int32 [b, K + 1] on the host, K the most segments of any sequence: row
// i holds 0, then the tile where each next segment of sequence i starts, then INT32_MAX (empty segments; the
// kernel's last segment runs to the keys' end). Undefined where no position is an image (uniform splits serve) or
// a sequence has more than max_segments segments (images too many to follow).
at::Tensor modality_segments(const at::Tensor& modality, int64_t max_segments = kMaxSplitSegments);

}  // namespace vlm2mla
