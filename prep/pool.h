// pool.h: a parallel loop with a progress bar, for per-file work (decoding, checking audio).
#pragma once
#include <stdint.h>

// Runs fn(ctx, i) for every i in [0, n) on `threads` threads (each takes the next unclaimed index; fn
// must be safe to run concurrently for different i) and shows the progress of finished items, named
// `what`, on stderr. Returns when all are done.
void pool_run(int64_t n, int threads, const char *what, void (*fn)(void *ctx, int64_t i), void *ctx);
// The default thread count: the CPUs this process may run on.
int pool_default_threads(void);
