// trainer_ckpt.h: the learner's checkpoints. A checkpoint of a run that has completed k steps is
// <run_dir>/checkpoints/step-<k>/ (ckpt.h): model/ in the Hugging Face layout (bf16, tokenizer files
// copied: loadable by transformers and by aqa-eval) and trainer/trainer_state.bin with what the bf16
// model cannot give back exactly: the fp32 master weights ("master"), AdamW's moments ("adam.m",
// "adam.v") and step, the data cursor and the effective config. The root alone writes one unsharded
// state file (CPU learners hold the whole optimizer state each; ZeRO-1 GPU learners gather their shards
// to the root first), so a run may resume with another number of learners or another backend; on
// resume the root reads it and broadcasts it, and each learner keeps its part. Rollout ranks are stateless (counter-based sampling), so
// restoring this state reproduces an uninterrupted run bit for bit.
#pragma once
#include <stdint.h>

#include "train.h"

// Collective over the learners: the root writes the checkpoint of t->step completed steps, then prunes
// to train.keep_last; the others only contribute their shards (GPU) and return 0.
int tckpt_save(Trainer *t, Err *e);
// All learners: restores the checkpoint of *start completed steps (0: nothing to restore) into t
// (weights, optimizer, step). A checkpoint whose state file does not read back (truncated, bit-flipped:
// a CRC mismatch) is reported with a warning, set aside as step-XXXXXXXX.damaged (so the run can write
// that step again) and an older one is taken: *start becomes the step restored. A config that differs
// from the checkpoint's (other than train.resume, train.max_steps, train.test_ckpt_pause_s and
// reward.server) is reported as a warning.
int tckpt_restore(Trainer *t, int64_t *start, Err *e);
