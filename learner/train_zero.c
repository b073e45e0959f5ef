// train_zero.c: see train_zero.h.
#include "train_zero.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "util/log.h"

#ifdef AQA_CUDA
#include "model/checkpoint.h"
#include "model/cuda/cuda_check.h"
#include "zero_cuda.h"

// ZeroSource over the model directory's files (model_read_range).
typedef struct {
    StReader r;
    const ParamTable *t;
} FileSource;

static int file_read(void *ctx, size_t lo, size_t n, float *out, Err *e) {
    FileSource *f = ctx;
    return model_read_range(&f->r, f->t, lo, n, out, e);
}

static void file_release(void *ctx) { st_close(&((FileSource *)ctx)->r); }

int trainer_zero_init(Trainer *t, Err *e) {
    const Config *cfg = t->cfg;
    size_t bucket = (size_t)cfg->train.grad_bucket_mb << 19;  // bf16 elements
    // The master shard from the model's files, each piece read where the shard keeps it; the files are
    // unmapped before the moments are allocated.
    FileSource f = {.t = &t->model.t};
    if (checkpoint_open(&f.r, cfg->model.path, e)) return err_prefix(e, "model.path");
    ZeroSource src = {file_read, file_release, &f};
    t->zero = callocCheck(1, sizeof *t->zero);
    if (zero_cuda_init(t->zero, &t->model, t->grad_dev, t->comm, &src, bucket, cfg->optim.offload == CFG_OFFLOAD_HOST,
                       cfg->train.nccl_timeout_s, e)) {
        free(t->zero);
        t->zero = NULL;
        return err_prefix(e, "model.path %s, train.grad_bucket_mb %d", cfg->model.path, cfg->train.grad_bucket_mb);
    }
    if (t->comm->role_rank == 0)
        log_info("ZeRO-1 over %d learners: %d gradient buckets, %zu of %zu parameters per shard, optimizer state "
                 "on the %s", t->comm->role_size, t->zero->z.n_buckets, t->zero->z.shard_n, t->model.t.numel,
                 t->zero->offload ? "host (optim.offload=host)" : "GPU");
    return 0;
}

void trainer_zero_free(Trainer *t) {
    zero_cuda_free(t->zero);
    free(t->zero);
    t->zero = NULL;
}

void trainer_zero_arm(Trainer *t, int last) { zero_cuda_arm(t->zero, last); }

int trainer_zero_update(Trainer *t, int64_t update, double *grad_norm, double *lr, UpdateTimes *tm, Err *e) {
    double t0 = log_elapsed();
    zero_cuda_reduce(t->zero, grad_norm);
    double t1 = log_elapsed();
    tm->allreduce += t1 - t0;
    if (!isfinite(*grad_norm)) return err_set(e, "update %lld: gradient norm is %g", (long long)update, *grad_norm);
    *lr = lr_at(&t->lr, update);
    zero_cuda_step(t->zero, &t->adamw, *lr, ++t->opt.step, t->cfg->optim.grad_clip, *grad_norm);
    tm->optim += log_elapsed() - t1;
    return 0;
}

void trainer_zero_part_get(Trainer *t, TrainerPart *p, int current) {
    ZeroCuda *zc = t->zero;
    const ZeroLayout *z = &zc->z;
    int r = t->comm->role_rank;
    p->shard = (TrainerShard){.n_params = (int64_t)z->numel,
                              .count = (int64_t)z->shard_n,
                              .rank = r,
                              .n_ranks = t->comm->role_size,
                              .segs = mallocCheck((size_t)z->n_buckets * sizeof(TrainerSeg))};
    // Piece b of the shard holds parameters [lo, lo + n); its padding (n < piece) is no segment.
    for (int b = 0; b < z->n_buckets; b++) {
        size_t lo, n;
        zero_piece(z, b, r, &lo, &n);
        if (n)
            p->shard.segs[p->shard.n_segs++] =
                (TrainerSeg){.lo = (int64_t)lo, .n = (int64_t)n, .at = (int64_t)z->b[b].shard_off};
    }
    // A shard of padding only (more learners than a bucket has elements everywhere) holds no parameter.
    if (p->shard.n_segs == 0) p->shard.count = 0;
    if (zc->offload) {  // the pinned host state is the part itself
        p->master = zc->master, p->m = zc->m, p->v = zc->v;
        if (!current) {
            CUDA_CHECK(cudaStreamSynchronize(zc->comm));
            float *arr[3] = {p->master, p->m, p->v};
            for (int a = 0; a < 3; a++) memset(arr[a], 0, z->shard_n * sizeof(float));
        }
        return;
    }
    p->copy = 1;
    p->master = callocCheck(z->shard_n ? z->shard_n : 1, sizeof(float));
    p->m = callocCheck(z->shard_n ? z->shard_n : 1, sizeof(float));
    p->v = callocCheck(z->shard_n ? z->shard_n : 1, sizeof(float));
    if (current) zero_cuda_download(zc, p->master, p->m, p->v);
}

void trainer_zero_part_put(Trainer *t, TrainerPart *p) { zero_cuda_upload(t->zero, p->master, p->m, p->v); }

#else  // CPU-only build: no GPU learner; t->zero is never set, so only trainer_zero_init is reached.

int trainer_zero_init(Trainer *t, Err *e) {
    return err_set(e, "model.backend=cuda: this build has no CUDA backend (meson setup -Dcuda=enabled)");
}

#define TRAINER_ZERO_ABSENT fatal("%s: no ZeRO state in a CPU-only build", __func__)
void trainer_zero_free(Trainer *t) { TRAINER_ZERO_ABSENT; }
void trainer_zero_arm(Trainer *t, int last) { TRAINER_ZERO_ABSENT; }
int trainer_zero_update(Trainer *t, int64_t update, double *grad_norm, double *lr, UpdateTimes *tm, Err *e) {
    TRAINER_ZERO_ABSENT;
}
void trainer_zero_part_get(Trainer *t, TrainerPart *p, int current) { TRAINER_ZERO_ABSENT; }
void trainer_zero_part_put(Trainer *t, TrainerPart *p) { TRAINER_ZERO_ABSENT; }

#endif
