// zero.c: bucket and shard arithmetic of the ZeRO-1 learners (see zero.h).
#include "zero.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static void bucket_add(ZeroLayout *z, int *cap, size_t lo, size_t n) {
    if (z->n_buckets == *cap) {
        *cap = *cap ? 2 * *cap : 64;
        z->b = reallocCheck(z->b, (size_t)*cap * sizeof *z->b);
    }
    size_t piece = (n + (size_t)z->n_ranks - 1) / (size_t)z->n_ranks;
    z->b[z->n_buckets++] = (ZeroBucket){.lo = lo, .n = n, .piece = piece, .shard_off = z->shard_n, .ready_at = -1};
    z->shard_n += piece;
    if (piece * (size_t)z->n_ranks > z->max_padded) z->max_padded = piece * (size_t)z->n_ranks;
}

int zero_layout_build(ZeroLayout *z, const GradRange *ranges, int n_ranges, size_t numel, size_t bucket_elems,
                      int n_ranks, Err *e) {
    memset(z, 0, sizeof *z);
    if (n_ranks < 1) return err_set(e, "ZeRO layout: %d ranks", n_ranks);
    if (bucket_elems < 1) return err_set(e, "ZeRO layout: buckets of %zu elements", bucket_elems);
    size_t top = numel;
    for (int i = 0; i < n_ranges; i++) {
        if (ranges[i].hi != top || ranges[i].lo > ranges[i].hi)
            return err_set(e, "ZeRO layout: gradient range %d is [%zu, %zu), expected one ending at %zu", i,
                           ranges[i].lo, ranges[i].hi, top);
        top = ranges[i].lo;
    }
    if (top != 0) return err_set(e, "ZeRO layout: the gradient ranges leave [0, %zu) uncovered", top);
    z->n_ranks = n_ranks;
    z->numel = numel;
    int cap = 0;
    // The open bucket is [lo, hi), growing downwards; a range that does not fit closes it first.
    size_t hi = numel, lo = numel;
    for (int i = 0; i < n_ranges; i++) {
        size_t n = ranges[i].hi - ranges[i].lo;
        if (n == 0) continue;
        if (hi > lo && hi - lo + n > bucket_elems) {
            bucket_add(z, &cap, lo, hi - lo);
            hi = lo;
        }
        if (n > bucket_elems) {  // split from the top; all parts are final together
            for (size_t end = ranges[i].hi; end > ranges[i].lo;) {
                size_t k = end - ranges[i].lo < bucket_elems ? end - ranges[i].lo : bucket_elems;
                bucket_add(z, &cap, end - k, k);
                end -= k;
            }
            hi = lo = ranges[i].lo;
            continue;
        }
        lo -= n;
    }
    if (hi > lo) bucket_add(z, &cap, lo, hi - lo);
    // A bucket is final after the last range (in report order) that has elements in it.
    for (int b = 0; b < z->n_buckets; b++) {
        int last = -1;
        for (int i = 0; i < n_ranges; i++)
            if (ranges[i].hi > ranges[i].lo && ranges[i].lo < z->b[b].lo + z->b[b].n && ranges[i].hi > z->b[b].lo)
                last = i;
        z->b[b].ready_at = last;
    }
    return 0;
}

void zero_layout_free(ZeroLayout *z) {
    free(z->b);
    memset(z, 0, sizeof *z);
}

void zero_piece(const ZeroLayout *z, int b, int r, size_t *lo, size_t *n) {
    const ZeroBucket *k = &z->b[b];
    size_t start = (size_t)r * k->piece;
    *lo = k->lo + (start < k->n ? start : k->n);
    *n = start >= k->n ? 0 : (k->n - start < k->piece ? k->n - start : k->piece);
}

static int array_read(void *ctx, size_t lo, size_t n, float *out, Err *e) {
    memcpy(out, (const float *)ctx + lo, n * sizeof(float));
    return 0;
}

ZeroSource zero_source_array(const float *full) { return (ZeroSource){array_read, NULL, (void *)(uintptr_t)full}; }

int zero_piece_read(const ZeroLayout *z, int b, int r, const ZeroSource *src, float *out, Err *e) {
    size_t lo, n;
    zero_piece(z, b, r, &lo, &n);
    memset(out + n, 0, (z->b[b].piece - n) * sizeof(float));
    return n ? src->read(src->ctx, lo, n, out, e) : 0;
}

void zero_shard_gather(const ZeroLayout *z, int r, const float *full, float *shard) {
    ZeroSource src = zero_source_array(full);
    Err e;  // an array read cannot fail
    for (int b = 0; b < z->n_buckets; b++) zero_piece_read(z, b, r, &src, shard + z->b[b].shard_off, &e);
}

void zero_shard_scatter(const ZeroLayout *z, int r, const float *shard, float *full) {
    for (int b = 0; b < z->n_buckets; b++) {
        size_t lo, n;
        zero_piece(z, b, r, &lo, &n);
        memcpy(full + lo, shard + z->b[b].shard_off, n * sizeof(float));
    }
}
