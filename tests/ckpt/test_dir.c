// Tests of common/ckpt ckpt: names and paths, the begin/commit protocol with one and several learner
// ranks (commit refuses missing or foreign parts), listing and latest skipping unfinished directories,
// pruning (keeps K, removes stale ones, leaves everything that is not ours, never follows symlinks),
// setting a damaged checkpoint aside, and a writer that dies before committing.
#include "test.h"
#include "ckpt/ckpt.h"
#include "ckpt/trainer_state.h"
#include "util/fileio.h"

#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

static void rm_rf(const char *path) {
    char cmd[4200];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", path);
    if (system(cmd) != 0) fatal("%s failed", cmd);
}

// A fresh, empty run directory under AQA_TMP.
static const char *fresh_run(const char *name) {
    const char *run = TMP_PATH(name);
    rm_rf(run);
    Err e;
    if (dir_make(run, &e)) fatal("%s", e.msg);
    return run;
}

static void write_text(const char *path, const char *text) {
    Err e;
    if (file_write_atomic(path, text, strlen(text), &e)) fatal("%s", e.msg);
}

// Stands in for model_save_dir: a model/ directory finished with its marker.
static void write_model(const char *ckpt_dir) {
    char model[4096], path[4200];
    ckpt_model_path(model, sizeof model, ckpt_dir);
    Err e;
    if (dir_make(model, &e)) fatal("%s", e.msg);
    write_text(path_join(path, sizeof path, model, "config.json"), "{}\n");
    write_text(path_join(path, sizeof path, model, CKPT_MARKER), "");
}

// Rank `rank` of n_ranks writes its trainer file for `step` (one float of optimizer state each).
static int write_trainer(const char *ckpt_dir, int64_t step, int rank, int n_ranks, Err *e) {
    TrainerState st;
    memset(&st, 0, sizeof st);
    st.step = step;
    char config[] = "{}";
    st.config_json = config;
    st.cursor = (OrderCursor){.epoch = 0, .position = 0, .n_questions = 8, .seed = 1};
    snprintf(st.optim_kind, sizeof st.optim_kind, "adamw");
    st.shard =
        (TrainerShard){.n_params = n_ranks, .offset = rank, .count = 1, .rank = rank, .n_ranks = n_ranks};
    float m = (float)step;
    TrainerArray a = {"adam.m", &m, 1};
    char path[4096];
    return trainer_state_save(ckpt_trainer_path(path, sizeof path, ckpt_dir, rank, n_ranks), &st, &a, 1, e);
}

static int save_checkpoint(const char *run, int64_t step, int n_ranks) {
    Err e;
    char tmp[4096];
    int rc = ckpt_begin(run, step, tmp, sizeof tmp, &e);
    if (rc == 0) write_model(tmp);
    for (int r = 0; r < n_ranks && rc == 0; r++) rc = write_trainer(tmp, step, r, n_ranks, &e);
    if (rc == 0) rc = ckpt_commit(run, step, n_ranks, &e);
    CHECKF(rc == 0, "%s", e.msg);
    return rc;
}

static void test_names(void) {
    char name[CKPT_NAME_CAP], path[4096];
    CHECK_STR(ckpt_dir_name(name, 12, false), "step-00000012");
    CHECK_STR(ckpt_dir_name(name, CKPT_MAX_STEP, true), "step-99999999.tmp");
    CHECK_STR(ckpt_path(path, sizeof path, "runs/a", 7, false), "runs/a/checkpoints/step-00000007");
    CHECK_STR(ckpt_path(path, sizeof path, "runs/a", 7, true), "runs/a/checkpoints/step-00000007.tmp");
    CHECK_STR(ckpt_model_path(path, sizeof path, "c"), "c/model");
    CHECK_STR(ckpt_trainer_path(path, sizeof path, "c", 0, 1), "c/trainer/trainer_state.bin");
    CHECK_STR(ckpt_trainer_path(path, sizeof path, "c", 3, 4), "c/trainer/shard-3.bin");
    Err e;
    char tmp[4096];
    CHECK(ckpt_begin(TMP_PATH("ckpt_names"), CKPT_MAX_STEP + 1, tmp, sizeof tmp, &e) == -1);
    CHECK(strstr(e.msg, "100000000") != NULL);
    CHECK(ckpt_begin(TMP_PATH("ckpt_names"), -1, tmp, sizeof tmp, &e) == -1);
}

static void test_commit_and_list(void) {
    const char *run = fresh_run("ckpt_list");
    Err e;
    int64_t *steps, step;
    char path[4096], latest[4096];
    // No checkpoints/ directory yet.
    CHECK_INT(ckpt_list(run, &steps, &e), 0);
    CHECK(steps == NULL);
    CHECK_INT(ckpt_latest(run, latest, sizeof latest, &step, &e), 0);

    CHECK(save_checkpoint(run, 20, 1) == 0);
    CHECK(save_checkpoint(run, 5, 1) == 0);
    CHECK(save_checkpoint(run, 10, 3) == 0);
    ckpt_path(path, sizeof path, run, 10, false);
    CHECK(path_exists(path) && !path_exists(ckpt_path(latest, sizeof latest, run, 10, true)));
    char sub[4200];
    CHECK(path_exists(path_join(sub, sizeof sub, path, "trainer/shard-2.bin")));
    CHECK(path_exists(path_join(sub, sizeof sub, path, CKPT_MARKER)));

    // Things that are not complete checkpoints: an unfinished one, one without a marker (crash between
    // rename and marker), a file with our name, names that only look similar, a symlink to a checkpoint.
    char tmp[4096];
    CHECK(ckpt_begin(run, 30, tmp, sizeof tmp, &e) == 0);
    write_model(tmp);
    CHECK(dir_make(ckpt_path(path, sizeof path, run, 25, false), &e) == 0);
    write_model(path);
    char root[4096];
    path_join(root, sizeof root, run, "checkpoints");
    write_text(path_join(path, sizeof path, root, "step-00000040"), "not a directory");
    CHECK(dir_make(path_join(path, sizeof path, root, "step-123"), &e) == 0);
    CHECK(dir_make(path_join(path, sizeof path, root, "step-000000500"), &e) == 0);
    CHECK(dir_make(path_join(path, sizeof path, root, "notes"), &e) == 0);
    write_text(path_join(path, sizeof path, root, "step-123/" CKPT_MARKER), "");
    CHECK(symlink("step-00000020", path_join(path, sizeof path, root, "step-00000050")) == 0);

    int n = ckpt_list(run, &steps, &e);
    CHECK_INT(n, 3);
    if (n == 3) CHECK(steps[0] == 5 && steps[1] == 10 && steps[2] == 20);
    free(steps);
    CHECK_INT(ckpt_latest(run, latest, sizeof latest, &step, &e), 1);
    CHECK_INT(step, 20);
    CHECK_STR(latest, ckpt_path(path, sizeof path, run, 20, false));

    // A complete checkpoint is never overwritten.
    CHECK(ckpt_begin(run, 20, tmp, sizeof tmp, &e) == -1);
    CHECK(strstr(e.msg, "step-00000020") && strstr(e.msg, "already exists"));
    // Finishing the unfinished one makes it the latest.
    CHECK(write_trainer(ckpt_path(tmp, sizeof tmp, run, 30, true), 30, 0, 1, &e) == 0);
    CHECK(ckpt_commit(run, 30, 1, &e) == 0);
    CHECK_INT(ckpt_latest(run, latest, sizeof latest, &step, &e), 1);
    CHECK_INT(step, 30);
    // A trainer file of a resumed checkpoint loads with the layout this run expects.
    TrainerState st;
    float m = 0;
    TrainerArray a = {"adam.m", &m, 1};
    TrainerShard want = {.n_params = 3, .offset = 2, .count = 1, .rank = 2, .n_ranks = 3};
    ckpt_path(path, sizeof path, run, 10, false);
    CHECKF(trainer_state_load(ckpt_trainer_path(sub, sizeof sub, path, 2, 3), &want, &st, &a, 1, &e) == 0,
           "%s", e.msg);
    CHECK(m == 10.0f && st.step == 10);
    trainer_state_free(&st);
}

// ckpt_commit refuses a checkpoint with a part missing or belonging to another step or layout.
static void test_commit_checks(void) {
    const char *run = fresh_run("ckpt_commit");
    Err e;
    char tmp[4096], path[4200];
    CHECK(ckpt_commit(run, 3, 1, &e) == -1);
    CHECK(strstr(e.msg, "step-00000003.tmp") && strstr(e.msg, "ckpt_begin"));

    CHECK(ckpt_begin(run, 3, tmp, sizeof tmp, &e) == 0);
    CHECK(write_trainer(tmp, 3, 0, 2, &e) == 0);
    CHECK(ckpt_commit(run, 3, 2, &e) == -1);  // no model
    CHECKF(strstr(e.msg, "model") && strstr(e.msg, CKPT_MARKER), "%s", e.msg);
    write_model(tmp);
    CHECK(ckpt_commit(run, 3, 2, &e) == -1);  // rank 1's shard missing
    CHECKF(strstr(e.msg, "shard-1.bin") && strstr(e.msg, "cannot open"), "%s", e.msg);
    CHECK(write_trainer(tmp, 2, 1, 2, &e) == 0);  // a shard of another step
    CHECK(ckpt_commit(run, 3, 2, &e) == -1);
    CHECKF(strstr(e.msg, "shard-1.bin") && strstr(e.msg, "holds step 2"), "%s", e.msg);
    CHECK(write_trainer(tmp, 3, 1, 2, &e) == 0);
    CHECK(ckpt_commit(run, 3, 1, &e) == -1);  // a layout of 2 ranks committed as 1
    CHECKF(strstr(e.msg, "trainer_state.bin"), "%s", e.msg);
    CHECK(ckpt_commit(run, 3, 0, &e) == -1);
    CHECK(strstr(e.msg, "n_ranks = 0") != NULL);
    CHECK(ckpt_commit(run, 3, 2, &e) == 0);

    // A marker-less final directory from a crash is removed by the next begin of that step; so is the
    // .tmp of a crashed writer. ckpt_abort drops an unfinished checkpoint.
    CHECK(dir_make(ckpt_path(path, sizeof path, run, 4, false), &e) == 0);
    CHECK(dir_make(ckpt_path(path, sizeof path, run, 4, true), &e) == 0);
    write_text(path_join(tmp, sizeof tmp, path, "junk"), "x");
    CHECK(ckpt_begin(run, 4, tmp, sizeof tmp, &e) == 0);
    CHECK(!path_exists(ckpt_path(path, sizeof path, run, 4, false)));
    CHECK(!path_exists(path_join(path, sizeof path, tmp, "junk")));
    CHECK(path_exists(path_join(path, sizeof path, tmp, "trainer")));
    CHECK(ckpt_abort(run, 4, &e) == 0);
    CHECK(!path_exists(tmp));
    CHECK(ckpt_abort(run, 4, &e) == 0);  // nothing to abort is fine
}

static int count_entries(const char *dir) {
    char cmd[4200];
    snprintf(cmd, sizeof cmd, "ls -A '%s' | wc -l", dir);
    FILE *p = popen(cmd, "r");
    int n = -1;
    if (!p || fscanf(p, "%d", &n) != 1) n = -1;
    if (p) pclose(p);
    return n;
}

static void test_prune(void) {
    const char *run = fresh_run("ckpt_prune");
    Err e;
    char path[4096], root[4096], tmp[4096], outside[4096], link[4200];
    for (int s = 1; s <= 5; s++) CHECK(save_checkpoint(run, 10 * s, 1) == 0);
    path_join(root, sizeof root, run, "checkpoints");
    CHECK(ckpt_begin(run, 60, tmp, sizeof tmp, &e) == 0);                       // crashed writer
    CHECK(dir_make(ckpt_path(path, sizeof path, run, 55, false), &e) == 0);     // no marker
    CHECK(dir_make(path_join(path, sizeof path, root, "keep-me"), &e) == 0);    // not ours
    write_text(path_join(path, sizeof path, root, "step-00000001"), "a file");  // not a directory
    // Data outside the run, reachable through symlinks: one named like a stale checkpoint, one inside
    // a checkpoint that will be pruned. Neither target may be touched.
    const char *out_dir = fresh_run("ckpt_prune_outside");
    write_text(path_join(outside, sizeof outside, out_dir, "precious"), "data");
    CHECK(symlink(out_dir, path_join(link, sizeof link, root, "step-00000002.tmp")) == 0);
    ckpt_path(path, sizeof path, run, 10, false);
    CHECK(symlink(out_dir, path_join(link, sizeof link, path, "model/outside")) == 0);

    CHECK_INT(ckpt_prune(run, 0, &e), 2);  // keep all complete ones; only the two stale dirs go
    int64_t *steps;
    CHECK_INT(ckpt_list(run, &steps, &e), 5);
    free(steps);
    CHECK(!path_exists(tmp) && !path_exists(ckpt_path(path, sizeof path, run, 55, false)));

    CHECK_INT(ckpt_prune(run, 2, &e), 3);
    int n = ckpt_list(run, &steps, &e);
    CHECK_INT(n, 2);
    if (n == 2) CHECK(steps[0] == 40 && steps[1] == 50);
    free(steps);
    CHECK(path_exists(outside));
    CHECK(path_exists(path_join(path, sizeof path, root, "keep-me")));
    CHECK(path_exists(path_join(path, sizeof path, root, "step-00000001")));
    struct stat st;
    CHECK(lstat(path_join(path, sizeof path, root, "step-00000002.tmp"), &st) == 0 && S_ISLNK(st.st_mode));
    // checkpoints/ now holds the two kept, keep-me, the file and the symlink.
    CHECK_INT(count_entries(root), 5);
    CHECK_INT(ckpt_prune(run, 2, &e), 0);
    CHECK_INT(ckpt_prune(run, -1, &e), -1);
    CHECK(strstr(e.msg, "keep_last = -1") != NULL);
    // A run without checkpoints prunes nothing.
    CHECK_INT(ckpt_prune(fresh_run("ckpt_prune_empty"), 3, &e), 0);
}

// A writer killed between begin and commit leaves no complete checkpoint; latest still returns the
// previous one, and the next attempt at that step succeeds.
static void test_crash(void) {
    const char *run = fresh_run("ckpt_crash");
    Err e;
    CHECK(save_checkpoint(run, 100, 2) == 0);
    fflush(NULL);
    pid_t pid = fork();
    if (pid == 0) {
        char tmp[4096];
        Err ce;
        if (ckpt_begin(run, 200, tmp, sizeof tmp, &ce)) _exit(2);
        write_model(tmp);
        if (write_trainer(tmp, 200, 0, 2, &ce)) _exit(3);
        _exit(0);  // dies before rank 1 writes and before the commit
    }
    int status;
    CHECK(waitpid(pid, &status, 0) == pid && WIFEXITED(status) && WEXITSTATUS(status) == 0);
    char latest[4096], path[4096];
    int64_t step, *steps;
    CHECK_INT(ckpt_latest(run, latest, sizeof latest, &step, &e), 1);
    CHECK_INT(step, 100);
    CHECK_STR(latest, ckpt_path(path, sizeof path, run, 100, false));
    CHECK_INT(ckpt_list(run, &steps, &e), 1);
    free(steps);
    CHECK(path_exists(ckpt_path(path, sizeof path, run, 200, true)));
    CHECK(!path_exists(ckpt_path(path, sizeof path, run, 200, false)));
    // The resumed run reaches step 200 again and saves it over the crashed attempt.
    CHECK(save_checkpoint(run, 200, 2) == 0);
    CHECK_INT(ckpt_latest(run, latest, sizeof latest, &step, &e), 1);
    CHECK_INT(step, 200);
}

// A damaged checkpoint set aside: no longer listed, never pruned, its step can be written again; a
// second one of the same step is refused (the first is kept for inspection).
static void test_set_aside(void) {
    const char *run = fresh_run("ckpt_aside");
    Err e;
    char latest[4096], path[4096], aside[4200];
    int64_t step;
    CHECK(save_checkpoint(run, 1, 1) == 0);
    CHECK(save_checkpoint(run, 2, 1) == 0);
    CHECKF(ckpt_set_aside(run, 2, &e) == 0, "%s", e.msg);
    snprintf(aside, sizeof aside, "%s.damaged", ckpt_path(path, sizeof path, run, 2, false));
    CHECK(path_exists(aside));
    CHECK_INT(ckpt_latest(run, latest, sizeof latest, &step, &e), 1);
    CHECK_INT(step, 1);
    CHECK_INT(ckpt_prune(run, 1, &e), 0);
    CHECK(path_exists(aside));
    CHECK(save_checkpoint(run, 2, 1) == 0);
    CHECK(ckpt_set_aside(run, 2, &e) == -1);
    CHECKF(strstr(e.msg, ".damaged: exists") != NULL, "%s", e.msg);
    CHECK_INT(ckpt_latest(run, latest, sizeof latest, &step, &e), 1);
    CHECK_INT(step, 2);
    CHECK(ckpt_set_aside(run, 3, &e) == -1);  // no such checkpoint
    CHECKF(strstr(e.msg, "step-00000003: cannot rename") != NULL, "%s", e.msg);
}

int main(void) {
    RUN(test_names);
    RUN(test_set_aside);
    RUN(test_commit_and_list);
    RUN(test_commit_checks);
    RUN(test_prune);
    RUN(test_crash);
    return test_summary("test_dir");
}
