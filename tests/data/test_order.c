// Tests of common/data/order: permutations, determinism, epoch crossing, sharding over ranks, cursor.
#include "data/order.h"
#include "test.h"

#include <stdlib.h>

static int is_permutation(const int64_t *p, int64_t n) {
    char *seen = calloc((size_t)n, 1);
    int ok = 1;
    for (int64_t i = 0; i < n; i++) {
        if (p[i] < 0 || p[i] >= n || seen[p[i]]) ok = 0;
        else seen[p[i]] = 1;
    }
    free(seen);
    return ok;
}

static int cmp_i64(const void *a, const void *b) {
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

static void test_permutations(void) {
    Order o, same, other;
    order_init(&o, 42, 37, true);
    order_init(&same, 42, 37, true);
    order_init(&other, 43, 37, true);
    int64_t e0[37], e1[37];
    memcpy(e0, order_epoch_perm(&o, 0), sizeof e0);
    memcpy(e1, order_epoch_perm(&o, 1), sizeof e1);
    CHECK(is_permutation(e0, 37));
    CHECK(is_permutation(e1, 37));
    CHECK(memcmp(e0, e1, sizeof e0) != 0);                                // epochs reshuffle
    CHECK(memcmp(e0, order_epoch_perm(&same, 0), sizeof e0) == 0);      // same seed, same order
    CHECK(memcmp(e0, order_epoch_perm(&other, 0), sizeof e0) != 0);     // other seed, other order
    int identity = 1;
    for (int i = 0; i < 37; i++) identity &= e0[i] == i;
    CHECK(!identity);
    // Cache: epoch 2 evicts epoch 0 (same parity); asking again recomputes the same permutation.
    CHECK(is_permutation(order_epoch_perm(&o, 2), 37));
    CHECK(memcmp(e0, order_epoch_perm(&o, 0), sizeof e0) == 0);
    CHECK(memcmp(e1, order_epoch_perm(&o, 1), sizeof e1) == 0);
    // order_question walks the permutations epoch after epoch.
    int64_t ep = -1;
    CHECK_INT(order_question(&o, 5, &ep), e0[5]);
    CHECK_INT(ep, 0);
    CHECK_INT(order_question(&o, 37 + 5, &ep), e1[5]);
    CHECK_INT(ep, 1);
    CHECK_INT(order_question(&o, 36, NULL), e0[36]);
    order_free(&o);
    order_free(&same);
    order_free(&other);
    // One question: trivial but valid.
    Order one;
    order_init(&one, 1, 1, true);
    CHECK_INT(order_question(&one, 12345, &ep), 0);
    CHECK_INT(ep, 12345);
    order_free(&one);
}

static void test_counts(void) {
    CHECK_INT(order_rank_count(16, 0, 8), 2);
    CHECK_INT(order_rank_count(16, 7, 8), 2);
    CHECK_INT(order_rank_count(4, 0, 3), 2);
    CHECK_INT(order_rank_count(4, 1, 3), 1);
    CHECK_INT(order_rank_count(4, 2, 3), 1);
    CHECK_INT(order_rank_count(2, 2, 3), 0);
    CHECK_INT(order_slot_rank(5, 3), 2);
    CHECK_INT(order_slot_rank(5, 1), 0);
}

// For n = 10, B = 4: shards of R ranks partition each step's questions, R = 1 and R = 3 give the
// same multiset, and step 2 (slots 8..11) runs into epoch 1.
static void test_sharding(void) {
    const int64_t n = 10, B = 4;
    Order o;
    order_init(&o, 7, n, true);
    for (int64_t step = 0; step < 8; step++) {
        int64_t step_q[4];
        for (int s = 0; s < B; s++) step_q[s] = order_question(&o, step * B + s, NULL);
        int64_t all1[4];
        CHECK_INT(order_rank_questions(&o, step, B, 0, 1, all1, NULL), B);
        CHECK(memcmp(all1, step_q, sizeof all1) == 0);
        int64_t got[4], slots_seen = 0, union_q[4];
        int64_t nu = 0;
        for (int r = 0; r < 3; r++) {
            int64_t slots[4];
            int64_t k = order_rank_questions(&o, step, B, r, 3, got, slots);
            CHECK_INT(k, order_rank_count(B, r, 3));
            for (int64_t i = 0; i < k; i++) {
                int64_t s = slots[i] - step * B;
                CHECK(s >= 0 && s < B && order_slot_rank(s, 3) == r);
                CHECK_INT(got[i], step_q[s]);  // a rank's question depends only on its slot
                slots_seen |= (int64_t)1 << s;
                union_q[nu++] = got[i];
            }
        }
        CHECK_INT(slots_seen, 15);  // each slot exactly once across ranks (and nu == B below)
        CHECK_INT(nu, B);
        qsort(union_q, 4, sizeof(int64_t), cmp_i64);
        qsort(all1, 4, sizeof(int64_t), cmp_i64);
        CHECK(memcmp(union_q, all1, sizeof all1) == 0);
    }
    const int64_t *p0 = order_epoch_perm(&o, 0);
    int64_t q8 = p0[8], q9 = p0[9];
    const int64_t *p1 = order_epoch_perm(&o, 1);
    int64_t ep;
    CHECK_INT(order_question(&o, 2 * B + 0, &ep), q8);
    CHECK_INT(ep, 0);
    CHECK_INT(order_question(&o, 2 * B + 2, &ep), p1[0]);
    CHECK_INT(ep, 1);
    CHECK_INT(order_question(&o, 2 * B + 1, NULL), q9);
    CHECK_INT(order_question(&o, 2 * B + 3, NULL), p1[1]);
    order_free(&o);

    // Over a whole epoch (n divisible by B) every question comes exactly once, whatever R.
    Order w;
    order_init(&w, 3, 12, true);
    int counts[12] = {0};
    for (int64_t step = 0; step < 3; step++)
        for (int r = 0; r < 5; r++) {
            int64_t q[4];
            int64_t k = order_rank_questions(&w, step, 4, r, 5, q, NULL);
            for (int64_t i = 0; i < k; i++) counts[q[i]]++;
        }
    int once = 1;
    for (int i = 0; i < 12; i++) once &= counts[i] == 1;
    CHECK(once);
    order_free(&w);
}

static void test_cursor(void) {
    Order o;
    order_init(&o, 42, 100, true);
    OrderCursor c = order_cursor_at(&o, 16 * 13);  // after step 12 with B = 16
    CHECK_INT(c.epoch, 2);
    CHECK_INT(c.position, 8);
    CHECK_INT(order_cursor_slot(&c), 208);
    Err e;
    CHECK(order_cursor_check(&o, &c, &e) == 0);
    OrderCursor bad = c;
    bad.seed = 41;
    CHECK(order_cursor_check(&o, &bad, &e) == -1);
    CHECK_STR(e.msg, "data cursor: seed 41 differs from the run's data seed 42");
    bad = c;
    bad.n_questions = 99;
    CHECK(order_cursor_check(&o, &bad, &e) == -1);
    CHECK_STR(e.msg, "data cursor: made for 99 questions, the dataset has 100");
    bad = c;
    bad.position = 100;
    CHECK(order_cursor_check(&o, &bad, &e) == -1);
    CHECK_STR(e.msg, "data cursor: epoch 2 position 100 out of range");
    bad = c;
    bad.epoch = -1;
    CHECK(order_cursor_check(&o, &bad, &e) == -1);
    order_free(&o);
}

// data.shuffle=false: every epoch is the file order, so slot g takes question g mod n.
static void test_no_shuffle(void) {
    Order o;
    order_init(&o, 42, 7, false);
    int ok = 1;
    for (int64_t g = 0; g < 30; g++) {
        int64_t epoch;
        ok &= order_question(&o, g, &epoch) == g % 7 && epoch == g / 7;
    }
    CHECK(ok);
    order_free(&o);
}

int main(void) {
    RUN(test_no_shuffle);
    RUN(test_permutations);
    RUN(test_counts);
    RUN(test_sharding);
    RUN(test_cursor);
    return test_summary("test_order");
}
