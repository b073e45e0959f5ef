// test_weights.c: the weight-transport decision (weights.h) both roles take, over the run configs of
// configs/ and every combination of its inputs: NCCL exactly for a GRPO job with rollouts whose learners
// and rollouts all run on CUDA, each on its own GPU; MPI for everything else (CPU runs, SFT, a GPU shared
// by the learner root and a rollout). Also the backend selection's answers a CPU rank can check
// (backend.h): the CPU backend everywhere, CUDA refused with the key named when this build or machine has
// none. Colocated placement: SHARED for a GRPO job with rollouts, on either backend.
#include "comm/weights.h"
#include "pipeline/backend.h"
#include "test.h"

static void load(Config *cfg, const char *rel) {
    Err e;
    config_defaults(cfg);
    CHECKF(config_load_file(cfg, SRC_PATH(rel), &e) == 0, "%s: %s", rel, e.msg);
}

static void test_run_configs(void) {
    Config cfg;
    load(&cfg, "configs/debug-tiny.json");  // CPU learner and rollouts
    CHECK(weights_transport_decide(&cfg, 1, 1) == WEIGHTS_MPI);
    load(&cfg, "configs/r1-aqa-7b.json");  // the paper's layout: learners and rollouts on GPUs
    CHECK(weights_transport_decide(&cfg, 8, 1) == WEIGHTS_NCCL);
    CHECK(weights_transport_decide(&cfg, 8, 0) == WEIGHTS_MPI);  // colocated: one GPU for both roles
    CHECK(weights_transport_decide(&cfg, 0, 1) == WEIGHTS_MPI);  // no rollout to send to
    CHECK_STR(weights_transport_name(WEIGHTS_NCCL), "NCCL");
    CHECK_STR(weights_transport_name(WEIGHTS_MPI), "MPI");
    // colocated: shared in place, whatever the GPUs (one per pair) and backends
    cfg.train.placement = CFG_PLACEMENT_COLOCATED;
    CHECK(weights_transport_decide(&cfg, 8, 1) == WEIGHTS_SHARED);
    CHECK(weights_transport_decide(&cfg, 8, 0) == WEIGHTS_SHARED);
    CHECK(weights_transport_decide(&cfg, 0, 0) == WEIGHTS_MPI);  // no rollout
    load(&cfg, "configs/debug-tiny.json");
    cfg.train.placement = CFG_PLACEMENT_COLOCATED;
    CHECK(weights_transport_decide(&cfg, 1, 0) == WEIGHTS_SHARED);  // the CPU backend: POSIX shared memory
    cfg.train.mode = CFG_MODE_SFT;
    CHECK(weights_transport_decide(&cfg, 1, 0) == WEIGHTS_MPI);
}

static void test_every_combination(void) {
    Config cfg;
    config_defaults(&cfg);
    const CfgBackend backends[2] = {CFG_BACKEND_CPU, CFG_BACKEND_CUDA};
    const CfgTrainMode modes[2] = {CFG_MODE_GRPO, CFG_MODE_SFT};
    int n_nccl = 0;
    for (int mode = 0; mode < 2; mode++)
        for (int lb = 0; lb < 2; lb++)
            for (int rb = 0; rb < 2; rb++)
                for (int n = 0; n <= 2; n++)
                    for (int distinct = 0; distinct < 2; distinct++) {
                        cfg.train.mode = modes[mode];
                        cfg.model.backend = backends[lb];
                        cfg.rollout.backend = backends[rb];
                        WeightsTransport got = weights_transport_decide(&cfg, n, distinct);
                        int want_nccl = mode == 0 && lb == 1 && rb == 1 && n > 0 && distinct;
                        CHECKF(got == (want_nccl ? WEIGHTS_NCCL : WEIGHTS_MPI),
                               "mode %d learners %d rollouts %d n_rollouts %d distinct %d: %s", mode, lb, rb, n,
                               distinct, weights_transport_name(got));
                        n_nccl += got == WEIGHTS_NCCL;
                    }
    CHECK_INT(n_nccl, 2);  // GRPO, both on CUDA, distinct GPUs, 1 or 2 rollouts
}

static void test_backend(void) {
    Err e;
    CHECK(backend_check(CFG_BACKEND_CPU, "model.backend", &e) == 0);
    Ops *o = backend_create(CFG_BACKEND_CPU, "model.backend", &e);
    CHECK(o && strcmp(o->name, "cpu") == 0 && backend_stream(o) == NULL);
    if (o) ops_destroy(o);
    // CUDA: usable (a CUDA build on a GPU machine) or refused naming the key and the reason
    if (backend_check(CFG_BACKEND_CUDA, "rollout.backend", &e) == 0) return;
    CHECKF(strstr(e.msg, "rollout.backend=cuda: ") == e.msg &&
               (strstr(e.msg, "no CUDA device") || strstr(e.msg, "this build has no CUDA backend")),
           "%s", e.msg);
    CHECK(backend_create(CFG_BACKEND_CUDA, "model.backend", &e) == NULL && strstr(e.msg, "model.backend=cuda: "));
}

int main(void) {
    RUN(test_run_configs);
    RUN(test_every_combination);
    RUN(test_backend);
    return test_summary("weights");
}
