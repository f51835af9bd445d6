// One row times a weight matrix, y = x W^T (+ b), for the projections of a decode step at batch 1 (x [in],
// W [out, in] row-major, bf16 or fp16; the float32 sum plus the bias rounded once, where libtorch's one-row bf16
// linear was measured rounding x W^T before it adds the bias: tests/kernels/test_gemv.cpp). There the
// GEMM is a stream of the weight's bytes, and cuBLAS's kernels for one row reach 2.4-3.9 TB/s of the H200's ~4.2
// (o_proj and down the slowest, each with a split-K reduction launch of its own). This kernel reads each weight
// row once in 16-byte pieces, a CTA's eight warps each taking an eighth of every row of the CTA's block and the
// block's sums added in shared memory in a fixed order (no atomics: the same bits on every run), one wave of CTAs
// sized to the card. Launched programmatically (pdl.cuh), it loads its first weight pieces before it waits for
// the kernel ahead (the weights are no kernel's output), so that the stream's ramp overlaps that kernel's tail.
// No libtorch here.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "kernels/cuda/element_dtype.h"

namespace vlm2mla {

// The most in-features the kernel takes: a warp's eighth of a row is at most 12 pieces of 16 bytes a lane.
inline constexpr int64_t kGemvMaxIn = int64_t(8) * 8 * 32 * 12;  // 24,576

// nullptr where launch_gemv takes these sizes and pointers, else why not: out >= 1; in a multiple of 8 (16-byte
// pieces), 8 <= in <= kGemvMaxIn; bf16 or fp16; x and w on 16-byte bounds.
const char* gemv_unsupported(int64_t out, int64_t in, ElementDtype dtype, const void* x, const void* w);

// y[r] = sum_k x[k] w[r, k] (+ bias[r]) for r < out, y contiguous [out] (overlapping neither x nor w), bias [out]
// or null. Throws ArgumentError where gemv_unsupported says why, Error when the launch fails.
void launch_gemv(const void* x, const void* w, const void* bias, void* y, int64_t out, int64_t in, ElementDtype dtype,
                 cudaStream_t stream);

// SwiGLU's first half at one row in one launch: w [2 out, in] holds the gate's rows then up's (bias [2 out] or null),
// and y[i] = silu(g_i) * u_i with g and u the two halves of x w^T (+ bias), each rounded as launch_gemv rounds it,
// and the SiLU and product as rms_norm.h's launch_silu_mul computes them (row_math.cuh): the bits of the two
// launches, the SiLU x up launch gone. y contiguous [out]. Throws as launch_gemv (its conditions over 2 out rows).
void launch_gemv_silu_mul(const void* x, const void* w, const void* bias, void* y, int64_t out, int64_t in,
                          ElementDtype dtype, cudaStream_t stream);

}  // namespace vlm2mla
