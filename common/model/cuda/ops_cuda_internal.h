// ops_cuda_internal.h: what the files of the CUDA backend share (CUDA C++ only, not a public interface):
// the backend state behind Ops.impl, the graph-pass helpers every op calls first, small launch helpers,
// the attention work lists, and each file's entry points. ops_cuda.cu fills the Ops table from the cu_*
// functions declared here; one file per concern defines them:
//   graph.cu             CUDA graphs of a repeated op sequence (ops.h graph_*)
//   memory.cu            allocation, copies, uploads and downloads
//   gemm.cu              cuBLASLt GEMMs with cached, tuned plans
//   elementwise.cu       norms, log-probs, RoPE, activations, row copies and the fused decoder ops
//   attention.cu         attention work lists, the kernel choice and the CUDA-core attention kernel
//   decode_attention.cu  the decode-step attention kernel
//   flash_fwd.cu         the flash attention forward kernels (mma.sync and WMMA)
//   attention_bwd.cu     the flash attention backward
//   backward.cu          the other backward ops
//   sampling.cu          Philox fills and the device sampler
// Kernels and their launchers live together; launchers take the stream last.
#pragma once
#include <cublasLt.h>
#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_runtime.h>
#include <stddef.h>
#include <stdint.h>

#include "model/cuda/cuda_check.h"
#include "model/cuda/ops_cuda.h"
#include "model/cuda/ops_cuda_kernels.h"

extern "C" {
#include "model/ops.h"
#include "util/check.h"
}

typedef __nv_bfloat16 bf16;

// ---------------------------------------------------------------- attention work lists

// The attention work lists attention.cu builds (att_build) and the attention kernels read. A row: query
// row q sees own_vis keys from own_start (plus its item's prefix). An item: rows [row0, row0 + nrows) of
// the row list, all seeing the prefix keys [pre_start, pre_start + pre_len).
typedef struct {
    int q, own_start, own_vis, pad;
} AttRow;
typedef struct {
    int row0, nrows, pre_start, pre_len;
} AttItem;

// FA_BQ: rows of a flash item (both flash kernels); ATT_MAXV: most query vectors (rows x GQA group) of
// an item of the other kernels; DA_KT: keys of a decode tile and DA_WARPS: warps of a decode block
// (decode_attention.cu; the plan counts an item's tiles and sizes the split with them).
enum { FA_BQ = 64, ATT_MAXV = 64, DA_KT = 32, DA_WARPS = 4 };

// ---------------------------------------------------------------- backend state

typedef struct AttnBwd AttnBwd;  // attention_bwd.cu
enum { PLAN_CAP = 512, ATT_CACHE = 2 };

typedef struct {
    int M, N, K, ta, tb, bias, beta, align;  // key
    cublasLtMatmulDesc_t desc;
    cublasLtMatrixLayout_t la, lb, lc;
    cublasLtMatmulAlgo_t algo;
    int ok;  // 0: cuBLASLt found no plan, use cublasGemmEx
} GemmPlan;

// Device copy of one attention call's work list (attention.cu), reused while the host segments
// are unchanged: every layer of a forward passes the same list.
typedef struct {
    AttnSeg *segs;  // host copy of the key
    int nseg, cap_seg, group;
    void *rows, *items, *fitems;  // device: rows, items, and the tensor-core path's one-segment items
    size_t cap_rows, cap_items, cap_fitems;
    int n_fitems;
    int n_items, n_rows, max_vec, nq, max_pre;  // nq: query rows spanned, max_pre: longest prefix
    int max_tiles;  // most 32-key tiles (prefix, then each run's own keys) of an item: the decode path's work
    unsigned long long stamp;
    float *part;  // a graph's list only: its own split states (Cuda.part otherwise)
    size_t part_n;
} AttnCache;

typedef struct {
    cudaStream_t stream;
    cublasHandle_t blas;
    cublasLtHandle_t lt;
    void *lt_ws;
    size_t lt_ws_bytes;
    GemmPlan plans[PLAN_CAP];
    int n_plans;
    float *scratch;  // fp32 staging for upload_act / download_act
    size_t scratch_n;
    AttnCache att[ATT_CACHE];
    unsigned long long att_clock;
    float *part;  // split-prefix attention states
    size_t part_n;
    int n_sm;
    void **blk_ptr;  // live allocations and their sizes, for the peak
    size_t *blk_size;
    int n_blk, cap_blk;
    size_t cur_bytes, peak_bytes;
    void *smp;  // sample_rows workspace (see there)
    size_t smp_bytes;
    AttnBwd *attn_bwd;  // attention_bwd.cu's plan and scratch
    struct Graph *gr;   // the graph of the pass in progress (graph_begin .. graph_end), or NULL
} Cuda;

static inline Cuda *impl(Ops *o) { return (Cuda *)o->impl; }

// ---------------------------------------------------------------- graph passes (graph.cu)

// A pass through a graph is the model code issuing its ops as usual. On the first pass the stream is
// captured: host inputs are copied into pinned blocks the graph owns and the captured copies read them
// there, and device buffers an op needs for itself (attention work lists, split states) are the graph's
// own, so every address in the graph stays valid. On a later pass each op only adds its arguments to a
// signature and the host inputs are rewritten in place, in the same order; graph_end compares the
// signature with the captured one and replays, or asks for the pass again after dropping the graph.
enum { GRAPH_PIN_BLOCK = 1 << 16 };

typedef struct {
    void *host;  // pinned source of one captured upload
    size_t bytes;
    void *dst;
} GraphStage;

typedef struct Graph {
    cudaGraphExec_t exec;  // NULL until captured
    cudaEvent_t done;      // the last launch finished: its pinned inputs may be rewritten
    int replay, bad;       // this pass only stages; its inputs did not match the captured ones
    uint64_t key, pass_key;
    GraphStage *st;  // captured uploads in order; i_st: the next one of this pass
    int n_st, cap_st, i_st;
    void **pins;  // pinned blocks; the last one is filled from pin_used
    int n_pins;
    size_t pin_used, pin_cap;
    void **devs;  // device buffers owned by the graph
    int n_devs;
    AttnCache *plans;  // attention work lists in first-use order; i_plan: the current one of this pass
    int n_plans, i_plan;
} Graph;

static inline void graph_mix(Graph *g, const uint64_t *v, size_t n) {
    for (size_t i = 0; i < n; i++) g->pass_key = (g->pass_key ^ v[i]) * 1099511628211ull + (v[i] >> 29);
}

// Records an op's arguments (integers and pointers) in the pass signature, after the op's place in the
// source (file and line); true when the op must not run (a replay pass: its kernels are in the graph).
template <typename... Ts>
static inline int graph_skip(Cuda *c, const char *file, int line, Ts... v) {
    if (!c->gr) return 0;
    const uint64_t k[] = {(uint64_t)(uintptr_t)file, (uint64_t)line, (uint64_t)v...};
    graph_mix(c->gr, k, sizeof k / sizeof k[0]);
    return c->gr->replay;
}
#define GRAPH_SKIP(c, ...)                                              \
    do {                                                                \
        if (graph_skip((c), __FILE__, __LINE__, __VA_ARGS__)) return;   \
    } while (0)

// Fatal inside a graph pass (`what` reads back, synchronises or allocates).
void graph_forbid(Cuda *c, const char *what);
// A device buffer the graph owns (freed with it).
void *graph_dev_alloc(Graph *g, size_t bytes);
// dst <- src_host[bytes] as an input of the graph pass in progress.
void graph_stage(Cuda *c, void *dst, const void *src, size_t bytes);

// ---------------------------------------------------------------- launch helpers

// Blocks of a grid-stride loop over n elements.
static inline unsigned grid_for(size_t n, int threads) {
    size_t b = (n + threads - 1) / threads;
    return (unsigned)(b > 65535 * 16 ? 65535 * 16 : (b ? b : 1));
}

// Threads of a block that walks a row of C columns.
static inline int row_threads(int C) {
    int t = 32;
    while (t < 1024 && t < C / 4) t *= 2;
    return t;
}

// Sum over the block of one float per thread (blockDim.x a multiple of 32, <= 1024); sh: 32 floats.
static __device__ __forceinline__ float block_sum(float v, float *sh) {
    for (int o = 16; o; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    const int w = threadIdx.x / 32, nw = blockDim.x / 32;
    __syncthreads();  // sh may still be read by a previous call
    if (threadIdx.x % 32 == 0) sh[w] = v;
    __syncthreads();
    float t = 0.0f;
    for (int i = 0; i < nw; i++) t += sh[i];
    return t;
}

// ---------------------------------------------------------------- the ops of each file (see ops.h)

// graph.cu
void *cu_graph_create(Ops *o);
void cu_graph_begin(Ops *o, void *gp);
int cu_graph_end(Ops *o, void *gp, int run);
void cu_graph_free(Ops *o, void *gp);

// memory.cu
void *cu_alloc(Ops *o, size_t bytes);
void cu_free(Ops *o, void *p);
void cu_upload(Ops *o, void *dst, const void *src, size_t bytes);
void cu_download(Ops *o, void *dst, const void *src, size_t bytes);
void cu_copy(Ops *o, void *dst, const void *src, size_t bytes);
void cu_zero(Ops *o, void *dst, size_t bytes);
void cu_sync(Ops *o);
void cu_upload_act(Ops *o, Tensor *dst, const float *src, size_t n);
void cu_download_act(Ops *o, float *dst, const Tensor *src, size_t n);

// gemm.cu
void cu_matmul(Ops *o, Tensor *C, const Tensor *A, const Tensor *B, const Tensor *bias, int M, int N, int K, int ta,
               int tb, int accumulate);
// Destroys the cached plans (c->n_plans becomes 0).
void gemm_plans_free(Cuda *c);

// elementwise.cu
void cu_layernorm(Ops *o, Tensor *y, float *mean, float *rstd, const Tensor *x, const Tensor *w, const Tensor *b,
                  int T, int C, float eps);
void cu_rmsnorm(Ops *o, Tensor *y, float *rstd, const Tensor *x, const Tensor *w, int T, int C, float eps);
void cu_logprob(Ops *o, float *lp, float *lse, const Tensor *logits, const int *tgt, int R, int V);
void cu_im2col(Ops *o, Tensor *cols, const Tensor *x, int C, int Tin, int sc, int st, int K, int stride, int pad,
               int Tout);
void cu_rope(Ops *o, Tensor *x, const int *pos, int T, int H, int hd, float theta, int inverse);
void cu_gelu(Ops *o, Tensor *y, const Tensor *x, size_t n);
void cu_silu_mul(Ops *o, Tensor *y, const Tensor *g, const Tensor *u, size_t n);
void cu_add(Ops *o, Tensor *y, const Tensor *a, const Tensor *b, size_t n);
void cu_avgpool2(Ops *o, Tensor *y, const Tensor *x, int R, int C);
void cu_copy_rows(Ops *o, Tensor *dst, const int *dst_idx, const Tensor *src, const int *src_idx, int n, int C,
                  int accumulate);
void cu_swiglu(Ops *o, Tensor *y, const Tensor *gu, int T, int FF);
void cu_qkv_rope_cache(Ops *o, Tensor *q, Tensor *kc, Tensor *vc, const Tensor *qkv, const int *pos,
                       const int *kv_row, int T, int H, int KVH, int hd, float theta);

// attention.cu (ops_cuda_attention_with is the same entry with a named kernel)
void cu_attention(Ops *o, Tensor *out, float *lse, const Tensor *q, const Tensor *k, const Tensor *v,
                  const AttnSeg *segs, int nseg, int H, int KVH, int hd, float scale);
// Raises the CUDA-core kernel's shared-memory limit on the current device (once, at backend creation).
void attention_init(void);

// decode_attention.cu: items of few query vectors (a decode step) at head_dim 64 or 128, k/v rows 16-byte
// aligned; nv (8 or 16) query vectors a block, nchunk chunks of them per item, split blocks over an
// item's key tiles (tpb tiles each). part: split states as the CUDA-core kernel's (split > 1), merged by
// attention_merge_run.
void decode_attention_init(void);
void decode_attention_run(bf16 *out, float *lse, float *part, const bf16 *q, const bf16 *k, const bf16 *v,
                          const AttRow *rows, const AttItem *items, int n_items, int H, int KVH, int hd, int nv,
                          int nchunk, int split, int tpb, float scale, int nq, cudaStream_t stream);
// attention.cu: merges the split states part [split][nq][H][hd + 2] of rows[n_rows] into out and lse.
void attention_merge_run(bf16 *out, float *lse, const float *part, const AttRow *rows, int n_rows, int H, int hd,
                         int split, int nq, cudaStream_t stream);

// flash_fwd.cu: the flash forward over one-segment items of up to FA_BQ rows (every row of an item has
// the same own_start): out [rows, H, hd] bf16, natural-log lse [rows, H]; q [rows, H, hd], k/v [keys, KVH,
// hd], all 16-byte aligned. flash_fwd_run is the mma.sync kernel (head dims flash_fwd_supports, out
// 4-byte aligned); flash_wmma_run the WMMA kernel (head dims 32, 64, 128).
int flash_fwd_supports(int hd);
// Raises both kernels' shared-memory limits on the current device (once, at backend creation).
void flash_fwd_init(void);
void flash_fwd_run(bf16 *out, float *lse, const bf16 *q, const bf16 *k, const bf16 *v, const AttRow *rows,
                   const AttItem *items, int n_items, int H, int KVH, int hd, float scale, cudaStream_t stream);
void flash_wmma_run(bf16 *out, float *lse, const bf16 *q, const bf16 *k, const bf16 *v, const AttRow *rows,
                    const AttItem *items, int n_items, int H, int KVH, int hd, float scale, cudaStream_t stream);

// attention_bwd.cu: flash attention backward (Ops.attention_bwd). The state caches the key-major work
// list of the last segment list and the fp32 accumulation scratch; *st starts NULL. wmma: the WMMA kernel
// at every head dim (else the FA2 kernel where it applies).
void attn_bwd_run(AttnBwd **st, bf16 *dq, bf16 *dk, bf16 *dv, const bf16 *dout, const bf16 *out, const float *lse,
                  const bf16 *q, const bf16 *k, const bf16 *v, const AttnSeg *segs, int nseg, int H, int KVH, int hd,
                  float scale, int wmma, int n_sm, cudaStream_t stream);
// Device bytes the state holds (plan and scratch), for the backend's peak.
size_t attn_bwd_bytes(const AttnBwd *st);
void attn_bwd_free(AttnBwd *st);

// backward.cu
void cu_bias_grad(Ops *o, Tensor *db, const Tensor *dy, int M, int N);
void cu_col2im(Ops *o, Tensor *dx, const Tensor *dcols, int C, int Tin, int sc, int st, int K, int stride, int pad,
               int Tout);
void cu_layernorm_bwd(Ops *o, Tensor *dx, Tensor *dw, Tensor *db, const Tensor *dy, const Tensor *x, const Tensor *w,
                      const float *mean, const float *rstd, int T, int C);
void cu_rmsnorm_bwd(Ops *o, Tensor *dx, Tensor *dw, const Tensor *dy, const Tensor *x, const Tensor *w,
                    const float *rstd, int T, int C);
void cu_gelu_bwd(Ops *o, Tensor *dx, const Tensor *dy, const Tensor *x, size_t n);
void cu_silu_mul_bwd(Ops *o, Tensor *dg, Tensor *du, const Tensor *dy, const Tensor *g, const Tensor *u, size_t n);
void cu_avgpool2_bwd(Ops *o, Tensor *dx, const Tensor *dy, int R, int C);
void cu_logprob_bwd(Ops *o, Tensor *logits, const float *lse, const int *tgt, const float *dlp, int R, int V);
void cu_attention_bwd(Ops *o, Tensor *dq, Tensor *dk, Tensor *dv, const Tensor *dout, const Tensor *out,
                      const float *lse, const Tensor *q, const Tensor *k, const Tensor *v, const AttnSeg *segs,
                      int nseg, int H, int KVH, int hd, float scale);
// Raises the norm backward's shared-memory limit on the current device (once, at backend creation).
void backward_init(void);

// sampling.cu (ops_cuda_fill is there too)
void cu_sample_rows(Ops *o, int *ids_host, float *lp_host, const Tensor *logits, int R, int V,
                    const SamplerParams *sp, int *hist, const SampleRow *rows, uint32_t step);
