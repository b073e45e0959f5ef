// attention_bwd.cu: the flash attention backward of the CUDA backend (Ops.attention_bwd; semantics in
// ops.h, reference cpu_attention_bwd). Probabilities are recomputed tile by tile from q, k and the
// forward's lse, so no [T x T] matrix ever exists in global memory. Per (query row i, key j, head):
//   P = exp(scale q.k - lse), dP = dout.v, dS = P (dP - D) scale, D = rowsum(dout * out) (fp32, first pass)
//   dv += P^T dout, dk += dS^T q, dq += dS k
// All five products are bf16 tensor-core products with fp32 accumulation (P and dS rounded to bf16 for
// them). Two kernels share the work list, the scratch and the passes around them: the FA2 one (mma.sync
// m16n8k16, see its section below) at head_dim 33..128 in 16-byte rows, and the WMMA one everywhere else
// (or everywhere when the caller asks: ops_cuda_attention_bwd_with, for tests and benchmarks).
//
// Work is KEY-MAJOR. The keys are cut into tiles of <= 64 rows that never straddle a boundary of any
// segment's key range (prefix or own), and each tile lists every query row that sees any of its keys, with
// how many (inside such a tile what a row sees is always a prefix of it: a causal mask cuts at one key).
// A block takes one tile, one query head and up to W rows of that list in chunks of 64 (the next chunk's
// rows stream in by cp.async while one computes), keeps the tile's dk/dv in registers over all of them,
// and adds them out once at the end. This is why the shared-prefix group is cheap and correct: a prefix
// tile's list holds the prompt's rows AND the rows of all G completions, so the G contributions to the
// prefix keys sum in registers within a block instead of racing.
// Sums that cross blocks - dq (a query row meets many key tiles), dk/dv (the H/KVH query heads of a kv
// head, and tiles whose row list is split over blocks to fill the GPU) - are fp32 reductions (4 wide
// where aligned) into a zeroed scratch; a last pass adds the scratch into the bf16 dq/dk/dv (+=, as ops.h
// asks), so each gradient element is rounded to bf16 once. The reductions make the fp32 summation order,
// and so the last bits, vary between runs.
// Measured for the WMMA kernel (H200, bench_attention): 52-58 TFLOP/s at the 7B group shape, 72-77 at the
// encoder's; ncu calls it latency-bound (8 warps an SM at head_dim 128: registers and shared memory allow
// one block). The mma.sync kernel (default for head_dim 64 and 128), same card and run: 78-95 TFLOP/s at
// the group shape, 98-117 at the encoder's (1.35-1.65x). bench_attention prints both kernels side by side.
#include <cuda_bf16.h>
#include <cuda_runtime.h>
#include <mma.h>
#include <stdlib.h>
#include <string.h>

#include "model/cuda/ops_cuda_internal.h"
#include "model/cuda/ptx.cuh"

using namespace nvcuda;

// tile edge (keys and query rows), warps per block, largest head_dim
enum { BWD_B = 64, BWD_WARPS = 8, BWD_THREADS = 32 * BWD_WARPS, BWD_MAXD = 128 };

typedef struct {
    int q, vis;  // query row; keys of the tile it sees, counted from the tile's first
} BwdRow;
typedef struct {
    int k0, nk, row0, nrows;  // key rows [k0, k0 + nk); rows[row0, row0 + nrows)
} BwdItem;

struct AttnBwd {
    AttnSeg *segs;  // host copy of the segments the plan was built for (the cache key, with H)
    int nseg, cap_seg, H;
    BwdRow *rows;  // device work list
    BwdItem *items;
    size_t cap_rows, cap_items;
    int n_items, nq, nk;  // items; query rows and key rows spanned
    float *scratch;       // device fp32: D [nq, H] | dq [nq, H, hd] | dk, dv [nk, KVH, hd]
    size_t scratch_n;
    unsigned attr_set;  // kernels whose shared-memory limit is raised
};

// Shared memory of one block (bytes). HD is the head_dim padded to a WMMA multiple; leading dimensions are
// padded against bank conflicts and keep every 16-row / 16-column WMMA pointer 32-byte aligned. The query
// side (Q, dO and the rows' lse, D, index, visible count) is double-buffered: chunk c + 1 streams in by
// cp.async while chunk c computes.
template <int HD>
struct BwdSmem {
    static constexpr int LD = HD + 8, LP = BWD_B + 8, LO = HD + 4;
    static constexpr size_t tile = (size_t)BWD_B * LD * 2;  // [64][LD] bf16
    static constexpr size_t k = 0, v = k + tile;             // K, V of the block's key tile
    static constexpr size_t q = v + tile, dout = q + 2 * tile;  // Q, dO of a chunk of rows, two buffers each
    static constexpr size_t p = dout + 2 * tile, ds = p + (size_t)BWD_B * LP * 2;  // P, dS [64][LP] bf16
    static constexpr size_t stage = ds + (size_t)BWD_B * LP * 2;  // [64][LO] fp32 rows on their way out
    static constexpr size_t idx = stage + (size_t)BWD_B * LO * 4;  // [16][16] fp32: r * 16 + c
    static constexpr size_t meta = idx + 256 * 4;  // per buffer: lse, D, q row, vis [64] each
    static constexpr size_t meta_buf = 4 * (size_t)BWD_B * 4;
    static constexpr size_t bytes = meta + 2 * meta_buf;
};

// Rows of one head into a [64][LD] bf16 tile: row i is src row idx[i] (or base + i). Rows past n and
// columns past hd are zero, so padding adds nothing to any product. vec: 16-byte asynchronous copies (the
// caller waits for them), else element loads.
template <int HD>
__device__ void bwd_load(bf16 *t, const bf16 *src, const int *idx, int base, int n, int stride, int head, int hd,
                         int vec) {
    constexpr int LD = BwdSmem<HD>::LD;
    if (vec) {
        for (int e = threadIdx.x; e < BWD_B * (HD / 8); e += blockDim.x) {
            const int i = e / (HD / 8), d = (e % (HD / 8)) * 8;
            if (i < n && d < hd)
                ptx_cp16(t + i * LD + d, src + ((size_t)(idx ? idx[i] : base + i) * stride + head) * hd + d);
            else
                *(uint4 *)(t + i * LD + d) = make_uint4(0, 0, 0, 0);
        }
        return;
    }
    for (int e = threadIdx.x; e < BWD_B * HD; e += blockDim.x) {
        const int i = e / HD, d = e % HD;
        t[i * LD + d] = i < n && d < hd ? src[((size_t)(idx ? idx[i] : base + i) * stride + head) * hd + d]
                                        : __float2bfloat16(0.0f);
    }
}

// acc[(row_i * stride + head) * hd + d] += St[i][d] for i < n, d < hd; row_i = idx[i] (or base + i).
template <int HD>
__device__ void bwd_add_rows(float *acc, const float *St, const int *idx, int base, int n, int stride, int head,
                             int hd) {
    constexpr int LO = BwdSmem<HD>::LO;
    if (hd % 4 == 0) {  // scratch rows start 16-byte aligned
        const int per = hd / 4;
        for (int e = threadIdx.x; e < n * per; e += blockDim.x) {
            const int i = e / per, d = (e % per) * 4;
            const float *s = St + i * LO + d;
            ptx_red_add4(acc + ((size_t)(idx ? idx[i] : base + i) * stride + head) * hd + d, s[0], s[1], s[2], s[3]);
        }
        return;
    }
    for (int e = threadIdx.x; e < n * hd; e += blockDim.x) {
        const int i = e / hd, d = e % hd;
        atomicAdd(acc + ((size_t)(idx ? idx[i] : base + i) * stride + head) * hd + d, St[i * LO + d]);
    }
}

typedef wmma::fragment<wmma::accumulator, 16, 16, 16, float> Acc;
typedef wmma::fragment<wmma::matrix_a, 16, 16, 16, bf16, wmma::row_major> FragA;
typedef wmma::fragment<wmma::matrix_a, 16, 16, 16, bf16, wmma::col_major> FragAT;  // a transposed operand
typedef wmma::fragment<wmma::matrix_b, 16, 16, 16, bf16, wmma::row_major> FragB;
typedef wmma::fragment<wmma::matrix_b, 16, 16, 16, bf16, wmma::col_major> FragBT;

// Row metadata of the chunk whose row entry (one per thread tid < 64) is r, valid when ok: index and visible
// count now, lse and D by cp.async.
__device__ void bwd_meta(int *Qr, int *Vis, float *Ls, float *Dl, BwdRow r, int ok, const float *lse,
                         const float *Dsum, int H, int h) {
    const int i = threadIdx.x;
    Qr[i] = ok ? r.q : 0, Vis[i] = ok ? r.vis : 0;
    if (ok) {
        ptx_cp4(Ls + i, lse + (size_t)r.q * H + h);
        ptx_cp4(Dl + i, Dsum + (size_t)r.q * H + h);
    } else {
        Ls[i] = Dl[i] = 0.0f;
    }
}

// One block: key tile it.k0.. of kv head h / (H / KVH), query head h = blockIdx.y, the item's rows in
// chunks of 64. The [64, HD] products (dV, dK, dQ) are 4 x HD/16 fragments, warp w owning column block
// w % (HD/16) of row blocks w / (HD/16) + 8/(HD/16) i, so each B operand fragment it loads serves all its
// row blocks; its dK/dV fragments stay in registers for the whole item.
template <int HD>
__global__ void __launch_bounds__(BWD_THREADS)
    attn_bwd_kernel(float *dq_acc, float *dk_acc, float *dv_acc, const bf16 *dout, const float *lse,
                    const float *Dsum, const bf16 *q, const bf16 *k, const bf16 *v, const BwdRow *rows,
                    const BwdItem *items, int H, int KVH, int hd, float scale, int vec) {
    typedef BwdSmem<HD> SM;
    // NB column blocks of a head; NF fragments of a [64, HD] product, FPW per warp, a warp's row blocks
    // RSTEP apart
    constexpr int NB = HD / 16, NF = 4 * NB, FPW = (NF + BWD_WARPS - 1) / BWD_WARPS;
    constexpr int RSTEP = BWD_WARPS / NB > 0 ? BWD_WARPS / NB : 1;
    extern __shared__ __align__(128) unsigned char sm[];
    bf16 *Ks = (bf16 *)(sm + SM::k), *Vs = (bf16 *)(sm + SM::v), *Ps = (bf16 *)(sm + SM::p);
    bf16 *dSs = (bf16 *)(sm + SM::ds);
    float *St = (float *)(sm + SM::stage), *Idx = (float *)(sm + SM::idx);
    const int warp = threadIdx.x / 32, tid = threadIdx.x, h = blockIdx.y, kvh = h / (H / KVH);
    const BwdItem it = items[blockIdx.x];
    const int nchunk = (it.nrows + BWD_B - 1) / BWD_B;
    // buffer b: Q, dO tiles and the rows' lse, D, q index, visible count
#define BUF_Q(b) ((bf16 *)(sm + SM::q + (b) * SM::tile))
#define BUF_DO(b) ((bf16 *)(sm + SM::dout + (b) * SM::tile))
#define BUF_L(b) ((float *)(sm + SM::meta + (b) * SM::meta_buf))
#define BUF_D(b) (BUF_L(b) + BWD_B)
#define BUF_R(b) ((int *)(BUF_L(b) + 2 * BWD_B))
#define BUF_V(b) (BUF_R(b) + BWD_B)
    // prologue: K, V; chunk 0's rows and tiles in flight; chunk 1's row entries in registers
    BwdRow nx = BwdRow{0, 0};
    if (tid < BWD_B) {
        const int ok = tid < it.nrows;
        bwd_meta(BUF_R(0), BUF_V(0), BUF_L(0), BUF_D(0), ok ? rows[it.row0 + tid] : nx, ok, lse, Dsum, H, h);
        if (BWD_B + tid < it.nrows) nx = rows[it.row0 + BWD_B + tid];
    }
    bwd_load<HD>(Ks, k, NULL, it.k0, it.nk, KVH, kvh, hd, vec);
    bwd_load<HD>(Vs, v, NULL, it.k0, it.nk, KVH, kvh, hd, vec);
    static_assert(BWD_THREADS == 256, "one thread per entry of the 16 x 16 index tile");
    Idx[tid] = (float)tid;
    __syncthreads();
    const int n0 = it.nrows < BWD_B ? it.nrows : BWD_B;
    bwd_load<HD>(BUF_Q(0), q, BUF_R(0), 0, n0, H, h, hd, vec);
    bwd_load<HD>(BUF_DO(0), dout, BUF_R(0), 0, n0, H, h, hd, vec);
    ptx_commit();
    // Accumulator fragments hide which (row, column) each register holds, but all of one shape share the
    // layout: loading r * 16 + c tells every element of S and dP its coordinates.
    Acc pos;
    wmma::load_matrix_sync(pos, Idx, 16, wmma::mem_row_major);
    Acc dK[FPW], dV[FPW];
#pragma unroll
    for (int i = 0; i < FPW; i++) wmma::fill_fragment(dK[i], 0.0f), wmma::fill_fragment(dV[i], 0.0f);
    for (int c = 0; c < nchunk; c++) {
        const int b = c & 1, b1 = b ^ 1, n = it.nrows - c * BWD_B < BWD_B ? it.nrows - c * BWD_B : BWD_B;
        const bf16 *Qs = BUF_Q(b), *dOs = BUF_DO(b);
        const float *Ls = BUF_L(b), *Dl = BUF_D(b);
        const int *Qr = BUF_R(b), *Vis = BUF_V(b);
        ptx_wait<0>();
        __syncthreads();  // chunk c has landed; every thread is done with chunk c - 1 (buffer b1, P, dS, stage)
        const int more = c + 1 < nchunk, left = it.nrows - (c + 1) * BWD_B;
        const int n1 = !more ? 0 : left < BWD_B ? left : BWD_B;
        if (more && tid < BWD_B) {
            bwd_meta(BUF_R(b1), BUF_V(b1), BUF_L(b1), BUF_D(b1), nx, tid < n1, lse, Dsum, H, h);
            const int r2 = (c + 2) * BWD_B + tid;
            if (r2 < it.nrows) nx = rows[it.row0 + r2];
        }
        // S = Q K^T, dP = dO V^T: [64 rows, 64 keys]; warp w: row block w / 2, column blocks 2 (w % 2) + {0, 1}.
        // Then P and dS from them in registers, to shared memory as bf16; keys past a row's visible count, and
        // padding rows, get 0.
        {
            const int rb = warp / 2, cb0 = 2 * (warp % 2);
            Acc s[2], dp[2];
#pragma unroll
            for (int j = 0; j < 2; j++) wmma::fill_fragment(s[j], 0.0f), wmma::fill_fragment(dp[j], 0.0f);
#pragma unroll
            for (int kk = 0; kk < NB; kk++) {
                FragA a, ad;
                wmma::load_matrix_sync(a, Qs + rb * 16 * SM::LD + kk * 16, SM::LD);
                wmma::load_matrix_sync(ad, dOs + rb * 16 * SM::LD + kk * 16, SM::LD);
#pragma unroll
                for (int j = 0; j < 2; j++) {
                    FragBT bt;
                    wmma::load_matrix_sync(bt, Ks + (cb0 + j) * 16 * SM::LD + kk * 16, SM::LD);
                    wmma::mma_sync(s[j], a, bt, s[j]);
                    wmma::load_matrix_sync(bt, Vs + (cb0 + j) * 16 * SM::LD + kk * 16, SM::LD);
                    wmma::mma_sync(dp[j], ad, bt, dp[j]);
                }
            }
#pragma unroll
            for (int j = 0; j < 2; j++)
#pragma unroll
                for (int e = 0; e < s[j].num_elements; e++) {
                    const int rc = (int)pos.x[e], i = rb * 16 + rc / 16, col = (cb0 + j) * 16 + rc % 16;
                    const float p = col < Vis[i] ? __expf(s[j].x[e] * scale - Ls[i]) : 0.0f;
                    Ps[i * SM::LP + col] = __float2bfloat16(p);
                    dSs[i * SM::LP + col] = __float2bfloat16(p * (dp[j].x[e] - Dl[i]) * scale);
                }
        }
        __syncthreads();  // P, dS complete; chunk c + 1's row indices are in place
        if (more) {
            bwd_load<HD>(BUF_Q(b1), q, BUF_R(b1), 0, n1, H, h, hd, vec);
            bwd_load<HD>(BUF_DO(b1), dout, BUF_R(b1), 0, n1, H, h, hd, vec);
        }
        ptx_commit();
        // dV += P^T dO, dK += dS^T Q ([64 keys, HD], registers); dQ = dS K ([64 rows, HD], to the stage)
        if (warp < NF) {  // warp-uniform (HD 16 has fewer fragments than warps)
            const int cb = warp % NB, rb0 = warp / NB;
            Acc dq[FPW];
#pragma unroll
            for (int i = 0; i < FPW; i++) wmma::fill_fragment(dq[i], 0.0f);
#pragma unroll
            for (int kk = 0; kk < BWD_B / 16; kk++) {
                FragB bo, bq, bk;
                wmma::load_matrix_sync(bo, dOs + kk * 16 * SM::LD + cb * 16, SM::LD);
                wmma::load_matrix_sync(bq, Qs + kk * 16 * SM::LD + cb * 16, SM::LD);
                wmma::load_matrix_sync(bk, Ks + kk * 16 * SM::LD + cb * 16, SM::LD);
#pragma unroll
                for (int i = 0; i < FPW; i++) {
                    const int rb = rb0 + RSTEP * i;
                    if (rb >= 4) break;
                    FragAT at;
                    FragA a;
                    wmma::load_matrix_sync(at, Ps + kk * 16 * SM::LP + rb * 16, SM::LP);
                    wmma::mma_sync(dV[i], at, bo, dV[i]);
                    wmma::load_matrix_sync(at, dSs + kk * 16 * SM::LP + rb * 16, SM::LP);
                    wmma::mma_sync(dK[i], at, bq, dK[i]);
                    wmma::load_matrix_sync(a, dSs + rb * 16 * SM::LP + kk * 16, SM::LP);
                    wmma::mma_sync(dq[i], a, bk, dq[i]);
                }
            }
#pragma unroll
            for (int i = 0; i < FPW; i++) {
                const int rb = rb0 + RSTEP * i;
                if (rb >= 4) break;
                wmma::store_matrix_sync(St + rb * 16 * SM::LO + cb * 16, dq[i], SM::LO, wmma::mem_row_major);
            }
        }
        __syncthreads();
        bwd_add_rows<HD>(dq_acc, St, Qr, 0, n, H, h, hd);
    }
    // the tile's dK, then dV, out through the stage
    for (int t = 0; t < 2; t++) {
        __syncthreads();
        if (warp < NF) {
            const int cb = warp % NB, rb0 = warp / NB;
#pragma unroll
            for (int i = 0; i < FPW; i++) {
                const int rb = rb0 + RSTEP * i;
                if (rb >= 4) break;
                wmma::store_matrix_sync(St + rb * 16 * SM::LO + cb * 16, t ? dV[i] : dK[i], SM::LO,
                                        wmma::mem_row_major);
            }
        }
        __syncthreads();
        bwd_add_rows<HD>(t ? dv_acc : dk_acc, St, NULL, it.k0, it.nk, KVH, kvh, hd);
    }
#undef BUF_Q
#undef BUF_DO
#undef BUF_L
#undef BUF_D
#undef BUF_R
#undef BUF_V
}

// ---- The FA2 kernel: mma.sync m16n8k16 with every product in registers ----
// Same work items as above. A block is 4 warps; warp w owns keys [16 w, 16 w + 16) of the tile and keeps
// their dK, dV [16, HD] in registers over the whole item. Per chunk of BR query rows it forms S^T = K Q^T
// and dP^T = V dO^T ([16 keys, BR rows], fp32 registers), turns them into P^T and dS^T in place, and feeds
// them straight back as the A operand of dV += P^T dO and dK += dS^T Q: the m16n8k16 accumulator layout of
// two adjacent 8-column tiles is the A layout of one 16-deep step, so P and dS never touch shared memory
// for those. Only dQ = dS K needs the whole tile's keys, so dS^T goes to shared memory (bf16) once and
// the warps split dQ [BR, HD] between them; dQ leaves by fp32 reductions straight from registers (the
// same scratch and traffic as the WMMA kernel: 4 B per dq element per key tile, against 640 FLOP of the
// five products behind it). A query-major dq pass of its own would drop the reductions but recompute S and
// dP, two of the five products (+40% math); the fire-and-forget reductions overlap the next chunk's math
// instead, so they were chosen (on that arithmetic: no GPU was at hand to time both).
// BR is 64 at head_dim 64 and 32 at 128: at 128 the registers (dK, dV 128 a thread) allow 2 blocks an SM,
// and 32-row chunks keep the double-buffered Q/dO small enough (74 KB a block) for both to fit.

// Fragment layouts: ptx.cuh.
template <int HD>
struct Fa2Cfg {
    static constexpr int BR = HD > 64 ? 32 : 64;  // query rows per chunk
    static constexpr int LD = HD + 8, LS = BR + 8;  // padded rows: ldmatrix's 8 row addresses hit 8 bank groups
    static constexpr size_t kv_tile = (size_t)BWD_B * LD * 2, q_tile = (size_t)BR * LD * 2;
    static constexpr size_t k = 0, v = kv_tile, q = 2 * kv_tile, dout = q + 2 * q_tile;  // Q, dO two buffers each
    static constexpr size_t ds = dout + 2 * q_tile;                 // dS^T [64 keys][LS] bf16
    static constexpr size_t meta = ds + (size_t)BWD_B * LS * 2;     // per buffer: lse, D, q row, vis [BR] each
    static constexpr size_t meta_buf = 4 * (size_t)BR * 4;
    static constexpr size_t bytes = meta + 2 * meta_buf;
};

// Q or dO rows of a chunk into a [BR][LD] buffer by 16-byte cp.async: row i is the query row rw[i].q (the
// work list itself, so the next chunk can be requested before its row indices reach shared memory); rows
// past n and columns past hd are zero.
template <int HD>
__device__ void fa2_load_rows(bf16 *t, const bf16 *src, const BwdRow *rw, int n, int H, int h, int hd) {
    typedef Fa2Cfg<HD> C;
    for (int e = threadIdx.x; e < C::BR * (HD / 8); e += blockDim.x) {
        const int i = e / (HD / 8), d = (e % (HD / 8)) * 8;
        if (i < n && d < hd)
            ptx_cp16(t + i * C::LD + d, src + ((size_t)rw[i].q * H + h) * hd + d);
        else
            *(uint4 *)(t + i * C::LD + d) = make_uint4(0, 0, 0, 0);
    }
}

// Requests chunk c of the item into buffer b (rows, lse, D, Q, dO) and commits the group.
template <int HD>
__device__ void fa2_request(unsigned char *sm, int b, int c, const BwdItem &it, const BwdRow *rows, const bf16 *q,
                            const bf16 *dout, const float *lse, const float *Dsum, int H, int h, int hd) {
    typedef Fa2Cfg<HD> C;
    const int left = it.nrows - c * C::BR, n = left < C::BR ? left : C::BR;
    const BwdRow *rw = rows + it.row0 + c * C::BR;
    float *L = (float *)(sm + C::meta + b * C::meta_buf);
    if (threadIdx.x < C::BR) {
        const int ok = (int)threadIdx.x < n;
        bwd_meta((int *)(L + 2 * C::BR), (int *)(L + 3 * C::BR), L, L + C::BR, ok ? rw[threadIdx.x] : BwdRow{0, 0},
                 ok, lse, Dsum, H, h);
    }
    fa2_load_rows<HD>((bf16 *)(sm + C::q + b * C::q_tile), q, rw, n, H, h, hd);
    fa2_load_rows<HD>((bf16 *)(sm + C::dout + b * C::q_tile), dout, rw, n, H, h, hd);
    ptx_commit();
}

// acc[(row * stride + head) * hd + d ..] += C fragments f[NT] of a 16-row block whose tile j covers columns
// d0 + 8 j; rows g and g + 8 of the block map to row indices r0 and r1 (< 0: not a real row).
template <int NT>
__device__ __forceinline__ void fa2_red_frags(float *acc, const float (*f)[4], int r0, int r1, int stride, int head,
                                              int hd, int d0) {
    const int c = threadIdx.x % 4;
#pragma unroll
    for (int j = 0; j < NT; j++) {
        const int d = d0 + 8 * j + 2 * c;
        if (d >= hd) continue;  // hd % 8 == 0: d + 1 < hd too
        if (r0 >= 0) ptx_red_add2(acc + ((size_t)r0 * stride + head) * hd + d, f[j][0], f[j][1]);
        if (r1 >= 0) ptx_red_add2(acc + ((size_t)r1 * stride + head) * hd + d, f[j][2], f[j][3]);
    }
}

template <int HD>
__global__ void __launch_bounds__(128, HD > 64 ? 2 : 3)
    attn_bwd_fa2_kernel(float *dq_acc, float *dk_acc, float *dv_acc, const bf16 *dout, const float *lse,
                        const float *Dsum, const bf16 *q, const bf16 *k, const bf16 *v, const BwdRow *rows,
                        const BwdItem *items, int H, int KVH, int hd, float scale) {
    typedef Fa2Cfg<HD> C;
    static_assert(BwdSmem<HD>::LD == Fa2Cfg<HD>::LD, "bwd_load fills K, V with the WMMA kernel's row pitch");
    constexpr int BR = C::BR, LD = C::LD, LS = C::LS, NS = BR / 8, ND = HD / 8;  // n-tiles of S^T, of dK/dV
    // dQ [BR, HD]: warp w takes row block w % RB and the HD / NP columns of part w / RB
    constexpr int RB = BR / 16, NP = 4 / RB, NQ = HD / NP / 8;
    extern __shared__ __align__(128) unsigned char sm[];
    const bf16 *Ks = (const bf16 *)(sm + C::k), *Vs = (const bf16 *)(sm + C::v);
    bf16 *dSt = (bf16 *)(sm + C::ds);
    const int lane = threadIdx.x % 32, warp = threadIdx.x / 32, g = lane / 4, cq = lane % 4;
    const int li = lane / 8, lr = lane % 8;  // ldmatrix: which 8x8 matrix this lane addresses, which row of it
    const int h = blockIdx.y, kvh = h / (H / KVH);
    const BwdItem it = items[blockIdx.x];
    const int nchunk = (it.nrows + BR - 1) / BR;
    const int kw = 16 * warp;                           // this warp's first key in the tile
    const int act = kw < it.nk, nkb = (it.nk + 15) / 16;  // warp has real keys; key blocks dQ reads
    bwd_load<HD>((bf16 *)Ks, k, NULL, it.k0, it.nk, KVH, kvh, hd, 1);
    bwd_load<HD>((bf16 *)Vs, v, NULL, it.k0, it.nk, KVH, kvh, hd, 1);
    fa2_request<HD>(sm, 0, 0, it, rows, q, dout, lse, Dsum, H, h, hd);  // K, V ride in chunk 0's group
    float dK[ND][4], dV[ND][4];
#pragma unroll
    for (int j = 0; j < ND; j++)
#pragma unroll
        for (int e = 0; e < 4; e++) dK[j][e] = dV[j][e] = 0.0f;
    for (int c = 0; c < nchunk; c++) {
        const int b = c & 1, left = it.nrows - c * BR, n = left < BR ? left : BR;
        const bf16 *Qs = (const bf16 *)(sm + C::q + b * C::q_tile), *dOs = (const bf16 *)(sm + C::dout + b * C::q_tile);
        const float *Ls = (const float *)(sm + C::meta + b * C::meta_buf), *Dl = Ls + BR;
        const int *Qr = (const int *)(Ls + 2 * BR), *Vis = Qr + BR;
        ptx_wait<0>();
        __syncthreads();  // chunk c has landed; every warp is done with chunk c - 1 (buffer b ^ 1 and dS^T)
        if (c + 1 < nchunk) fa2_request<HD>(sm, b ^ 1, c + 1, it, rows, q, dout, lse, Dsum, H, h, hd);
        if (act) {  // warp-uniform
            // S^T = K_w Q^T, dP^T = V_w dO^T: [16 keys, BR rows], NS tiles of 8 rows
            float s[NS][4], dp[NS][4];
#pragma unroll
            for (int j = 0; j < NS; j++)
#pragma unroll
                for (int e = 0; e < 4; e++) s[j][e] = dp[j][e] = 0.0f;
#pragma unroll
            for (int kk = 0; kk < HD / 16; kk++) {
                unsigned ak[4], av[4];
                const int ar = kw + lr + (li & 1) * 8, ac = kk * 16 + (li >> 1) * 8;
                ptx_ldm4(ak, Ks + ar * LD + ac);
                ptx_ldm4(av, Vs + ar * LD + ac);
#pragma unroll
                for (int j = 0; j < NS; j += 2) {  // B of row tiles j, j + 1: Q rows are B's n, their d its k
                    unsigned bq[4], bo[4];
                    const int br = j * 8 + lr + (li >> 1) * 8, bc = kk * 16 + (li & 1) * 8;
                    ptx_ldm4(bq, Qs + br * LD + bc);
                    ptx_ldm4(bo, dOs + br * LD + bc);
                    ptx_mma(s[j], ak, bq[0], bq[1]);
                    ptx_mma(s[j + 1], ak, bq[2], bq[3]);
                    ptx_mma(dp[j], av, bo[0], bo[1]);
                    ptx_mma(dp[j + 1], av, bo[2], bo[3]);
                }
            }
            // P^T and dS^T in place; a key past the row's visible count (padding rows see none) gets 0
#pragma unroll
            for (int j = 0; j < NS; j++)
#pragma unroll
                for (int e = 0; e < 4; e++) {
                    const int i = j * 8 + 2 * cq + (e & 1), key = kw + g + (e >> 1) * 8;
                    const float p = key < Vis[i] ? __expf(s[j][e] * scale - Ls[i]) : 0.0f;
                    s[j][e] = p;
                    dp[j][e] = p * (dp[j][e] - Dl[i]) * scale;
                }
            // dS^T to shared memory for dQ: rows 2c, 2c + 1 of a tile are adjacent there, one 32-bit store
#pragma unroll
            for (int j = 0; j < NS; j++) {
                *(unsigned *)(dSt + (kw + g) * LS + j * 8 + 2 * cq) = ptx_pack(dp[j][0], dp[j][1]);
                *(unsigned *)(dSt + (kw + g + 8) * LS + j * 8 + 2 * cq) = ptx_pack(dp[j][2], dp[j][3]);
            }
            // dV += P^T dO, dK += dS^T Q over the chunk's rows, 16 at a time: S^T tiles 2m, 2m + 1 are A
#pragma unroll
            for (int m = 0; m < NS / 2; m++) {
                const unsigned ap[4] = {ptx_pack(s[2 * m][0], s[2 * m][1]), ptx_pack(s[2 * m][2], s[2 * m][3]),
                                        ptx_pack(s[2 * m + 1][0], s[2 * m + 1][1]),
                                        ptx_pack(s[2 * m + 1][2], s[2 * m + 1][3])};
                const unsigned ad[4] = {ptx_pack(dp[2 * m][0], dp[2 * m][1]), ptx_pack(dp[2 * m][2], dp[2 * m][3]),
                                        ptx_pack(dp[2 * m + 1][0], dp[2 * m + 1][1]),
                                        ptx_pack(dp[2 * m + 1][2], dp[2 * m + 1][3])};
#pragma unroll
                for (int j = 0; j < ND; j += 2) {  // B of column tiles j, j + 1: rows are B's k, .trans
                    unsigned bo[4], bq[4];
                    const int br = m * 16 + lr + (li & 1) * 8, bc = j * 8 + (li >> 1) * 8;
                    ptx_ldm4t(bo, dOs + br * LD + bc);
                    ptx_ldm4t(bq, Qs + br * LD + bc);
                    ptx_mma(dV[j], ap, bo[0], bo[1]);
                    ptx_mma(dV[j + 1], ap, bo[2], bo[3]);
                    ptx_mma(dK[j], ad, bq[0], bq[1]);
                    ptx_mma(dK[j + 1], ad, bq[2], bq[3]);
                }
            }
        }
        __syncthreads();  // dS^T of all warps in place
        {
            // dQ = dS K: rows rb * 16.., columns d0.., over the tile's real key blocks
            const int rb = warp % RB, d0 = (warp / RB) * (HD / NP);
            float dq[NQ][4];
#pragma unroll
            for (int j = 0; j < NQ; j++)
#pragma unroll
                for (int e = 0; e < 4; e++) dq[j][e] = 0.0f;
            for (int kb = 0; kb < nkb; kb++) {
                unsigned a[4];  // dS [rows, keys] = (dS^T)^T: .trans of the stored [key][row]
                ptx_ldm4t(a, dSt + (kb * 16 + lr + (li >> 1) * 8) * LS + rb * 16 + (li & 1) * 8);
#pragma unroll
                for (int j = 0; j < NQ; j += 2) {
                    unsigned bk[4];
                    ptx_ldm4t(bk, Ks + (kb * 16 + lr + (li & 1) * 8) * LD + d0 + j * 8 + (li >> 1) * 8);
                    ptx_mma(dq[j], a, bk[0], bk[1]);
                    ptx_mma(dq[j + 1], a, bk[2], bk[3]);
                }
            }
            const int i0 = rb * 16 + g, i1 = i0 + 8;
            fa2_red_frags<NQ>(dq_acc, dq, i0 < n ? Qr[i0] : -1, i1 < n ? Qr[i1] : -1, H, h, hd, d0);
        }
    }
    // the warp's keys' dK, dV out
    if (act) {
        const int k0 = kw + g, k1 = k0 + 8;
        const int r0 = k0 < it.nk ? it.k0 + k0 : -1, r1 = k1 < it.nk ? it.k0 + k1 : -1;
        fa2_red_frags<ND>(dk_acc, dK, r0, r1, KVH, kvh, hd, 0);
        fa2_red_frags<ND>(dv_acc, dV, r0, r1, KVH, kvh, hd, 0);
    }
}

// D[w] = sum_d dout[w, d] out[w, d] over the (row, head) vectors w < n, one warp each, in fp32.
__global__ void attn_bwd_dsum_kernel(float *D, const bf16 *dout, const bf16 *out, size_t n, int hd) {
    const int lane = threadIdx.x % 32;
    for (size_t w = blockIdx.x * (size_t)(blockDim.x / 32) + threadIdx.x / 32; w < n;
         w += (size_t)gridDim.x * (blockDim.x / 32)) {
        float s = 0.0f;
        for (int d = lane; d < hd; d += 32) s += __bfloat162float(dout[w * hd + d]) * __bfloat162float(out[w * hd + d]);
        for (int o = 16; o; o >>= 1) s += __shfl_xor_sync(0xffffffffu, s, o);
        if (lane == 0) D[w] = s;
    }
}

// y[i] += acc[i], rounded to bf16 once.
__global__ void attn_bwd_add_kernel(bf16 *y, const float *acc, size_t n) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
        y[i] = __float2bfloat16(__bfloat162float(y[i]) + acc[i]);
}

static unsigned bwd_grid(size_t n, int threads) {
    size_t b = (n + threads - 1) / threads;
    return (unsigned)(b > 65535 * 16 ? 65535 * 16 : (b ? b : 1));
}

static int cmp_int(const void *a, const void *b) {
    const int x = *(const int *)a, y = *(const int *)b;
    return (x > y) - (x < y);
}

typedef struct {
    int k0, nk, r0, r1;  // key rows; its rows in the host row list
} BwdTile;

// Appends the rows of segment s that see tile [k0, k0 + nk) to *rows (grown as needed).
static void bwd_tile_rows(const AttnSeg *s, int k0, int nk, BwdRow **rows, int *n, int *cap) {
    const int in_pre = s->pre_len > 0 && k0 >= s->pre_start && k0 < s->pre_start + s->pre_len;
    const int in_own = s->k_len > 0 && k0 >= s->k_start && k0 < s->k_start + s->k_len;
    // a key row in both ranges of one segment is two keys of it (as on the CPU): two list entries
    for (int pass = 0; pass < 2; pass++) {
        if (!(pass ? in_own : in_pre)) continue;
        for (int j = 0; j < s->q_len; j++) {
            int vis = nk;
            if (pass && s->causal) {  // own key offset n is visible to query j iff n <= k_len - q_len + j
                vis = s->k_len - s->q_len + j + 1 - (k0 - s->k_start);
                vis = vis < 0 ? 0 : vis > nk ? nk : vis;
            }
            if (!vis) continue;
            if (*n == *cap) {
                *cap = *cap ? 2 * *cap : 1024;
                *rows = (BwdRow *)reallocCheck(*rows, (size_t)*cap * sizeof(BwdRow));
            }
            (*rows)[(*n)++] = BwdRow{s->q_start + j, vis};
        }
    }
}

// The key-major work list of segs (see the header comment), uploaded to the state's device arrays.
static void bwd_plan(AttnBwd *st, const AttnSeg *segs, int nseg, int H, int n_sm, cudaStream_t stream) {
    int *b = (int *)mallocCheck((size_t)4 * nseg * sizeof(int) + sizeof(int));
    int nb = 0;
    st->nq = st->nk = 0;
    for (int i = 0; i < nseg; i++) {
        const AttnSeg *s = &segs[i];
        if (s->q_len <= 0) continue;
        st->nq = s->q_start + s->q_len > st->nq ? s->q_start + s->q_len : st->nq;
        if (s->pre_len > 0) b[nb++] = s->pre_start, b[nb++] = s->pre_start + s->pre_len;
        if (s->k_len > 0) b[nb++] = s->k_start, b[nb++] = s->k_start + s->k_len;
    }
    qsort(b, nb, sizeof(int), cmp_int);
    int nu = 0;
    for (int i = 0; i < nb; i++)
        if (!nu || b[i] != b[nu - 1]) b[nu++] = b[i];
    if (nu) st->nk = b[nu - 1];
    BwdTile *tiles = NULL;
    BwdRow *rows = NULL;
    int nt = 0, cap_t = 0, nr = 0, cap_r = 0;
    for (int i = 0; i + 1 < nu; i++)
        for (int k0 = b[i]; k0 < b[i + 1]; k0 += BWD_B) {
            const int nk = b[i + 1] - k0 < BWD_B ? b[i + 1] - k0 : BWD_B, r0 = nr;
            for (int si = 0; si < nseg; si++)
                if (segs[si].q_len > 0) bwd_tile_rows(&segs[si], k0, nk, &rows, &nr, &cap_r);
            if (nr == r0) continue;  // keys no segment reads (between ranges)
            if (nt == cap_t) {
                cap_t = cap_t ? 2 * cap_t : 64;
                tiles = (BwdTile *)reallocCheck(tiles, (size_t)cap_t * sizeof(BwdTile));
            }
            tiles[nt++] = BwdTile{k0, nk, r0, nr};
        }
    free(b);
    // rows per block: the most (the fewest dk/dv reductions) that still give every SM 4 blocks to balance
    int W = 512, n_items = 0;
    for (;; W /= 2) {
        n_items = 0;
        for (int t = 0; t < nt; t++) n_items += (tiles[t].r1 - tiles[t].r0 + W - 1) / W;
        if (W == BWD_B || (long)n_items * H >= 4L * n_sm) break;
    }
    BwdItem *items = (BwdItem *)mallocCheck((size_t)(n_items ? n_items : 1) * sizeof(BwdItem));
    int ni = 0;
    for (int t = 0; t < nt; t++)
        for (int r = tiles[t].r0; r < tiles[t].r1; r += W)
            items[ni++] = BwdItem{tiles[t].k0, tiles[t].nk, r, tiles[t].r1 - r < W ? tiles[t].r1 - r : W};
    if ((size_t)nr > st->cap_rows) {
        if (st->rows) CUDA_CHECK(cudaFree(st->rows));
        CUDA_CHECK(cudaMalloc((void **)&st->rows, (size_t)nr * sizeof(BwdRow)));
        st->cap_rows = nr;
    }
    if ((size_t)ni > st->cap_items) {
        if (st->items) CUDA_CHECK(cudaFree(st->items));
        CUDA_CHECK(cudaMalloc((void **)&st->items, (size_t)ni * sizeof(BwdItem)));
        st->cap_items = ni;
    }
    // pageable sources are staged before cudaMemcpyAsync returns, so the host arrays may go now
    if (nr) CUDA_CHECK(cudaMemcpyAsync(st->rows, rows, (size_t)nr * sizeof(BwdRow), cudaMemcpyHostToDevice, stream));
    if (ni) CUDA_CHECK(cudaMemcpyAsync(st->items, items, (size_t)ni * sizeof(BwdItem), cudaMemcpyHostToDevice, stream));
    st->n_items = ni;
    free(tiles);
    free(rows);
    free(items);
}

static size_t round4(size_t n) { return (n + 3) & ~(size_t)3; }

template <int HD>
static void fa2_launch(AttnBwd *st, float *D, float *dqa, float *dka, float *dva, const bf16 *dout, const float *lse,
                       const bf16 *q, const bf16 *k, const bf16 *v, int H, int KVH, int hd, float scale,
                       cudaStream_t stream) {
    const unsigned bit = 1u << (16 + HD / 16);
    if (!(st->attr_set & bit)) {
        CUDA_CHECK(cudaFuncSetAttribute(attn_bwd_fa2_kernel<HD>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                        (int)Fa2Cfg<HD>::bytes));
        st->attr_set |= bit;
    }
    attn_bwd_fa2_kernel<HD><<<dim3(st->n_items, H), 128, Fa2Cfg<HD>::bytes, stream>>>(
        dqa, dka, dva, dout, lse, D, q, k, v, st->rows, st->items, H, KVH, hd, scale);
}

template <int HD>
static void bwd_launch(AttnBwd *st, float *D, float *dqa, float *dka, float *dva, const bf16 *dout, const float *lse,
                       const bf16 *q, const bf16 *k, const bf16 *v, int H, int KVH, int hd, float scale, int vec,
                       cudaStream_t stream) {
    const unsigned bit = 1u << (HD / 16);
    if (!(st->attr_set & bit)) {
        CUDA_CHECK(cudaFuncSetAttribute(attn_bwd_kernel<HD>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                        (int)BwdSmem<HD>::bytes));
        st->attr_set |= bit;
    }
    attn_bwd_kernel<HD><<<dim3(st->n_items, H), BWD_THREADS, BwdSmem<HD>::bytes, stream>>>(
        dqa, dka, dva, dout, lse, D, q, k, v, st->rows, st->items, H, KVH, hd, scale, vec);
}

void attn_bwd_run(AttnBwd **stp, bf16 *dq, bf16 *dk, bf16 *dv, const bf16 *dout, const bf16 *out, const float *lse,
                  const bf16 *q, const bf16 *k, const bf16 *v, const AttnSeg *segs, int nseg, int H, int KVH, int hd,
                  float scale, int wmma, int n_sm, cudaStream_t stream) {
    if (nseg <= 0) return;
    if (hd < 1 || hd > BWD_MAXD || KVH < 1 || H % KVH)
        fatal("cuda attention_bwd: head_dim %d (1..%d) or heads %d / kv heads %d unsupported", hd, BWD_MAXD, H, KVH);
    if (!*stp) *stp = (AttnBwd *)callocCheck(1, sizeof(AttnBwd));
    AttnBwd *st = *stp;
    if (!(st->segs && st->nseg == nseg && st->H == H && !memcmp(st->segs, segs, (size_t)nseg * sizeof *segs))) {
        if (nseg > st->cap_seg) {
            st->cap_seg = nseg;
            st->segs = (AttnSeg *)reallocCheck(st->segs, (size_t)nseg * sizeof *segs);
        }
        memcpy(st->segs, segs, (size_t)nseg * sizeof *segs);
        st->nseg = nseg, st->H = H;
        bwd_plan(st, segs, nseg, H, n_sm, stream);
    }
    if (!st->n_items) return;
    // scratch regions start 16-byte aligned for the 4-wide reductions
    const size_t nD = round4((size_t)st->nq * H), nQ = round4((size_t)st->nq * H * hd);
    const size_t nK = round4((size_t)st->nk * KVH * hd), need = nD + nQ + 2 * nK;
    if (need > st->scratch_n) {
        if (st->scratch) CUDA_CHECK(cudaFree(st->scratch));
        CUDA_CHECK(cudaMalloc((void **)&st->scratch, need * sizeof(float)));
        st->scratch_n = need;
    }
    float *D = st->scratch, *dqa = D + nD, *dka = dqa + nQ, *dva = dka + nK;
    CUDA_CHECK(cudaMemsetAsync(dqa, 0, (nQ + 2 * nK) * sizeof(float), stream));
    const size_t nvec = (size_t)st->nq * H;
    attn_bwd_dsum_kernel<<<bwd_grid(nvec * 32, 256), 256, 0, stream>>>(D, dout, out, nvec, hd);
    const int vec = hd % 8 == 0 && ((uintptr_t)q | (uintptr_t)k | (uintptr_t)v | (uintptr_t)dout) % 16 == 0;
    // the FA2 kernel wants 16-byte rows (cp.async) and pays for padding below 33 (the WMMA one pads to 16)
    if (!wmma && vec && hd > 32 && hd <= 64)
        fa2_launch<64>(st, D, dqa, dka, dva, dout, lse, q, k, v, H, KVH, hd, scale, stream);
    else if (!wmma && vec && hd > 64)
        fa2_launch<128>(st, D, dqa, dka, dva, dout, lse, q, k, v, H, KVH, hd, scale, stream);
    else if (hd <= 16)
        bwd_launch<16>(st, D, dqa, dka, dva, dout, lse, q, k, v, H, KVH, hd, scale, vec, stream);
    else if (hd <= 32)
        bwd_launch<32>(st, D, dqa, dka, dva, dout, lse, q, k, v, H, KVH, hd, scale, vec, stream);
    else if (hd <= 64)
        bwd_launch<64>(st, D, dqa, dka, dva, dout, lse, q, k, v, H, KVH, hd, scale, vec, stream);
    else
        bwd_launch<128>(st, D, dqa, dka, dva, dout, lse, q, k, v, H, KVH, hd, scale, vec, stream);
    const size_t nq = (size_t)st->nq * H * hd, nk = (size_t)st->nk * KVH * hd;
    attn_bwd_add_kernel<<<bwd_grid(nq, 256), 256, 0, stream>>>(dq, dqa, nq);
    attn_bwd_add_kernel<<<bwd_grid(nk, 256), 256, 0, stream>>>(dk, dka, nk);
    attn_bwd_add_kernel<<<bwd_grid(nk, 256), 256, 0, stream>>>(dv, dva, nk);
    CUDA_CHECK(cudaGetLastError());
}

size_t attn_bwd_bytes(const AttnBwd *st) {
    if (!st) return 0;
    return st->scratch_n * sizeof(float) + st->cap_rows * sizeof(BwdRow) + st->cap_items * sizeof(BwdItem);
}

void attn_bwd_free(AttnBwd *st) {
    if (!st) return;
    free(st->segs);
    if (st->rows) cudaFree(st->rows);
    if (st->items) cudaFree(st->items);
    if (st->scratch) cudaFree(st->scratch);
    free(st);
}
