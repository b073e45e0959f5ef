// elementwise.cu: the forward ops of the CUDA backend that stream rows or elements: LayerNorm and RMSNorm
// (fp32 statistics), log-probs (log-sum-exp per row), im2col, RoPE, GELU, SiLU gating, adds, pooling, row
// copies (gathers and the deterministic scatter-add), and the decoder's fused inference ops (SwiGLU over
// the stacked gate/up output; q/k RoPE with the cache writes in one kernel).
#include <math.h>

#include "model/cuda/ops_cuda_internal.h"

// ---------------------------------------------------------------- norms and log-probs

static __global__ void layernorm_kernel(bf16 *y, float *mean, float *rstd, const bf16 *x, const bf16 *w, const bf16 *b,
                                        int C, float eps) {
    __shared__ float sh[32];
    const size_t row = blockIdx.x;
    const bf16 *xr = x + row * C;
    float s = 0.0f;
    for (int i = threadIdx.x; i < C; i += blockDim.x) s += __bfloat162float(xr[i]);
    const float m = block_sum(s, sh) / C;
    float v = 0.0f;
    for (int i = threadIdx.x; i < C; i += blockDim.x) {
        float d = __bfloat162float(xr[i]) - m;
        v += d * d;
    }
    const float r = rsqrtf(block_sum(v, sh) / C + eps);
    for (int i = threadIdx.x; i < C; i += blockDim.x)
        y[row * C + i] = __float2bfloat16((__bfloat162float(xr[i]) - m) * r * __bfloat162float(w[i]) +
                                          __bfloat162float(b[i]));
    if (threadIdx.x == 0) mean[row] = m, rstd[row] = r;
}

// As Qwen2RMSNorm in bf16: the normalised row is rounded to bf16 before the weight multiplies it.
static __global__ void rmsnorm_kernel(bf16 *y, float *rstd, const bf16 *x, const bf16 *w, int C, float eps) {
    __shared__ float sh[32];
    const size_t row = blockIdx.x;
    const bf16 *xr = x + row * C;
    float s = 0.0f;
    for (int i = threadIdx.x; i < C; i += blockDim.x) {
        float v = __bfloat162float(xr[i]);
        s += v * v;
    }
    const float r = rsqrtf(block_sum(s, sh) / C + eps);
    for (int i = threadIdx.x; i < C; i += blockDim.x) {
        float xn = __bfloat162float(__float2bfloat16(__bfloat162float(xr[i]) * r));
        y[row * C + i] = __float2bfloat16(__bfloat162float(w[i]) * xn);
    }
    if (threadIdx.x == 0) rstd[row] = r;
}

void cu_layernorm(Ops *o, Tensor *y, float *mean, float *rstd, const Tensor *x, const Tensor *w, const Tensor *b, int T,
                  int C, float eps) {
    GRAPH_SKIP(impl(o), y, mean, rstd, x, w, b, T, C);
    if (T <= 0) return;
    layernorm_kernel<<<T, row_threads(C), 0, impl(o)->stream>>>((bf16 *)y, mean, rstd, (const bf16 *)x,
                                                                (const bf16 *)w, (const bf16 *)b, C, eps);
}

void cu_rmsnorm(Ops *o, Tensor *y, float *rstd, const Tensor *x, const Tensor *w, int T, int C, float eps) {
    GRAPH_SKIP(impl(o), y, rstd, x, w, T, C);
    if (T <= 0) return;
    rmsnorm_kernel<<<T, row_threads(C), 0, impl(o)->stream>>>((bf16 *)y, rstd, (const bf16 *)x, (const bf16 *)w, C,
                                                              eps);
}

// log-sum-exp of a row by an online (max, sum) pair per thread, merged across the block.
static __global__ void logprob_kernel(float *lp, float *lse, const bf16 *logits, const int *tgt, int V) {
    __shared__ float shm[32], shs[32];
    const size_t row = blockIdx.x;
    const bf16 *x = logits + row * V;
    float m = -INFINITY, s = 0.0f;
    for (int i = threadIdx.x; i < V; i += blockDim.x) {
        float v = __bfloat162float(x[i]);
        if (v > m) s = s * expf(m - v) + 1.0f, m = v;
        else s += expf(v - m);
    }
    for (int o = 16; o; o >>= 1) {
        float m2 = __shfl_xor_sync(0xffffffffu, m, o), s2 = __shfl_xor_sync(0xffffffffu, s, o);
        float mm = fmaxf(m, m2);
        s = (m == -INFINITY ? 0.0f : s * expf(m - mm)) + (m2 == -INFINITY ? 0.0f : s2 * expf(m2 - mm));
        m = mm;
    }
    const int w = threadIdx.x / 32, nw = blockDim.x / 32;
    if (threadIdx.x % 32 == 0) shm[w] = m, shs[w] = s;
    __syncthreads();
    if (threadIdx.x == 0) {
        float M = -INFINITY, S = 0.0f;
        for (int i = 0; i < nw; i++) M = fmaxf(M, shm[i]);
        for (int i = 0; i < nw; i++)
            if (shm[i] != -INFINITY) S += shs[i] * expf(shm[i] - M);
        const float L = M + logf(S);
        lse[row] = L;
        lp[row] = __bfloat162float(x[tgt[row]]) - L;
    }
}

void cu_logprob(Ops *o, float *lp, float *lse, const Tensor *logits, const int *tgt, int R, int V) {
    GRAPH_SKIP(impl(o), lp, lse, logits, tgt, R, V);
    if (R <= 0) return;
    logprob_kernel<<<R, 1024, 0, impl(o)->stream>>>(lp, lse, (const bf16 *)logits, tgt, V);
}

// ---------------------------------------------------------------- element-wise and data movement

static __global__ void im2col_kernel(bf16 *cols, const bf16 *x, int C, int Tin, int sc, int st, int K, int stride,
                                     int pad, int Tout) {
    const size_t n = (size_t)Tout * C * K;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
        const int k = (int)(i % K), ch = (int)(i / K % C), t = (int)(i / ((size_t)K * C));
        const int ti = t * stride + k - pad;
        cols[i] = (ti >= 0 && ti < Tin) ? x[(size_t)ch * sc + (size_t)ti * st] : __float2bfloat16(0.0f);
    }
}

void cu_im2col(Ops *o, Tensor *cols, const Tensor *x, int C, int Tin, int sc, int st, int K, int stride, int pad,
               int Tout) {
    GRAPH_SKIP(impl(o), cols, x, C, Tin, sc, st, K, stride, pad, Tout);
    size_t n = (size_t)Tout * C * K;
    if (!n) return;
    im2col_kernel<<<grid_for(n, 256), 256, 0, impl(o)->stream>>>((bf16 *)cols, (const bf16 *)x, C, Tin, sc, st, K,
                                                                 stride, pad, Tout);
}

// Rotation pair d of a head of hd dims at position pos: y[d], y[d + hd/2] from x[d], x[d + hd/2] (y may be
// x). HF computes inv_freq and the angle in fp32; cos/sin here are full-precision sincosf of that angle.
static __device__ __forceinline__ void rope_pair(bf16 *y, const bf16 *x, int d, int hd, int pos, float theta,
                                                 int inverse) {
    const int half = hd / 2;
    const float inv_freq = 1.0f / powf(theta, (float)(2 * d) / (float)hd);
    float s, c;
    sincosf(inv_freq * (float)pos, &s, &c);
    if (inverse) s = -s;
    const float a = __bfloat162float(x[d]), b = __bfloat162float(x[d + half]);
    y[d] = __float2bfloat16(a * c - b * s);
    y[d + half] = __float2bfloat16(b * c + a * s);
}

static __global__ void rope_kernel(bf16 *x, const int *pos, int T, int H, int hd, float theta, int inverse) {
    const int half = hd / 2;
    const size_t n = (size_t)T * H * half;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
        const size_t th = i / half, t = th / H;
        bf16 *xh = x + th * hd;
        rope_pair(xh, xh, (int)(i % half), hd, pos[t], theta, inverse);
    }
}

void cu_rope(Ops *o, Tensor *x, const int *pos, int T, int H, int hd, float theta, int inverse) {
    GRAPH_SKIP(impl(o), x, pos, T, H, hd, inverse);
    size_t n = (size_t)T * H * (hd / 2);
    if (!n) return;
    rope_kernel<<<grid_for(n, 256), 256, 0, impl(o)->stream>>>((bf16 *)x, pos, T, H, hd, theta, inverse);
}

static __global__ void gelu_kernel(bf16 *y, const bf16 *x, size_t n) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
        const float v = __bfloat162float(x[i]);
        y[i] = __float2bfloat16(0.5f * v * (1.0f + erff(v * 0.70710678118654752f)));
    }
}

static __global__ void silu_mul_kernel(bf16 *y, const bf16 *g, const bf16 *u, size_t n) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
        const float a = __bfloat162float(g[i]);
        y[i] = __float2bfloat16(a / (1.0f + expf(-a)) * __bfloat162float(u[i]));
    }
}

static __global__ void add_kernel(bf16 *y, const bf16 *a, const bf16 *b, size_t n) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
        y[i] = __float2bfloat16(__bfloat162float(a[i]) + __bfloat162float(b[i]));
}

static __global__ void avgpool2_kernel(bf16 *y, const bf16 *x, int R, int C) {
    const size_t n = (size_t)R * C;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
        const size_t r = i / C, c = i % C;
        y[i] = __float2bfloat16((__bfloat162float(x[2 * r * C + c]) + __bfloat162float(x[(2 * r + 1) * C + c])) *
                                0.5f);
    }
}

void cu_gelu(Ops *o, Tensor *y, const Tensor *x, size_t n) {
    GRAPH_SKIP(impl(o), y, x, n);
    if (n) gelu_kernel<<<grid_for(n, 256), 256, 0, impl(o)->stream>>>((bf16 *)y, (const bf16 *)x, n);
}
void cu_silu_mul(Ops *o, Tensor *y, const Tensor *g, const Tensor *u, size_t n) {
    GRAPH_SKIP(impl(o), y, g, u, n);
    if (n)
        silu_mul_kernel<<<grid_for(n, 256), 256, 0, impl(o)->stream>>>((bf16 *)y, (const bf16 *)g, (const bf16 *)u,
                                                                       n);
}
void cu_add(Ops *o, Tensor *y, const Tensor *a, const Tensor *b, size_t n) {
    GRAPH_SKIP(impl(o), y, a, b, n);
    if (n) add_kernel<<<grid_for(n, 256), 256, 0, impl(o)->stream>>>((bf16 *)y, (const bf16 *)a, (const bf16 *)b, n);
}
void cu_avgpool2(Ops *o, Tensor *y, const Tensor *x, int R, int C) {
    GRAPH_SKIP(impl(o), y, x, R, C);
    size_t n = (size_t)R * C;
    if (n) avgpool2_kernel<<<grid_for(n, 256), 256, 0, impl(o)->stream>>>((bf16 *)y, (const bf16 *)x, R, C);
}

// One block per row: rows are independent when no destination repeats (gathers, the audio merge).
static __global__ void copy_rows_kernel(bf16 *dst, const int *dst_idx, const bf16 *src, const int *src_idx, int C) {
    const int i = blockIdx.x;
    const int di = dst_idx ? dst_idx[i] : i, si = src_idx ? src_idx[i] : i;
    if (di < 0) return;
    bf16 *d = dst + (size_t)di * C;
    const bf16 *s = src + (size_t)si * C;
    for (int c = threadIdx.x; c < C; c += blockDim.x) d[c] = s[c];
}

enum { CR_THREADS = 256, CR_CPT = 4 };  // a block covers CR_THREADS * CR_CPT columns

// Accumulation (the embedding's scatter-add), where a destination row may repeat (the same token
// twice). Deterministic and sort-free, in fp32: the block of a row's FIRST occurrence in dst_idx sums the
// sources of all its occurrences in index order and adds the sum once (one bf16 rounding); blocks of
// later occurrences do nothing. Each source row is read once; the price is an O(n) scan of dst_idx per
// block (ints that stay in L2).
static __global__ void __launch_bounds__(CR_THREADS)
    copy_rows_acc_kernel(bf16 *dst, const int *dst_idx, const bf16 *src, const int *src_idx, int n, int C) {
    __shared__ int list[CR_THREADS], wcount[CR_THREADS / 32];
    const int i = blockIdx.x, di = dst_idx ? dst_idx[i] : i;
    if (di < 0) return;
    const int c0 = blockIdx.y * CR_THREADS * CR_CPT + threadIdx.x;
    float acc[CR_CPT];
    for (int k = 0; k < CR_CPT; k++) acc[k] = 0.0f;
    if (!dst_idx) {  // rows are distinct
        const bf16 *s = src + (size_t)(src_idx ? src_idx[i] : i) * C;
        for (int k = 0; k < CR_CPT; k++)
            if (c0 + k * CR_THREADS < C) acc[k] = __bfloat162float(s[c0 + k * CR_THREADS]);
    } else {
        int earlier = 0;
        for (int j = threadIdx.x; j < i && !earlier; j += CR_THREADS) earlier = dst_idx[j] == di;
        if (__syncthreads_or(earlier)) return;  // an earlier occurrence's block owns the row
        const int lane = threadIdx.x % 32, w = threadIdx.x / 32;
        for (int base = i; base < n; base += CR_THREADS) {
            // this chunk's occurrences, compacted in index order
            const int j = base + threadIdx.x, hit = j < n && dst_idx[j] == di;
            const unsigned bal = __ballot_sync(0xffffffffu, hit);
            if (lane == 0) wcount[w] = __popc(bal);
            __syncthreads();
            int off = 0, tot = 0;
            for (int v = 0; v < CR_THREADS / 32; v++) off += v < w ? wcount[v] : 0, tot += wcount[v];
            if (hit) list[off + __popc(bal & ((1u << lane) - 1u))] = j;
            __syncthreads();
            for (int m = 0; m < tot; m++) {
                const int jj = list[m];
                const bf16 *s = src + (size_t)(src_idx ? src_idx[jj] : jj) * C;
                for (int k = 0; k < CR_CPT; k++)
                    if (c0 + k * CR_THREADS < C) acc[k] += __bfloat162float(s[c0 + k * CR_THREADS]);
            }
            __syncthreads();  // list and wcount are rewritten by the next chunk
        }
    }
    bf16 *d = dst + (size_t)di * C;
    for (int k = 0; k < CR_CPT; k++)
        if (c0 + k * CR_THREADS < C)
            d[c0 + k * CR_THREADS] = __float2bfloat16(__bfloat162float(d[c0 + k * CR_THREADS]) + acc[k]);
}

void cu_copy_rows(Ops *o, Tensor *dst, const int *dst_idx, const Tensor *src, const int *src_idx, int n, int C,
                  int accumulate) {
    GRAPH_SKIP(impl(o), dst, dst_idx, src, src_idx, n, C, accumulate);
    if (n <= 0 || C <= 0) return;
    if (accumulate)
        copy_rows_acc_kernel<<<dim3(n, (C + CR_THREADS * CR_CPT - 1) / (CR_THREADS * CR_CPT)), CR_THREADS, 0,
                               impl(o)->stream>>>((bf16 *)dst, dst_idx, (const bf16 *)src, src_idx, n, C);
    else
        copy_rows_kernel<<<n, C < 256 ? 32 * ((C + 31) / 32) : 256, 0, impl(o)->stream>>>(
            (bf16 *)dst, dst_idx, (const bf16 *)src, src_idx, C);
}

// ---------------------------------------------------------------- fused decoder ops (inference)

// y[T, FF] = silu(gate) * up from gu[T, 2FF] (one GEMM over the stacked gate/up weights): as silu_mul.
static __global__ void swiglu_kernel(bf16 *y, const bf16 *gu, int FF, size_t n) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
        const size_t t = i / FF, j = i % FF;
        const float a = __bfloat162float(gu[t * 2 * FF + j]);
        y[i] = __float2bfloat16(a / (1.0f + expf(-a)) * __bfloat162float(gu[t * 2 * FF + FF + j]));
    }
}

void cu_swiglu(Ops *o, Tensor *y, const Tensor *gu, int T, int FF) {
    GRAPH_SKIP(impl(o), y, gu, T, FF);
    const size_t n = (size_t)T * FF;
    if (n) swiglu_kernel<<<grid_for(n, 256), 256, 0, impl(o)->stream>>>((bf16 *)y, (const bf16 *)gu, FF, n);
}

// From qkv[T, Q + 2 KV]: q with RoPE -> q[T, Q]; k with RoPE and v -> cache row kv_row[t]. Element i of a
// row's work is a rotation pair of a q head (i < H * half), of a k head (next KVH * half), else a v
// element.
static __global__ void qkv_rope_cache_kernel(bf16 *q, bf16 *kc, bf16 *vc, const bf16 *qkv, const int *pos,
                                             const int *kv_row, int T, int H, int KVH, int hd, float theta) {
    const int half = hd / 2, Q = H * hd, KV = KVH * hd, nq = H * half, nk = KVH * half;
    const size_t per = (size_t)nq + nk + KV, n = (size_t)T * per;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
        const size_t t = i / per;
        const int e = (int)(i % per);
        const bf16 *row = qkv + t * (Q + 2 * KV);
        const size_t cr = (size_t)kv_row[t] * KV;
        if (e >= nq + nk) {
            const int j = e - nq - nk;
            vc[cr + j] = row[Q + KV + j];
            continue;
        }
        const int is_k = e >= nq, p = is_k ? e - nq : e, head = p / half, d = p % half;
        const bf16 *x = row + (is_k ? Q : 0) + head * hd;
        bf16 *y = is_k ? kc + cr + head * hd : q + t * Q + head * hd;
        rope_pair(y, x, d, hd, pos[t], theta, 0);
    }
}

void cu_qkv_rope_cache(Ops *o, Tensor *q, Tensor *kc, Tensor *vc, const Tensor *qkv, const int *pos, const int *kv_row,
                       int T, int H, int KVH, int hd, float theta) {
    GRAPH_SKIP(impl(o), q, kc, vc, qkv, pos, kv_row, T, H, KVH, hd);
    const size_t n = (size_t)T * ((size_t)(H + KVH) * (hd / 2) + (size_t)KVH * hd);
    if (n)
        qkv_rope_cache_kernel<<<grid_for(n, 256), 256, 0, impl(o)->stream>>>(
            (bf16 *)q, (bf16 *)kc, (bf16 *)vc, (const bf16 *)qkv, pos, kv_row, T, H, KVH, hd, theta);
}
