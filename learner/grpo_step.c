// grpo_step.c: receive, order, score and train on one step's trajectory groups (see grpo_step.h).
#include "grpo_step.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "grpo.h"
#include "util/log.h"

static int slot_cmp(const void *a, const void *b) {
    int64_t x = ((const TrajGroup *)a)->slot, y = ((const TrajGroup *)b)->slot;
    return (x > y) - (x < y);
}

void group_inbox_free(GroupInbox *in) {
    for (int i = 0; i < in->n; i++) traj_group_free(&in->g[i]);
    free(in->g);
    memset(in, 0, sizeof *in);
}

// A group just received from rollout `src` during step `step`, against the schedule and the inbox.
static int inbox_check(const Trainer *t, const GroupInbox *in, const VersionSchedule *vs, int64_t step,
                       const TrajGroup *g, int src, Err *e) {
    const int64_t B = t->cfg->train.questions_per_step, j = g->slot / B;
    const int64_t hi = schedule_first_step(vs, step + 1) - 1;
    if (j < step || j > hi)
        return err_set(e, "rollout %d sent slot %lld (step %lld) during step %lld (steps %lld..%lld expected)", src,
                       (long long)g->slot, (long long)j, (long long)step, (long long)step, (long long)hi);
    if (!g->failed && (g->version > j || j - g->version > vs->staleness))
        return err_set(e,
                       "rollout %d sampled slot %lld of step %lld with weights version %lld: %s (grpo.max_staleness "
                       "%lld)",
                       src, (long long)g->slot, (long long)j, (long long)g->version,
                       g->version > j ? "newer than the step" : "too old", (long long)vs->staleness);
    for (int i = 0; i < in->n; i++)
        if (in->g[i].slot == g->slot) return err_set(e, "rollout %d sent slot %lld twice", src, (long long)g->slot);
    return 0;
}

// Groups of steps <= last in the inbox.
static int inbox_count(const Trainer *t, const GroupInbox *in, int64_t last) {
    int c = 0;
    for (int i = 0; i < in->n; i++) c += in->g[i].slot / t->cfg->train.questions_per_step <= last;
    return c;
}

int grpo_recv_ahead(Trainer *t, GroupInbox *in, const VersionSchedule *vs, int64_t step, int64_t last, int n,
                    StepStats *st, Err *e) {
    double t0 = log_elapsed();
    const int64_t want = (last - step + 1) * n;
    while (inbox_count(t, in, last) < want) {
        if (in->n == in->cap) {
            in->cap = 2 * in->cap + 8;
            in->g = reallocCheck(in->g, (size_t)in->cap * sizeof *in->g);
        }
        int src = -1;
        TrajGroup *g = &in->g[in->n];
        if (comm_recv_group(t->comm, g, &src, e)) return err_prefix(e, "step %lld", (long long)step);
        if (inbox_check(t, in, vs, step, g, src, e)) {
            traj_group_free(g);
            return -1;
        }
        in->n++;
    }
    st->t_recv += log_elapsed() - t0;
    return 0;
}

int grpo_recv_groups(Trainer *t, GroupInbox *in, const VersionSchedule *vs, int64_t step, TrajGroup *groups, int n,
                     StepStats *st, Err *e) {
    if (grpo_recv_ahead(t, in, vs, step, step, n, st, e)) return -1;
    const int64_t B = t->cfg->train.questions_per_step;
    int k = 0, kept = 0;
    for (int i = 0; i < in->n; i++) {
        if (in->g[i].slot / B == step)
            groups[k++] = in->g[i];
        else
            in->g[kept++] = in->g[i];
    }
    in->n = kept;
    qsort(groups, (size_t)n, sizeof *groups, slot_cmp);
    return 0;
}

// One group's part of the step.
typedef struct {
    const TrajGroup *g;
    PreparedQuestion pq;  // features (and the prompt, checked against the rollout's)
    float *adv;           // [G]
    int kept;             // in the loss: a good group not dropped by dynamic filtering
} StepGroup;

// A micro-step's completions in the GrpoBatch layout.
typedef struct {
    int n_seq, n_tok, cap_seq, cap_tok;
    int *offset, *len;  // [n_seq]
    float *adv;         // [n_seq]
    uint8_t *keep;      // [n_seq] mismatch masking
    uint8_t *mask;      // [n_tok]
    float *ref;         // [n_tok]
    float *sample;      // [n_tok] the rollout's sampling log-probs
    float *is_w;        // [n_tok] truncated importance weights
} Flat;

static void flat_free(Flat *f) {
    free(f->offset);
    free(f->len);
    free(f->adv);
    free(f->keep);
    free(f->mask);
    free(f->ref);
    free(f->sample);
    free(f->is_w);
}

static void flat_add(Flat *f, const TrajGroup *g, const float *adv) {
    if (f->n_seq + g->G > f->cap_seq) {
        f->cap_seq = 2 * (f->n_seq + g->G);
        f->offset = reallocCheck(f->offset, (size_t)f->cap_seq * sizeof(int));
        f->len = reallocCheck(f->len, (size_t)f->cap_seq * sizeof(int));
        f->adv = reallocCheck(f->adv, (size_t)f->cap_seq * sizeof(float));
        f->keep = reallocCheck(f->keep, (size_t)f->cap_seq);
    }
    if (f->n_tok + g->n_tokens > f->cap_tok) {
        f->cap_tok = 2 * (f->n_tok + g->n_tokens);
        f->mask = reallocCheck(f->mask, (size_t)f->cap_tok);
        f->ref = reallocCheck(f->ref, (size_t)f->cap_tok * sizeof(float));
        f->sample = reallocCheck(f->sample, (size_t)f->cap_tok * sizeof(float));
        f->is_w = reallocCheck(f->is_w, (size_t)f->cap_tok * sizeof(float));
    }
    for (int s = 0; s < g->G; s++) {
        f->offset[f->n_seq + s] = f->n_tok + g->offset[s];
        f->len[f->n_seq + s] = g->len[s];
        f->adv[f->n_seq + s] = adv[s];
    }
    memcpy(f->mask + f->n_tok, g->mask, (size_t)g->n_tokens);
    if (g->ref_lp) memcpy(f->ref + f->n_tok, g->ref_lp, (size_t)g->n_tokens * sizeof(float));
    memcpy(f->sample + f->n_tok, g->sample_lp, (size_t)g->n_tokens * sizeof(float));
    f->n_seq += g->G;
    f->n_tok += g->n_tokens;
}

// What a good group must be for this learner's config.
static int group_check(const Trainer *t, const TrajGroup *g, Err *e) {
    const Config *cfg = t->cfg;
    if (g->question < 0 || g->question >= t->data.n)
        return err_set(e, "slot %lld: question %lld not in the %lld questions of data.train", (long long)g->slot,
                       (long long)g->question, (long long)t->data.n);
    if (g->G != cfg->rollout.num_generations)
        return err_set(e, "slot %lld: %d completions, rollout.num_generations is %d", (long long)g->slot, g->G,
                       cfg->rollout.num_generations);
    if (cfg->grpo.beta > 0 && !g->ref_lp)
        return err_set(e, "slot %lld: no reference log-probs with grpo.beta %g", (long long)g->slot, cfg->grpo.beta);
    return 0;
}

// Masked length of completion s: tokens up to and including the first EOS.
static int completion_len(const TrajGroup *g, int s) {
    int n = 0;
    for (int i = g->offset[s]; i < g->offset[s] + g->len[s]; i++) n += g->mask[i];
    return n;
}

static void group_stats(const Trainer *t, int64_t step, const TrajGroup *g, const float *adv, const GrpoAdvStats *as,
                        StepStats *st) {
    double *S = st->sum;
    S[ST_GROUPS] += 1;
    S[ST_LAG_SUM] += (double)(step - g->version);
    st->max[SM_LAG] = fmax(st->max[SM_LAG], (double)(step - g->version));
    S[ST_SAMPLES] += g->G;
    S[ST_GROUP_STD_SUM] += as->reward_std;
    S[ST_ZERO_STD] += as->zero_std_frac;
    for (int s = 0; s < g->G; s++) {
        S[ST_REWARD_SUM] += g->rewards[s];
        S[ST_ADV_SUM] += adv[s];
        S[ST_ADV_SQ] += (double)adv[s] * adv[s];
        int len = completion_len(g, s);
        S[ST_LEN_SUM] += len;
        if (len > st->max[SM_LEN]) st->max[SM_LEN] = len;
        int last = len > 0 ? g->ids[g->offset[s] + len - 1] : -1;
        S[ST_TRUNC] += last != t->eos[0] && last != t->eos[1];
        for (int f = 0; f < g->n_funcs && f < STATS_MAX_FUNCS; f++) {
            float r = g->func_rewards[(size_t)s * g->n_funcs + f];
            if (isnan(r)) continue;  // the function does not apply to this completion
            S[ST_FUNC_SUM + f] += r;
            S[ST_FUNC_CNT + f] += 1;
        }
    }
}

// Bessel-corrected std of every reward of the global batch (scale_rewards = batch), two passes over
// all learners' good groups.
static double batch_reward_std(const Trainer *t, const StepGroup *sg, int n) {
    double s[2] = {0, 0};  // count, sum
    for (int i = 0; i < n; i++)
        for (int j = 0; sg[i].adv && j < sg[i].g->G; j++) s[0] += 1, s[1] += sg[i].g->rewards[j];
    comm_role_allreduce_sum_f64(t->comm, s, 2);
    double mean = s[0] > 0 ? s[1] / s[0] : 0, ss = 0;
    for (int i = 0; i < n; i++)
        for (int j = 0; sg[i].adv && j < sg[i].g->G; j++)
            ss += (sg[i].g->rewards[j] - mean) * (sg[i].g->rewards[j] - mean);
    comm_role_allreduce_sum_f64(t->comm, &ss, 1);
    return s[0] > 1 ? sqrt(ss / (s[0] - 1)) : 0;
}

// Advantages, filtering and statistics of every good group; failed groups are counted.
static int score_groups(Trainer *t, int64_t step, StepGroup *sg, int n, StepStats *st, Err *e) {
    const Config *cfg = t->cfg;
    for (int i = 0; i < n; i++) {
        const TrajGroup *g = sg[i].g;
        st->sum[ST_T_DATA] += g->time.data;
        st->sum[ST_T_PREFILL] += g->time.prefill;
        st->sum[ST_T_DECODE] += g->time.decode;
        st->sum[ST_T_REWARD] += g->time.reward;
        st->sum[ST_T_REFERENCE] += g->time.reference;
        if (g->failed) {
            log_warn("step %lld: question %lld (slot %lld) skipped: %s", (long long)step, (long long)g->question,
                     (long long)g->slot, g->reason);
            st->sum[ST_BAD] += 1;
            continue;
        }
        if (group_check(t, g, e) || stats_set_funcs(st, g->func_names, g->n_funcs, e)) return -1;
        sg[i].adv = mallocCheck((size_t)g->G * sizeof(float));
    }
    int batch = cfg->grpo.scale_rewards == CFG_SCALE_BATCH;
    // Collective: every learner computes it, whatever its groups.
    double denom = batch ? batch_reward_std(t, sg, n) + cfg->grpo.std_eps : 1.0;
    CfgScaleRewards scale = cfg->grpo.scale_rewards == CFG_SCALE_GROUP ? CFG_SCALE_GROUP : CFG_SCALE_NONE;
    for (int i = 0; i < n; i++) {
        const TrajGroup *g = sg[i].g;
        if (!sg[i].adv) continue;
        uint8_t keep[CFG_MAX_GENERATIONS];
        GrpoAdvStats as;
        if (grpo_advantages(g->rewards, 1, g->G, scale, cfg->grpo.std_eps, cfg->grpo.dynamic_filter, sg[i].adv, keep,
                            &as, e))
            return err_prefix(e, "slot %lld", (long long)g->slot);
        if (batch)
            for (int s = 0; s < g->G; s++) sg[i].adv[s] = (float)(sg[i].adv[s] / denom);
        sg[i].kept = as.n_kept_groups == 1;
        st->sum[ST_FILTERED] += !sg[i].kept;
        group_stats(t, step, g, sg[i].adv, &as, st);
    }
    return 0;
}

// Features for the kept groups, and the check that the learner's prompt is the rollout's.
static int prepare_groups(Trainer *t, StepGroup *sg, int n, StepStats *st, Err *e) {
    double t0 = log_elapsed();
    for (int i = 0; i < n; i++) {
        if (!sg[i].kept) continue;
        const TrajGroup *g = sg[i].g;
        if (prep_question(&t->prep, &t->data.q[g->question], &sg[i].pq, e))
            return err_prefix(e, "slot %lld (the rollout prepared it)", (long long)g->slot);
        const TokenIds *p = &sg[i].pq.prompt;
        if (p->n != g->n_prompt || memcmp(p->ids, g->prompt_ids, (size_t)p->n * sizeof(int32_t)) != 0)
            return err_set(
                e,
                "slot %lld, question %lld: the rollout's prompt (%d ids) differs from the learner's (%d ids): "
                "do both roles use the same data, tokenizer and prompt settings?",
                (long long)g->slot, (long long)g->question, g->n_prompt, p->n);
    }
    st->t_prep += log_elapsed() - t0;
    return 0;
}

// The rollout/learner mismatch of the micro-step's tokens (learner log-probs lp: iteration 0's) and its
// corrections into f->is_w and f->keep; counted in st on iteration 0 only (later iterations repeat it).
static int micro_mismatch(const Trainer *t, Flat *f, const float *lp, int iter, StepStats *st, Err *e) {
    const Config *cfg = t->cfg;
    GrpoMismatchConfig mc = {
        .bound = cfg->grpo.mismatch_bound, .tis_cap = cfg->grpo.tis_cap, .mask = cfg->grpo.mismatch_mask};
    GrpoBatch b = {.n_seq = f->n_seq, .n_tokens = f->n_tok, .offset = f->offset, .len = f->len, .mask = f->mask,
                   .lp = lp};
    GrpoMismatch m;
    if (grpo_mismatch(&mc, &b, f->sample, f->is_w, f->keep, &m, e)) return -1;
    if (iter > 0) return 0;
    double *S = st->sum;
    S[ST_MM_TOKENS] += (double)m.tokens;
    S[ST_MM_ABS_SUM] += m.abs_sum;
    S[ST_MM_K3_SUM] += m.k3_sum;
    S[ST_MM_RATIO_SUM] += m.ratio_sum;
    S[ST_MM_OUT] += (double)m.out;
    S[ST_MM_SEQS] += m.n_seq;
    S[ST_MM_SEQ_OUT] += m.seq_out;
    if (m.tokens > 0) {
        st->max[SM_MM_ABS] = fmax(st->max[SM_MM_ABS], m.abs_max);
        st->max[SM_RATIO] = fmax(st->max[SM_RATIO], m.ratio_max);
        st->max[SM_NEG_RATIO] = fmax(st->max[SM_NEG_RATIO], -m.ratio_min);
    }
    return 0;
}

// Forward, loss and backward of the kept groups in sg[lo, hi). iter > 0 uses *old (the log-probs of
// iteration 0, saved there when grpo.num_iterations > 1) as the policy before the update. last: the
// micro-step before the update (trainer_backward).
static int micro_step(Trainer *t, StepGroup *sg, int lo, int hi, int iter, int last, float **old, int64_t dapo_tokens,
                      Flat *f, StepStats *st, Err *e) {
    const Config *cfg = t->cfg;
    ModelBatch *b = &t->batch;
    mbatch_clear(b);
    f->n_seq = f->n_tok = 0;
    for (int i = lo; i < hi; i++) {
        if (!sg[i].kept) continue;
        const TrajGroup *g = sg[i].g;
        const int *comp[CFG_MAX_GENERATIONS];
        for (int s = 0; s < g->G; s++) comp[s] = g->ids + g->offset[s];
        mbatch_add_group(b, g->prompt_ids, g->n_prompt, comp, g->len, g->G, 1, NULL);
        mbatch_add_audio(b, sg[i].pq.features, sg[i].pq.valid_frames);
        flat_add(f, g, sg[i].adv);
    }
    if (f->n_seq == 0) return 0;  // nothing kept here: no gradient, nothing to run
    double t0 = log_elapsed();
    if (trainer_forward(t, e)) return -1;
    if (b->n_tgt != f->n_tok) fatal("grpo micro-step: %d targets for %d completion tokens", b->n_tgt, f->n_tok);
    if (cfg->grpo.num_iterations > 1 && iter == 0) {
        *old = mallocCheck((size_t)f->n_tok * sizeof(float));
        memcpy(*old, t->lp, (size_t)f->n_tok * sizeof(float));
    }
    if (micro_mismatch(t, f, iter > 0 ? *old : t->lp, iter, st, e)) return -1;
    GrpoLossConfig lc = grpo_loss_config_default();
    lc.loss_type = cfg->grpo.loss_type;
    lc.beta = cfg->grpo.beta;
    lc.eps_low = cfg->grpo.epsilon_low;
    lc.eps_high = cfg->grpo.epsilon_high;
    lc.max_completion_length = cfg->rollout.max_new_tokens;
    lc.accum_steps = cfg->train.grad_accum;
    lc.dapo_global_tokens = dapo_tokens;
    lc.n_procs = t->comm->role_size;
    GrpoBatch gb = {.n_seq = f->n_seq,
                    .n_tokens = f->n_tok,
                    .offset = f->offset,
                    .len = f->len,
                    .mask = f->mask,
                    .lp = t->lp,
                    .old_lp = iter > 0 ? *old : NULL,
                    .ref_lp = lc.beta > 0 ? f->ref : NULL,
                    .adv = f->adv,
                    .keep = cfg->grpo.mismatch_mask ? f->keep : NULL,
                    .is_w = cfg->grpo.tis_cap > 0 ? f->is_w : NULL};
    GrpoLossStats ls;
    if (grpo_loss(&lc, &gb, t->dlp, &ls, e)) return -1;
    trainer_backward(t, last);
    st->t_fwd_bwd += log_elapsed() - t0;
    st->sum[ST_LOSS] += ls.loss;
    st->sum[ST_LOSS_TOKENS] += (double)ls.tokens;
    st->sum[ST_KL_SUM] += ls.mean_kl * (double)ls.tokens;
    st->sum[ST_CLIP_SUM] += ls.clip_region_frac * (double)ls.tokens;
    st->sum[ST_FWD_TOKENS] += b->n_tokens;
    return 0;
}

int grpo_train_step(Trainer *t, int64_t step, const TrajGroup *groups, int n, StepStats *st, Err *e) {
    const Config *cfg = t->cfg;
    const int accum = cfg->train.grad_accum, mu = cfg->grpo.num_iterations;
    if (n % accum != 0) return err_set(e, "%d groups do not split into %d micro-steps", n, accum);
    for (int i = 0; i < n; i++)
        if (groups[i].G > CFG_MAX_GENERATIONS)
            return err_set(e, "slot %lld: %d completions (at most %d)", (long long)groups[i].slot, groups[i].G,
                           CFG_MAX_GENERATIONS);
    StepGroup *sg = callocCheck((size_t)n + 1, sizeof *sg);
    float **old = callocCheck((size_t)accum, sizeof *old);
    Flat f = {0};
    int rc = -1;
    for (int i = 0; i < n; i++) sg[i].g = &groups[i];
    if (score_groups(t, step, sg, n, st, e) || prepare_groups(t, sg, n, st, e)) goto out;
    // dapo normalises by the masked tokens of the whole step over all learners.
    double dapo_tokens = 0;
    for (int i = 0; i < n; i++)
        if (sg[i].kept)
            for (int k = 0; k < sg[i].g->n_tokens; k++) dapo_tokens += sg[i].g->mask[k];
    if (cfg->grpo.loss_type == CFG_LOSS_DAPO) comm_role_allreduce_sum_f64(t->comm, &dapo_tokens, 1);
    int per = n / accum;
    for (int it = 0; it < mu; it++) {
        for (int m = 0; m < accum; m++)
            if (micro_step(t, sg, m * per, (m + 1) * per, it, m == accum - 1, &old[m], (int64_t)dapo_tokens, &f, st,
                           e))
                goto out;
        double gn, lr;
        UpdateTimes ut = {0};
        if (trainer_update(t, step * mu + it, &gn, &lr, &ut, e)) goto out;
        if (st->n_updates == 0) st->lr = lr;
        st->n_updates++;
        st->grad_norm_sum += gn;
        st->t_allreduce += ut.allreduce;
        st->t_optim += ut.optim;
    }
    rc = 0;
out:
    for (int i = 0; i < n; i++) {
        free(sg[i].adv);
        if (sg[i].pq.features) prep_question_free(&sg[i].pq);
    }
    for (int m = 0; m < accum; m++) free(old[m]);
    free(old);
    free(sg);
    flat_free(&f);
    return rc;
}
