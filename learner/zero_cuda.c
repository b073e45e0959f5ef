// zero_cuda.c: the ZeRO-1 update of the GPU learners (see zero_cuda.h).
#include "zero_cuda.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "model/cuda/cuda_check.h"
#include "model/safetensors.h"
#include "model/cuda/ops_cuda.h"
#include "optim_cuda.h"

enum { BF16 = 2 };  // bytes of a bf16 element

static void *dev_alloc(size_t bytes) {
    void *p;
    CUDA_CHECK(cudaMalloc(&p, bytes ? bytes : 1));
    CUDA_CHECK(cudaMemset(p, 0, bytes ? bytes : 1));
    return p;
}

// Pinned host memory, zeroed (offload: what the copies on the comm stream read and write).
static void *host_alloc(size_t bytes) {
    void *p;
    CUDA_CHECK(cudaHostAlloc(&p, bytes ? bytes : 1, cudaHostAllocDefault));
    memset(p, 0, bytes ? bytes : 1);
    return p;
}

static char *at(const void *base, size_t elems) { return (char *)base + elems * BF16; }

// Enqueues bucket b's reduce-scatter on the comm stream (after what the caller ordered before it).
// A bucket that divides evenly goes straight from the gradient buffer; one that does not is padded
// with zeros in the staging buffer first (the next bucket's elements must not join it).
static void bucket_reduce(ZeroCuda *zc, int b) {
    const ZeroBucket *k = &zc->z.b[b];
    size_t padded = k->piece * (size_t)zc->z.n_ranks;
    const void *send = at(zc->grad, k->lo);
    if (padded != k->n) {
        CUDA_CHECK(cudaMemcpyAsync(zc->stage, send, k->n * BF16, cudaMemcpyDeviceToDevice, zc->comm));
        CUDA_CHECK(cudaMemsetAsync(at(zc->stage, k->n), 0, (padded - k->n) * BF16, zc->comm));
        send = zc->stage;
    }
    // offload: one bucket's piece on the device, reused in stream order once it is back in place
    void *piece = at(zc->gshard, zc->offload ? 0 : k->shard_off);
    nccl_reduce_scatter(&zc->nccl, send, piece, k->piece, ncclBfloat16, zc->comm);
    if (!zc->offload) return;
    // the piece's parameters (its padding is zero and stays out) back where they belong in the gradient
    // buffer, which this update reads nowhere else, and their squared norm
    size_t lo, n;
    zero_piece(&zc->z, b, zc->rank, &lo, &n);
    if (n) CUDA_CHECK(cudaMemcpyAsync(at(zc->grad, lo), piece, n * BF16, cudaMemcpyDeviceToDevice, zc->comm));
    optim_cuda_sumsq(at(zc->grad, lo), n, (float)(1.0 / zc->z.n_ranks), zc->partials, zc->sums + b, zc->comm);
}

// The comm stream continues after everything enqueued on the backend's stream so far.
static void comm_after_compute(ZeroCuda *zc) {
    CUDA_CHECK(cudaEventRecord(zc->ev, zc->compute));
    CUDA_CHECK(cudaStreamWaitEvent(zc->comm, zc->ev, 0));
}

// Starts every bucket that is final once gradient range `range` is (buckets go in order on every
// rank, so the collectives match).
static void launch_upto(ZeroCuda *zc, int range) {
    if (zc->launched == zc->z.n_buckets || zc->z.b[zc->launched].ready_at > range) return;
    comm_after_compute(zc);
    while (zc->launched < zc->z.n_buckets && zc->z.b[zc->launched].ready_at <= range)
        bucket_reduce(zc, zc->launched++);
}

static void grad_ready(void *ctx, int range) { launch_upto((ZeroCuda *)ctx, range); }

// The master shard from src, in place: with offload straight into the pinned shard, else each bucket's
// piece through a host buffer of one piece, copied up.
static int master_fill(ZeroCuda *zc, int r, const ZeroSource *src, Err *e) {
    float *piece = zc->offload ? NULL : mallocCheck((zc->max_piece ? zc->max_piece : 1) * sizeof(float));
    int rc = 0;
    for (int b = 0; b < zc->z.n_buckets && !rc; b++) {
        const ZeroBucket *k = &zc->z.b[b];
        rc = zero_piece_read(&zc->z, b, r, src, zc->offload ? zc->master + k->shard_off : piece, e);
        if (!rc && piece)
            CUDA_CHECK(cudaMemcpy(zc->master + k->shard_off, piece, k->piece * sizeof(float), cudaMemcpyHostToDevice));
    }
    free(piece);
    return rc;
}

// The first half of zero_cuda_init: layout, streams, NCCL and the master shard filled from src.
static int init_master(ZeroCuda *zc, Model *m, Tensor *grad, const Comm *c, const ZeroSource *src,
                       size_t bucket_elems, int offload, double timeout_s, Err *e) {
    // ops_cuda_set_device wraps the index: more learners than GPUs would share one, which NCCL refuses
    // with only "invalid usage"
    if (!nccl_distinct_devices(c->role_comm))
        return err_set(e, "model.backend=cuda: the %d learners need a GPU each, and some share one", c->role_size);
    int n_ranges = model_grad_range_count(&m->cfg);
    GradRange *ranges = mallocCheck((size_t)n_ranges * sizeof *ranges);
    model_grad_ranges(m, ranges);
    int rc = zero_layout_build(&zc->z, ranges, n_ranges, m->t.numel, bucket_elems, c->role_size, e);
    free(ranges);
    if (rc) return err_prefix(e, "gradient buckets");
    zc->model = m;
    zc->grad = grad;
    zc->compute = (cudaStream_t)ops_cuda_stream(m->ops);
    CUDA_CHECK(cudaStreamCreateWithFlags(&zc->comm, cudaStreamNonBlocking));
    CUDA_CHECK(cudaEventCreateWithFlags(&zc->ev, cudaEventDisableTiming));
    for (int k = 0; k < ZERO_RING; k++) {
        CUDA_CHECK(cudaEventCreateWithFlags(&zc->up.done[k], cudaEventDisableTiming));
        CUDA_CHECK(cudaEventCreateWithFlags(&zc->down.done[k], cudaEventDisableTiming));
    }
    nccl_init(&zc->nccl, c->role_comm, timeout_s);
    zc->offload = offload;
    zc->rank = c->role_rank;
    zc->max_piece = zc->z.max_padded / (size_t)zc->z.n_ranks;
    zc->master = (offload ? host_alloc : dev_alloc)(zc->z.shard_n * sizeof(float));
    if (master_fill(zc, c->role_rank, src, e)) {
        zero_cuda_free(zc);
        return -1;
    }
    return 0;
}

int zero_cuda_init(ZeroCuda *zc, Model *m, Tensor *grad, const Comm *c, const ZeroSource *src, size_t bucket_elems,
                   int offload, double timeout_s, Err *e) {
    memset(zc, 0, sizeof *zc);
    int rc = init_master(zc, m, grad, c, src, bucket_elems, offload, timeout_s, e);
    // The source goes before anything else of the state exists: the host's peak is the master and the
    // source's pages, or the full state, never both.
    if (src->release) src->release(src->ctx);
    if (rc) return -1;
    size_t n = zc->z.shard_n;
    void *(*state_alloc)(size_t) = offload ? host_alloc : dev_alloc;
    zc->m = state_alloc(n * sizeof(float));
    zc->v = state_alloc(n * sizeof(float));
    zc->up.slot = host_alloc(ZERO_RING * zc->max_piece * BF16);
    if (offload) {
        zc->down.slot = host_alloc(ZERO_RING * zc->max_piece * BF16);
        zc->sums = dev_alloc((size_t)zc->z.n_buckets * sizeof(double));
        zc->sums_host = host_alloc((size_t)zc->z.n_buckets * sizeof(double));
    }
    // offload: the device holds one bucket's piece of each (the shards are on the host)
    size_t dev_n = offload ? zc->max_piece : n;
    zc->gshard = dev_alloc(dev_n * BF16);
    zc->pshard = dev_alloc(dev_n * BF16);
    zc->stage = dev_alloc(zc->z.max_padded * BF16);
    zc->partials = dev_alloc(OPTIM_CUDA_PARTIALS * sizeof(double));
    zc->sumsq = dev_alloc(sizeof(double));
    CUDA_CHECK(cudaMallocHost((void **)&zc->sumsq_host, sizeof(double)));
    return 0;
}

void zero_cuda_free(ZeroCuda *zc) {
    if (!zc->comm) return;
    CUDA_CHECK(cudaStreamSynchronize(zc->comm));
    zero_cuda_arm(zc, 0);
    void *state[] = {zc->master, zc->m, zc->v};
    for (size_t i = 0; i < sizeof state / sizeof state[0]; i++) {
        if (zc->offload) cudaFreeHost(state[i]);
        else cudaFree(state[i]);
    }
    cudaFreeHost(zc->up.slot);
    cudaFreeHost(zc->down.slot);
    cudaFreeHost(zc->sums_host);
    void *bufs[] = {zc->gshard, zc->pshard, zc->stage, zc->partials, zc->sumsq, zc->sums};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++) cudaFree(bufs[i]);
    cudaFreeHost(zc->sumsq_host);
    nccl_free(&zc->nccl);
    for (int k = 0; k < ZERO_RING; k++) {
        cudaEventDestroy(zc->up.done[k]);
        cudaEventDestroy(zc->down.done[k]);
    }
    cudaEventDestroy(zc->ev);
    cudaStreamDestroy(zc->comm);
    zero_layout_free(&zc->z);
    memset(zc, 0, sizeof *zc);
}

void zero_cuda_arm(ZeroCuda *zc, int on) {
    zc->model->grad_ready = on ? grad_ready : NULL;
    zc->model->grad_ctx = on ? zc : NULL;
}

void zero_cuda_reduce(ZeroCuda *zc, double *norm) {
    zero_cuda_arm(zc, 0);
    launch_upto(zc, model_grad_range_count(&zc->model->cfg));
    zc->launched = 0;
    const float inv_l = (float)(1.0 / zc->z.n_ranks);
    if (zc->offload) {  // the buckets' squared norms summed in bucket order on the host, up for the all-reduce
        CUDA_CHECK(cudaMemcpyAsync(zc->sums_host, zc->sums, (size_t)zc->z.n_buckets * sizeof(double),
                                   cudaMemcpyDeviceToHost, zc->comm));
        nccl_wait(&zc->nccl, zc->comm, "gradient reduce-scatter");
        double sum = 0;
        for (int b = 0; b < zc->z.n_buckets; b++) sum += zc->sums_host[b];
        *zc->sumsq_host = sum;
        CUDA_CHECK(cudaMemcpyAsync(zc->sumsq, zc->sumsq_host, sizeof(double), cudaMemcpyHostToDevice, zc->comm));
    } else {
        optim_cuda_sumsq(zc->gshard, zc->z.shard_n, inv_l, zc->partials, zc->sumsq, zc->comm);
    }
    nccl_all_reduce_sum(&zc->nccl, zc->sumsq, 1, ncclFloat64, zc->comm);
    CUDA_CHECK(cudaMemcpyAsync(zc->sumsq_host, zc->sumsq, sizeof(double), cudaMemcpyDeviceToHost, zc->comm));
    nccl_wait(&zc->nccl, zc->comm, "gradient reduce-scatter and norm all-reduce");
    *norm = sqrt(*zc->sumsq_host);
}

// The slot of ring r that bucket b goes through, once the last copy of it has finished (the CPU uses
// it next).
static uint16_t *ring_take(ZeroCuda *zc, ZeroRing *r, int b) {
    CUDA_CHECK(cudaEventSynchronize(r->done[b % ZERO_RING]));
    return r->slot + (size_t)(b % ZERO_RING) * zc->max_piece;
}

// Offload: enqueues the copy down of bucket b's reduced gradient piece (in place in the gradient buffer)
// into its slot of the down ring, the padding zeroed (the slot is free: the CPU is done with it).
static void grad_down(ZeroCuda *zc, int b) {
    size_t lo, n;
    zero_piece(&zc->z, b, zc->rank, &lo, &n);
    uint16_t *slot = zc->down.slot + (size_t)(b % ZERO_RING) * zc->max_piece;
    memset(slot + n, 0, (zc->z.b[b].piece - n) * BF16);
    if (n) CUDA_CHECK(cudaMemcpyAsync(slot, at(zc->grad, lo), n * BF16, cudaMemcpyDeviceToHost, zc->comm));
    CUDA_CHECK(cudaEventRecord(zc->down.done[b % ZERO_RING], zc->comm));
}

// Enqueues bucket b's all-gather of the updated bf16 weights into the model on the comm stream, from its
// piece of pshard; with up (the slot of the up ring the CPU filled) that piece is copied up first.
static void bucket_gather(ZeroCuda *zc, int b, const uint16_t *up) {
    const ZeroBucket *k = &zc->z.b[b];
    void *send = at(zc->pshard, zc->offload ? 0 : k->shard_off);
    if (up) {
        CUDA_CHECK(cudaMemcpyAsync(send, up, k->piece * BF16, cudaMemcpyHostToDevice, zc->comm));
        CUDA_CHECK(cudaEventRecord(zc->up.done[b % ZERO_RING], zc->comm));
    }
    Tensor *params = zc->model->params;
    size_t padded = k->piece * (size_t)zc->z.n_ranks;
    void *recv = padded == k->n ? at(params, k->lo) : zc->stage;
    nccl_all_gather(&zc->nccl, send, recv, k->piece, ncclBfloat16, zc->comm);
    if (recv == zc->stage)
        CUDA_CHECK(cudaMemcpyAsync(at(params, k->lo), zc->stage, k->n * BF16, cudaMemcpyDeviceToDevice, zc->comm));
}

void zero_cuda_step(ZeroCuda *zc, const AdamWConfig *cfg, double lr, int64_t step, double max_norm, double norm) {
    double clip = max_norm > 0 ? optim_clip_scale(norm, max_norm) : 1.0;
    const float inv_l = (float)(1.0 / zc->z.n_ranks);
    const AdamWScalars s = adamw_scalars(cfg, lr, step);
    if (!zc->offload)
        optim_cuda_adamw(&s, zc->master, zc->m, zc->v, zc->gshard, inv_l, clip, zc->pshard, zc->z.shard_n, zc->comm);
    const int nb = zc->z.n_buckets;
    for (int b = 0; zc->offload && b < ZERO_RING && b < nb; b++) grad_down(zc, b);
    for (int b = 0; b < nb; b++) {
        const ZeroBucket *k = &zc->z.b[b];
        uint16_t *out = NULL;
        if (zc->offload) {  // this piece on the CPU while the GPU copies the next ones down, the previous up
            size_t o = k->shard_off;
            const uint16_t *g = ring_take(zc, &zc->down, b);
            out = ring_take(zc, &zc->up, b);
            adamw_step_bf16(&s, zc->master + o, zc->m + o, zc->v + o, g, inv_l, clip, out, k->piece);
        }
        bucket_gather(zc, b, out);
        if (zc->offload && b + ZERO_RING < nb) grad_down(zc, b + ZERO_RING);  // into the slot just used
    }
    // The next forward reads the new weights and backward writes the gradient the comm stream read.
    CUDA_CHECK(cudaEventRecord(zc->ev, zc->comm));
    CUDA_CHECK(cudaStreamWaitEvent(zc->compute, zc->ev, 0));
    CUDA_CHECK(cudaMemsetAsync(zc->grad, 0, zc->z.numel * BF16, zc->compute));
}

void zero_cuda_download(ZeroCuda *zc, float *master, float *m, float *v) {
    CUDA_CHECK(cudaStreamSynchronize(zc->comm));
    size_t bytes = zc->z.shard_n * sizeof(float);
    // cudaMemcpyDefault: device or (offload) pinned host state alike
    CUDA_CHECK(cudaMemcpy(master, zc->master, bytes, cudaMemcpyDefault));
    CUDA_CHECK(cudaMemcpy(m, zc->m, bytes, cudaMemcpyDefault));
    CUDA_CHECK(cudaMemcpy(v, zc->v, bytes, cudaMemcpyDefault));
}

void zero_cuda_upload(ZeroCuda *zc, const float *master, const float *m, const float *v) {
    CUDA_CHECK(cudaStreamSynchronize(zc->comm));
    size_t bytes = zc->z.shard_n * sizeof(float);
    const float *src[3] = {master, m, v};
    float *dst[3] = {zc->master, zc->m, zc->v};
    for (int a = 0; a < 3; a++)  // offload: the caller may have filled the pinned state itself
        if (src[a] != dst[a]) CUDA_CHECK(cudaMemcpy(dst[a], src[a], bytes, cudaMemcpyDefault));
    // The model's weights as an update leaves them: bf16(master) of every shard, all-gathered, each piece
    // converted into the ring on the host while the previous ones go up.
    for (int b = 0; b < zc->z.n_buckets; b++) {
        const ZeroBucket *k = &zc->z.b[b];
        uint16_t *out = ring_take(zc, &zc->up, b);
        for (size_t i = 0; i < k->piece; i++) out[i] = st_f32_to_bf16(master[k->shard_off + i]);
        bucket_gather(zc, b, out);
    }
    nccl_wait(&zc->nccl, zc->comm, "weights all-gather after a restore");
}
