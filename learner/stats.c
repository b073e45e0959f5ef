// stats.c: step metrics, their reduction over learners and the step line (see stats.h).
#include "stats.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

#include "util/log.h"

void stats_clear(StepStats *s) {
    memset(s, 0, sizeof *s);
    s->max[SM_NEG_RATIO] = -INFINITY;
}

int stats_set_funcs(StepStats *s, char *const *names, int n, Err *e) {
    if (n > STATS_MAX_FUNCS) return err_set(e, "%d reward functions: at most %d are tracked", n, STATS_MAX_FUNCS);
    if (s->n_funcs == 0) {
        for (int i = 0; i < n; i++) {
            if (strlen(names[i]) >= STATS_NAME_CAP) return err_set(e, "reward function name \"%s\" too long", names[i]);
            strcpy(s->func_names[i], names[i]);
        }
        s->n_funcs = n;
        return 0;
    }
    int same = n == s->n_funcs;
    for (int i = 0; same && i < n; i++) same = strcmp(names[i], s->func_names[i]) == 0;
    if (!same) return err_set(e, "a group's reward functions differ from the step's first group's");
    return 0;
}

void stats_reduce(const Comm *c, StepStats *s) {
    comm_role_allreduce_sum_f64(c, s->sum, ST_N);
    MPI_CHECK(MPI_Allreduce(MPI_IN_PLACE, s->max, SM_N, MPI_DOUBLE, MPI_MAX, c->role_comm));
    // The root names the per-function sums; a root that saw only failed groups takes the names from a
    // learner that saw some (every group of a run carries the same functions).
    int have = s->n_funcs > 0 ? c->role_rank : c->role_size, first;
    MPI_CHECK(MPI_Allreduce(&have, &first, 1, MPI_INT, MPI_MIN, c->role_comm));
    if (first < c->role_size) {
        MPI_CHECK(MPI_Bcast(&s->n_funcs, 1, MPI_INT, first, c->role_comm));
        MPI_CHECK(MPI_Bcast(s->func_names, sizeof s->func_names, MPI_CHAR, first, c->role_comm));
    }
}

typedef struct {
    const char *names[64 + STATS_MAX_FUNCS];
    double values[64 + STATS_MAX_FUNCS];
    char func_metric[STATS_MAX_FUNCS][STATS_NAME_CAP + 16];
    int n;
} MetricRow;

static void row_add(MetricRow *r, const char *name, double v) {
    r->names[r->n] = name;
    r->values[r->n++] = v;
}

static double ratio(double a, double b) { return b > 0 ? a / b : NAN; }

// The rollout/learner mismatch and the version lag (NaN where nothing was measured).
static void stats_mismatch_rows(const StepStats *s, MetricRow *r) {
    const double *S = s->sum, tok = S[ST_MM_TOKENS];
    row_add(r, "mismatch.mean", ratio(S[ST_MM_ABS_SUM], tok));
    row_add(r, "mismatch.max", tok > 0 ? s->max[SM_MM_ABS] : NAN);
    row_add(r, "mismatch.k3", ratio(S[ST_MM_K3_SUM], tok));
    row_add(r, "mismatch.ratio_mean", ratio(S[ST_MM_RATIO_SUM], tok));
    row_add(r, "mismatch.ratio_min", tok > 0 ? -s->max[SM_NEG_RATIO] : NAN);
    row_add(r, "mismatch.ratio_max", tok > 0 ? s->max[SM_RATIO] : NAN);
    row_add(r, "mismatch.out_frac", ratio(S[ST_MM_OUT], tok));
    row_add(r, "mismatch.seq_out_frac", ratio(S[ST_MM_SEQ_OUT], S[ST_MM_SEQS]));
    row_add(r, "version_lag.mean", ratio(S[ST_LAG_SUM], S[ST_GROUPS]));
    row_add(r, "version_lag.max", S[ST_GROUPS] > 0 ? s->max[SM_LAG] : NAN);
}

int stats_log(const StepStats *s, const Config *cfg, int n_learners, int n_rollouts, int64_t step, int64_t n_steps,
              Metrics *m, Err *e) {
    const double *S = s->sum;
    int grpo = cfg->train.mode == CFG_MODE_GRPO;
    double updates = s->n_updates > 0 ? s->n_updates : 1;
    double loss = S[ST_LOSS] / n_learners / updates;
    double grad_norm = s->grad_norm_sum / updates;
    double tok_s = ratio(S[ST_FWD_TOKENS], s->t_step);
    MetricRow r = {0};
    row_add(&r, "loss", loss);
    if (grpo) {
        double n = S[ST_SAMPLES];
        double adv_mean = ratio(S[ST_ADV_SUM], n);
        row_add(&r, "reward.total_mean", ratio(S[ST_REWARD_SUM], n));
        row_add(&r, "reward.total_std", ratio(S[ST_GROUP_STD_SUM], S[ST_GROUPS]));
        for (int f = 0; f < s->n_funcs; f++) {
            snprintf(r.func_metric[f], sizeof r.func_metric[f], "reward.%s_mean", s->func_names[f]);
            row_add(&r, r.func_metric[f], ratio(S[ST_FUNC_SUM + f], S[ST_FUNC_CNT + f]));
        }
        row_add(&r, "zero_std_frac", ratio(S[ST_ZERO_STD], S[ST_GROUPS]));
        row_add(&r, "filtered_groups", S[ST_FILTERED]);
        row_add(&r, "adv.mean", adv_mean);
        row_add(&r, "adv.std", n > 0 ? sqrt(fmax(0.0, S[ST_ADV_SQ] / n - adv_mean * adv_mean)) : NAN);
        row_add(&r, "kl", ratio(S[ST_KL_SUM], S[ST_LOSS_TOKENS]));
        row_add(&r, "clip.frac", ratio(S[ST_CLIP_SUM], S[ST_LOSS_TOKENS]));
        row_add(&r, "completion.len_mean", ratio(S[ST_LEN_SUM], n));
        row_add(&r, "completion.len_max", s->max[SM_LEN]);
        row_add(&r, "completion.truncated_frac", ratio(S[ST_TRUNC], n));
        stats_mismatch_rows(s, &r);
    } else {
        row_add(&r, "target.len_mean", ratio(S[ST_LEN_SUM], S[ST_SAMPLES]));
        row_add(&r, "target.len_max", s->max[SM_LEN]);
    }
    row_add(&r, "grad_norm", grad_norm);
    row_add(&r, "lr", s->lr);
    row_add(&r, "tokens_per_s", tok_s);
    row_add(&r, "bad_questions", S[ST_BAD]);
    if (grpo) {
        // Rollout phases: seconds per rollout rank (its groups' sum, averaged over ranks).
        double R = n_rollouts > 0 ? n_rollouts : 1;
        row_add(&r, "time.data", S[ST_T_DATA] / R);
        row_add(&r, "time.prefill", S[ST_T_PREFILL] / R);
        row_add(&r, "time.decode", S[ST_T_DECODE] / R);
        row_add(&r, "time.reward", S[ST_T_REWARD] / R);
        row_add(&r, "time.reference", S[ST_T_REFERENCE] / R);
        row_add(&r, "time.recv", s->t_recv);
        row_add(&r, "time.prep", s->t_prep);
    } else {
        row_add(&r, "time.data", s->t_prep);
    }
    row_add(&r, "time.fwd_bwd", s->t_fwd_bwd);
    row_add(&r, "time.allreduce", s->t_allreduce);
    row_add(&r, "time.optim", s->t_optim);
    if (grpo) row_add(&r, "time.weight_sync", s->t_weight_sync);
    row_add(&r, "time.step", s->t_step);
    if (m && metrics_log(m, step, r.names, r.values, r.n, e)) return -1;

    if ((step + 1) % cfg->log.every == 0 || step + 1 == n_steps) {
        if (grpo)
            log_info(
                "step %lld/%lld loss %.4f reward %.3f std %.3f kl %.4f len %.1f gn %.3f lr %.2e bad %.0f "
                "mm %.2e/%.2e k3 %.2e lag %.0f %.0f tok/s %.2fs",
                (long long)step + 1, (long long)n_steps, loss, ratio(S[ST_REWARD_SUM], S[ST_SAMPLES]),
                ratio(S[ST_GROUP_STD_SUM], S[ST_GROUPS]), ratio(S[ST_KL_SUM], S[ST_LOSS_TOKENS]),
                ratio(S[ST_LEN_SUM], S[ST_SAMPLES]), grad_norm, s->lr, S[ST_BAD],
                ratio(S[ST_MM_ABS_SUM], S[ST_MM_TOKENS]), S[ST_MM_TOKENS] > 0 ? s->max[SM_MM_ABS] : NAN,
                ratio(S[ST_MM_K3_SUM], S[ST_MM_TOKENS]), S[ST_GROUPS] > 0 ? s->max[SM_LAG] : NAN, tok_s,
                s->t_step);
        else
            log_info("step %lld/%lld sft loss %.4f gn %.3f lr %.2e bad %.0f %.0f tok/s %.2fs", (long long)step + 1,
                     (long long)n_steps, loss, grad_norm, s->lr, S[ST_BAD], tok_s, s->t_step);
    }
    progress_update("steps", step + 1, n_steps);
    return 0;
}
