// weights.h: how the weights travel from the learner root to the rollouts, decided in one place for both
// roles: the two sides of a broadcast must pick the same transport at the same point of the job, or the
// job deadlocks in mismatched collectives.
//   WEIGHTS_MPI   fp32 host buffers over MPI (comm_bcast_weights); always possible.
//   WEIGHTS_NCCL  bf16 device buffers over NCCL (nccl_bcast_weights), straight into the rollouts' device
//                 parameters: a GRPO job whose learners and rollouts all run on CUDA, with rollouts, when
//                 the learner root and every rollout each have their own GPU.
// Colocated placement (the learner root and a rollout on one GPU: the one-GPU debug mode) goes over MPI
// today; a CUDA-IPC transport for it would be a third value here, chosen by weights_transport_decide and
// run by weights_link_init / weights_link_bcast. Plain C for both builds: a CPU-only build always gets MPI.
#pragma once
#include <stddef.h>
#include <stdint.h>

#include "comm/comm.h"
#include "config/config.h"

typedef enum { WEIGHTS_MPI = 0, WEIGHTS_NCCL = 1 } WeightsTransport;

const char *weights_transport_name(WeightsTransport t);

// The decision from what every rank of the broadcast knows alike: the config, the number of rollout
// ranks, and whether the learner root and the rollouts all run on distinct GPUs (nccl_distinct_devices;
// only asked when the rest of the decision is NCCL).
WeightsTransport weights_transport_decide(const Config *cfg, int n_rollouts, int distinct_gpus);

typedef struct WeightsLink {
    WeightsTransport transport;
    struct Nccl *nccl;  // WEIGHTS_NCCL: the communicator over c->bcast_comm; NULL otherwise
} WeightsLink;

// Decides the transport and sets it up. Learners other than the root (outside the broadcast) get MPI at
// once; for the others it is collective over c->bcast_comm when the config puts both roles on CUDA (the
// device check, then the NCCL communicator), local otherwise. The learner root logs the decision.
void weights_link_init(WeightsLink *l, const Comm *c, const Config *cfg);
void weights_link_free(WeightsLink *l);

// Weight broadcast of version `version` (the contract of comm_bcast_weights) over the link:
//   MPI:  host [n] fp32 (the root's source, a rollout's destination); params and stream unused;
//   NCCL: params [n] bf16 in device memory (the model's), enqueued on stream (backend_stream); host unused.
// On a refused version or size a rollout leaves its buffer untouched and returns -1 with Err.
int weights_link_bcast(const WeightsLink *l, const Comm *c, float *host, void *params, size_t n, int64_t version,
                       void *stream, Err *e);
