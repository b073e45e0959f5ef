// train_zero.c: see train_zero.h.
#include "train_zero.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "util/log.h"

#ifdef AQA_CUDA
#include "zero_cuda.h"

int trainer_zero_init(Trainer *t, Err *e) {
    const Config *cfg = t->cfg;
    t->zero = callocCheck(1, sizeof *t->zero);
    size_t bucket = (size_t)cfg->train.grad_bucket_mb << 19;  // bf16 elements
    if (zero_cuda_init(t->zero, &t->model, t->grad_dev, t->comm, t->master, bucket,
                       cfg->optim.offload == CFG_OFFLOAD_HOST, cfg->train.nccl_timeout_s, e))
        return err_prefix(e, "train.grad_bucket_mb");
    free(t->master);
    t->master = NULL;
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

// Chunks of MPI counts (int).
enum { TRAINER_MPI_CHUNK = 1 << 28 };

// Root: all[r * count + i] = rank r's x[i].
static void trainer_gather_f32(const Comm *c, const float *x, size_t count, float *all) {
    int L = c->role_size, root = c->role_rank == 0;
    const size_t chunk = count < TRAINER_MPI_CHUNK ? count : TRAINER_MPI_CHUNK;
    float *tmp = root ? mallocCheck(((size_t)L * chunk + 1) * sizeof(float)) : NULL;
    for (size_t off = 0; off < count; off += TRAINER_MPI_CHUNK) {
        size_t k = count - off < TRAINER_MPI_CHUNK ? count - off : TRAINER_MPI_CHUNK;
        MPI_CHECK(MPI_Gather(x + off, (int)k, MPI_FLOAT, tmp, (int)k, MPI_FLOAT, 0, c->role_comm));
        for (int r = 0; root && r < L; r++)
            memcpy(all + (size_t)r * count + off, tmp + (size_t)r * k, k * sizeof(float));
    }
    free(tmp);
}

void trainer_zero_to_host(Trainer *t, int gather) {
    size_t n = t->model.t.numel, sn = t->zero->z.shard_n;
    int L = t->comm->role_size, root = t->comm->role_rank == 0;
    t->master = callocCheck(n, sizeof(float));
    t->opt.m = callocCheck(n, sizeof(float));
    t->opt.v = callocCheck(n, sizeof(float));
    t->opt.n = n;
    if (!gather) return;
    float *shard[3], *full[3] = {t->master, t->opt.m, t->opt.v};
    for (int a = 0; a < 3; a++) shard[a] = mallocCheck((sn ? sn : 1) * sizeof(float));
    zero_cuda_download(t->zero, shard[0], shard[1], shard[2]);
    float *all = root ? mallocCheck(((size_t)L * sn + 1) * sizeof(float)) : NULL;
    for (int a = 0; a < 3; a++) {
        trainer_gather_f32(t->comm, shard[a], sn, all);
        for (int r = 0; root && r < L; r++) zero_shard_scatter(&t->zero->z, r, all + (size_t)r * sn, full[a]);
        free(shard[a]);
    }
    free(all);
}

void trainer_zero_from_host(Trainer *t) {
    size_t sn = t->zero->z.shard_n;
    float *shard[3], *full[3] = {t->master, t->opt.m, t->opt.v};
    for (int a = 0; a < 3; a++) {
        shard[a] = mallocCheck((sn ? sn : 1) * sizeof(float));
        zero_shard_gather(&t->zero->z, t->comm->role_rank, full[a], shard[a]);
    }
    zero_cuda_upload(t->zero, shard[0], shard[1], shard[2]);
    for (int a = 0; a < 3; a++) free(shard[a]);
}

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
void trainer_zero_to_host(Trainer *t, int gather) { TRAINER_ZERO_ABSENT; }
void trainer_zero_from_host(Trainer *t) { TRAINER_ZERO_ABSENT; }

#endif
