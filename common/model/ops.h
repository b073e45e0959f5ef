// ops.h: the small compute interface the model is written against. A backend (CPU fp32: ops_cpu.c;
// CUDA: cuda/ops_cuda.h; pipeline/backend.h picks one from the config) fills an Ops table; the model only
// passes opaque buffers the backend allocated (host memory on the CPU, device memory on the GPU) and
// never reads element data itself. An op comes with its CPU and CUDA versions and a test of each
// (docs/architecture.md).
// Element types: a Tensor holds parameters, activations and gradients in the backend's storage type
// (fp32 on the CPU, bf16 on the GPU), act_size bytes each, so the model offsets into one only
// through ops_at(); statistics (mean, rstd, lse, lp, dlp) are fp32 (`float *`); index arrays (token ids,
// rows, positions) are int buffers in backend memory too.
// Every differentiable op has its backward; backward ops that produce parameter gradients ACCUMULATE
// (+=) so micro-batches and the shared prefix of a group sum naturally.
#pragma once
#include <stddef.h>
#include <stdint.h>

#include "model/sampler.h"

// One attention segment: a run of query rows and the key rows they may see. Keys come from two ranges
// of the same K/V buffers: a prefix seen by every query (the shared prompt of a group, or nothing), and
// the segment's own keys, of which the queries are the LAST q_len (causal: query j sees own keys
// [0, k_len - q_len + j]); bidirectional segments see all k_len own keys (the audio key-length mask).
typedef struct {
    int q_start, q_len;      // rows of q / out / lse
    int pre_start, pre_len;  // prefix key rows, all visible
    int k_start, k_len;      // own key rows
    int causal;
} AttnSeg;

// One row of a sample_rows call: its token history (for the repetition penalty) at hist + hist_off,
// n_hist ids, and its RNG key (question, sample).
typedef struct {
    int hist_off, n_hist;
    uint32_t question, sample;
} SampleRow;

// A backend buffer of act_size-byte elements (see above).
typedef void Tensor;

typedef struct Ops Ops;
struct Ops {
    const char *name;
    void *impl;  // backend state (stream, BLAS handle, workspace)
    void (*destroy)(Ops *o);
    size_t act_size;  // bytes per Tensor element

    // memory: buffers live in backend memory; upload/download copy raw bytes (ints, fp32 statistics),
    // the _act forms convert n host fp32 values to/from Tensor storage
    void *(*alloc)(Ops *o, size_t bytes);  // zero-filled
    void (*free)(Ops *o, void *p);
    void (*upload)(Ops *o, void *dst, const void *src_host, size_t bytes);
    void (*download)(Ops *o, void *dst_host, const void *src, size_t bytes);
    void (*upload_act)(Ops *o, Tensor *dst, const float *src_host, size_t n);
    void (*download_act)(Ops *o, float *dst_host, const Tensor *src, size_t n);
    void (*copy)(Ops *o, void *dst, const void *src, size_t bytes);
    void (*zero)(Ops *o, void *dst, size_t bytes);
    void (*sync)(Ops *o);

    // C[M,N] (= or +=) op(A) op(B) (+ bias[N]). A is [M,K], or [K,M] when ta; B is [K,N], or [N,K] when
    // tb. A Linear is y = x W^T + b: matmul(y, x, W, b, T, out, in, 0, 1, 0).
    void (*matmul)(Ops *o, Tensor *C, const Tensor *A, const Tensor *B, const Tensor *bias, int M, int N, int K,
                   int ta, int tb, int accumulate);
    // db[N] += sum over rows of dy[M,N]
    void (*bias_grad)(Ops *o, Tensor *db, const Tensor *dy, int M, int N);

    // Conv1d as im2col + matmul. x element (c, t) is at x[c*sc + t*st] (channel-major features or a
    // time-major activation); cols[Tout, C*K] with column c*K+k = x(c, t*stride + k - pad) or 0.
    void (*im2col)(Ops *o, Tensor *cols, const Tensor *x, int C, int Tin, int sc, int st, int K, int stride,
                   int pad, int Tout);
    // dx(c, t) += every cols entry that im2col copied from it
    void (*col2im)(Ops *o, Tensor *dx, const Tensor *dcols, int C, int Tin, int sc, int st, int K, int stride,
                   int pad, int Tout);

    // y[T,C] = (x - mean) * rstd * w + b; saves mean[T], rstd[T]
    void (*layernorm)(Ops *o, Tensor *y, float *mean, float *rstd, const Tensor *x, const Tensor *w,
                      const Tensor *b, int T, int C, float eps);
    // dx += ..., dw += ..., db += ...
    void (*layernorm_bwd)(Ops *o, Tensor *dx, Tensor *dw, Tensor *db, const Tensor *dy, const Tensor *x,
                          const Tensor *w, const float *mean, const float *rstd, int T, int C);
    // y[T,C] = w * x * rstd, rstd = 1/sqrt(mean(x^2) + eps); saves rstd[T]
    void (*rmsnorm)(Ops *o, Tensor *y, float *rstd, const Tensor *x, const Tensor *w, int T, int C, float eps);
    // dx += ..., dw += ...
    void (*rmsnorm_bwd)(Ops *o, Tensor *dx, Tensor *dw, const Tensor *dy, const Tensor *x, const Tensor *w,
                        const float *rstd, int T, int C);

    // Rotate-half RoPE in place on x[T, H, hd] at positions pos[T]; inverse=1 applies the transpose
    // rotation, which is the backward.
    void (*rope)(Ops *o, Tensor *x, const int *pos, int T, int H, int hd, float theta, int inverse);

    // out[Tq, H*hd], lse[Tq, H] from q[Tq, H*hd], k/v[Tk, KVH*hd] (GQA: head h reads kv head
    // h / (H / KVH)); scores scaled by `scale`, softmax over the keys each segment allows. segs is a
    // HOST array (small metadata a GPU backend uploads itself).
    void (*attention)(Ops *o, Tensor *out, float *lse, const Tensor *q, const Tensor *k, const Tensor *v,
                      const AttnSeg *segs, int nseg, int H, int KVH, int hd, float scale);
    // dq, dk, dv += ... (recomputes probabilities from q, k and the saved lse)
    void (*attention_bwd)(Ops *o, Tensor *dq, Tensor *dk, Tensor *dv, const Tensor *dout, const Tensor *out,
                          const float *lse, const Tensor *q, const Tensor *k, const Tensor *v, const AttnSeg *segs,
                          int nseg, int H, int KVH, int hd, float scale);

    // exact (erf) GELU: y = gelu(x); dx = dy * gelu'(x) (dx may alias dy)
    void (*gelu)(Ops *o, Tensor *y, const Tensor *x, size_t n);
    void (*gelu_bwd)(Ops *o, Tensor *dx, const Tensor *dy, const Tensor *x, size_t n);
    // y = silu(g) * u; dg, du = ... (dg may alias dy)
    void (*silu_mul)(Ops *o, Tensor *y, const Tensor *g, const Tensor *u, size_t n);
    void (*silu_mul_bwd)(Ops *o, Tensor *dg, Tensor *du, const Tensor *dy, const Tensor *g, const Tensor *u,
                         size_t n);
    // y = a + b (y may alias a)
    void (*add)(Ops *o, Tensor *y, const Tensor *a, const Tensor *b, size_t n);
    // AvgPool1d(2, 2) over rows: y[r] = (x[2r] + x[2r+1]) / 2, y[R,C]; backward writes dx[2R,C]
    void (*avgpool2)(Ops *o, Tensor *y, const Tensor *x, int R, int C);
    void (*avgpool2_bwd)(Ops *o, Tensor *dx, const Tensor *dy, int R, int C);

    // Row copy, the embedding gather/scatter and the audio merge: for i < n,
    // dst[di] (= or +=) src[si] with di = dst_idx ? dst_idx[i] : i, si = src_idx ? src_idx[i] : i;
    // rows with a negative di are skipped (no gradient into embedding rows replaced by audio).
    void (*copy_rows)(Ops *o, Tensor *dst, const int *dst_idx, const Tensor *src, const int *src_idx, int n, int C,
                      int accumulate);

    // Log-probability of one target per row of logits[R,V]: lp[r] = logits[r,tgt[r]] - logsumexp(row),
    // saving lse[R]. The model feeds row chunks so [tokens, vocab] is never held whole.
    void (*logprob)(Ops *o, float *lp, float *lse, const Tensor *logits, const int *tgt, int R, int V);
    // In place: logits[r,:] becomes d logits = dlp[r] * (onehot(tgt[r]) - softmax(row)).
    void (*logprob_bwd)(Ops *o, Tensor *logits, const float *lse, const int *tgt, const float *dlp, int R, int V);

    // Optional (NULL: the caller samples on the host with sampler_pick). Chooses the next token of each
    // row of logits[R,V] exactly as sampler_pick does (same processing order, same Philox draw keyed by
    // (sp->seed, question, sample, step)); ids_host[R], lp_host[R] get the choices and their log-probs
    // under the unprocessed logits. rows is a HOST array; hist is a backend int buffer, and each row's
    // choice is appended to its history (hist[hist_off + n_hist] = id), so the caller never uploads it.
    void (*sample_rows)(Ops *o, int *ids_host, float *lp_host, const Tensor *logits, int R, int V,
                        const SamplerParams *sp, int *hist, const SampleRow *rows, uint32_t step);

    // Optional (NULL: no fused decoder ops; the model then uses the ops above). Inference-only fusions
    // over the parameter table's adjacent tensors: y[T,FF] = silu(gu[:, :FF]) * gu[:, FF:] for the one
    // GEMM over gate_proj and up_proj stacked ([2FF, D]) ...
    void (*swiglu)(Ops *o, Tensor *y, const Tensor *gu, int T, int FF);
    // ... and, from qkv[T, Q + 2 KV] (q_proj, k_proj, v_proj stacked), q[T, Q] with RoPE at pos[T] and
    // the roped key and the value of row t written to cache rows kv_row[t] of kc, vc [rows, KV].
    void (*qkv_rope_cache)(Ops *o, Tensor *q, Tensor *kc, Tensor *vc, const Tensor *qkv, const int *pos,
                           const int *kv_row, int T, int H, int KVH, int hd, float theta);

    // Optional (NULL: every op runs when it is called). Graphs of a repeated op sequence (decode steps).
    // Between graph_begin and graph_end ops are not run one by one: the first pass through a graph
    // captures them (host inputs such as upload sources and attention work lists staged in pinned
    // memory at fixed addresses); later passes only restage those inputs and graph_end replays the whole
    // sequence as one launch. graph_end returns 1 when the pass's op sequence differed from the captured
    // one (other shapes or buffers): the graph is then dropped and the caller repeats the pass, which
    // captures afresh. A pass holds forward ops only; nothing in it may read results back (download,
    // sync, sample_rows) or allocate.
    // run = 0 abandons the pass (its caller failed part-way) without running anything.
    void *(*graph_create)(Ops *o);
    void (*graph_begin)(Ops *o, void *g);
    int (*graph_end)(Ops *o, void *g, int run);
    void (*graph_free)(Ops *o, void *g);
};

// The CPU backend: fp32, OpenMP threads.
Ops *ops_cpu_create(void);
static inline void ops_destroy(Ops *o) { o->destroy(o); }
// Element n of a Tensor (a row offset: x + row * width).
static inline Tensor *ops_at(const Ops *o, const Tensor *t, size_t n) { return (char *)t + n * o->act_size; }
