// optim_cuda.cu: AdamW, the gradient's squared norm and its scaling on the GPU (see optim_cuda.h).
#include <cuda_bf16.h>
#include <math.h>

#include "model/cuda/cuda_check.h"

extern "C" {
#include "optim_cuda.h"
#include "util/check.h"
}

typedef __nv_bfloat16 bf16;

enum { SUMSQ_THREADS = 256 };

// Block b sums the squares of elements b, b + blocks*threads, ... : partial[b] (fixed order: a tree in
// shared memory).
__global__ void sumsq_partial_kernel(const bf16 *g, size_t n, float inv_l, double *partial) {
    __shared__ double s[SUMSQ_THREADS];
    double acc = 0;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
        float x = __fmul_rn(__bfloat162float(g[i]), inv_l);  // the value the update uses
        acc += (double)x * (double)x;
    }
    s[threadIdx.x] = acc;
    __syncthreads();
    for (int k = blockDim.x / 2; k > 0; k /= 2) {
        if (threadIdx.x < k) s[threadIdx.x] += s[threadIdx.x + k];
        __syncthreads();
    }
    if (threadIdx.x == 0) partial[blockIdx.x] = s[0];
}

__global__ void sum_partials_kernel(const double *partial, int n, double *out) {
    __shared__ double s[OPTIM_CUDA_PARTIALS];
    s[threadIdx.x] = threadIdx.x < n ? partial[threadIdx.x] : 0.0;
    __syncthreads();
    for (int k = blockDim.x / 2; k > 0; k /= 2) {
        if (threadIdx.x < k) s[threadIdx.x] += s[threadIdx.x + k];
        __syncthreads();
    }
    if (threadIdx.x == 0) *out = s[0];
}

extern "C" void optim_cuda_sumsq(const void *g, size_t n, float inv_l, double *scratch, double *out,
                                 cudaStream_t stream) {
    size_t want = (n + SUMSQ_THREADS - 1) / SUMSQ_THREADS;
    int blocks = want < OPTIM_CUDA_PARTIALS ? (int)(want ? want : 1) : OPTIM_CUDA_PARTIALS;
    sumsq_partial_kernel<<<blocks, SUMSQ_THREADS, 0, stream>>>((const bf16 *)g, n, inv_l, scratch);
    sum_partials_kernel<<<1, OPTIM_CUDA_PARTIALS, 0, stream>>>(scratch, blocks, out);
    CUDA_CHECK(cudaGetLastError());
}

typedef struct {
    AdamWScalars s;
    float inv_l, clip;
    int clipped;
} AdamWArgs;

// optim.c's loop, element i; every operation rounded on its own as the CPU does (no contraction).
__global__ void adamw_kernel(AdamWArgs a, float *master, float *m, float *v, const bf16 *g, bf16 *out, size_t n) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
        float gi = __fmul_rn(__bfloat162float(g[i]), a.inv_l);
        if (a.clipped) gi = __fmul_rn(gi, a.clip);
        float mi = __fadd_rn(m[i], __fmul_rn(a.s.omb1, __fsub_rn(gi, m[i])));
        float vi = __fadd_rn(__fmul_rn(a.s.b2, v[i]), __fmul_rn(__fmul_rn(a.s.omb2, gi), gi));
        m[i] = mi;
        v[i] = vi;
        float denom = __fadd_rn(__fdiv_rn(__fsqrt_rn(vi), a.s.bc2s), a.s.eps);
        float p = __fsub_rn(__fmul_rn(master[i], a.s.decay), __fdiv_rn(__fmul_rn(a.s.step_size, mi), denom));
        master[i] = p;
        out[i] = __float2bfloat16(p);
    }
}

extern "C" void optim_cuda_adamw(const AdamWScalars *s, float *master, float *m, float *v, const void *g, float inv_l,
                                 double clip, void *params_bf16, size_t n, cudaStream_t stream) {
    if (n == 0) return;
    AdamWArgs a = {.s = *s, .inv_l = inv_l, .clip = (float)clip, .clipped = clip < 1};
    size_t blocks = (n + 255) / 256;
    if (blocks > 65535 * 8) blocks = 65535 * 8;
    adamw_kernel<<<(unsigned)blocks, 256, 0, stream>>>(a, master, m, v, (const bf16 *)g, (bf16 *)params_bf16, n);
    CUDA_CHECK(cudaGetLastError());
}
