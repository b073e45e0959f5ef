// weights.c: see weights.h.
#include "comm/weights.h"

#include <stdlib.h>

#include "util/log.h"
#ifdef AQA_CUDA
#include "comm/nccl.h"
#endif

const char *weights_transport_name(WeightsTransport t) { return t == WEIGHTS_NCCL ? "NCCL" : "MPI"; }

WeightsTransport weights_transport_decide(const Config *cfg, int n_rollouts, int distinct_gpus) {
    int all_cuda = cfg->model.backend == CFG_BACKEND_CUDA && cfg->rollout.backend == CFG_BACKEND_CUDA;
    if (cfg->train.mode != CFG_MODE_GRPO || n_rollouts < 1 || !all_cuda) return WEIGHTS_MPI;
    return distinct_gpus ? WEIGHTS_NCCL : WEIGHTS_MPI;
}

void weights_link_init(WeightsLink *l, const Comm *c, const Config *cfg) {
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
#ifdef AQA_CUDA
    if (l->nccl) nccl_free(l->nccl);
#endif
    free(l->nccl);
    l->nccl = NULL;
}

int weights_link_bcast(const WeightsLink *l, const Comm *c, float *host, void *params, size_t n, int64_t version,
                       void *stream, Err *e) {
#ifdef AQA_CUDA
    if (l->transport == WEIGHTS_NCCL) return nccl_bcast_weights(c, l->nccl, params, n, version, stream, e);
#endif
    return comm_bcast_weights(c, host, n, version, e);
}
