// backward.cu: the backward ops of the CUDA backend other than attention's (attention_bwd.cu). Parameter
// gradients are accumulated in fp32 (column sums through fp32 partials in a fixed order, no float atomics:
// deterministic) and rounded once into the bf16 gradient; element-wise backward ops read every input of
// an element before writing it, so dx may alias dy.
#include <math.h>

#include "model/cuda/ops_cuda_internal.h"

// Column sums (parameter gradients of biases and norm weights) go in two deterministic steps: blocks
// each own a slice of rows and write fp32 partial sums [nb, N] to the backend's fp32 scratch, then one
// finishing pass adds the nb partials, in block order, to the bf16 gradient once. The stream orders
// these uses of the scratch after any upload_act/download_act staging through it.
static float *part_scratch(Cuda *c, size_t n) {
    if (n > c->scratch_n) fatal("ops_cuda: %zu fp32 partial sums exceed the %zu-float scratch", n, c->scratch_n);
    return c->scratch;
}

// dst[j] += sum_b part[b * N + j], b in order.
static __global__ void colsum_finish_kernel(bf16 *dst, const float *part, int nb, int N) {
    const int j = blockIdx.x * blockDim.x + threadIdx.x;
    if (j >= N) return;
    float s = 0.0f;
    for (int b = 0; b < nb; b++) s += part[(size_t)b * N + j];
    dst[j] = __float2bfloat16(__bfloat162float(dst[j]) + s);
}

enum { BG_WARPS = 8, BG_COLS = 64 };

// Block (x: 64 columns, y: a slice of rows); each warp sums every BG_WARPS-th row of the slice, a lane
// two columns 32 apart (coalesced 64-byte row reads), then the warps' sums meet in shared memory.
static __global__ void __launch_bounds__(BG_WARPS * 32) bias_grad_kernel(float *part, const bf16 *dy, int M, int N) {
    __shared__ float sh[BG_WARPS][BG_COLS];
    const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
    const int j0 = blockIdx.x * BG_COLS + lane, j1 = j0 + 32;
    float s0 = 0.0f, s1 = 0.0f;
    for (int i = blockIdx.y * BG_WARPS + warp; i < M; i += gridDim.y * BG_WARPS) {
        const bf16 *r = dy + (size_t)i * N;
        if (j0 < N) s0 += __bfloat162float(r[j0]);
        if (j1 < N) s1 += __bfloat162float(r[j1]);
    }
    sh[warp][lane] = s0, sh[warp][lane + 32] = s1;
    __syncthreads();
    if (threadIdx.x < BG_COLS) {
        const int j = blockIdx.x * BG_COLS + threadIdx.x;
        float s = 0.0f;
        for (int w = 0; w < BG_WARPS; w++) s += sh[w][threadIdx.x];
        if (j < N) part[(size_t)blockIdx.y * N + j] = s;
    }
}

// One pass over dy (M*N*2 bytes) plus nb*N*8 bytes of partials; nb row slices fill the GPU about twice.
void cu_bias_grad(Ops *o, Tensor *db, const Tensor *dy, int M, int N) {
    Cuda *c = impl(o);
    if (M <= 0 || N <= 0) return;
    const int nx = (N + BG_COLS - 1) / BG_COLS, rows = (M + BG_WARPS - 1) / BG_WARPS;
    int ny = (4 * c->n_sm + nx - 1) / nx;
    ny = ny < rows ? ny : rows;
    if ((size_t)ny * N > c->scratch_n) ny = (int)(c->scratch_n / N);
    float *part = part_scratch(c, (size_t)ny * N);
    bias_grad_kernel<<<dim3(nx, ny), BG_WARPS * 32, 0, c->stream>>>(part, (const bf16 *)dy, M, N);
    colsum_finish_kernel<<<(N + 255) / 256, 256, 0, c->stream>>>((bf16 *)db, part, ny, N);
    CUDA_CHECK(cudaGetLastError());
}

// Gather form of the scatter: each dx element sums the (at most K) cols entries copied from it, so no
// two threads write one element.
static __global__ void col2im_kernel(bf16 *dx, const bf16 *dcols, int C, int Tin, int sc, int st, int K, int stride,
                                     int pad, int Tout) {
    const size_t n = (size_t)Tin * C;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
        const int ch = (int)(i % C), t = (int)(i / C);
        float s = 0.0f;
        for (int k = 0; k < K; k++) {
            const int tn = t + pad - k;
            if (tn < 0 || tn % stride) continue;
            const int to = tn / stride;
            if (to < Tout) s += __bfloat162float(dcols[((size_t)to * C + ch) * K + k]);
        }
        bf16 *d = dx + (size_t)ch * sc + (size_t)t * st;
        *d = __float2bfloat16(__bfloat162float(*d) + s);
    }
}

void cu_col2im(Ops *o, Tensor *dx, const Tensor *dcols, int C, int Tin, int sc, int st, int K, int stride, int pad,
               int Tout) {
    const size_t n = (size_t)Tin * C;
    if (!n) return;
    col2im_kernel<<<grid_for(n, 256), 256, 0, impl(o)->stream>>>((bf16 *)dx, (const bf16 *)dcols, C, Tin, sc, st, K,
                                                                 stride, pad, Tout);
}

// Norm backward, LayerNorm (LN) or RMSNorm: a block walks its rows one at a time (two block reductions
// per row give dx), while each thread keeps the dw (and db) sums of its own columns in shared memory in
// fp32; at the end the block's sums go to the partials. Per row: x and dy read twice (the second time
// from cache) and dx read-modify-written: ~8 bytes per element from DRAM, plus nb*C*4 per partial set.
// xhat = (x - mean) * rstd (LN) or x * rstd (RMS).
template <int LN>
static __global__ void norm_bwd_kernel(bf16 *dx, float *part, const bf16 *dy, const bf16 *x, const bf16 *w,
                                       const float *mean, const float *rstd, int T, int C) {
    extern __shared__ float nsh[];  // [C] dw sums, then [C] db sums (LN)
    __shared__ float red[32];
    float *sw = nsh, *sb = nsh + C;
    for (int i = threadIdx.x; i < C; i += blockDim.x) {
        sw[i] = 0.0f;
        if (LN) sb[i] = 0.0f;
    }
    for (int t = blockIdx.x; t < T; t += gridDim.x) {
        const bf16 *xr = x + (size_t)t * C, *dyr = dy + (size_t)t * C;
        const float m = LN ? mean[t] : 0.0f, r = rstd[t];
        float s1 = 0.0f, s2 = 0.0f;  // sum(dy w), sum(dy w xhat)
        for (int i = threadIdx.x; i < C; i += blockDim.x) {
            const float g = __bfloat162float(dyr[i]), xh = (__bfloat162float(xr[i]) - m) * r;
            const float dxh = g * __bfloat162float(w[i]);
            s1 += dxh, s2 += dxh * xh;
            sw[i] += g * xh;
            if (LN) sb[i] += g;
        }
        if (LN) s1 = block_sum(s1, red) / C;
        s2 = block_sum(s2, red) / C;
        bf16 *dxr = dx + (size_t)t * C;
        for (int i = threadIdx.x; i < C; i += blockDim.x) {
            const float xh = (__bfloat162float(xr[i]) - m) * r;
            const float dxh = __bfloat162float(dyr[i]) * __bfloat162float(w[i]);
            dxr[i] = __float2bfloat16(__bfloat162float(dxr[i]) + r * (dxh - (LN ? s1 : 0.0f) - xh * s2));
        }
    }
    float *pw = part + (size_t)blockIdx.x * C, *pb = part + ((size_t)gridDim.x + blockIdx.x) * C;
    for (int i = threadIdx.x; i < C; i += blockDim.x) {
        pw[i] = sw[i];
        if (LN) pb[i] = sb[i];
    }
}

enum { NORM_MAX_SMEM = 160 * 1024 };

static void norm_bwd(Ops *o, int ln, Tensor *dx, Tensor *dw, Tensor *db, const Tensor *dy, const Tensor *x,
                     const Tensor *w, const float *mean, const float *rstd, int T, int C) {
    Cuda *c = impl(o);
    if (T <= 0 || C <= 0) return;
    const int sets = ln ? 2 : 1;
    const size_t smem = (size_t)sets * C * sizeof(float);
    if (smem > NORM_MAX_SMEM) fatal("ops_cuda: norm backward over %d columns exceeds shared memory", C);
    int nb = 2 * c->n_sm < T ? 2 * c->n_sm : T;
    if ((size_t)nb * sets * C > c->scratch_n) nb = (int)(c->scratch_n / ((size_t)sets * C));
    float *part = part_scratch(c, (size_t)nb * sets * C);
    if (ln)
        norm_bwd_kernel<1><<<nb, row_threads(C), smem, c->stream>>>((bf16 *)dx, part, (const bf16 *)dy,
                                                                    (const bf16 *)x, (const bf16 *)w, mean, rstd, T, C);
    else
        norm_bwd_kernel<0><<<nb, row_threads(C), smem, c->stream>>>((bf16 *)dx, part, (const bf16 *)dy,
                                                                    (const bf16 *)x, (const bf16 *)w, mean, rstd, T, C);
    colsum_finish_kernel<<<(C + 255) / 256, 256, 0, c->stream>>>((bf16 *)dw, part, nb, C);
    if (ln) colsum_finish_kernel<<<(C + 255) / 256, 256, 0, c->stream>>>((bf16 *)db, part + (size_t)nb * C, nb, C);
    CUDA_CHECK(cudaGetLastError());
}

void cu_layernorm_bwd(Ops *o, Tensor *dx, Tensor *dw, Tensor *db, const Tensor *dy, const Tensor *x, const Tensor *w,
                      const float *mean, const float *rstd, int T, int C) {
    norm_bwd(o, 1, dx, dw, db, dy, x, w, mean, rstd, T, C);
}

void cu_rmsnorm_bwd(Ops *o, Tensor *dx, Tensor *dw, const Tensor *dy, const Tensor *x, const Tensor *w,
                    const float *rstd, int T, int C) {
    norm_bwd(o, 0, dx, dw, NULL, dy, x, w, NULL, rstd, T, C);
}

// Element-wise backward ops read every input of element i before writing, so dx may alias dy.
static __global__ void gelu_bwd_kernel(bf16 *dx, const bf16 *dy, const bf16 *x, size_t n) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
        const float v = __bfloat162float(x[i]);
        const float cdf = 0.5f * (1.0f + erff(v * 0.70710678118654752f));
        const float pdf = 0.3989422804014327f * expf(-0.5f * v * v);
        dx[i] = __float2bfloat16(__bfloat162float(dy[i]) * (cdf + v * pdf));
    }
}

static __global__ void silu_mul_bwd_kernel(bf16 *dg, bf16 *du, const bf16 *dy, const bf16 *g, const bf16 *u, size_t n) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
        const float a = __bfloat162float(g[i]), b = __bfloat162float(u[i]), d = __bfloat162float(dy[i]);
        const float sig = 1.0f / (1.0f + expf(-a));
        du[i] = __float2bfloat16(d * a * sig);
        dg[i] = __float2bfloat16(d * b * sig * (1.0f + a * (1.0f - sig)));
    }
}

static __global__ void avgpool2_bwd_kernel(bf16 *dx, const bf16 *dy, int R, int C) {
    const size_t n = (size_t)R * C;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
        const size_t r = i / C, c = i % C;
        const bf16 h = __float2bfloat16(__bfloat162float(dy[i]) * 0.5f);
        dx[2 * r * C + c] = h;
        dx[(2 * r + 1) * C + c] = h;
    }
}

void cu_gelu_bwd(Ops *o, Tensor *dx, const Tensor *dy, const Tensor *x, size_t n) {
    if (n)
        gelu_bwd_kernel<<<grid_for(n, 256), 256, 0, impl(o)->stream>>>((bf16 *)dx, (const bf16 *)dy,
                                                                       (const bf16 *)x, n);
}
void cu_silu_mul_bwd(Ops *o, Tensor *dg, Tensor *du, const Tensor *dy, const Tensor *g, const Tensor *u, size_t n) {
    if (n)
        silu_mul_bwd_kernel<<<grid_for(n, 256), 256, 0, impl(o)->stream>>>(
            (bf16 *)dg, (bf16 *)du, (const bf16 *)dy, (const bf16 *)g, (const bf16 *)u, n);
}
void cu_avgpool2_bwd(Ops *o, Tensor *dx, const Tensor *dy, int R, int C) {
    size_t n = (size_t)R * C;
    if (n) avgpool2_bwd_kernel<<<grid_for(n, 256), 256, 0, impl(o)->stream>>>((bf16 *)dx, (const bf16 *)dy, R, C);
}

// In place over one chunk of rows: x = dlp * (onehot(tgt) - exp(x - lse)), in fp32, rounded once (the
// target element too). Blocks (x: a span of the row, y: rows); R*V*4 bytes (read + write).
static __global__ void logprob_bwd_kernel(bf16 *logits, const float *lse, const int *tgt, const float *dlp, int R,
                                          int V) {
    for (int row = blockIdx.y; row < R; row += gridDim.y) {
        bf16 *x = logits + (size_t)row * V;
        const float g = dlp[row], L = lse[row];
        const int t = tgt[row];
        for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < V; i += gridDim.x * blockDim.x) {
            const float p = expf(__bfloat162float(x[i]) - L);
            x[i] = __float2bfloat16(i == t ? g * (1.0f - p) : -g * p);
        }
    }
}

void cu_logprob_bwd(Ops *o, Tensor *logits, const float *lse, const int *tgt, const float *dlp, int R, int V) {
    Cuda *c = impl(o);
    if (R <= 0 || V <= 0) return;
    int nx = (4 * c->n_sm + R - 1) / R, vx = (V + 255) / 256;
    nx = nx < vx ? nx : vx;
    logprob_bwd_kernel<<<dim3(nx, R < 65535 ? R : 65535), 256, 0, c->stream>>>((bf16 *)logits, lse, tgt, dlp, R,
                                                                                 V);
}

// The flash backward lives in attention_bwd.cu.
extern "C" void ops_cuda_attention_bwd_with(Ops *o, AttnKernel kern, Tensor *dq, Tensor *dk, Tensor *dv,
                                            const Tensor *dout, const Tensor *out, const float *lse, const Tensor *q,
                                            const Tensor *k, const Tensor *v, const AttnSeg *segs, int nseg, int H,
                                            int KVH, int hd, float scale) {
    if (kern != ATTN_AUTO && kern != ATTN_BWD_WMMA)
        fatal("cuda attention_bwd: kernel %d is not a backward kernel", (int)kern);
    Cuda *c = impl(o);
    attn_bwd_run(&c->attn_bwd, (bf16 *)dq, (bf16 *)dk, (bf16 *)dv, (const bf16 *)dout, (const bf16 *)out, lse,
                 (const bf16 *)q, (const bf16 *)k, (const bf16 *)v, segs, nseg, H, KVH, hd, scale,
                 kern == ATTN_BWD_WMMA, c->n_sm, c->stream);
}

void cu_attention_bwd(Ops *o, Tensor *dq, Tensor *dk, Tensor *dv, const Tensor *dout, const Tensor *out,
                      const float *lse, const Tensor *q, const Tensor *k, const Tensor *v, const AttnSeg *segs,
                      int nseg, int H, int KVH, int hd, float scale) {
    ops_cuda_attention_bwd_with(o, ATTN_AUTO, dq, dk, dv, dout, out, lse, q, k, v, segs, nseg, H, KVH, hd, scale);
}

void backward_init(void) {
    CUDA_CHECK(cudaFuncSetAttribute(norm_bwd_kernel<0>, cudaFuncAttributeMaxDynamicSharedMemorySize, NORM_MAX_SMEM));
    CUDA_CHECK(cudaFuncSetAttribute(norm_bwd_kernel<1>, cudaFuncAttributeMaxDynamicSharedMemorySize, NORM_MAX_SMEM));
}
