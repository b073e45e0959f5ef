// train_zero.h: the GPU learner's half of train.c (model.backend=cuda): the ZeRO-1 optimizer state
// (zero_cuda.h) set up from the loaded weights, armed during the last backward, the update, and the
// optimizer state to and from the host for checkpoints. train.c calls these only when t->zero is set,
// which only trainer_zero_init does; in a CPU-only build trainer_zero_init refuses model.backend=cuda
// (backend_check has already) and the others end the process.
#pragma once
#include "train.h"

// The ZeRO-1 state from t->master (which it then frees: the master copy lives in the shards). Collective
// over the learners.
int trainer_zero_init(Trainer *t, Err *e);
void trainer_zero_free(Trainer *t);
// Before the backward of micro-batch `last` (zero_cuda_arm).
void trainer_zero_arm(Trainer *t, int last);
// The contract of trainer_update.
int trainer_zero_update(Trainer *t, int64_t update, double *grad_norm, double *lr, UpdateTimes *tm, Err *e);
// The halves of trainer_state_to_host / trainer_state_from_host that move the shards.
void trainer_zero_to_host(Trainer *t, int gather);
void trainer_zero_from_host(Trainer *t);
