// sft.c: the SFT step (see sft.h).
#include "sft.h"

#include <stdlib.h>
#include <string.h>

#include "grpo.h"
#include "util/log.h"

// Prepares the questions of one micro-step into pq[n] (bad ones get features == NULL) and builds the
// batch: per question, prompt + solution as one causal sequence with the solution as targets.
static void sft_build(Trainer *t, const int64_t *questions, const int64_t *slots, int n, PreparedQuestion *pq,
                      StepStats *st) {
    ModelBatch *b = &t->batch;
    mbatch_clear(b);
    double t0 = log_elapsed();
    int32_t *seq = NULL;
    int cap = 0;
    for (int i = 0; i < n; i++) {
        Err pe;
        const Question *q = &t->data.q[questions[i]];
        if (prep_question(&t->prep, q, &pq[i], &pe)) {
            log_warn("slot %lld: question %lld skipped: %s", (long long)slots[i], (long long)questions[i], pe.msg);
            memset(&pq[i], 0, sizeof pq[i]);
            st->sum[ST_BAD] += 1;
            continue;
        }
        int np = pq[i].prompt.n, ns = pq[i].solution_ids.n;
        if (np + ns > cap) {
            cap = np + ns;
            seq = reallocCheck(seq, (size_t)cap * sizeof *seq);
        }
        memcpy(seq, pq[i].prompt.ids, (size_t)np * sizeof *seq);
        memcpy(seq + np, pq[i].solution_ids.ids, (size_t)ns * sizeof *seq);
        mbatch_add_seq(b, seq, np + ns, np);
        mbatch_add_audio(b, pq[i].features, pq[i].valid_frames);
        st->sum[ST_SAMPLES] += 1;
        st->sum[ST_LEN_SUM] += ns;
        if (ns > st->max[SM_LEN]) st->max[SM_LEN] = ns;
    }
    free(seq);
    st->t_prep += log_elapsed() - t0;
}

static int sft_micro_step(Trainer *t, const int64_t *questions, const int64_t *slots, int n, int last, StepStats *st,
                          Err *e) {
    PreparedQuestion *pq = callocCheck((size_t)n, sizeof *pq);
    uint8_t *mask = NULL;
    int rc = -1;
    sft_build(t, questions, slots, n, pq, st);
    int n_tgt = t->batch.n_tgt;
    if (n_tgt > 0) {
        double t0 = log_elapsed();
        if (trainer_forward(t, e)) goto out;
        mask = mallocCheck((size_t)n_tgt);
        memset(mask, 1, (size_t)n_tgt);
        double loss;
        if (sft_loss(n_tgt, t->lp, mask, &loss, t->dlp, e)) goto out;
        // Gradient accumulation: each micro-step carries 1 / grad_accum of the step's loss.
        double scale = 1.0 / t->cfg->train.grad_accum;
        for (int i = 0; i < n_tgt; i++) t->dlp[i] = (float)(t->dlp[i] * scale);
        trainer_backward(t, last);
        st->t_fwd_bwd += log_elapsed() - t0;
        st->sum[ST_LOSS] += loss * scale;
        st->sum[ST_LOSS_TOKENS] += n_tgt;
        st->sum[ST_FWD_TOKENS] += t->batch.n_tokens;
    }
    rc = 0;
out:
    for (int i = 0; i < n; i++)
        if (pq[i].features) prep_question_free(&pq[i]);
    free(pq);
    free(mask);
    return rc;
}

int sft_train_step(Trainer *t, int64_t step, StepStats *st, Err *e) {
    const Config *cfg = t->cfg;
    const Comm *c = t->comm;
    int64_t B = cfg->train.questions_per_step;
    int64_t n = order_rank_count(B, c->role_rank, c->role_size);
    int64_t *questions = mallocCheck((size_t)n * sizeof *questions), *slots = mallocCheck((size_t)n * sizeof *slots);
    order_rank_questions(&t->order, step, B, c->role_rank, c->role_size, questions, slots);
    int accum = cfg->train.grad_accum, per = (int)(n / accum), rc = -1;
    for (int m = 0; m < accum; m++)
        if (sft_micro_step(t, questions + m * per, slots + m * per, per, m == accum - 1, st, e)) goto out;
    double gn, lr;
    UpdateTimes ut = {0};
    if (trainer_update(t, step, &gn, &lr, &ut, e)) goto out;
    st->lr = lr;
    st->n_updates = 1;
    st->grad_norm_sum = gn;
    st->t_allreduce += ut.allreduce;
    st->t_optim += ut.optim;
    rc = 0;
out:
    free(questions);
    free(slots);
    return rc;
}
