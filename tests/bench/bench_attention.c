// bench_attention: GPU time of the flash attention forward and backward at the shapes training runs:
// the 7B decoder's GRPO group (prompt 846 + G 8 completions of 32 on the shared prefix, 28 heads on 4 kv
// heads, head_dim 128) and the audio encoder (1500 rows a clip, bidirectional, 20 heads, head_dim 64,
// keys masked to the clip's valid length), one and several at once, on the kernels Ops.attention and
// Ops.attention_bwd choose (flash_fwd.cu's mma.sync forward, attention_bwd.cu's FA2 backward). With --old
// the older kernels run too, on the same inputs (ops_cuda_kernels.h: the WMMA flash forward and the WMMA
// backward, the fallbacks at other head dims and alignments), with the largest differences of the two
// forwards' outputs and lse. FLOPs count only the (query, key) pairs the segments allow: forward 2
// products, backward 5, each 2 * pairs * head_dim per head. Times are cudaEvent intervals over `reps` calls
// on the backend's stream after two warm-up calls.
// Usage: bench_attention [--old] [reps]   (exits 77 without a GPU or a CUDA build)
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model/cuda/ops_cuda.h"
#include "model/cuda/ops_cuda_kernels.h"
#include "util/check.h"

#ifdef AQA_CUDA
#include <cuda_runtime.h>

typedef struct {
    const AttnSeg *segs;
    int nseg, H, KVH, hd;
    float scale;
    Tensor *q, *k, *v, *out, *dout, *dq, *dk, *dv;
    float *lse;
} AttnArgs;

// (query, key) pairs the segments allow, per head.
static double seg_pairs(const AttnSeg *s, int nseg) {
    double n = 0;
    for (int i = 0; i < nseg; i++)
        for (int j = 0; j < s[i].q_len; j++)
            n += s[i].pre_len + (s[i].causal ? s[i].k_len - s[i].q_len + j + 1 : s[i].k_len);
    return n;
}

// The forward (bwd 0) or backward, on the default kernels or the older ones (old).
static void run_once(Ops *o, const AttnArgs *a, int bwd, int old) {
    if (bwd)
        ops_cuda_attention_bwd_with(o, old ? ATTN_BWD_WMMA : ATTN_AUTO, a->dq, a->dk, a->dv, a->dout, a->out, a->lse,
                                    a->q, a->k, a->v, a->segs, a->nseg, a->H, a->KVH, a->hd, a->scale);
    else
        ops_cuda_attention_with(o, old ? ATTN_FLASH_WMMA : ATTN_AUTO, a->out, a->lse, a->q, a->k, a->v, a->segs,
                                a->nseg, a->H, a->KVH, a->hd, a->scale);
}

// Seconds per call of run_once on o's stream.
static double time_call(Ops *o, const AttnArgs *a, int bwd, int old, int reps) {
    cudaStream_t st = (cudaStream_t)ops_cuda_stream(o);
    cudaEvent_t e0, e1;
    if (cudaEventCreate(&e0) != cudaSuccess || cudaEventCreate(&e1) != cudaSuccess)
        fatal("bench_attention: cudaEventCreate failed");
    for (int r = 0; r < 2; r++) run_once(o, a, bwd, old);  // warm-up: plans, shared-memory limits
    cudaEventRecord(e0, st);
    for (int r = 0; r < reps; r++) run_once(o, a, bwd, old);
    cudaEventRecord(e1, st);
    if (cudaEventSynchronize(e1) != cudaSuccess) fatal("bench_attention: cudaEventSynchronize failed");
    float ms = 0;
    cudaEventElapsedTime(&ms, e0, e1);
    cudaEventDestroy(e0), cudaEventDestroy(e1);
    return ms * 1e-3 / reps;
}

// Largest |a - b| over n floats; NaN when either holds one (so a broken kernel cannot look close).
static double max_diff(const float *a, const float *b, size_t n) {
    double m = 0;
    for (size_t i = 0; i < n; i++) {
        if (isinf(a[i]) && isinf(b[i]) && a[i] == b[i]) continue;  // both -inf: a row with no keys
        const double d = fabs((double)a[i] - b[i]);
        if (!(d <= m)) m = d;  // NaN sticks
    }
    return m;
}

// Forward and backward on the default kernels, and with `old` on the older ones too (forward outputs
// compared).
static void bench(Ops *o, int old, const char *what, const AttnSeg *segs, int nseg, int H, int KVH, int hd,
                  int reps) {
    int Tq = 0, Tk = 0;
    for (int i = 0; i < nseg; i++) {
        const AttnSeg *s = &segs[i];
        Tq = s->q_start + s->q_len > Tq ? s->q_start + s->q_len : Tq;
        Tk = s->k_start + s->k_len > Tk ? s->k_start + s->k_len : Tk;
        Tk = s->pre_start + s->pre_len > Tk ? s->pre_start + s->pre_len : Tk;
    }
    const size_t nq = (size_t)Tq * H * hd, nk = (size_t)Tk * KVH * hd, nl = (size_t)Tq * H;
    AttnArgs a = {.segs = segs, .nseg = nseg, .H = H, .KVH = KVH, .hd = hd, .scale = 1.0f / sqrtf((float)hd)};
    a.q = o->alloc(o, nq * 2), a.k = o->alloc(o, nk * 2), a.v = o->alloc(o, nk * 2), a.out = o->alloc(o, nq * 2);
    a.dout = o->alloc(o, nq * 2), a.dq = o->alloc(o, nq * 2), a.dk = o->alloc(o, nk * 2), a.dv = o->alloc(o, nk * 2);
    a.lse = o->alloc(o, nl * sizeof(float));
    ops_cuda_fill(o, a.q, nq, 1, 0, 1, 1), ops_cuda_fill(o, a.k, nk, 1, 0, 1, 2), ops_cuda_fill(o, a.v, nk, 1, 0, 1, 3);
    ops_cuda_fill(o, a.dout, nq, 1, 0, 1, 4);
    o->sync(o);
    const double pf = 2.0 * seg_pairs(segs, nseg) * H * hd;  // one product
    const double t_new = time_call(o, &a, 0, 0, reps), t_bwd = time_call(o, &a, 1, 0, reps);
    printf("%-42s fwd %7.3f ms %6.1f TFLOP/s | bwd %7.3f ms %6.1f TFLOP/s\n", what, t_new * 1e3,
           2 * pf / t_new * 1e-12, t_bwd * 1e3, 5 * pf / t_bwd * 1e-12);
    if (old) {
        float *out_old = mallocCheck(nq * sizeof(float)), *out_new = mallocCheck(nq * sizeof(float));
        float *lse_old = mallocCheck(nl * sizeof(float)), *lse_new = mallocCheck(nl * sizeof(float));
        run_once(o, &a, 0, 0);
        o->download_act(o, out_new, a.out, nq), o->download(o, lse_new, a.lse, nl * sizeof(float));
        const double t_old = time_call(o, &a, 0, 1, reps), t_bwd_old = time_call(o, &a, 1, 1, reps);
        o->download_act(o, out_old, a.out, nq), o->download(o, lse_old, a.lse, nl * sizeof(float));
        printf("%-42s old: fwd %7.3f ms %6.1f TFLOP/s (new x%.2f) | bwd %7.3f ms %6.1f TFLOP/s (new x%.2f) |"
               " max diff out %.2e lse %.2e\n",
               "", t_old * 1e3, 2 * pf / t_old * 1e-12, t_old / t_new, t_bwd_old * 1e3, 5 * pf / t_bwd_old * 1e-12,
               t_bwd_old / t_bwd, max_diff(out_old, out_new, nq), max_diff(lse_old, lse_new, nl));
        free(out_old), free(out_new), free(lse_old), free(lse_new);
    }
    void *bufs[] = {a.q, a.k, a.v, a.out, a.dout, a.dq, a.dk, a.dv, a.lse};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++) o->free(o, bufs[i]);
}

// n groups of the 7B shape side by side: prompt P causal, G completions of L on it as a prefix.
static AttnSeg *group_segs(int n, int P, int G, int L, int *nseg) {
    AttnSeg *s = mallocCheck((size_t)n * (G + 1) * sizeof(AttnSeg));
    const int T = P + G * L;
    for (int i = 0; i < n; i++) {
        AttnSeg *g = s + i * (G + 1);
        g[0] = (AttnSeg){.q_start = i * T, .q_len = P, .k_start = i * T, .k_len = P, .causal = 1};
        for (int c = 0; c < G; c++)
            g[c + 1] = (AttnSeg){.q_start = i * T + P + c * L, .q_len = L, .pre_start = i * T, .pre_len = P,
                                 .k_start = i * T + P + c * L, .k_len = L, .causal = 1};
    }
    *nseg = n * (G + 1);
    return s;
}

// n encoder clips of 1500 rows; clip i's keys are masked to `valid` rows.
static AttnSeg *clip_segs(int n, int valid) {
    AttnSeg *s = mallocCheck((size_t)n * sizeof(AttnSeg));
    for (int i = 0; i < n; i++)
        s[i] = (AttnSeg){.q_start = i * 1500, .q_len = 1500, .k_start = i * 1500, .k_len = valid, .causal = 0};
    return s;
}
#endif

int main(int argc, char **argv) {
#ifdef AQA_CUDA
    if (ops_cuda_device_count() < 1) {
        printf("bench_attention: no CUDA device, skipped\n");
        return 77;
    }
    int old = 0, reps = 20;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--old")) {
            old = 1;
            continue;
        }
        char *end;
        const long r = strtol(argv[i], &end, 10);
        if (*end || r < 1 || r > 1000000) fatal("usage: bench_attention [--old] [reps >= 1] (got '%s')", argv[i]);
        reps = (int)r;
    }
    Ops *o = ops_cuda_create();
    int ns;
    for (int n = 1; n <= 4; n *= 4) {
        AttnSeg *s = group_segs(n, 846, 8, 32, &ns);
        char what[96];
        snprintf(what, sizeof what, "group x%d: 846 + 8x32, H28 KVH4 hd128", n);
        bench(o, old, what, s, ns, 28, 4, 128, reps);
        free(s);
    }
    for (int n = 1; n <= 8; n *= 8) {
        AttnSeg *s = clip_segs(n, 1500);
        char what[96];
        snprintf(what, sizeof what, "encoder x%d: 1500 rows, H20 hd64", n);
        bench(o, old, what, s, n, 20, 20, 64, reps);
        free(s);
    }
    AttnSeg *s = clip_segs(8, 750);
    bench(o, old, "encoder x8: 1500 rows, 750 keys, H20 hd64", s, 8, 20, 20, 64, reps);
    free(s);
    ops_destroy(o);
    return 0;
#else
    (void)argc, (void)argv;
    printf("bench_attention: built without CUDA, skipped\n");
    return 77;
#endif
}
