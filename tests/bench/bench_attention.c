// bench_attention: GPU time of the flash attention forward and backward at the shapes training runs:
// the 7B decoder's GRPO group (prompt 846 + G 8 completions of 32 on the shared prefix, 28 heads on 4 kv
// heads, head_dim 128) and the audio encoder (1500 rows a clip, bidirectional, 20 heads, head_dim 64,
// keys masked to the clip's valid length), one and several at once. FLOPs count only the (query, key)
// pairs the segments allow: forward 2 products, backward 5, each 2 * pairs * head_dim per head. The
// backward runs twice: the FA2 kernel (default) and the WMMA one (AQA_ATTN_BWD=old, on an Ops of its own).
// Usage: bench_attention [reps]   (exits 77 without a GPU or a CUDA build)
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "model/cuda/ops_cuda.h"
#include "util/check.h"

#ifdef AQA_CUDA
static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

// (query, key) pairs the segments allow, per head.
static double seg_pairs(const AttnSeg *s, int nseg) {
    double n = 0;
    for (int i = 0; i < nseg; i++)
        for (int j = 0; j < s[i].q_len; j++)
            n += s[i].pre_len + (s[i].causal ? s[i].k_len - s[i].q_len + j + 1 : s[i].k_len);
    return n;
}

// Seconds per forward (t[0]) and backward (t[1]) on o.
static void bench_times(Ops *o, const AttnSeg *segs, int nseg, int H, int KVH, int hd, int reps, double t[2]) {
    int Tq = 0, Tk = 0;
    for (int i = 0; i < nseg; i++) {
        const AttnSeg *s = &segs[i];
        Tq = s->q_start + s->q_len > Tq ? s->q_start + s->q_len : Tq;
        Tk = s->k_start + s->k_len > Tk ? s->k_start + s->k_len : Tk;
        Tk = s->pre_start + s->pre_len > Tk ? s->pre_start + s->pre_len : Tk;
    }
    const size_t nq = (size_t)Tq * H * hd, nk = (size_t)Tk * KVH * hd;
    const float scale = 1.0f / sqrtf((float)hd);
    Tensor *q = o->alloc(o, nq * 2), *k = o->alloc(o, nk * 2), *v = o->alloc(o, nk * 2), *out = o->alloc(o, nq * 2);
    Tensor *dout = o->alloc(o, nq * 2), *dq = o->alloc(o, nq * 2), *dk = o->alloc(o, nk * 2), *dv = o->alloc(o, nk * 2);
    float *lse = o->alloc(o, (size_t)Tq * H * sizeof(float));
    ops_cuda_fill(o, q, nq, 1, 0, 1, 1), ops_cuda_fill(o, k, nk, 1, 0, 1, 2), ops_cuda_fill(o, v, nk, 1, 0, 1, 3);
    ops_cuda_fill(o, dout, nq, 1, 0, 1, 4);
    for (int b = 0; b < 2; b++) {
        for (int r = -2; r < reps; r++) {  // two warm-up calls (plans, shared-memory limits)
            if (r == 0) o->sync(o), t[b] = now();
            if (b)
                o->attention_bwd(o, dq, dk, dv, dout, out, lse, q, k, v, segs, nseg, H, KVH, hd, scale);
            else
                o->attention(o, out, lse, q, k, v, segs, nseg, H, KVH, hd, scale);
        }
        o->sync(o);
        t[b] = (now() - t[b]) / reps;
    }
    void *bufs[] = {q, k, v, out, dout, dq, dk, dv, lse};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++) o->free(o, bufs[i]);
}

// One line: the forward, the backward's GFLOP, the old and new backward and the speedup. The backward
// reads AQA_ATTN_BWD once, at an Ops' first backward call: o_old's happens inside the window it is set.
static void bench(Ops *o, Ops *o_old, const char *what, const AttnSeg *segs, int nseg, int H, int KVH, int hd,
                  int reps) {
    double t[2], t_old[2];
    bench_times(o, segs, nseg, H, KVH, hd, reps, t);
    if (setenv("AQA_ATTN_BWD", "old", 1)) fatal("bench_attention: setenv failed");
    bench_times(o_old, segs, nseg, H, KVH, hd, reps, t_old);
    if (unsetenv("AQA_ATTN_BWD")) fatal("bench_attention: unsetenv failed");
    const double pf = 2.0 * seg_pairs(segs, nseg) * H * hd;  // one product
    printf("%-42s fwd %7.3f ms %6.1f TFLOP/s | bwd %6.2f GFLOP: old %7.3f ms %6.1f TFLOP/s, new %7.3f ms %6.1f "
           "TFLOP/s (%.2fx)\n",
           what, t[0] * 1e3, 2 * pf / t[0] * 1e-12, 5 * pf * 1e-9, t_old[1] * 1e3, 5 * pf / t_old[1] * 1e-12,
           t[1] * 1e3, 5 * pf / t[1] * 1e-12, t_old[1] / t[1]);
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
    const int reps = argc > 1 ? atoi(argv[1]) : 20;
    if (reps < 1) fatal("bench_attention: reps must be >= 1 (got '%s')", argv[1]);
    if (getenv("AQA_ATTN_BWD")) fatal("bench_attention: unset AQA_ATTN_BWD (the bench runs both kernels)");
    Ops *o = ops_cuda_create(), *o_old = ops_cuda_create();
    int ns;
    for (int n = 1; n <= 4; n *= 4) {
        AttnSeg *s = group_segs(n, 846, 8, 32, &ns);
        char what[96];
        snprintf(what, sizeof what, "group x%d: 846 + 8x32, H28 KVH4 hd128", n);
        bench(o, o_old, what, s, ns, 28, 4, 128, reps);
        free(s);
    }
    for (int n = 1; n <= 8; n *= 8) {
        AttnSeg *s = clip_segs(n, 1500);
        char what[96];
        snprintf(what, sizeof what, "encoder x%d: 1500 rows, H20 hd64", n);
        bench(o, o_old, what, s, n, 20, 20, 64, reps);
        free(s);
    }
    AttnSeg *s = clip_segs(8, 750);
    bench(o, o_old, "encoder x8: 1500 rows, 750 keys, H20 hd64", s, 8, 20, 20, 64, reps);
    free(s);
    ops_destroy(o);
    ops_destroy(o_old);
    return 0;
#else
    (void)argc, (void)argv;
    printf("bench_attention: built without CUDA, skipped\n");
    return 77;
#endif
}
