// trainer_shards.c: see trainer_shards.h.
#include "ckpt/trainer_shards.h"

#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "ckpt/ckpt.h"

enum { TSH_PATH_CAP = 4200 };

// One segment of one file.
struct TrainerShardPart {
    TrainerSeg seg;
    int file;
};

static int tsh_cmp_lo(const void *a, const void *b) {
    int64_t x = ((const TrainerShardPart *)a)->seg.lo, y = ((const TrainerShardPart *)b)->seg.lo;
    return (x > y) - (x < y);
}

void trainer_shards_close(TrainerShards *s) {
    for (int r = 0; r < s->n_files && s->f; r++) trainer_file_close(s->f[r]);
    free(s->f);
    free(s->part);
    memset(s, 0, sizeof *s);
}

// File r against the marker and file 0.
static int tsh_check_file(const TrainerShards *s, int r, int64_t step, int64_t n_params, Err *e) {
    const TrainerState *st = trainer_file_state(s->f[r]), *st0 = trainer_file_state(s->f[0]);
    const char *path = trainer_file_path(s->f[r]);
    if (st->ckpt_id != s->id)
        return err_set(e, "%s: checkpoint id %" PRIu64 ", the checkpoint's marker says %" PRIu64
                          ": a trainer file of another checkpoint or run",
                       path, st->ckpt_id, s->id);
    if (st->step != step)
        return err_set(e, "%s: holds step %" PRId64 ", its checkpoint is step %" PRId64, path, st->step, step);
    if (st->shard.n_ranks != s->n_files || st->shard.rank != r)
        return err_set(e, "%s: written as rank %d of %d, expected rank %d of %d", path, st->shard.rank,
                       st->shard.n_ranks, r, s->n_files);
    if (st->shard.n_params != n_params)
        return err_set(e, "%s: optimizer.n_params = %" PRId64 ", the model has %" PRId64, path,
                       st->shard.n_params, n_params);
    if (st->optim_step != st0->optim_step)
        return err_set(e, "%s: optimizer step %" PRId64 ", %s has %" PRId64, path, st->optim_step,
                       trainer_file_path(s->f[0]), st0->optim_step);
    return 0;
}

// The parts by parameter: they must tile [0, n_params).
static int tsh_index(TrainerShards *s, int64_t n_params, const char *dir, Err *e) {
    int n = 0;
    for (int r = 0; r < s->n_files; r++) n += trainer_shard_n_segs(&trainer_file_state(s->f[r])->shard);
    s->part = mallocCheck((size_t)(n ? n : 1) * sizeof *s->part);
    for (int r = 0; r < s->n_files; r++) {
        const TrainerShard *sh = &trainer_file_state(s->f[r])->shard;
        for (int i = 0; i < trainer_shard_n_segs(sh); i++)
            if (trainer_shard_seg(sh, i).n > 0)
                s->part[s->n_part++] = (TrainerShardPart){trainer_shard_seg(sh, i), r};
    }
    qsort(s->part, (size_t)s->n_part, sizeof *s->part, tsh_cmp_lo);
    int64_t end = 0;
    for (int i = 0; i < s->n_part; i++) {
        const TrainerShardPart *p = &s->part[i];
        if (p->seg.lo != end)
            return err_set(e, "%s: parameters [%" PRId64 ", %" PRId64 ") %s", dir, end < p->seg.lo ? end : p->seg.lo,
                           end < p->seg.lo ? p->seg.lo : end,
                           end < p->seg.lo ? "are in none of its trainer files" : "are in two of its trainer files");
        end = p->seg.lo + p->seg.n;
    }
    if (end != n_params)
        return err_set(e, "%s: parameters [%" PRId64 ", %" PRId64 ") are in none of its trainer files", dir, end,
                       n_params);
    return 0;
}

int trainer_shards_open(TrainerShards *s, const char *dir, int64_t step, int64_t n_params, Err *e) {
    memset(s, 0, sizeof *s);
    int n_files;
    uint64_t id;
    if (ckpt_marker_read(dir, &n_files, &id, e)) return -1;
    if (n_files == 0) {
        err_set(e, "%s: holds the model only (written with train.save_only_model=true): no trainer state", dir);
        return TRAINER_SHARDS_MODEL_ONLY;
    }
    s->f = callocCheck((size_t)n_files, sizeof *s->f);
    s->n_files = n_files;
    s->id = id;
    char path[TSH_PATH_CAP];
    for (int r = 0; r < n_files; r++) {
        s->f[r] = trainer_file_open(ckpt_trainer_path(path, sizeof path, dir, r, n_files), e);
        if (!s->f[r] || tsh_check_file(s, r, step, n_params, e)) {
            trainer_shards_close(s);
            return -1;
        }
    }
    if (tsh_index(s, n_params, dir, e)) {
        trainer_shards_close(s);
        return -1;
    }
    return 0;
}

const TrainerState *trainer_shards_state(const TrainerShards *s) { return trainer_file_state(s->f[0]); }

int trainer_shards_read(TrainerShards *s, const char *name, int64_t lo, int64_t n, float *dst, Err *e) {
    int64_t hi = lo + n;
    // the first part ending after lo (the parts tile the parameters in order)
    int a = 0, b = s->n_part;
    while (a < b) {
        int m = (a + b) / 2;
        if (s->part[m].seg.lo + s->part[m].seg.n <= lo) a = m + 1;
        else b = m;
    }
    for (int i = a; i < s->n_part && s->part[i].seg.lo < hi; i++) {
        const TrainerSeg *g = &s->part[i].seg;
        int64_t from = lo > g->lo ? lo : g->lo, to = hi < g->lo + g->n ? hi : g->lo + g->n;
        if (trainer_file_read(s->f[s->part[i].file], name, g->at + (from - g->lo), to - from, dst + (from - lo), e))
            return -1;
    }
    return 0;
}

int64_t trainer_shards_bytes(const TrainerShards *s) {
    int64_t sum = 0;
    for (int r = 0; r < s->n_files; r++) {
        struct stat sb;
        if (stat(trainer_file_path(s->f[r]), &sb) == 0) sum += (int64_t)sb.st_size;
    }
    return sum;
}
