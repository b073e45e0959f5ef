// Tests of common/ckpt ckpt: names and paths, the begin/commit protocol with one and several learner
// ranks (commit refuses missing or foreign parts), listing and latest skipping unfinished directories,
// pruning (keeps K, removes stale ones, leaves everything that is not ours, never follows symlinks),
// setting a damaged checkpoint aside, a writer that dies before committing, and the trainer files of a
// checkpoint read as one set (any parameter range across files of contiguous and segmented shards, only
// the CRC blocks that hold it read; a missing file, a corrupt one and one of another checkpoint refused,
// naming it).
#include "test.h"
#include "ckpt/ckpt.h"
#include "ckpt/trainer_shards.h"
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

// Rank `rank` of n_ranks writes its trainer file for `step` of checkpoint `id` (one float of optimizer
// state each).
static int write_trainer(const char *ckpt_dir, int64_t step, int rank, int n_ranks, uint64_t id, Err *e) {
    TrainerState st;
    memset(&st, 0, sizeof st);
    st.step = step;
    st.ckpt_id = id;
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
    uint64_t id = 0;
    int rc = ckpt_begin(run, step, tmp, sizeof tmp, &id, &e);
    if (rc == 0) write_model(tmp);
    for (int r = 0; r < n_ranks && rc == 0; r++) rc = write_trainer(tmp, step, r, n_ranks, id, &e);
    if (rc == 0) rc = ckpt_commit(run, step, n_ranks, id, &e);
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
    uint64_t id;
    CHECK(ckpt_begin(TMP_PATH("ckpt_names"), CKPT_MAX_STEP + 1, tmp, sizeof tmp, &id, &e) == -1);
    CHECK(strstr(e.msg, "100000000") != NULL);
    CHECK(ckpt_begin(TMP_PATH("ckpt_names"), -1, tmp, sizeof tmp, &id, &e) == -1);
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
    uint64_t id = 0, id30;
    CHECK(ckpt_begin(run, 30, tmp, sizeof tmp, &id30, &e) == 0);
    CHECK(id30 != 0);
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
    CHECK(ckpt_begin(run, 20, tmp, sizeof tmp, &id, &e) == -1);
    CHECK(strstr(e.msg, "step-00000020") && strstr(e.msg, "already exists"));
    // Finishing the unfinished one makes it the latest.
    CHECK(write_trainer(ckpt_path(tmp, sizeof tmp, run, 30, true), 30, 0, 1, id30, &e) == 0);
    CHECK(ckpt_commit(run, 30, 1, id30, &e) == 0);
    int n_files;
    uint64_t marker_id;
    CHECKF(ckpt_marker_read(ckpt_path(path, sizeof path, run, 30, false), &n_files, &marker_id, &e) == 0, "%s",
           e.msg);
    CHECK(n_files == 1 && marker_id == id30);
    uint64_t id10;  // a fresh id for every checkpoint
    CHECK(ckpt_marker_read(ckpt_path(path, sizeof path, run, 10, false), &n_files, &id10, &e) == 0);
    CHECK(n_files == 3 && id10 != id30 && id10 != 0);
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
    uint64_t id;
    CHECK(ckpt_commit(run, 3, 1, 1, &e) == -1);
    CHECK(strstr(e.msg, "step-00000003.tmp") && strstr(e.msg, "ckpt_begin"));

    CHECK(ckpt_begin(run, 3, tmp, sizeof tmp, &id, &e) == 0);
    CHECK(write_trainer(tmp, 3, 0, 2, id, &e) == 0);
    CHECK(ckpt_commit(run, 3, 2, id, &e) == -1);  // no model
    CHECKF(strstr(e.msg, "model") && strstr(e.msg, CKPT_MARKER), "%s", e.msg);
    write_model(tmp);
    CHECK(ckpt_commit(run, 3, 2, id, &e) == -1);  // rank 1's shard missing
    CHECKF(strstr(e.msg, "shard-1.bin") && strstr(e.msg, "cannot open"), "%s", e.msg);
    CHECK(write_trainer(tmp, 2, 1, 2, id, &e) == 0);  // a shard of another step
    CHECK(ckpt_commit(run, 3, 2, id, &e) == -1);
    CHECKF(strstr(e.msg, "shard-1.bin") && strstr(e.msg, "holds step 2"), "%s", e.msg);
    CHECK(write_trainer(tmp, 3, 1, 2, id + 1, &e) == 0);  // a shard of another checkpoint
    CHECK(ckpt_commit(run, 3, 2, id, &e) == -1);
    CHECKF(strstr(e.msg, "shard-1.bin") && strstr(e.msg, "checkpoint id"), "%s", e.msg);
    CHECK(write_trainer(tmp, 3, 1, 2, id, &e) == 0);
    CHECK(ckpt_commit(run, 3, 1, id, &e) == -1);  // a layout of 2 ranks committed as 1
    CHECKF(strstr(e.msg, "trainer_state.bin"), "%s", e.msg);
    CHECK(ckpt_commit(run, 3, -1, id, &e) == -1);
    CHECK(strstr(e.msg, "n_ranks = -1") != NULL);
    CHECK(ckpt_commit(run, 3, 0, id, &e) == -1);  // model-only, but trainer files were written
    CHECKF(strstr(e.msg, "trainer") && strstr(e.msg, "cannot remove"), "%s", e.msg);
    CHECK(ckpt_commit(run, 3, 2, id, &e) == 0);
    // A model-only checkpoint (train.save_only_model): no trainer/, the marker counts 0 files, and the
    // trainer-state reader says what it is rather than that files are missing.
    CHECK(ckpt_begin(run, 5, tmp, sizeof tmp, &id, &e) == 0);
    write_model(tmp);
    CHECKF(ckpt_commit(run, 5, 0, id, &e) == 0, "%s", e.msg);
    ckpt_path(path, sizeof path, run, 5, false);
    int n_files = -1;
    uint64_t got_id = 0;
    CHECKF(ckpt_marker_read(path, &n_files, &got_id, &e) == 0, "%s", e.msg);
    CHECK(n_files == 0 && got_id == id);
    CHECK(!path_exists(path_join(tmp, sizeof tmp, path, "trainer")));
    TrainerShards sh;
    CHECK_INT(trainer_shards_open(&sh, path, 5, 2, &e), TRAINER_SHARDS_MODEL_ONLY);
    CHECKF(strstr(e.msg, "holds the model only"), "%s", e.msg);

    // A marker-less final directory from a crash is removed by the next begin of that step; so is the
    // .tmp of a crashed writer. ckpt_abort drops an unfinished checkpoint.
    CHECK(dir_make(ckpt_path(path, sizeof path, run, 4, false), &e) == 0);
    CHECK(dir_make(ckpt_path(path, sizeof path, run, 4, true), &e) == 0);
    write_text(path_join(tmp, sizeof tmp, path, "junk"), "x");
    CHECK(ckpt_begin(run, 4, tmp, sizeof tmp, &id, &e) == 0);
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
    uint64_t id;
    for (int s = 1; s <= 5; s++) CHECK(save_checkpoint(run, 10 * s, 1) == 0);
    path_join(root, sizeof root, run, "checkpoints");
    CHECK(ckpt_begin(run, 60, tmp, sizeof tmp, &id, &e) == 0);                 // crashed writer
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
        uint64_t id;
        if (ckpt_begin(run, 200, tmp, sizeof tmp, &id, &ce)) _exit(2);
        write_model(tmp);
        if (write_trainer(tmp, 200, 0, 2, id, &ce)) _exit(3);
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

// The shards test's layout: 600000 parameters (3 CRC blocks of the largest file) in three files: rank 0
// the contiguous cut [0, 300000); rank 1 two segments, [300000, +100000) and [500000, +100000), with 16
// floats of padding between them (a ZeRO-1 shard's layout); rank 2 [400000, +100000). Value of
// parameter i: i (exact in fp32).
enum { SH_N = 600000 };
static const TrainerSeg sh_segs1[] = {{300000, 100000, 0}, {500000, 100000, 100016}};
static const TrainerSeg sh_segs2[] = {{400000, 100000, 0}};

static int write_shard(const char *tmp, int rank, uint64_t id, Err *e) {
    TrainerState st;
    memset(&st, 0, sizeof st);
    st.step = 7;
    st.ckpt_id = id;
    char config[] = "{}";
    st.config_json = config;
    st.cursor = (OrderCursor){.epoch = 0, .position = 0, .n_questions = 8, .seed = 1};
    snprintf(st.optim_kind, sizeof st.optim_kind, "adamw");
    st.shard = (TrainerShard){.n_params = SH_N, .rank = rank, .n_ranks = 3};
    if (rank == 0) st.shard.count = 300000;
    else if (rank == 1) st.shard.count = 200016, st.shard.n_segs = 2, st.shard.segs = (TrainerSeg *)sh_segs1;
    else st.shard.count = 100000, st.shard.n_segs = 1, st.shard.segs = (TrainerSeg *)sh_segs2;
    float *x = callocCheck((size_t)st.shard.count, sizeof(float));
    for (int i = 0; i < trainer_shard_n_segs(&st.shard); i++) {
        TrainerSeg g = trainer_shard_seg(&st.shard, i);
        for (int64_t k = 0; k < g.n; k++) x[g.at + k] = (float)(g.lo + k);
    }
    TrainerArray a = {"master", x, st.shard.count};
    char path[4200];
    int rc = trainer_state_save(ckpt_trainer_path(path, sizeof path, tmp, rank, 3), &st, &a, 1, e);
    free(x);
    return rc;
}

// Reads [lo, lo + n) of the set in dir; 0 when every value is its parameter's index, else the error.
static const char *read_range(const char *dir, int64_t lo, int64_t n) {
    static Err e;
    e.msg[0] = 0;
    TrainerShards sh;
    if (trainer_shards_open(&sh, dir, 7, SH_N, &e)) return e.msg;
    float *x = mallocCheck((size_t)n * sizeof(float));
    int bad = 0;
    if (trainer_shards_read(&sh, "master", lo, n, x, &e) == 0)
        for (int64_t i = 0; i < n; i++) bad += x[i] != (float)(lo + i);
    if (bad) snprintf(e.msg, sizeof e.msg, "%d wrong values", bad);
    free(x);
    trainer_shards_close(&sh);
    return e.msg;
}

static void test_shards(void) {
    const char *run = fresh_run("ckpt_shards");
    Err e;
    char tmp[4096], dir[4096], path[4200], other[4300];
    uint64_t id;
    CHECK(ckpt_begin(run, 7, tmp, sizeof tmp, &id, &e) == 0);
    write_model(tmp);
    for (int r = 0; r < 3; r++) CHECKF(write_shard(tmp, r, id, &e) == 0, "%s", e.msg);
    CHECKF(ckpt_commit(run, 7, 3, id, &e) == 0, "%s", e.msg);
    ckpt_path(dir, sizeof dir, run, 7, false);
    // Whole, across every file, within one segment, in the padding's neighbourhood.
    CHECK_STR(read_range(dir, 0, SH_N), "");
    CHECK_STR(read_range(dir, 262000, 268000), "");
    CHECK_STR(read_range(dir, 399990, 20), "");
    CHECK_STR(read_range(dir, 599999, 1), "");
    TrainerShards sh;
    CHECK(trainer_shards_open(&sh, dir, 8, SH_N, &e) == -1);  // the caller's step is checked
    CHECKF(strstr(e.msg, "trainer_state.bin") || strstr(e.msg, "shard-0.bin"), "%s", e.msg);
    CHECK(trainer_shards_open(&sh, dir, 7, SH_N + 1, &e) == -1);
    CHECKF(strstr(e.msg, "shard-0.bin") && strstr(e.msg, "600001"), "%s", e.msg);

    // One flipped bit in CRC block 1 of rank 0's file (parameter 270000): only reads that touch
    // that block fail, naming the file, the array and the block.
    ckpt_trainer_path(path, sizeof path, dir, 0, 3);
    size_t n;
    char *buf = file_read_all(path, &n, &e);
    CHECK(buf != NULL);
    buf[n - (size_t)(300000 - 270000) * 4] ^= 0x10;
    CHECK(file_write_atomic(path, buf, n, &e) == 0);
    CHECK_STR(read_range(dir, 0, 1000), "");
    const char *msg = read_range(dir, 260000, 10001);
    CHECKF(strstr(msg, "shard-0.bin") && strstr(msg, "\"master\"") && strstr(msg, "CRC mismatch in block 1"), "%s",
           msg);
    buf[n - (size_t)(300000 - 270000) * 4] ^= 0x10;
    CHECK(file_write_atomic(path, buf, n, &e) == 0);
    free(buf);
    CHECK_STR(read_range(dir, 260000, 10001), "");

    // A file of another checkpoint (a run's shard-1.bin of the same step) in place of rank 1's.
    const char *run2 = fresh_run("ckpt_shards2");
    CHECK(ckpt_begin(run2, 7, tmp, sizeof tmp, &id, &e) == 0);
    write_model(tmp);
    for (int r = 0; r < 3; r++) CHECK(write_shard(tmp, r, id, &e) == 0);
    CHECK(ckpt_commit(run2, 7, 3, id, &e) == 0);
    ckpt_path(tmp, sizeof tmp, run2, 7, false);
    ckpt_trainer_path(path, sizeof path, dir, 1, 3);
    snprintf(other, sizeof other, "%s.orig", path);
    CHECK(rename(path, other) == 0);
    char cmd[9000];
    snprintf(cmd, sizeof cmd, "cp '%s/trainer/shard-1.bin' '%s'", tmp, path);
    CHECK(system(cmd) == 0);
    msg = read_range(dir, 0, 10);
    CHECKF(strstr(msg, "shard-1.bin") && strstr(msg, "another checkpoint or run"), "%s", msg);
    // A missing file.
    CHECK(unlink(path) == 0);
    msg = read_range(dir, 0, 10);
    CHECKF(strstr(msg, "shard-1.bin") && strstr(msg, "cannot open"), "%s", msg);
    CHECK(rename(other, path) == 0);
    CHECK_STR(read_range(dir, 0, SH_N), "");
    rm_rf(run);  // megabytes: not left behind
    rm_rf(run2);
}

int main(void) {
    RUN(test_names);
    RUN(test_set_aside);
    RUN(test_commit_and_list);
    RUN(test_commit_checks);
    RUN(test_prune);
    RUN(test_crash);
    RUN(test_shards);
    return test_summary("test_dir");
}
