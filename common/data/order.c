#include "data/order.h"

#include <inttypes.h>
#include <stdlib.h>

#include "util/rng.h"

// Philox stream of epoch e: a tag in the high bits keeps the data order apart from other streams
// that share the run's seed (sampling, synthetic data).
static const uint64_t ORDER_STREAM_TAG = 0x0D47A0000000000ull;

void order_init(Order *o, uint64_t seed, int64_t n_questions, bool shuffle) {
    if (n_questions <= 0) fatal("order_init: %" PRId64 " questions", n_questions);
    o->seed = seed;
    o->shuffle = shuffle;
    o->n = n_questions;
    for (int i = 0; i < 2; i++) {
        o->perm[i] = mallocCheck((size_t)n_questions * sizeof(int64_t));
        o->perm_epoch[i] = -1;
    }
}

void order_free(Order *o) {
    free(o->perm[0]);
    free(o->perm[1]);
    o->perm[0] = o->perm[1] = NULL;
}

const int64_t *order_epoch_perm(Order *o, int64_t epoch) {
    int c = (int)(epoch & 1);
    if (o->perm_epoch[c] != epoch) {
        int64_t *p = o->perm[c];
        for (int64_t i = 0; i < o->n; i++) p[i] = i;
        if (o->shuffle) {
            Rng r;
            rng_init(&r, o->seed, ORDER_STREAM_TAG | (uint64_t)epoch);
            rng_shuffle(&r, p, o->n);
        }
        o->perm_epoch[c] = epoch;
    }
    return o->perm[c];
}

int64_t order_question(Order *o, int64_t global_slot, int64_t *epoch) {
    if (global_slot < 0) fatal("order_question: negative slot %" PRId64, global_slot);
    int64_t e = global_slot / o->n;
    if (epoch) *epoch = e;
    return order_epoch_perm(o, e)[global_slot % o->n];
}

int order_slot_rank(int64_t slot_in_step, int n_ranks) { return (int)(slot_in_step % n_ranks); }

int64_t order_rank_count(int64_t per_step, int rank, int n_ranks) {
    return rank < per_step ? (per_step - rank + n_ranks - 1) / n_ranks : 0;
}

int64_t order_rank_questions(Order *o, int64_t step, int64_t per_step, int rank, int n_ranks,
                             int64_t *questions, int64_t *slots) {
    if (n_ranks <= 0 || rank < 0 || rank >= n_ranks || per_step <= 0 || step < 0)
        fatal("order_rank_questions: step %" PRId64 ", per_step %" PRId64 ", rank %d of %d", step,
              per_step, rank, n_ranks);
    int64_t k = 0;
    for (int64_t s = rank; s < per_step; s += n_ranks, k++) {
        int64_t g = step * per_step + s;
        questions[k] = order_question(o, g, NULL);
        if (slots) slots[k] = g;
    }
    return k;
}

OrderCursor order_cursor_at(const Order *o, int64_t global_slot) {
    OrderCursor c = {.epoch = global_slot / o->n, .position = global_slot % o->n,
                     .n_questions = o->n, .seed = o->seed};
    return c;
}

int64_t order_cursor_slot(const OrderCursor *c) { return c->epoch * c->n_questions + c->position; }

int order_cursor_check(const Order *o, const OrderCursor *c, Err *e) {
    if (c->seed != o->seed)
        return err_set(e, "data cursor: seed %" PRIu64 " differs from the run's data seed %" PRIu64,
                       c->seed, o->seed);
    if (c->n_questions != o->n)
        return err_set(e, "data cursor: made for %" PRId64 " questions, the dataset has %" PRId64,
                       c->n_questions, o->n);
    if (c->epoch < 0 || c->position < 0 || c->position >= c->n_questions)
        return err_set(e, "data cursor: epoch %" PRId64 " position %" PRId64 " out of range",
                       c->epoch, c->position);
    return 0;
}
