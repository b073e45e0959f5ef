// attention.cu: Ops.attention of the CUDA backend. It never forms a [T x T] matrix. The segments become
// work lists (cached: every layer of a forward passes the same list; a graph pass keeps its own) and each
// call picks a kernel from the shapes: runs of many query rows (prefill, encoder, training groups) go to
// the tensor-core flash kernels (flash_fwd.cu: the mma.sync kernel at head_dim 64 and 128, else WMMA);
// short runs (decode) to decode_attention.cu's kernel at head_dim 64 and 128 with 16-byte aligned rows;
// everything else to the CUDA-core kernel here, whose blocks hold every query row of a group that shares
// a prefix, so a decode step reads the shared prompt's keys once for all G samples, split over blocks
// when they are few. fp32 online softmax everywhere; lse is the natural log.
#include <math.h>
#include <string.h>

#include "model/cuda/ops_cuda_internal.h"

// Work list: an item is up to ATT_MAXV / group query rows, all seeing the same prefix keys; a block
// handles one item for one kv head, so the prefix tiles it loads serve every row and every query head of
// the GQA group. Rows of one segment share their own keys (a "run"); a decode step packs the G one-row
// segments of a group into one item, reading the prompt's keys once for all samples. When items are too
// few to fill the GPU (decode), the prefix is split over grid.z blocks whose partial softmax states
// (unnormalised output, max, sum) a second kernel merges, as in flash-decoding.
enum { ATT_KT = 32, ATT_VPW = 4, ATT_MAXD = 128, ATT_MIN_THREADS = 256, ATT_MAX_SPLIT = 32 };

// Loads key/value rows base + j, j < nk, of kv head kvh into the shared tiles as fp32; 16-byte loads
// when rows are 8-element aligned (vec8).
static __device__ void att_load_tile(float *Ks, float *Vs, const bf16 *k, const bf16 *v, int base, int nk, int KVH,
                                     int kvh, int hd, int vec8) {
    const int ldk = hd + 1;
    if (vec8) {
        const int per = hd / 8;
        for (int idx = threadIdx.x; idx < nk * per; idx += blockDim.x) {
            const int j = idx / per, d = (idx % per) * 8;
            const size_t off = ((size_t)(base + j) * KVH + kvh) * hd + d;
            const uint4 kr = *(const uint4 *)(k + off), vr = *(const uint4 *)(v + off);
            const bf16 *kb = (const bf16 *)&kr, *vb = (const bf16 *)&vr;
#pragma unroll
            for (int e = 0; e < 8; e++) {
                Ks[j * ldk + d + e] = __bfloat162float(kb[e]);
                Vs[j * hd + d + e] = __bfloat162float(vb[e]);
            }
        }
        return;
    }
    for (int idx = threadIdx.x; idx < nk * hd; idx += blockDim.x) {
        const int j = idx / hd, d = idx % hd;
        const size_t off = ((size_t)(base + j) * KVH + kvh) * hd + d;
        Ks[j * ldk + d] = __bfloat162float(k[off]);
        Vs[j * hd + d] = __bfloat162float(v[off]);
    }
}

// One warp's update for its ATT_VPW query vectors over a tile of nk keys (lane = key). active[i]: the
// vector takes part; vis[i]: keys of this tile it may see (a count from the tile start).
template <int DPL, int VPW>
static __device__ void att_tile(const float *Qs, const float *Ks, const float *Vs, int hd, int nk, float scale,
                                int warp, const int *active, const int *vis, float (*o)[DPL], float *m, float *l) {
    const int lane = threadIdx.x % 32, ldk = hd + 1;
    // four partial sums per vector over d mod 4: independent FMA chains (one vector per warp in decode)
    float s[VPW][4];
    for (int i = 0; i < VPW; i++) s[i][0] = s[i][1] = s[i][2] = s[i][3] = 0.0f;
    if (lane < nk)
        for (int d = 0; d < hd; d += 4) {
#pragma unroll
            for (int j = 0; j < 4; j++) {
                const float kd = Ks[lane * ldk + d + j];
#pragma unroll
                for (int i = 0; i < VPW; i++) s[i][j] += Qs[(warp * VPW + i) * hd + d + j] * kd;
            }
        }
#pragma unroll
    for (int i = 0; i < VPW; i++) {
        if (!active[i]) continue;  // warp-uniform
        const float sc = lane < vis[i] && lane < nk ? ((s[i][0] + s[i][1]) + (s[i][2] + s[i][3])) * scale : -INFINITY;
        float mx = sc;
        for (int off = 16; off; off >>= 1) mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, off));
        const float mn = fmaxf(m[i], mx);
        if (mn == -INFINITY) continue;  // nothing visible yet
        const float corr = __expf(m[i] - mn), p = __expf(sc - mn);  // ex2.approx: softmax weights only
        float ps = p;
        for (int off = 16; off; off >>= 1) ps += __shfl_xor_sync(0xffffffffu, ps, off);
        l[i] = l[i] * corr + ps;
#pragma unroll
        for (int e = 0; e < DPL; e++) o[i][e] *= corr;
        const int nv = vis[i] < nk ? vis[i] : nk;
        for (int j = 0; j < nv; j++) {
            const float pj = __shfl_sync(0xffffffffu, p, j);
#pragma unroll
            for (int e = 0; e < DPL; e++) {
                const int d = lane + 32 * e;
                if (d < hd) o[i][e] += pj * Vs[j * hd + d];
            }
        }
        m[i] = mn;
    }
}

// part (split > 1): [split][nq][H] states, each hd unnormalised outputs then (max, sum). VPW query vectors
// per warp: 4 amortise the key reads in prefill, 1 spreads a decode step's few vectors over more warps.
template <int DPL, int VPW>
static __global__ void attention_kernel(bf16 *out, float *lse, float *part, const bf16 *q, const bf16 *k, const bf16 *v,
                                        const AttRow *rows, const AttItem *items, int H, int KVH, int hd, float scale,
                                        int vec8, int nq, int qcap) {
    extern __shared__ float sm[];
    __shared__ AttRow rs[ATT_MAXV];
    float *Qs = sm, *Ks = Qs + qcap * hd, *Vs = Ks + ATT_KT * (hd + 1);  // qcap: the plan's most vectors
    const int group = H / KVH, kvh = blockIdx.y, warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    const int split = gridDim.z, z = blockIdx.z;
    const AttItem it = items[blockIdx.x];
    const int nvec = it.nrows * group;
    for (int i = threadIdx.x; i < it.nrows; i += blockDim.x) rs[i] = rows[it.row0 + i];
    __syncthreads();
    for (int idx = threadIdx.x; idx < nvec * hd; idx += blockDim.x) {
        const int vi = idx / hd, d = idx % hd, r = vi / group, h = kvh * group + vi % group;
        Qs[idx] = __bfloat162float(q[((size_t)rs[r].q * H + h) * hd + d]);
    }
    // vector vi = warp * VPW + i is (row vi / group, head kvh * group + vi % group)
    int vrow[VPW];
    float o[VPW][DPL], m[VPW], l[VPW];
    for (int i = 0; i < VPW; i++) {
        const int vi = warp * VPW + i;
        vrow[i] = vi < nvec ? vi / group : -1;
        m[i] = -INFINITY, l[i] = 0.0f;
        for (int e = 0; e < DPL; e++) o[i][e] = 0.0f;
    }
    int active[VPW], vis[VPW];
    // this split's share of the shared prefix: every vector sees every key
    const int ntile = (it.pre_len + ATT_KT - 1) / ATT_KT, per = (ntile + split - 1) / split;
    const int t_end = (z + 1) * per * ATT_KT < it.pre_len ? (z + 1) * per * ATT_KT : it.pre_len;
    for (int t0 = z * per * ATT_KT; t0 < t_end; t0 += ATT_KT) {
        const int nk = t_end - t0 < ATT_KT ? t_end - t0 : ATT_KT;
        __syncthreads();
        att_load_tile(Ks, Vs, k, v, it.pre_start + t0, nk, KVH, kvh, hd, vec8);
        __syncthreads();
        for (int i = 0; i < VPW; i++) active[i] = vrow[i] >= 0, vis[i] = nk;
        att_tile<DPL, VPW>(Qs, Ks, Vs, hd, nk, scale, warp, active, vis, o, m, l);
    }
    // own keys, one run of rows sharing them at a time; runs are dealt round-robin to the splits (a decode
    // step has one run per sample)
    for (int ra = 0, rb, run = 0; ra < it.nrows; ra = rb, run++) {
        int nmax = rs[ra].own_vis;
        for (rb = ra + 1; rb < it.nrows && rs[rb].own_start == rs[ra].own_start; rb++)
            nmax = rs[rb].own_vis > nmax ? rs[rb].own_vis : nmax;
        if (split - 1 - run % split != z) continue;  // block-uniform; from the last split, which the
                                                      // prefix's tiles leave idle when they run out
        for (int t0 = 0; t0 < nmax; t0 += ATT_KT) {
            const int nk = nmax - t0 < ATT_KT ? nmax - t0 : ATT_KT;
            __syncthreads();
            att_load_tile(Ks, Vs, k, v, rs[ra].own_start + t0, nk, KVH, kvh, hd, vec8);
            __syncthreads();
            for (int i = 0; i < VPW; i++) {
                active[i] = vrow[i] >= ra && vrow[i] < rb;
                vis[i] = active[i] ? rs[vrow[i]].own_vis - t0 : 0;
            }
            att_tile<DPL, VPW>(Qs, Ks, Vs, hd, nk, scale, warp, active, vis, o, m, l);
        }
    }
    for (int i = 0; i < VPW; i++) {
        if (vrow[i] < 0) continue;
        const int vi = warp * VPW + i, h = kvh * group + vi % group;
        const size_t row = rs[vrow[i]].q;
        if (split > 1) {
            float *st = part + (((size_t)z * nq + row) * H + h) * (hd + 2);
            for (int e = 0; e < DPL; e++) {
                const int d = lane + 32 * e;
                if (d < hd) st[d] = o[i][e];
            }
            if (lane == 0) st[hd] = m[i], st[hd + 1] = l[i];
            continue;
        }
        const float inv = l[i] > 0.0f ? 1.0f / l[i] : 0.0f;
        for (int e = 0; e < DPL; e++) {
            const int d = lane + 32 * e;
            if (d < hd) out[(row * H + h) * hd + d] = __float2bfloat16(o[i][e] * inv);
        }
        if (lane == 0) lse[row * H + h] = l[i] > 0.0f ? m[i] + logf(l[i]) : -INFINITY;
    }
}

// Merges the split states of one (row, head) per block: out = sum_z o_z e^(m_z - M) / sum_z l_z e^(m_z - M).
// Warp 0 turns the (at most 32) states' (max, sum) into weights with one lane per split; then every
// thread sums its output elements over the splits with independent loads (no chain of dependent
// global reads per split).
static __global__ void attention_merge_kernel(bf16 *out, float *lse, const float *part, const AttRow *rows, int H,
                                              int hd, int split, int nq) {
    __shared__ float w[ATT_MAX_SPLIT], sL;
    const size_t row = rows[blockIdx.x].q;
    const int h = blockIdx.y, lane = threadIdx.x % 32;
    const size_t zs = (size_t)nq * H * (hd + 2);  // stride between splits
    const float *st = part + (row * H + h) * (hd + 2);
    if (threadIdx.x < 32) {
        const float m = lane < split ? st[lane * zs + hd] : -INFINITY;
        const float l = lane < split ? st[lane * zs + hd + 1] : 0.0f;
        float M = l > 0.0f ? m : -INFINITY;
        for (int off = 16; off; off >>= 1) M = fmaxf(M, __shfl_xor_sync(0xffffffffu, M, off));
        const float wz = l > 0.0f ? expf(m - M) : 0.0f;
        float L = l * wz;
        for (int off = 16; off; off >>= 1) L += __shfl_xor_sync(0xffffffffu, L, off);
        if (lane < split) w[lane] = wz;
        if (lane == 0) {
            sL = L;
            lse[row * H + h] = L > 0.0f ? M + logf(L) : -INFINITY;
        }
    }
    __syncthreads();
    const float inv = sL > 0.0f ? 1.0f / sL : 0.0f;
    for (int d = threadIdx.x; d < hd; d += blockDim.x) {
        float acc = 0.0f;
#pragma unroll 8
        for (int z = 0; z < split; z++) acc += st[z * zs + d] * w[z];
        out[(row * H + h) * hd + d] = __float2bfloat16(acc * inv);
    }
}

void attention_merge_run(bf16 *out, float *lse, const float *part, const AttRow *rows, int n_rows, int H, int hd,
                         int split, int nq, cudaStream_t stream) {
    attention_merge_kernel<<<dim3(n_rows, H), 128, 0, stream>>>(out, lse, part, rows, H, hd, split, nq);
    CUDA_CHECK(cudaGetLastError());
}

// Shared memory of attention_kernel for items of up to qcap query vectors: a decode step's few vectors
// leave room for more resident blocks.
static size_t att_smem(int hd, int qcap) {
    return ((size_t)qcap * hd + (size_t)ATT_KT * (hd + 1) + (size_t)ATT_KT * hd) * 4;
}

// Host work lists of segs (see attention_kernel and the flash kernels) and their sizes in a->.
typedef struct {
    AttRow *rows;
    AttItem *items, *fitems;
} AttLists;

static AttLists att_build(AttnCache *a, const AttnSeg *segs, int nseg, int group) {
    const int R = ATT_MAXV / group;
    size_t nrows = 0;
    for (int i = 0; i < nseg; i++) nrows += segs[i].q_len;
    AttLists L;
    L.rows = (AttRow *)mallocCheck((nrows ? nrows : 1) * sizeof(AttRow));
    L.items = (AttItem *)mallocCheck((nrows ? nrows : 1) * sizeof(AttItem));
    L.fitems = (AttItem *)mallocCheck((nrows ? nrows : 1) * sizeof(AttItem));
    int n_items = 0, nr = 0, n_fitems = 0;
    a->nq = 0, a->max_pre = 0;
    for (int i = 0; i < nseg; i++) {
        const AttnSeg *s = &segs[i];
        a->nq = s->q_start + s->q_len > a->nq ? s->q_start + s->q_len : a->nq;
        a->max_pre = s->pre_len > a->max_pre ? s->pre_len : a->max_pre;
        for (int j0 = 0; j0 < s->q_len; j0 += FA_BQ)
            L.fitems[n_fitems++] =
                (AttItem){nr + j0, s->q_len - j0 < FA_BQ ? s->q_len - j0 : FA_BQ, s->pre_start, s->pre_len};
        for (int j0 = 0; j0 < s->q_len; j0 += R) {
            const int n = s->q_len - j0 < R ? s->q_len - j0 : R;
            AttItem *last = n_items ? &L.items[n_items - 1] : NULL;
            // segments sharing a non-empty prefix join one item while rows fit
            if (!(last && s->pre_len > 0 && last->pre_len == s->pre_len && last->pre_start == s->pre_start &&
                  last->nrows + n <= R))
                last = &L.items[n_items++], *last = (AttItem){nr, 0, s->pre_start, s->pre_len};
            for (int j = j0; j < j0 + n; j++)
                L.rows[nr++] =
                    (AttRow){s->q_start + j, s->k_start, s->causal ? s->k_len - s->q_len + j + 1 : s->k_len, 0};
            last->nrows += n;
        }
    }
    a->max_vec = 0, a->max_tiles = 0;
    for (int i = 0; i < n_items; i++) {
        const AttItem *it = &L.items[i];
        const int nv = it->nrows * group;
        a->max_vec = nv > a->max_vec ? nv : a->max_vec;
        int nt = (it->pre_len + DA_KT - 1) / DA_KT;
        for (int ra = it->row0, rb; ra < it->row0 + it->nrows; ra = rb) {  // runs as decode_attention.cu counts them
            int nmax = L.rows[ra].own_vis;
            for (rb = ra + 1; rb < it->row0 + it->nrows && L.rows[rb].own_start == L.rows[ra].own_start; rb++)
                nmax = L.rows[rb].own_vis > nmax ? L.rows[rb].own_vis : nmax;
            nt += (nmax + DA_KT - 1) / DA_KT;
        }
        a->max_tiles = nt > a->max_tiles ? nt : a->max_tiles;
    }
    a->n_items = n_items, a->n_rows = nr, a->n_fitems = n_fitems;
    return L;
}

static void att_lists_free(AttLists *L) { free(L->rows), free(L->items), free(L->fitems); }

static void att_key(AttnCache *a, const AttnSeg *segs, int nseg, int group) {
    if (nseg > a->cap_seg) {
        a->cap_seg = nseg;
        a->segs = (AttnSeg *)reallocCheck(a->segs, (size_t)nseg * sizeof *segs);
    }
    memcpy(a->segs, segs, (size_t)nseg * sizeof *segs);
    a->nseg = nseg, a->group = group;
}

static int att_same(const AttnCache *a, const AttnSeg *segs, int nseg, int group) {
    return a->segs && a->nseg == nseg && a->group == group && !memcmp(a->segs, segs, (size_t)nseg * sizeof *segs);
}

// The device work list of segs (cached: the same list serves every layer of a forward).
static AttnCache *att_plan(Cuda *c, const AttnSeg *segs, int nseg, int group) {
    for (int i = 0; i < ATT_CACHE; i++)
        if (att_same(&c->att[i], segs, nseg, group)) {
            c->att[i].stamp = ++c->att_clock;
            return &c->att[i];
        }
    AttnCache *a = &c->att[0];
    for (int i = 1; i < ATT_CACHE; i++)
        if (c->att[i].stamp < a->stamp) a = &c->att[i];
    att_key(a, segs, nseg, group);
    a->stamp = ++c->att_clock;
    AttLists L = att_build(a, segs, nseg, group);
    if ((size_t)a->n_rows > a->cap_rows) {
        if (a->rows) CUDA_CHECK(cudaFree(a->rows));
        CUDA_CHECK(cudaMalloc(&a->rows, (size_t)a->n_rows * sizeof(AttRow)));
        a->cap_rows = a->n_rows;
    }
    if ((size_t)a->n_items > a->cap_items) {
        if (a->items) CUDA_CHECK(cudaFree(a->items));
        CUDA_CHECK(cudaMalloc(&a->items, (size_t)a->n_items * sizeof(AttItem)));
        a->cap_items = a->n_items;
    }
    if ((size_t)a->n_fitems > a->cap_fitems) {
        if (a->fitems) CUDA_CHECK(cudaFree(a->fitems));
        CUDA_CHECK(cudaMalloc(&a->fitems, (size_t)a->n_fitems * sizeof(AttItem)));
        a->cap_fitems = a->n_fitems;
    }
    // pageable sources are staged before cudaMemcpyAsync returns, so the host arrays may go now
    CUDA_CHECK(cudaMemcpyAsync(a->fitems, L.fitems, (size_t)a->n_fitems * sizeof(AttItem), cudaMemcpyHostToDevice,
                               c->stream));
    CUDA_CHECK(cudaMemcpyAsync(a->rows, L.rows, (size_t)a->n_rows * sizeof(AttRow), cudaMemcpyHostToDevice, c->stream));
    CUDA_CHECK(cudaMemcpyAsync(a->items, L.items, (size_t)a->n_items * sizeof(AttItem), cudaMemcpyHostToDevice,
                               c->stream));
    att_lists_free(&L);
    return a;
}

// In a graph pass: the pass's work lists are the graph's own, one per change of segs in call order
// (every layer of a decode step shares one), staged as graph inputs so a replay sees this step's lists.
static AttnCache *att_plan_graph(Cuda *c, const AttnSeg *segs, int nseg, int group) {
    Graph *g = c->gr;
    if (g->i_plan > 0 && att_same(&g->plans[g->i_plan - 1], segs, nseg, group)) return &g->plans[g->i_plan - 1];
    if (g->replay && g->i_plan >= g->n_plans) {  // more lists than captured: the pass fails at graph_end
        g->bad = 1;
        return NULL;
    }
    if (!g->replay) {
        g->plans = (AttnCache *)reallocCheck(g->plans, (size_t)(g->n_plans + 1) * sizeof(AttnCache));
        memset(&g->plans[g->n_plans++], 0, sizeof(AttnCache));
    }
    AttnCache *a = &g->plans[g->i_plan++];
    att_key(a, segs, nseg, group);
    AttnCache sizes = *a;
    AttLists L = att_build(&sizes, segs, nseg, group);
    if (!g->replay) {
        a->rows = graph_dev_alloc(g, (size_t)sizes.n_rows * sizeof(AttRow));
        a->items = graph_dev_alloc(g, (size_t)sizes.n_items * sizeof(AttItem));
        a->fitems = graph_dev_alloc(g, (size_t)sizes.n_fitems * sizeof(AttItem));
    } else if (sizes.n_rows != a->n_rows || sizes.n_items != a->n_items || sizes.n_fitems != a->n_fitems) {
        g->bad = 1;  // other list sizes: the captured launches do not fit
    }
    sizes.rows = a->rows, sizes.items = a->items, sizes.fitems = a->fitems, sizes.segs = a->segs;
    *a = sizes;
    if (!g->bad) {
        graph_stage(c, a->rows, L.rows, (size_t)a->n_rows * sizeof(AttRow));
        graph_stage(c, a->items, L.items, (size_t)a->n_items * sizeof(AttItem));
        graph_stage(c, a->fitems, L.fitems, (size_t)a->n_fitems * sizeof(AttItem));
    }
    att_lists_free(&L);
    return g->bad ? NULL : a;
}

// The kernel of each run (see the header comment) and its launch; kern forces one (ops_cuda_kernels.h).
static void attention_run(Cuda *c, AttnKernel kern, Tensor *out, float *lse, const Tensor *q, const Tensor *k,
                          const Tensor *v, const AttnSeg *segs, int nseg, int H, int KVH, int hd, float scale) {
    if (nseg <= 0) return;
    if (kern != ATTN_AUTO && kern != ATTN_GENERIC && kern != ATTN_FLASH_WMMA)
        fatal("cuda attention: kernel %d is not a forward kernel", (int)kern);
    const int group = H / KVH;
    if (hd > ATT_MAXD || group > ATT_MAXV)
        fatal("cuda attention: head_dim %d (max %d) or GQA group %d (max %d) unsupported", hd, ATT_MAXD, group,
              ATT_MAXV);
    AttnCache *a = c->gr ? att_plan_graph(c, segs, nseg, group) : att_plan(c, segs, nseg, group);
    if (!a || !a->n_items) return;
    bf16 *ob = (bf16 *)out;
    const bf16 *qb = (const bf16 *)q, *kb = (const bf16 *)k, *vb = (const bf16 *)v;
    const AttRow *rows = (const AttRow *)a->rows;
    // runs of at least 16 rows a segment on average go to the tensor cores
    const int flash = kern != ATTN_GENERIC && (hd == 32 || hd == 64 || hd == 128) &&
                      ((uintptr_t)q | (uintptr_t)k | (uintptr_t)v) % 16 == 0 && a->n_rows >= 16 * nseg;
    // the mma.sync kernel stores bf16 pairs; the WMMA one takes the rest
    const int flash_mma = flash && kern == ATTN_AUTO && flash_fwd_supports(hd) && (uintptr_t)out % 4 == 0;
    const int vec8 = hd % 8 == 0 && ((uintptr_t)k | (uintptr_t)v) % 16 == 0;
    // decode path (decode_attention.cu) for items of few vectors: chunks of dnv vectors re-read an item's
    // keys per chunk, so it takes items of at most `group` chunks (no more key bytes than MHA)
    const int dnv = a->max_vec <= 8 ? 8 : 16, nchunk = (a->max_vec + dnv - 1) / dnv;
    const int fast = !flash && kern == ATTN_AUTO && vec8 && (hd == 64 || hd == 128) &&
                     nchunk <= (group > 1 ? group : 1);
    const int vpw = a->max_vec <= 16 ? 1 : ATT_VPW;
    int threads = 32 * ((a->max_vec + vpw - 1) / vpw);
    threads = threads < ATT_MIN_THREADS ? ATT_MIN_THREADS : threads;
    int split = 1, tpb = 1;
    if (fast) {
        // a tile per warp while that keeps about four blocks per SM at most
        const int blocks = a->n_items * nchunk * KVH, cap = (4 * c->n_sm + blocks - 1) / blocks;
        split = (a->max_tiles + DA_WARPS - 1) / DA_WARPS;
        split = split > cap ? cap : split;
        split = split > ATT_MAX_SPLIT ? ATT_MAX_SPLIT : split < 1 ? 1 : split;
        tpb = (a->max_tiles + split - 1) / split;
        tpb = tpb < 1 ? 1 : tpb;
    } else if (!flash) {
        // split long prefixes while the blocks stay resident together (about six of these small blocks per
        // SM) and every split keeps most of a key tile: a block's serial work is then one or two tiles, and
        // a decode step's prefix is read by hundreds of blocks at once
        const int blocks = a->n_items * KVH;
        while (split < ATT_MAX_SPLIT && blocks * split < 6 * c->n_sm && a->max_pre / (2 * split) >= ATT_KT / 2)
            split *= 2;
    }
    GRAPH_SKIP(c, out, lse, q, k, v, H, KVH, hd, flash, flash_mma, a->n_fitems, a->n_items, a->n_rows, a->nq, split,
               threads, vpw, fast, nchunk, tpb, dnv);
    if (flash) {
        const AttItem *fi = (const AttItem *)a->fitems;
        if (flash_mma) flash_fwd_run(ob, lse, qb, kb, vb, rows, fi, a->n_fitems, H, KVH, hd, scale, c->stream);
        else flash_wmma_run(ob, lse, qb, kb, vb, rows, fi, a->n_fitems, H, KVH, hd, scale, c->stream);
        return;
    }
    float *part = NULL;
    if (split > 1) {
        const size_t need = (size_t)split * a->nq * H * (hd + 2);
        if (c->gr) {  // captured launches keep their buffer
            if (need > a->part_n) a->part = (float *)graph_dev_alloc(c->gr, need * sizeof(float)), a->part_n = need;
            part = a->part;
        } else if (need > c->part_n) {
            if (c->part) CUDA_CHECK(cudaFree(c->part));
            CUDA_CHECK(cudaMalloc((void **)&c->part, need * sizeof(float)));
            c->part_n = need;
        }
        if (!c->gr) part = c->part;
    }
    const AttItem *items = (const AttItem *)a->items;
    if (fast) {
        decode_attention_run(ob, lse, part, qb, kb, vb, rows, items, a->n_items, H, KVH, hd, dnv, nchunk, split, tpb,
                             scale, a->nq, c->stream);
    } else {
        const dim3 grid(a->n_items, KVH, split);
        const int qcap = threads / 32 * vpw;  // vectors the warps cover
        const size_t sh = att_smem(hd, qcap);
#define ATT_LAUNCH(DPL, VPW)                                                                                \
    attention_kernel<DPL, VPW><<<grid, threads, sh, c->stream>>>(ob, lse, part, qb, kb, vb, rows, items, H, KVH, \
                                                                 hd, scale, vec8, a->nq, qcap)
        const int dpl = hd <= 32 ? 1 : hd <= 64 ? 2 : 4;
        if (vpw == 1) {
            if (dpl == 1) ATT_LAUNCH(1, 1);
            else if (dpl == 2) ATT_LAUNCH(2, 1);
            else ATT_LAUNCH(4, 1);
        } else {
            if (dpl == 1) ATT_LAUNCH(1, ATT_VPW);
            else if (dpl == 2) ATT_LAUNCH(2, ATT_VPW);
            else ATT_LAUNCH(4, ATT_VPW);
        }
#undef ATT_LAUNCH
        CUDA_CHECK(cudaGetLastError());
    }
    if (split > 1) attention_merge_run(ob, lse, part, rows, a->n_rows, H, hd, split, a->nq, c->stream);
}

void cu_attention(Ops *o, Tensor *out, float *lse, const Tensor *q, const Tensor *k, const Tensor *v,
                  const AttnSeg *segs, int nseg, int H, int KVH, int hd, float scale) {
    attention_run(impl(o), ATTN_AUTO, out, lse, q, k, v, segs, nseg, H, KVH, hd, scale);
}

extern "C" void ops_cuda_attention_with(Ops *o, AttnKernel kern, Tensor *out, float *lse, const Tensor *q,
                                        const Tensor *k, const Tensor *v, const AttnSeg *segs, int nseg, int H, int KVH,
                                        int hd, float scale) {
    attention_run(impl(o), kern, out, lse, q, k, v, segs, nseg, H, KVH, hd, scale);
}

void attention_init(void) {
    const int sh = (int)att_smem(ATT_MAXD, ATT_MAXV);
    CUDA_CHECK(cudaFuncSetAttribute(attention_kernel<1, 1>, cudaFuncAttributeMaxDynamicSharedMemorySize, sh));
    CUDA_CHECK(cudaFuncSetAttribute(attention_kernel<2, 1>, cudaFuncAttributeMaxDynamicSharedMemorySize, sh));
    CUDA_CHECK(cudaFuncSetAttribute(attention_kernel<4, 1>, cudaFuncAttributeMaxDynamicSharedMemorySize, sh));
    CUDA_CHECK(cudaFuncSetAttribute(attention_kernel<1, ATT_VPW>, cudaFuncAttributeMaxDynamicSharedMemorySize, sh));
    CUDA_CHECK(cudaFuncSetAttribute(attention_kernel<2, ATT_VPW>, cudaFuncAttributeMaxDynamicSharedMemorySize, sh));
    CUDA_CHECK(cudaFuncSetAttribute(attention_kernel<4, ATT_VPW>, cudaFuncAttributeMaxDynamicSharedMemorySize, sh));
}
