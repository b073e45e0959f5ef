// weights.c: see weights.h.
#include "comm/weights.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "comm/wshare.h"
#include "model/model.h"
#include "util/log.h"
#ifdef AQA_CUDA
#include "comm/nccl.h"
#endif

const char *weights_transport_name(WeightsTransport t) {
    return t == WEIGHTS_NCCL ? "NCCL" : t == WEIGHTS_SHARED ? "shared (colocated)" : "MPI";
}

WeightsTransport weights_transport_decide(const Config *cfg, int n_rollouts, int distinct_gpus) {
    if (cfg->train.mode == CFG_MODE_GRPO && n_rollouts >= 1 && cfg->train.placement == CFG_PLACEMENT_COLOCATED)
        return WEIGHTS_SHARED;
    int all_cuda = cfg->model.backend == CFG_BACKEND_CUDA && cfg->rollout.backend == CFG_BACKEND_CUDA;
    if (cfg->train.mode != CFG_MODE_GRPO || n_rollouts < 1 || !all_cuda) return WEIGHTS_MPI;
    return distinct_gpus ? WEIGHTS_NCCL : WEIGHTS_MPI;
}

// The handshake between learner k and rollout k: {kind, version} as two int64 on Comm.world.
enum { PAIR_MAPPED = 1, PAIR_PUBLISHED = 2, PAIR_RELEASED = 3, PAIR_CLOSED = 4 };
static const char *const pair_kind_names[] = {"?", "mapped", "published", "released", "closed"};

static void pair_send(const WeightsLink *l, int64_t kind, int64_t version) {
    int64_t m[2] = {kind, version};
    MPI_CHECK(MPI_Send(m, 2, MPI_INT64_T, l->peer, COMM_TAG_WEIGHTS, l->world));
}

// The peer's next message, which must be of `kind`; returns its version.
static int64_t pair_recv(const WeightsLink *l, int64_t kind) {
    int64_t m[2];
    MPI_CHECK(MPI_Recv(m, 2, MPI_INT64_T, l->peer, COMM_TAG_WEIGHTS, l->world, MPI_STATUS_IGNORE));
    if (m[0] != kind)
        comm_abort("shared weights: \"%s\" expected from world rank %d, got kind %lld (version %lld)",
                   pair_kind_names[kind], l->peer, (long long)m[0], (long long)m[1]);
    return m[1];
}

// The shared link of learner k <-> rollout k, before its buffer exists; both roles refuse unpaired counts.
static int share_link(WeightsLink *l, const Comm *c, Err *e) {
    if (c->n_rollouts != c->n_learners)
        return err_set(e, "train.placement=colocated: %d learners but %d rollouts", c->n_learners, c->n_rollouts);
    int k = c->role_rank;
    *l = (WeightsLink){.transport = WEIGHTS_SHARED, .world = c->world, .held = -1,
                       .peer = c->role == ROLE_LEARNER ? c->rollout_ranks[k] : c->learner_ranks[k]};
    l->share = callocCheck(1, sizeof *l->share);
    return 0;
}

static void host_name(char *buf, size_t cap) {
    char name[MPI_MAX_PROCESSOR_NAME];
    int n = 0;
    MPI_CHECK(MPI_Get_processor_name(name, &n));
    size_t k = strnlen(name, cap - 1);  // a longer name is cut: it only serves messages
    memcpy(buf, name, k);
    buf[k] = 0;
}

int weights_link_share_learner(WeightsLink *l, const Comm *c, const Config *cfg, Model *m, Err *e) {
    if (weights_transport_decide(cfg, c->n_rollouts, 0) != WEIGHTS_SHARED) return 0;
    if (share_link(l, c, e)) return -1;
    WShareHandle h;
    char tag[32];
    snprintf(tag, sizeof tag, "l%d", c->role_rank);
    const size_t bytes = m->t.numel * m->ops->act_size;
    const int cuda = cfg->model.backend == CFG_BACKEND_CUDA;
    if (wshare_create(l->share, bytes, cuda ? m->params : NULL, tag, &h, e)) return -1;
    if (!cuda) model_params_move(m, l->share->params);  // the CPU weights live in the segment from now on
    h.node_id = c->node_id;
    host_name(h.host, sizeof h.host);
    MPI_CHECK(MPI_Send(&h, (int)sizeof h, MPI_BYTE, l->peer, COMM_TAG_WEIGHTS, c->world));
    pair_recv(l, PAIR_MAPPED);
    wshare_unlink(l->share);  // both sides have it mapped: nothing is left behind if the job dies
    log_info("learner %d: weights shared in place with rollout %d (%s, %.1f MiB)", c->role_rank, c->role_rank,
             cuda ? "CUDA IPC" : "POSIX shared memory", bytes / 1048576.0);
    return 0;
}

int weights_link_share_rollout(WeightsLink *l, const Comm *c, const Config *cfg, size_t bytes, void **params,
                               Err *e) {
    *params = NULL;
    if (weights_transport_decide(cfg, c->n_rollouts, 0) != WEIGHTS_SHARED) return 0;
    if (share_link(l, c, e)) return -1;
    WShareHandle h;
    MPI_CHECK(MPI_Recv(&h, (int)sizeof h, MPI_BYTE, l->peer, COMM_TAG_WEIGHTS, c->world, MPI_STATUS_IGNORE));
    h.host[sizeof h.host - 1] = 0;
    char me[sizeof h.host];
    host_name(me, sizeof me);
    if (h.node_id != c->node_id)
        return err_set(e, "train.placement=colocated: rollout %d runs on %s, its learner %d on %s: a pair must share a "
                          "node (place rank k of both roles on one node)",
                       c->role_rank, me, c->role_rank, h.host);
    if (h.bytes != bytes)
        return err_set(e, "shared weights: the learner's buffer has %llu bytes, the policy needs %zu",
                       (unsigned long long)h.bytes, bytes);
    if (wshare_open(l->share, &h, e)) return err_prefix(e, "rollout %d", c->role_rank);
    pair_send(l, PAIR_MAPPED, -1);
    *params = l->share->params;
    return 0;
}

void weights_link_init(WeightsLink *l, const Comm *c, const Config *cfg) {
    if (l->transport == WEIGHTS_SHARED && l->share) return;
    if (weights_transport_decide(cfg, c->n_rollouts, 1) == WEIGHTS_SHARED)
        comm_abort("train.placement=colocated: weights_link_init before weights_link_share_%s", role_name(c->role));
    *l = (WeightsLink){.transport = WEIGHTS_MPI};
    if (c->bcast_comm == MPI_COMM_NULL || weights_transport_decide(cfg, c->n_rollouts, 1) == WEIGHTS_MPI) return;
    int distinct = 0;
#ifdef AQA_CUDA
    distinct = nccl_distinct_devices(c->bcast_comm);
#endif
    l->transport = weights_transport_decide(cfg, c->n_rollouts, distinct);
    if (l->transport == WEIGHTS_MPI) {
        if (c->role == ROLE_LEARNER)
            log_info("weight broadcast over MPI: the learner root and the rollouts do not each have their own GPU");
        return;
    }
#ifdef AQA_CUDA
    l->nccl = callocCheck(1, sizeof *l->nccl);
    nccl_init(l->nccl, c->bcast_comm, cfg->train.nccl_timeout_s);
    if (c->role == ROLE_LEARNER) log_info("weight broadcast over NCCL to %d rollouts", l->nccl->size - 1);
#endif
}

void weights_link_free(WeightsLink *l) {
    if (l->share) {
        // The rollout lets go first: the learner frees the buffer only after that.
        if (l->share->owner) {
            pair_recv(l, PAIR_CLOSED);
            wshare_close(l->share);
        } else {
            wshare_close(l->share);
            pair_send(l, PAIR_CLOSED, -1);
        }
        free(l->share);
        l->share = NULL;
    }
#ifdef AQA_CUDA
    if (l->nccl) nccl_free(l->nccl);
#endif
    free(l->nccl);
    l->nccl = NULL;
}

int weights_link_begin_update(WeightsLink *l, const Comm *c, Err *e) {
    (void)c;
    if (l->transport != WEIGHTS_SHARED || l->held < 0) return 0;
    int64_t v = pair_recv(l, PAIR_RELEASED);
    if (v != l->held) return err_set(e, "shared weights: the rollout released version %lld, %lld was out", (long long)v,
                                     (long long)l->held);
    l->held = -1;
    return wshare_begin_update(l->share->ctl, e);
}

int weights_link_release(WeightsLink *l, const Comm *c, void *stream, Err *e) {
    (void)c;
    if (l->transport != WEIGHTS_SHARED || l->held < 0) return 0;
    wshare_stream_sync(stream);
    if (wshare_release(l->share->ctl, l->held, e)) return -1;
    pair_send(l, PAIR_RELEASED, l->held);
    l->held = -1;
    return 0;
}

// SHARED: the learner publishes (after its update's writes), the rollout acquires what it was announced.
static int shared_sync(WeightsLink *l, const Comm *c, int64_t version, void *stream, Err *e) {
    if (c->role == ROLE_LEARNER) {
        // A version published with no update since (the same weights again) is retired first.
        if (weights_link_begin_update(l, c, e)) return -1;
        wshare_stream_sync(stream);
        if (wshare_publish(l->share->ctl, version, e)) return -1;
        pair_send(l, PAIR_PUBLISHED, version);
        l->held = version;
        return 0;
    }
    if (l->held >= 0)
        return err_set(e, "shared weights: version %lld asked for while version %lld is still held", (long long)version,
                       (long long)l->held);
    int64_t v = pair_recv(l, PAIR_PUBLISHED);
    if (v != version)
        return err_set(e, "shared weights: the learner published version %lld, version %lld was due", (long long)v,
                       (long long)version);
    if (wshare_acquire(l->share->ctl, version, e)) return -1;
    l->held = version;
    return 0;
}

int weights_link_bcast(WeightsLink *l, const Comm *c, float *host, void *params, size_t n, int64_t version,
                       void *stream, Err *e) {
    if (l->transport == WEIGHTS_SHARED) return shared_sync(l, c, version, stream, e);
#ifdef AQA_CUDA
    if (l->transport == WEIGHTS_NCCL) return nccl_bcast_weights(c, l->nccl, params, n, version, stream, e);
#endif
    return comm_bcast_weights(c, host, n, version, e);
}
