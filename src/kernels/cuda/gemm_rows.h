// A few rows times a weight matrix, y = x W^T (+ b), for the projections of a decode step at batches 2 to 16 (x
// [m, in], W [out, in] row-major, bf16 or fp16). There the GEMM is still a stream of the weight's bytes, but
// cuBLAS's kernels for eight rows split the sum along k and add the parts in a launch of their own (the H200,
// 2026-12-01: Qwen2.5-VL-7B's q/k/v, o_proj and down each a GEMM and a split-K reduction, the two small ones at
// ~2.3 TB/s), and cannot start loading weights before the kernel ahead has ended. This kernel reads each weight
// element once, on tensor cores (mma m16n8k16: the rows of x as the 16 rows of A, zeros past m, eight rows of W as
// B), a CTA's eight warps each taking every eighth 32-wide piece of k of the CTA's 16 weight rows and the warps'
// sums added in shared memory in a fixed order (no atomics: the same bits on every run), the bias added to the
// float32 sum and rounded once, one wave of CTAs where the rows allow. Launched programmatically (pdl.cuh), it loads
// its first weight pieces before it waits for the kernel ahead. No libtorch here.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "kernels/cuda/element_dtype.h"

namespace vlm2mla {

// The most rows of x the kernel takes (the 16 rows of the tensor cores' A operand).
inline constexpr int64_t kGemmRowsMax = 16;

// nullptr where launch_gemm_rows takes these sizes and pointers, else why not: 1 <= m <= kGemmRowsMax; out >= 1;
// in a multiple of 8 (16-byte pieces) up to 2^30; bf16 or fp16; x and w on 16-byte bounds.
const char* gemm_rows_unsupported(int64_t m, int64_t out, int64_t in, ElementDtype dtype, const void* x, const void* w);

// y[r][n] = sum_k x[r][k] w[n][k] (+ bias[n]) for r < m, n < out: x [m, in] and y [m, out] contiguous (y overlapping
// neither x nor w), bias [out] or null. Throws ArgumentError where gemm_rows_unsupported says why, Error when the
// launch fails.
void launch_gemm_rows(const void* x, const void* w, const void* bias, void* y, int64_t m, int64_t out, int64_t in,
                      ElementDtype dtype, cudaStream_t stream);

// SwiGLU's first half at a few rows in one launch: w [2 out, in] holds the gate's rows then up's (bias [2 out] or
// null), and y[r][i] = silu(g_ri) * u_ri with g and u the two halves of x w^T (+ bias), each rounded as
// launch_gemm_rows rounds it, and the SiLU and product as rms_norm.h's launch_silu_mul computes them (row_math.cuh):
// the bits of launch_gemm_rows over the 2 out rows then launch_silu_mul. y contiguous [m, out]. Throws as
// launch_gemm_rows (its conditions over 2 out rows).
void launch_gemm_rows_silu_mul(const void* x, const void* w, const void* bias, void* y, int64_t m, int64_t out,
                               int64_t in, ElementDtype dtype, cudaStream_t stream);

}  // namespace vlm2mla
