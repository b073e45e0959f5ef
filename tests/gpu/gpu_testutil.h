// gpu_testutil.h: the CPU backend next to the CUDA backend for differential tests: bf16-exact random
// inputs placed in both, outputs read back as fp32 and compared (max abs error, and max abs error
// relative to the reference's largest magnitude), with the numbers printed for the record; and one
// whole-model forward returning chosen rows' logits, for the model-level comparisons.
#pragma once
#include <math.h>
#include <stdio.h>

#include "model/cuda/ops_cuda.h"
#include "model/model.h"
#include "model/safetensors.h"
#include "test.h"
#include "util/check.h"
#include "util/rng.h"

typedef struct {
    Ops *c, *g;  // CPU reference, CUDA under test
} Pair;

// Normal(0, scale) values rounded to bf16, so both backends start from identical inputs.
static inline float *rand_bf16(size_t n, float scale, Rng *r) {
    float *x = mallocCheck((n ? n : 1) * sizeof(float));
    for (size_t i = 0; i < n; i++) x[i] = st_bf16_to_f32(st_f32_to_bf16((float)rng_normal(r) * scale));
    return x;
}

// The same n values in a Tensor of each backend.
static inline void put_act(const Pair *p, const float *h, size_t n, Tensor **tc, Tensor **tg) {
    *tc = p->c->alloc(p->c, n * p->c->act_size);
    *tg = p->g->alloc(p->g, n * p->g->act_size);
    p->c->upload_act(p->c, *tc, h, n);
    p->g->upload_act(p->g, *tg, h, n);
}

static inline void put_raw(const Pair *p, const void *h, size_t bytes, void **bc, void **bg) {
    *bc = p->c->alloc(p->c, bytes);
    *bg = p->g->alloc(p->g, bytes);
    p->c->upload(p->c, *bc, h, bytes);
    p->g->upload(p->g, *bg, h, bytes);
}

static inline void free_pair(const Pair *p, void *bc, void *bg) {
    p->c->free(p->c, bc);
    p->g->free(p->g, bg);
}

// Max |a - b| and that over max |b| (cmp_err: NaN or Inf is an infinite error); prints both under `what`.
static inline double err_report(const char *what, const float *a, const float *b, size_t n) {
    CmpErr e = cmp_err(a, b, n, 1e-12);
    printf("  %-34s n=%-8zu max abs err %.3e  rel %.3e\n", what, n, e.abs, e.rel);
    return e.rel;
}

// Compares n Tensor elements of both backends; returns the relative error.
static inline double cmp_act(const Pair *p, const char *what, const Tensor *tc, const Tensor *tg, size_t n) {
    float *a = mallocCheck((n ? n : 1) * sizeof(float)), *b = mallocCheck((n ? n : 1) * sizeof(float));
    p->c->download_act(p->c, b, tc, n);
    p->g->download_act(p->g, a, tg, n);
    double e = err_report(what, a, b, n);
    free(a);
    free(b);
    return e;
}

// Compares n fp32 statistics of both backends; returns the max absolute error.
static inline double cmp_f32(const Pair *p, const char *what, const float *bc, const float *bg, size_t n) {
    float *a = mallocCheck((n ? n : 1) * sizeof(float)), *b = mallocCheck((n ? n : 1) * sizeof(float));
    p->c->download(p->c, b, bc, n * sizeof(float));
    p->g->download(p->g, a, bg, n * sizeof(float));
    double md = cmp_err(a, b, n, 1).abs;
    printf("  %-34s n=%-8zu max abs err %.3e\n", what, n, md);
    free(a);
    free(b);
    return md;
}

// Forward of b on m; logits of `rows` into logits[n, V], target log-probs into lp (NULL: none wanted).
static inline int model_rows_logits(Model *m, const ModelBatch *b, const int *rows, int n, float *logits, float *lp) {
    Err e;
    ModelActs *a = model_acts_create(m, b->n_tokens, b->n_audio, b->n_tgt, 0);
    int rc = model_forward(m, b, a, lp, &e);
    CHECKF(rc == 0, "%s", e.msg);
    if (rc == 0) model_logits(m, a, rows, n, logits);
    model_acts_free(m, a);
    return rc;
}
