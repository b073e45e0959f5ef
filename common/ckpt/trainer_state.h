// trainer_state.h: the learner's state beyond the model weights, for bit-exact resume, in one
// self-describing binary file (trainer/trainer_state.bin, or trainer/shard-<rank>.bin per learner rank):
//   header    32 bytes: magic "AQATRST\0", u32 format version, u32 0, u64 metadata length,
//             u32 CRC-32 of the metadata, u32 CRC-32 of the header's first 28 bytes
//   metadata  JSON: step, weights version, checkpoint id, effective config, data cursor, named RNG
//             states, optimizer (kind, step count, parameter count, this file's shard and its segments),
//             named scalars, and the table of arrays (name, file offset, float count, and a CRC-32 per
//             block of TRAINER_CRC_BLOCK floats); 64-bit seeds/counters/ids as decimal strings and
//             scalars also as their IEEE bit pattern, so every value reads back exactly
//   arrays    raw little-endian fp32, each at a 64-byte aligned offset (e.g. "adam.m", "adam.v", "master")
// The file is written atomically (temp + fsync + rename); a write error (a full disk) is an error naming
// the file, and nothing is left under its name. The loader checks everything (magic, version, lengths
// against the file size, every CRC, the parameter count and shard layout the caller expects) and names
// the file and the field in its errors. Per-block CRCs let a reader take any part of an array
// (trainer_file_read) reading and checking only the blocks that hold it. Version 1 files (one CRC per
// array, no checkpoint id, no segments) are still read.
#pragma once
#include <stdint.h>

#include "data/order.h"
#include "util/check.h"
#include "util/rng.h"

#define TRAINER_STATE_MAGIC "AQATRST"  // 8 bytes with the NUL
enum {
    TRAINER_STATE_VERSION = 2,
    TRAINER_CRC_BLOCK = 1 << 18,  // floats (1 MiB) per CRC: the granularity of a partial read
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

// Flat parameters [lo, lo + n) stored at array elements [at, at + n).
typedef struct {
    int64_t lo, n, at;
} TrainerSeg;

// Which part of the optimizer state a file holds: learner rank r of R keeps the state of some parameters
// of the flat parameter buffer in arrays of count floats. Without segments (n_segs = 0) those are
// parameters [offset, offset + count) (a contiguous cut; offset 0 and count n_params when unsharded). With
// segments (offset 0) array element seg.at + i is parameter seg.lo + i: a ZeRO-1 shard (zero.h) is one
// piece of every gradient bucket, and its padding belongs to no segment. Segments lie inside [0,
// n_params) and [0, count), in increasing array order, and no two cover the same parameter.
typedef struct {
    int64_t n_params;  // parameters of the whole model
    int64_t offset;
    int64_t count;  // floats of every array
    int rank, n_ranks;
    int n_segs;
    TrainerSeg *segs;  // [n_segs]: the caller's when saving; the loader allocates them (trainer_state_free)
} TrainerShard;

// The segments of s (n_segs = 0 counts as the one segment {offset, count, 0}), and segment i.
int trainer_shard_n_segs(const TrainerShard *s);
TrainerSeg trainer_shard_seg(const TrainerShard *s, int i);

typedef struct {
    int64_t step;                       // training steps completed
    int64_t version;                    // weights version (rollout workers tag their samples with it)
    uint64_t ckpt_id;                   // the checkpoint's identity (ckpt.h): equal in all its shards; 0: none
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
// Frees config_json and loaded segments (the rest of the struct is plain values).
void trainer_state_free(TrainerState *st);

// Writes st and the arrays (distinct valid names, n >= 0) to path atomically. Bad input (a bad name,
// a cursor or shard out of range, an RNG with used > 4) is an error naming it; nothing is written then.
int trainer_state_save(const char *path, const TrainerState *st, const TrainerArray *arrays, int n_arrays,
                       Err *e);

// Reads and checks path's header and metadata (not the arrays' contents) into *st; the caller frees it
// with trainer_state_free. Lets a tool inspect a file, or a loader size its buffers first.
int trainer_state_peek(const char *path, TrainerState *st, Err *e);

// Loads path into *st and the arrays. expect (may be NULL) is the layout this run needs: n_params,
// offset, count, rank, n_ranks and the segments must all match the file's. The file must hold exactly
// the named arrays, each with the given n, and every CRC must match; on any error *st is left freed.
int trainer_state_load(const char *path, const TrainerShard *expect, TrainerState *st,
                       const TrainerArray *arrays, int n_arrays, Err *e);

// An open file for reading parts of its arrays: its checked header and metadata in st (the file's
// sizes and array table already checked against each other).
typedef struct TrainerFile TrainerFile;
TrainerFile *trainer_file_open(const char *path, Err *e);  // NULL with e set on any error
const TrainerState *trainer_file_state(const TrainerFile *f);
const char *trainer_file_path(const TrainerFile *f);
// Elements [at, at + n) of array `name` into dst [n], every block they touch read and its CRC checked.
// An unknown name, a range outside the array or a CRC mismatch is an error naming the file and array.
int trainer_file_read(TrainerFile *f, const char *name, int64_t at, int64_t n, float *dst, Err *e);
void trainer_file_close(TrainerFile *f);
