// sft.h: one supervised fine-tuning step (train.mode = sft, the paper's baseline and a format warm-up).
// Learner l takes its questions of step k straight from the data order (no rollout ranks): the
// sequence is the prompt (with its audio) followed by the solution "<answer>...</answer><|im_end|>",
// and the loss is the cross-entropy of the solution tokens, averaged over each micro-batch's tokens,
// divided by train.grad_accum and averaged over learners (as a data-parallel trainer with gradient
// accumulation does). A question whose audio or prompt cannot be prepared is logged, counted and
// skipped.
#pragma once
#include <stdint.h>

#include "stats.h"
#include "train.h"

int sft_train_step(Trainer *t, int64_t step, StepStats *st, Err *e);
