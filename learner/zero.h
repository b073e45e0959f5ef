// zero.h: the ZeRO-1 layout of L GPU learners (host arithmetic only; zero_cuda.h does the work). The
// gradient is reduced in buckets: contiguous ranges of the flat parameter buffer, made of the model's
// gradient ranges (model_grad_ranges) in the order backward finishes them, merged up to a size cap (a
// larger range is split), so a bucket can be reduced as soon as the range it ends with is final. Each
// bucket of n elements is padded to L * piece (piece = ceil(n / L)) and reduce-scattered: rank r owns
// elements [r * piece, (r + 1) * piece) of every bucket. A rank's shard is its pieces one after another
// (shard_n elements, padding included): its fp32 master weights and AdamW moments live there, and as
// AdamW is elementwise, the shard can be updated as one array.
#pragma once
#include <stddef.h>

#include "model/model.h"
#include "util/check.h"

// Pinned host slots of one bucket piece in each ring of the offloaded update (zero_cuda.h: reduced
// gradient pieces down, updated bf16 weights up): the CPU works on one slot while the other's copy is in
// flight (the host AdamW is the slower side, so a second slot keeps both busy). The memory plan counts
// them (memplan.h ring_slots).
enum { ZERO_RING = 2 };

typedef struct {
    size_t lo, n;      // flat range [lo, lo + n)
    size_t piece;      // ceil(n / L): each rank's part of the padded bucket
    size_t shard_off;  // where the bucket's piece starts in every rank's shard
    int ready_at;      // the gradient range (model_grad_ranges index) after which the bucket is final
} ZeroBucket;

typedef struct {
    int n_ranks;
    int n_buckets;
    ZeroBucket *b;      // [n_buckets] in reduction order (flat offsets descending)
    size_t numel;       // parameters of the model
    size_t shard_n;     // elements of every rank's shard (sum of the pieces)
    size_t max_padded;  // largest n_ranks * piece: the staging buffer a bucket is padded in
} ZeroLayout;

// Buckets of at most bucket_elems elements over ranges[n_ranges], which must cover [0, numel) from
// the top down, each range ending where the previous one starts (as model_grad_ranges lists them).
// Bad input (ranges that do not tile the buffer, bucket_elems or n_ranks < 1) is an error naming it.
int zero_layout_build(ZeroLayout *z, const GradRange *ranges, int n_ranges, size_t numel, size_t bucket_elems,
                      int n_ranks, Err *e);
void zero_layout_free(ZeroLayout *z);

// Rank r's part of bucket b in the flat buffer: [*lo, *lo + *n); *n < piece for the last rank(s) where
// the bucket is padded (0 when the piece is all padding).
void zero_piece(const ZeroLayout *z, int b, int r, size_t *lo, size_t *n);
// Where a shard's fp32 master weights come from: read(ctx, lo, n, out) fills out[n] with the parameters
// [lo, lo + n) of the flat layout (a checkpoint's files: model_read_range; or a full array). release
// (may be NULL) gives back what the source holds (mapped files); the consumer calls it once, when done.
typedef struct {
    int (*read)(void *ctx, size_t lo, size_t n, float *out, Err *e);
    void (*release)(void *ctx);
    void *ctx;
} ZeroSource;
// A source over a full host array [numel].
ZeroSource zero_source_array(const float *full);
// Rank r's piece of bucket b from src into out[piece], zero padded.
int zero_piece_read(const ZeroLayout *z, int b, int r, const ZeroSource *src, float *out, Err *e);

// Between full flat arrays [numel] and rank r's shard [shard_n] (host): gather writes the shard with
// zero padding; scatter writes rank r's elements of full.
void zero_shard_gather(const ZeroLayout *z, int r, const float *full, float *shard);
void zero_shard_scatter(const ZeroLayout *z, int r, const float *shard, float *full);
