#include "pool.h"

#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "util/check.h"
#include "util/log.h"

typedef struct {
    int64_t n;
    atomic_int_fast64_t next;
    int64_t done;  // under mu
    pthread_mutex_t mu;
    const char *what;
    void (*fn)(void *ctx, int64_t i);
    void *ctx;
} Pool;

static void *pool_worker(void *arg) {
    Pool *p = arg;
    for (;;) {
        int64_t i = atomic_fetch_add(&p->next, 1);
        if (i >= p->n) return NULL;
        p->fn(p->ctx, i);
        pthread_mutex_lock(&p->mu);
        progress_update(p->what, ++p->done, p->n);  // the bar is shared state: one writer at a time
        pthread_mutex_unlock(&p->mu);
    }
}

void pool_run(int64_t n, int threads, const char *what, void (*fn)(void *ctx, int64_t i), void *ctx) {
    if (n <= 0) return;
    if (threads < 1) threads = 1;
    if (threads > n) threads = (int)n;
    Pool p = {.n = n, .what = what, .fn = fn, .ctx = ctx};
    atomic_init(&p.next, 0);
    pthread_mutex_init(&p.mu, NULL);
    pthread_t *t = callocCheck((size_t)threads, sizeof(pthread_t));
    for (int k = 0; k < threads; k++) {
        int rc = pthread_create(&t[k], NULL, pool_worker, &p);
        if (rc) fatal("pthread_create: %s", strerror(rc));
    }
    for (int k = 0; k < threads; k++) pthread_join(t[k], NULL);
    progress_end();
    pthread_mutex_destroy(&p.mu);
    free(t);
}

int pool_default_threads(void) {
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof set, &set) == 0 && CPU_COUNT(&set) > 0) return CPU_COUNT(&set);
    return 1;
}
