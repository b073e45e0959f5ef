// backend.c: see backend.h.
#include "pipeline/backend.h"

#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#include "util/log.h"
#ifdef AQA_CUDA
#include "model/cuda/ops_cuda.h"
#endif

int backend_check(CfgBackend b, const char *key, Err *e) {
    if (b == CFG_BACKEND_CPU) return 0;
#ifdef AQA_CUDA
    if (ops_cuda_device_count() < 1) return err_set(e, "%s=cuda: no CUDA device on this machine", key);
    return 0;
#else
    return err_set(e, "%s=cuda: this build has no CUDA backend (meson setup -Dcuda=enabled)", key);
#endif
}

// The Ops of a checked backend; gpu >= 0 makes GPU gpu (mod the device count) current first.
static Ops *backend_open(CfgBackend b, int gpu, const char *who, int who_rank) {
    if (b == CFG_BACKEND_CPU) return ops_cpu_create();
#ifdef AQA_CUDA
    if (gpu >= 0) {
        int dev = ops_cuda_set_device(gpu);
        log_info("%s %d: GPU %d (GPU rank %d of this node)", who, who_rank, dev, gpu);
    }
    return ops_cuda_create();
#else
    fatal("backend %d: not in this build, and backend_check did not refuse it", (int)b);
#endif
}

Ops *backend_create(CfgBackend b, const char *key, Err *e) {
    if (backend_check(b, key, e)) return NULL;
    return backend_open(b, -1, NULL, 0);
}

Ops *backend_create_rank(const Comm *c, const Config *cfg, CfgBackend b, const char *key, Err *e) {
    if (backend_check(b, key, e)) return NULL;
    int gpu = cfg->train.placement == CFG_PLACEMENT_COLOCATED ? comm_node_pair_gpu_index(c)
                                                               : comm_node_gpu_index(c, cfg->model.backend == CFG_BACKEND_CUDA);
    // The CPU backend's loops and a learner's host AdamW (optim.offload=host) run on the cores the launcher
    // left this rank: on one core (mpirun binds 2 or fewer ranks to a core each) a 7B host optimizer step
    // took 22.7 s where 16 cores take about 1.6 s, so the count is in the log (test_debug_run.sh checks it).
    int threads = 1;
#ifdef _OPENMP
    threads = omp_get_max_threads();
#endif
    log_info("%s %d: %d CPU threads", role_name(c->role), c->role_rank, threads);
    return backend_open(b, gpu, role_name(c->role), c->role_rank);
}

void *backend_stream(const Ops *o) {
#ifdef AQA_CUDA
    if (strcmp(o->name, "cuda") == 0) return ops_cuda_stream(o);
#endif
    return NULL;
}

int backend_gpu_memory(const Ops *o, double *free_bytes, double *total_bytes) {
#ifdef AQA_CUDA
    if (strcmp(o->name, "cuda") == 0) {
        size_t f, t;
        ops_cuda_mem_info(&f, &t);
        *free_bytes = (double)f, *total_bytes = (double)t;
        return 0;
    }
#endif
    return -1;
}
