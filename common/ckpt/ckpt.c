#include "ckpt/ckpt.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <jansson.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include "ckpt/trainer_state.h"
#include "util/fileio.h"
#include "util/log.h"

enum { CKPT_PATH_CAP = 4096 };

char *ckpt_dir_name(char *out, int64_t step, bool tmp) {
    if (step < 0 || step > CKPT_MAX_STEP)
        fatal("checkpoint step %" PRId64 " outside [0, %d]", step, CKPT_MAX_STEP);
    snprintf(out, CKPT_NAME_CAP, "step-%08" PRId64 "%s", step, tmp ? ".tmp" : "");
    return out;
}

// "<run_dir>/checkpoints"
static char *ckpt_root(char *out, size_t cap, const char *run_dir) {
    return path_join(out, cap, run_dir, "checkpoints");
}

char *ckpt_path(char *out, size_t cap, const char *run_dir, int64_t step, bool tmp) {
    char root[CKPT_PATH_CAP], name[CKPT_NAME_CAP];
    return path_join(out, cap, ckpt_root(root, sizeof root, run_dir), ckpt_dir_name(name, step, tmp));
}

char *ckpt_model_path(char *out, size_t cap, const char *ckpt_dir) {
    return path_join(out, cap, ckpt_dir, "model");
}

char *ckpt_trainer_path(char *out, size_t cap, const char *ckpt_dir, int rank, int n_ranks) {
    char name[64];
    if (n_ranks == 1)
        snprintf(name, sizeof name, "trainer/trainer_state.bin");
    else
        snprintf(name, sizeof name, "trainer/shard-%d.bin", rank);
    return path_join(out, cap, ckpt_dir, name);
}

// Recognises our names: "step-" + exactly 8 digits, optionally ".tmp". Returns 1 on a match.
static int ckpt_parse_name(const char *name, int64_t *step, bool *tmp) {
    if (strncmp(name, "step-", 5) != 0) return 0;
    int64_t v = 0;
    for (int i = 5; i < 13; i++) {
        if (name[i] < '0' || name[i] > '9') return 0;
        v = v * 10 + (name[i] - '0');
    }
    if (name[13] == 0)
        *tmp = false;
    else if (strcmp(name + 13, ".tmp") == 0)
        *tmp = true;
    else
        return 0;
    *step = v;
    return 1;
}

static int ckpt_fsync_dir(const char *path, Err *e) {
    int fd = open(path, O_RDONLY | O_DIRECTORY);
    if (fd < 0) return err_set(e, "%s: cannot open directory: %s", path, strerror(errno));
    int rc = fsync(fd);
    int saved = errno;
    close(fd);
    if (rc != 0) return err_set(e, "%s: fsync: %s", path, strerror(saved));
    return 0;
}

static int ckpt_is_dir(const char *path) {
    struct stat st;
    return lstat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

// A checkpoint directory is complete when it is a real directory (not a symlink) holding the marker.
static int ckpt_is_complete(const char *dir) {
    char marker[CKPT_PATH_CAP];
    struct stat st;
    return ckpt_is_dir(dir) && lstat(path_join(marker, sizeof marker, dir, CKPT_MARKER), &st) == 0 &&
           S_ISREG(st.st_mode);
}

// ---------------------------------------------------------------------------------------------------
// Removal: everything below an open directory, without following symlinks or leaving its file system.

static int ckpt_rm_contents(int dfd, const char *path, dev_t dev, Err *e) {
    DIR *d = fdopendir(dfd);
    if (!d) {
        close(dfd);
        return err_set(e, "%s: cannot read directory: %s", path, strerror(errno));
    }
    int rc = 0;
    struct dirent *de;
    while (!rc && (de = readdir(d))) {
        if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0) continue;
        char child[CKPT_PATH_CAP];
        path_join(child, sizeof child, path, de->d_name);
        struct stat st;
        if (fstatat(dirfd(d), de->d_name, &st, AT_SYMLINK_NOFOLLOW) != 0) {
            rc = err_set(e, "%s: stat: %s", child, strerror(errno));
        } else if (S_ISDIR(st.st_mode)) {
            int sub =
                st.st_dev != dev ? -1 : openat(dirfd(d), de->d_name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW);
            if (st.st_dev != dev)
                rc = err_set(e, "%s: a mount point inside a checkpoint; not removing it", child);
            else if (sub < 0)
                rc = err_set(e, "%s: cannot open directory: %s", child, strerror(errno));
            else if (ckpt_rm_contents(sub, child, dev, e))
                rc = -1;
            else if (unlinkat(dirfd(d), de->d_name, AT_REMOVEDIR) != 0)
                rc = err_set(e, "%s: cannot remove: %s", child, strerror(errno));
        } else if (unlinkat(dirfd(d), de->d_name, 0) != 0) {
            rc = err_set(e, "%s: cannot remove: %s", child, strerror(errno));
        }
    }
    closedir(d);
    return rc;
}

// Removes <root>/<name>, where name must be one of our checkpoint names and a real directory.
static int ckpt_remove(const char *root, const char *name, Err *e) {
    int64_t step;
    bool tmp;
    char path[CKPT_PATH_CAP];
    path_join(path, sizeof path, root, name);
    if (!ckpt_parse_name(name, &step, &tmp))
        return err_set(e, "%s: not a checkpoint name; refusing to remove", path);
    int fd = open(path, O_RDONLY | O_DIRECTORY | O_NOFOLLOW);
    if (fd < 0) return err_set(e, "%s: not a directory (%s); refusing to remove", path, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) != 0) fatal("%s: fstat: %s", path, strerror(errno));
    // The marker goes first: a removal cut short leaves an incomplete directory, never a damaged one
    // that still looks complete.
    if (unlinkat(fd, CKPT_MARKER, 0) != 0 && errno != ENOENT) {
        int saved = errno;
        close(fd);
        return err_set(e, "%s/%s: cannot remove: %s", path, CKPT_MARKER, strerror(saved));
    }
    if (ckpt_rm_contents(fd, path, st.st_dev, e)) return -1;
    if (rmdir(path) != 0) return err_set(e, "%s: cannot remove: %s", path, strerror(errno));
    return 0;
}

// ---------------------------------------------------------------------------------------------------
// Writing

// A random id, never 0 (0 stands for "none" in files written before ids existed).
static uint64_t ckpt_new_id(void) {
    uint64_t id = 0;
    while (id == 0)
        if (getrandom(&id, sizeof id, 0) != (ssize_t)sizeof id) fatal("getrandom: %s", strerror(errno));
    return id;
}

int ckpt_begin(const char *run_dir, int64_t step, char *tmp_dir, size_t cap, uint64_t *id, Err *e) {
    if (step < 0 || step > CKPT_MAX_STEP)
        return err_set(e, "checkpoint step %" PRId64 ": outside [0, %d]", step, CKPT_MAX_STEP);
    char root[CKPT_PATH_CAP], final[CKPT_PATH_CAP], name[CKPT_NAME_CAP], trainer[CKPT_PATH_CAP];
    ckpt_root(root, sizeof root, run_dir);
    if (dir_make(root, e)) return -1;
    ckpt_path(final, sizeof final, run_dir, step, false);
    if (ckpt_is_complete(final))
        return err_set(e, "%s: checkpoint already exists; not overwriting it", final);
    // Left by a crash in an earlier run (after the rename, before the marker): never a checkpoint.
    if (path_exists(final)) {
        log_info("removing incomplete checkpoint %s", final);
        if (ckpt_remove(root, ckpt_dir_name(name, step, false), e)) return -1;
    }
    ckpt_path(tmp_dir, cap, run_dir, step, true);
    if (path_exists(tmp_dir)) {
        log_info("removing unfinished checkpoint %s", tmp_dir);
        if (ckpt_remove(root, ckpt_dir_name(name, step, true), e)) return -1;
    }
    *id = ckpt_new_id();
    return dir_make(path_join(trainer, sizeof trainer, tmp_dir, "trainer"), e);
}

// Every part of checkpoint `step` under tmp is present and belongs to this step.
static int ckpt_check_parts(const char *tmp, int64_t step, int n_ranks, uint64_t id, Err *e) {
    char path[CKPT_PATH_CAP];
    ckpt_model_path(path, sizeof path, tmp);
    if (!checkpoint_is_complete(path))
        return err_set(e, "%s: missing or incomplete (no %s)", path, CKPT_MARKER);
    for (int r = 0; r < n_ranks; r++) {
        TrainerState st;
        if (trainer_state_peek(ckpt_trainer_path(path, sizeof path, tmp, r, n_ranks), &st, e)) return -1;
        int64_t got = st.step;
        uint64_t got_id = st.ckpt_id;
        int ranks = st.shard.n_ranks, rank = st.shard.rank;
        trainer_state_free(&st);
        if (got != step)
            return err_set(e, "%s: holds step %" PRId64 ", checkpoint is step %" PRId64, path, got, step);
        if (got_id != id)
            return err_set(e, "%s: checkpoint id %" PRIu64 ", this checkpoint's is %" PRIu64, path, got_id, id);
        if (ranks != n_ranks || rank != r)
            return err_set(e, "%s: written as rank %d of %d, expected rank %d of %d", path, rank, ranks, r,
                           n_ranks);
    }
    return 0;
}

int ckpt_commit(const char *run_dir, int64_t step, int n_ranks, uint64_t id, Err *e) {
    if (step < 0 || step > CKPT_MAX_STEP)
        return err_set(e, "checkpoint step %" PRId64 ": outside [0, %d]", step, CKPT_MAX_STEP);
    if (n_ranks < 0 || n_ranks > CKPT_MAX_RANKS)
        return err_set(e, "checkpoint step %" PRId64 ": n_ranks = %d, must be in [0, %d]", step, n_ranks,
                       CKPT_MAX_RANKS);
    char root[CKPT_PATH_CAP], tmp[CKPT_PATH_CAP], final[CKPT_PATH_CAP], path[CKPT_PATH_CAP];
    ckpt_root(root, sizeof root, run_dir);
    ckpt_path(tmp, sizeof tmp, run_dir, step, true);
    ckpt_path(final, sizeof final, run_dir, step, false);
    if (!ckpt_is_dir(tmp)) return err_set(e, "%s: no such checkpoint in progress (ckpt_begin first)", tmp);
    if (ckpt_check_parts(tmp, step, n_ranks, id, e))
        return err_prefix(e, "checkpoint step %" PRId64 " incomplete", step);
    // A model-only checkpoint has no trainer/ (an empty one would read as trainer files gone missing).
    if (n_ranks == 0 && rmdir(path_join(path, sizeof path, tmp, "trainer")) != 0)
        return err_set(e, "%s: cannot remove: %s", path, strerror(errno));
    // The trainer files were fsynced when written (AtomicFile); their directory entries are made durable
    // here, before the rename can publish them.
    if ((n_ranks > 0 && ckpt_fsync_dir(path_join(path, sizeof path, tmp, "trainer"), e)) || ckpt_fsync_dir(tmp, e))
        return -1;
    if (rename(tmp, final) != 0)
        return err_set(e, "%s: cannot rename to %s: %s", tmp, final, strerror(errno));
    if (ckpt_fsync_dir(root, e)) return -1;
    char marker[160];
    int n = snprintf(marker, sizeof marker, "{\"step\": %" PRId64 ", \"n_ranks\": %d, \"ckpt_id\": \"%" PRIu64 "\"}\n",
                     step, n_ranks, id);
    if (file_write_atomic(path_join(path, sizeof path, final, CKPT_MARKER), marker, (size_t)n, e)) return -1;
    return ckpt_fsync_dir(final, e);
}

int ckpt_marker_read(const char *dir, int *n_ranks, uint64_t *id, Err *e) {
    char path[CKPT_PATH_CAP];
    path_join(path, sizeof path, dir, CKPT_MARKER);
    json_error_t jerr;
    json_t *root = json_load_file(path, 0, &jerr);
    if (!root) return err_set(e, "%s: cannot read the checkpoint marker: %s", path, jerr.text);
    json_t *n = json_object_get(root, "n_ranks"), *s = json_object_get(root, "ckpt_id");
    const char *digits = json_string_value(s);
    char *end = NULL;
    errno = 0;
    if (digits) *id = strtoull(digits, &end, 10);
    int rc = 0;
    if (!json_is_integer(n) || json_integer_value(n) < 0 || json_integer_value(n) > CKPT_MAX_RANKS)
        rc = err_set(e, "%s: n_ranks: missing or not an integer in [0, %d]", path, CKPT_MAX_RANKS);
    else if (s && (!digits || !*digits || *end || errno || *digits < '0' || *digits > '9'))
        rc = err_set(e, "%s: ckpt_id: not a 64-bit unsigned decimal string", path);
    else {
        *n_ranks = (int)json_integer_value(n);
        if (!s) *id = 0;  // written before checkpoint ids
    }
    json_decref(root);
    return rc;
}

int ckpt_set_aside(const char *run_dir, int64_t step, Err *e) {
    char final[CKPT_PATH_CAP], aside[CKPT_PATH_CAP + 16], root[CKPT_PATH_CAP];
    ckpt_path(final, sizeof final, run_dir, step, false);
    snprintf(aside, sizeof aside, "%s.damaged", final);
    if (path_exists(aside)) return err_set(e, "%s: exists; remove it to set %s aside", aside, final);
    if (rename(final, aside) != 0) return err_set(e, "%s: cannot rename to %s: %s", final, aside, strerror(errno));
    return ckpt_fsync_dir(ckpt_root(root, sizeof root, run_dir), e);
}

int ckpt_abort(const char *run_dir, int64_t step, Err *e) {
    char root[CKPT_PATH_CAP], tmp[CKPT_PATH_CAP], name[CKPT_NAME_CAP];
    if (!path_exists(ckpt_path(tmp, sizeof tmp, run_dir, step, true))) return 0;
    return ckpt_remove(ckpt_root(root, sizeof root, run_dir), ckpt_dir_name(name, step, true), e);
}

// ---------------------------------------------------------------------------------------------------
// Reading and pruning

static int ckpt_cmp_step(const void *a, const void *b) {
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

// Scans checkpoints/: complete steps (sorted) into *steps; with stale non-NULL, also the names of
// *.tmp and marker-less directories into *stale (n_stale entries of CKPT_NAME_CAP bytes).
static int ckpt_scan(const char *run_dir, int64_t **steps, char (**stale)[CKPT_NAME_CAP], int *n_stale,
                     Err *e) {
    char root[CKPT_PATH_CAP];
    ckpt_root(root, sizeof root, run_dir);
    *steps = NULL;
    if (stale) *stale = NULL, *n_stale = 0;
    DIR *d = opendir(root);
    if (!d) {
        if (errno == ENOENT) return 0;
        return err_set(e, "%s: cannot read directory: %s", root, strerror(errno));
    }
    int n = 0, cap = 0, stale_cap = 0;
    struct dirent *de;
    while ((de = readdir(d))) {
        int64_t step;
        bool tmp;
        if (!ckpt_parse_name(de->d_name, &step, &tmp)) continue;
        char path[CKPT_PATH_CAP];
        path_join(path, sizeof path, root, de->d_name);
        if (!tmp && ckpt_is_complete(path)) {
            if (n == cap) {
                cap = cap ? 2 * cap : 16;
                *steps = reallocCheck(*steps, sizeof **steps * (size_t)cap);
            }
            (*steps)[n++] = step;
            continue;
        }
        log_debug("skipping %s: %s", path,
                  tmp ? "unfinished checkpoint (*.tmp)" : "no " CKPT_MARKER " marker");
        if (!stale || !ckpt_is_dir(path)) continue;
        if (*n_stale == stale_cap) {
            stale_cap = stale_cap ? 2 * stale_cap : 8;
            *stale = reallocCheck(*stale, sizeof **stale * (size_t)stale_cap);
        }
        snprintf((*stale)[(*n_stale)++], CKPT_NAME_CAP, "%.*s", CKPT_NAME_CAP - 1, de->d_name);
    }
    closedir(d);
    if (n) qsort(*steps, (size_t)n, sizeof **steps, ckpt_cmp_step);
    return n;
}

int ckpt_list(const char *run_dir, int64_t **steps, Err *e) {
    return ckpt_scan(run_dir, steps, NULL, NULL, e);
}

int ckpt_latest(const char *run_dir, char *out, size_t cap, int64_t *step, Err *e) {
    int64_t *steps;
    int n = ckpt_list(run_dir, &steps, e);
    if (n <= 0) return n;
    *step = steps[n - 1];
    free(steps);
    ckpt_path(out, cap, run_dir, *step, false);
    return 1;
}

int ckpt_prune(const char *run_dir, int keep_last, Err *e) {
    if (keep_last < 0) return err_set(e, "keep_last = %d, must be >= 0", keep_last);
    int64_t *steps;
    char(*stale)[CKPT_NAME_CAP];
    int n_stale;
    int n = ckpt_scan(run_dir, &steps, &stale, &n_stale, e);
    if (n < 0) return -1;
    char root[CKPT_PATH_CAP], name[CKPT_NAME_CAP];
    ckpt_root(root, sizeof root, run_dir);
    int removed = 0, rc = 0;
    for (int i = 0; i < n_stale && !rc; i++) {
        log_info("removing stale checkpoint directory %s/%s", root, stale[i]);
        rc = ckpt_remove(root, stale[i], e);
        removed += rc == 0;
    }
    int n_old = keep_last == 0 ? 0 : n - keep_last;
    for (int i = 0; i < n_old && !rc; i++) {
        log_info("removing old checkpoint %s/%s", root, ckpt_dir_name(name, steps[i], false));
        rc = ckpt_remove(root, name, e);
        removed += rc == 0;
    }
    free(steps);
    free(stale);
    return rc ? -1 : removed;
}
