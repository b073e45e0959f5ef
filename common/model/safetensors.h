// safetensors.h: read and write the Hugging Face safetensors format.
// A file is: u64 little-endian header length N, N bytes of JSON {name: {dtype, shape, data_offsets
// [begin, end)}} (+ optional "__metadata__"), then the raw little-endian data (offsets count from the first
// byte after the header). A sharded checkpoint adds model.safetensors.index.json {"metadata":
// {"total_size"}, "weight_map": {name: shard file}}. The reader mmaps every file, validates every header
// entry against the file size, and looks tensors up by name through a hash table; the writer converts
// fp32 sources to F32/BF16/F16 and writes each file atomically, sharding exactly as transformers does.
#pragma once
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "util/check.h"

enum { ST_MAX_DIMS = 8 };

typedef enum { ST_F32, ST_F16, ST_BF16, ST_F64, ST_I64, ST_I32, ST_I16, ST_I8, ST_U8, ST_BOOL } StDtype;

typedef struct {
    char *name;
    StDtype dtype;
    int ndim;
    int64_t shape[ST_MAX_DIMS];
    size_t numel;
    size_t nbytes;
    const uint8_t *data;  // inside the file's read-only mapping; little-endian, possibly unaligned
    int file;             // index into StReader.files
} StTensor;

typedef struct {
    char *path;
    uint8_t *map;  // whole file, read-only
    size_t size;
} StFile;

typedef struct {
    StFile *files;
    int n_files;
    StTensor *tensors;  // in file order, shard after shard
    int n;
    int *slots;  // open-addressing hash table of tensor indices (-1 empty), n_slots a power of two
    size_t n_slots;
    char *source;  // the path that was opened, for messages
} StReader;

// Opens a .safetensors file, a model.safetensors.index.json, or a directory holding either (the index
// wins; else model.safetensors; else the only *.safetensors file). Returns -1 with e naming the file and
// tensor on any malformed input (truncated file, bad header, bad entry, missing shard, duplicates).
int st_open(StReader *r, const char *path, Err *e);
void st_close(StReader *r);
// The tensor with this name, or NULL.
const StTensor *st_find(const StReader *r, const char *name);
// Renames every tensor: map returns its argument unchanged, or the new name written into buf[cap]. The
// name index is rebuilt; two tensors that end up with one name are an error naming both files.
int st_rename(StReader *r, const char *(*map)(const char *name, char *buf, size_t cap), Err *e);
// Path of the file holding t (for messages).
const char *st_tensor_file(const StReader *r, const StTensor *t);
// Converts a floating tensor (F32, F16, BF16, F64) to fp32 in out[t->numel]. Integer dtypes are an error.
int st_to_f32(const StReader *r, const StTensor *t, float *out, Err *e);
// The same for elements [off, off + n) of t (off + n <= t->numel) into out[n].
int st_to_f32_range(const StReader *r, const StTensor *t, size_t off, size_t n, float *out, Err *e);
// Finds name, checks its shape equals shape[ndim], converts to fp32. Errors name the tensor and file.
int st_read_f32(const StReader *r, const char *name, int ndim, const int64_t *shape, float *out, Err *e);
// The same for elements [off, off + n) of the tensor into out[n].
int st_read_f32_range(const StReader *r, const char *name, int ndim, const int64_t *shape, size_t off, size_t n,
                      float *out, Err *e);

const char *st_dtype_name(StDtype d);
size_t st_dtype_size(StDtype d);

// Scalar conversions. The f32 -> bf16/f16 ones round to nearest, ties to even (as torch's .to()).
// The bf16 pair is inline: the host optimizer (optim.h) converts every element of a shard with them.
static inline float st_bf16_to_f32(uint16_t h) {
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}
static inline uint16_t st_f32_to_bf16(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    uint32_t rounded = (u + 0x7fffu + ((u >> 16) & 1)) >> 16;
    // NaN stays a (quiet) NaN; a select, not a branch, so loops over it vectorise
    return (uint16_t)((u & 0x7fffffffu) > 0x7f800000u ? (u >> 16) | 0x40 : rounded);
}
float st_f16_to_f32(uint16_t h);
uint16_t st_f32_to_f16(float f);

// A bf16 source read on demand: elements [off, off + n) into out[n] (a GPU's weights fetched chunk by
// chunk, so a writer never holds more than a chunk of them on the host).
typedef void (*StReadBf16)(void *ctx, size_t off, size_t n, uint16_t *out);

// One tensor to write, of prod(shape) elements: an fp32 host source (data), or with data NULL the bf16
// elements [at, at + prod(shape)) of read_bf16's source.
typedef struct {
    const char *name;
    int ndim;
    int64_t shape[ST_MAX_DIMS];
    const float *data;
    StReadBf16 read_bf16;
    void *ctx;
    size_t at;
} StWriteTensor;

// Writes tensors (in the given order) into one file as dtype (F32, BF16 or F16), atomically. A bf16
// source written as BF16 goes out as its bytes; other pairs convert (widening is exact, narrowing rounds).
int st_write_file(const char *path, const StWriteTensor *ts, int n, StDtype dtype, Err *e);
// Writes tensors into dir as transformers' save_pretrained does: consecutive tensors fill a shard until
// the next one would push it past max_shard_bytes (a tensor larger than that gets a shard of its own);
// one shard -> "model.safetensors"; several -> "model-0000k-of-0000n.safetensors" plus
// "model.safetensors.index.json" (metadata.total_size = sum of tensor bytes). Every file is atomic.
// Returns the number of shards, or -1.
int st_write_sharded(const char *dir, const StWriteTensor *ts, int n, StDtype dtype, size_t max_shard_bytes,
                     Err *e);
