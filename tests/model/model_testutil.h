// model_testutil.h: shared pieces of the model tests: a tiny random Qwen2-Audio (every code path of the
// 7B model at toy sizes, GQA included), random tensors, finite differences, error summaries and the
// readers of the transformers reference file.
#pragma once
#include <math.h>
#include <stdio.h>

#include "model/model.h"
#include "model/safetensors.h"
#include "test.h"
#include "util/check.h"
#include "util/rng.h"

static inline ModelConfig tiny_config(void) {
    ModelConfig c = {
        .n_mels = 4,
        .a_dim = 8,
        .a_layers = 2,
        .a_heads = 2,
        .a_ffn = 16,
        .a_max_pos = 8,
        .a_ln_eps = 1e-5f,
        .dim = 16,
        .layers = 2,
        .heads = 4,
        .kv_heads = 2,
        .head_dim = 4,
        .ffn = 24,
        .vocab = 40,
        .max_pos = 128,
        .rope_theta = 10000.0f,
        .rms_eps = 1e-5f,
        .tie_embeddings = 0,
        .audio_token_id = 37,
        .bos_id = 38,
        .eos_id = 39,
    };
    return c;
}

static inline void fill_normal(float *x, size_t n, float scale, Rng *r) {
    for (size_t i = 0; i < n; i++) x[i] = (float)rng_normal(r) * scale;
}

// Random parameters: weights ~ N(0, 0.3^2), norm weights 1 + N(0, 0.1^2), so every path is active.
static inline float *tiny_params(const ParamTable *t, uint64_t seed) {
    float *p = mallocCheck(t->numel * sizeof(float));
    Rng r;
    rng_init(&r, seed, 0);
    for (int i = 0; i < t->n; i++) {
        const ParamSpec *s = &t->specs[i];
        int is_norm = strstr(s->name, "norm") != NULL;
        fill_normal(p + s->offset, s->numel, is_norm ? 0.1f : 0.3f, &r);
        if (is_norm && strstr(s->name, "weight"))
            for (size_t j = 0; j < s->numel; j++) p[s->offset + j] += 1.0f;
    }
    return p;
}

// Finite-difference derivative of f at x[i] by the 4-point stencil (truncation O(h^4)).
typedef double (*LossFn)(void *ctx);
static inline double fd_deriv(LossFn f, void *ctx, float *x, double h) {
    float x0 = *x;
    double v[4];
    const double k[4] = {2, 1, -1, -2};
    for (int j = 0; j < 4; j++) {
        *x = (float)(x0 + k[j] * h);
        v[j] = f(ctx);
    }
    *x = x0;
    return (8 * (v[1] - v[2]) - (v[0] - v[3])) / (12 * h);
}

// Compares analytic gradients of n entries (every `stride`-th) with finite differences; returns the
// worst error |num - an| / (|num| + |an| + floor).
static inline double fd_check(LossFn f, void *ctx, float *x, const float *an, size_t n, size_t stride, double h,
                              double floor) {
    double worst = 0;
    for (size_t i = 0; i < n; i += stride) {
        double num = fd_deriv(f, ctx, &x[i], h);
        worst = fmax(worst, cmp_rel_diff(num, an[i], floor));
    }
    return worst;
}

// Tensors of a reference file (tests/fixtures/model/expected.safetensors): an int32 one, or any float one
// as fp32; NULL (with a failed check) when absent or mistyped. *n gets the element count.
static inline int *read_i32(const StReader *r, const char *name, size_t *n) {
    const StTensor *t = st_find(r, name);
    CHECKF(t && t->dtype == ST_I32, "expected.safetensors: %s missing or not int32", name);
    if (!t || t->dtype != ST_I32) return NULL;
    int *out = mallocCheck(t->numel * sizeof(int) + 1);
    memcpy(out, t->data, t->numel * sizeof(int));
    *n = t->numel;
    return out;
}

static inline float *read_f32(const StReader *r, const char *name, size_t *n) {
    const StTensor *t = st_find(r, name);
    CHECKF(t != NULL, "expected.safetensors: %s missing", name);
    if (!t) return NULL;
    float *out = mallocCheck(t->numel * sizeof(float) + 1);
    Err e;
    if (st_to_f32(r, t, out, &e)) {
        CHECKF(0, "%s", e.msg);
        free(out);
        return NULL;
    }
    *n = t->numel;
    return out;
}
