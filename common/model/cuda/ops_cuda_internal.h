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

// The kernel switches AQA_FLASH, AQA_DECODE_ATTN and AQA_ATTN_BWD: 1 when environment variable `var` is
// "old" (the older kernel, to isolate a fault), 0 when it is unset, empty or "new"; anything else is fatal.
int cuda_env_old(const char *var);

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

// The attention work lists ops_cuda.cu builds (att_build) and its kernels and flash_fwd.cu read. A row:
// query row q sees own_vis keys from own_start (plus its item's prefix). An item: rows
// [row0, row0 + nrows) of the row list, all seeing the prefix keys [pre_start, pre_start + pre_len).
typedef struct {
    int q, own_start, own_vis, pad;
} AttRow;
typedef struct {
    int row0, nrows, pre_start, pre_len;
} AttItem;

// flash_fwd.cu: the FlashAttention-2 style forward (mma.sync, cp.async) over the tensor-core path's
// one-segment items of up to 64 rows (every row of an item has the same own_start); same out and
// natural-log lse as flash_kernel. Head dims it handles:
int flash_fwd_supports(int hd);
// Raises the kernels' shared-memory limit on the current device (once, at backend creation).
void flash_fwd_init(void);
// out [rows, H, hd] bf16 (4-byte aligned), lse [rows, H]; q [rows, H, hd], k/v [keys, KVH, hd] (16-byte
// aligned).
void flash_fwd_run(__nv_bfloat16 *out, float *lse, const __nv_bfloat16 *q, const __nv_bfloat16 *k,
                   const __nv_bfloat16 *v, const AttRow *rows, const AttItem *items, int n_items, int H, int KVH,
                   int hd, float scale, cudaStream_t stream);
