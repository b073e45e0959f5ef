// schedule.c: see schedule.h.
#include "pipeline/schedule.h"

#include "ckpt/ckpt.h"
#include "util/log.h"

int schedule_total_steps(const Config *cfg, int64_t n_questions, int64_t *n_steps, Err *e) {
    const int64_t B = cfg->train.questions_per_step;
    // epochs * n fits easily: both are below 2^31.
    int64_t by_epochs = (int64_t)cfg->train.epochs * n_questions / B;
    if (by_epochs < 1)
        return err_set(e, "%lld questions x train.epochs %d cannot fill one step of train.questions_per_step %lld",
                       (long long)n_questions, cfg->train.epochs, (long long)B);
    *n_steps = by_epochs < cfg->train.max_steps ? by_epochs : cfg->train.max_steps;
    return 0;
}

int schedule_start_step(const Config *cfg, int64_t *start, Err *e) {
    *start = 0;
    if (!cfg->train.resume) return 0;
    char path[CFG_PATH_CAP + 64];
    int found = ckpt_latest(cfg->train.run_dir, path, sizeof path, start, e);
    if (found < 0) return err_prefix(e, "resume from %s", cfg->train.run_dir);
    if (!found) log_info("resume: no complete checkpoint in %s, starting at step 0", cfg->train.run_dir);
    return 0;
}

VersionSchedule schedule_versions(const Config *cfg, int64_t start, int64_t n_steps) {
    return (VersionSchedule){.start = start,
                             .n_steps = n_steps,
                             .staleness = cfg->train.mode == CFG_MODE_GRPO ? cfg->grpo.max_staleness : 0,
                             .save_every = cfg->train.save_every};
}

int64_t schedule_version(const VersionSchedule *s, int64_t step) {
    int64_t v = step - s->staleness;
    int64_t ckpt = s->save_every > 0 ? step - step % s->save_every : 0;
    if (v < ckpt) v = ckpt;
    return v < s->start ? s->start : v;
}

int64_t schedule_first_step(const VersionSchedule *s, int64_t version) {
    // versions never decrease with the step and version(j) >= j - staleness: the answer is within
    // staleness steps of `version`.
    for (int64_t j = version < s->start ? s->start : version; j < s->n_steps; j++)
        if (schedule_version(s, j) >= version) return j;
    return s->n_steps;
}
