// optim.c: AdamW, gradient clipping and learning-rate schedules (see optim.h for the semantics copied).
#include "optim.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "model/safetensors.h"

AdamWConfig adamw_config_default(void) {
    return (AdamWConfig){.beta1 = 0.9, .beta2 = 0.999, .eps = 1e-8, .weight_decay = 0.0};
}

void adamw_init(AdamW *opt, size_t n) {
    opt->n = n;
    opt->m = callocCheck(n ? n : 1, sizeof(float));
    opt->v = callocCheck(n ? n : 1, sizeof(float));
    opt->step = 0;
}

void adamw_free(AdamW *opt) {
    free(opt->m);
    free(opt->v);
    memset(opt, 0, sizeof *opt);
}

AdamWScalars adamw_scalars(const AdamWConfig *cfg, double lr, int64_t step) {
    double bc1 = 1 - pow(cfg->beta1, (double)step);
    double bc2_sqrt = sqrt(1 - pow(cfg->beta2, (double)step));
    return (AdamWScalars){.omb1 = (float)(1 - cfg->beta1),
                          .b2 = (float)cfg->beta2,
                          .omb2 = (float)(1 - cfg->beta2),
                          .decay = (float)(1 - lr * cfg->weight_decay),
                          .step_size = (float)(lr / bc1),
                          .eps = (float)cfg->eps,
                          .bc2s = (float)bc2_sqrt};
}

void adamw_step(AdamW *opt, const AdamWConfig *cfg, double lr, float *params, const float *grads) {
    opt->step++;
    const AdamWScalars s = adamw_scalars(cfg, lr, opt->step);
    float *m = opt->m, *v = opt->v;
    // Small buffers (tests, shards of tiny models) are not worth waking the thread pool.
#pragma omp parallel for simd schedule(static) if (opt->n > 65536)
    for (size_t i = 0; i < opt->n; i++) params[i] = adamw_update(&s, params[i], grads[i], &m[i], &v[i]);
}

void adamw_step_bf16(const AdamWScalars *s, float *master, float *m, float *v, const uint16_t *g_sum,
                     float inv_l, double clip, uint16_t *out, size_t n) {
    const AdamWScalars sc = *s;
    // optim_scale's product only when it applies (as trainer_update); times 1 is exact otherwise
    const float c = clip < 1 ? (float)clip : 1.0f;
#pragma omp parallel for simd schedule(static) if (n > 65536)
    for (size_t i = 0; i < n; i++) {
        float g = st_bf16_to_f32(g_sum[i]) * inv_l * c;
        master[i] = adamw_update(&sc, master[i], g, &m[i], &v[i]);
        out[i] = st_f32_to_bf16(master[i]);
    }
}

double optim_sumsq(const float *g, size_t n) {
    double s = 0;
#pragma omp parallel for reduction(+ : s) schedule(static) if (n > 65536)
    for (size_t i = 0; i < n; i++) s += (double)g[i] * g[i];
    return s;
}

double optim_clip_scale(double norm, double max_norm) {
    double s = max_norm / (norm + 1e-6);
    return s < 1 ? s : 1.0;
}

void optim_scale(float *g, size_t n, double scale) {
    float s = (float)scale;
#pragma omp parallel for schedule(static) if (n > 65536)
    for (size_t i = 0; i < n; i++) g[i] *= s;
}

double optim_clip_grad_norm(float *g, size_t n, double max_norm) {
    double norm = sqrt(optim_sumsq(g, n));
    if (!isfinite(norm)) return norm;
    double s = optim_clip_scale(norm, max_norm);
    if (s < 1) optim_scale(g, n, s);
    return norm;
}

int lr_config_check(const LrConfig *c, Err *e) {
    if (!(c->lr >= 0)) return err_set(e, "lr %g < 0", c->lr);
    if (c->warmup_steps < 0) return err_set(e, "warmup_steps %lld < 0", (long long)c->warmup_steps);
    if ((unsigned)c->kind > CFG_SCHEDULE_COSINE) return err_set(e, "lr schedule kind %d unknown", (int)c->kind);
    if (c->kind != CFG_SCHEDULE_CONSTANT && c->max_steps < 1)
        return err_set(e, "max_steps %lld < 1 (linear and cosine schedules decay over it)", (long long)c->max_steps);
    if (c->kind != CFG_SCHEDULE_CONSTANT && c->warmup_steps > c->max_steps)
        return err_set(e, "warmup_steps %lld > max_steps %lld", (long long)c->warmup_steps, (long long)c->max_steps);
    if (c->kind == CFG_SCHEDULE_COSINE && !(c->num_cycles >= 0)) return err_set(e, "num_cycles %g < 0", c->num_cycles);
    return 0;
}

double lr_at(const LrConfig *c, int64_t step) {
    if (step < c->warmup_steps) return c->lr * (double)step / (double)(c->warmup_steps > 1 ? c->warmup_steps : 1);
    if (c->kind == CFG_SCHEDULE_CONSTANT) return c->lr;
    int64_t span = c->max_steps - c->warmup_steps;
    double denom = (double)(span > 1 ? span : 1);
    if (c->kind == CFG_SCHEDULE_LINEAR) return c->lr * fmax(0.0, (double)(c->max_steps - step) / denom);
    double progress = (double)(step - c->warmup_steps) / denom;
    return c->lr * fmax(0.0, 0.5 * (1.0 + cos(M_PI * c->num_cycles * 2.0 * progress)));
}
