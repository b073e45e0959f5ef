// ops_cpu.c: the CPU backend of ops.h: fp32, plain loops parallelised with OpenMP. It is the reference
// the CUDA backend is tested against, so clarity wins over speed; loops are ordered for contiguous
// access and reductions that race (parameter gradients) are split so each thread owns its outputs.
#include "model/ops.h"
#include "model/sampler.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "util/check.h"

static void *cpu_alloc(Ops *o, size_t bytes) { return callocCheck(bytes ? bytes : 1, 1); }
static void cpu_free(Ops *o, void *p) { free(p); }
static void cpu_copy(Ops *o, void *dst, const void *src, size_t bytes) {
    if (bytes) memmove(dst, src, bytes);
}
static void cpu_zero(Ops *o, void *dst, size_t bytes) {
    if (bytes) memset(dst, 0, bytes);
}
static void cpu_sync(Ops *o) {}

static void cpu_matmul(Ops *o, Tensor *C_, const Tensor *A_, const Tensor *B_, const Tensor *bias_, int M, int N,
                       int K, int ta, int tb, int accumulate) {
    float *C = C_;
    const float *A = A_;
    const float *B = B_;
    const float *bias = bias_;
    // element accessors of op(A)[i,k] and op(B)[k,j]
    const size_t sa_i = ta ? 1 : (size_t)K, sa_k = ta ? (size_t)M : 1;
    const size_t sb_k = tb ? 1 : (size_t)N, sb_j = tb ? (size_t)K : 1;
    if (!ta && tb) {
        // dot products of contiguous rows (the Linear forward), four columns at a time so each load of
        // a[k] feeds four accumulators; columns outside, rows inside: the four B rows stay in cache for
        // every row of A (the lm_head's B, [vocab, dim], would otherwise be read from memory M times)
        const int NB = (N + 3) / 4;
#pragma omp parallel for collapse(2) schedule(static)
        for (int jb = 0; jb < NB; jb++)
            for (int i = 0; i < M; i++) {
                const float *a = A + (size_t)i * K;
                const int j0 = 4 * jb, nj = N - j0 < 4 ? N - j0 : 4;
                float s[4] = {0.0f, 0.0f, 0.0f, 0.0f};
                if (nj == 4) {
                    const float *b0 = B + (size_t)j0 * K, *b1 = b0 + K, *b2 = b1 + K, *b3 = b2 + K;
                    float s0 = 0.0f, s1 = 0.0f, s2 = 0.0f, s3 = 0.0f;
#pragma omp simd reduction(+ : s0, s1, s2, s3)
                    for (int k = 0; k < K; k++) {
                        s0 += a[k] * b0[k];
                        s1 += a[k] * b1[k];
                        s2 += a[k] * b2[k];
                        s3 += a[k] * b3[k];
                    }
                    s[0] = s0, s[1] = s1, s[2] = s2, s[3] = s3;
                } else {
                    for (int jj = 0; jj < nj; jj++) {
                        const float *b = B + (size_t)(j0 + jj) * K;
                        for (int k = 0; k < K; k++) s[jj] += a[k] * b[k];
                    }
                }
                float *c = C + (size_t)i * N + j0;
                for (int jj = 0; jj < nj; jj++) {
                    float v = s[jj] + (bias ? bias[j0 + jj] : 0.0f);
                    c[jj] = accumulate ? c[jj] + v : v;
                }
            }
        return;
    }
    // row updates: C[i,:] += op(A)[i,k] * B[k,:], four k at a time when B rows are contiguous (one pass
    // over the C row per four updates). Rows go in blocks of RB (one block per thread at a time) and k in
    // tiles of KT within a block, so a tile of B rows stays in cache for the block's rows: B is read from
    // memory M / RB times instead of M times (the lm_head's input gradient reads all of [vocab, dim]).
    // KT is a multiple of 4, so the groups of four and the order of every C element's additions are
    // those of one pass over k.
    enum { KT = 256, RB = 16 };
#pragma omp parallel for schedule(static)
    for (int i0 = 0; i0 < M; i0 += RB) {
        const int i1 = M - i0 < RB ? M : i0 + RB;
        for (int i = i0; i < i1; i++) {
            float *c = C + (size_t)i * N;
            if (!accumulate) {
                for (int j = 0; j < N; j++) c[j] = bias ? bias[j] : 0.0f;
            } else if (bias) {
                for (int j = 0; j < N; j++) c[j] += bias[j];
            }
        }
        for (int k0 = 0; k0 < K; k0 += KT) {
            const int k1 = K - k0 < KT ? K : k0 + KT;
            for (int i = i0; i < i1; i++) {
                float *c = C + (size_t)i * N;
                int k = k0;
                if (sb_j == 1)
                    for (; k + 4 <= k1; k += 4) {
                        const float a0 = A[i * sa_i + k * sa_k], a1 = A[i * sa_i + (k + 1) * sa_k];
                        const float a2 = A[i * sa_i + (k + 2) * sa_k], a3 = A[i * sa_i + (k + 3) * sa_k];
                        const float *b0 = B + k * sb_k, *b1 = b0 + sb_k, *b2 = b1 + sb_k, *b3 = b2 + sb_k;
#pragma omp simd
                        for (int j = 0; j < N; j++) c[j] += a0 * b0[j] + a1 * b1[j] + a2 * b2[j] + a3 * b3[j];
                    }
                for (; k < k1; k++) {
                    const float a = A[i * sa_i + k * sa_k], *b = B + k * sb_k;
                    for (int j = 0; j < N; j++) c[j] += a * b[j * sb_j];
                }
            }
        }
    }
}

static void cpu_bias_grad(Ops *o, Tensor *db_, const Tensor *dy_, int M, int N) {
    float *db = db_;
    const float *dy = dy_;
#pragma omp parallel for schedule(static)
    for (int j = 0; j < N; j++) {
        float s = 0.0f;
        for (int i = 0; i < M; i++) s += dy[(size_t)i * N + j];
        db[j] += s;
    }
}

static void cpu_im2col(Ops *o, Tensor *cols_, const Tensor *x_, int C, int Tin, int sc, int st, int K, int stride,
                       int pad, int Tout) {
    float *cols = cols_;
    const float *x = x_;
#pragma omp parallel for schedule(static)
    for (int t = 0; t < Tout; t++) {
        float *row = cols + (size_t)t * C * K;
        for (int c = 0; c < C; c++)
            for (int k = 0; k < K; k++) {
                int ti = t * stride + k - pad;
                row[c * K + k] = (ti >= 0 && ti < Tin) ? x[(size_t)c * sc + (size_t)ti * st] : 0.0f;
            }
    }
}

static void cpu_col2im(Ops *o, Tensor *dx_, const Tensor *dcols_, int C, int Tin, int sc, int st, int K,
                       int stride, int pad, int Tout) {
    float *dx = dx_;
    const float *dcols = dcols_;
    // each channel is owned by one thread
#pragma omp parallel for schedule(static)
    for (int c = 0; c < C; c++)
        for (int t = 0; t < Tout; t++)
            for (int k = 0; k < K; k++) {
                int ti = t * stride + k - pad;
                if (ti >= 0 && ti < Tin)
                    dx[(size_t)c * sc + (size_t)ti * st] += dcols[((size_t)t * C + c) * K + k];
            }
}

static void cpu_layernorm(Ops *o, Tensor *y_, float *mean, float *rstd, const Tensor *x_, const Tensor *w_,
                          const Tensor *b_, int T, int C, float eps) {
    float *y = y_;
    const float *x = x_;
    const float *w = w_;
    const float *b = b_;
#pragma omp parallel for schedule(static)
    for (int t = 0; t < T; t++) {
        const float *xr = x + (size_t)t * C;
        float m = 0.0f;
        for (int i = 0; i < C; i++) m += xr[i];
        m /= C;
        float v = 0.0f;
        for (int i = 0; i < C; i++) v += (xr[i] - m) * (xr[i] - m);
        v /= C;
        float r = 1.0f / sqrtf(v + eps);
        float *yr = y + (size_t)t * C;
        for (int i = 0; i < C; i++) yr[i] = (xr[i] - m) * r * w[i] + b[i];
        mean[t] = m;
        rstd[t] = r;
    }
}

static void cpu_layernorm_bwd(Ops *o, Tensor *dx_, Tensor *dw_, Tensor *db_, const Tensor *dy_, const Tensor *x_,
                              const Tensor *w_, const float *mean, const float *rstd, int T, int C) {
    float *dx = dx_;
    float *dw = dw_;
    float *db = db_;
    const float *dy = dy_;
    const float *x = x_;
    const float *w = w_;
#pragma omp parallel for schedule(static)
    for (int t = 0; t < T; t++) {
        const float *xr = x + (size_t)t * C, *dyr = dy + (size_t)t * C;
        float m = mean[t], r = rstd[t];
        float s1 = 0.0f, s2 = 0.0f;  // mean(dxhat), mean(dxhat * xhat)
        for (int i = 0; i < C; i++) {
            float dxh = dyr[i] * w[i];
            s1 += dxh;
            s2 += dxh * (xr[i] - m) * r;
        }
        s1 /= C;
        s2 /= C;
        float *dxr = dx + (size_t)t * C;
        for (int i = 0; i < C; i++) dxr[i] += r * (dyr[i] * w[i] - s1 - (xr[i] - m) * r * s2);
    }
#pragma omp parallel for schedule(static)
    for (int i = 0; i < C; i++) {
        float sw = 0.0f, sb = 0.0f;
        for (int t = 0; t < T; t++) {
            float g = dy[(size_t)t * C + i];
            sw += g * (x[(size_t)t * C + i] - mean[t]) * rstd[t];
            sb += g;
        }
        dw[i] += sw;
        db[i] += sb;
    }
}

static void cpu_rmsnorm(Ops *o, Tensor *y_, float *rstd, const Tensor *x_, const Tensor *w_, int T, int C,
                        float eps) {
    float *y = y_;
    const float *x = x_;
    const float *w = w_;
#pragma omp parallel for schedule(static)
    for (int t = 0; t < T; t++) {
        const float *xr = x + (size_t)t * C;
        float ss = 0.0f;
        for (int i = 0; i < C; i++) ss += xr[i] * xr[i];
        float r = 1.0f / sqrtf(ss / C + eps);
        float *yr = y + (size_t)t * C;
        for (int i = 0; i < C; i++) yr[i] = w[i] * (xr[i] * r);
        rstd[t] = r;
    }
}

static void cpu_rmsnorm_bwd(Ops *o, Tensor *dx_, Tensor *dw_, const Tensor *dy_, const Tensor *x_,
                            const Tensor *w_, const float *rstd, int T, int C) {
    float *dx = dx_;
    float *dw = dw_;
    const float *dy = dy_;
    const float *x = x_;
    const float *w = w_;
#pragma omp parallel for schedule(static)
    for (int t = 0; t < T; t++) {
        const float *xr = x + (size_t)t * C, *dyr = dy + (size_t)t * C;
        float r = rstd[t];
        float s = 0.0f;  // mean(dxn * xn)
        for (int i = 0; i < C; i++) s += dyr[i] * w[i] * xr[i] * r;
        s /= C;
        float *dxr = dx + (size_t)t * C;
        for (int i = 0; i < C; i++) dxr[i] += r * (dyr[i] * w[i] - xr[i] * r * s);
    }
#pragma omp parallel for schedule(static)
    for (int i = 0; i < C; i++) {
        float s = 0.0f;
        for (int t = 0; t < T; t++) s += dy[(size_t)t * C + i] * x[(size_t)t * C + i] * rstd[t];
        dw[i] += s;
    }
}

static void cpu_rope(Ops *o, Tensor *x_, const int *pos, int T, int H, int hd, float theta, int inverse) {
    float *x = x_;
    const int half = hd / 2;
#pragma omp parallel for schedule(static)
    for (int t = 0; t < T; t++) {
        for (int i = 0; i < half; i++) {
            // inv_freq and the angle are fp32 products, as in HF
            float inv_freq = 1.0f / powf(theta, (float)(2 * i) / (float)hd);
            float ang = inv_freq * (float)pos[t];
            float c = cosf(ang), s = inverse ? -sinf(ang) : sinf(ang);
            for (int h = 0; h < H; h++) {
                float *xh = x + ((size_t)t * H + h) * hd;
                float a = xh[i], b = xh[i + half];
                xh[i] = a * c - b * s;
                xh[i + half] = b * c + a * s;
            }
        }
    }
}

// Number of own keys query j of segment s sees.
static int seg_own_visible(const AttnSeg *s, int j) { return s->causal ? s->k_len - s->q_len + j + 1 : s->k_len; }

// Row index of the n-th visible key of a query (prefix keys first, then own keys).
static int seg_key_row(const AttnSeg *s, int n) {
    return n < s->pre_len ? s->pre_start + n : s->k_start + n - s->pre_len;
}

static void cpu_attention(Ops *o, Tensor *out_, float *lse, const Tensor *q_, const Tensor *k_, const Tensor *v_,
                          const AttnSeg *segs, int nseg, int H, int KVH, int hd, float scale) {
    float *out = out_;
    const float *q = q_;
    const float *k = k_;
    const float *v = v_;
    const int group = H / KVH;
    for (int si = 0; si < nseg; si++) {
        const AttnSeg *s = &segs[si];
#pragma omp parallel for collapse(2) schedule(static)
        for (int j = 0; j < s->q_len; j++)
            for (int h = 0; h < H; h++) {
                const int row = s->q_start + j, kvh = h / group;
                const float *qr = q + ((size_t)row * H + h) * hd;
                float *orow = out + ((size_t)row * H + h) * hd;
                const int nkeys = s->pre_len + seg_own_visible(s, j);
                // online softmax: running max m, normaliser l, unnormalised output in orow
                float m = -INFINITY, l = 0.0f;
                for (int d = 0; d < hd; d++) orow[d] = 0.0f;
                for (int n = 0; n < nkeys; n++) {
                    const size_t kr = ((size_t)seg_key_row(s, n) * KVH + kvh) * hd;
                    float sc = 0.0f;
                    for (int d = 0; d < hd; d++) sc += qr[d] * k[kr + d];
                    sc *= scale;
                    if (sc > m) {
                        float f = expf(m - sc);
                        l *= f;
                        for (int d = 0; d < hd; d++) orow[d] *= f;
                        m = sc;
                    }
                    float p = expf(sc - m);
                    l += p;
                    for (int d = 0; d < hd; d++) orow[d] += p * v[kr + d];
                }
                for (int d = 0; d < hd; d++) orow[d] /= l;
                lse[(size_t)row * H + h] = m + logf(l);
            }
    }
}

static void cpu_attention_bwd(Ops *o, Tensor *dq_, Tensor *dk_, Tensor *dv_, const Tensor *dout_,
                              const Tensor *out_, const float *lse, const Tensor *q_, const Tensor *k_,
                              const Tensor *v_, const AttnSeg *segs, int nseg, int H, int KVH, int hd,
                              float scale) {
    float *dq = dq_;
    float *dk = dk_;
    float *dv = dv_;
    const float *dout = dout_;
    const float *out = out_;
    const float *q = q_;
    const float *k = k_;
    const float *v = v_;
    const int group = H / KVH;
    // dk/dv of one kv head are written only by its query heads, so threads split by kv head
#pragma omp parallel for schedule(static)
    for (int kvh = 0; kvh < KVH; kvh++)
        for (int si = 0; si < nseg; si++) {
            const AttnSeg *s = &segs[si];
            for (int j = 0; j < s->q_len; j++)
                for (int h = kvh * group; h < (kvh + 1) * group; h++) {
                    const int row = s->q_start + j;
                    const size_t qo = ((size_t)row * H + h) * hd;
                    const float *qr = q + qo, *dor = dout + qo, *orow = out + qo;
                    float *dqr = dq + qo;
                    const float L = lse[(size_t)row * H + h];
                    float D = 0.0f;  // sum_n p_n dp_n = dout . out
                    for (int d = 0; d < hd; d++) D += dor[d] * orow[d];
                    const int nkeys = s->pre_len + seg_own_visible(s, j);
                    for (int n = 0; n < nkeys; n++) {
                        const size_t kr = ((size_t)seg_key_row(s, n) * KVH + kvh) * hd;
                        float sc = 0.0f, dp = 0.0f;
                        for (int d = 0; d < hd; d++) {
                            sc += qr[d] * k[kr + d];
                            dp += dor[d] * v[kr + d];
                        }
                        float p = expf(sc * scale - L);
                        float ds = p * (dp - D) * scale;
                        for (int d = 0; d < hd; d++) {
                            dqr[d] += ds * k[kr + d];
                            dk[kr + d] += ds * qr[d];
                            dv[kr + d] += p * dor[d];
                        }
                    }
                }
        }
}

static void cpu_gelu(Ops *o, Tensor *y_, const Tensor *x_, size_t n) {
    float *y = y_;
    const float *x = x_;
#pragma omp parallel for schedule(static)
    for (size_t i = 0; i < n; i++) y[i] = 0.5f * x[i] * (1.0f + erff(x[i] * (float)M_SQRT1_2));
}

static void cpu_gelu_bwd(Ops *o, Tensor *dx_, const Tensor *dy_, const Tensor *x_, size_t n) {
    float *dx = dx_;
    const float *dy = dy_;
    const float *x = x_;
    const float inv_sqrt_2pi = 0.3989422804014327f;
#pragma omp parallel for schedule(static)
    for (size_t i = 0; i < n; i++) {
        float xi = x[i];
        float cdf = 0.5f * (1.0f + erff(xi * (float)M_SQRT1_2));
        dx[i] = dy[i] * (cdf + xi * inv_sqrt_2pi * expf(-0.5f * xi * xi));
    }
}

static void cpu_silu_mul(Ops *o, Tensor *y_, const Tensor *g_, const Tensor *u_, size_t n) {
    float *y = y_;
    const float *g = g_;
    const float *u = u_;
#pragma omp parallel for schedule(static)
    for (size_t i = 0; i < n; i++) y[i] = g[i] / (1.0f + expf(-g[i])) * u[i];
}

static void cpu_silu_mul_bwd(Ops *o, Tensor *dg_, Tensor *du_, const Tensor *dy_, const Tensor *g_,
                             const Tensor *u_, size_t n) {
    float *dg = dg_;
    float *du = du_;
    const float *dy = dy_;
    const float *g = g_;
    const float *u = u_;
#pragma omp parallel for schedule(static)
    for (size_t i = 0; i < n; i++) {
        float sig = 1.0f / (1.0f + expf(-g[i]));
        float d = dy[i];
        du[i] = d * g[i] * sig;
        dg[i] = d * u[i] * sig * (1.0f + g[i] * (1.0f - sig));
    }
}

static void cpu_add(Ops *o, Tensor *y_, const Tensor *a_, const Tensor *b_, size_t n) {
    float *y = y_;
    const float *a = a_;
    const float *b = b_;
#pragma omp parallel for schedule(static)
    for (size_t i = 0; i < n; i++) y[i] = a[i] + b[i];
}

static void cpu_avgpool2(Ops *o, Tensor *y_, const Tensor *x_, int R, int C) {
    float *y = y_;
    const float *x = x_;
#pragma omp parallel for schedule(static)
    for (int r = 0; r < R; r++)
        for (int c = 0; c < C; c++)
            y[(size_t)r * C + c] = (x[(size_t)2 * r * C + c] + x[(size_t)(2 * r + 1) * C + c]) * 0.5f;
}

static void cpu_avgpool2_bwd(Ops *o, Tensor *dx_, const Tensor *dy_, int R, int C) {
    float *dx = dx_;
    const float *dy = dy_;
#pragma omp parallel for schedule(static)
    for (int r = 0; r < R; r++)
        for (int c = 0; c < C; c++) {
            float g = dy[(size_t)r * C + c] * 0.5f;
            dx[(size_t)2 * r * C + c] = g;
            dx[(size_t)(2 * r + 1) * C + c] = g;
        }
}

static void cpu_copy_rows(Ops *o, Tensor *dst_, const int *dst_idx, const Tensor *src_, const int *src_idx, int n,
                          int C, int accumulate) {
    float *dst = dst_;
    const float *src = src_;
    // destination rows may repeat (the same token twice), so threads split the columns
#pragma omp parallel for schedule(static)
    for (int c0 = 0; c0 < C; c0 += 64) {
        int c1 = c0 + 64 < C ? c0 + 64 : C;
        for (int i = 0; i < n; i++) {
            int di = dst_idx ? dst_idx[i] : i, si = src_idx ? src_idx[i] : i;
            if (di < 0) continue;
            float *d = dst + (size_t)di * C;
            const float *s = src + (size_t)si * C;
            for (int c = c0; c < c1; c++) d[c] = accumulate ? d[c] + s[c] : s[c];
        }
    }
}

static void cpu_logprob(Ops *o, float *lp, float *lse, const Tensor *logits_, const int *tgt, int R, int V) {
    const float *logits = logits_;
#pragma omp parallel for schedule(static)
    for (int r = 0; r < R; r++) lp[r] = sampler_logprob(logits + (size_t)r * V, V, tgt[r], &lse[r]);
}

static void cpu_logprob_bwd(Ops *o, Tensor *logits_, const float *lse, const int *tgt, const float *dlp, int R,
                            int V) {
    float *logits = logits_;
#pragma omp parallel for schedule(static)
    for (int r = 0; r < R; r++) {
        float *x = logits + (size_t)r * V;
        float g = dlp[r], L = lse[r];
        for (int i = 0; i < V; i++) x[i] = -g * expf(x[i] - L);
        x[tgt[r]] += g;
    }
}

static void cpu_upload(Ops *o, void *dst, const void *src, size_t bytes) { cpu_copy(o, dst, src, bytes); }
static void cpu_download(Ops *o, void *dst, const void *src, size_t bytes) { cpu_copy(o, dst, src, bytes); }
// Tensor storage is fp32 here, so conversion is a copy
static void cpu_upload_act(Ops *o, Tensor *dst, const float *src, size_t n) {
    cpu_copy(o, dst, src, n * sizeof(float));
}
static void cpu_download_act(Ops *o, float *dst, const Tensor *src, size_t n) {
    cpu_copy(o, dst, src, n * sizeof(float));
}
static void cpu_destroy(Ops *o) { free(o); }

Ops *ops_cpu_create(void) {
    Ops *o = callocCheck(1, sizeof *o);
    *o = (Ops){
        .name = "cpu",
        .destroy = cpu_destroy,
        .act_size = sizeof(float),
        .alloc = cpu_alloc,
        .free = cpu_free,
        .upload = cpu_upload,
        .download = cpu_download,
        .upload_act = cpu_upload_act,
        .download_act = cpu_download_act,
        .copy = cpu_copy,
        .zero = cpu_zero,
        .sync = cpu_sync,
        .matmul = cpu_matmul,
        .bias_grad = cpu_bias_grad,
        .im2col = cpu_im2col,
        .col2im = cpu_col2im,
        .layernorm = cpu_layernorm,
        .layernorm_bwd = cpu_layernorm_bwd,
        .rmsnorm = cpu_rmsnorm,
        .rmsnorm_bwd = cpu_rmsnorm_bwd,
        .rope = cpu_rope,
        .attention = cpu_attention,
        .attention_bwd = cpu_attention_bwd,
        .gelu = cpu_gelu,
        .gelu_bwd = cpu_gelu_bwd,
        .silu_mul = cpu_silu_mul,
        .silu_mul_bwd = cpu_silu_mul_bwd,
        .add = cpu_add,
        .avgpool2 = cpu_avgpool2,
        .avgpool2_bwd = cpu_avgpool2_bwd,
        .copy_rows = cpu_copy_rows,
        .logprob = cpu_logprob,
        .logprob_bwd = cpu_logprob_bwd,
    };
    return o;
}
