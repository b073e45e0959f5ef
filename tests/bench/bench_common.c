// bench_common.c: shared pieces of the GPU benchmarks (see bench_common.h).
#include "bench_common.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "audio/audio_len.h"
#include "model/cuda/ops_cuda.h"

double bench_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

double bench_median(double *x, int n) {
    qsort(x, (size_t)n, sizeof *x, cmp_double);
    return n % 2 ? x[n / 2] : 0.5 * (x[n / 2 - 1] + x[n / 2]);
}

int bench_parse_int(const char *flag, const char *s, int lo, int hi, int *out, Err *e) {
    if (!s) return err_set(e, "%s needs a value (an integer in %d..%d)", flag, lo, hi);
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (end == s || *end || errno) return err_set(e, "%s \"%s\": not an integer", flag, s);
    if (v < lo || v > hi) return err_set(e, "%s %ld outside %d..%d", flag, v, lo, hi);
    *out = (int)v;
    return 0;
}

int bench_parse_pos(const char *flag, const char *s, double *out, Err *e) {
    if (!s) return err_set(e, "%s needs a value (a positive number)", flag);
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (end == s || *end || errno) return err_set(e, "%s \"%s\": not a number", flag, s);
    if (!(v > 0) || !isfinite(v)) return err_set(e, "%s %s: must be positive and finite", flag, s);
    *out = v;
    return 0;
}

#ifdef AQA_CUDA
void bench_model_random_gpu(Model *m, const ModelConfig *c, Ops *o) {
    Err e;
    if (model_config_check(c, &e)) fatal("%s", e.msg);
    memset(m, 0, sizeof *m);
    m->cfg = *c;
    m->ops = o;
    param_table_build(&m->t, c);
    m->params = o->alloc(o, m->t.numel * o->act_size);
    for (int i = 0; i < m->t.n; i++) {
        const ParamSpec *s = &m->t.specs[i];
        const size_t n = strlen(s->name);
        const int bias = n > 5 && !strcmp(s->name + n - 5, ".bias"), norm = strstr(s->name, "norm") != NULL;
        ops_cuda_fill(o, ops_at(o, m->params, s->offset), s->numel, bias || norm ? 0.0f : c->init_std,
                      norm && !bias ? 1.0f : 0.0f, 1, (uint64_t)i);
    }
    o->sync(o);
}
#endif

float *bench_features(const ModelConfig *c, Rng *r) {
    const size_t n = (size_t)c->n_mels * BENCH_FRAMES;
    float *feat = mallocCheck(n * sizeof(float));
    for (size_t i = 0; i < n; i++) feat[i] = (float)rng_normal(r);
    return feat;
}

int *bench_prompt(const ModelConfig *c, Rng *r, int *P) {
    const int na = audio_token_count(BENCH_FRAMES);
    *P = na + BENCH_TEXT;
    int *prompt = mallocCheck((size_t)*P * sizeof(int));
    for (int i = 0; i < *P; i++) prompt[i] = (int)rng_below(r, 100000) + 100;
    for (int i = 0; i < na; i++) prompt[3 + i] = c->audio_token_id;
    return prompt;
}

// Visible (query, key) pairs of one segment: each query sees the prefix plus its causal share of the
// own keys (query j of the last q_len sees k_len - q_len + j + 1), or all own keys when bidirectional.
static double seg_pairs(const AttnSeg *s) {
    const double q = s->q_len, own = s->causal ? q * (s->k_len - s->q_len) + q * (q + 1) / 2 : q * s->k_len;
    return q * s->pre_len + own;
}

BenchFlops bench_flops(const ModelConfig *c, const ModelBatch *b, int lm_rows) {
    const double D = c->dim, Q = (double)c->heads * c->head_dim, KV = (double)c->kv_heads * c->head_dim;
    const double FF = c->ffn, V = c->vocab, A = c->a_dim, AF = c->a_ffn, P = c->a_max_pos;
    BenchFlops f = {0};
    // per token and layer: q, k, v, o projections and gate, up, down
    f.dec_matmul = 2.0 * b->n_tokens * c->layers * (D * Q + 2 * D * KV + Q * D + 3 * D * FF);
    f.lm_head = 2.0 * lm_rows * V * D;
    double pairs = 0;
    for (int i = 0; i < b->n_segs; i++) pairs += seg_pairs(&b->segs[i]);
    f.dec_attn = 4.0 * pairs * Q * c->layers;
    for (int i = 0; i < b->n_audio; i++) {
        // conv1 over 2P frames (K = n_mels*3), conv2 over P positions (K = 3A), layers over P rows,
        // projector over the P/2 pooled rows
        f.audio_matmul += 2.0 * (2 * P * A * c->n_mels * 3 + P * A * 3 * A +
                                 P * c->a_layers * (4 * A * A + 2 * A * AF) + P / 2 * A * D);
        f.audio_attn += 4.0 * P * audio_encoder_len(b->valid[i]) * A * c->a_layers;
    }
    return f;
}

double bench_flops_forward(const BenchFlops *f) {
    return f->dec_matmul + f->lm_head + f->dec_attn + f->audio_matmul + f->audio_attn;
}

double bench_flops_train(const BenchFlops *f) { return 3.0 * bench_flops_forward(f); }
