// flash_fwd.cu: the flash attention forward kernels of the CUDA backend, for runs of many query rows
// (prefill, the encoder, training groups). Both take the same one-segment work items (up to 64 query rows
// of one segment sharing a prefix range and an own-key range, rows with their own visible-key counts) and
// write the same out [rows, H, hd] bf16 and natural-log lse [rows, H] fp32, so the backward's
// recomputation from lse does not depend on which ran:
// - a FlashAttention-2 style kernel for head_dim 64 and 128 (sm_80+ PTX: mma.sync m16n8k16 bf16 -> fp32,
//   ldmatrix, cp.async; ptx.cuh), the default;
// - a WMMA kernel (bf16 16x16x16 fragments through shared memory) for head_dim 32 and outputs that are
//   not 4-byte aligned.
//
// The mma.sync kernel: a block is one item for one query head, 4 warps of 16 query rows. K and V tiles of 64 keys
// stream through two shared-memory buffers by cp.async (the next tile loads while this one is used); Q K^T, the online
// softmax and P V stay in registers: a score accumulator of the m16n8k16 product holds, per thread, two rows x two
// adjacent keys, exactly the halves of the A operand of the P V product, so P is packed to bf16 pairs in place. Softmax
// is in base 2 (scale folded into log2 e), row max/sum over the 4 threads of a quad sharing a row. Measured (H200,
// bench_attention, same run as the WMMA kernel): 117-143 TFLOP/s at the 7B group shape, 133-210 at the encoder's,
// 5.1-5.8x the WMMA kernel; outputs within 4e-3 of it, lse within 1.5e-6.
#include <math.h>
#include <mma.h>

#include "model/cuda/ops_cuda_internal.h"
#include "model/cuda/ptx.cuh"

enum { FF_BQ = FA_BQ, FF_BK = 64, FF_WARPS = 4, FF_THREADS = 32 * FF_WARPS };

// Q [64][LD], K [2][64][LD], V [2][64][LD] bf16. The 8 padding elements make a row 2 * HD + 16 bytes:
// the 8 rows one ldmatrix phase reads start 4 banks apart, so they hit distinct banks.
template <int HD>
struct FfSmem {
    static constexpr int LD = HD + 8;
    static constexpr size_t tile = (size_t)FF_BQ * LD * sizeof(bf16);
    static constexpr size_t q = 0, k = q + tile, v = k + 2 * tile, bytes = v + 2 * tile;
};

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
        ptx_cp16_zfill(t + j * L + d, src + (row * stride + head) * HD + d, ok);
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
__global__ void __launch_bounds__(FF_THREADS)
    flash_fwd_kernel(bf16 *out, float *lse, const bf16 *q, const bf16 *k, const bf16 *v, const AttRow *rows,
                     const AttItem *items, int H, int KVH, float scale_log2) {
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
    ptx_commit();
    if (ntile) {
        const FfTile t = ff_tile(it, own_start, own_len, ntile_pre, 0);
        ff_load<HD>(Ks, k, NULL, t.base, t.nk, KVH, kvh);
        ff_load<HD>(Vs, v, NULL, t.base, t.nk, KVH, kvh);
    }
    ptx_commit();
    ptx_wait<1>();
    __syncthreads();
    // the warp's Q [16, HD] as A fragments, one per 16-column k-step
    unsigned qf[KQ][4];
#pragma unroll
    for (int kq = 0; kq < KQ; kq++) ptx_ldm4(qf[kq], Qs + (w0 + (lane & 15)) * L + kq * 16 + (lane >> 4) * 8);

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
            ptx_commit();
            ptx_wait<1>();
        } else {
            ptx_wait<0>();
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
                    ptx_ldm4(b, Kt + (j * 8 + (lane & 7)) * L + kq * 16 + (lane >> 3) * 8);
                    ptx_mma(s[j], qf[kq], b[0], b[1]);
                    ptx_mma(s[j], qf[kq + 1], b[2], b[3]);
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
                corr[i] = ptx_exp2(m[i] - ms[i]);
                m[i] = mn;
            }
            float ps[2] = {0.0f, 0.0f};
#pragma unroll
            for (int j = 0; j < NS; j++)
#pragma unroll
                for (int e = 0; e < 4; e++) {
                    s[j][e] = ptx_exp2(fmaf(s[j][e], scale_log2, -ms[e / 2]));
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
                const unsigned pa[4] = {ptx_pack(s[2 * kk][0], s[2 * kk][1]), ptx_pack(s[2 * kk][2], s[2 * kk][3]),
                                        ptx_pack(s[2 * kk + 1][0], s[2 * kk + 1][1]),
                                        ptx_pack(s[2 * kk + 1][2], s[2 * kk + 1][3])};
#pragma unroll
                for (int j = 0; j < NO; j += 2) {
                    unsigned b[4];
                    ptx_ldm4t(b, Vt + (kk * 16 + (lane & 15)) * L + j * 8 + (lane >> 4) * 8);
                    ptx_mma(o[j], pa, b[0], b[1]);
                    ptx_mma(o[j + 1], pa, b[2], b[3]);
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

// ---------------------------------------------------------------- the WMMA kernel

// The WMMA kernel (head_dim 32, and 64/128 where the output is not 4-byte aligned): a block takes
// 64 rows of one segment for one head; each of its 4 warps owns 16 rows. Per 64-key tile, S = Q K^T and
// O += P V are bf16 WMMA products with fp32 accumulation; the online softmax (fp32 max/sum per row, two
// lanes a row) rescales the warp's fp32 output tile in shared memory between the two products.
enum { FA_BK = 64, FA_WARPS = 4 };  // FA_BQ: ops_cuda_internal.h

template <int HD>
struct FaSmem {
    static constexpr int LQ = HD + 8, LS = FA_BK + 4, LP = FA_BK + 8, LO = HD + 4;  // leading dims (elements)
    static constexpr size_t q = 0, k = q + (size_t)FA_BQ * LQ * 2, v = k + (size_t)FA_BK * LQ * 2;
    static constexpr size_t warp0 = v + (size_t)FA_BK * LQ * 2;
    static constexpr size_t s_off = 0, p_off = (size_t)16 * LS * 4, o_off = p_off + (size_t)16 * LP * 2;
    static constexpr size_t per_warp = o_off + (size_t)16 * LO * 4;
    static constexpr size_t bytes = warp0 + FA_WARPS * per_warp;
};

// Copies rows [base, base + n) of head `head` (row stride `stride` heads) into a [64][LQ] bf16 tile,
// zero rows after n; 16-byte loads.
template <int HD>
static __device__ void fa_load(bf16 *t, const bf16 *src, const AttRow *rs, int base, int n, int stride, int head) {
    constexpr int per = HD / 8, L = FaSmem<HD>::LQ;
    for (int idx = threadIdx.x; idx < 64 * per; idx += blockDim.x) {
        const int j = idx / per, d = (idx % per) * 8;
        uint4 val = make_uint4(0, 0, 0, 0);
        if (j < n) {
            const size_t row = rs ? (size_t)rs[j].q : (size_t)(base + j);
            val = *(const uint4 *)(src + (row * stride + head) * HD + d);
        }
        *(uint4 *)(t + j * L + d) = val;
    }
}

template <int HD>
static __global__ void __launch_bounds__(128)
    flash_kernel(bf16 *out, float *lse, const bf16 *q, const bf16 *k, const bf16 *v, const AttRow *rows,
                 const AttItem *items, int H, int KVH, float scale) {
    using namespace nvcuda;
    typedef FaSmem<HD> SM;
    extern __shared__ __align__(128) unsigned char smraw[];
    __shared__ AttRow rs[FA_BQ];
    bf16 *Qs = (bf16 *)(smraw + SM::q), *Ks = (bf16 *)(smraw + SM::k), *Vs = (bf16 *)(smraw + SM::v);
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, h = blockIdx.y, kvh = h / (H / KVH);
    unsigned char *wb = smraw + SM::warp0 + warp * SM::per_warp;
    float *Sw = (float *)(wb + SM::s_off), *Ow = (float *)(wb + SM::o_off);
    bf16 *Pw = (bf16 *)(wb + SM::p_off);
    const AttItem it = items[blockIdx.x];
    for (int i = threadIdx.x; i < it.nrows; i += blockDim.x) rs[i] = rows[it.row0 + i];
    __syncthreads();
    fa_load<HD>(Qs, q, rs, 0, it.nrows, H, h);
    for (int i = lane; i < 16 * SM::LO; i += 32) Ow[i] = 0.0f;
    // two lanes per row: r = lane / 2 of this warp's 16, columns [32 * (lane % 2), +32) of a tile
    const int r = lane / 2, half = lane % 2, grow = warp * 16 + r;
    const int row_ok = grow < it.nrows, vis_own = row_ok ? rs[grow].own_vis : 0;
    int wmax = 0;  // most own keys any row of this warp sees (causal tiles past it are skipped)
    for (int i = warp * 16; i < warp * 16 + 16 && i < it.nrows; i++) wmax = rs[i].own_vis > wmax ? rs[i].own_vis : wmax;
    const int own_start = rs[0].own_start;
    int own_len = 0;
    for (int i = 0; i < it.nrows; i++) own_len = rs[i].own_vis > own_len ? rs[i].own_vis : own_len;
    float m = -INFINITY, l = 0.0f;
    const int ntile_pre = (it.pre_len + FA_BK - 1) / FA_BK, ntile = ntile_pre + (own_len + FA_BK - 1) / FA_BK;
    for (int ti = 0; ti < ntile; ti++) {
        const int pre = ti < ntile_pre, t0 = (pre ? ti : ti - ntile_pre) * FA_BK;
        const int len = pre ? it.pre_len : own_len, base = pre ? it.pre_start : own_start;
        const int nk = len - t0 < FA_BK ? len - t0 : FA_BK;
        __syncthreads();
        fa_load<HD>(Ks, k, NULL, base + t0, nk, KVH, kvh);
        fa_load<HD>(Vs, v, NULL, base + t0, nk, KVH, kvh);
        __syncthreads();
        if (warp * 16 >= it.nrows || (!pre && t0 >= wmax)) continue;  // warp-uniform
        // S[16, 64] = Q[16, HD] K^T
        for (int n = 0; n < FA_BK / 16; n++) {
            wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc;
            wmma::fill_fragment(acc, 0.0f);
            for (int kk = 0; kk < HD / 16; kk++) {
                wmma::fragment<wmma::matrix_a, 16, 16, 16, bf16, wmma::row_major> fq;
                wmma::fragment<wmma::matrix_b, 16, 16, 16, bf16, wmma::col_major> fk;
                wmma::load_matrix_sync(fq, Qs + warp * 16 * SM::LQ + kk * 16, SM::LQ);
                wmma::load_matrix_sync(fk, Ks + n * 16 * SM::LQ + kk * 16, SM::LQ);
                wmma::mma_sync(acc, fq, fk, acc);
            }
            wmma::store_matrix_sync(Sw + n * 16, acc, SM::LS, wmma::mem_row_major);
        }
        __syncwarp();
        const int vis = pre ? nk : (vis_own - t0 < nk ? vis_own - t0 : nk);
        float mx = -INFINITY;
        for (int c = half * 32; c < half * 32 + 32; c++)
            if (row_ok && c < vis) mx = fmaxf(mx, Sw[r * SM::LS + c] * scale);
        mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
        const float mn = fmaxf(m, mx);
        // __expf (ex2.approx) keeps the softmax's per-lane serial work short; its error (~2^-21
        // relative) is far below the bf16 rounding of P and of the output
        const float corr = mn == -INFINITY ? 1.0f : __expf(m - mn);
        float ps = 0.0f;
        for (int c = half * 32; c < half * 32 + 32; c++) {
            const float p = (row_ok && c < vis && mn != -INFINITY) ? __expf(Sw[r * SM::LS + c] * scale - mn) : 0.0f;
            Pw[r * SM::LP + c] = __float2bfloat16(p);
            ps += p;
        }
        ps += __shfl_xor_sync(0xffffffffu, ps, 1);
        l = l * corr + ps, m = mn;
        if (corr != 1.0f)  // the running max moved: rescale this row's output (skipped once it settles)
            for (int d = half * (HD / 2); d < (half + 1) * (HD / 2); d++) Ow[r * SM::LO + d] *= corr;
        __syncwarp();
        // O[16, HD] += P[16, 64] V[64, HD]
        for (int n = 0; n < HD / 16; n++) {
            wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc;
            wmma::load_matrix_sync(acc, Ow + n * 16, SM::LO, wmma::mem_row_major);
            for (int kk = 0; kk < FA_BK / 16; kk++) {
                wmma::fragment<wmma::matrix_a, 16, 16, 16, bf16, wmma::row_major> fp;
                wmma::fragment<wmma::matrix_b, 16, 16, 16, bf16, wmma::row_major> fv;
                wmma::load_matrix_sync(fp, Pw + kk * 16, SM::LP);
                wmma::load_matrix_sync(fv, Vs + kk * 16 * SM::LQ + n * 16, SM::LQ);
                wmma::mma_sync(acc, fp, fv, acc);
            }
            wmma::store_matrix_sync(Ow + n * 16, acc, SM::LO, wmma::mem_row_major);
        }
        __syncwarp();
    }
    if (!row_ok) return;
    const size_t qrow = rs[grow].q;
    const float inv = l > 0.0f ? 1.0f / l : 0.0f;
    for (int d = half * (HD / 2); d < (half + 1) * (HD / 2); d++)
        out[(qrow * H + h) * HD + d] = __float2bfloat16(Ow[r * SM::LO + d] * inv);
    if (half == 0) lse[qrow * H + h] = l > 0.0f ? m + logf(l) : -INFINITY;
}

// ---------------------------------------------------------------- host

int flash_fwd_supports(int hd) { return hd == 64 || hd == 128; }

void flash_fwd_init(void) {
    CUDA_CHECK(cudaFuncSetAttribute(flash_fwd_kernel<64>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                    (int)FfSmem<64>::bytes));
    CUDA_CHECK(cudaFuncSetAttribute(flash_fwd_kernel<128>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                    (int)FfSmem<128>::bytes));
    CUDA_CHECK(cudaFuncSetAttribute(flash_kernel<32>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                    (int)FaSmem<32>::bytes));
    CUDA_CHECK(cudaFuncSetAttribute(flash_kernel<64>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                    (int)FaSmem<64>::bytes));
    CUDA_CHECK(cudaFuncSetAttribute(flash_kernel<128>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                    (int)FaSmem<128>::bytes));
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

void flash_wmma_run(bf16 *out, float *lse, const bf16 *q, const bf16 *k, const bf16 *v, const AttRow *rows,
                    const AttItem *items, int n_items, int H, int KVH, int hd, float scale, cudaStream_t stream) {
    if (n_items <= 0) return;
    const dim3 grid(n_items, H);
    if (hd == 32)
        flash_kernel<32><<<grid, 32 * FA_WARPS, FaSmem<32>::bytes, stream>>>(out, lse, q, k, v, rows, items, H, KVH,
                                                                             scale);
    else if (hd == 64)
        flash_kernel<64><<<grid, 32 * FA_WARPS, FaSmem<64>::bytes, stream>>>(out, lse, q, k, v, rows, items, H, KVH,
                                                                             scale);
    else if (hd == 128)
        flash_kernel<128><<<grid, 32 * FA_WARPS, FaSmem<128>::bytes, stream>>>(out, lse, q, k, v, rows, items, H,
                                                                               KVH, scale);
    else
        fatal("flash_wmma_run: head_dim %d unsupported (32, 64 or 128)", hd);
    CUDA_CHECK(cudaGetLastError());
}
