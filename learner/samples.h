// samples.h: the rollout samples of a GRPO step, recorded when log.samples is set: each learner writes
// the groups it trained on to <run_dir>/samples/step-<k>-learner-<rank>.jsonl, one JSON object per
// group: step, slot, question (dataset index) and id, weights version, failure reason (failed groups),
// and per completion its decoded text (special tokens skipped), token count, total reward and
// per-function rewards. One file per step and learner, written atomically, so a resumed run that redoes
// a step replaces that step's file instead of appending a duplicate. (SFT has no rollout samples.)
#pragma once
#include <stdint.h>

#include "comm/traj.h"
#include "train.h"

int samples_write(const Trainer *t, int64_t step, const TrajGroup *groups, int n, Err *e);
