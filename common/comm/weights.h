// weights.h: how the weights travel from the learner root to the rollouts, decided in one place for both
// roles: the two sides of a broadcast must pick the same transport at the same point of the job, or the
// job deadlocks in mismatched collectives.
//   WEIGHTS_MPI   fp32 host buffers over MPI (comm_bcast_weights); always possible.
//   WEIGHTS_NCCL  bf16 device buffers over NCCL (nccl_bcast_weights), straight into the rollouts' device
//                 parameters: a GRPO job whose learners and rollouts all run on CUDA, with rollouts, when
//                 the learner root and every rollout each have their own GPU.
//   WEIGHTS_SHARED  nothing travels (train.placement=colocated): learner k and rollout k share one
//                 parameter buffer (comm/wshare.h: POSIX shared memory on the CPU, CUDA IPC on GPUs),
//                 and "sending version v" is the versioned handshake: the learner publishes v after its
//                 update has written the weights, the rollout acquires v before generating and releases
//                 it after, and the learner's next update waits for that release.
// Disaggregated GPUs that share a device (the one-GPU debug mode) go over MPI. Plain C for both builds: a
// CPU-only build gets MPI or SHARED.
#pragma once
#include <stddef.h>
#include <stdint.h>

#include "comm/comm.h"
#include "config/config.h"

typedef enum { WEIGHTS_MPI = 0, WEIGHTS_NCCL = 1, WEIGHTS_SHARED = 2 } WeightsTransport;
struct Model;

const char *weights_transport_name(WeightsTransport t);

// The decision from what every rank of the broadcast knows alike: the config (train.placement first),
// the number of rollout ranks, and whether the learner root and the rollouts all run on distinct GPUs
// (nccl_distinct_devices; only asked when the rest of the decision is NCCL).
WeightsTransport weights_transport_decide(const Config *cfg, int n_rollouts, int distinct_gpus);

typedef struct WeightsLink {
    WeightsTransport transport;
    struct Nccl *nccl;  // WEIGHTS_NCCL: the communicator over c->bcast_comm; NULL otherwise
    struct WShare *share;  // WEIGHTS_SHARED: the pair's buffer and handshake word; NULL otherwise
    int peer;              // WEIGHTS_SHARED: world rank of the paired rank (learner k <-> rollout k) on world
    MPI_Comm world;
    // WEIGHTS_SHARED: learner: the version published whose release has not come back; rollout: the
    // version held (acquired, not released); -1: none
    int64_t held;
} WeightsLink;

// Colocated placement, before weights_link_init (which then keeps the link): collective between learner
// k and rollout k, once at start. The learner shares its model's parameters (on the CPU they move into a
// shared-memory segment; on a GPU their allocation is exported) and sends the handle; the rollout checks
// that it sits on the learner's node (and GPU), maps them and returns them in *params ([bytes], for
// model_init_at), so it holds no policy weights of its own. Disaggregated: nothing happens (*params NULL).
int weights_link_share_learner(WeightsLink *l, const Comm *c, const Config *cfg, struct Model *m, Err *e);
int weights_link_share_rollout(WeightsLink *l, const Comm *c, const Config *cfg, size_t bytes, void **params,
                               Err *e);

// Decides the transport and sets it up (a shared link is kept as it is). Learners other than the root (outside the broadcast) get MPI at
// once; for the others it is collective over c->bcast_comm when the config puts both roles on CUDA (the
// device check, then the NCCL communicator), local otherwise. The learner root logs the decision.
void weights_link_init(WeightsLink *l, const Comm *c, const Config *cfg);
// SHARED: the rollout unmaps and tells its learner, which waits for that before it frees the buffer.
void weights_link_free(WeightsLink *l);

// Weight broadcast of version `version` (the contract of comm_bcast_weights) over the link:
//   MPI:  host [n] fp32 (the root's source, a rollout's destination); params and stream unused;
//   NCCL: params [n] bf16 in device memory (the model's), enqueued on stream (backend_stream); host unused.
//   SHARED (every learner, with its rollout): the learner waits for stream (its update's writes), then
//         publishes `version`; the rollout waits for its learner's publish and acquires it. host, params
//         and n unused.
// On a refused version or size a rollout leaves its buffer untouched and returns -1 with Err.
int weights_link_bcast(WeightsLink *l, const Comm *c, float *host, void *params, size_t n, int64_t version,
                       void *stream, Err *e);
// SHARED rollout, after the last read of the version it holds (its kernels on stream are waited for):
// releases it and tells its learner. Other transports (or nothing held): nothing.
int weights_link_release(WeightsLink *l, const Comm *c, void *stream, Err *e);
// SHARED learner, before an optimizer update writes the weights: waits for the release of the version
// it published, then marks the weights mid-update (refused while a rollout still holds them). Other
// transports (or no version out): nothing.
int weights_link_begin_update(WeightsLink *l, const Comm *c, Err *e);
