// optim.h: the optimizer step on a flat fp32 parameter buffer: AdamW (torch.optim.AdamW semantics),
// global gradient-norm clipping (torch.nn.utils.clip_grad_norm_) and the learning-rate schedules of HF
// transformers (get_{constant,linear,cosine}_schedule_with_warmup). Distributed learners compute the
// squared norm of their shard, all-reduce it, then call optim_clip_scale and optim_scale.
#pragma once
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
