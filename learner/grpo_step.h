// grpo_step.h: one GRPO training step on a learner. The learner receives its groups of step k from the
// rollout ranks, orders them by slot (so the result never depends on arrival order), computes the group
// advantages (batch-scaled ones with the std of the whole global batch), drops zero-std groups under
// dynamic filtering, and runs grpo.num_iterations optimizer updates over the batch, each split into
// train.grad_accum micro-steps in slot order. A micro-step is one model batch: per group the prompt
// once (with its audio features, recomputed from the audio path) and its G completions attending to it.
// Normalisers follow grpo.h so that L learners x grad_accum micro-steps give the gradient of one
// learner over the same global batch.
// Every micro-step also measures the rollout/learner mismatch of its tokens (the learner's log-probs
// before the update against the rollout's sampling log-probs) and applies grpo.tis_cap and
// grpo.mismatch_mask (grpo_mismatch). Groups of later steps, sampled ahead under grpo.max_staleness,
// wait in a GroupInbox.
#pragma once
#include <stdint.h>

#include "comm/traj.h"
#include "pipeline/schedule.h"
#include "stats.h"
#include "train.h"

// Groups received before the step that trains them: with grpo.max_staleness k the rollouts send the
// groups of steps s + 1 .. s + k while the learners train step s (pipeline/schedule.h), and every
// learner must take them off the wire before the weights of step s + 1 go out, or a rollout blocked in a
// send would never join that broadcast.
typedef struct {
    TrajGroup *g;
    int n, cap;
} GroupInbox;

void group_inbox_free(GroupInbox *in);

// During step `step`: receives this learner's groups into the inbox until it holds all of them (n per
// step, failed ones included) for the steps step .. last. A group is refused, naming the sender, when
// its slot is this learner's twice, belongs to a step the rollouts cannot have reached (outside step ..
// schedule_first_step(step + 1) - 1) or was sampled with weights newer than its step or more than
// grpo.max_staleness versions older.
int grpo_recv_ahead(Trainer *t, GroupInbox *in, const VersionSchedule *vs, int64_t step, int64_t last, int n,
                    StepStats *st, Err *e);
// This learner's n groups of step `step` (received now if not yet) out of the inbox into groups[n],
// sorted by slot.
int grpo_recv_groups(Trainer *t, GroupInbox *in, const VersionSchedule *vs, int64_t step, TrajGroup *groups, int n,
                     StepStats *st, Err *e);

// Trains on this learner's groups of step `step` (sorted by slot; every learner calls it, even one whose
// groups all failed, because the updates are collective). Failed groups are counted and skipped.
int grpo_train_step(Trainer *t, int64_t step, const TrajGroup *groups, int n, StepStats *st, Err *e);
