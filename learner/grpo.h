// grpo.h: the GRPO objective on per-token log-probs (TRL GRPOTrainer semantics, R1-AQA defaults).
// No model here: the model produces lp (log_softmax(logits)[token] of the completion tokens) and takes
// back d(loss)/d(lp); this module turns rewards into advantages and (lp, old_lp, ref_lp, advantages)
// into the scalar loss, its gradient and the step's statistics. Also the SFT cross-entropy on lp.
//
// Token layout (shared with common/comm TrajGroup): completions are packed in one flat array; sequence
// i owns tokens [offset[i], offset[i] + len[i]) and mask[t] = 1 marks the tokens that count (up to and
// including the first EOS).
#pragma once
#include <stdint.h>

#include "config/config.h"
#include "util/check.h"

// How advantages are scaled (grpo.scale_rewards, TRL scale_rewards) and how token losses are aggregated
// (grpo.loss_type, TRL loss_type) are the config's enums (config.h), documented in its schema:
//   CFG_SCALE_GROUP  divide by the group's std (R1-AQA); CFG_SCALE_BATCH  by the std of all rewards given;
//   CFG_SCALE_NONE   no division (Dr. GRPO). Every variant subtracts the GROUP mean.
//   CFG_LOSS_GRPO    mean over sequences of (masked token sum / masked tokens of the sequence)
//   CFG_LOSS_BNPO    masked token sum / masked tokens of this micro-batch
//   CFG_LOSS_DR_GRPO masked token sum / (sequences * max_completion_length)
//   CFG_LOSS_DAPO    masked token sum / (masked tokens of the whole global batch / n_procs)

typedef struct {
    double reward_mean;    // mean of all rewards
    double reward_std;     // mean over groups of the group std (TRL "reward_std")
    double zero_std_frac;  // fraction of groups whose rewards are all equal (std ~ 0)
    int n_kept_groups;     // groups left in the loss (all of them unless dynamic filtering)
} GrpoAdvStats;

// rewards [n_groups * G] (group-major) -> adv [n_groups * G]. std is Bessel-corrected (N - 1) as
// torch.std, so G >= 2. eps is added to the std (R1-AQA: 1e-4). A group counts as zero-std when its
// std <= 1e-8 (torch.isclose(std, 0)). With dynamic_filter, keep[i] = 0 for every sample of a zero-std
// group (they leave the loss); otherwise keep[i] = 1. keep may be NULL when dynamic_filter is 0.
int grpo_advantages(const float *rewards, int n_groups, int G, CfgScaleRewards scale, double eps,
                    int dynamic_filter, float *adv, uint8_t *keep, GrpoAdvStats *st, Err *e);

typedef struct {
    CfgLossType loss_type;
    double beta;                // KL coefficient (R1-AQA 0.04); 0 = no reference log-probs needed
    double eps_low, eps_high;   // ratio clip range [1 - eps_low, 1 + eps_high] (TRL 0.2, 0.2)
    int max_completion_length;  // dr_grpo normaliser (R1-AQA 256)
    // Gradient accumulation: grpo/bnpo/dr_grpo divide the micro-batch loss by accum_steps (as TRL), so
    // summing micro-batch gradients gives the step's. dapo instead divides by the step's token count:
    int accum_steps;
    int64_t dapo_global_tokens;  // masked tokens of the whole optimizer step, all learners, all micro-batches
    int n_procs;                 // learners; their gradients are averaged (DDP), hence the * n_procs
} GrpoLossConfig;

// R1-AQA defaults: grpo aggregation, beta 0.04, eps 0.2/0.2, max_completion_length 256, 1 micro-batch,
// 1 process.
GrpoLossConfig grpo_loss_config_default(void);

typedef struct {
    int n_seq;              // completions in this micro-batch
    int n_tokens;           // length of the flat token arrays
    const int *offset;      // [n_seq] first token of sequence i
    const int *len;         // [n_seq] tokens of sequence i
    const uint8_t *mask;    // [n_tokens] 1 = the token counts
    const float *lp;        // [n_tokens] policy log-probs (the differentiated input)
    const float *old_lp;    // [n_tokens] log-probs the samples were drawn with, or NULL: ratio = 1 in
                            // value (one update per generation: exp(lp - stopgrad(lp)))
    const float *ref_lp;    // [n_tokens] frozen reference model's log-probs; NULL allowed iff beta == 0
    const float *adv;       // [n_seq] advantages
    const uint8_t *keep;    // [n_seq] or NULL: 0 drops sequence i from the loss (dynamic filtering,
                            // mismatch masking)
    const float *is_w;      // [n_tokens] or NULL (= 1): importance weights of the tokens' policy loss
                            // (truncated importance sampling, grpo_mismatch); the KL term is not weighted
} GrpoBatch;

typedef struct {
    double loss;
    double mean_kl;           // masked mean of k3 KL over kept tokens (0 without ref_lp)
    double mean_ratio;        // masked mean of exp(lp - old_lp)
    double clip_low_frac;     // ratio < 1 - eps_low and A < 0 (gradient cut)
    double clip_high_frac;    // ratio > 1 + eps_high and A > 0 (gradient cut)
    double clip_region_frac;  // ratio outside [1 - eps_low, 1 + eps_high], whatever the sign of A
    int64_t tokens;           // kept masked tokens
    int n_seq;                // kept sequences
} GrpoLossStats;

// Per token: loss_t = -w_t min(r A, clip(r, 1-eps_low, 1+eps_high) A) + beta * kl_t, w_t = is_w[t] (or 1),
// r = exp(lp - old_lp), kl_t = exp(ref - lp) - (ref - lp) - 1; aggregated by cfg->loss_type over kept
// sequences. Writes dlp [n_tokens] = d(loss)/d(lp) (0 on masked or dropped tokens) and st (the loss
// and statistics). Bad layout or non-finite inputs -> -1 with Err naming the sequence/token.
int grpo_loss(const GrpoLossConfig *cfg, const GrpoBatch *b, float *dlp, GrpoLossStats *st, Err *e);

// Rollout/learner mismatch. The rollout samples with pi_sample (its backend, its weights version); the
// learner recomputes pi_learner before its update. Per counted token d = lp_learner - lp_sample and the
// importance ratio r = exp(d) = pi_learner / pi_sample. With the same weights and the same arithmetic d is
// exactly 0; a lag of versions, bf16 noise or a weight update that never reached the rollout all show.
typedef struct {
    int64_t tokens;     // counted tokens
    double abs_sum;     // sum of |d|
    double abs_max;     // max |d| (0 without tokens)
    double k3_sum;      // sum of r - 1 - d: k3 estimate of KL(pi_sample || pi_learner) from pi_sample's samples
    double ratio_sum;   // sum of r
    double ratio_min;   // min r (+inf without tokens)
    double ratio_max;   // max r (0 without tokens)
    int64_t out;        // tokens with r outside [1/C, C]
    int n_seq;          // sequences with counted tokens
    int seq_out;        // of them, those whose sequence-level ratio exp(mean d) lies outside [1/C, C]
} GrpoMismatch;

typedef struct {
    double bound;    // C > 1 of the bounds [1/C, C] (grpo.mismatch_bound)
    double tis_cap;  // truncated importance sampling: is_w[t] = min(r_t, tis_cap); 0 = off (is_w[t] = 1)
    int mask;        // sequence-level masking: keep[i] = 0 for the sequences counted in seq_out
} GrpoMismatchConfig;

// The mismatch of the sequences of b (layout and mask; lp = pi_learner) against lp_sample [n_tokens] into
// st, and the corrections: is_w [n_tokens] (may be NULL when tis_cap is 0; 1 on uncounted tokens) and keep
// [n_seq] (may be NULL unless mask; 1 except masked sequences). Non-finite log-probs -> -1 with Err
// naming the token.
int grpo_mismatch(const GrpoMismatchConfig *cfg, const GrpoBatch *b, const float *lp_sample, float *is_w,
                  uint8_t *keep, GrpoMismatch *st, Err *e);

// SFT cross-entropy on the counted tokens: loss = -(sum of lp[t] * mask[t]) / (counted tokens);
// dlp[t] = -mask[t] / counted. lp, mask, dlp: [n_tokens]. No counted token -> -1 with Err.
int sft_loss(int n_tokens, const float *lp, const uint8_t *mask, double *loss, float *dlp, Err *e);
