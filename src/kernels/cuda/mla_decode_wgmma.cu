// The warpgroup-MMA (wgmma) decode kernel over an int4 latent cache: MlaDecodeVariant::kWgmma, kAuto's first choice
// where it takes the call (since session 37; the warp-rows kernel is its twin; both are checked against the CPU
// reference). Built for sm_90a alone (wgmma is arch-specific: this translation unit has a library of its own,
// CMakeLists.txt); the plan refuses it by name on any other device and for any sizes but Qwen2.5-VL-7B's converted
// ones (r_kv 128, h_kv 4, d_rope 32, h_q 28; int4 groups of 32, 64 or 128). docs/KERNELS.md, "The wgmma decode
// kernel" (sessions 36, 37), says why and what it measured.
//
// Why: over an int4 store the warp-rows kernel passes keys at nearly the bf16 kernel's rate (~6.5 G keys/s on the
// H200, 24% of the copy rate at 160 bytes a key): it is bound by the per-key instructions (mma.sync with ldmatrix
// feeds, the dequantization, the online softmax), not by bytes. Here a warpgroup issues one m64n32k16 MMA where
// the warp-rows kernel issues sixteen m16n8k16 ones with their feeds, and the dequantization moves to warps of its
// own, beside the MMAs rather than in their path.
//
// Layout. A CTA is one (split, modality, sequence) of the modality CTAs' partials (params.h; n_mod 1: one set) in
// warpgroups of 128 threads: NP producers, then NC consumers. NP 0 with NC 2 (kAuto's default from two sequences,
// session 39): no producers; each consumer takes every other tile of the split and dequantizes it itself, into the
// A registers of its S^T MMAs (wgmma's A from registers; the layout above ra_src), and stores the latent's part by
// stmatrix into a latent tile of its own for O^T's MMAs: half the shared-memory traffic a tile of the layouts with
// producers (Nsight Compute had their L1 at 85% of its throughput), 0.88-0.94x their time from 8 sequences. NP 1:
// one ring of NC + 2 stages whose fills the consumers take in turn (fill i to consumer i % NC); NP 2 with NC 2
// (kAuto's at one sequence): two (producer, consumer) pairs, each with a ring of two stages and every other tile of
// the split. One producer could not keep two consumers fed: its warps issue about once in 3.5 cycles (dependent
// dequantization steps), Nsight Compute on the H200.
//   Producer: each thread owns half (64 latent and 64 RoPE-key values) of one key of a 64-key tile; it loads a
//   tile's codes, scales and modality byte two tiles ahead into registers, decides with the others whether the tile
//   holds a key of the CTA's modality (a barrier's OR: a tile of none is skipped, no stage taken), dequantizes
//   (one fp16 fused multiply-add a pair of codes, dequant8) into a 32 KB stage in the 128-byte swizzle wgmma reads
//   (the latent as two 64-column blocks, the RoPE key as two more), with a byte a key (attend it or not), and
//   arrives on the stage's full barrier. The int4 ring (the last `window` positions, bf16) is its own split,
//   converted to fp16 alike. The MMAs' operands are fp16 (fp32 accumulators): the queries times a power of two
//   the CTA picks, each 8-column chunk in the order dequant8 gives (chunk_column).
//   Consumer (the transposed step): S^T [64 keys x 32 rows] = C [64 x 128] Qa^T + Kr [64 x 128] Qr^T, 16
//   m64n32k16 MMAs with both operands in shared memory; the 32 rows are the 28 heads, 7 a kv group in 8 rows (row
//   8 g + i is head 7 g + i, row 8 g + 7 zero), and Qr is block-diagonal (row n's RoPE query at its group's 32
//   columns of the tile's 128). The online softmax runs down the columns with a lazy max: the tile's weights go to
//   P^T (shared memory, fp16, two buffers a consumer) from the running maxima, and the warpgroup barrier that
//   publishes them also votes whether a score passed its column's max by more than kSlack; only then (rarely) are
//   the tile's maxima reduced across its four warps, O rescaled and the weights written again. O^T [128 x 32] +=
//   C^T P^T, 8 m64n32k16 MMAs reading the same stage as an M-major operand. The consumer then frees the stage.
//   Without producers (NP 0) a consumer loads its next tile's codes, scales and modality bytes into registers while
//   it processes one (a warpgroup vote skips a tile of none of the CTA's keys where one may lack them), and its
//   step is the one above with S^T's A operand in registers: the queries' columns in the order of those registers
//   (ra_column), O^T's rows mapped back at the merge (ra_feature). Its dequantization runs behind its MMAs: a
//   tile's latent half while the tile before's O^T MMAs run, its RoPE half while its own latent 8 S^T MMAs do.
//   Launched programmatically (pdl.cuh): it waits for the kernel ahead before it reads anything.
//   End: the producer posts an end mark to each consumer; the consumers merge their (max, sum, O) through shared
//   memory and write the CTA's partials (a reference max in log2 units with the scale and q.b_k folded in, at most
//   kSlack below the true one, which the combines take like any split's max; the modality's mass
//   and unnormalized accumulator, the other modality's mass 0), which the combine kernels read unchanged.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <climits>
#include <cstdint>
#include <type_traits>

#include "kernels/cuda/mla_decode_kernels.cuh"
#include "kernels/cuda/pdl.cuh"

namespace vlm2mla {
namespace mla_decode_detail {
namespace {

constexpr int kStageBytes = 32 * 1024;   // C (2 blocks of 64 keys x 64 values) then Kr (2 more), fp16, swizzled
constexpr int kBlockBytes = 8 * 1024;    // 64 rows x 128 bytes
constexpr int kQBlockBytes = 4 * 1024;   // 32 rows x 128 bytes
constexpr int kRows = 32;                // query rows (28 heads in 4 groups of kSpecGroupRows)
static_assert(kRows == kWgmmaHkv * kSpecGroupRows && kWgmmaHq == kWgmmaHkv * kSpecHeadsPerGroup, "the 7B sizes' rows");
constexpr int kMergeStride = 132;        // floats a row of the merge buffer (16-byte rows, no bank conflicts)
constexpr int kEnd = 1;                  // a stage's flag: no tile, the consumer stops
// A column's running max is moved (and O rescaled) only when a score passes it by more than this (log2 units): the
// softmax weights stay below 2^kSlack (fp16's range), and most tiles skip the max's reductions and the rescale.
constexpr float kSlack = 8.f;

constexpr int kLatentBytes = 2 * kBlockBytes;  // NP 0: a consumer's latent tile (C's two blocks of a stage), fp16
constexpr int kPBytes = 4096;                  // a tile's P^T, 64 keys x 32 rows, fp16
constexpr int kBufBytes = kLatentBytes + kPBytes;  // NP 0: a latent tile and the P^T of its weights

// The layout for NP producer and NC consumer warpgroups (NP 1: one ring of stages the consumers take in turn; NP ==
// NC: a ring of two stages a (producer, consumer) pair; NP 0: no producers, two latent tiles a consumer): stages,
// threads, shared memory (bytes from a 1,024-aligned base).
template <int NC, int NP>
struct WgLayout {
  static_assert(NP == 0 || NP == 1 || NP == NC, "no producers, one, or one a consumer");
  static constexpr int kStages = NP == 0 ? 0 : NP == 1 ? NC + 2 : 2 * NP;  // 4 / 5 for 2 / 3 consumers; pairs: 2 each
  static constexpr int kRingStages = NP == 0 ? 1 : kStages / NP;
  static constexpr int kThreads = 128 * (NC + NP);
  // Qa (2 blocks), then Qr (2 blocks), swizzled; after the stages (NP 0: after the consumers' latent tiles)
  static constexpr int kOffQ = NP == 0 ? NC * 2 * kBufBytes : kStages * kStageBytes;
  static constexpr int kOffP = kOffQ + 4 * kQBlockBytes;        // NP > 0: two P^T a consumer (NP 0: in its buffers)
  static constexpr int kMergeBytes = kRows * kMergeStride * 4;
  static constexpr int kOffMerge = kOffP + (NP == 0 ? 0 : NC * 2 * kPBytes);  // float [32][kMergeStride]
  static constexpr int kOffRed = kOffMerge + kMergeBytes;        // float [NC][4 warps][32]
  static constexpr int kOffMl = kOffRed + NC * 4 * kRows * 4;   // float [NC][2 (max, sum)][32]
  static constexpr int kOffQb = kOffMl + NC * 2 * kRows * 4;    // float [32], q . b_k scaled to log2 units
  static constexpr int kOffQmax = kOffQb + kRows * 4;           // uint32: the CTA's largest |query| (float bits)
  static constexpr int kOffMeta = kOffQmax + 16;                // per stage: 64 keep bytes, the flag (int); 128 B
  static constexpr int kOffBar = kOffMeta + kStages * 128;      // uint64 full[kStages], empty[kStages]
  static constexpr int kSmemBytes = kOffBar + 2 * kStages * 8 + 1024;  // + the base's alignment
};

// Named barriers: 0 is __syncthreads'; kBarProducer + k: producer k's warpgroup; kBarWg0 + c: consumer c's.
constexpr int kBarProducer = 1, kBarConsumers = 3, kBarWg0 = 4;

// ---- PTX ------------------------------------------------------------------------------------------------
__device__ __forceinline__ void mbar_init(uint32_t bar, int count) {
  asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;\n" ::"r"(bar), "r"(count) : "memory");
}
__device__ __forceinline__ void mbar_arrive(uint32_t bar) {
  asm volatile("mbarrier.arrive.release.cta.shared::cta.b64 _, [%0];\n" ::"r"(bar) : "memory");
}
__device__ __forceinline__ void mbar_wait(uint32_t bar, uint32_t parity) {
  uint32_t done = 0;
  do {
    asm volatile(
        "{\n.reg .pred p;\nmbarrier.try_wait.parity.acquire.cta.shared::cta.b64 p, [%1], %2;\nselp.u32 %0, 1, 0, p;\n}\n"
        : "=r"(done)
        : "r"(bar), "r"(parity)
        : "memory");
  } while (!done);
}
// generic-proxy writes to shared memory made visible to the async proxy (the wgmma operand reads)
__device__ __forceinline__ void fence_proxy_async() { asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory"); }
// a barrier of `threads` threads that also returns whether any of them passed true
__device__ __forceinline__ bool barrier_or(int id, int threads, bool v) {
  uint32_t r;
  asm volatile("{\n.reg .pred p, q;\nsetp.ne.u32 q, %1, 0;\nbar.red.or.pred p, %2, %3, q;\nselp.u32 %0, 1, 0, p;\n}\n"
               : "=r"(r)
               : "r"(uint32_t(v)), "r"(id), "r"(threads)
               : "memory");
  return r != 0;
}
__device__ __forceinline__ void st_shared_v4(uint32_t addr, uint4 v) {
  asm volatile("st.shared.v4.b32 [%0], {%1, %2, %3, %4};\n" ::"r"(addr), "r"(v.x), "r"(v.y), "r"(v.z), "r"(v.w)
               : "memory");
}
__device__ __forceinline__ void st_shared_u32(uint32_t addr, uint32_t v) {
  asm volatile("st.shared.b32 [%0], %1;\n" ::"r"(addr), "r"(v) : "memory");
}

// A shared-memory matrix descriptor as its two 32-bit words: lo holds the start address and the leading byte offset
// (16-byte units, bits 0-13 and 16-29), hi the stride byte offset and the layout (1: 128-byte swizzle, 0: none; bits
// 0-13 and 30-31). An operand's hi is a constant; a byte offset (/ 16) added to lo moves its start (shared addresses
// stay below 256 KB: the 14-bit field does not carry). Kept as two words, a descriptor a tile is one 32-bit add from
// the tile's address: as one 64-bit value, each of a tile's 16 took a 64-bit add and its carry, moves and two
// register-to-uniform copies (SASS of session 41's first try).
struct SmemDesc {
  uint32_t lo, hi;
};
__device__ __forceinline__ SmemDesc smem_desc(uint32_t addr, uint32_t lbo, uint32_t sbo, uint32_t swizzle128) {
  return {((addr & 0x3FFFF) >> 4) | ((lbo >> 4) << 16), (sbo >> 4) | (swizzle128 << 30)};
}
__device__ __forceinline__ SmemDesc operator+(SmemDesc d, uint32_t off16) { return {d.lo + off16, d.hi}; }

__device__ __forceinline__ void wgmma_fence() { asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory"); }
__device__ __forceinline__ void wgmma_commit() { asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory"); }
template <int N>  // until at most N committed groups are pending
__device__ __forceinline__ void wgmma_wait() {
  asm volatile("wgmma.wait_group.sync.aligned %0;\n" ::"n"(N) : "memory");
}
// keeps the compiler from moving accumulator reads or writes across the asynchronous MMAs
template <int N>
__device__ __forceinline__ void fence_regs(float (&d)[N]) {
#pragma unroll
  for (int i = 0; i < N; ++i) asm volatile("" : "+f"(d[i])::"memory");
}

// D[64 x 32] (+)= A[64 x 16] B[16 x 32], fp16 operands from shared memory, fp32 accumulators. TA: A M-major
// (else K-major); TB: B N-major (else K-major). accumulate 0: D = A B.
template <int TA, int TB>
__device__ __forceinline__ void wgmma_m64n32k16(float (&d)[16], SmemDesc a, SmemDesc b, int accumulate) {
  asm volatile(
      "{\n.reg .pred p;\n.reg .b64 da, db;\nsetp.ne.b32 p, %20, 0;\nmov.b64 da, {%16, %17};\nmov.b64 db, {%18, %19};\n"
      "wgmma.mma_async.sync.aligned.m64n32k16.f32.f16.f16 "
      "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15}, da, db, p, 1, 1, %21, %22;\n}\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]),
        "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15])
      : "r"(a.lo), "r"(a.hi), "r"(b.lo), "r"(b.hi), "r"(accumulate), "n"(TA), "n"(TB));
}

// The same with A [64 x 16] from registers (NP 0): a[0] (row gid, columns 2 tig, + 1), a[1] (row gid + 8, the same),
// a[2] (row gid, columns 2 tig + 8, + 9), a[3] (row gid + 8, the same), rows 16 w + ... in warp w of the warpgroup;
// the low half the lower column. B K-major.
__device__ __forceinline__ void wgmma_m64n32k16_ra(float (&d)[16], uint32_t a0, uint32_t a1, uint32_t a2, uint32_t a3,
                                                   SmemDesc b, int accumulate) {
  asm volatile(
      "{\n.reg .pred p;\n.reg .b64 db;\nsetp.ne.b32 p, %22, 0;\nmov.b64 db, {%20, %21};\n"
      "wgmma.mma_async.sync.aligned.m64n32k16.f32.f16.f16 "
      "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15}, {%16, %17, %18, %19}, db, p, 1, 1, 0;\n}\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]),
        "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15])
      : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b.lo), "r"(b.hi), "r"(accumulate));
}
template <int K, int N>  // the first K of x
__device__ __forceinline__ void fence_words(uint4 (&x)[N]) {
#pragma unroll
  for (int i = 0; i < K; ++i) asm volatile("" : "+r"(x[i].x), "+r"(x[i].y), "+r"(x[i].z), "+r"(x[i].w)::"memory");
}
// Whether an optional step argument (nullptr: none) is a callable to run
template <typename F>
constexpr bool kGiven = !std::is_same_v<std::decay_t<F>, std::nullptr_t>;
// four 8 x 8 fp16 matrices from the MMA fragment layout (lane 4 r + c of matrix m's register: row r, columns 2 c,
// 2 c + 1), row r of matrix m to the address lane 8 m + r gives
__device__ __forceinline__ void stmatrix_x4(uint32_t addr, uint32_t r0, uint32_t r1, uint32_t r2, uint32_t r3) {
  asm volatile("stmatrix.sync.aligned.m8n8.x4.shared.b16 [%0], {%1, %2, %3, %4};\n" ::"r"(addr), "r"(r0), "r"(r1),
               "r"(r2), "r"(r3)
               : "memory");
}
__device__ __forceinline__ void st_shared_u16(uint32_t addr, uint16_t v) {
  asm volatile("st.shared.b16 [%0], %1;\n" ::"r"(addr), "h"(v) : "memory");
}

// Where 16-byte chunk `c` (0-7) of row `r` of a 128-byte-swizzled block lies: the chunk index XOR the row's place
// in its 8-row (1,024-byte) atom.
__device__ __forceinline__ uint32_t swz(int r, int c) { return uint32_t(r * 128 + ((c ^ (r & 7)) << 4)); }

// ---- the producer's pieces ------------------------------------------------------------------------------------
// One thread's share of a tile from the int4 store: 32 latent and 32 RoPE-key bytes (64 codes each) of one key,
// the scales and offsets of the two 32-value chunks of each (groups of 32: an fp16 pair, the low half the first
// chunk's; larger groups: the one value both chunks take, in the low half), the key's modality byte.
struct Raw {
  uint4 c[2], r[2];
  uint32_t cs, cl, rs, rl;
  uint32_t mod;
  uint32_t in;  // the key is in the split's range (else zeros, nothing read)
};

// Where a thread reads a key's codes, scales, offsets and modality byte from value v0 of its latent and RoPE-key rows
// on, moved a whole tile of its warpgroup's keys at a time by pointer steps (recomputing the addresses from the key
// each tile cost ~60 instructions a tile, SASS of session 37's kernel).
struct KeySrc {
  const uint4 *c, *r;                 // the codes from value v0, latent / RoPE key
  const uint16_t *cs, *cl, *rs, *rl;  // value v0's group's scale and offset, latent and RoPE key
  const uint8_t* mod;                 // null for one set
  int j;                              // the key
  int gc, gr;                         // scales a key (128 / group)
};
__device__ __forceinline__ KeySrc key_src(const MlaDecodeParams& p, const Geom& g, int b, int j, int v0) {
  KeySrc x;
  const int64_t row = int64_t(b) * p.t_cap + j;
  x.c = reinterpret_cast<const uint4*>(p.latent_q + row * 64 + v0 / 2);
  x.r = reinterpret_cast<const uint4*>(p.k_rope_q + row * 64 + v0 / 2);
  x.gc = 128 >> g.shift_c;
  x.gr = 128 >> g.shift_r;
  const int64_t sc = row * x.gc + (v0 >> g.shift_c), sr = row * x.gr + (v0 >> g.shift_r);
  x.cs = p.latent_scale + sc;
  x.cl = p.latent_lo + sc;
  x.rs = p.k_rope_scale + sr;
  x.rl = p.k_rope_lo + sr;
  x.mod = p.n_mod == 2 ? p.modality + row : nullptr;
  x.j = j;
  return x;
}
__device__ __forceinline__ void advance(KeySrc& x, int keys) {
  x.c += keys * 4;
  x.r += keys * 4;
  x.cs += keys * x.gc;
  x.cl += keys * x.gc;
  x.rs += keys * x.gr;
  x.rl += keys * x.gr;
  if (x.mod) x.mod += keys;
  x.j += keys;
}
// A producer thread's: half `half` of its key (64 latent and 64 RoPE-key values, two 32-value chunks each)
struct RawSrc : KeySrc {
  bool pair_c, pair_r;  // groups of 32: the two chunks' scales adjacent (one word); else one group
};
__device__ __forceinline__ RawSrc raw_src(const MlaDecodeParams& p, const Geom& g, int b, int j, int half) {
  RawSrc x;
  static_cast<KeySrc&>(x) = key_src(p, g, b, j, 64 * half);
  x.pair_c = g.shift_c == 5;
  x.pair_r = g.shift_r == 5;
  return x;
}
// the two chunks' fp16 values: one word (groups of 32, adjacent; 4-byte aligned, wgmma_refusal), or one value (the
// low half) that both chunks take (store_raw picks the half). Nothing here uses the loaded value: an operation on it
// right after the load (the value put in both halves) made each tile wait for its loads (4% slower, H200).
__device__ __forceinline__ uint32_t load_pair(const uint16_t* at, bool pair) {
  return pair ? __ldg(reinterpret_cast<const unsigned int*>(at)) : uint32_t(__ldg(at));
}

__device__ __forceinline__ void load_raw(const RawSrc& s, int vlo, int vhi, Raw& x) {
  x.in = (s.j >= vlo && s.j < vhi) ? 1u : 0u;
  x.mod = 0;
  if (!x.in) {
    x.c[0] = x.c[1] = x.r[0] = x.r[1] = make_uint4(0, 0, 0, 0);
    x.cs = x.cl = x.rs = x.rl = 0;
    return;
  }
  x.c[0] = __ldg(s.c);
  x.c[1] = __ldg(s.c + 1);
  x.r[0] = __ldg(s.r);
  x.r[1] = __ldg(s.r + 1);
  x.cs = load_pair(s.cs, s.pair_c);
  x.cl = load_pair(s.cl, s.pair_c);
  x.rs = load_pair(s.rs, s.pair_r);
  x.rl = load_pair(s.rl, s.pair_r);
  if (s.mod) x.mod = __ldg(s.mod);
}

// The operands are fp16 (the int4 store's scales and offsets are fp16 already, so its values are in fp16's range),
// and within each 8-column chunk of a row the columns lie in the order (0, 4, 1, 5, 2, 6, 3, 7): physical value p
// holds column chunk_column(p). A word of 8 codes then gives its fp16 pairs (i, i + 4) by one shift and one mask
// each. The queries are stored in the same order (a product over columns does not see it) and O's rows are mapped
// back when the partials are written.
__device__ __forceinline__ int chunk_column(int p) { return (p >> 1) + 4 * (p & 1); }

__device__ __forceinline__ uint32_t pack_half2(float lo, float hi) {
  __half2 v = __floats2half2_rn(lo, hi);  // .x (low half) = lo
  return *reinterpret_cast<uint32_t*>(&v);
}
__device__ __forceinline__ uint32_t hfma2(uint32_t a, uint32_t b, uint32_t c) {
  uint32_t d;
  asm("fma.rn.f16x2 %0, %1, %2, %3;\n" : "=r"(d) : "r"(a), "r"(b), "r"(c));
  return d;
}
__device__ __forceinline__ uint32_t hmul2(uint32_t a, uint32_t b) {
  uint32_t d;
  asm("mul.rn.f16x2 %0, %1, %2;\n" : "=r"(d) : "r"(a), "r"(b));
  return d;
}

// 8 codes (one 32-bit word: element 2i in the low nibble of byte i) -> 8 fp16 values code * scale + lo, in the chunk
// order. Code c becomes the fp16 1 + c / 16 by its bits (0x3C00 | c << 6), and code * scale + lo = (1 + c / 16) s16
// + l16 with s16 = 16 scale (exact) and l16 = lo - 16 scale (rounded once to fp16: at most 2^-12 (|lo| + 16 scale),
// a 128th of the code's half step beside the offset's own rounding): one fused multiply-add a pair, rounded once.
// `one` is the fp16 pair (1, 1), 0x3C003C00, held in a register (f16_one_pair): a shift, one LOP3 ((x & mask) | one)
// and the HFMA2 a pair. Written with both constants as immediates, ptxas made the mask and the OR two LOP3s (one
// immediate an instruction): 4 instructions a pair, a quarter more (SASS of session 37's kernel on the H200).
__device__ __forceinline__ uint32_t mask_or(uint32_t x, uint32_t one) {
  uint32_t d;
  asm("lop3.b32 %0, %1, %2, %3, 0xEA;\n" : "=r"(d) : "r"(x), "n"(0x03C003C0), "r"(one));  // (x & mask) | one
  return d;
}
__device__ __forceinline__ uint4 dequant8(uint32_t w, uint32_t s16, uint32_t l16, uint32_t one) {
  return make_uint4(hfma2(mask_or(w << 6, one), s16, l16), hfma2(mask_or(w << 2, one), s16, l16),
                    hfma2(mask_or(w >> 2, one), s16, l16), hfma2(mask_or(w >> 6, one), s16, l16));
}
// dequant8's operands from a group's scale s and offset lo, each as an fp16 pair (s, s), (lo, lo): s16 = 16 s (exact)
// and l16 = lo - 16 s (rounded once)
__device__ __forceinline__ uint2 dequant_operands(uint32_t s, uint32_t lo) {
  const uint32_t k16 = 0x4C004C00u, km16 = 0xCC00CC00u;  // the fp16 pairs (16, 16), (-16, -16)
  return make_uint2(hmul2(s, k16), hfma2(s, km16, lo));
}
// The fp16 pair (1, 1) as a value ptxas cannot fold into an immediate (a shuffle's result), so that it stays in a
// register for mask_or's LOP3.
__device__ __forceinline__ uint32_t f16_one_pair() { return __shfl_sync(0xffffffffu, 0x3C003C00u, 0); }

// 8 bf16 values (columns 0-7 of a chunk, in order) -> fp16 in the chunk order (the ring's rows)
__device__ __forceinline__ uint4 bf16_chunk_to_f16(uint4 v) {
  const uint32_t x[4] = {v.x, v.y, v.z, v.w};
  auto col = [&](int l) { return __uint_as_float((l & 1) ? (x[l >> 1] & 0xFFFF0000u) : (x[l >> 1] << 16)); };
  return make_uint4(pack_half2(col(0), col(4)), pack_half2(col(1), col(5)), pack_half2(col(2), col(6)),
                    pack_half2(col(3), col(7)));
}

// The thread's 64 latent and 64 RoPE-key values of key kk into the stage at `stage` (swizzled blocks: the latent's
// half `half` is block `half`, the RoPE key's block 2 + half).
__device__ __forceinline__ void store_raw(uint32_t stage, int kk, int half, const Raw& x, const RawSrc& src) {
  const uint32_t one = f16_one_pair();  // (a shuffle a tile: taken out of the loop it cost the 1p2c layout a spill)
  // (s, s) and (lo, lo) of chunk q's group from a pair (prmt), then dequant8's operands
  auto dup = [](uint32_t pair, uint32_t sel) { return __byte_perm(pair, 0, sel); };
#pragma unroll
  for (int q = 0; q < 2; ++q) {
    // the prmt selector of chunk q's value twice: the high half for the second chunk of a pair, else the low
    const uint32_t qc = q && src.pair_c ? 0x3232u : 0x1010u, qr = q && src.pair_r ? 0x3232u : 0x1010u;
    const uint2 co = dequant_operands(dup(x.cs, qc), dup(x.cl, qc));
    const uint2 ro = dequant_operands(dup(x.rs, qr), dup(x.rl, qr));
    const uint32_t cw[4] = {x.c[q].x, x.c[q].y, x.c[q].z, x.c[q].w};
    const uint32_t rw[4] = {x.r[q].x, x.r[q].y, x.r[q].z, x.r[q].w};
#pragma unroll
    for (int w = 0; w < 4; ++w) {
      const int chunk = 4 * q + w;
      st_shared_v4(stage + half * kBlockBytes + swz(kk, chunk), dequant8(cw[w], co.x, co.y, one));
      st_shared_v4(stage + (2 + half) * kBlockBytes + swz(kk, chunk), dequant8(rw[w], ro.x, ro.y, one));
    }
  }
}

// ---- no producers (NP 0): each consumer thread dequantizes its share of its own tiles into wgmma's A registers ----
// A consumer thread (warp w, lane gid * 4 + tig of its warpgroup) holds rows gid and gid + 8 of its warp's 16 in
// S^T's A operand: keys kk0 = 16 w + gid and kk0 + 8 of the tile. Of each it takes the latent's values [32 tig,
// 32 tig + 32) and the RoPE key's: one 16-byte word of codes each (a group of 32, 64 or 128 holds them whole: one
// scale and one offset each). Dequantized (dequant8) they are 8 16-byte chunks a key, each 8 columns in the chunk
// order, 4 of the latent's then 4 of the RoPE key's: pairs 0-31 (pair 4 w + i: chunk w's i-th fp16 pair, columns
// i and i + 4 of the chunk). MMA k-step ks takes pairs 2 ks (columns 2 tig, + 1 of its 16) and 2 ks + 1 (columns
// 2 tig + 8, + 9): the queries are staged to match (ra_column). The latent's chunks also go to the consumer's own
// latent tile in shared memory, in the stages' layout, for O^T's MMAs.
struct RawRa {
  uint4 c[2], r[2];  // keys kk0, kk0 + 8: the latent's and the RoPE key's code words
  uint32_t cs[2], cl[2], rs[2], rl[2];  // their scale and offset (fp16 bits in the low half)
  uint32_t mod[2], in[2];
};
// a consumer thread's (NP 0): key kk0 from value 32 tig on (key kk0 + 8's: 8 rows on)
__device__ __forceinline__ KeySrc ra_src(const MlaDecodeParams& p, const Geom& g, int b, int j, int tig) {
  return key_src(p, g, b, j, 32 * tig);
}
__device__ __forceinline__ void load_ra(const KeySrc& s, int vlo, int vhi, RawRa& x) {
#pragma unroll
  for (int k = 0; k < 2; ++k) {
    const int j = s.j + 8 * k;
    x.in[k] = (j >= vlo && j < vhi) ? 1u : 0u;
    x.mod[k] = 0;
    if (!x.in[k]) {
      x.c[k] = x.r[k] = make_uint4(0, 0, 0, 0);
      x.cs[k] = x.cl[k] = x.rs[k] = x.rl[k] = 0;
      continue;
    }
    x.c[k] = __ldg(s.c + 32 * k);
    x.r[k] = __ldg(s.r + 32 * k);
    x.cs[k] = __ldg(s.cs + 8 * k * s.gc);
    x.cl[k] = __ldg(s.cl + 8 * k * s.gc);
    x.rs[k] = __ldg(s.rs + 8 * k * s.gr);
    x.rl[k] = __ldg(s.rl + 8 * k * s.gr);
    if (s.mod) x.mod[k] = __ldg(s.mod + 8 * k);
  }
}
// key k's (0: kk0, 1: kk0 + 8) 4 chunks of the latent (half 0, into d[0..3]) or of the RoPE key (half 1, d[4..7])
__device__ __forceinline__ void dequant_ra_half(const RawRa& x, int k, int half, uint4 (&d)[8]) {
  const uint32_t one = f16_one_pair();
  auto dup = [](uint32_t v) { return __byte_perm(v, 0, 0x1010); };  // (v, v) from v's low half
  const uint2 op = dequant_operands(dup(half ? x.rs[k] : x.cs[k]), dup(half ? x.rl[k] : x.cl[k]));
  const uint4 v = half ? x.r[k] : x.c[k];
  const uint32_t cw[4] = {v.x, v.y, v.z, v.w};
#pragma unroll
  for (int w = 0; w < 4; ++w) d[4 * half + w] = dequant8(cw[w], op.x, op.y, one);
}
// pair i (0-3) of a chunk
__device__ __forceinline__ uint32_t pair_of(const uint4& v, int i) { return i == 0 ? v.x : i == 1 ? v.y : i == 2 ? v.z : v.w; }
// The query column (0-255, S^T's k) that value f (0-127) of the latent (rope 0) or RoPE key (rope 1) meets in the
// thread layout above: its chunk w = 4 rope + (f / 8) % 4 of thread tig = f / 32, pair i = f % 4, half e = (f / 4) % 2
// (chunk order), pair 4 w + i at k-step (4 w + i) / 2.
__device__ __forceinline__ int ra_column(int rope, int f) {
  const int t = f >> 5, w = 4 * rope + ((f >> 3) & 3), i = f & 3, e = (f >> 2) & 1, pr = 4 * w + i;
  return 16 * (pr >> 1) + 2 * t + 8 * (pr & 1) + e;
}
// ... and back, for the latent's columns k < 128 (the consumer's latent tile holds them in this order: O^T's rows)
__device__ __forceinline__ int ra_feature(int k) {
  const int r = k & 15, pr = 2 * (k >> 4) + (r >> 3), t = (r & 7) >> 1, e = r & 1;
  return 32 * t + 8 * (pr >> 2) + (pr & 3) + 4 * e;
}

// ---- the kernel -----------------------------------------------------------------------------------------------
template <int NC, int NP>
__global__ void __launch_bounds__(WgLayout<NC, NP>::kThreads, 1)
    mla_decode_wgmma_kernel(const __grid_constant__ MlaDecodeParams p, const __grid_constant__ Geom g) {
#if defined(__CUDA_ARCH__) && defined(__CUDA_ARCH_FEAT_SM90_ALL)
  using L = WgLayout<NC, NP>;
  constexpr int kRingStages = L::kRingStages;
  constexpr int kWgStages = L::kStages, kOffQ = L::kOffQ, kOffP = L::kOffP, kOffMerge = L::kOffMerge;
  constexpr int kOffRed = L::kOffRed, kOffMl = L::kOffMl, kOffQb = L::kOffQb, kOffMeta = L::kOffMeta;
  constexpr int kOffQmax = L::kOffQmax;
  constexpr int kOffBar = L::kOffBar;
  extern __shared__ __align__(1024) unsigned char smem_raw[];
  // the swizzle is by address bits: the stages start on a 1,024-byte bound
  const uint32_t raw_base = smem_addr(smem_raw);
  const uint32_t base = (raw_base + 1023u) & ~1023u;
  unsigned char* const smem = smem_raw + (base - raw_base);
  grid_dependency_wait();  // (pdl.cuh: launched programmatically, the kernel ahead has ended)
  const int tid = threadIdx.x;
  // the warpgroup's role, warp-uniform by construction (a role from threadIdx.x / 128 directly has ptxas
  // serialize the MMAs: C7520)
  const int role = __shfl_sync(0xffffffffu, tid >> 7, 0);
  const int two = p.n_mod == 2 ? 2 : 1;
  const int ps = int(blockIdx.x);  // the partials' split: 2 split + modality (two sets), else the split
  const int split = ps / two, cta_mod = ps % two, b = int(blockIdx.z);
  const Partials w = partials(p, g.total_splits);

  // the CTA's keys: the store's split, or the ring ([qlen, length), rows j % window)
  const SeqRange sr = seq_range(p, b);
  const bool ring = split >= g.splits;
  int vlo, vhi, t_first = 0, t_end = 0;
  if (ring) {
    vlo = max(sr.lo, sr.qlen);
    vhi = sr.hi;
    if (vhi > vlo) {
      t_first = vlo / kTile;
      t_end = (vhi - 1) / kTile + 1;
    }
  } else {
    vlo = sr.lo;
    vhi = min(sr.hi, sr.qlen);
    split_tiles(vlo, vhi, split, g.splits, g.tiles_per_split, t_first, t_end);
  }
  // an image CTA stops at the cache's image bound (params.h's image_end: every key from it on is text)
  if (cta_mod == 1 && p.image_end) {
    vhi = min(vhi, p.image_end[b]);
    t_end = vhi > vlo ? min(t_end, (vhi - 1) / kTile + 1) : t_first;
  }
  // query row n's head: 7 heads a kv group in 8 rows (the warp-rows kernel's grouped rows), kPadHead for row 8 g + 7
  auto row_head = [&](int n) {
    int mod, head;
    row_to_head<1, kRows / 16, kSpecGroupRows>(n, 0, mod, head, cta_mod);
    return head;
  };
  // row n's partials header: its max and mass; the other modality's mass 0 (its accumulator unwritten)
  auto write_header = [&](int n, float m, float mass) {
    const int head = row_head(n);
    if (head == kPadHead) return;
    w.m_at(p, ps, b, head) = m;
    w.mass_at(p, ps, cta_mod, b, head) = mass;
    if (two == 2) w.mass_at(p, ps, 1 - cta_mod, b, head) = 0.f;
  };
  if (t_first >= t_end) {  // no keys: empty partials
    if (tid < kRows) write_header(tid, -INFINITY, 0.f);
    return;
  }

  const uint32_t bar_full = base + kOffBar, bar_empty = base + kOffBar + kWgStages * 8;
  if (tid == 0) {
    for (int s = 0; s < kWgStages; ++s) {
      mbar_init(bar_full + 8 * s, 128);  // every producer thread
      mbar_init(bar_empty + 8 * s, 4);   // the consuming warpgroup's four warps
    }
    *reinterpret_cast<uint32_t*>(smem + kOffQmax) = 0u;
  }
  __syncthreads();

  // a key is attended when in the range and, with two sets, of the CTA's modality
  auto keeps = [&](uint32_t in, uint32_t mod) { return in && (two == 1 || (mod != 0) == (cta_mod != 0)); };
  // key j of the ring (the int4 store's last `window` positions, bf16, row j % window): n 16-byte words of its latent
  // and of its RoPE key from value v0 on into c and r (zeros out of the range); whether the CTA attends it
  auto ring_key = [&](int j, int v0, int n, uint4* c, uint4* r) {
    const bool in = j >= vlo && j < vhi;
    const int64_t row = int64_t(b) * p.window + (in ? j % p.window : 0);
    const uint32_t mod = (in && two == 2) ? p.modality[int64_t(b) * p.t_cap + j] : 0;
    const uint4* cp = reinterpret_cast<const uint4*>(p.latent_win + row * 128 + v0);
    const uint4* rp = reinterpret_cast<const uint4*>(p.k_rope_win + row * 128 + v0);
#pragma unroll
    for (int i = 0; i < n; ++i) {
      c[i] = in ? __ldg(cp + i) : make_uint4(0, 0, 0, 0);
      r[i] = in ? __ldg(rp + i) : make_uint4(0, 0, 0, 0);
    }
    return keeps(in, mod);
  };
  if (NP > 0 && role < NP) {  // (NP 0: none, and no code)
    // ---- producer `role`: tiles t_first + role, + NP, ..., into its ring of stages ----
    const int pt = tid & 127, kk = pt & 63, half = pt >> 6;
    const int ring0 = role * kRingStages, step = NP;
    const int bar_p = kBarProducer + role;
    int fill = 0;
    // a stage for the next fill: wait until its last consumer freed it
    auto take_stage = [&]() -> uint32_t {
      const int s = ring0 + fill % kRingStages;
      if (fill >= kRingStages) mbar_wait(bar_empty + 8 * s, uint32_t((fill / kRingStages - 1) & 1));
      return uint32_t(s);
    };
    auto post = [&](uint32_t s, bool keep, int flag) {
      unsigned char* meta = smem + kOffMeta + s * 128;
      if (half == 0) meta[kk] = keep ? 1 : 0;
      if (pt == 0) *reinterpret_cast<int*>(meta + 64) = flag;
      fence_proxy_async();
      mbar_arrive(bar_full + 8 * s);
      ++fill;
    };
    if (!ring) {
      const int t0 = t_first + role, keys_a_step = kTile * step;
      RawSrc s0 = raw_src(p, g, b, t0 * kTile + kk, half);
      int tl = t0;  // the next tile to load
      auto load_next = [&](Raw& x) {
        load_raw(s0, vlo, tl < t_end ? vhi : vlo, x);
        advance(s0, keys_a_step);
        tl += step;
      };
      auto process = [&](const Raw& x) {
        const bool keep = keeps(x.in, x.mod);
        if (barrier_or(bar_p, 128, keep)) {  // a tile without a key of the CTA's modality: skipped
          const uint32_t s = take_stage();
          store_raw(base + s * kStageBytes, kk, half, x, s0);
          post(s, keep, 0);
        }
      };
      // two tiles' loads in flight while one is dequantized, in three register sets taken in turn (the loop unrolled
      // by three: no copies between them). Session 36 measured this 1.27x slower than one set and two copies (code
      // size, with its longer dequantization); with this one (the copying loop: ~375 instructions a tile, 54 of them
      // the copies; this one ~340) it takes 2.5% less time at b = 32-768 (H200, session 38), and loading one tile
      // ahead instead (two sets, unrolled by two) gained nothing
      Raw A, B, C;
      load_next(A);
      load_next(B);
      for (int t = t0; t < t_end;) {
        load_next(C);
        process(A);
        if ((t += step) >= t_end) break;
        load_next(A);
        process(B);
        if ((t += step) >= t_end) break;
        load_next(B);
        process(C);
        t += step;
      }
    } else {
      // the ring's bf16 rows (at most a few tiles): to fp16 in the chunk order, into the swizzle
      for (int t = t_first + role; t < t_end; t += step) {
        uint4 c[8], r[8];
        const bool keep = ring_key(t * kTile + kk, 64 * half, 8, c, r);
        if (barrier_or(bar_p, 128, keep)) {
          const uint32_t s = take_stage();
          const uint32_t stage = base + s * kStageBytes;
#pragma unroll
          for (int i = 0; i < 8; ++i) {
            st_shared_v4(stage + half * kBlockBytes + swz(kk, i), bf16_chunk_to_f16(c[i]));
            st_shared_v4(stage + (2 + half) * kBlockBytes + swz(kk, i), bf16_chunk_to_f16(r[i]));
          }
          post(s, keep, 0);
        }
      }
    }
    // one end mark to each of its consumers (one producer: the fills go round them; pairs: its own)
    for (int e = 0; e < NC / (NP > 0 ? NP : 1); ++e) post(take_stage(), false, kEnd);
    return;
  }

  // ---- consumers ----
  const int c = role - NP;
  const int ctid = tid & 127;  // in the warpgroup
  const int c0 = tid - 128 * NP;  // in the consumers
  const int cw = ctid >> 5, lane = tid & 31, gid = lane >> 2, tig = lane & 3;
  // the queries, staged by the consumers' threads: Qa's and Qr's 32 rows x 16 chunks each, in fp16 times a power of
  // two that puts the CTA's largest |query| in [2^13, 2^14) (fp16's range whatever the queries' scale; the scores
  // take the power back exactly, through s_mul)
  auto stage_queries = [&](auto&& chunk_fn) {
    for (int idx = c0; idx < 4 * kRows * 8; idx += 128 * NC) {
      const bool rope = idx >= 2 * kRows * 8;
      const int k = rope ? idx - 2 * kRows * 8 : idx;
      const int n = k >> 4, chunk16 = k & 15;
      const int grp = n / kSpecGroupRows, head = row_head(n);
      const int d0 = chunk16 * 8;  // the chunk's first column of the 128
      float v[8];
#pragma unroll
      for (int e = 0; e < 8; ++e) v[e] = 0.f;
      if (head != kPadHead) {
        if (!rope) {
          const int64_t off = qa_offset(p, cta_mod, b, head) + d0;
#pragma unroll
          for (int e = 0; e < 8; ++e) v[e] = load_q(p.qa, p.q_bf16, off + e);
        } else if (d0 / 32 == grp) {  // the head's RoPE query at its group's 32 columns
          const int64_t off = qr_offset(p, b, head) + (d0 - 32 * grp);
#pragma unroll
          for (int e = 0; e < 8; ++e) v[e] = load_q(p.qr, p.q_bf16, off + e);
        }
      }
      chunk_fn(rope, n, chunk16, v);
    }
  };
  // NP 0: the first tile's loads issued before the queries are staged (their latency behind the staging; a split
  // of a few tiles, as at one sequence, waited for them after it)
  const int kk0 = 16 * cw + gid;  // NP 0: this thread's keys in a tile, kk0 and kk0 + 8
  KeySrc src{};
  RawRa first{};
  if (NP == 0 && !ring) {
    src = ra_src(p, g, b, (t_first + c) * kTile + kk0, tig);
    load_ra(src, vlo, t_first + c < t_end ? vhi : vlo, first);
    advance(src, kTile * NC);
  }
  float qmax = 0.f;
  stage_queries([&](bool, int, int, const float (&v)[8]) {
#pragma unroll
    for (int e = 0; e < 8; ++e) qmax = fmaxf(qmax, fabsf(v[e]));
  });
#pragma unroll
  for (int m = 1; m <= 16; m *= 2) qmax = fmaxf(qmax, __shfl_xor_sync(0xffffffffu, qmax, m));
  uint32_t* const qmax_bits = reinterpret_cast<uint32_t*>(smem + kOffQmax);  // (0 from the barriers' set-up)
  if (lane == 0) atomicMax(qmax_bits, __float_as_uint(qmax));  // non-negative floats order as their bits
  named_barrier(kBarConsumers, 128 * NC);
  int q_exp = 0;
  frexpf(__uint_as_float(*qmax_bits), &q_exp);  // the largest |query| below 2^q_exp (q_exp 0 for 0)
  const int q_shift = max(-64, min(64, 14 - q_exp));
  const float q_mul = ldexpf(1.f, q_shift);
  const float sl = p.scale * kLog2e, s_mul = ldexpf(sl, -q_shift);
  stage_queries([&](bool rope, int n, int chunk16, const float (&v)[8]) {
    if constexpr (NP == 0) {  // each value at its column of the register layout (ra_column), fp16 by fp16
#pragma unroll
      for (int e = 0; e < 8; ++e) {
        const int k = ra_column(rope ? 1 : 0, 8 * chunk16 + e);
        st_shared_u16(base + kOffQ + (k >> 6) * kQBlockBytes + swz(n, (k & 63) >> 3) + 2 * (k & 7),
                      __half_as_ushort(__float2half_rn(v[e] * q_mul)));
      }
      return;
    }
    const int blk = chunk16 >> 3, ch = chunk16 & 7;
    const uint4 packed = make_uint4(pack_half2(v[0] * q_mul, v[4] * q_mul), pack_half2(v[1] * q_mul, v[5] * q_mul),
                                    pack_half2(v[2] * q_mul, v[6] * q_mul), pack_half2(v[3] * q_mul, v[7] * q_mul));
    st_shared_v4(base + kOffQ + (rope ? 2 : 0) * kQBlockBytes + blk * kQBlockBytes + swz(n, ch), packed);
  });
  float* const qbl = reinterpret_cast<float*>(smem + kOffQb);
  if (c0 < kRows) {
    const int n = c0;
    const int head = row_head(n);
    qbl[n] = head == kPadHead ? 0.f : load_qb(p, cta_mod, b, head) * sl;
  }
  fence_proxy_async();
  named_barrier(kBarConsumers, 128 * NC);

  // this thread's 8 columns (query rows): 8 i + 2 tig + e, i 0..3, e 0..1. The loop keeps the scores as the MMAs
  // give them (raw: s_mul puts them in log2 units) and each column's running max in log2 units without its q . b_k,
  // a constant of the column that no weight sees (the merge adds it back). The maxima start at kNoMax, finite (no
  // column's "none yet" test a tile: a score of -inf stays below it and gives a weight 0, the first finite one
  // passes it and its factor exp2(kNoMax - m) is 0); lim is the vote's bound, m_run + kSlack in raw units (from
  // kNoMax, -1e30 / s_mul or -inf: every score of log2 value above -1e30 passes it). The merge writes kNoMax as -inf.
  constexpr float kNoMax = -1e30f;
  const float inv_s_mul = 1.f / s_mul;
  float m_run[8], l_run[8], lim[8];
#pragma unroll
  for (int col = 0; col < 8; ++col) {
    m_run[col] = kNoMax;
    lim[col] = (kNoMax + kSlack) * inv_s_mul;
    l_run[col] = 0.f;
  }
  float o[2][16];
#pragma unroll
  for (int mb = 0; mb < 2; ++mb)
#pragma unroll
    for (int e = 0; e < 16; ++e) o[mb][e] = 0.f;
  float* const red = reinterpret_cast<float*>(smem + kOffRed) + c * 4 * kRows;
  // a column's value over the warp's 8 lanes that hold it (lanes differing in gid: lane bits 2-4)
  auto column_reduce = [](float v, auto op) {
#pragma unroll
    for (int m = 4; m <= 16; m *= 2) v = op(v, __shfl_xor_sync(0xffffffffu, v, m));
    return v;
  };
  // the thread's 8 columns' values into this warp's row of red (lanes of gid 0 hold every column)
  auto to_red = [&](const float (&v)[8]) {
    if (gid == 0) {
#pragma unroll
      for (int i = 0; i < 4; ++i)
#pragma unroll
        for (int e = 0; e < 2; ++e) red[cw * kRows + 8 * i + 2 * tig + e] = v[2 * i + e];
    }
  };
  // P^T: two buffers a consumer, taken in turn, so that a tile's weights may be written before the barrier that
  // follows the tile before's O^T MMAs in every warp (a slower warp's may still read the other); NP 0: beside the
  // latent tile of each of its two buffers (one address for both, one switch a tile)
  const uint32_t q_base = base + kOffQ;
  // the descriptors' constant parts: K-major swizzled tiles and queries (sbo: 8-row groups of 1,024 bytes), the
  // tile as an M-major operand (lbo: 64-column blocks, sbo: 8-key groups), P^T N-major without swizzle (lbo: the
  // next 8 keys, 512 bytes; sbo: the next 8 rows, 128 bytes)
  const SmemDesc dq = smem_desc(q_base, 16, 1024, 1);

  // the pieces of a tile's step. S^T [64 keys x 32 rows] of stage s into sacc; the online softmax over it (the
  // scores masked, the weights into P^T, the lazy max's vote and, when it passes, the maxima's reduction and O's
  // rescale); O^T += C^T P^T over stage s. S^T's first MMA ignores what sacc holds (scale-d 0): it is set once here,
  // for the register fences, and holds the tile before's scores after that.
  float sacc[16];
#pragma unroll
  for (int e = 0; e < 16; ++e) sacc[e] = 0.f;
  auto stage_of = [&](int fill) { return (NP == 1 ? 0 : c * kRingStages) + fill % kRingStages; };
  // waits for fill `fill`: true for a tile, false for the producer's end mark
  auto wait_fill = [&](int fill) {
    const int s = stage_of(fill);
    mbar_wait(bar_full + 8 * s, uint32_t((fill / kRingStages) & 1));
    return *reinterpret_cast<const int*>(smem + kOffMeta + s * 128 + 64) != kEnd;
  };
  auto scores = [&](int s) {  // S^T of stage s, waited for
    fence_regs(sacc);
    wgmma_fence();
    const SmemDesc dk = smem_desc(base + s * kStageBytes, 16, 1024, 1);  // K-major
#pragma unroll
    for (int ks = 0; ks < 16; ++ks) {
      // k-step ks: block ks / 4 of the tile (C's two, then Kr's two), 32 bytes a step within it; the queries'
      // block ks / 4 likewise (Qa's two, then Qr's two)
      const uint32_t toff = uint32_t((ks >> 2) * kBlockBytes + (ks & 3) * 32) >> 4;
      const uint32_t qoff = uint32_t((ks >> 2) * kQBlockBytes + (ks & 3) * 32) >> 4;
      wgmma_m64n32k16<0, 0>(sacc, dk + toff, dq + qoff, ks > 0 ? 1 : 0);
    }
    wgmma_commit();
    wgmma_wait<0>();
    fence_regs(sacc);
  };
  auto free_stage = [&](int s) {
    __syncwarp();
    if (lane == 0) mbar_arrive(bar_empty + 8 * s);
  };
  // O^T over the latent tile at `tile` (a stage's first block) and the weights in P^T at `pt`, waited for; `ahead`
  // (nullptr or a callable) runs while its MMAs do
  auto values = [&](uint32_t tile, uint32_t pt, auto&& ahead) {
    fence_regs(o[0]);
    fence_regs(o[1]);
    wgmma_fence();
    // m-block mb the latent's columns [64 mb, 64 mb + 64), k-step kk its keys [16 kk, 16 kk + 16)
    const SmemDesc dv = smem_desc(tile, 8192, 1024, 1);  // M-major
    const SmemDesc dp = smem_desc(pt, 512, 128, 0);
#pragma unroll
    for (int mb = 0; mb < 2; ++mb) {
#pragma unroll
      for (int kk = 0; kk < 4; ++kk) {
        wgmma_m64n32k16<1, 1>(o[mb], dv + uint32_t((mb * kBlockBytes + kk * 2048) >> 4),
                              dp + uint32_t((kk * 1024) >> 4), 1);
      }
    }
    wgmma_commit();
    if constexpr (kGiven<decltype(ahead)>) ahead();
    wgmma_wait<0>();
    fence_regs(o[0]);
    fence_regs(o[1]);
  };
  // the weights exp2(s s_mul - m_run) of the tile's scores into P^T (key k, row n at (k / 8) 512 + (n / 8) 128 +
  // (k % 8) 16 + (n % 8) 2 from pt, fp16), visible to the MMAs after the warpgroup's next barrier; their column sums
  // into sum
  auto put_p = [&](uint32_t pt, float (&sum)[8]) {
    const uint32_t at = pt + uint32_t(2 * cw * 512 + gid * 16 + tig * 4);
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      float w[4];
#pragma unroll
      for (int e = 0; e < 4; ++e) w[e] = fast_exp2(fmaf(sacc[4 * i + e], s_mul, -m_run[2 * i + (e & 1)]));
      sum[2 * i] = w[0] + w[2];
      sum[2 * i + 1] = w[1] + w[3];
      st_shared_u32(at + i * 128, pack_half2(w[0], w[1]));
      st_shared_u32(at + i * 128 + 512, pack_half2(w[2], w[3]));
    }
    fence_proxy_async();
  };
  // The online softmax of a tile (keys 16 cw + gid and + 8 attended?) with its weights in P^T, visible to the MMAs.
  // The weights are written from the running maxima, then one warpgroup barrier both publishes them and takes the
  // lazy max's vote: did any score pass its column's bound? Rarely so (a column's first tiles, a score kSlack above
  // its max): the tile's column maxima through shared memory, the running maxima moved to them, O and the sums
  // rescaled, the weights written again and a second barrier.
  auto softmax = [&](bool keep0, bool keep1, uint32_t pt) {
    bool over = false;
#pragma unroll
    for (int i = 0; i < 4; ++i) {
#pragma unroll
      for (int e = 0; e < 2; ++e) {
        float& s0 = sacc[4 * i + e];
        float& s1 = sacc[4 * i + 2 + e];
        s0 = keep0 ? s0 : -INFINITY;
        s1 = keep1 ? s1 : -INFINITY;
        over |= fmaxf(s0, s1) > lim[2 * i + e];
      }
    }
    float sum[8];
    put_p(pt, sum);
    if (barrier_or(kBarWg0 + c, 128, over)) {
      float tmax[8];
#pragma unroll
      for (int i = 0; i < 4; ++i)
#pragma unroll
        for (int e = 0; e < 2; ++e)
          tmax[2 * i + e] = column_reduce(fmaxf(sacc[4 * i + e], sacc[4 * i + 2 + e]),
                                          [](float a, float b) { return fmaxf(a, b); });
      to_red(tmax);
      named_barrier(kBarWg0 + c, 128);
      float alpha[8];
#pragma unroll
      for (int i = 0; i < 4; ++i) {
#pragma unroll
        for (int e = 0; e < 2; ++e) {
          const int col = 2 * i + e, n = 8 * i + 2 * tig + e;
          const float mx = fmaxf(fmaxf(red[n], red[kRows + n]), fmaxf(red[2 * kRows + n], red[3 * kRows + n]));
          const float m_new = fmaxf(m_run[col], mx * s_mul);
          alpha[col] = fast_exp2(m_run[col] - m_new);  // (0 from kNoMax)
          m_run[col] = m_new;
          lim[col] = (m_new + kSlack) * inv_s_mul;
          l_run[col] *= alpha[col];
        }
      }
#pragma unroll
      for (int mb = 0; mb < 2; ++mb)
#pragma unroll
        for (int i = 0; i < 4; ++i)
#pragma unroll
          for (int e = 0; e < 4; ++e) o[mb][4 * i + e] *= alpha[2 * i + (e & 1)];
      put_p(pt, sum);
      named_barrier(kBarWg0 + c, 128);
    }
#pragma unroll
    for (int col = 0; col < 8; ++col) l_run[col] += sum[col];
  };

  if constexpr (NP > 0) {
    // the fills taken: one producer's c, c + NC, ...; a pair's all of its producer's. A tile's step in turn: S^T,
    // the softmax, P^T, O^T, the stage freed.
    const uint32_t p_base = base + kOffP + c * 2 * kPBytes;
    for (int fill = NP == 1 ? c : 0, pbuf = 0;; fill += NP == 1 ? NC : 1, pbuf ^= 1) {
      if (!wait_fill(fill)) break;
      const int s = stage_of(fill);
      const unsigned char* meta = smem + kOffMeta + s * 128;
      const uint32_t pt = p_base + uint32_t(pbuf * kPBytes);
      scores(s);
      softmax(meta[16 * cw + gid] != 0, meta[16 * cw + gid + 8] != 0, pt);
      values(base + s * kStageBytes, pt, nullptr);
      free_stage(s);
    }
  } else {
    // no producers: tiles t_first + c, + NC, ..., each dequantized by this warpgroup into S^T's A registers (keys
    // kk0 and kk0 + 8, values [32 tig, + 32) of each: the layout above ra_src) and its latent into one of the
    // consumer's two buffers (the other's latent tile and P^T may still be read by a slower warp's O^T MMAs of the
    // tile before: the softmax's barrier is the warpgroup's only one between them)
    const int sm_key = 16 * cw + (lane & 7) + 8 * ((lane >> 3) & 1);  // the latent tile's row this lane addresses
    const uint32_t latent0 = base + uint32_t(c * 2 * kBufBytes);
    int buf = 0;
    // a tile whose keys are all of the other modality (two sets) is skipped, by the warpgroup's vote; none is needed
    // from `pure_from` on: one set, or a text CTA past the cache's image bound (every tile of the range then has a
    // key the CTA attends)
    const int pure_from = two == 1 ? 0 : (cta_mod == 0 && p.image_end) ? p.image_end[b] : INT_MAX;
    auto vote = [&](bool k0, bool k1, int t) {
      return t * kTile >= pure_from || barrier_or(kBarWg0 + c, 128, k0 || k1);
    };
    // late: nullptr (the RoPE key's chunks in d0, d1 already), or what dequantizes them into d0[4..7], d1[4..7]
    // while the latent's 8 MMAs run (S^T's MMAs then in two groups)
    auto step = [&](bool k0, bool k1, uint4 (&d0)[8], uint4 (&d1)[8], auto&& late, auto&& ahead) {
      constexpr bool kLate = kGiven<decltype(late)>;
      const uint32_t tile = latent0 + uint32_t(buf * kBufBytes), pt = tile + kLatentBytes;
      buf ^= 1;
      // the latent's k-steps (0-7) as S^T's MMAs take them: column k of the tile is k-step k / 16's (ra_feature
      // maps O^T's rows back); the A registers of a k-step are four 8 x 8 matrices (keys 0-7 and 8-15 of the warp's,
      // columns 16 ks + [0, 8) and + [8, 16)), stored by one stmatrix: lane 8 m + r gives matrix m's row r
#pragma unroll
      for (int ks = 0; ks < 8; ++ks) {
        const int w = ks >> 1, i = 2 * (ks & 1);
        const uint32_t at = tile + uint32_t((ks >> 2) * kBlockBytes) + swz(sm_key, 2 * (ks & 3) + (lane >> 4));
        stmatrix_x4(at, pair_of(d0[w], i), pair_of(d1[w], i), pair_of(d0[w], i + 1), pair_of(d1[w], i + 1));
      }
      // S^T = A Q^T, A the 16 k-steps' registers: pairs 2 ks and 2 ks + 1 of each key
      fence_regs(sacc);
      fence_words<kLate ? 4 : 8>(d0);
      fence_words<kLate ? 4 : 8>(d1);
      wgmma_fence();
#pragma unroll
      for (int ks = 0; ks < 16; ++ks) {
        if constexpr (kLate) {
          if (ks == 8) {
            wgmma_commit();
            late();
            fence_words<8>(d0);
            fence_words<8>(d1);
            wgmma_fence();
          }
        }
        const int w = ks >> 1, i = 2 * (ks & 1);
        const uint32_t qoff = uint32_t((ks >> 2) * kQBlockBytes + (ks & 3) * 32) >> 4;
        wgmma_m64n32k16_ra(sacc, pair_of(d0[w], i), pair_of(d1[w], i), pair_of(d0[w], i + 1), pair_of(d1[w], i + 1),
                           dq + qoff, ks > 0 ? 1 : 0);
      }
      wgmma_commit();
      wgmma_wait<0>();
      fence_regs(sacc);
      softmax(k0, k1, pt);  // (its fence and barrier also publish the latent tile to the MMAs)
      // (left in flight, for the next S^T's wait to take, ptxas serialized the kernel's MMAs: 54 waits in the SASS,
      // 1.3x the time; H200, session 39)
      values(tile, pt, ahead);
    };
    if (!ring) {
      const int t0 = t_first + c, keys_a_step = kTile * NC;
      int tl = t0 + NC;  // the next tile to load (the first's loads are in `first`)
      auto load_next = [&](RawRa& x) {
        load_ra(src, vlo, tl < t_end ? vhi : vlo, x);
        advance(src, keys_a_step);
        tl += NC;
      };
      // half h of x's two keys into d0, d1; its raw words pinned first (an empty asm ordered after the MMAs issued
      // before it: else the compiler hoists the dequantization above them)
      auto dequant_pinned = [&](RawRa& x, int h, uint4 (&d0)[8], uint4 (&d1)[8]) {
#pragma unroll
        for (int k = 0; k < 2; ++k) {
          uint4& v = h ? x.r[k] : x.c[k];
          uint32_t& sc = h ? x.rs[k] : x.cs[k];
          uint32_t& lo = h ? x.rl[k] : x.cl[k];
          asm volatile("" : "+r"(v.x), "+r"(v.y), "+r"(v.z), "+r"(v.w), "+r"(sc), "+r"(lo)::"memory");
        }
        dequant_ra_half(x, 0, h, d0);
        dequant_ra_half(x, 1, h, d1);
      };
      // The next tile's loads in flight while one is processed, then copied to its set (unrolled by two, without
      // the copies, the loop's code was twice the size and the kernel 3.5-4.5% slower: H200, session 39). A tile's
      // latent half is dequantized while the tile before's O^T MMAs run, its RoPE half while its own latent MMAs
      // do (with the finite maxima above, 7% less time from 32 sequences than dequantizing both before the MMAs:
      // H200, session 40).
      RawRa x = first;
      uint4 d0[8], d1[8];
      dequant_ra_half(x, 0, 0, d0);
      dequant_ra_half(x, 1, 0, d1);
      for (int t = t0; t < t_end; t += NC) {
        RawRa next;
        load_next(next);
        const bool k0 = keeps(x.in[0], x.mod[0]), k1 = keeps(x.in[1], x.mod[1]);
        auto ahead = [&]() { dequant_pinned(next, 0, d0, d1); };
        if (vote(k0, k1, t)) {
          step(k0, k1, d0, d1, [&]() { dequant_pinned(x, 1, d0, d1); }, ahead);
        } else {
          ahead();
        }
        x = next;
      }
    } else {
      // the ring's bf16 rows (at most a few tiles): to fp16 in the chunk order
      for (int t = t_first + c; t < t_end; t += NC) {
        bool kp[2];
        uint4 d[2][8];
#pragma unroll
        for (int k = 0; k < 2; ++k) {
          uint4 cw[4], rw[4];
          kp[k] = ring_key(t * kTile + kk0 + 8 * k, 32 * tig, 4, cw, rw);
#pragma unroll
          for (int w = 0; w < 4; ++w) {
            d[k][w] = bf16_chunk_to_f16(cw[w]);  // (zeros stay zeros)
            d[k][4 + w] = bf16_chunk_to_f16(rw[w]);
          }
        }
        if (!vote(kp[0], kp[1], t)) continue;
        step(kp[0], kp[1], d[0], d[1], nullptr, nullptr);
      }
    }
  }

  // ---- the two consumers' merge, then the partials ----
  // the column sums over the warpgroup
#pragma unroll
  for (int col = 0; col < 8; ++col) l_run[col] = column_reduce(l_run[col], [](float a, float b) { return a + b; });
  named_barrier(kBarWg0 + c, 128);  // (red's last reads of the loop)
  to_red(l_run);
  named_barrier(kBarWg0 + c, 128);
  float* const ml = reinterpret_cast<float*>(smem + kOffMl);  // [consumer][max, sum][32]
  if (cw == 0 && gid == 0) {
#pragma unroll
    for (int i = 0; i < 4; ++i) {
#pragma unroll
      for (int e = 0; e < 2; ++e) {
        const int n = 8 * i + 2 * tig + e;
        ml[(2 * c) * kRows + n] = m_run[2 * i + e] == kNoMax ? -INFINITY : m_run[2 * i + e] + qbl[n];
        ml[(2 * c + 1) * kRows + n] = red[n] + red[kRows + n] + red[2 * kRows + n] + red[3 * kRows + n];
      }
    }
  }
  named_barrier(kBarConsumers, 128 * NC);
  auto cta_max = [&](int n) {
    float m = ml[n];
#pragma unroll
    for (int k = 1; k < NC; ++k) m = fmaxf(m, ml[2 * k * kRows + n]);
    return m;
  };
  auto factor = [&](int cons, int n) {  // consumer cons's weight in the CTA's max
    const float mc = ml[2 * cons * kRows + n];
    return mc == -INFINITY ? 0.f : fast_exp2(mc - cta_max(n));
  };
  float* const merge = reinterpret_cast<float*>(smem + kOffMerge);  // [32 rows][kMergeStride], O's columns
  for (int pass = NC - 1; pass >= 0; --pass) {  // the last consumer writes, the others add
    if (c == pass) {
#pragma unroll
      for (int i = 0; i < 4; ++i) {
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          const int n = 8 * i + 2 * tig + (e & 1);
          const float f = factor(c, n);
#pragma unroll
          for (int mb = 0; mb < 2; ++mb) {
            // O^T's row 64 mb + 16 cw + 8 (e / 2) + gid: the chunk order's column (NP 0: ra_feature's)
            const int d = NP == 0 ? ra_feature(64 * mb + 16 * cw + 8 * (e >> 1) + gid)
                                  : 64 * mb + 16 * cw + 8 * (e >> 1) + chunk_column(gid);
            float& at = merge[n * kMergeStride + d];
            at = (pass == NC - 1 ? 0.f : at) + o[mb][4 * i + e] * f;
          }
        }
      }
    }
    named_barrier(kBarConsumers, 128 * NC);
  }
  const int ct = c0;
  if (ct < kRows) {
    float mass = 0.f;
#pragma unroll
    for (int k = 0; k < NC; ++k) mass += ml[(2 * k + 1) * kRows + ct] * factor(k, ct);
    write_header(ct, cta_max(ct), mass);
  }
  for (int idx = ct; idx < kRows * 32; idx += 128 * NC) {
    const int n = idx >> 5, c4 = idx & 31, head = row_head(n);
    if (head == kPadHead) continue;
    const float4 v = *reinterpret_cast<const float4*>(merge + n * kMergeStride + 4 * c4);
    *reinterpret_cast<float4*>(w.acc_at(p, ps, cta_mod, b, head) + 4 * c4) = v;
  }
#else
  __trap();  // built for sm_90a only (CMakeLists.txt)
#endif
}

}  // namespace

KernelFn wgmma_kernel_int4(int consumers, int producers) {
  if (producers == 0) {
    return consumers == 2 ? mla_decode_wgmma_kernel<2, 0> : nullptr;  // (3: ptxas spills 664 bytes at 168 registers)
  }
  if (producers == 2) return consumers == 2 ? mla_decode_wgmma_kernel<2, 2> : nullptr;
  if (producers != 1) return nullptr;
  return consumers == 3   ? mla_decode_wgmma_kernel<3, 1>
         : consumers == 2 ? mla_decode_wgmma_kernel<2, 1>
                          : nullptr;
}
int wgmma_smem_bytes(int consumers, int producers) {
  if (producers == 0) return WgLayout<2, 0>::kSmemBytes;
  if (producers == 2) return WgLayout<2, 2>::kSmemBytes;
  return consumers == 3 ? WgLayout<3, 1>::kSmemBytes : WgLayout<2, 1>::kSmemBytes;
}

}  // namespace mla_decode_detail
}  // namespace vlm2mla
