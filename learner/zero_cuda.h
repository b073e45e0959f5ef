// zero_cuda.h: the optimizer update of L GPU learners with ZeRO-1 (CUDA builds only). The model keeps
// bf16 weights and a bf16 gradient buffer in the CUDA backend; each learner holds fp32 master weights
// and AdamW moments for its shard only (zero.h) on its GPU. Per update:
//   reduce-scatter of the gradient bucket by bucket (bf16: the backend accumulates the gradient in bf16
//   already, so fp32 traffic would carry no more information, and it halves the bytes and needs no fp32
//   copy of the whole gradient), on a stream of its own; with zero_cuda_arm, model_backward's gradient
//   hook starts each bucket as soon as its layers are final, ordered after the backend's stream by
//   events, while backward goes on;
//   squared norm of the shard -> all-reduce -> global-norm clip scale (one host sync: the norm is
//   reported, and a non-finite one stops the update);
//   AdamW on the shard (optim_cuda.h) -> all-gather of the bf16 weights into every learner's model.
// The gradient is the mean over learners (the DDP rule of trainer_update).
// With optim.offload=host the fp32 master weights and moments live in pinned host memory instead: right
// after each bucket's reduce-scatter (while backward goes on; the device keeps one bucket's piece, reused
// in stream order) the piece's parameters go back into their own place in the gradient buffer, which
// nothing else reads any more in this update, and their squared norm is taken there; the buckets' norms
// are summed on the host. zero_cuda_step then runs the host AdamW (adamw_step_bf16, optim.c's
// arithmetic) bucket by bucket through two small pinned rings (ZERO_RING slots of one piece each): each
// piece's reduced gradient copied down ahead of the CPU, its updated bf16 weights copied up and
// all-gathered while the CPU updates the next piece. The host holds the fp32 shard state and the rings,
// nothing of the model's size besides. The master shard is filled straight from its source (zero.h
// ZeroSource: a checkpoint's files) before the moments are allocated, so no fp32 copy of the model
// exists beside it.
#pragma once
#include <cuda_runtime.h>

#include "comm/nccl.h"
#include "model/model.h"
#include "optim.h"
#include "zero.h"

// Pinned bf16 slots of one bucket piece each, between the GPU and the host AdamW: the CPU works on one
// slot while the copy of another is in flight.
typedef struct {
    uint16_t *slot;               // [ZERO_RING][max_piece]
    cudaEvent_t done[ZERO_RING];  // the last copy into / out of slot k has finished
} ZeroRing;

typedef struct ZeroCuda {
    ZeroLayout z;
    Nccl nccl;       // over the learners
    Model *model;
    Tensor *grad;    // [numel] the backend's gradient buffer model_backward accumulates into
    cudaStream_t compute, comm;
    cudaEvent_t ev;
    int offload;            // optim.offload=host: master, m, v are pinned host memory
    float *master, *m, *v;  // [shard_n] fp32, on the device (or the host with offload)
    int rank;               // this learner's index among the learners
    ZeroRing up;            // updated bf16 weights on their way up to pshard
    ZeroRing down;          // offload: reduced gradient pieces on their way down to the host AdamW
    size_t max_piece;       // the largest bucket piece (z.max_padded / L)
    double *sums, *sums_host;  // offload: [n_buckets] each bucket piece's squared norm (device, pinned host)
    void *gshard;           // [shard_n] bf16: this rank's reduced gradient pieces (offload: one piece)
    void *pshard;           // [shard_n] bf16: its updated weights, all-gathered (offload: one piece)
    void *stage;            // [z.max_padded] bf16: a bucket padded to L * piece
    double *partials, *sumsq, *sumsq_host;  // norm reduction scratch (device), result (pinned host)
    int launched;           // buckets whose reduce-scatter is enqueued in this update
} ZeroCuda;

// Collective over the learners (c->role_comm), each on its own GPU (the current device, the one of
// m's backend). src: the fp32 weights, this rank's shard of which becomes the master copy (an error of
// src's is returned as it is); src->release is called on every outcome, before the rest of the state is
// allocated. offload: optim.offload=host (see above).
int zero_cuda_init(ZeroCuda *zc, Model *m, Tensor *grad, const Comm *c, const ZeroSource *src, size_t bucket_elems,
                   int offload, double timeout_s, Err *e);
void zero_cuda_free(ZeroCuda *zc);

// on = 1: the next model_backward starts each bucket's reduction as soon as it is final (the last
// micro-batch before an update); on = 0: backward only accumulates.
void zero_cuda_arm(ZeroCuda *zc, int on);

// The update in two halves. zero_cuda_reduce: the buckets not started yet, then the global norm of the
// learners' mean gradient (*norm; waits for it). zero_cuda_step: clip to max_norm (0: off), AdamW with
// learning rate lr and step `step` (updates taken, this one included), the all-gather of the weights,
// the gradient buffer zeroed; nothing waits on the host. A caller that finds the norm unusable stops
// before zero_cuda_step (nothing has changed then).
void zero_cuda_reduce(ZeroCuda *zc, double *norm);
void zero_cuda_step(ZeroCuda *zc, const AdamWConfig *cfg, double lr, int64_t step, double max_norm, double norm);

// This rank's shard of the master weights and moments, to / from host arrays [z.shard_n] (with offload
// they may be the pinned state itself). zero_cuda_upload is collective over the learners: it also sets
// the model's bf16 weights to bf16(master), all-gathered from every shard piece by piece through the
// ring, as an update does.
void zero_cuda_download(ZeroCuda *zc, float *master, float *m, float *v);
void zero_cuda_upload(ZeroCuda *zc, const float *master, const float *m, const float *v);
