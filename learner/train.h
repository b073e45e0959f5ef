// train.h: the learner's training state and the parts of a step that GRPO and SFT share: the policy
// model and its fp32 master weights, the gradient buffers, forward/backward of one micro-batch, and the
// optimizer update (all-reduce of the gradient over learners, global-norm clipping, AdamW with the
// learning-rate schedule). Every learner holds the whole optimizer state (replicated, as DDP): they
// apply the same all-reduced gradient to the same weights and so stay identical without a broadcast.
// The data side (dataset, question order, question preparation) lives here too because both modes
// reach questions through it.
#pragma once
#include <stdint.h>

#include "comm/comm.h"
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
    float *master;     // [numel] fp32 weights the optimizer updates (host)
    float *grad;       // [numel] host copy of the gradient: local sum, then the learners' mean
    Tensor *grad_dev;  // [numel] backend buffer model_backward accumulates into
    AdamW opt;
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
// Unsupported settings for this learner (a CUDA learner backend) are errors naming the key.
int trainer_init(Trainer *t, const Config *cfg, const Comm *comm, Err *e);
void trainer_free(Trainer *t);

// Forward of t->batch (train activations, regrown as needed; only the layer inputs with model.recompute):
// t->lp [batch.n_tgt] gets the targets' log-probs.
int trainer_forward(Trainer *t, Err *e);
// Backward of the last trainer_forward with t->dlp; accumulates into the gradient.
void trainer_backward(Trainer *t);
// The optimizer update for update number `update` (0-based over the run): all-reduce the accumulated
// gradient and divide by the learners, clip to optim.grad_clip, AdamW at lr_at(update), upload the new
// weights, zero the gradient. *grad_norm is the norm before clipping; a non-finite norm is an error and
// nothing is updated.
int trainer_update(Trainer *t, int64_t update, double *grad_norm, double *lr, UpdateTimes *tm, Err *e);
// Sends the weights to every rollout rank as version `version` (learner root; others return at once).
int trainer_sync_weights(Trainer *t, int64_t version, Err *e);
