// train_zero.h: the GPU learner's half of train.c (model.backend=cuda): the ZeRO-1 optimizer state
// (zero_cuda.h) set up from the loaded weights, armed during the last backward, the update, and the
// shard's part of the checkpoints (trainer_part_get / trainer_part_put). train.c calls these only when t->zero is set,
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
// trainer_part_get / trainer_part_put of a GPU learner.
void trainer_zero_part_get(Trainer *t, TrainerPart *p, int current);
void trainer_zero_part_put(Trainer *t, TrainerPart *p);
