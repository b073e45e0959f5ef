// attention_bwd.cu: the flash attention backward of the CUDA backend (Ops.attention_bwd; semantics in
// ops.h, reference cpu_attention_bwd). Probabilities are recomputed tile by tile from q, k and the
// forward's lse, so no [T x T] matrix ever exists in global memory. Per (query row i, key j, head):
//   P = exp(scale q.k - lse), dP = dout.v, dS = P (dP - D) scale, D = rowsum(dout * out) (fp32, first pass)
//   dv += P^T dout, dk += dS^T q, dq += dS k
// All five products are bf16 WMMA tiles with fp32 accumulation (P and dS are rounded to bf16 for them).
//
// Work is KEY-MAJOR. The keys are cut into tiles of <= 64 rows that never straddle a boundary of any
// segment's key range (prefix or own), and each tile lists every query row that sees any of its keys, with
// how many (inside such a tile what a row sees is always a prefix of it: a causal mask cuts at one key).
// A block takes one tile, one query head and up to W rows of that list, keeps the tile's dk/dv in
// registers over all of them, and adds them out once at the end. This is why the shared-prefix group is
// cheap and correct: a prefix tile's list holds the prompt's rows AND the rows of all G completions, so
// the G contributions to the prefix keys sum in registers within a block instead of racing.
// Sums that cross blocks - dq (a query row meets many key tiles), dk/dv (the H/KVH query heads of a kv
// head, and tiles whose row list is split over blocks to fill the GPU) - are fp32 atomic adds (float4
// where aligned) into a zeroed scratch; a last pass adds the scratch into the bf16 dq/dk/dv (+=, as ops.h
// asks), so each gradient element is rounded to bf16 once. Atomics make the fp32 summation order, and so
// the last bits, vary between runs.
#include <cuda_bf16.h>
#include <cuda_runtime.h>
#include <mma.h>
#include <stdlib.h>
#include <string.h>

#include "model/cuda/ops_cuda_internal.h"

typedef __nv_bfloat16 bf16;
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
// padded against bank conflicts and keep every 16-row / 16-column WMMA pointer 32-byte aligned.
template <int HD>
struct BwdSmem {
    static constexpr int LD = HD + 8, LP = BWD_B + 8, LS = BWD_B + 4, LO = HD + 4;
    static constexpr size_t tile = (size_t)BWD_B * LD * 2;                         // [64][LD] bf16
    static constexpr size_t k = 0, v = k + tile, q = v + tile, dout = q + tile;  // K, V, Q, dO
    static constexpr size_t p = dout + tile, ds = p + (size_t)BWD_B * LP * 2;    // P, dS [64][LP] bf16
    static constexpr size_t s = ds + (size_t)BWD_B * LP * 2, dp = s + (size_t)BWD_B * LS * 4;  // fp32
    static constexpr size_t stage = s;  // [64][LO] fp32 output rows, over S and dP once they are consumed
    static constexpr size_t meta = dp + (size_t)BWD_B * LS * 4;  // lse, D (fp32), q row, vis (int), [64] each
    static constexpr size_t bytes = meta + 4 * (size_t)BWD_B * 4;
    static_assert((size_t)LO <= 2 * (size_t)LS, "the stage fits over S and dP");
};

// Rows of one head into a [64][LD] bf16 tile: row i is src row idx[i] (or base + i). Rows past n and
// columns past hd are zero, so padding adds nothing to any product. vec: 16-byte loads.
template <int HD>
__device__ void bwd_load(bf16 *t, const bf16 *src, const int *idx, int base, int n, int stride, int head, int hd,
                         int vec) {
    constexpr int LD = BwdSmem<HD>::LD;
    if (vec) {
        for (int e = threadIdx.x; e < BWD_B * (HD / 8); e += blockDim.x) {
            const int i = e / (HD / 8), d = (e % (HD / 8)) * 8;
            uint4 x = make_uint4(0, 0, 0, 0);
            if (i < n && d < hd) x = *(const uint4 *)(src + ((size_t)(idx ? idx[i] : base + i) * stride + head) * hd + d);
            *(uint4 *)(t + i * LD + d) = x;
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
            atomicAdd((float4 *)(acc + ((size_t)(idx ? idx[i] : base + i) * stride + head) * hd + d),
                      make_float4(s[0], s[1], s[2], s[3]));
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

// One block: key tile it.k0.. of kv head h / (H / KVH), query head h = blockIdx.y, rows of the item in
// chunks of 64. The [64, HD] products (dV, dK, dQ) are 4 x HD/16 fragments dealt round-robin to the warps;
// each warp's dK/dV fragments stay in registers for the whole item.
template <int HD>
__global__ void __launch_bounds__(BWD_THREADS)
    attn_bwd_kernel(float *dq_acc, float *dk_acc, float *dv_acc, const bf16 *dout, const float *lse,
                    const float *Dsum, const bf16 *q, const bf16 *k, const bf16 *v, const BwdRow *rows,
                    const BwdItem *items, int H, int KVH, int hd, float scale, int vec) {
    typedef BwdSmem<HD> SM;
    constexpr int NB = HD / 16, NF = 4 * NB, FPW = (NF + BWD_WARPS - 1) / BWD_WARPS;
    extern __shared__ __align__(128) unsigned char sm[];
    bf16 *Ks = (bf16 *)(sm + SM::k), *Vs = (bf16 *)(sm + SM::v), *Qs = (bf16 *)(sm + SM::q);
    bf16 *dOs = (bf16 *)(sm + SM::dout), *Ps = (bf16 *)(sm + SM::p), *dSs = (bf16 *)(sm + SM::ds);
    float *Ss = (float *)(sm + SM::s), *dPs = (float *)(sm + SM::dp), *St = (float *)(sm + SM::stage);
    float *Ls = (float *)(sm + SM::meta), *Dl = Ls + BWD_B;
    int *Qr = (int *)(Dl + BWD_B), *Vis = Qr + BWD_B;
    const int warp = threadIdx.x / 32, h = blockIdx.y, kvh = h / (H / KVH);
    const BwdItem it = items[blockIdx.x];
    bwd_load<HD>(Ks, k, NULL, it.k0, it.nk, KVH, kvh, hd, vec);
    bwd_load<HD>(Vs, v, NULL, it.k0, it.nk, KVH, kvh, hd, vec);
    Acc dK[FPW], dV[FPW];
#pragma unroll
    for (int i = 0; i < FPW; i++) wmma::fill_fragment(dK[i], 0.0f), wmma::fill_fragment(dV[i], 0.0f);
    for (int c0 = 0; c0 < it.nrows; c0 += BWD_B) {
        const int n = it.nrows - c0 < BWD_B ? it.nrows - c0 : BWD_B;
        __syncthreads();  // the previous chunk is done with the row tiles and the stage
        for (int i = threadIdx.x; i < BWD_B; i += blockDim.x) {
            const BwdRow r = i < n ? rows[it.row0 + c0 + i] : BwdRow{0, 0};
            Qr[i] = r.q, Vis[i] = r.vis;
            Ls[i] = i < n ? lse[(size_t)r.q * H + h] : 0.0f;
            Dl[i] = i < n ? Dsum[(size_t)r.q * H + h] : 0.0f;
        }
        __syncthreads();
        bwd_load<HD>(Qs, q, Qr, 0, n, H, h, hd, vec);
        bwd_load<HD>(dOs, dout, Qr, 0, n, H, h, hd, vec);
        __syncthreads();
        // S = Q K^T, dP = dO V^T: [64 rows, 64 keys], 16 fragments each, two per warp
        for (int f = warp; f < 16; f += BWD_WARPS) {
            const int rb = f / 4, cb = f % 4;
            Acc s, dp;
            wmma::fill_fragment(s, 0.0f), wmma::fill_fragment(dp, 0.0f);
#pragma unroll
            for (int kk = 0; kk < NB; kk++) {
                FragA a;
                FragBT b;
                wmma::load_matrix_sync(a, Qs + rb * 16 * SM::LD + kk * 16, SM::LD);
                wmma::load_matrix_sync(b, Ks + cb * 16 * SM::LD + kk * 16, SM::LD);
                wmma::mma_sync(s, a, b, s);
                wmma::load_matrix_sync(a, dOs + rb * 16 * SM::LD + kk * 16, SM::LD);
                wmma::load_matrix_sync(b, Vs + cb * 16 * SM::LD + kk * 16, SM::LD);
                wmma::mma_sync(dp, a, b, dp);
            }
            wmma::store_matrix_sync(Ss + rb * 16 * SM::LS + cb * 16, s, SM::LS, wmma::mem_row_major);
            wmma::store_matrix_sync(dPs + rb * 16 * SM::LS + cb * 16, dp, SM::LS, wmma::mem_row_major);
        }
        __syncthreads();
        {  // P and dS, four threads a row; keys past a row's visible count (and padding rows) get 0
            const int i = threadIdx.x / 4, j0 = (threadIdx.x % 4) * 16, vis = Vis[i];
            const float L = Ls[i], D = Dl[i];
#pragma unroll
            for (int j = j0; j < j0 + 16; j++) {
                const float p = j < vis ? __expf(Ss[i * SM::LS + j] * scale - L) : 0.0f;
                Ps[i * SM::LP + j] = __float2bfloat16(p);
                dSs[i * SM::LP + j] = __float2bfloat16(p * (dPs[i * SM::LS + j] - D) * scale);
            }
        }
        __syncthreads();
        // dV += P^T dO, dK += dS^T Q ([64 keys, HD], registers); dQ = dS K ([64 rows, HD], to the stage)
#pragma unroll
        for (int i = 0; i < FPW; i++) {
            const int f = warp + BWD_WARPS * i;
            if (f >= NF) break;  // warp-uniform
            const int rb = f / NB, cb = f % NB;
            Acc dq;
            wmma::fill_fragment(dq, 0.0f);
#pragma unroll
            for (int kk = 0; kk < BWD_B / 16; kk++) {
                FragAT at;
                FragA a;
                FragB b;
                wmma::load_matrix_sync(at, Ps + kk * 16 * SM::LP + rb * 16, SM::LP);
                wmma::load_matrix_sync(b, dOs + kk * 16 * SM::LD + cb * 16, SM::LD);
                wmma::mma_sync(dV[i], at, b, dV[i]);
                wmma::load_matrix_sync(at, dSs + kk * 16 * SM::LP + rb * 16, SM::LP);
                wmma::load_matrix_sync(b, Qs + kk * 16 * SM::LD + cb * 16, SM::LD);
                wmma::mma_sync(dK[i], at, b, dK[i]);
                wmma::load_matrix_sync(a, dSs + rb * 16 * SM::LP + kk * 16, SM::LP);
                wmma::load_matrix_sync(b, Ks + kk * 16 * SM::LD + cb * 16, SM::LD);
                wmma::mma_sync(dq, a, b, dq);
            }
            wmma::store_matrix_sync(St + rb * 16 * SM::LO + cb * 16, dq, SM::LO, wmma::mem_row_major);
        }
        __syncthreads();
        bwd_add_rows<HD>(dq_acc, St, Qr, 0, n, H, h, hd);
    }
    // the tile's dK, then dV, out through the stage
    for (int t = 0; t < 2; t++) {
        __syncthreads();
#pragma unroll
        for (int i = 0; i < FPW; i++) {
            const int f = warp + BWD_WARPS * i;
            if (f >= NF) break;
            wmma::store_matrix_sync(St + (f / NB) * 16 * SM::LO + (f % NB) * 16, t ? dV[i] : dK[i], SM::LO,
                                    wmma::mem_row_major);
        }
        __syncthreads();
        bwd_add_rows<HD>(t ? dv_acc : dk_acc, St, NULL, it.k0, it.nk, KVH, kvh, hd);
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
    // rows per block: as many as keep >= 4 blocks per SM, so the tile's dk/dv leave through few atomics
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
                  float scale, int n_sm, cudaStream_t stream) {
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
    // scratch regions start 16-byte aligned for the float4 atomics
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
    if (hd <= 16)
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
