// nccl.c: NCCL communicators over MPI, the watchdog wait and the NCCL weight broadcast (see nccl.h).
#include "comm/nccl.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "util/log.h"

void nccl_check_at(const char *file, int line, ncclResult_t rc, const char *what) {
    if (rc == ncclSuccess) return;
    comm_abort_at(file, line, "NCCL: %s: %s (%s)", what, ncclGetErrorString(rc), ncclGetLastError(NULL));
}

// 0.1 ms between polls: a small model's collective takes about that.
static void nap(void) {
    struct timespec ts = {0, 100000};
    nanosleep(&ts, NULL);
}

// Ends the job over a stuck or failed communicator: aborting it first releases the GPU kernels and the
// proxy threads that wait on the peers.
static void nccl_fail(Nccl *n, const char *what, ncclResult_t async, double waited) {
    if (async != ncclSuccess && async != ncclInProgress) {
        // the detail ("Duplicate GPU detected", ...) is only in the last-error string, read before the abort
        char detail[512];
        snprintf(detail, sizeof detail, "%s", ncclGetLastError(n->comm));
        ncclCommAbort(n->comm);
        comm_abort("NCCL %s failed on rank %d of %d: %s (%s)", what, n->rank, n->size, ncclGetErrorString(async),
                   detail);
    }
    ncclCommAbort(n->comm);
    comm_abort("NCCL %s: no progress after %.0f s (train.nccl_timeout_s) on rank %d of %d: a peer is gone or stuck",
               what, waited, n->rank, n->size);
}

// The communicator is nonblocking: set-up and an enqueue that must first connect to its peers return
// ncclInProgress instead of blocking inside NCCL. This waits for that host-side work, with the timeout.
static void nccl_settle(Nccl *n, const char *what) {
    double t0 = log_elapsed();
    for (;;) {
        ncclResult_t async;
        NCCL_CHECK(ncclCommGetAsyncError(n->comm, &async));
        if (async == ncclSuccess) return;
        double waited = log_elapsed() - t0;
        if (async != ncclInProgress || waited > n->timeout_s) nccl_fail(n, what, async, waited);
        nap();
    }
}

// The result of a call on n: ncclInProgress settles, other errors end the job naming `what`.
static void nccl_done(Nccl *n, ncclResult_t rc, const char *what) {
    if (rc == ncclInProgress) nccl_settle(n, what);
    else if (rc != ncclSuccess) nccl_fail(n, what, rc, 0);
}

void nccl_init(Nccl *n, MPI_Comm mpi, double timeout_s) {
    memset(n, 0, sizeof *n);
    MPI_CHECK(MPI_Comm_rank(mpi, &n->rank));
    MPI_CHECK(MPI_Comm_size(mpi, &n->size));
    n->timeout_s = timeout_s;
    ncclUniqueId id;
    if (n->rank == 0) NCCL_CHECK(ncclGetUniqueId(&id));
    MPI_CHECK(MPI_Bcast(&id, (int)sizeof id, MPI_BYTE, 0, mpi));
    ncclConfig_t config = NCCL_CONFIG_INITIALIZER;
    config.blocking = 0;
    ncclResult_t rc = ncclCommInitRankConfig(&n->comm, n->size, id, n->rank, &config);
    if (!n->comm) NCCL_CHECK(rc);
    nccl_done(n, rc, "communicator set-up");
    CUDA_CHECK(cudaEventCreateWithFlags(&n->done, cudaEventDisableTiming));
}

void nccl_free(Nccl *n) {
    if (!n->comm) return;
    cudaEventDestroy(n->done);
    nccl_done(n, ncclCommFinalize(n->comm), "communicator finalize");
    NCCL_CHECK(ncclCommDestroy(n->comm));
    memset(n, 0, sizeof *n);
}

void nccl_wait(Nccl *n, cudaStream_t stream, const char *what) {
    CUDA_CHECK(cudaEventRecord(n->done, stream));
    double t0 = log_elapsed();
    for (;;) {
        cudaError_t q = cudaEventQuery(n->done);
        if (q == cudaSuccess) return;
        if (q != cudaErrorNotReady) CUDA_CHECK(q);
        ncclResult_t async;
        NCCL_CHECK(ncclCommGetAsyncError(n->comm, &async));
        double waited = log_elapsed() - t0;
        if ((async != ncclSuccess && async != ncclInProgress) || waited > n->timeout_s)
            nccl_fail(n, what, async, waited);
        nap();
    }
}

void nccl_reduce_scatter(Nccl *n, const void *send, void *recv, size_t recv_count, ncclDataType_t type,
                         cudaStream_t stream) {
    nccl_done(n, ncclReduceScatter(send, recv, recv_count, type, ncclSum, n->comm, stream), "reduce-scatter");
}

void nccl_all_gather(Nccl *n, const void *send, void *recv, size_t send_count, ncclDataType_t type,
                     cudaStream_t stream) {
    nccl_done(n, ncclAllGather(send, recv, send_count, type, n->comm, stream), "all-gather");
}

void nccl_all_reduce_sum(Nccl *n, void *buf, size_t count, ncclDataType_t type, cudaStream_t stream) {
    nccl_done(n, ncclAllReduce(buf, buf, count, type, ncclSum, n->comm, stream), "all-reduce");
}

void nccl_broadcast(Nccl *n, void *buf, size_t count, ncclDataType_t type, int root, cudaStream_t stream) {
    nccl_done(n, ncclBroadcast(buf, buf, count, type, root, n->comm, stream), "broadcast");
}

int nccl_distinct_devices(MPI_Comm mpi) {
    int dev, size;
    struct cudaDeviceProp prop;
    CUDA_CHECK(cudaGetDevice(&dev));
    CUDA_CHECK(cudaGetDeviceProperties(&prop, dev));
    MPI_CHECK(MPI_Comm_size(mpi, &size));
    char *all = mallocCheck((size_t)size * sizeof prop.uuid);
    MPI_CHECK(MPI_Allgather(&prop.uuid, (int)sizeof prop.uuid, MPI_BYTE, all, (int)sizeof prop.uuid, MPI_BYTE, mpi));
    int distinct = 1;
    for (int i = 0; i < size && distinct; i++)
        for (int j = 0; j < i && distinct; j++)
            distinct = memcmp(all + i * sizeof prop.uuid, all + j * sizeof prop.uuid, sizeof prop.uuid) != 0;
    free(all);
    return distinct;
}

int nccl_bcast_weights(const Comm *c, Nccl *n, void *w, size_t count, int64_t version, cudaStream_t stream,
                       Err *e) {
    if (c->bcast_comm == MPI_COMM_NULL) return 0;
    WeightsInfo info;
    int ok = comm_weights_announce(c, count, version, &info);
    void *scratch = NULL;
    if (!ok) CUDA_CHECK(cudaMalloc(&scratch, info.bucket_elems * 2));
    for (uint32_t b = 0; b < info.n_buckets; b++) {
        uint64_t off = (uint64_t)b * info.bucket_elems;
        uint64_t k = info.n_elems - off < info.bucket_elems ? info.n_elems - off : info.bucket_elems;
        nccl_broadcast(n, ok ? (char *)w + off * 2 : scratch, k, ncclBfloat16, 0, stream);
    }
    nccl_wait(n, stream, "weight broadcast");
    if (scratch) cudaFree(scratch);
    return ok ? 0 : comm_weights_refused(&info, count, version, e);
}
