// schedule.h: which training steps a run makes, computed alike by learner and rollout ranks from the
// shared config (they never negotiate it): the step count, train.max_steps cut so that no slot of a step
// lies beyond train.epochs passes over the data, and the first step, 0 or, on resume, the step of the
// newest complete checkpoint in train.run_dir. A checkpoint directory step-XXXXXXXX is named by the
// number of steps completed, so that number is also the next step to run (and the weights version).
//
// Asynchronous rollout (grpo.max_staleness = k): the learners send weights version v (the weights after v
// steps) at the start of step v; rollouts sample step j with version schedule_version(j) =
// max(j - k, C(j), start), C(j) the last checkpoint step <= j (a multiple of train.save_every). So while
// the learners train step s the rollouts generate steps s + 1 .. s + k with older weights, and the
// pipeline drains at every checkpoint step: nothing is in flight when a checkpoint is written, a resumed
// run samples every step with the weights the uninterrupted run used, and the whole schedule is a
// function of the config (k = 0 is the synchronous schedule: version j for step j).
#pragma once
#include <stdint.h>

#include "config/config.h"
#include "util/check.h"

// Steps in the whole run: min(train.max_steps, floor(train.epochs * n_questions / questions_per_step)).
// -1 with e when the data cannot fill a single step.
int schedule_total_steps(const Config *cfg, int64_t n_questions, int64_t *n_steps, Err *e);
// The first step to run: 0 without train.resume or when run_dir holds no complete checkpoint.
int schedule_start_step(const Config *cfg, int64_t *start, Err *e);

// The schedule of weight versions of a run (see above).
typedef struct {
    int64_t start, n_steps;
    int64_t staleness;   // grpo.max_staleness
    int64_t save_every;  // train.save_every (0: checkpoints only at the end)
} VersionSchedule;

VersionSchedule schedule_versions(const Config *cfg, int64_t start, int64_t n_steps);
// Weights version step j is sampled with.
int64_t schedule_version(const VersionSchedule *s, int64_t step);
// The first step sampled with version v or newer: rollouts take version v just before it, so the groups
// of every earlier step are sent before version v's broadcast. n_steps when no step uses it.
int64_t schedule_first_step(const VersionSchedule *s, int64_t version);
