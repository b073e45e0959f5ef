// optim.h: the optimizer step on a flat fp32 parameter buffer: AdamW (torch.optim.AdamW semantics),
// global gradient-norm clipping (torch.nn.utils.clip_grad_norm_) and the learning-rate schedules of HF
// transformers (get_{constant,linear,cosine}_schedule_with_warmup). Distributed learners compute the
// squared norm of their shard, all-reduce it, then call optim_clip_scale and optim_scale.
#pragma once
#include <math.h>
#include <stddef.h>
#include <stdint.h>

#include "config/config.h"
#include "util/check.h"

typedef struct {
    double beta1, beta2, eps, weight_decay;  // R1-AQA: 0.9, 0.999, 1e-8, 0
} AdamWConfig;

AdamWConfig adamw_config_default(void);

// State of n parameters (one shard or the whole model). m, v: [n]; step = updates taken. The fields are
// public so checkpoints can save and restore them.
typedef struct {
    size_t n;
    float *m, *v;  // [n] first and second moment
    int64_t step;
} AdamW;

void adamw_init(AdamW *opt, size_t n);  // zero moments, step 0
void adamw_free(AdamW *opt);
// One update with learning rate lr: params [n] -= lr * (wd * p + m_hat / (sqrt(v_hat) + eps)), with the
// decay applied to p before the moment update as torch (decoupled). Increments opt->step first.
void adamw_step(AdamW *opt, const AdamWConfig *cfg, double lr, float *params, const float *grads);

// The fp32 scalars of update number `step` (updates taken, this one included), derived in double and
// rounded once, as torch passes them: 1 - beta in double (1 - 0.999f would be off by 1e-5).
typedef struct {
    float omb1, b2, omb2, decay, step_size, eps, bc2s;
} AdamWScalars;
AdamWScalars adamw_scalars(const AdamWConfig *cfg, double lr, int64_t step);

// Element i of every AdamW update (adamw_step, adamw_step_bf16): gradient g, moments *m and *v updated,
// the new parameter returned. Each operation rounds on its own (no -ffast-math, no FMA contraction on the
// project's x86-64 baseline), so both callers and the GPU kernel (optim_cuda.cu) give the same bits.
static inline float adamw_update(const AdamWScalars *s, float p, float g, float *m, float *v) {
    float mi = *m + s->omb1 * (g - *m);  // torch: exp_avg.lerp_(grad, 1 - beta1)
    float vi = s->b2 * *v + s->omb2 * g * g;
    *m = mi;
    *v = vi;
    // torch: denom = sqrt(v) / sqrt(bc2) + eps, p -= lr / bc1 * m / denom.
    return p * s->decay - s->step_size * mi / (sqrtf(vi) / s->bc2s + s->eps);
}

// The offloaded optimizer's piece (zero_cuda.h, optim.offload=host): n elements of a ZeRO-1 shard whose
// gradient arrives as the bf16 sum over the learners. g = bf16 g_sum [n] * inv_l, times clip when clip < 1
// (optim_clip_scale); then master [n], m [n], v [n] exactly as adamw_step, and out [n] = bf16(master).
// Equals optim_scale + adamw_step on the same fp32 gradient bit for bit. OpenMP threads over large n.
void adamw_step_bf16(const AdamWScalars *s, float *master, float *m, float *v, const uint16_t *g_sum,
                     float inv_l, double clip, uint16_t *out, size_t n);

// Sum of squares of g [n] (accumulated in double).
double optim_sumsq(const float *g, size_t n);
// clip_grad_norm_: scale = max_norm / (norm + 1e-6), applied only when < 1; returns 1 otherwise.
double optim_clip_scale(double norm, double max_norm);
void optim_scale(float *g, size_t n, double scale);
// Single-process clip_grad_norm_: returns the norm before clipping (non-finite norms are returned
// unchanged and nothing is scaled: the caller decides to skip the step).
double optim_clip_grad_norm(float *g, size_t n, double max_norm);

typedef struct {
    CfgSchedule kind;       // optim.schedule (config.h)
    double lr;              // peak learning rate (R1-AQA 1e-6)
    int64_t warmup_steps;   // linear ramp from 0 over these steps (R1-AQA 0)
    int64_t max_steps;      // linear/cosine reach 0 here (R1-AQA 1000)
    double num_cycles;      // cosine: 0.5 = half a cosine wave down to 0 (HF default)
} LrConfig;

// Rejects lr < 0, warmup < 0, max_steps < 1 for linear/cosine, warmup > max_steps, num_cycles < 0.
int lr_config_check(const LrConfig *c, Err *e);
// Learning rate for the optimizer step that follows `step` completed steps (HF: the scheduler's
// lr_lambda(step) * lr; the first update uses step = 0).
double lr_at(const LrConfig *c, int64_t step);
