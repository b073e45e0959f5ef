// trainer_shards.h: a checkpoint's trainer state as the set of its learners' files (trainer_state.h),
// opened and checked as one, then read by flat parameter range whatever the number of files: a resume
// with another number of learners takes each new learner's range from the files that overlap it, reading
// only those parts (per-block CRCs). Checks on open, each error naming the file: every file of the
// marker's count is there and reads (header, metadata); each holds the checkpoint's step and id (a file
// of another checkpoint or run is refused), rank r of that count, the model's parameter count and the
// optimizer step of file 0; together their segments cover every parameter exactly once.
#pragma once
#include <stdint.h>

#include "ckpt/trainer_state.h"

typedef struct TrainerShardPart TrainerShardPart;

typedef struct {
    int n_files;
    uint64_t id;            // the marker's checkpoint id (0: written before ids)
    TrainerFile **f;        // [n_files], file r written by learner rank r
    TrainerShardPart *part; // every file's segments, by parameter
    int n_part;
} TrainerShards;

// Opens the trainer files of complete checkpoint directory dir, `step` and a model of n_params.
// TRAINER_SHARDS_MODEL_ONLY (e says so) for a checkpoint that has none (train.save_only_model).
enum { TRAINER_SHARDS_MODEL_ONLY = -2 };
int trainer_shards_open(TrainerShards *s, const char *dir, int64_t step, int64_t n_params, Err *e);
// File 0's state (step, cursor, RNGs, optimizer step, config; its shard is file 0's alone).
const TrainerState *trainer_shards_state(const TrainerShards *s);
// Parameters [lo, lo + n) of array `name` into dst [n].
int trainer_shards_read(TrainerShards *s, const char *name, int64_t lo, int64_t n, float *dst, Err *e);
// Bytes of all the files (for the log).
int64_t trainer_shards_bytes(const TrainerShards *s);
void trainer_shards_close(TrainerShards *s);
