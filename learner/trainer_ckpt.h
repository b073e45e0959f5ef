// trainer_ckpt.h: the learner's checkpoints. A checkpoint of a run that has completed k steps is
// <run_dir>/checkpoints/step-<k>/ (ckpt.h): model/ in the Hugging Face layout (bf16, tokenizer files
// copied: loadable by transformers and by aqa-eval), written by the root from the weights it holds, and
// one trainer file per learner (trainer/trainer_state.bin with one learner, else trainer/shard-<r>.bin)
// with what the bf16 model cannot give back exactly: its part (train.h TrainerPart: a CPU learner's cut of
// the replicated state, a GPU learner's ZeRO-1 shard) of the fp32 master weights ("master") and AdamW's
// moments ("adam.m", "adam.v"), and in every file AdamW's step, the data cursor, the effective config and
// the checkpoint id. No learner holds more than its part: nothing is gathered. Every learner writes its
// file (atomically, fsynced), all confirm, and only then does the root commit (.complete); a learner's
// failure (a full disk) fails the whole checkpoint on every learner, naming that learner and its file, and
// leaves nothing that looks complete. On resume every learner reads the part of its own new layout from
// the files that overlap it, so a run may resume with another number of learners or another backend.
// Rollout ranks are stateless (counter-based sampling), so restoring this state reproduces an
// uninterrupted run bit for bit.
#pragma once
#include <stdint.h>

#include "train.h"

// Collective over the learners: the checkpoint of t->step completed steps, then the root prunes to
// train.keep_last. Logs its size and write time.
int tckpt_save(Trainer *t, Err *e);
// All learners: restores the checkpoint of *start completed steps (0: nothing to restore) into t
// (weights, optimizer, step), logging its size and read time. A checkpoint whose trainer files do not
// read back (one missing, truncated, bit-flipped: a CRC mismatch, or of another checkpoint: its id) is
// reported with a warning naming the file, set aside as step-XXXXXXXX.damaged (so the run can write that
// step again) and an older one is taken: *start becomes the step restored. A config that differs
// from the checkpoint's (other than train.resume, train.max_steps, train.test_ckpt_pause_s and
// reward.server) is reported as a warning.
int tckpt_restore(Trainer *t, int64_t *start, Err *e);
