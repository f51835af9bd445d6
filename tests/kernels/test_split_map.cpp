// The tiles a decode kernel split attends (kernels/split_map.h), on the host: uniform splits and splits along each
// sequence's segments cover a sequence's key tiles exactly once, in order, whatever the bounds hold (sorted, out of
// order, past the keys, fewer splits than chunks, empty key ranges); along sorted segments no split crosses a
// segment's bound, and each is at most tiles_per_split long but where the last split takes the rest; with one
// segment they are the uniform splits, split for split.
#include <gtest/gtest.h>

#include <algorithm>
#include <climits>
#include <cstdint>
#include <random>
#include <vector>

#include "kernels/split_map.h"

namespace vlm2mla {
namespace {

// Splits 0..splits-1 over keys [lo, hi): each split's [first, end), via `map`.
template <typename Map>
std::vector<std::pair<int, int>> all_splits(int splits, Map map) {
  std::vector<std::pair<int, int>> out;
  for (int s = 0; s < splits; ++s) {
    int first = -1, end = -1;
    map(s, first, end);
    out.emplace_back(first, end);
  }
  return out;
}

// The non-empty splits are consecutive ranges covering [t0, t1) in split order.
void expect_cover(const std::vector<std::pair<int, int>>& got, int lo, int hi, const char* what) {
  const int t0 = hi > lo ? lo / kSplitTileTokens : 0, t1 = hi > lo ? (hi - 1) / kSplitTileTokens + 1 : 0;
  int at = t0;
  for (const auto& [first, end] : got) {
    ASSERT_LE(first, end) << what;
    if (first == end) continue;
    EXPECT_EQ(first, at) << what << ": a gap or an overlap at tile " << at;
    at = end;
  }
  EXPECT_EQ(at, t1) << what << ": keys [" << lo << ", " << hi << ")";
}

TEST(SplitMap, UniformSplitsCoverTheKeysOnce) {
  std::mt19937 rng(7);
  for (int trial = 0; trial < 2000; ++trial) {
    const int lo = int(rng() % 3000), hi = lo + int(rng() % 5000) - 200;  // some empty ranges
    const int splits = 1 + int(rng() % 12), tps = 1 + int(rng() % 40);
    const auto got = all_splits(splits, [&](int s, int& f, int& e) { split_tiles(lo, hi, s, splits, tps, f, e); });
    expect_cover(got, lo, hi, "uniform");
    // the uniform splits are the segments' with one segment (which reads no bounds), split for split
    const auto one = all_splits(splits, [&](int s, int& f, int& e) {
      segment_split_tiles(lo, hi, s, splits, tps, nullptr, 1, f, e);
    });
    for (int s = 0; s < splits; ++s) {
      const bool empty = got[size_t(s)].first == got[size_t(s)].second;
      EXPECT_EQ(empty, one[size_t(s)].first == one[size_t(s)].second) << s;
      if (!empty) {
        EXPECT_EQ(got[size_t(s)], one[size_t(s)]) << s;
      }
    }
  }
}

TEST(SplitMap, SegmentSplitsCoverTheKeysOnceWhateverTheBounds) {
  std::mt19937 rng(11);
  for (int trial = 0; trial < 4000; ++trial) {
    const int lo = int(rng() % 2000), hi = lo + int(rng() % 6000) - 100;
    const int tps = 1 + int(rng() % 30), n_seg = 1 + int(rng() % 16);
    std::vector<int32_t> bounds(size_t(n_seg) + 1);
    for (auto& v : bounds) v = int32_t(rng() % 140);
    if (trial % 3 == 0) std::sort(bounds.begin(), bounds.end());  // as the cache writes them
    if (trial % 5 == 0) bounds.back() = INT32_MAX;                // padding
    const int chunks_bound = ((hi > lo ? (hi - 1) / 64 + 1 - lo / 64 : 0) + tps - 1) / tps + n_seg;
    // enough splits for every chunk, and fewer (the last split takes the rest)
    for (int splits : {chunks_bound, 1 + int(rng() % std::max(1, chunks_bound))}) {
      const auto got = all_splits(splits, [&](int s, int& f, int& e) {
        segment_split_tiles(lo, hi, s, splits, tps, bounds.data(), n_seg, f, e);
      });
      expect_cover(got, lo, hi, "segments");
    }
  }
}

TEST(SplitMap, SegmentSplitsKeepInsideSortedSegments) {
  // a prompt's segments at 32k: a mixed tile, the image's 35 tiles, a mixed tile, the text (then padding)
  const std::vector<int32_t> bounds = {0, 1, 36, 37, INT32_MAX, INT32_MAX};
  const int n_seg = 5, lo = 0, hi = 32768 + 16 + 2304;
  for (int tps : {1, 8, 64, 512, 4096}) {
    const int t1 = (hi - 1) / 64 + 1;
    const int splits = (t1 + tps - 1) / tps + n_seg;
    const auto got = all_splits(splits, [&](int s, int& f, int& e) {
      segment_split_tiles(lo, hi, s, splits, tps, bounds.data(), n_seg, f, e);
    });
    expect_cover(got, lo, hi, "prompt");
    for (const auto& [first, end] : got) {
      if (first == end) continue;
      EXPECT_LE(end - first, tps);
      for (int32_t b : {1, 36, 37}) EXPECT_FALSE(first < b && b < end) << "split [" << first << ", " << end
                                                                       << ") crosses bound " << b << " at " << tps;
    }
    if (tps >= 512) {  // one split a segment: [0, 1), [1, 36), [36, 37), then the text in chunks of tps
      ASSERT_GE(got.size(), 4u);
      EXPECT_EQ(got[0], std::make_pair(0, 1));
      EXPECT_EQ(got[1], std::make_pair(1, 36));
      EXPECT_EQ(got[2], std::make_pair(36, 37));
      EXPECT_EQ(got[3].first, 37);
    }
  }
  // left padding: keys from position 100 (tile 1) skip segment 0 entirely
  int first = -1, end = -1;
  segment_split_tiles(100, 5000, 0, 8, 64, bounds.data(), n_seg, first, end);
  EXPECT_EQ(first, 1);
  EXPECT_EQ(end, 36);
}

}  // namespace
}  // namespace vlm2mla
