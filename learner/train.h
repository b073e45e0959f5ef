// train.h: the learner's training state and the parts of a step that GRPO and SFT share: the policy
// model and its fp32 master weights, the gradient buffers, forward/backward of one micro-batch, and the
// optimizer update (mean of the gradient over learners, global-norm clipping, AdamW with the
// learning-rate schedule). model.backend=cpu: every learner holds the whole optimizer state on the host
// (replicated, as DDP): they apply the same all-reduced gradient to the same weights and so stay
// identical without a broadcast. model.backend=cuda: one GPU per learner, bf16 weights and gradient in
// the backend, and ZeRO-1 (zero_cuda.h): fp32 master weights and moments of this learner's shard on its
// GPU, gradients reduce-scattered over NCCL (overlapping the last micro-batch's backward), the updated
// weights all-gathered into every learner's model.
// The data side (dataset, question order, question preparation) lives here too because both modes
// reach questions through it.
#pragma once
#include <stdint.h>

#include "ckpt/trainer_state.h"
#include "comm/comm.h"
#include "comm/weights.h"
#include "config/config.h"
#include "data/dataset.h"
#include "data/order.h"
#include "model/model.h"
#include "optim.h"
#include "pipeline/prepare.h"
#include "util/check.h"

typedef struct {
    const Config *cfg;
    const Comm *comm;
    Ops *ops;
    Model model;       // the policy; model.params mirrors master after every update
    // [numel] fp32 weights and (opt.m, opt.v) moments the optimizer updates, on the host. A GPU learner
    // keeps only its shard of them, on its GPU or in pinned host memory (zero); these stay NULL.
    float *master;
    float *grad;       // [numel] host copy of the gradient: local sum, then the learners' mean (cpu)
    Tensor *grad_dev;  // [numel] backend buffer model_backward accumulates into
    AdamW opt;
    struct ZeroCuda *zero;  // model.backend=cuda: the ZeRO-1 update; NULL on the CPU
    WeightsLink wlink;      // the weight broadcast to the rollouts (its transport decided in weights.h)
    float *wbuf;            // [numel] GPU learner root broadcasting over MPI: fp32 copy of the weights
    AdamWConfig adamw;
    LrConfig lr;      // over optimizer updates: train steps x grpo.num_iterations
    ModelActs *acts;  // training activations, regrown when a batch needs more
    int acts_tokens, acts_audio, acts_tgt;
    ModelBatch batch;  // the micro-batch being built / run
    float *lp, *dlp;   // [batch.n_tgt] target log-probs and d loss / d lp
    int lp_cap;
    Dataset data;
    Order order;
    PrepContext prep;
    int eos[2];       // <|im_end|>, <|endoftext|>
    int64_t n_steps;  // steps in the whole run (schedule_total_steps)
    int64_t step;     // steps completed (= the weights version rollouts sample with next)
} Trainer;

// Timings of the parts of an optimizer update (seconds).
typedef struct {
    double allreduce, optim;
} UpdateTimes;

// Loads the model (model.path), the dataset (data.train), the tokenizer; zero optimizer state at step 0.
// model.backend=cuda takes the GPU of this learner's index on its node (backend.h) and sets up NCCL among
// the learners (train_zero.h); the weight link (weights.h) is collective for the learner root with the
// rollouts in a GRPO job with everything on CUDA. Collective over the learners with model.backend=cuda.
int trainer_init(Trainer *t, const Config *cfg, const Comm *comm, Err *e);
void trainer_free(Trainer *t);

// Forward of t->batch (train activations, regrown as needed; only the layer inputs with model.recompute):
// t->lp [batch.n_tgt] gets the targets' log-probs.
int trainer_forward(Trainer *t, Err *e);
// Backward of the last trainer_forward with t->dlp; accumulates into the gradient. last: the last
// micro-batch before trainer_update, whose backward starts the GPU learners' gradient reduction
// bucket by bucket as layers finish.
void trainer_backward(Trainer *t, int last);
// The optimizer update for update number `update` (0-based over the run): all-reduce the accumulated
// gradient and divide by the learners, clip to optim.grad_clip, AdamW at lr_at(update), upload the new
// weights, zero the gradient. *grad_norm is the norm before clipping; a non-finite norm is an error and
// nothing is updated.
int trainer_update(Trainer *t, int64_t update, double *grad_norm, double *lr, UpdateTimes *tm, Err *e);
// Sends the weights to every rollout rank as version `version` (learner root; others return at once):
// over the transport of t->wlink (weights.h): NCCL from the GPU straight into the rollouts' GPUs, or MPI;
// colocated, every learner publishes the version to its rollout, which reads the weights in place (an
// update first waits for the rollout to release them: trainer_update).
int trainer_sync_weights(Trainer *t, int64_t version, Err *e);

// Checkpoints: the part of the optimizer state this learner writes and reads, on the host, as a shard of
// the flat parameters (trainer_state.h) with its arrays [shard.count]. CPU learners (replicated state)
// take cut r of L: parameters [numel r / L, numel (r + 1) / L), the arrays pointing into t->master and
// t->opt. GPU learners take their ZeRO-1 shard (one segment per gradient bucket): with optim.offload=host
// the pinned host state itself, else a host copy of the GPU's (its shard, never more).
typedef struct {
    TrainerShard shard;     // segs owned here
    float *master, *m, *v;  // [shard.count]
    int copy;               // the arrays are host copies (freed by trainer_part_release)
} TrainerPart;

// This learner's part: with `current`, holding the optimizer state now (for a save); without, the
// buffers a restore fills (every segment) before trainer_part_put.
void trainer_part_get(Trainer *t, TrainerPart *p, int current);
// Collective over the learners, after every learner filled its part: takes them into the optimizer and
// the model (CPU learners share their cuts; GPU learners upload theirs and all-gather the bf16 weights).
void trainer_part_put(Trainer *t, TrainerPart *p);
void trainer_part_release(TrainerPart *p);
