// decode_attention.cu: the decode step's attention on the CUDA backend (attention.cu chooses it for items
// of few query vectors at head_dim 64 and 128).
#include <math.h>

#include "model/cuda/ops_cuda_internal.h"

// Decode fast path (short runs whose items hold few query vectors, head_dim 64 or 128): a block of
// DA_WARPS warps takes up to NV query vectors of one item for one kv head (grid.x: item x chunk of NV
// vectors) and a range of that item's key tiles (grid.z: split); tiles are the prefix's 32-key tiles
// then each run's own keys. A warp owns whole tiles: it stages the tile's keys as bf16 in its own shared
// rows with 16-byte coalesced loads, scores all NV vectors with one key per lane (the queries are
// broadcast from shared memory), keeps an online softmax per vector and adds P.V with each value row
// read once from global memory for all NV vectors (lane: HD / 32 dims). The warps' states are combined
// in the block, and splits are merged by attention_merge_run (attention.cu). Every key row is thus read
// once per (kv head, chunk), and a decode step's work spreads over kv heads x splits blocks.
enum { DA_VB = 16 };  // value rows in flight per warp (DA_WARPS, DA_KT: ops_cuda_internal.h)

template <int HD, int NV>
struct DaSmem {
    static constexpr int LK = HD + 8;  // key row pitch (bf16): 8 lanes' 16-byte reads of 8 rows hit distinct banks
    static constexpr size_t q = 0;                                       // float [NV][HD]
    static constexpr size_t k = q + (size_t)NV * HD * 4;                 // bf16 [DA_WARPS][DA_KT][LK]
    static constexpr size_t p = k + (size_t)DA_WARPS * DA_KT * LK * 2;  // float [DA_WARPS][DA_KT][NV]
    static constexpr size_t ml = p + (size_t)DA_WARPS * DA_KT * NV * 4;  // float [DA_WARPS][2][NV]
    static constexpr size_t bytes = ml + (size_t)DA_WARPS * 2 * NV * 4;
    // the warps' final states [DA_WARPS][NV][HD] reuse the key rows
    static_assert((size_t)DA_WARPS * NV * HD * 4 <= (size_t)DA_WARPS * DA_KT * LK * 2, "combine area");
    static_assert(NV % 4 == 0 && HD % 64 == 0, "float4 probabilities, bf16 pairs of dims per lane");
};

// Own-key tile u of the runs of rows [rlo, rhi] (rows sharing own_start): its run [*ra, *rb) and first
// key *t0; returns the number of own tiles when u is past them (then *ra = -1).
static __device__ int da_own_tile(const AttRow *rs, int rlo, int rhi, int u, int *ra, int *rb, int *t0) {
    int n = 0;
    *ra = -1;
    for (int a = rlo, b; a <= rhi; a = b) {
        int nmax = rs[a].own_vis;
        for (b = a + 1; b <= rhi && rs[b].own_start == rs[a].own_start; b++)
            nmax = rs[b].own_vis > nmax ? rs[b].own_vis : nmax;
        const int nt = (nmax + DA_KT - 1) / DA_KT;
        if (u >= n && u < n + nt) {
            *ra = a, *rb = b, *t0 = (u - n) * DA_KT;
            return n;
        }
        n += nt;
    }
    return n;
}

// One warp's online-softmax update over key rows base + j, j < nk, of kv head kvh; vis[i]: keys of the
// tile vector i sees (0: none).
template <int HD, int NV>
static __device__ void da_tile(const float *Qs, bf16 *Ks, float *Ps, const bf16 *k, const bf16 *v, int base, int nk,
                               int KVH, int kvh, const int *vis, float scale, float (*o)[HD / 32], float *m, float *l) {
    constexpr int CPR = HD / 8, NL = DA_KT * CPR / 32, DPL = HD / 32, LK = DaSmem<HD, NV>::LK;
    const int lane = threadIdx.x % 32;
    uint4 kr[NL];  // all loads in flight before the first store
#pragma unroll
    for (int i = 0; i < NL; i++) {
        const int c = i * 32 + lane, j = c / CPR, d = (c % CPR) * 8;
        kr[i] = j < nk ? *(const uint4 *)(k + ((size_t)(base + j) * KVH + kvh) * HD + d) : make_uint4(0, 0, 0, 0);
    }
#pragma unroll
    for (int i = 0; i < NL; i++) {
        const int c = i * 32 + lane;
        *(uint4 *)(Ks + (c / CPR) * LK + (c % CPR) * 8) = kr[i];
    }
    __syncwarp();
    float s[NV];
#pragma unroll
    for (int i = 0; i < NV; i++) s[i] = 0.0f;
    const bf16 *kl = Ks + lane * LK;
#pragma unroll 2
    for (int d = 0; d < HD; d += 8) {
        const uint4 raw = *(const uint4 *)(kl + d);
        const __nv_bfloat162 *k2 = (const __nv_bfloat162 *)&raw;
        float kf[8];
#pragma unroll
        for (int e = 0; e < 4; e++) {
            const float2 f = __bfloat1622float2(k2[e]);
            kf[2 * e] = f.x, kf[2 * e + 1] = f.y;
        }
#pragma unroll
        for (int i = 0; i < NV; i++) {
            const float4 a = *(const float4 *)(Qs + i * HD + d), b = *(const float4 *)(Qs + i * HD + d + 4);
            s[i] += a.x * kf[0] + a.y * kf[1] + a.z * kf[2] + a.w * kf[3] + b.x * kf[4] + b.y * kf[5] +
                    b.z * kf[6] + b.w * kf[7];
        }
    }
    float p[NV];
#pragma unroll
    for (int i = 0; i < NV; i++) {
        const float sc = lane < vis[i] ? s[i] * scale : -INFINITY;  // vis <= nk
        float mx = sc;
        for (int off = 16; off; off >>= 1) mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, off));
        const float mn = fmaxf(m[i], mx);
        p[i] = 0.0f;
        if (mn == -INFINITY) continue;  // warp-uniform: nothing visible yet
        const float corr = __expf(m[i] - mn);
        p[i] = __expf(sc - mn);
        float ps = p[i];
        for (int off = 16; off; off >>= 1) ps += __shfl_xor_sync(0xffffffffu, ps, off);
        l[i] = l[i] * corr + ps;
#pragma unroll
        for (int e = 0; e < DPL; e++) o[i][e] *= corr;
        m[i] = mn;
    }
#pragma unroll
    for (int i = 0; i < NV; i += 4) *(float4 *)(Ps + lane * NV + i) = make_float4(p[i], p[i + 1], p[i + 2], p[i + 3]);
    __syncwarp();
    // P.V: lane's dims lane * DPL .. + DPL - 1 of DA_VB value rows in flight at a time
    for (int j0 = 0; j0 < nk; j0 += DA_VB) {
        __nv_bfloat162 vr2[DA_VB][DPL / 2];  // kept as bf16 pairs: half the registers
#pragma unroll
        for (int u = 0; u < DA_VB; u++) {
            const __nv_bfloat162 *vr =
                (const __nv_bfloat162 *)(v + ((size_t)(base + j0 + u) * KVH + kvh) * HD + lane * DPL);
#pragma unroll
            for (int e = 0; e < DPL / 2; e++)
                vr2[u][e] = j0 + u < nk ? vr[e] : __floats2bfloat162_rn(0.0f, 0.0f);
        }
#pragma unroll
        for (int u = 0; u < DA_VB; u++) {
            float vf[DPL];
#pragma unroll
            for (int e = 0; e < DPL / 2; e++) {
                const float2 f = __bfloat1622float2(vr2[u][e]);
                vf[2 * e] = f.x, vf[2 * e + 1] = f.y;
            }
#pragma unroll
            for (int i = 0; i < NV; i += 4) {
                const float4 pj = *(const float4 *)(Ps + (j0 + u) * NV + i);  // 0 past nk
                const float pv[4] = {pj.x, pj.y, pj.z, pj.w};
#pragma unroll
                for (int t = 0; t < 4; t++)
#pragma unroll
                    for (int e = 0; e < DPL; e++) o[i + t][e] += pv[t] * vf[e];
            }
        }
    }
    __syncwarp();  // the next tile overwrites Ks and Ps
}

// part (split > 1): states as attention.cu's CUDA-core kernel's. nchunk: chunks of NV vectors per item;
// tpb: tiles per split.
template <int HD, int NV>
static __global__ void __launch_bounds__(32 * DA_WARPS)
    decode_attention_kernel(bf16 *out, float *lse, float *part, const bf16 *q, const bf16 *k, const bf16 *v,
                            const AttRow *rows, const AttItem *items, int H, int KVH, float scale, int nq, int nchunk,
                            int tpb) {
    using SM = DaSmem<HD, NV>;
    constexpr int DPL = HD / 32;
    extern __shared__ __align__(16) unsigned char da_sm[];
    __shared__ AttRow rs[ATT_MAXV];
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    const int group = H / KVH, kvh = blockIdx.y, split = gridDim.z, z = blockIdx.z;
    const AttItem it = items[blockIdx.x / nchunk];
    const int v0 = blockIdx.x % nchunk * NV, nvec = it.nrows * group;
    if (v0 >= nvec) return;  // block-uniform: this item has fewer chunks than the plan's largest
    const int nv = nvec - v0 < NV ? nvec - v0 : NV, rlo = v0 / group, rhi = (v0 + nv - 1) / group;
    float *Qs = (float *)(da_sm + SM::q), *MLs = (float *)(da_sm + SM::ml);
    bf16 *Ks = (bf16 *)(da_sm + SM::k) + (size_t)warp * DA_KT * SM::LK;
    float *Ps = (float *)(da_sm + SM::p) + warp * DA_KT * NV;
    {  // the warp's first prefix tile into L2 while the rows and queries arrive (item alone says where)
        const int t = z * tpb + warp, nk = it.pre_len - t * DA_KT;
        if (t < (z + 1) * tpb && lane < nk) {
            const size_t off = ((size_t)(it.pre_start + t * DA_KT + lane) * KVH + kvh) * HD;
#pragma unroll
            for (int b = 0; b < HD * 2; b += 128)  // 128-byte lines
                asm volatile("prefetch.global.L2 [%0];\n\tprefetch.global.L2 [%1];" ::"l"((const char *)(k + off) + b),
                             "l"((const char *)(v + off) + b));
        }
    }
    for (int i = threadIdx.x; i < it.nrows; i += blockDim.x) rs[i] = rows[it.row0 + i];
    __syncthreads();
    // vector i of the block is (item row (v0 + i) / group, head kvh * group + (v0 + i) % group)
    for (int idx = threadIdx.x; idx < NV * HD; idx += blockDim.x) {
        const int i = idx / HD, d = idx % HD, vi = v0 + i;
        Qs[idx] = i < nv ? __bfloat162float(q[((size_t)rs[vi / group].q * H + kvh * group + vi % group) * HD + d])
                         : 0.0f;
    }
    __syncthreads();
    float o[NV][DPL], m[NV], l[NV];
#pragma unroll
    for (int i = 0; i < NV; i++) {
        m[i] = -INFINITY, l[i] = 0.0f;
#pragma unroll
        for (int e = 0; e < DPL; e++) o[i][e] = 0.0f;
    }
    int ra, rb, t0;
    const int npre = (it.pre_len + DA_KT - 1) / DA_KT;
    const int ntile = npre + da_own_tile(rs, rlo, rhi, -1, &ra, &rb, &t0);
    const int t_end = (z + 1) * tpb < ntile ? (z + 1) * tpb : ntile;
    for (int t = z * tpb + warp; t < t_end; t += DA_WARPS) {  // warp-uniform
        int vis[NV], base, nk;
        if (t < npre) {
            base = it.pre_start + t * DA_KT;
            nk = it.pre_len - t * DA_KT < DA_KT ? it.pre_len - t * DA_KT : DA_KT;
#pragma unroll
            for (int i = 0; i < NV; i++) vis[i] = i < nv ? nk : 0;
        } else {
            da_own_tile(rs, rlo, rhi, t - npre, &ra, &rb, &t0);
            base = rs[ra].own_start + t0;
            nk = 0;
#pragma unroll
            for (int i = 0; i < NV; i++) {
                const int r = (v0 + i) / group;
                int n = i < nv && r >= ra && r < rb ? rs[r].own_vis - t0 : 0;
                n = n < 0 ? 0 : n > DA_KT ? DA_KT : n;
                vis[i] = n;
                nk = n > nk ? n : nk;
            }
        }
        da_tile<HD, NV>(Qs, Ks, Ps, k, v, base, nk, KVH, kvh, vis, scale, o, m, l);
    }
    // combine the warps' states: out = sum_w o_w e^(m_w - M) / sum_w l_w e^(m_w - M)
    __syncthreads();  // every warp is past its tiles: the key rows become the combine area
    float *Os = (float *)(da_sm + SM::k);  // [DA_WARPS][NV][HD]
#pragma unroll
    for (int i = 0; i < NV; i++) {
#pragma unroll
        for (int e = 0; e < DPL; e++) Os[(warp * NV + i) * HD + lane * DPL + e] = o[i][e];
        if (lane == 0) MLs[(warp * 2) * NV + i] = m[i], MLs[(warp * 2 + 1) * NV + i] = l[i];
    }
    __syncthreads();
    for (int idx = threadIdx.x; idx < nv * HD; idx += blockDim.x) {
        const int i = idx / HD, d = idx % HD, vi = v0 + i;
        float M = -INFINITY;
#pragma unroll
        for (int w = 0; w < DA_WARPS; w++)
            if (MLs[(w * 2 + 1) * NV + i] > 0.0f) M = fmaxf(M, MLs[w * 2 * NV + i]);
        float acc = 0.0f, L = 0.0f;
#pragma unroll
        for (int w = 0; w < DA_WARPS; w++) {
            const float lw = MLs[(w * 2 + 1) * NV + i];
            if (lw > 0.0f) {
                const float wt = expf(MLs[w * 2 * NV + i] - M);
                acc += Os[(w * NV + i) * HD + d] * wt, L += lw * wt;
            }
        }
        const size_t row = rs[vi / group].q;
        const int h = kvh * group + vi % group;
        if (split > 1) {
            float *st = part + (((size_t)z * nq + row) * H + h) * (HD + 2);
            st[d] = acc;
            if (d == 0) st[HD] = M, st[HD + 1] = L;
        } else {
            out[(row * H + h) * HD + d] = __float2bfloat16(L > 0.0f ? acc / L : 0.0f);
            if (d == 0) lse[row * H + h] = L > 0.0f ? M + logf(L) : -INFINITY;
        }
    }
}

void decode_attention_run(bf16 *out, float *lse, float *part, const bf16 *q, const bf16 *k, const bf16 *v,
                          const AttRow *rows, const AttItem *items, int n_items, int H, int KVH, int hd, int nv,
                          int nchunk, int split, int tpb, float scale, int nq, cudaStream_t stream) {
    const dim3 grid(n_items * nchunk, KVH, split);
#define DA_LAUNCH(HD, NV)                                                                              \
    decode_attention_kernel<HD, NV><<<grid, 32 * DA_WARPS, DaSmem<HD, NV>::bytes, stream>>>( \
        out, lse, part, q, k, v, rows, items, H, KVH, scale, nq, nchunk, tpb)
    if (hd == 64 && nv == 8) DA_LAUNCH(64, 8);
    else if (hd == 64 && nv == 16) DA_LAUNCH(64, 16);
    else if (hd == 128 && nv == 8) DA_LAUNCH(128, 8);
    else if (hd == 128 && nv == 16) DA_LAUNCH(128, 16);
    else fatal("decode_attention_run: head_dim %d with %d vectors a block unsupported", hd, nv);
#undef DA_LAUNCH
    CUDA_CHECK(cudaGetLastError());
}

void decode_attention_init(void) {
    CUDA_CHECK(cudaFuncSetAttribute(decode_attention_kernel<64, 8>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                    (int)DaSmem<64, 8>::bytes));
    CUDA_CHECK(cudaFuncSetAttribute(decode_attention_kernel<64, 16>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                    (int)DaSmem<64, 16>::bytes));
    CUDA_CHECK(cudaFuncSetAttribute(decode_attention_kernel<128, 8>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                    (int)DaSmem<128, 8>::bytes));
    CUDA_CHECK(cudaFuncSetAttribute(decode_attention_kernel<128, 16>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                    (int)DaSmem<128, 16>::bytes));
}
