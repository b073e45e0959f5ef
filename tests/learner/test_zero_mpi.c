// GPU suite, under mpirun with one GPU per rank (zero_gpu.sh runs the cases and skips them when the
// node has fewer GPUs than ranks):
//   zero     2 learners: the ZeRO-1 update (zero_cuda.h) on synthetic gradients, 3 updates with small
//            buckets (split tensors, padded buckets), against the CPU reference (gradient = bf16 sum of
//            the two learners' gradients, as NCCL's bf16 reduction rounds it, over 2; clip; adamw_step):
//            norm, every rank's master shard and every rank's full bf16 weights after the all-gather.
//   offload  1 learner (1 GPU): the same updates with optim.offload=host: bit-exact against the CPU
//            reference, and within the GPU kernel's last bits of optim.offload=none.
//   bcast    learner root + 1 rollout: the weights link (weights.h) of an all-CUDA GRPO config picks NCCL,
//            whose broadcast delivers version N bit for bit into the
//            rollout's device buffer, a rollout expecting another version drains it and reports the
//            version (its buffer untouched) and the next one arrives intact; two ranks on one GPU are
//            detected and the link then falls back to MPI.
//   timeout  2 learners: after one all-reduce together, rank 1 never joins the next; rank 0's watchdog
//            must end the job naming the collective (the script checks the message).
//   gpus     prints the number of GPUs (for the script).
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "test.h"
#ifdef AQA_CUDA
#include "comm/comm.h"
#include "comm/nccl.h"
#include "comm/weights.h"
#include "model/cuda/ops_cuda.h"
#include "model/model_testutil.h"
#include "model/safetensors.h"
#include "optim.h"
#include "zero_cuda.h"

static Comm comm;

// The larger of a and b; NaN once either is (fmax would drop it and let a NaN result pass).

// Learner r's gradient of update k, bf16-exact.
static void grad_of(float *g, size_t n, int r, int k) {
    Rng rng;
    rng_init(&rng, 1000 + (uint64_t)k, (uint64_t)r);
    for (size_t i = 0; i < n; i++) g[i] = st_bf16_to_f32(st_f32_to_bf16((float)rng_normal(&rng) * 0.01f));
}

// 3 ZeRO-1 updates (optim.offload=host when offload) over the role's learners against the CPU reference;
// master_tol: the largest |master shard - reference| allowed. Returns this rank's master shard [shard_n].
static float *zero_updates(int offload, double master_tol, size_t *shard_n) {
    ModelConfig c = tiny_config();
    ParamTable t;
    param_table_build(&t, &c);
    float *p = tiny_params(&t, 3);
    // the master copy starts at the weights the model holds in bf16 (as after a checkpoint load)
    for (size_t i = 0; i < t.numel; i++) p[i] = st_bf16_to_f32(st_f32_to_bf16(p[i]));
    Ops *o = ops_cuda_create();
    Model m;
    model_init(&m, &c, o, p);
    Tensor *grad = o->alloc(o, t.numel * o->act_size);
    ZeroCuda zc;
    Err e;
    // 100-element buckets: most tensors split, most buckets padded for 2 ranks
    ZeroSource src = zero_source_array(p);
    CHECKF(zero_cuda_init(&zc, &m, grad, &comm, &src, 101, offload, 60, &e) == 0, "%s", e.msg);
    const size_t n = t.numel;
    const int L = comm.role_size;
    float *ref = mallocCheck(n * sizeof(float)), *gr = mallocCheck(n * sizeof(float));
    float *mine = mallocCheck(n * sizeof(float)), *g = mallocCheck(n * sizeof(float));
    memcpy(ref, p, n * sizeof(float));
    AdamW cpu;
    adamw_init(&cpu, n);
    AdamWConfig cfg = {.beta1 = 0.9, .beta2 = 0.999, .eps = 1e-8, .weight_decay = 0.01};
    const double max_norm = 0.2;
    double worst_norm = 0;
    for (int k = 1; k <= 3; k++) {
        memset(g, 0, n * sizeof(float));
        for (int r = 0; r < L; r++) {
            grad_of(gr, n, r, k);
            if (r == comm.role_rank) memcpy(mine, gr, n * sizeof(float));
            for (size_t i = 0; i < n; i++) g[i] += gr[i];
        }
        o->upload_act(o, grad, mine, n);
        double norm;
        zero_cuda_reduce(&zc, &norm);
        zero_cuda_step(&zc, &cfg, 1e-3, k, max_norm, norm);
        for (size_t i = 0; i < n; i++) g[i] = st_bf16_to_f32(st_f32_to_bf16(g[i]));
        optim_scale(g, n, 1.0 / L);
        double want = optim_clip_grad_norm(g, n, max_norm);
        adamw_step(&cpu, &cfg, 1e-3, ref, g);
        worst_norm = fmax(worst_norm, cmp_diff(norm, want) / want);
    }
    // this rank's master shard, and the full bf16 weights every rank holds
    float *shard = mallocCheck(zc.z.shard_n * sizeof(float)), *sm = mallocCheck(zc.z.shard_n * sizeof(float));
    float *sv = mallocCheck(zc.z.shard_n * sizeof(float)), *want = mallocCheck(zc.z.shard_n * sizeof(float));
    zero_cuda_download(&zc, shard, sm, sv);
    zero_shard_gather(&zc.z, comm.role_rank, ref, want);
    double em = cmp_err(shard, want, zc.z.shard_n, 1).abs;
    float *w = mallocCheck(n * sizeof(float));
    o->download_act(o, w, m.params, n);
    size_t off = 0;
    double ew = 0;
    for (size_t i = 0; i < n; i++) {
        off += w[i] != st_bf16_to_f32(st_f32_to_bf16(ref[i]));
        ew = fmax(ew, cmp_diff(w[i], ref[i]));
    }
    printf("  rank %d, optimizer on the %s: %d buckets, shard %zu of %zu; norm rel err %.1e; master shard max abs "
           "err %.3e; bf16 weights: %zu of %zu differ from bf16(reference), max abs diff %.3e\n",
           comm.role_rank, offload ? "host" : "GPU", zc.z.n_buckets, zc.z.shard_n, n, worst_norm, em, off, n, ew);
    CHECK(worst_norm <= 1e-12);
    CHECK(em <= master_tol);
    CHECK(off == 0);
    *shard_n = zc.z.shard_n;
    free(sm), free(sv), free(want), free(w), free(ref), free(gr), free(mine), free(g), free(p);
    adamw_free(&cpu);
    zero_cuda_free(&zc);
    o->free(o, grad);
    model_free(&m);
    param_table_free(&t);
    ops_destroy(o);
    return shard;
}

// The GPU kernel rounds every fp32 operation as optim.c does, but its sqrt/div are CUDA's IEEE ones on
// different hardware: a last-bit difference on some elements is possible (1e-7 on weights of size ~0.1
// is a few ulps), while any wrong step (lr, bias correction, clip) moves the weights by ~1e-3.
static void case_zero(void) {
    size_t sn;
    free(zero_updates(0, 1e-7, &sn));
}

// optim.offload=host on one learner: the host AdamW is optim.c's own arithmetic on the same fp32
// gradient (bf16 sum * 1/L, clipped), so the master shard equals the CPU reference exactly; against the
// GPU optimizer (none) it may differ by the kernel's last bits (case_zero's 1e-7).
static void case_offload(void) {
    size_t sn;
    float *gpu = zero_updates(0, 1e-7, &sn), *host = zero_updates(1, 0, &sn);
    double d = cmp_err(gpu, host, sn, 1).abs;
    printf("  offload=host vs none: master max abs diff %.3e\n", d);
    CHECK(d <= 1e-7);
    free(gpu), free(host);
}

static uint16_t pattern(size_t i, int version) { return (uint16_t)((i * 2654435761u + (size_t)version * 40503u) >> 7); }

// Rank 0 learner root, rank 1 rollout.
static void case_bcast(void) {
    const size_t n = 3 * 1000 + 17;
    comm.bucket_elems = 1000;
    Config cfg;
    config_defaults(&cfg);
    cfg.model.backend = cfg.rollout.backend = CFG_BACKEND_CUDA;
    WeightsLink wl;
    weights_link_init(&wl, &comm, &cfg);
    CHECK(wl.transport == WEIGHTS_NCCL && wl.nccl);
    uint16_t *h = mallocCheck(n * 2), *got = mallocCheck(n * 2);
    void *d;
    CUDA_CHECK(cudaMalloc(&d, n * 2));
    CUDA_CHECK(cudaMemset(d, 0, n * 2));
    int root = comm.role == ROLE_LEARNER;
    Err e;
    const int sent[3] = {5, 6, 7}, expect[3] = {5, 8, 7};
    for (int k = 0; k < 3; k++) {
        if (root) {
            for (size_t i = 0; i < n; i++) h[i] = pattern(i, sent[k]);
            CUDA_CHECK(cudaMemcpy(d, h, n * 2, cudaMemcpyHostToDevice));
        }
        int rc = weights_link_bcast(&wl, &comm, NULL, d, n, root ? sent[k] : expect[k], 0, &e);
        if (root) {
            CHECK(rc == 0);
            continue;
        }
        CUDA_CHECK(cudaMemcpy(got, d, n * 2, cudaMemcpyDeviceToHost));
        // the buffer holds the last version accepted
        int have = sent[k] == expect[k] ? sent[k] : sent[k - 1];
        size_t off = 0;
        for (size_t i = 0; i < n; i++) off += got[i] != pattern(i, have);
        if (sent[k] == expect[k]) {
            printf("  version %d: %zu of %zu bf16 weights differ\n", sent[k], off, n);
            CHECK(rc == 0 && off == 0);
        } else {
            printf("  version %d sent, %d expected: %s (buffer untouched: %s)\n", sent[k], expect[k],
                   rc ? e.msg : "accepted", off ? "no" : "yes");
            CHECK(rc == -1 && strstr(e.msg, "weights version 6 received, expected 8 (stale)") && off == 0);
        }
    }
    weights_link_free(&wl);
    cudaFree(d);
    free(h), free(got);
    // both ranks on one GPU: what the debug layout (1 learner + 1 rollout, one GPU) looks like
    ops_cuda_set_device(0);
    CHECK(nccl_distinct_devices(comm.bcast_comm) == 0);
    weights_link_init(&wl, &comm, &cfg);
    CHECK(wl.transport == WEIGHTS_MPI && wl.nccl == NULL);
}

static void case_timeout(void) {
    Nccl nc;
    nccl_init(&nc, comm.role_comm, 3);
    double *d;
    CUDA_CHECK(cudaMalloc((void **)&d, sizeof(double)));
    // one all-reduce together first: the peers are connected, as in the middle of a run
    nccl_all_reduce_sum(&nc, d, 1, ncclFloat64, 0);
    nccl_wait(&nc, 0, "warm-up all-reduce");
    if (comm.role_rank == 1) {
        sleep(60);  // gone: the job must not wait for this
        return;
    }
    nccl_all_reduce_sum(&nc, d, 1, ncclFloat64, 0);
    nccl_wait(&nc, 0, "test all-reduce");
    printf("FAIL: the all-reduce finished without its peer\n");
    exit(1);
}

int main(int argc, char **argv) {
    const char *mode = argc > 1 ? argv[1] : "";
    if (strcmp(mode, "gpus") == 0) {
        printf("%d\n", ops_cuda_device_count());
        return 0;
    }
    int world;
    MPI_Init(&argc, &argv);
    MPI_Comm_rank(MPI_COMM_WORLD, &world);
    int bcast = strcmp(mode, "bcast") == 0;
    comm = comm_init(&argc, &argv, bcast && world > 0 ? ROLE_ROLLOUT : ROLE_LEARNER);
    ops_cuda_set_device(comm_node_gpu_index(&comm, 1));
    if (strcmp(mode, "zero") == 0) RUN(case_zero);
    else if (strcmp(mode, "offload") == 0) RUN(case_offload);
    else if (bcast) RUN(case_bcast);
    else if (strcmp(mode, "timeout") == 0) RUN(case_timeout);
    else fatal("usage: test_zero_mpi zero|offload|bcast|timeout|gpus");
    int failed = test_summary("zero_mpi") != 0, any = 0;
    MPI_Allreduce(&failed, &any, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
    comm_finalize(&comm);
    return any;
}
#else
int main(void) {
    printf("no CUDA in this build: skipped\n");
    return 77;
}
#endif
