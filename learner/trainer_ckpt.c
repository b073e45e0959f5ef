// trainer_ckpt.c: writing and restoring the learner's checkpoints (see trainer_ckpt.h).
#include "trainer_ckpt.h"

#include <errno.h>
#include <jansson.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "ckpt/ckpt.h"
#include "ckpt/trainer_state.h"
#include "model/checkpoint.h"
#include "util/log.h"

// Shard limit of the saved model: the Hugging Face default (5 GB).
#define TCKPT_SHARD_BYTES ((size_t)5000 * 1000 * 1000)

enum { TCKPT_PATH_CAP = CFG_PATH_CAP + 128 };

static void tckpt_arrays(Trainer *t, TrainerArray arr[3]) {
    int64_t n = (int64_t)t->model.t.numel;
    arr[0] = (TrainerArray){"master", t->master, n};
    arr[1] = (TrainerArray){"adam.m", t->opt.m, n};
    arr[2] = (TrainerArray){"adam.v", t->opt.v, n};
}

static TrainerShard tckpt_shard(const Trainer *t) {
    int64_t n = (int64_t)t->model.t.numel;
    return (TrainerShard){.n_params = n, .offset = 0, .count = n, .rank = 0, .n_ranks = 1};
}

// The fault-injection hook (train.test_ckpt_pause_s): a test kills the learner while it waits here,
// every file written and the checkpoint not yet committed.
static void tckpt_test_pause(const Trainer *t) {
    double s = t->cfg->train.test_ckpt_pause_s;
    if (s <= 0) return;
    log_info("checkpoint step %lld: test pause of %g s before the commit (train.test_ckpt_pause_s)",
             (long long)t->step, s);
    struct timespec ts = {(time_t)s, (long)((s - (double)(time_t)s) * 1e9)};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {}
}

// Root: writes the checkpoint from the whole state on the host.
static int tckpt_write(Trainer *t, Err *e) {
    const Config *cfg = t->cfg;
    double t0 = log_elapsed();
    char tmp[TCKPT_PATH_CAP], path[TCKPT_PATH_CAP + 64];
    if (ckpt_begin(cfg->train.run_dir, t->step, tmp, sizeof tmp, e)) return -1;
    TrainerState st = {.step = t->step,
                       .version = t->step,
                       .config_json = config_to_json(cfg),
                       .cursor = order_cursor_at(&t->order, t->step * cfg->train.questions_per_step),
                       .optim_kind = "adamw",
                       .optim_step = t->opt.step,
                       .shard = tckpt_shard(t)};
    TrainerArray arr[3];
    tckpt_arrays(t, arr);
    int rc = -1;
    if (model_save_dir(ckpt_model_path(path, sizeof path, tmp), &t->model.cfg, &t->model.t, t->master, SAVE_BF16,
                       TCKPT_SHARD_BYTES, config_tokenizer_dir(cfg), e))
        goto out;
    if (trainer_state_save(ckpt_trainer_path(path, sizeof path, tmp, 0, 1), &st, arr, 3, e)) goto out;
    tckpt_test_pause(t);
    if (ckpt_commit(cfg->train.run_dir, t->step, 1, e)) goto out;
    if (ckpt_prune(cfg->train.run_dir, cfg->train.keep_last, e) < 0) goto out;
    log_info("checkpoint %s (step %lld, %.1fs)", ckpt_path(path, sizeof path, cfg->train.run_dir, t->step, false),
             (long long)t->step, log_elapsed() - t0);
    rc = 0;
out:
    if (rc) {
        Err e2;
        if (ckpt_abort(cfg->train.run_dir, t->step, &e2)) log_warn("%s", e2.msg);
        err_prefix(e, "checkpoint of step %lld", (long long)t->step);
    }
    free(st.config_json);
    return rc;
}

int tckpt_save(Trainer *t, Err *e) {
    trainer_state_to_host(t, 1);
    int rc = t->comm->role_rank == 0 ? tckpt_write(t, e) : 0;
    trainer_state_release(t);
    return rc;
}

// Whether two effective configs differ in a key that matters to the run. These may change when a run
// is continued: train.resume, train.max_steps, the test hook, and reward.server (launchers pick a free
// port for every job).
static int tckpt_config_differs(const char *saved, const char *now) {
    json_t *a = json_loads(saved, 0, NULL), *b = json_loads(now, 0, NULL);
    int differs = 1;
    if (a && b) {
        static const char *const volatile_keys[][2] = {
            {"train", "resume"}, {"train", "max_steps"}, {"train", "test_ckpt_pause_s"}, {"reward", "server"}};
        for (size_t i = 0; i < sizeof volatile_keys / sizeof volatile_keys[0]; i++) {
            json_t *sa = json_object_get(a, volatile_keys[i][0]), *sb = json_object_get(b, volatile_keys[i][0]);
            if (sa) json_object_del(sa, volatile_keys[i][1]);
            if (sb) json_object_del(sb, volatile_keys[i][1]);
        }
        differs = !json_equal(a, b);
    }
    json_decref(a);
    json_decref(b);
    return differs;
}

// Root: reads the checkpoint of `start` steps into t. Returns TCKPT_DAMAGED when its state file cannot
// be read back (truncated, a CRC mismatch, ...), -1 on any other error (a checkpoint of another run).
enum { TCKPT_DAMAGED = -2 };
static int tckpt_load(Trainer *t, int64_t start, Err *e) {
    const Config *cfg = t->cfg;
    char dir[TCKPT_PATH_CAP], path[TCKPT_PATH_CAP + 64];
    ckpt_path(dir, sizeof dir, cfg->train.run_dir, start, false);
    ckpt_trainer_path(path, sizeof path, dir, 0, 1);
    TrainerShard expect = tckpt_shard(t);
    TrainerArray arr[3];
    tckpt_arrays(t, arr);
    TrainerState st;
    if (trainer_state_load(path, &expect, &st, arr, 3, e)) return TCKPT_DAMAGED;
    int rc = -1;
    if (st.step != start) {
        err_set(e, "%s: holds step %lld, its directory says %lld", path, (long long)st.step, (long long)start);
        goto out;
    }
    if (strcmp(st.optim_kind, "adamw") != 0) {
        err_set(e, "%s: optimizer \"%s\", this learner runs adamw", path, st.optim_kind);
        goto out;
    }
    if (order_cursor_check(&t->order, &st.cursor, e)) {
        err_prefix(e, "%s", path);
        goto out;
    }
    if (order_cursor_slot(&st.cursor) != start * cfg->train.questions_per_step) {
        err_set(e, "%s: data cursor at slot %lld, step %lld x train.questions_per_step %d says %lld", path,
                (long long)order_cursor_slot(&st.cursor), (long long)start, cfg->train.questions_per_step,
                (long long)(start * cfg->train.questions_per_step));
        goto out;
    }
    char *now = config_to_json(cfg);
    if (tckpt_config_differs(st.config_json, now))
        log_warn("resume: the config differs from the one %s was written with", dir);
    free(now);
    t->opt.step = st.optim_step;
    log_info("resumed from %s: step %lld, %lld optimizer updates", dir, (long long)start, (long long)st.optim_step);
    rc = 0;
out:
    trainer_state_free(&st);
    return rc;
}

static void tckpt_bcast_f32(const Comm *c, float *x, size_t n) {
    const size_t chunk = (size_t)1 << 30;
    for (size_t off = 0; off < n; off += chunk) {
        size_t k = n - off < chunk ? n - off : chunk;
        MPI_CHECK(MPI_Bcast(x + off, (int)k, MPI_FLOAT, 0, c->role_comm));
    }
}

// Root: loads the newest checkpoint at or below *start whose state file reads back, trying older
// ones (with a warning naming the damage) when it does not; *start becomes the step loaded.
static int tckpt_load_newest(Trainer *t, int64_t *start, Err *e) {
    const char *run_dir = t->cfg->train.run_dir;
    int64_t *steps;
    int n = ckpt_list(run_dir, &steps, e);
    if (n < 0) return -1;
    int rc = -1;
    err_set(e, "no complete checkpoint of step %lld in %s", (long long)*start, run_dir);
    for (int i = n - 1; i >= 0; i--) {
        if (steps[i] > *start) continue;
        rc = tckpt_load(t, steps[i], e);
        if (rc != TCKPT_DAMAGED) {
            *start = steps[i];
            break;
        }
        log_warn("resume: checkpoint step %lld is damaged (%s); setting it aside, falling back to an older one",
                 (long long)steps[i], e->msg);
        err_prefix(e, "resume: no usable checkpoint in %s, the last one tried", run_dir);
        Err e2;
        if (ckpt_set_aside(run_dir, steps[i], &e2)) {
            *e = e2;
            break;
        }
        rc = -1;
    }
    free(steps);
    return rc;
}

int tckpt_restore(Trainer *t, int64_t *start, Err *e) {
    if (*start == 0) return 0;
    const Comm *c = t->comm;
    trainer_state_to_host(t, 0);
    int ok = c->role_rank != 0 || tckpt_load_newest(t, start, e) == 0;
    MPI_CHECK(MPI_Bcast(&ok, 1, MPI_INT, 0, c->role_comm));
    MPI_CHECK(MPI_Bcast(start, 1, MPI_INT64_T, 0, c->role_comm));
    if (ok) {
        size_t n = t->model.t.numel;
        tckpt_bcast_f32(c, t->master, n);
        tckpt_bcast_f32(c, t->opt.m, n);
        tckpt_bcast_f32(c, t->opt.v, n);
        MPI_CHECK(MPI_Bcast(&t->opt.step, 1, MPI_INT64_T, 0, c->role_comm));
        trainer_state_from_host(t);
        t->step = *start;
    }
    trainer_state_release(t);
    if (ok) return 0;
    return c->role_rank == 0 ? -1
                             : err_set(e, "the learner root could not load checkpoint step %lld", (long long)*start);
}
