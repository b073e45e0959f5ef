// nccl.h: NCCL between GPU ranks, set up over MPI (CUDA builds only). A communicator is made from an
// ncclUniqueId that rank 0 of an MPI communicator broadcasts; collectives are enqueued on a caller's
// stream. Failure policy as comm.h: an NCCL error aborts the whole job through comm_abort with NCCL's
// error string, and nothing hangs silently: the communicator is nonblocking, so set-up and an enqueue
// that must first reach its peers are polled as nccl_wait polls the stream's progress (with the
// communicator's asynchronous error); past the timeout the communicator is ncclCommAbort'ed and the job
// comm_abort'ed with a message naming the operation waited for.
#pragma once
#include <cuda_runtime.h>
#include <nccl.h>
#include <stddef.h>

#include "comm/comm.h"
#include "model/cuda/cuda_check.h"

typedef struct Nccl {
    ncclComm_t comm;
    int rank, size;
    double timeout_s;  // nccl_wait gives up after this long
    cudaEvent_t done;  // recorded by nccl_wait on the stream it waits for
} Nccl;

// For calls without a communicator to poll (ncclGetUniqueId, ncclCommGetAsyncError, ncclCommDestroy); the
// shape of CUDA_CHECK (model/cuda/cuda_check.h, which the CUDA calls here use).
#define NCCL_CHECK(call) nccl_check_at(__FILE__, __LINE__, (call), #call)
void nccl_check_at(const char *file, int line, ncclResult_t rc, const char *what);

// Collective over every rank of mpi, each on its own GPU (the current device).
void nccl_init(Nccl *n, MPI_Comm mpi, double timeout_s);
void nccl_free(Nccl *n);

// Blocks until every operation enqueued so far on stream has finished. Past n->timeout_s, or when the
// communicator reports an asynchronous error, the communicator is aborted and the job ends with a
// message naming `what` (the collective waited for).
void nccl_wait(Nccl *n, cudaStream_t stream, const char *what);

// Thin wrappers (counts in elements; buffers on the current device), enqueued on stream.
void nccl_reduce_scatter(Nccl *n, const void *send, void *recv, size_t recv_count, ncclDataType_t type,
                         cudaStream_t stream);
void nccl_all_gather(Nccl *n, const void *send, void *recv, size_t send_count, ncclDataType_t type,
                     cudaStream_t stream);
void nccl_all_reduce_sum(Nccl *n, void *buf, size_t count, ncclDataType_t type, cudaStream_t stream);
void nccl_broadcast(Nccl *n, void *buf, size_t count, ncclDataType_t type, int root, cudaStream_t stream);

// Whether the ranks of mpi all run on distinct GPUs (their device UUIDs, gathered over MPI, differ).
// NCCL cannot put two ranks of one communicator on one device; callers fall back to MPI then.
// Collective over mpi; every rank gets the same answer.
int nccl_distinct_devices(MPI_Comm mpi);

// The weight broadcast of comm_bcast_weights with the payload over NCCL: the version and size are
// announced over MPI on c->bcast_comm as there, then w (bf16, [n], device) goes from the learner root
// to every rollout in buckets of c->bucket_elems, straight into the rollouts' device parameters. n is
// the communicator over the same ranks (nccl_init on c->bcast_comm). A rollout that expects another
// version or size drains the broadcast into scratch, leaves w untouched and returns -1 with Err.
int nccl_bcast_weights(const Comm *c, Nccl *n, void *w, size_t count, int64_t version, cudaStream_t stream,
                       Err *e);
