// Which 64-token tiles a split of the decode kernels' split-KV plan attends (params.h), in one place for the CUDA
// kernels and the host (tests): uniform splits of tiles_per_split tiles, or each sequence's segments cut into
// splits of at most that many (MlaDecodeParams::split_bounds). No CUDA headers: plain C++ where nvcc is not the
// compiler.
#pragma once

#include <cstdint>

#ifdef __CUDACC__
#define VLM2MLA_HOST_DEVICE __host__ __device__ __forceinline__
#else
#define VLM2MLA_HOST_DEVICE inline
#endif

namespace vlm2mla {

constexpr int kSplitTileTokens = 64;  // tokens a tile (the kernels' kTile)

// Tiles [first, end) of split `s` over keys [lo, hi): tiles are aligned to multiples of 64 positions; the last split
// takes every remaining tile (so a too-small max_length costs balance, never keys).
VLM2MLA_HOST_DEVICE void split_tiles(int lo, int hi, int s, int splits, int tiles_per_split, int& first, int& end) {
  if (hi <= lo) {
    first = end = 0;
    return;
  }
  const int t0 = lo / kSplitTileTokens, t1 = (hi - 1) / kSplitTileTokens + 1;
  first = t0 + s * tiles_per_split;
  end = (s == splits - 1) ? t1 : (t1 < first + tiles_per_split ? t1 : first + tiles_per_split);
  if (first > end) first = end;
}

// The same over a sequence's segments: bounds[0..n_seg] are tile indices (position / 64) where segment k covers
// tiles [bounds[k], bounds[k + 1]), the first from the keys' first tile, the last to the keys' last (the generated
// tokens extend it). Each segment, clipped to the keys' tiles [t0, t1), is cut into chunks of at most
// tiles_per_split tiles; split s is the s-th chunk in order, the last split also every tile past its chunk's start
// (more chunks than splits: balance lost, never keys), a split past the chunks empty (first == end). Whatever the
// bounds hold, the splits cover [t0, t1) exactly once (bounds out of order are clamped: balance, not keys).
VLM2MLA_HOST_DEVICE void segment_split_tiles(int lo, int hi, int s, int splits, int tiles_per_split,
                                             const int32_t* bounds, int n_seg, int& first, int& end) {
  first = end = 0;
  if (hi <= lo) return;
  const int t0 = lo / kSplitTileTokens, t1 = (hi - 1) / kSplitTileTokens + 1;
  int idx = 0, seg_lo = t0;
  for (int k = 0; k < n_seg; ++k) {
    int seg_hi = k == n_seg - 1 ? t1 : int(bounds[k + 1]);
    seg_hi = seg_hi < seg_lo ? seg_lo : (seg_hi > t1 ? t1 : seg_hi);
    const int n = (seg_hi - seg_lo + tiles_per_split - 1) / tiles_per_split;
    if (s < idx + n) {
      first = seg_lo + (s - idx) * tiles_per_split;
      end = (s == splits - 1) ? t1 : (seg_hi < first + tiles_per_split ? seg_hi : first + tiles_per_split);
      return;
    }
    idx += n;
    seg_lo = seg_hi;
  }
  first = end = t1;  // past the chunks: empty
}

}  // namespace vlm2mla
