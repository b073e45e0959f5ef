// ops_cuda_internal.h: what the CUDA backend's kernel files share with ops_cuda.cu (CUDA C++ only, not a
// public interface). Each kernel file keeps its own state behind an opaque pointer that ops_cuda.cu holds
// and frees; launchers take the backend's stream last.
#pragma once
#include <cuda_bf16.h>
#include <cuda_runtime.h>
#include <stddef.h>

extern "C" {
#include "model/ops.h"
#include "util/check.h"
}

#define CUDA_CHECK(x)                                                                 \
    do {                                                                              \
        cudaError_t err_ = (x);                                                       \
        if (err_ != cudaSuccess) fatal("CUDA: %s: %s", #x, cudaGetErrorString(err_)); \
    } while (0)

// attention_bwd.cu: flash attention backward (Ops.attention_bwd). The state caches the key-major work
// list of the last segment list and the fp32 accumulation scratch; *st starts NULL.
typedef struct AttnBwd AttnBwd;
void attn_bwd_run(AttnBwd **st, __nv_bfloat16 *dq, __nv_bfloat16 *dk, __nv_bfloat16 *dv, const __nv_bfloat16 *dout,
                  const __nv_bfloat16 *out, const float *lse, const __nv_bfloat16 *q, const __nv_bfloat16 *k,
                  const __nv_bfloat16 *v, const AttnSeg *segs, int nseg, int H, int KVH, int hd, float scale,
                  int n_sm, cudaStream_t stream);
// Device bytes the state holds (plan and scratch), for the backend's peak.
size_t attn_bwd_bytes(const AttnBwd *st);
void attn_bwd_free(AttnBwd *st);
