// train.c: learner state, micro-batch forward/backward and the optimizer update (see train.h).
#include "train.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "model/checkpoint.h"
#include "pipeline/schedule.h"
#include "util/log.h"
#ifdef AQA_CUDA
#include "comm/nccl.h"
#include "model/cuda/ops_cuda.h"
#include "zero_cuda.h"
#endif

static int trainer_check_config(const Config *cfg, Err *e) {
#ifdef AQA_CUDA
    if (cfg->model.backend == CFG_BACKEND_CUDA && ops_cuda_device_count() < 1)
        return err_set(e, "model.backend=cuda: no CUDA device on this node");
#else
    if (cfg->model.backend == CFG_BACKEND_CUDA)
        return err_set(e, "model.backend=cuda: this build has no CUDA backend (meson setup -Dcuda=enabled)");
#endif
    if (cfg->train.mode == CFG_MODE_GRPO && cfg->rollout.num_generations < 2)
        return err_set(e, "rollout.num_generations %d: GRPO advantages need at least 2 completions per question",
                       cfg->rollout.num_generations);
    if (config_require(cfg, "model.path", e) || config_require(cfg, "data.train", e)) return -1;
    return 0;
}

// The backend of model.backend: the CPU, or the GPU of this learner's index on its node.
static Ops *trainer_backend(Trainer *t) {
    if (t->cfg->model.backend == CFG_BACKEND_CPU) return ops_cpu_create();
#ifdef AQA_CUDA
    int dev = ops_cuda_set_device(comm_node_gpu_index(t->comm, 1));
    log_info("learner %d: GPU %d", t->comm->role_rank, dev);
    return ops_cuda_create();
#else
    fatal("model.backend=cuda: this build has no CUDA backend");
#endif
}

// GPU learner: the ZeRO-1 state from the loaded weights (then the host copy goes), and the NCCL weight
// broadcast when the rollouts are on GPUs too.
static int trainer_gpu_init(Trainer *t, Err *e) {
#ifdef AQA_CUDA
    const Config *cfg = t->cfg;
    t->zero = callocCheck(1, sizeof *t->zero);
    size_t bucket = (size_t)cfg->train.grad_bucket_mb << 19;  // bf16 elements
    if (zero_cuda_init(t->zero, &t->model, t->grad_dev, t->comm, t->master, bucket, cfg->train.nccl_timeout_s, e))
        return err_prefix(e, "train.grad_bucket_mb");
    free(t->master);
    t->master = NULL;
    if (t->comm->role_rank == 0)
        log_info("ZeRO-1 over %d learners: %d gradient buckets, %zu of %zu parameters per shard", t->comm->role_size,
                 t->zero->z.n_buckets, t->zero->z.shard_n, t->model.t.numel);
    if (cfg->train.mode == CFG_MODE_GRPO && cfg->rollout.backend == CFG_BACKEND_CUDA && t->comm->n_rollouts > 0) {
        t->wnccl = callocCheck(1, sizeof *t->wnccl);
        if (!nccl_weights_init(t->comm, t->wnccl, cfg->train.nccl_timeout_s)) {
            free(t->wnccl);
            t->wnccl = NULL;
        }
    }
    if (!t->wnccl && t->comm->role_rank == 0 && t->comm->n_rollouts > 0)
        t->wbuf = mallocCheck(t->model.t.numel * sizeof(float));
    return 0;
#else
    return err_set(e, "model.backend=cuda: this build has no CUDA backend");
#endif
}

int trainer_init(Trainer *t, const Config *cfg, const Comm *comm, Err *e) {
    memset(t, 0, sizeof *t);
    t->cfg = cfg, t->comm = comm;
    if (trainer_check_config(cfg, e)) return -1;
    PrepOptions po = prep_options_from_config(cfg);
    if (prep_options_set_model(&po, cfg->model.path, e) ||
        prep_context_init(&t->prep, config_tokenizer_dir(cfg), &po, e))
        return -1;
    prep_eos_ids(&t->prep, t->eos);
    log_debug("tokenizer %s loaded", config_tokenizer_dir(cfg));
    DataOptions dopt = prep_data_options(cfg);
    if (dataset_load(&t->data, cfg->data.train, &dopt, e)) return err_prefix(e, "data.train");
    if (t->data.n_bad)
        log_warn("data.train %s: %lld bad records skipped (listed above)", cfg->data.train, (long long)t->data.n_bad);
    if (schedule_total_steps(cfg, t->data.n, &t->n_steps, e)) return -1;
    order_init(&t->order, (uint64_t)cfg->train.seed, t->data.n, cfg->data.shuffle);
    log_debug("data.train %s: %lld questions", cfg->data.train, (long long)t->data.n);

    ModelConfig mc;
    ParamTable table;
    float *params;
    if (model_load_dir(cfg->model.path, &mc, &table, &params, e)) return err_prefix(e, "model.path");
    param_table_free(&table);
    log_debug("model %s loaded", cfg->model.path);
    if (model_config_check(&mc, e)) {
        free(params);
        return err_prefix(e, "%s", cfg->model.path);
    }
    t->ops = trainer_backend(t);
    model_init(&t->model, &mc, t->ops, params);
    t->master = params;  // the loaded fp32 weights become the master copy
    size_t n = t->model.t.numel;
    t->grad_dev = t->ops->alloc(t->ops, n * t->ops->act_size);
    mbatch_init(&t->batch, &mc);
    if (cfg->model.backend == CFG_BACKEND_CUDA) {
        if (trainer_gpu_init(t, e)) return -1;
    } else {
        t->grad = mallocCheck(n * sizeof(float));
        adamw_init(&t->opt, n);
    }
    t->adamw = (AdamWConfig){.beta1 = cfg->optim.beta1,
                             .beta2 = cfg->optim.beta2,
                             .eps = cfg->optim.eps,
                             .weight_decay = cfg->optim.weight_decay};
    static const LrKind kinds[] = {
        [CFG_SCHEDULE_LINEAR] = LR_LINEAR, [CFG_SCHEDULE_CONSTANT] = LR_CONSTANT, [CFG_SCHEDULE_COSINE] = LR_COSINE};
    int64_t mu = cfg->train.mode == CFG_MODE_GRPO ? cfg->grpo.num_iterations : 1;
    t->lr = (LrConfig){.kind = kinds[cfg->optim.schedule],
                       .lr = cfg->optim.lr,
                       .warmup_steps = cfg->optim.warmup_steps * mu,
                       .max_steps = t->n_steps * mu,
                       .num_cycles = 0.5};
    if (lr_config_check(&t->lr, e)) return err_prefix(e, "optim");
    return 0;
}

void trainer_free(Trainer *t) {
#ifdef AQA_CUDA
    if (t->zero) zero_cuda_free(t->zero);
    if (t->wnccl) nccl_free(t->wnccl);
#endif
    free(t->zero);
    free(t->wnccl);
    free(t->wbuf);
    if (t->acts) model_acts_free(&t->model, t->acts);
    if (t->ops) {
        mbatch_free(&t->batch);
        t->ops->free(t->ops, t->grad_dev);
        model_free(&t->model);
        ops_destroy(t->ops);
    }
    adamw_free(&t->opt);
    free(t->master);
    free(t->grad);
    free(t->lp);
    free(t->dlp);
    order_free(&t->order);
    dataset_free(&t->data);
    prep_context_free(&t->prep);
    memset(t, 0, sizeof *t);
}

// Activations sized for the batch; regrown with headroom so slightly larger batches reuse them.
static void trainer_reserve(Trainer *t) {
    const ModelBatch *b = &t->batch;
    if (t->acts && b->n_tokens <= t->acts_tokens && b->n_audio <= t->acts_audio && b->n_tgt <= t->acts_tgt) return;
    if (t->acts) model_acts_free(&t->model, t->acts);
    int grow = b->n_tokens + b->n_tokens / 4;
    t->acts_tokens = grow > t->acts_tokens ? grow : t->acts_tokens;
    t->acts_audio = b->n_audio > t->acts_audio ? b->n_audio : t->acts_audio;
    grow = b->n_tgt + b->n_tgt / 4;
    t->acts_tgt = grow > t->acts_tgt ? grow : t->acts_tgt;
    t->acts = model_acts_create(&t->model, t->acts_tokens, t->acts_audio, t->acts_tgt,
                                t->cfg->model.recompute ? ACTS_RECOMPUTE : ACTS_TRAIN);
    log_debug("training activations%s: %d tokens, %d clips, %d targets, %.1f MiB",
              t->cfg->model.recompute ? " (recompute)" : "", t->acts_tokens, t->acts_audio, t->acts_tgt,
              model_acts_bytes(t->acts) / 1048576.0);
}

int trainer_forward(Trainer *t, Err *e) {
    trainer_reserve(t);
    if (t->batch.n_tgt > t->lp_cap) {
        t->lp_cap = t->batch.n_tgt;
        t->lp = reallocCheck(t->lp, (size_t)t->lp_cap * sizeof(float));
        t->dlp = reallocCheck(t->dlp, (size_t)t->lp_cap * sizeof(float));
    }
    return model_forward(&t->model, &t->batch, t->acts, t->lp, e);
}

void trainer_backward(Trainer *t, int last) {
#ifdef AQA_CUDA
    if (t->zero) zero_cuda_arm(t->zero, last);
#endif
    model_backward(&t->model, &t->batch, t->acts, t->dlp, t->grad_dev);
}

// The GPU learners' update (zero_cuda.h); the same contract as the CPU one below.
static int trainer_update_gpu(Trainer *t, int64_t update, double *grad_norm, double *lr, UpdateTimes *tm, Err *e) {
#ifdef AQA_CUDA
    double t0 = log_elapsed();
    zero_cuda_reduce(t->zero, grad_norm);
    double t1 = log_elapsed();
    tm->allreduce += t1 - t0;
    if (!isfinite(*grad_norm)) return err_set(e, "update %lld: gradient norm is %g", (long long)update, *grad_norm);
    *lr = lr_at(&t->lr, update);
    zero_cuda_step(t->zero, &t->adamw, *lr, ++t->opt.step, t->cfg->optim.grad_clip, *grad_norm);
    tm->optim += log_elapsed() - t1;
    return 0;
#else
    fatal("trainer_update_gpu: no CUDA in this build");
#endif
}

int trainer_update(Trainer *t, int64_t update, double *grad_norm, double *lr, UpdateTimes *tm, Err *e) {
    if (t->zero) return trainer_update_gpu(t, update, grad_norm, lr, tm, e);
    Ops *o = t->ops;
    size_t n = t->model.t.numel;
    double t0 = log_elapsed();
    o->download_act(o, t->grad, t->grad_dev, n);
    comm_role_allreduce_sum_f32(t->comm, t->grad, n);
    // DDP averages gradients; the loss normalisers (grpo.h) are written for that mean.
    if (t->comm->role_size > 1) optim_scale(t->grad, n, 1.0 / t->comm->role_size);
    double t1 = log_elapsed();
    double norm = sqrt(optim_sumsq(t->grad, n));
    *grad_norm = norm;
    if (!isfinite(norm)) return err_set(e, "update %lld: gradient norm is %g", (long long)update, norm);
    if (t->cfg->optim.grad_clip > 0) {
        double s = optim_clip_scale(norm, t->cfg->optim.grad_clip);
        if (s < 1) optim_scale(t->grad, n, s);
    }
    *lr = lr_at(&t->lr, update);
    adamw_step(&t->opt, &t->adamw, *lr, t->master, t->grad);
    o->upload_act(o, t->model.params, t->master, n);
    o->zero(o, t->grad_dev, n * o->act_size);
    tm->allreduce += t1 - t0;
    tm->optim += log_elapsed() - t1;
    return 0;
}

int trainer_sync_weights(Trainer *t, int64_t version, Err *e) {
    size_t n = t->model.t.numel;
#ifdef AQA_CUDA
    if (t->wnccl)
        return nccl_bcast_weights(t->comm, t->wnccl, t->model.params, n, version, ops_cuda_stream(t->ops), e);
#endif
    if (!t->zero) return comm_bcast_weights(t->comm, t->master, n, version, e);
    // The rollouts get the bf16 weights the learners train with, as over NCCL.
    if (t->wbuf) t->ops->download_act(t->ops, t->wbuf, t->model.params, n);
    return comm_bcast_weights(t->comm, t->wbuf, n, version, e);
}

#ifdef AQA_CUDA
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
#endif

void trainer_state_to_host(Trainer *t, int gather) {
#ifdef AQA_CUDA
    if (!t->zero) return;
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
#else
    (void)t, (void)gather;
#endif
}

void trainer_state_from_host(Trainer *t) {
    size_t n = t->model.t.numel;
    t->ops->upload_act(t->ops, t->model.params, t->master, n);
#ifdef AQA_CUDA
    if (!t->zero) return;
    size_t sn = t->zero->z.shard_n;
    float *shard[3], *full[3] = {t->master, t->opt.m, t->opt.v};
    for (int a = 0; a < 3; a++) {
        shard[a] = mallocCheck((sn ? sn : 1) * sizeof(float));
        zero_shard_gather(&t->zero->z, t->comm->role_rank, full[a], shard[a]);
    }
    zero_cuda_upload(t->zero, shard[0], shard[1], shard[2]);
    for (int a = 0; a < 3; a++) free(shard[a]);
#endif
}

void trainer_state_release(Trainer *t) {
    if (!t->zero) return;
    free(t->master);
    free(t->opt.m);
    free(t->opt.v);
    t->master = t->opt.m = t->opt.v = NULL;
    t->opt.n = 0;
}
