// trainer_state.h: the learner's state beyond the model weights, for bit-exact resume, in one
// self-describing binary file (trainer/trainer_state.bin, or trainer/shard-<rank>.bin per learner rank):
//   header    32 bytes: magic "AQATRST\0", u32 format version, u32 0, u64 metadata length,
//             u32 CRC-32 of the metadata, u32 CRC-32 of the header's first 28 bytes
//   metadata  JSON: step, weights version, effective config, data cursor, named RNG states, optimizer
//             (kind, step count, parameter count, this file's shard), named scalars, and the table of
//             arrays (name, file offset, float count, CRC-32); 64-bit seeds/counters as decimal strings
//             and scalars also as their IEEE bit pattern, so every value reads back exactly
//   arrays    raw little-endian fp32, each at a 64-byte aligned offset (e.g. "adam.m", "adam.v", "master")
// The file is written atomically (temp + fsync + rename). The loader checks everything (magic, version,
// lengths against the file size, every CRC, the parameter count and shard layout the caller expects)
// and names the file and the field in its errors.
#pragma once
#include <stdint.h>

#include "data/order.h"
#include "util/check.h"
#include "util/rng.h"

#define TRAINER_STATE_MAGIC "AQATRST"  // 8 bytes with the NUL
enum {
    TRAINER_STATE_VERSION = 1,
    TRAINER_NAME_CAP = 48,  // names of RNGs, scalars, arrays (bytes incl. NUL): [A-Za-z0-9_.-]+
    TRAINER_MAX_RNGS = 16,
    TRAINER_MAX_SCALARS = 64,
    TRAINER_MAX_ARRAYS = 16,
    TRAINER_KIND_CAP = 16,
};

// A saved stream continues draw for draw. Words of rng.buf already consumed (index < used) are stored
// as 0: they are never read again, and the file stays a function of the stream's state.
typedef struct {
    char name[TRAINER_NAME_CAP];
    Rng rng;
} TrainerRng;

typedef struct {
    char name[TRAINER_NAME_CAP];
    double value;  // any double, NaN and infinities included
} TrainerScalar;

// Which part of the optimizer state a file holds: ZeRO-style, learner rank r of R keeps the state of
// parameters [offset, offset + count) of the flat parameter buffer.
typedef struct {
    int64_t n_params;  // parameters of the whole model
    int64_t offset;
    int64_t count;  // n_params when unsharded
    int rank, n_ranks;
} TrainerShard;

typedef struct {
    int64_t step;                       // training steps completed
    int64_t version;                    // weights version (rollout workers tag their samples with it)
    char *config_json;                  // the effective config (config_to_json); the loader allocates it
    OrderCursor cursor;                 // where the data order continues
    char optim_kind[TRAINER_KIND_CAP];  // "adamw"
    int64_t optim_step;                 // optimizer updates applied (AdamW's t for bias correction)
    TrainerShard shard;
    int n_rngs;
    TrainerRng rngs[TRAINER_MAX_RNGS];
    int n_scalars;
    TrainerScalar scalars[TRAINER_MAX_SCALARS];
} TrainerState;

// A named fp32 array: data points into a caller-owned buffer of n floats ([shard.count] for the
// optimizer moments). Saving reads it; loading fills it.
typedef struct {
    const char *name;
    float *data;
    int64_t n;
} TrainerArray;

// Adds (or replaces) a named RNG / scalar; -1 with e set for a bad name or a full table.
int trainer_state_set_rng(TrainerState *st, const char *name, const Rng *r, Err *e);
int trainer_state_set_scalar(TrainerState *st, const char *name, double value, Err *e);
// Looks one up; -1 with e naming the missing entry.
int trainer_state_get_rng(const TrainerState *st, const char *name, Rng *out, Err *e);
int trainer_state_get_scalar(const TrainerState *st, const char *name, double *out, Err *e);
// Frees config_json (the rest of the struct is plain values).
void trainer_state_free(TrainerState *st);

// Writes st and the arrays (distinct valid names, n >= 0) to path atomically. Bad input (a bad name,
// a cursor or shard out of range, an RNG with used > 4) is an error naming it; nothing is written then.
int trainer_state_save(const char *path, const TrainerState *st, const TrainerArray *arrays, int n_arrays,
                       Err *e);

// Reads and checks path's header and metadata (not the arrays' contents) into *st; the caller frees it
// with trainer_state_free. Lets a tool inspect a file, or a loader size its buffers first.
int trainer_state_peek(const char *path, TrainerState *st, Err *e);

// Loads path into *st and the arrays. expect (may be NULL) is the layout this run needs: n_params,
// offset, count, rank and n_ranks must all match the file's. The file must hold exactly the named
// arrays, each with the given n, and every CRC must match; on any error *st is left freed.
int trainer_state_load(const char *path, const TrainerShard *expect, TrainerState *st,
                       const TrainerArray *arrays, int n_arrays, Err *e);
