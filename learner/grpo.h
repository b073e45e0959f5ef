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
    const uint8_t *keep;    // [n_seq] or NULL: 0 drops sequence i from the loss (dynamic filtering)
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

// Per token: loss_t = -min(r A, clip(r, 1-eps_low, 1+eps_high) A) + beta * kl_t,
// r = exp(lp - old_lp), kl_t = exp(ref - lp) - (ref - lp) - 1; aggregated by cfg->loss_type over kept
// sequences. Writes dlp [n_tokens] = d(loss)/d(lp) (0 on masked or dropped tokens) and st (the loss
// and statistics). Bad layout or non-finite inputs -> -1 with Err naming the sequence/token.
int grpo_loss(const GrpoLossConfig *cfg, const GrpoBatch *b, float *dlp, GrpoLossStats *st, Err *e);

// SFT cross-entropy on the counted tokens: loss = -(sum of lp[t] * mask[t]) / (counted tokens);
// dlp[t] = -mask[t] / counted. lp, mask, dlp: [n_tokens]. No counted token -> -1 with Err.
int sft_loss(int n_tokens, const float *lp, const uint8_t *mask, double *loss, float *dlp, Err *e);
