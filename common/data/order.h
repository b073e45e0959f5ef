// order.h: which question each rollout rank answers at each step, as a pure function of the seed.
// Epoch e visits the questions in a permutation drawn from (seed, e) by a Philox stream. Global slot
// g = k*B + s (step k, slot s of B = questions_per_step) takes question perm_e[g mod n] with
// e = g / n, so a step that crosses an epoch boundary continues in the next epoch's fresh shuffle.
// Slot s of a step goes to rollout rank s % R: a question's rank depends only on its global slot,
// never on timing, and R = 1 and R = 3 cover the same questions. The training position is a small
// OrderCursor (epoch, position) that checkpoints store for exact resume.
#pragma once
#include <stdbool.h>
#include <stdint.h>

#include "util/check.h"

typedef struct {
    uint64_t seed;
    bool shuffle;          // false: every epoch takes the questions in file order (data.shuffle)
    int64_t n;             // questions in the dataset
    int64_t *perm[2];      // [n] cached permutations of two epochs (a step may span two)
    int64_t perm_epoch[2]; // which epoch each cache holds (-1: none); epoch e lives in perm[e & 1]
} Order;

// Where training stands: the next global slot is epoch * n_questions + position. seed and
// n_questions let a resume check that the data and the seed are the ones the cursor was made for.
typedef struct {
    int64_t epoch;
    int64_t position;  // in [0, n_questions)
    int64_t n_questions;
    uint64_t seed;
} OrderCursor;

void order_init(Order *o, uint64_t seed, int64_t n_questions, bool shuffle);
void order_free(Order *o);
// The permutation of epoch e ([n] question indices; valid until the next call for an epoch of the
// other parity).
const int64_t *order_epoch_perm(Order *o, int64_t epoch);
// The question of global slot g >= 0; *epoch (if non-NULL) receives g / n.
int64_t order_question(Order *o, int64_t global_slot, int64_t *epoch);
// The rollout rank of slot s (0 <= s < B) of a step: s % n_ranks.
int order_slot_rank(int64_t slot_in_step, int n_ranks);
// How many of a step's B slots rank r of R gets.
int64_t order_rank_count(int64_t per_step, int rank, int n_ranks);
// The questions rank r of R answers at step k, in slot order: writes order_rank_count(...) entries
// to questions (and the matching global slots to slots, if non-NULL); returns the count.
int64_t order_rank_questions(Order *o, int64_t step, int64_t per_step, int rank, int n_ranks,
                             int64_t *questions, int64_t *slots);

// The cursor at global slot g (e.g. (k + 1) * B after step k), and back.
OrderCursor order_cursor_at(const Order *o, int64_t global_slot);
int64_t order_cursor_slot(const OrderCursor *c);
// Checks a cursor read from a checkpoint against this order (same seed, same dataset size, position
// in range); -1 with e naming the mismatch.
int order_cursor_check(const Order *o, const OrderCursor *c, Err *e);
