// trainer_ckpt.c: writing and restoring the learner's checkpoints (see trainer_ckpt.h).
#include "trainer_ckpt.h"

#include <dirent.h>
#include <errno.h>
#include <jansson.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "ckpt/ckpt.h"
#include "ckpt/trainer_shards.h"
#include "ckpt/trainer_state.h"
#include "model/checkpoint.h"
#include "util/fileio.h"
#include "util/log.h"
#include "util/procmem.h"

// Shard limit of the saved model: the Hugging Face default (5 GB).
#define TCKPT_SHARD_BYTES ((size_t)5000 * 1000 * 1000)

enum { TCKPT_PATH_CAP = CFG_PATH_CAP + 128 };

static void tckpt_arrays(const TrainerPart *p, TrainerArray arr[3]) {
    arr[0] = (TrainerArray){"master", p->master, p->shard.count};
    arr[1] = (TrainerArray){"adam.m", p->m, p->shard.count};
    arr[2] = (TrainerArray){"adam.v", p->v, p->shard.count};
}

// Collective over the learners, each with its outcome rc (0, or an error in e): 0 when every learner
// succeeded; else the outcome of the lowest failing rank on every learner, its message (prefixed with
// its rank when there are several) in every e, so all report the same failure.
static int tckpt_agree(const Comm *c, int rc, Err *e) {
    int first = rc ? c->role_rank : c->role_size;
    MPI_CHECK(MPI_Allreduce(MPI_IN_PLACE, &first, 1, MPI_INT, MPI_MIN, c->role_comm));
    if (first == c->role_size) return 0;
    MPI_CHECK(MPI_Bcast(&rc, 1, MPI_INT, first, c->role_comm));
    MPI_CHECK(MPI_Bcast(e->msg, (int)sizeof e->msg, MPI_CHAR, first, c->role_comm));
    if (c->role_size > 1) err_prefix(e, "learner rank %d", first);
    return rc;
}

static int64_t tckpt_file_bytes(const char *path) {
    struct stat sb;
    return stat(path, &sb) == 0 ? (int64_t)sb.st_size : 0;
}

// Bytes of the regular files directly in dir (model/ is flat).
static int64_t tckpt_dir_bytes(const char *dir) {
    DIR *d = opendir(dir);
    int64_t sum = 0;
    struct dirent *de;
    char path[TCKPT_PATH_CAP + 300];
    while (d && (de = readdir(d)))
        if (de->d_name[0] != '.') sum += tckpt_file_bytes(path_join(path, sizeof path, dir, de->d_name));
    if (d) closedir(d);
    return sum;
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

// Every learner: its trainer file of checkpoint `id` in the temporary directory tmp; *bytes its size.
static int tckpt_write_part(Trainer *t, const char *tmp, uint64_t id, int64_t *bytes, Err *e) {
    const Config *cfg = t->cfg;
    char path[TCKPT_PATH_CAP + 64];
    TrainerPart part;
    trainer_part_get(t, &part, 1);
    TrainerState st = {.step = t->step,
                       .version = t->step,
                       .ckpt_id = id,
                       .config_json = config_to_json(cfg),
                       .cursor = order_cursor_at(&t->order, t->step * cfg->train.questions_per_step),
                       .optim_kind = "adamw",
                       .optim_step = t->opt.step,
                       .shard = part.shard};
    TrainerArray arr[3];
    tckpt_arrays(&part, arr);
    ckpt_trainer_path(path, sizeof path, tmp, t->comm->role_rank, t->comm->role_size);
    int rc = trainer_state_save(path, &st, arr, 3, e);
    *bytes = rc ? 0 : tckpt_file_bytes(path);
    free(st.config_json);
    trainer_part_release(&part);
    return rc;
}

// StReadBf16 over a bf16 backend's weights: a chunk downloaded as it is.
static void tckpt_read_params(void *ctx, size_t off, size_t n, uint16_t *out) {
    const Model *m = ctx;
    m->ops->download(m->ops, out, ops_at(m->ops, m->params, off), n * sizeof *out);
}

// Root: model/ in the Hugging Face layout (bf16) from the weights the root holds: the CPU learner's fp32
// master copy (rounded), or the GPU learner's bf16 weights (bf16(master) of every shard) as they are,
// downloaded chunk by chunk while the files are written (no host copy of the model).
static int tckpt_write_model(Trainer *t, const char *tmp, Err *e) {
    char path[TCKPT_PATH_CAP + 64];
    ckpt_model_path(path, sizeof path, tmp);
    const char *tok = config_tokenizer_dir(t->cfg);
    if (!t->zero)
        return model_save_dir(path, &t->model.cfg, &t->model.t, t->master, SAVE_BF16, TCKPT_SHARD_BYTES, tok, e);
    return model_save_dir_bf16(path, &t->model.cfg, &t->model.t, tckpt_read_params, &t->model, TCKPT_SHARD_BYTES,
                               tok, e);
}

int tckpt_save(Trainer *t, Err *e) {
    const Config *cfg = t->cfg;
    const Comm *c = t->comm;
    int root = c->role_rank == 0;
    double t0 = log_elapsed();
    char tmp[TCKPT_PATH_CAP], path[TCKPT_PATH_CAP];
    uint64_t id = 0;
    int rc = root ? ckpt_begin(cfg->train.run_dir, t->step, tmp, sizeof tmp, &id, e) : 0;
    if (tckpt_agree(c, rc, e)) return err_prefix(e, "checkpoint of step %lld", (long long)t->step);
    MPI_CHECK(MPI_Bcast(&id, 1, MPI_UINT64_T, 0, c->role_comm));
    ckpt_path(tmp, sizeof tmp, cfg->train.run_dir, t->step, true);
    // Every learner writes its own file (durable when trainer_state_save returns: fsync + rename), the
    // root the model as well; the checkpoint is committed only once all have confirmed.
    int64_t bytes[2] = {0, 0};  // trainer files, model
    const int n_files = cfg->train.save_only_model ? 0 : c->role_size;
    rc = n_files ? tckpt_write_part(t, tmp, id, &bytes[0], e) : 0;
    if (!rc && root) {
        rc = tckpt_write_model(t, tmp, e);
        bytes[1] = tckpt_dir_bytes(ckpt_model_path(path, sizeof path, tmp));
    }
    int written = tckpt_agree(c, rc, e);
    MPI_CHECK(MPI_Reduce(root ? MPI_IN_PLACE : bytes, bytes, 2, MPI_INT64_T, MPI_SUM, 0, c->role_comm));
    rc = written;
    if (!written && root) {
        tckpt_test_pause(t);
        rc = ckpt_commit(cfg->train.run_dir, t->step, n_files, id, e);
        if (!rc && ckpt_prune(cfg->train.run_dir, cfg->train.keep_last, e) < 0) rc = -1;
    }
    if (rc && root) {  // every learner is done with the temporary directory
        Err e2;
        if (ckpt_abort(cfg->train.run_dir, t->step, &e2)) log_warn("%s", e2.msg);
    }
    // A failed write is known everywhere already; the root's commit is told to the others.
    if (written || tckpt_agree(c, rc, e)) return err_prefix(e, "checkpoint of step %lld", (long long)t->step);
    if (root)
        log_info("checkpoint %s (step %lld): %.1f MiB (trainer state %.1f MiB in %d files, model %.1f MiB), "
                 "written in %.2f s; host memory peak so far (VmHWM) %.2f GiB",
                 ckpt_path(path, sizeof path, cfg->train.run_dir, t->step, false), (long long)t->step,
                 (double)(bytes[0] + bytes[1]) / 1048576.0, (double)bytes[0] / 1048576.0, n_files,
                 (double)bytes[1] / 1048576.0, log_elapsed() - t0, procmem_peak_bytes() / 1073741824.0);
    return 0;
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

// Every learner: reads its part of the checkpoint of `step` into t (the optimizer step too; the part
// goes into the optimizer with trainer_part_put). TCKPT_DAMAGED when a trainer file is missing, does not
// read back (truncated, a CRC mismatch) or belongs to another checkpoint; TCKPT_MODEL_ONLY for a
// checkpoint written without trainer state; -1 on any other error.
enum { TCKPT_DAMAGED = -2, TCKPT_MODEL_ONLY = -3 };
static int tckpt_load(Trainer *t, int64_t step, TrainerPart *part, Err *e) {
    const Config *cfg = t->cfg;
    double t0 = log_elapsed();
    char dir[TCKPT_PATH_CAP];
    ckpt_path(dir, sizeof dir, cfg->train.run_dir, step, false);
    TrainerShards sh;
    int opened = trainer_shards_open(&sh, dir, step, (int64_t)t->model.t.numel, e);
    if (opened) return opened == TRAINER_SHARDS_MODEL_ONLY ? TCKPT_MODEL_ONLY : TCKPT_DAMAGED;
    const TrainerState *st = trainer_shards_state(&sh);
    const char *path = trainer_file_path(sh.f[0]);
    int rc = -1;
    if (strcmp(st->optim_kind, "adamw") != 0) {
        err_set(e, "%s: optimizer \"%s\", this learner runs adamw", path, st->optim_kind);
        goto out;
    }
    if (order_cursor_check(&t->order, &st->cursor, e)) {
        err_prefix(e, "%s", path);
        goto out;
    }
    if (order_cursor_slot(&st->cursor) != step * cfg->train.questions_per_step) {
        err_set(e, "%s: data cursor at slot %lld, step %lld x train.questions_per_step %d says %lld", path,
                (long long)order_cursor_slot(&st->cursor), (long long)step, cfg->train.questions_per_step,
                (long long)(step * cfg->train.questions_per_step));
        goto out;
    }
    // Only the parts of the saved files that overlap this learner's part are read.
    TrainerArray arr[3];
    tckpt_arrays(part, arr);
    for (int i = 0; i < trainer_shard_n_segs(&part->shard); i++) {
        TrainerSeg g = trainer_shard_seg(&part->shard, i);
        for (int a = 0; a < 3; a++)
            if (trainer_shards_read(&sh, arr[a].name, g.lo, g.n, arr[a].data + g.at, e)) {
                rc = TCKPT_DAMAGED;
                goto out;
            }
    }
    t->opt.step = st->optim_step;
    if (t->comm->role_rank == 0) {
        char *now = config_to_json(cfg);
        if (tckpt_config_differs(st->config_json, now))
            log_warn("resume: the config differs from the one %s was written with", dir);
        free(now);
        log_info("resumed from %s: step %lld, %lld optimizer updates; trainer state %.1f MiB in %d files, this "
                 "learner's part read in %.2f s",
                 dir, (long long)step, (long long)st->optim_step, (double)trainer_shards_bytes(&sh) / 1048576.0,
                 sh.n_files, log_elapsed() - t0);
    }
    rc = 0;
out:
    trainer_shards_close(&sh);
    return rc;
}

// Collective: the newest checkpoint at or below *start whose trainer files read back on every learner,
// trying older ones (with a warning naming the damage; the root sets the damaged one aside) when they do
// not; *start becomes the step loaded.
static int tckpt_load_newest(Trainer *t, TrainerPart *part, int64_t *start, Err *e) {
    const Comm *c = t->comm;
    const char *run_dir = t->cfg->train.run_dir;
    int root = c->role_rank == 0;
    int64_t *steps = NULL;
    int n = root ? ckpt_list(run_dir, &steps, e) : 0;
    if (tckpt_agree(c, n < 0 ? -1 : 0, e)) return -1;
    err_set(e, "no complete checkpoint of step %lld in %s", (long long)*start, run_dir);
    int rc = -1;
    for (int i = n - 1;; i--) {
        while (root && i >= 0 && steps[i] > *start) i--;
        int64_t step = root && i >= 0 ? steps[i] : -1;
        MPI_CHECK(MPI_Bcast(&step, 1, MPI_INT64_T, 0, c->role_comm));
        if (step < 0) {  // none left: e says why (the last damage seen, or none at all)
            MPI_CHECK(MPI_Bcast(e->msg, (int)sizeof e->msg, MPI_CHAR, 0, c->role_comm));
            break;
        }
        rc = tckpt_agree(c, tckpt_load(t, step, part, e), e);
        if (rc == TCKPT_MODEL_ONLY) {  // nothing to resume from, nothing wrong with it: kept, passed over
            if (root) log_warn("resume: %s; trying an older checkpoint", e->msg);
            err_prefix(e, "resume: no checkpoint with trainer state in %s, the last one tried", run_dir);
            rc = -1;
            continue;
        }
        if (rc != TCKPT_DAMAGED) {
            *start = step;
            break;
        }
        if (root)
            log_warn("resume: checkpoint step %lld is damaged (%s); setting it aside, falling back to an older one",
                     (long long)step, e->msg);
        err_prefix(e, "resume: no usable checkpoint in %s, the last one tried", run_dir);
        Err e2;
        if (tckpt_agree(c, root ? ckpt_set_aside(run_dir, step, &e2) : 0, &e2)) {
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
    TrainerPart part;
    trainer_part_get(t, &part, 0);
    int rc = tckpt_load_newest(t, &part, start, e);
    if (rc == 0) {
        trainer_part_put(t, &part);
        t->step = *start;
    }
    trainer_part_release(&part);
    return rc ? -1 : 0;
}
