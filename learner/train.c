// train.c: learner state, micro-batch forward/backward and the optimizer update (see train.h).
#include "train.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "audio/audio_len.h"
#include "model/checkpoint.h"
#include "model/cuda/model_load_device.h"
#include "model/hf_config.h"
#include "model/memplan.h"
#include "pipeline/backend.h"
#include "pipeline/schedule.h"
#include "train_zero.h"
#include "zero.h"
#include "util/log.h"
#include "util/procmem.h"

static int trainer_check_config(const Config *cfg, Err *e) {
    if (backend_check(cfg->model.backend, "model.backend", e)) return -1;
    if (cfg->train.mode == CFG_MODE_GRPO && cfg->rollout.num_generations < 2)
        return err_set(e, "rollout.num_generations %d: GRPO advantages need at least 2 completions per question",
                       cfg->rollout.num_generations);
    if (config_require(cfg, "model.path", e) || config_require(cfg, "data.train", e)) return -1;
    return 0;
}

// A GPU learner's memory plan (memplan.h) for this config, R1-AQA's prompt shape (one 30 s clip, cut to
// what the model's encoder takes): refused when it exceeds the card's free memory.
static int trainer_memory_check(const Trainer *t, const ModelConfig *mc, Err *e) {
    double free_b, total_b;
    if (backend_gpu_memory(t->ops, &free_b, &total_b)) return 0;  // the CPU backend
    const Config *cfg = t->cfg;
    MemPlanOptions o = memplan_defaults();
    const int text_tokens = o.prompt_tokens - o.audio_tokens, max_audio = audio_token_count(2 * mc->a_max_pos);
    o.audio_tokens = o.audio_tokens < max_audio ? o.audio_tokens : max_audio;
    o.prompt_tokens = o.audio_tokens + text_tokens;
    o.learners = t->comm->role_size;
    o.gpu_gib = total_b / MEMPLAN_GIB;
    o.G = cfg->rollout.num_generations;
    o.completion_tokens = o.max_new_tokens = cfg->rollout.max_new_tokens;
    int per_micro = cfg->train.questions_per_step / cfg->train.grad_accum;
    o.groups = (per_micro + o.learners - 1) / o.learners;
    o.act_size = cfg->model.dtype == CFG_DTYPE_BF16 ? 2 : 4;
    o.offload = cfg->optim.offload == CFG_OFFLOAD_HOST;
    // colocated: a rollout shares this GPU (a GRPO job with rollouts; SFT has none)
    o.colocated = weights_transport_decide(cfg, t->comm->n_rollouts, 0) == WEIGHTS_SHARED;
    o.bucket_mb = cfg->train.grad_bucket_mb;
    o.questions = cfg->rollout.batch_questions;
    o.ring_slots = ZERO_RING;
    MemPlan p;
    if (memplan_build(mc, &o, &p, e) || memplan_learner_fits(&p, cfg->model.recompute, free_b, total_b, e))
        return err_prefix(e, "learner %d, model %s, %d new tokens x G %d", t->comm->role_rank, cfg->model.path,
                          o.max_new_tokens, o.G);
    char pair[64] = "";
    if (o.colocated) snprintf(pair, sizeof pair, " + its rollout %.2f GiB", p.rollout_total / MEMPLAN_GIB);
    if (t->comm->role_rank == 0)
        log_info("memory plan: GPU: learner %.2f GiB%s of %.2f; learner host peak %.2f GiB (load %.2f, init %.2f, "
                 "step %.2f, checkpoint %.2f; aqa-memplan prints the plan)",
                 memplan_learner_need(&p, cfg->model.recompute) / MEMPLAN_GIB, pair, total_b / MEMPLAN_GIB,
                 p.host_peak / MEMPLAN_GIB, p.host_load / MEMPLAN_GIB, p.host_init / MEMPLAN_GIB,
                 p.host_step / MEMPLAN_GIB, p.host_ckpt / MEMPLAN_GIB);
    return 0;
}

// The policy's weights. The CPU learner: the fp32 weights, which become the master copy. The GPU learner:
// straight into the GPU (bf16 files as their bytes: model_load_device), its master shard read from the
// files later (trainer_zero_init), so the host never holds an fp32 copy of the model.
static int trainer_load_model(Trainer *t, const ModelConfig *mc, Err *e) {
    const char *dir = t->cfg->model.path;
    if (t->cfg->model.backend == CFG_BACKEND_CUDA) return model_load_device(&t->model, dir, t->ops, e);
    ModelConfig c;
    ParamTable table;
    if (model_load_dir(dir, &c, &table, &t->master, e)) return -1;
    param_table_free(&table);
    model_init(&t->model, mc, t->ops, t->master);
    return 0;
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
    if (hf_config_load(cfg->model.path, &mc, e)) return err_prefix(e, "model.path");
    if (model_config_check(&mc, e)) return err_prefix(e, "%s", cfg->model.path);
    // model.backend: the CPU, or the GPU of this learner's index on its node; a GPU too small for the
    // plan is refused before the weights are read
    t->ops = backend_create_rank(comm, cfg, cfg->model.backend, "model.backend", e);
    if (!t->ops || trainer_memory_check(t, &mc, e)) return -1;
    if (trainer_load_model(t, &mc, e)) return err_prefix(e, "model.path");
    log_debug("model %s loaded", cfg->model.path);
    // colocated: the model's parameters become the ones this learner's rollout reads in place
    if (weights_link_share_learner(&t->wlink, comm, cfg, &t->model, e)) return -1;
    size_t n = t->model.t.numel;
    t->grad_dev = t->ops->alloc(t->ops, n * t->ops->act_size);
    mbatch_init(&t->batch, &mc);
    if (cfg->model.backend == CFG_BACKEND_CUDA) {
        if (trainer_zero_init(t, e)) return -1;
    } else {
        t->grad = mallocCheck(n * sizeof(float));
        adamw_init(&t->opt, n);
    }
    weights_link_init(&t->wlink, comm, cfg);
    // A GPU learner root sending over MPI sends the bf16 weights it trains with, as over NCCL, from here.
    if (t->zero && t->wlink.transport == WEIGHTS_MPI && comm->role_rank == 0 && comm->n_rollouts > 0)
        t->wbuf = mallocCheck(n * sizeof(float));
    t->adamw = (AdamWConfig){.beta1 = cfg->optim.beta1,
                             .beta2 = cfg->optim.beta2,
                             .eps = cfg->optim.eps,
                             .weight_decay = cfg->optim.weight_decay};
    int64_t mu = cfg->train.mode == CFG_MODE_GRPO ? cfg->grpo.num_iterations : 1;
    t->lr = (LrConfig){.kind = cfg->optim.schedule,
                       .lr = cfg->optim.lr,
                       .warmup_steps = cfg->optim.warmup_steps * mu,
                       .max_steps = t->n_steps * mu,
                       .num_cycles = 0.5};
    if (lr_config_check(&t->lr, e)) return err_prefix(e, "optim");
    if (comm->role_rank == 0)
        log_info("learner ready: host memory peak so far (VmHWM) %.2f GiB", procmem_peak_bytes() / MEMPLAN_GIB);
    return 0;
}

void trainer_free(Trainer *t) {
    if (t->zero) trainer_zero_free(t);
    weights_link_free(&t->wlink);
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
    if (t->zero) trainer_zero_arm(t, last);
    model_backward(&t->model, &t->batch, t->acts, t->dlp, t->grad_dev);
}

int trainer_update(Trainer *t, int64_t update, double *grad_norm, double *lr, UpdateTimes *tm, Err *e) {
    // colocated: not while the rollout still reads the weights this update overwrites
    if (weights_link_begin_update(&t->wlink, t->comm, e)) return err_prefix(e, "update %lld", (long long)update);
    if (t->zero) return trainer_zero_update(t, update, grad_norm, lr, tm, e);
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
    if (t->wbuf) t->ops->download_act(t->ops, t->wbuf, t->model.params, n);
    return weights_link_bcast(&t->wlink, t->comm, t->zero ? t->wbuf : t->master, t->model.params, n, version,
                              backend_stream(t->ops), e);
}

void trainer_part_get(Trainer *t, TrainerPart *p, int current) {
    memset(p, 0, sizeof *p);
    if (t->zero) {
        trainer_zero_part_get(t, p, current);
        return;
    }
    int64_t n = (int64_t)t->model.t.numel, r = t->comm->role_rank, L = t->comm->role_size;
    int64_t lo = n * r / L, hi = n * (r + 1) / L;
    p->shard = (TrainerShard){.n_params = n, .offset = lo, .count = hi - lo, .rank = (int)r, .n_ranks = (int)L};
    p->master = t->master + lo;
    p->m = t->opt.m + lo;
    p->v = t->opt.v + lo;
}

// Every learner's cut of x [n] to all the others (MPI counts are ints: chunks).
static void trainer_share_cuts(const Comm *c, float *x, int64_t n) {
    const int64_t chunk = (int64_t)1 << 30;
    for (int r = 0; r < c->role_size; r++) {
        int64_t lo = n * r / c->role_size, hi = n * (r + 1) / c->role_size;
        for (int64_t off = lo; off < hi; off += chunk) {
            int k = (int)(hi - off < chunk ? hi - off : chunk);
            MPI_CHECK(MPI_Bcast(x + off, k, MPI_FLOAT, r, c->role_comm));
        }
    }
}

void trainer_part_put(Trainer *t, TrainerPart *p) {
    if (t->zero) {
        trainer_zero_part_put(t, p);
        return;
    }
    int64_t n = (int64_t)t->model.t.numel;
    float *arr[3] = {t->master, t->opt.m, t->opt.v};
    for (int a = 0; a < 3; a++) trainer_share_cuts(t->comm, arr[a], n);
    t->ops->upload_act(t->ops, t->model.params, t->master, (size_t)n);
}

void trainer_part_release(TrainerPart *p) {
    if (p->copy) {
        free(p->master);
        free(p->m);
        free(p->v);
    }
    free(p->shard.segs);
    memset(p, 0, sizeof *p);
}
