// ops_cuda_kernels.h: attention with a named kernel of the CUDA backend, for the tests and benchmarks
// that compare kernel versions (tests/gpu, tests/bench/bench_attention --old). Not for the model code:
// Ops.attention and Ops.attention_bwd choose the kernel from the shapes and alignments (ATTN_AUTO).
#pragma once
#include "model/ops.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum {
    ATTN_AUTO,         // what Ops.attention / Ops.attention_bwd run
    ATTN_GENERIC,      // forward: the CUDA-core kernel for every run (no flash, no decode path)
    ATTN_FLASH_WMMA,   // forward: runs of many rows on the WMMA flash kernel (the path for head dim 32 and
                       // unaligned outputs) instead of flash_fwd.cu's mma.sync kernel
    ATTN_BWD_WMMA,     // backward: the WMMA kernel at every head dim (the FA2 kernel's fallback)
} AttnKernel;

// Ops.attention with kernel `kern` (ATTN_AUTO, ATTN_GENERIC or ATTN_FLASH_WMMA); arguments as there.
void ops_cuda_attention_with(Ops *o, AttnKernel kern, Tensor *out, float *lse, const Tensor *q, const Tensor *k,
                             const Tensor *v, const AttnSeg *segs, int nseg, int H, int KVH, int hd, float scale);
// Ops.attention_bwd with kernel `kern` (ATTN_AUTO or ATTN_BWD_WMMA); arguments as there.
void ops_cuda_attention_bwd_with(Ops *o, AttnKernel kern, Tensor *dq, Tensor *dk, Tensor *dv, const Tensor *dout,
                                 const Tensor *out, const float *lse, const Tensor *q, const Tensor *k,
                                 const Tensor *v, const AttnSeg *segs, int nseg, int H, int KVH, int hd,
                                 float scale);

#ifdef __cplusplus
}
#endif
