// schedule.h: which training steps a run makes, computed alike by learner and rollout ranks from the
// shared config (they never negotiate it): the step count, train.max_steps cut so that no slot of a step
// lies beyond train.epochs passes over the data, and the first step, 0 or, on resume, the step of the
// newest complete checkpoint in train.run_dir. A checkpoint directory step-XXXXXXXX is named by the
// number of steps completed, so that number is also the next step to run (and the weights version).
#pragma once
#include <stdint.h>

#include "config/config.h"
#include "util/check.h"

// Steps in the whole run: min(train.max_steps, floor(train.epochs * n_questions / questions_per_step)).
// -1 with e when the data cannot fill a single step.
int schedule_total_steps(const Config *cfg, int64_t n_questions, int64_t *n_steps, Err *e);
// The first step to run: 0 without train.resume or when run_dir holds no complete checkpoint.
int schedule_start_step(const Config *cfg, int64_t *start, Err *e);
