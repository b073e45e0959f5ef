// flash_fwd.cu: FlashAttention-2 style forward for head_dim 64 and 128 on the tensor cores (sm_80+ PTX:
// mma.sync m16n8k16 bf16 -> fp32, ldmatrix, cp.async). It takes the same one-segment work items as the
// WMMA flash_kernel in ops_cuda.cu (64 query rows of one segment sharing a prefix range and an own-key
// range, rows with their own visible-key counts) and writes the same out [rows, H, hd] bf16 and natural-log
// lse [rows, H] fp32, so the backward's recomputation from lse is unchanged.
//
// A block is one item for one query head, 4 warps of 16 query rows. K and V tiles of 64 keys stream
// through two shared-memory buffers by cp.async (the next tile loads while this one is used); Q K^T, the
// online softmax and P V stay in registers: a score accumulator of the m16n8k16 product holds, per thread,
// two rows x two adjacent keys, exactly the halves of the A operand of the P V product, so P is packed to
// bf16 pairs in place. Softmax is in base 2 (scale folded into log2 e), row max/sum over the 4 threads of
// a quad sharing a row.
// Measured (H200, bench_attention, same run as the WMMA kernel): 117-143 TFLOP/s at the 7B group shape,
// 133-210 at the encoder's, 5.1-5.8x the WMMA kernel; outputs within 4e-3 of it, lse within 1.5e-6.
#include <math.h>

#include "model/cuda/ops_cuda_internal.h"

typedef __nv_bfloat16 bf16;

enum { FF_BQ = 64, FF_BK = 64, FF_WARPS = 4, FF_THREADS = 32 * FF_WARPS };

// Q [64][LD], K [2][64][LD], V [2][64][LD] bf16. The 8 padding elements make a row 2 * HD + 16 bytes:
// the 8 rows one ldmatrix phase reads start 4 banks apart, so they hit distinct banks.
template <int HD>
struct FfSmem {
    static constexpr int LD = HD + 8;
    static constexpr size_t tile = (size_t)FF_BQ * LD * sizeof(bf16);
    static constexpr size_t q = 0, k = q + tile, v = k + 2 * tile, bytes = v + 2 * tile;
};

// ---------------------------------------------------------------- PTX wrappers

// 16 bytes global -> shared, asynchronous; ok == 0 writes zeros (src is not read).
__device__ __forceinline__ void ff_cp16(void *dst, const void *src, int ok) {
    const unsigned d = (unsigned)__cvta_generic_to_shared(dst);
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(d), "l"(src), "r"(ok ? 16 : 0));
}
__device__ __forceinline__ void ff_commit() { asm volatile("cp.async.commit_group;\n" ::); }
template <int N>
__device__ __forceinline__ void ff_wait() {
    asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory");
}

// Four 8x8 b16 matrices; lane l gives the address of row l % 8 of matrix l / 8, and register i of every
// thread gets matrix i's (row t / 4, columns 2 (t % 4) + {0, 1}) -- or, transposed, (rows 2 (t % 4) + {0, 1},
// column t / 4).
__device__ __forceinline__ void ff_ldm4(unsigned r[4], const bf16 *p) {
    const unsigned a = (unsigned)__cvta_generic_to_shared(p);
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(a));
}
__device__ __forceinline__ void ff_ldm4t(unsigned r[4], const bf16 *p) {
    const unsigned a = (unsigned)__cvta_generic_to_shared(p);
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(a));
}

// c[16x8] += a[16x16] b[16x8]. Thread t: a = {(r, k), (r + 8, k), (r, k + 8), (r + 8, k + 8)} pairs with
// r = t / 4, k = 2 (t % 4); b = {(k, n), (k + 8, n)} pairs down a column n = t / 4; c = {(r, 2 (t % 4) + {0, 1}),
// (r + 8, same)}.
__device__ __forceinline__ void ff_mma(float c[4], const unsigned a[4], unsigned b0, unsigned b1) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
        "{%0, %1, %2, %3};\n"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

// bf16 pair, lo in the low half (the lower column of an mma operand pair)
__device__ __forceinline__ unsigned ff_pack(float lo, float hi) {
    const __nv_bfloat162 h = __floats2bfloat162_rn(lo, hi);
    return *(const unsigned *)&h;
}

// 2^x by ex2.approx (2^-inf = 0); its ~2^-22 relative error is far below the bf16 rounding of P.
__device__ __forceinline__ float ff_exp2(float x) {
    float y;
    asm("ex2.approx.ftz.f32 %0, %1;\n" : "=f"(y) : "f"(x));
    return y;
}

// ---------------------------------------------------------------- kernel

// Starts the copy of 64 rows of head `head` (row stride `stride` heads) into a [64][LD] tile: row j is
// rs[j].q when rs is given, else base + j; rows from n on are zero-filled so no stale value (or NaN) of
// another tile enters a product.
template <int HD>
__device__ __forceinline__ void ff_load(bf16 *t, const bf16 *src, const AttRow *rs, int base, int n, int stride,
                                        int head) {
    constexpr int per = HD / 8, L = FfSmem<HD>::LD;
#pragma unroll
    for (int i = 0; i < FF_BQ * per / FF_THREADS; i++) {
        const int idx = threadIdx.x + i * FF_THREADS, j = idx / per, d = (idx % per) * 8;
        const int ok = j < n, jj = ok ? j : 0;  // a zero-filled row still names a valid address
        const size_t row = rs ? (size_t)rs[jj].q : (size_t)(base + jj);
        ff_cp16(t + j * L + d, src + (row * stride + head) * HD + d, ok);
    }
}

// Tile ti of an item: the prefix's tiles first, then the own keys'.
struct FfTile {
    int pre, t0, base, nk;
};
__device__ __forceinline__ FfTile ff_tile(const AttItem &it, int own_start, int own_len, int ntile_pre, int ti) {
    FfTile t;
    t.pre = ti < ntile_pre;
    t.t0 = (t.pre ? ti : ti - ntile_pre) * FF_BK;
    const int len = t.pre ? it.pre_len : own_len;
    t.base = (t.pre ? it.pre_start : own_start) + t.t0;
    t.nk = len - t.t0 < FF_BK ? len - t.t0 : FF_BK;
    return t;
}

template <int HD>
__global__ void __launch_bounds__(FF_THREADS) flash_fwd_kernel(bf16 *out, float *lse, const bf16 *q, const bf16 *k,
                                                               const bf16 *v, const AttRow *rows,
                                                               const AttItem *items, int H, int KVH,
                                                               float scale_log2) {
    typedef FfSmem<HD> SM;
    constexpr int L = SM::LD, NS = FF_BK / 8, NO = HD / 8, KQ = HD / 16;  // S, O column blocks; Q k-steps
    extern __shared__ __align__(128) unsigned char smraw[];
    __shared__ AttRow rs[FF_BQ];
    bf16 *Qs = (bf16 *)(smraw + SM::q), *Ks = (bf16 *)(smraw + SM::k), *Vs = (bf16 *)(smraw + SM::v);
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, h = blockIdx.y, kvh = h / (H / KVH);
    const AttItem it = items[blockIdx.x];
    for (int i = threadIdx.x; i < it.nrows; i += blockDim.x) rs[i] = rows[it.row0 + i];
    __syncthreads();
    // every row of an item is in one segment: one own range, each row seeing own_vis keys of it
    const int own_start = rs[0].own_start;
    int own_len = 0;
    for (int i = 0; i < it.nrows; i++) own_len = rs[i].own_vis > own_len ? rs[i].own_vis : own_len;
    // this thread's rows r0 and r0 + 8 of the warp's 16; wmax / wmin: most / fewest own keys a row of the
    // warp sees (tiles past wmax are skipped, tiles below wmin need no mask; missing rows count as 0)
    const int w0 = warp * 16, r0 = w0 + lane / 4, r1 = r0 + 8;
    const int vis0 = r0 < it.nrows ? rs[r0].own_vis : 0, vis1 = r1 < it.nrows ? rs[r1].own_vis : 0;
    int wmax = 0, wmin = w0 + 16 <= it.nrows ? own_len : 0;
    for (int i = w0; i < w0 + 16 && i < it.nrows; i++) {
        wmax = rs[i].own_vis > wmax ? rs[i].own_vis : wmax;
        wmin = rs[i].own_vis < wmin ? rs[i].own_vis : wmin;
    }
    const int ntile_pre = (it.pre_len + FF_BK - 1) / FF_BK, ntile = ntile_pre + (own_len + FF_BK - 1) / FF_BK;

    // Q in its own group, then tile 0 (an empty group when there are no keys)
    ff_load<HD>(Qs, q, rs, 0, it.nrows, H, h);
    ff_commit();
    if (ntile) {
        const FfTile t = ff_tile(it, own_start, own_len, ntile_pre, 0);
        ff_load<HD>(Ks, k, NULL, t.base, t.nk, KVH, kvh);
        ff_load<HD>(Vs, v, NULL, t.base, t.nk, KVH, kvh);
    }
    ff_commit();
    ff_wait<1>();
    __syncthreads();
    // the warp's Q [16, HD] as A fragments, one per 16-column k-step
    unsigned qf[KQ][4];
#pragma unroll
    for (int kq = 0; kq < KQ; kq++) ff_ldm4(qf[kq], Qs + (w0 + (lane & 15)) * L + kq * 16 + (lane >> 4) * 8);

    float o[NO][4];  // O [16, HD] accumulator, column block j = columns 8 j ..
#pragma unroll
    for (int j = 0; j < NO; j++) o[j][0] = o[j][1] = o[j][2] = o[j][3] = 0.0f;
    float m[2] = {-INFINITY, -INFINITY}, l[2] = {0.0f, 0.0f};  // rows r0, r1: max (base 2), this thread's sum

    for (int ti = 0; ti < ntile; ti++) {
        // start tile ti + 1 into the other buffer (last read in iteration ti - 1, closed by its barrier)
        if (ti + 1 < ntile) {
            const FfTile n = ff_tile(it, own_start, own_len, ntile_pre, ti + 1);
            const size_t b = (size_t)((ti + 1) & 1) * FF_BK * L;
            ff_load<HD>(Ks + b, k, NULL, n.base, n.nk, KVH, kvh);
            ff_load<HD>(Vs + b, v, NULL, n.base, n.nk, KVH, kvh);
            ff_commit();
            ff_wait<1>();
        } else {
            ff_wait<0>();
        }
        __syncthreads();
        const FfTile t = ff_tile(it, own_start, own_len, ntile_pre, ti);
        if (w0 < it.nrows && (t.pre || t.t0 < wmax)) {  // warp-uniform
            const bf16 *Kt = Ks + (size_t)(ti & 1) * FF_BK * L, *Vt = Vs + (size_t)(ti & 1) * FF_BK * L;
            // S [16, 64] = Q K^T; K rows are B's columns, so plain ldmatrix gives B fragments: lanes 8 g + i
            // address key i, columns 8 g.., i.e. the two k-steps kq, kq + 1 at once
            float s[NS][4];
#pragma unroll
            for (int j = 0; j < NS; j++) {
                s[j][0] = s[j][1] = s[j][2] = s[j][3] = 0.0f;
#pragma unroll
                for (int kq = 0; kq < KQ; kq += 2) {
                    unsigned b[4];
                    ff_ldm4(b, Kt + (j * 8 + (lane & 7)) * L + kq * 16 + (lane >> 3) * 8);
                    ff_mma(s[j], qf[kq], b[0], b[1]);
                    ff_mma(s[j], qf[kq + 1], b[2], b[3]);
                }
            }
            // masks: keys past the tile's end, own keys past a row's visible count
            if (t.pre ? t.nk < FF_BK : t.t0 + FF_BK > wmin) {
                const int lim0 = t.pre ? t.nk : vis0 - t.t0, lim1 = t.pre ? t.nk : vis1 - t.t0;
#pragma unroll
                for (int j = 0; j < NS; j++)
#pragma unroll
                    for (int e = 0; e < 2; e++) {
                        const int c = j * 8 + 2 * (lane & 3) + e;
                        if (c >= lim0) s[j][e] = -INFINITY;
                        if (c >= lim1) s[j][2 + e] = -INFINITY;
                    }
            }
            // online softmax per row: the new max over the quad, rescale of the running sum and output
            float mx[2] = {-INFINITY, -INFINITY};
#pragma unroll
            for (int j = 0; j < NS; j++) {
                mx[0] = fmaxf(mx[0], fmaxf(s[j][0], s[j][1]));
                mx[1] = fmaxf(mx[1], fmaxf(s[j][2], s[j][3]));
            }
            float corr[2], ms[2];
#pragma unroll
            for (int i = 0; i < 2; i++) {
                mx[i] = fmaxf(mx[i], __shfl_xor_sync(0xffffffffu, mx[i], 1));
                mx[i] = fmaxf(mx[i], __shfl_xor_sync(0xffffffffu, mx[i], 2));
                const float mn = fmaxf(m[i], mx[i] * scale_log2);
                ms[i] = mn == -INFINITY ? 0.0f : mn;  // nothing visible yet: every p is 0, keep off inf - inf
                corr[i] = ff_exp2(m[i] - ms[i]);
                m[i] = mn;
            }
            float ps[2] = {0.0f, 0.0f};
#pragma unroll
            for (int j = 0; j < NS; j++)
#pragma unroll
                for (int e = 0; e < 4; e++) {
                    s[j][e] = ff_exp2(fmaf(s[j][e], scale_log2, -ms[e / 2]));
                    ps[e / 2] += s[j][e];
                }
            l[0] = l[0] * corr[0] + ps[0], l[1] = l[1] * corr[1] + ps[1];
#pragma unroll
            for (int j = 0; j < NO; j++) o[j][0] *= corr[0], o[j][1] *= corr[0], o[j][2] *= corr[1], o[j][3] *= corr[1];
            // O [16, HD] += P [16, 64] V [64, HD]; the score blocks 2 kk, 2 kk + 1 are P's A fragment for
            // keys 16 kk..; V rows are B's rows, so ldmatrix.trans: lanes 0-15 address keys 16 kk + lane,
            // lanes 16-31 the same keys 8 columns on (column blocks j, j + 1)
#pragma unroll
            for (int kk = 0; kk < FF_BK / 16; kk++) {
                const unsigned pa[4] = {ff_pack(s[2 * kk][0], s[2 * kk][1]), ff_pack(s[2 * kk][2], s[2 * kk][3]),
                                        ff_pack(s[2 * kk + 1][0], s[2 * kk + 1][1]),
                                        ff_pack(s[2 * kk + 1][2], s[2 * kk + 1][3])};
#pragma unroll
                for (int j = 0; j < NO; j += 2) {
                    unsigned b[4];
                    ff_ldm4t(b, Vt + (kk * 16 + (lane & 15)) * L + j * 8 + (lane >> 4) * 8);
                    ff_mma(o[j], pa, b[0], b[1]);
                    ff_mma(o[j + 1], pa, b[2], b[3]);
                }
            }
        }
        __syncthreads();  // the buffer read here is refilled by the next iteration's copy
    }

    float inv[2];
#pragma unroll
    for (int i = 0; i < 2; i++) {
        l[i] += __shfl_xor_sync(0xffffffffu, l[i], 1);
        l[i] += __shfl_xor_sync(0xffffffffu, l[i], 2);
        inv[i] = l[i] > 0.0f ? 1.0f / l[i] : 0.0f;
    }
#pragma unroll
    for (int i = 0; i < 2; i++) {
        const int r = i ? r1 : r0;
        if (r >= it.nrows) continue;
        const size_t qrow = rs[r].q;
        bf16 *po = out + (qrow * H + h) * HD + 2 * (lane & 3);
#pragma unroll
        for (int j = 0; j < NO; j++)
            *(__nv_bfloat162 *)(po + j * 8) = __floats2bfloat162_rn(o[j][2 * i] * inv[i], o[j][2 * i + 1] * inv[i]);
        // natural log: m is in base 2
        if ((lane & 3) == 0) lse[qrow * H + h] = l[i] > 0.0f ? m[i] * (float)M_LN2 + logf(l[i]) : -INFINITY;
    }
}

// ---------------------------------------------------------------- host

int flash_fwd_supports(int hd) { return hd == 64 || hd == 128; }

void flash_fwd_init(void) {
    CUDA_CHECK(cudaFuncSetAttribute(flash_fwd_kernel<64>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                    (int)FfSmem<64>::bytes));
    CUDA_CHECK(cudaFuncSetAttribute(flash_fwd_kernel<128>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                    (int)FfSmem<128>::bytes));
}

void flash_fwd_run(bf16 *out, float *lse, const bf16 *q, const bf16 *k, const bf16 *v, const AttRow *rows,
                   const AttItem *items, int n_items, int H, int KVH, int hd, float scale, cudaStream_t stream) {
    if (!flash_fwd_supports(hd)) fatal("flash_fwd_run: head_dim %d unsupported (64 or 128)", hd);
    if (n_items <= 0) return;
    const dim3 grid(n_items, H);
    const float sl2 = scale * (float)M_LOG2E;
    if (hd == 64)
        flash_fwd_kernel<64><<<grid, FF_THREADS, FfSmem<64>::bytes, stream>>>(out, lse, q, k, v, rows, items, H, KVH,
                                                                              sl2);
    else
        flash_fwd_kernel<128><<<grid, FF_THREADS, FfSmem<128>::bytes, stream>>>(out, lse, q, k, v, rows, items, H,
                                                                                KVH, sl2);
    CUDA_CHECK(cudaGetLastError());
}
