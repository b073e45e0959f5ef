// worker.h: rollout questions end to end (one, or a batch generated together), the body of the rollout
// rank's step loop.
// prep_question (audio -> features, prompt ids) -> model_generate (prompt prefilled once, G samples
// decoded over the shared cached prefix) -> decode each completion with special tokens skipped ->
// rewards (one reward-service batch per group, or in process) -> reference log-probs (one forward of a
// shared-prefix group batch through the frozen initial model) -> a TrajGroup for the owning learner.
// A question whose audio or prompt cannot be prepared becomes a FAILED group (G = 0 and the reason), so
// the learner's count of groups per step never depends on the data; anything else that fails (the model,
// the reward service) is an error for the caller, which ends the job.
#pragma once
#include <stdint.h>

#include "comm/traj.h"
#include "config/config.h"
#include "data/dataset.h"
#include "model/generate.h"
#include "model/model.h"
#include "pipeline/prepare.h"
#include "reward/client.h"
#include "reward/reward.h"
#include "util/check.h"

// The reward functions of a group, in TrajGroup.func_names / func_rewards order.
enum { ROLLOUT_N_FUNCS = 2 };
extern const char *const ROLLOUT_FUNC_NAMES[ROLLOUT_N_FUNCS];  // "accuracy", "format"

typedef struct {
    Model *policy;           // the weights being trained (version set by the caller)
    Model *ref;              // frozen reference model; NULL when beta = 0 (no ref_lp)
    PrepContext *prep;
    RewardClient *reward;    // NULL: score in process with reward_score (tests, runs without a service)
    RewardOptions reward_opt;  // mode of the requests and weights of the totals; numeric equivalence applies
                               // in process only (the service takes it from the run config it was started with)
    SamplerParams sampler;   // .seed: the step's sampling seed (rollout_step_seed)
    int G;                   // completions per question
} RolloutWorker;

// The sampler a run's config implies: rollout.* settings, EOS {<|im_end|>, <|endoftext|>}, <|AUDIO|>
// suppressed; seed 0 (set per step).
SamplerParams rollout_sampler_params(const Config *cfg, const PrepContext *prep);
// Reward options from reward.* and data.prompt_mode (think prompts are scored with the think format).
RewardOptions rollout_reward_options(const Config *cfg);
// The sampling seed of training step k: a fresh key per step, the same on every rank and after resume.
uint64_t rollout_step_seed(uint64_t train_seed, int64_t step);

// Fills g (traj_group_free it) for question q in global slot `slot`, sampled with weights `version`.
// Returns 0 (g may be a failed group: see above) or -1 with e set.
int rollout_question(RolloutWorker *w, const Question *q, int64_t slot, int64_t version, TrajGroup *g, Err *e);
// The same for n questions qs[i] (slots[i]) into g[n], generated together: their prompts prefilled in one
// batch and all their samples decoded in one (rollout.batch_questions). The groups equal those of one
// question at a time (same sampling keys); each group's prefill and decode times are its share of the
// batch's. On error no group is left to free.
int rollout_questions(RolloutWorker *w, const Question *const *qs, const int64_t *slots, int n, int64_t version,
                      TrajGroup *g, Err *e);
