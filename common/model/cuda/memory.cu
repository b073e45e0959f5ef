// memory.cu: device memory of the CUDA backend: cudaMalloc'ed blocks tracked for the peak, copies and
// transfers on the backend's stream, and fp32 <-> bf16 activation transfers through a fixed scratch.
#include "model/cuda/ops_cuda_internal.h"

void *cu_alloc(Ops *o, size_t bytes) {
    Cuda *c = impl(o);
    graph_forbid(c, "alloc");
    void *p;
    CUDA_CHECK(cudaMalloc(&p, bytes ? bytes : 1));
    CUDA_CHECK(cudaMemsetAsync(p, 0, bytes ? bytes : 1, c->stream));
    if (c->n_blk == c->cap_blk) {
        c->cap_blk = c->cap_blk ? 2 * c->cap_blk : 64;
        c->blk_ptr = (void **)reallocCheck(c->blk_ptr, (size_t)c->cap_blk * sizeof(void *));
        c->blk_size = (size_t *)reallocCheck(c->blk_size, (size_t)c->cap_blk * sizeof(size_t));
    }
    c->blk_ptr[c->n_blk] = p, c->blk_size[c->n_blk++] = bytes;
    c->cur_bytes += bytes;
    if (c->cur_bytes > c->peak_bytes) c->peak_bytes = c->cur_bytes;
    return p;
}

void cu_free(Ops *o, void *p) {
    Cuda *c = impl(o);
    graph_forbid(c, "free");
    if (!p) return;
    for (int i = 0; i < c->n_blk; i++)
        if (c->blk_ptr[i] == p) {
            c->cur_bytes -= c->blk_size[i];
            c->blk_ptr[i] = c->blk_ptr[c->n_blk - 1], c->blk_size[i] = c->blk_size[c->n_blk - 1];
            c->n_blk--;
            break;
        }
    CUDA_CHECK(cudaFree(p));
}

void cu_upload(Ops *o, void *dst, const void *src, size_t bytes) {
    Cuda *c = impl(o);
    if (c->gr) {
        const uint64_t k[] = {(uint64_t)dst, bytes};
        graph_mix(c->gr, k, 2);
        if (bytes) graph_stage(c, dst, src, bytes);
        return;
    }
    if (bytes) CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, impl(o)->stream));
}

void cu_download(Ops *o, void *dst, const void *src, size_t bytes) {
    graph_forbid(impl(o), "download");
    if (!bytes) return;
    CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, impl(o)->stream));
    CUDA_CHECK(cudaStreamSynchronize(impl(o)->stream));
}

void cu_copy(Ops *o, void *dst, const void *src, size_t bytes) {
    GRAPH_SKIP(impl(o), dst, src, bytes);
    if (bytes) CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, impl(o)->stream));
}

void cu_zero(Ops *o, void *dst, size_t bytes) {
    GRAPH_SKIP(impl(o), dst, bytes);
    if (bytes) CUDA_CHECK(cudaMemsetAsync(dst, 0, bytes, impl(o)->stream));
}

void cu_sync(Ops *o) {
    graph_forbid(impl(o), "sync");
    CUDA_CHECK(cudaStreamSynchronize(impl(o)->stream));
}

static __global__ void f32_to_bf16_kernel(bf16 *y, const float *x, size_t n) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
        y[i] = __float2bfloat16(x[i]);
}

static __global__ void bf16_to_f32_kernel(float *y, const bf16 *x, size_t n) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
        y[i] = __bfloat162float(x[i]);
}

// fp32 <-> bf16 conversion goes through a fixed device scratch, chunk by chunk, so a 7B upload never
// needs a device fp32 copy of the whole model.
void cu_upload_act(Ops *o, Tensor *dst, const float *src, size_t n) {
    Cuda *c = impl(o);
    graph_forbid(c, "upload_act");
    for (size_t i = 0; i < n; i += c->scratch_n) {
        size_t k = n - i < c->scratch_n ? n - i : c->scratch_n;
        CUDA_CHECK(cudaMemcpyAsync(c->scratch, src + i, k * sizeof(float), cudaMemcpyHostToDevice, c->stream));
        f32_to_bf16_kernel<<<grid_for(k, 256), 256, 0, c->stream>>>((bf16 *)dst + i, c->scratch, k);
    }
    CUDA_CHECK(cudaGetLastError());
}

void cu_download_act(Ops *o, float *dst, const Tensor *src, size_t n) {
    Cuda *c = impl(o);
    graph_forbid(c, "download_act");
    for (size_t i = 0; i < n; i += c->scratch_n) {
        size_t k = n - i < c->scratch_n ? n - i : c->scratch_n;
        bf16_to_f32_kernel<<<grid_for(k, 256), 256, 0, c->stream>>>(c->scratch, (const bf16 *)src + i, k);
        CUDA_CHECK(cudaMemcpyAsync(dst + i, c->scratch, k * sizeof(float), cudaMemcpyDeviceToHost, c->stream));
    }
    CUDA_CHECK(cudaStreamSynchronize(c->stream));
}
