// stats.h: the per-step metrics of the learner. Each learner accumulates sums over what it trained
// (groups, completions, tokens, losses, rollout timings carried by the groups); stats_reduce adds them
// over all learners (and takes maxima where a max is wanted) so the root can turn them into the step's
// metrics: metric names and values for metrics_log and one concise log line.
#pragma once
#include <stdint.h>

#include "comm/comm.h"
#include "config/config.h"
#include "metrics/metrics.h"
#include "util/check.h"

enum { STATS_MAX_FUNCS = 8, STATS_NAME_CAP = 48 };

// Sums over the learners (all-reduced).
typedef enum {
    ST_GROUPS,         // groups trained on (failed ones excluded)
    ST_SAMPLES,        // their completions
    ST_REWARD_SUM,     // sum of total rewards
    ST_GROUP_STD_SUM,  // sum over groups of the group's reward std
    ST_ZERO_STD,       // groups whose rewards are all equal
    ST_FILTERED,       // groups dropped by dynamic filtering
    ST_ADV_SUM,        // sum of advantages
    ST_ADV_SQ,         // sum of squared advantages
    ST_LEN_SUM,        // completion tokens up to and including the first EOS (SFT: target tokens)
    ST_TRUNC,          // completions that hit max_new_tokens without an EOS
    ST_LOSS,           // the learner's share of the loss, summed over the step's updates
    ST_LOSS_TOKENS,    // tokens in the loss, summed over updates
    ST_KL_SUM,         // sum over loss tokens of the k3 KL
    ST_CLIP_SUM,       // loss tokens whose ratio lay outside the clip range
    ST_BAD,            // questions that could not be used (audio or prompt failed)
    ST_FWD_TOKENS,     // tokens through forward + backward, summed over updates
    ST_T_DATA,         // rollout seconds per phase, summed over the step's groups
    ST_T_PREFILL,
    ST_T_DECODE,
    ST_T_REWARD,
    ST_T_REFERENCE,
    ST_LAG_SUM,        // sum over good groups of (step - the weights version they were sampled with)
    ST_MM_TOKENS,      // rollout/learner mismatch (grpo.h GrpoMismatch), summed over micro-steps
    ST_MM_ABS_SUM,
    ST_MM_K3_SUM,
    ST_MM_RATIO_SUM,
    ST_MM_OUT,         // tokens whose ratio lies outside [1/C, C]
    ST_MM_SEQS,        // completions with counted tokens
    ST_MM_SEQ_OUT,     // of them, those whose sequence-level ratio lies outside (masked with mismatch_mask)
    ST_FUNC_SUM,                                  // [STATS_MAX_FUNCS] per reward function: sum of rewards
    ST_FUNC_CNT = ST_FUNC_SUM + STATS_MAX_FUNCS,  // [STATS_MAX_FUNCS] and the completions it applied to
    ST_N = ST_FUNC_CNT + STATS_MAX_FUNCS,
} StatSum;

// Maxima over the learners (all-reduced with MPI_MAX).
typedef enum {
    SM_LEN,        // longest completion (SFT: target)
    SM_LAG,        // largest version lag of a good group
    SM_MM_ABS,     // largest |lp_learner - lp_sample|
    SM_RATIO,      // largest pi_learner / pi_sample
    SM_NEG_RATIO,  // -(smallest pi_learner / pi_sample), so that a max gives the min
    SM_N,
} StatMax;

typedef struct {
    double sum[ST_N];
    double max[SM_N];  // stats_clear sets them to 0, SM_NEG_RATIO to -inf
    // Per reward function, in the order of the groups' func_names (the same in every group of a run).
    int n_funcs;
    char func_names[STATS_MAX_FUNCS][STATS_NAME_CAP];
    // This learner's wall seconds (the root's are logged).
    double t_recv;       // waiting for and receiving groups
    double t_prep;       // the learner's own question preparation (features, prompt)
    double t_fwd_bwd;    // forward + loss + backward
    double t_allreduce;  // gradient all-reduce
    double t_optim;      // clipping + AdamW + weight upload
    double t_weight_sync;
    double t_step;
    double grad_norm_sum;  // over the step's updates (grpo.num_iterations of them)
    int n_updates;
    double lr;  // of the step's first update
} StepStats;

void stats_clear(StepStats *s);
// Records the reward function names of a group; a group whose names differ from the first one's is an
// error (the per-function sums are kept by position).
int stats_set_funcs(StepStats *s, char *const *names, int n, Err *e);
// Sums (and the max) over all learners; the root's names and timings are kept.
void stats_reduce(const Comm *c, StepStats *s);
// Root: logs the step's metrics (names from the mode) and prints the step line every log.every steps.
int stats_log(const StepStats *s, const Config *cfg, int n_learners, int n_rollouts, int64_t step, int64_t n_steps,
              Metrics *m, Err *e);
