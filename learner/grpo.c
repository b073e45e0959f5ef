// grpo.c: GRPO advantages, the clipped surrogate + k3 KL loss with its gradient, and SFT cross-entropy.
// Everything accumulates in double: the loss is a sum of ~1e4 small terms and the tests compare against
// hand arithmetic.
#include "grpo.h"

#include <math.h>
#include <string.h>

// torch.isclose(std, 0) with its default atol.
#define GRPO_ZERO_STD 1e-8

// Mean and Bessel-corrected std of x[0..n), n >= 2.
static void mean_std(const float *x, int n, double *mean, double *std) {
    double s = 0;
    for (int i = 0; i < n; i++) s += x[i];
    double m = s / n, ss = 0;
    for (int i = 0; i < n; i++) ss += ((double)x[i] - m) * ((double)x[i] - m);
    *mean = m;
    *std = sqrt(ss / (n - 1));
}

int grpo_advantages(const float *rewards, int n_groups, int G, CfgScaleRewards scale, double eps,
                    int dynamic_filter, float *adv, uint8_t *keep, GrpoAdvStats *st, Err *e) {
    if (n_groups < 1) return err_set(e, "advantages: n_groups %d < 1", n_groups);
    if (G < 2) return err_set(e, "advantages: group size %d < 2 (the std needs two samples)", G);
    if (!(eps >= 0)) return err_set(e, "advantages: eps %g < 0", eps);
    if (dynamic_filter && !keep) return err_set(e, "advantages: dynamic filtering needs a keep array");
    int n = n_groups * G;
    for (int i = 0; i < n; i++)
        if (!isfinite(rewards[i]))
            return err_set(e, "advantages: reward %d (group %d, sample %d) is not finite", i, i / G, i % G);
    double batch_mean, batch_std;
    mean_std(rewards, n, &batch_mean, &batch_std);
    double std_sum = 0;
    int zero = 0;
    for (int g = 0; g < n_groups; g++) {
        const float *r = rewards + (size_t)g * G;
        double mean, std;
        mean_std(r, G, &mean, &std);
        std_sum += std;
        int is_zero = std <= GRPO_ZERO_STD;
        zero += is_zero;
        double denom = scale == CFG_SCALE_GROUP ? std + eps : scale == CFG_SCALE_BATCH ? batch_std + eps : 1.0;
        for (int i = 0; i < G; i++) {
            adv[g * G + i] = (float)((r[i] - mean) / denom);
            if (keep) keep[g * G + i] = !(dynamic_filter && is_zero);
        }
    }
    if (st) {
        st->reward_mean = batch_mean;
        st->reward_std = std_sum / n_groups;
        st->zero_std_frac = (double)zero / n_groups;
        st->n_kept_groups = dynamic_filter ? n_groups - zero : n_groups;
    }
    return 0;
}

GrpoLossConfig grpo_loss_config_default(void) {
    return (GrpoLossConfig){.loss_type = CFG_LOSS_GRPO, .beta = 0.04, .eps_low = 0.2, .eps_high = 0.2,
                            .max_completion_length = 256, .accum_steps = 1, .dapo_global_tokens = 0,
                            .n_procs = 1};
}

static int grpo_check(const GrpoLossConfig *cfg, const GrpoBatch *b, Err *e) {
    if (!(cfg->beta >= 0)) return err_set(e, "grpo loss: beta %g < 0", cfg->beta);
    if (!(cfg->eps_low >= 0 && cfg->eps_low < 1)) return err_set(e, "grpo loss: eps_low %g not in [0, 1)", cfg->eps_low);
    if (!(cfg->eps_high >= 0)) return err_set(e, "grpo loss: eps_high %g < 0", cfg->eps_high);
    if (cfg->accum_steps < 1) return err_set(e, "grpo loss: accum_steps %d < 1", cfg->accum_steps);
    if ((unsigned)cfg->loss_type > CFG_LOSS_DAPO) return err_set(e, "grpo loss: unknown loss_type %d", (int)cfg->loss_type);
    if (cfg->loss_type == CFG_LOSS_DR_GRPO && cfg->max_completion_length < 1)
        return err_set(e, "grpo loss: dr_grpo needs max_completion_length >= 1 (got %d)", cfg->max_completion_length);
    if (cfg->loss_type == CFG_LOSS_DAPO && (cfg->dapo_global_tokens < 1 || cfg->n_procs < 1))
        return err_set(e, "grpo loss: dapo needs dapo_global_tokens >= 1 and n_procs >= 1 (got %lld, %d)",
                       (long long)cfg->dapo_global_tokens, cfg->n_procs);
    if (cfg->beta > 0 && !b->ref_lp) return err_set(e, "grpo loss: beta %g > 0 but no reference log-probs", cfg->beta);
    if (b->n_seq < 1 || b->n_tokens < 0) return err_set(e, "grpo loss: %d sequences, %d tokens", b->n_seq, b->n_tokens);
    for (int i = 0; i < b->n_seq; i++) {
        if (b->offset[i] < 0 || b->len[i] < 0 || b->offset[i] > b->n_tokens - b->len[i])
            return err_set(e, "grpo loss: sequence %d span [%d, +%d) outside the %d tokens", i, b->offset[i],
                           b->len[i], b->n_tokens);
        if (!isfinite(b->adv[i])) return err_set(e, "grpo loss: advantage of sequence %d is not finite", i);
        if (b->keep && b->keep[i] > 1) return err_set(e, "grpo loss: keep[%d] = %d not 0/1", i, b->keep[i]);
        for (int t = b->offset[i]; b->is_w && t < b->offset[i] + b->len[i]; t++)
            if (b->mask[t] == 1 && !(b->is_w[t] >= 0 && isfinite(b->is_w[t])))
                return err_set(e, "grpo loss: importance weight %g at token %d (sequence %d)", b->is_w[t], t, i);
        for (int t = b->offset[i]; t < b->offset[i] + b->len[i]; t++) {
            if (b->mask[t] > 1) return err_set(e, "grpo loss: mask[%d] = %d not 0/1 (sequence %d)", t, b->mask[t], i);
            if (!b->mask[t]) continue;
            if (!isfinite(b->lp[t]) || (b->old_lp && !isfinite(b->old_lp[t])) || (b->ref_lp && !isfinite(b->ref_lp[t])))
                return err_set(e, "grpo loss: non-finite log-prob at token %d (sequence %d, position %d)", t, i,
                               t - b->offset[i]);
        }
    }
    return 0;
}

int grpo_loss(const GrpoLossConfig *cfg, const GrpoBatch *b, float *dlp, GrpoLossStats *st, Err *e) {
    if (grpo_check(cfg, b, e)) return -1;
    memset(dlp, 0, (size_t)b->n_tokens * sizeof *dlp);
    int n_seq = 0;
    int64_t tokens = 0;
    for (int i = 0; i < b->n_seq; i++) {
        if (b->keep && !b->keep[i]) continue;
        n_seq++;
        for (int t = b->offset[i]; t < b->offset[i] + b->len[i]; t++) tokens += b->mask[t];
    }
    // Every variant is sum_i sum_t w_i * loss_it; w_i is the normaliser of sequence i's tokens.
    double w_batch = 0;
    switch (cfg->loss_type) {
    case CFG_LOSS_GRPO: w_batch = n_seq ? 1.0 / ((double)n_seq * cfg->accum_steps) : 0; break;
    case CFG_LOSS_BNPO: w_batch = 1.0 / ((tokens > 1 ? (double)tokens : 1.0) * cfg->accum_steps); break;
    case CFG_LOSS_DR_GRPO:
        w_batch = n_seq ? 1.0 / ((double)n_seq * cfg->max_completion_length * cfg->accum_steps) : 0;
        break;
    case CFG_LOSS_DAPO: w_batch = (double)cfg->n_procs / (double)cfg->dapo_global_tokens; break;
    }
    double loss = 0, kl_sum = 0, ratio_sum = 0;
    int64_t clip_low = 0, clip_high = 0, clip_region = 0;
    double lo = 1 - cfg->eps_low, hi = 1 + cfg->eps_high;
    for (int i = 0; i < b->n_seq; i++) {
        if (b->keep && !b->keep[i]) continue;
        double A = b->adv[i], seq_sum = 0;
        int seq_tokens = 0;
        for (int t = b->offset[i]; t < b->offset[i] + b->len[i]; t++) seq_tokens += b->mask[t];
        // grpo divides by the sequence's own token count (clamped to 1 as TRL).
        double w = cfg->loss_type == CFG_LOSS_GRPO ? w_batch / (seq_tokens > 1 ? seq_tokens : 1) : w_batch;
        for (int t = b->offset[i]; t < b->offset[i] + b->len[i]; t++) {
            if (!b->mask[t]) continue;
            double lp = b->lp[t];
            double ratio = b->old_lp ? exp(lp - b->old_lp[t]) : 1.0;
            double clipped = ratio < lo ? lo : ratio > hi ? hi : ratio;
            // min(r A, clip(r) A) takes the clipped (constant) branch exactly when the ratio has moved past
            // the clip boundary in the direction the advantage rewards: the gradient is then 0.
            int cut_low = ratio < lo && A < 0, cut_high = ratio > hi && A > 0;
            double w_is = b->is_w ? b->is_w[t] : 1.0;
            double tok_loss = -w_is * fmin(ratio * A, clipped * A);
            double g = (cut_low || cut_high) ? 0.0 : -w_is * ratio * A;  // d(-w r A)/d(lp) = -w r A
            if (b->ref_lp) {
                double d = b->ref_lp[t] - lp;
                double kl = exp(d) - d - 1;  // k3 estimator; d(kl)/d(lp) = 1 - exp(d)
                kl_sum += kl;
                tok_loss += cfg->beta * kl;
                g += cfg->beta * (1 - exp(d));
            }
            seq_sum += tok_loss;
            dlp[t] = (float)(w * g);
            ratio_sum += ratio;
            clip_low += cut_low;
            clip_high += cut_high;
            clip_region += ratio < lo || ratio > hi;
        }
        loss += w * seq_sum;
    }
    double den = tokens ? (double)tokens : 1.0;
    *st = (GrpoLossStats){.loss = loss, .mean_kl = kl_sum / den, .mean_ratio = ratio_sum / den,
                          .clip_low_frac = clip_low / den, .clip_high_frac = clip_high / den,
                          .clip_region_frac = clip_region / den, .tokens = tokens, .n_seq = n_seq};
    return 0;
}

int grpo_mismatch(const GrpoMismatchConfig *cfg, const GrpoBatch *b, const float *lp_sample, float *is_w,
                  uint8_t *keep, GrpoMismatch *st, Err *e) {
    if (!(cfg->bound > 1)) return err_set(e, "mismatch: bound %g must exceed 1", cfg->bound);
    if (!(cfg->tis_cap >= 0)) return err_set(e, "mismatch: tis_cap %g < 0", cfg->tis_cap);
    if ((cfg->tis_cap > 0 && !is_w) || (cfg->mask && !keep))
        return err_set(e, "mismatch: the corrections asked for need is_w / keep arrays");
    *st = (GrpoMismatch){.ratio_min = INFINITY};
    const double lo = 1 / cfg->bound, hi = cfg->bound;
    for (int i = 0; i < b->n_seq; i++) {
        if (b->offset[i] < 0 || b->len[i] < 0 || b->offset[i] > b->n_tokens - b->len[i])
            return err_set(e, "mismatch: sequence %d span [%d, +%d) outside the %d tokens", i, b->offset[i],
                           b->len[i], b->n_tokens);
        double d_sum = 0;
        int n = 0;
        for (int t = b->offset[i]; t < b->offset[i] + b->len[i]; t++) {
            if (is_w) is_w[t] = 1;
            if (!b->mask[t]) continue;
            if (!isfinite(b->lp[t]) || !isfinite(lp_sample[t]))
                return err_set(e, "mismatch: non-finite log-prob at token %d (sequence %d, position %d)", t, i,
                               t - b->offset[i]);
            double d = (double)b->lp[t] - lp_sample[t], r = exp(d);
            d_sum += d;
            n++;
            st->abs_sum += fabs(d);
            st->abs_max = fmax(st->abs_max, fabs(d));
            st->k3_sum += r - 1 - d;
            st->ratio_sum += r;
            st->ratio_min = fmin(st->ratio_min, r);
            st->ratio_max = fmax(st->ratio_max, r);
            st->out += r < lo || r > hi;
            if (is_w && cfg->tis_cap > 0) is_w[t] = (float)fmin(r, cfg->tis_cap);
        }
        st->tokens += n;
        // The sequence's ratio is the geometric mean of its tokens' (length-independent, as verl's
        // "geometric" level): exp(mean d).
        double seq_r = n ? exp(d_sum / n) : 1.0;
        int out = seq_r < lo || seq_r > hi;
        st->n_seq += n > 0;
        st->seq_out += out;
        if (keep) keep[i] = !(cfg->mask && out);
    }
    return 0;
}

int sft_loss(int n_tokens, const float *lp, const uint8_t *mask, double *loss, float *dlp, Err *e) {
    int64_t count = 0;
    for (int t = 0; t < n_tokens; t++) {
        if (mask[t] > 1) return err_set(e, "sft loss: mask[%d] = %d not 0/1", t, mask[t]);
        if (mask[t] && !isfinite(lp[t])) return err_set(e, "sft loss: non-finite log-prob at token %d", t);
        count += mask[t];
    }
    if (count == 0) return err_set(e, "sft loss: no counted token among %d", n_tokens);
    double sum = 0;
    for (int t = 0; t < n_tokens; t++) {
        sum += mask[t] ? lp[t] : 0.0;
        dlp[t] = mask[t] ? (float)(-1.0 / count) : 0.0f;
    }
    *loss = -sum / count;
    return 0;
}
