// grpo_step.h: one GRPO training step on a learner. The learner receives its groups of step k from the
// rollout ranks, orders them by slot (so the result never depends on arrival order), computes the group
// advantages (batch-scaled ones with the std of the whole global batch), drops zero-std groups under
// dynamic filtering, and runs grpo.num_iterations optimizer updates over the batch, each split into
// train.grad_accum micro-steps in slot order. A micro-step is one model batch: per group the prompt
// once (with its audio features, recomputed from the audio path) and its G completions attending to it.
// Normalisers follow grpo.h so that L learners x grad_accum micro-steps give the gradient of one
// learner over the same global batch.
#pragma once
#include <stdint.h>

#include "comm/traj.h"
#include "stats.h"
#include "train.h"

// Receives exactly the n groups (failed ones included) of step `step` that belong to this learner into
// groups[n], sorted by slot. A group of another step or weights version, or a slot received twice, is an
// error naming the sender.
int grpo_recv_groups(Trainer *t, int64_t step, TrajGroup *groups, int n, StepStats *st, Err *e);

// Trains on this learner's groups of step `step` (sorted by slot; every learner calls it, even one whose
// groups all failed, because the updates are collective). Failed groups are counted and skipped.
int grpo_train_step(Trainer *t, int64_t step, const TrajGroup *groups, int n, StepStats *st, Err *e);
