// ckpt.h: the checkpoint directories of a run, and the protocol that makes one appear whole or not at all.
//   <run_dir>/checkpoints/step-00000120/
//       model/                      Hugging Face layout (model_save_dir, with its own .complete)
//       trainer/trainer_state.bin   trainer state (trainer_state.h) of a single-learner run, or
//       trainer/shard-<r>.bin       one per learner rank r (ZeRO-style optimizer shards)
//       .complete                   written last: only a directory holding it is a checkpoint; JSON with the
//                                   step, the number of trainer files (0: a model-only checkpoint, no
//                                   trainer/, train.save_only_model) and the checkpoint id
// Several processes write one checkpoint: the root calls ckpt_begin (creates step-XXXXXXXX.tmp/ and draws
// a random checkpoint id), every writer puts its files, each stamped with that id, under that temporary
// directory, then the root calls ckpt_commit (checks that all parts are there and belong to this step and
// id, fsyncs, renames to step-XXXXXXXX/, writes .complete last and fsyncs the directory). The id lets a
// reader refuse a trainer file of another checkpoint or run put in its place. A crash at any point leaves a *.tmp or marker-less directory, which readers skip
// and ckpt_prune / ckpt_begin remove. Removal touches only entries of checkpoints/ named like ours, and
// never follows a symlink or crosses into another file system.
#pragma once
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "model/checkpoint.h"
#include "util/check.h"

// The marker file: the one model_save_dir writes into model/, so both levels read alike.
#define CKPT_MARKER CHECKPOINT_MARKER
enum {
    CKPT_NAME_CAP = 32,        // "step-00000120.tmp" and its NUL fit
    CKPT_MAX_STEP = 99999999,  // eight digits
    CKPT_MAX_RANKS = 1 << 16,  // trainer files a marker may name
};

// "step-00000120" (tmp: "step-00000120.tmp") into out[CKPT_NAME_CAP]. step must be in
// [0, CKPT_MAX_STEP] (ckpt_begin checks it; a bad step here is a programming error and dies).
char *ckpt_dir_name(char *out, int64_t step, bool tmp);
// "<run_dir>/checkpoints/step-00000120" (or its .tmp). Non-root ranks use tmp = true after ckpt_begin.
char *ckpt_path(char *out, size_t cap, const char *run_dir, int64_t step, bool tmp);
// Where parts go inside a checkpoint directory (final or temporary): "<dir>/model", and the trainer
// state file of learner rank r of n_ranks: "<dir>/trainer/trainer_state.bin" when n_ranks == 1, else
// "<dir>/trainer/shard-<r>.bin".
char *ckpt_model_path(char *out, size_t cap, const char *ckpt_dir);
char *ckpt_trainer_path(char *out, size_t cap, const char *ckpt_dir, int rank, int n_ranks);

// Root: starts checkpoint `step` of run_dir. Removes a stale step-XXXXXXXX.tmp or marker-less
// step-XXXXXXXX left by a crash, creates step-XXXXXXXX.tmp/trainer/, writes the temporary directory's
// path to tmp_dir and a fresh random nonzero checkpoint id to *id. A complete checkpoint of the same step
// is an error (it is never overwritten).
int ckpt_begin(const char *run_dir, int64_t step, char *tmp_dir, size_t cap, uint64_t *id, Err *e);
// Root, after every writer has finished: checks that model/ is complete and that the trainer files of
// all n_ranks learner ranks exist and hold this step and checkpoint id, then publishes the checkpoint
// (see above). n_ranks = 0: a model-only checkpoint (its empty trainer/ is removed).
int ckpt_commit(const char *run_dir, int64_t step, int n_ranks, uint64_t id, Err *e);
// Reads the marker of complete checkpoint directory dir: the number of trainer files (0: model only) and
// the checkpoint id (0 for a checkpoint written before ids existed). A marker that does not parse is an error naming it.
int ckpt_marker_read(const char *dir, int *n_ranks, uint64_t *id, Err *e);
// Root: moves complete checkpoint `step`, found damaged, out of the way to step-XXXXXXXX.damaged (kept
// for inspection; no longer a checkpoint name, so never listed or pruned). An existing .damaged
// directory of that step is an error: the operator decides what to keep.
int ckpt_set_aside(const char *run_dir, int64_t step, Err *e);
// Root: discards an unfinished checkpoint (its temporary directory), e.g. after a writer failed.
int ckpt_abort(const char *run_dir, int64_t step, Err *e);

// The steps of run_dir's complete checkpoints, ascending, in *steps (malloc'd; the caller frees; NULL
// when there are none). Returns their number; a missing checkpoints/ directory means 0. Skipped
// entries (*.tmp, no marker) are reported at debug level.
int ckpt_list(const char *run_dir, int64_t **steps, Err *e);
// The newest complete checkpoint: 1 with its path in out and its step in *step; 0 when there is none.
int ckpt_latest(const char *run_dir, char *out, size_t cap, int64_t *step, Err *e);
// Root, when no checkpoint is being written: keeps the newest keep_last complete checkpoints (0 keeps
// all) and removes older ones plus every *.tmp and marker-less checkpoint directory. Returns the number
// of directories removed.
int ckpt_prune(const char *run_dir, int keep_last, Err *e);
