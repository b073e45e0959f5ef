// sampling.cu: Philox4x32-10 on the CUDA backend: device fills of random weights (ops_cuda_fill) and
// the sampler (sampler.c's steps on the device, Ops.sample_rows).
#include <math.h>

#include "model/cuda/ops_cuda_internal.h"

// Philox4x32-10 (Salmon et al. 2011): counter (i, 0, key_hi, key_lo-mixed) under a seed key.
static __device__ uint4 philox(uint4 ctr, uint2 key) {
    for (int r = 0; r < 10; r++) {
        const uint32_t hi0 = __umulhi(0xD2511F53u, ctr.x), lo0 = 0xD2511F53u * ctr.x;
        const uint32_t hi1 = __umulhi(0xCD9E8D57u, ctr.z), lo1 = 0xCD9E8D57u * ctr.z;
        ctr = make_uint4(hi1 ^ ctr.y ^ key.x, lo1, hi0 ^ ctr.w ^ key.y, lo0);
        key.x += 0x9E3779B9u, key.y += 0xBB67AE85u;
    }
    return ctr;
}

static __device__ float u01(uint32_t x) { return ((x >> 8) + 0.5f) * (1.0f / 16777216.0f); }  // (0, 1)

static __global__ void fill_kernel(bf16 *x, size_t n, float std, float value, uint2 key, uint32_t khi, uint32_t klo) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
        float val = value;
        if (std != 0.0f) {
            const uint4 r = philox(make_uint4((uint32_t)i, (uint32_t)(i >> 32), khi, klo), key);
            val = std * sqrtf(-2.0f * logf(u01(r.x))) * cospif(2.0f * u01(r.y));
        }
        x[i] = __float2bfloat16(val);
    }
}

extern "C" void ops_cuda_fill(Ops *o, Tensor *x, size_t n, float std, float value, uint64_t seed, uint64_t key) {
    graph_forbid(impl(o), "ops_cuda_fill");
    if (!n) return;
    fill_kernel<<<grid_for(n, 256), 256, 0, impl(o)->stream>>>((bf16 *)x, n, std, value,
                                                               make_uint2((uint32_t)seed, (uint32_t)(seed >> 32)),
                                                               (uint32_t)(key >> 32), (uint32_t)key);
    CUDA_CHECK(cudaGetLastError());
}

// ---------------------------------------------------------------- sampling (sampler.c on the device)

// One block per row walks sampler_pick's steps over an fp32 copy of the row: suppression, repetition
// penalty, temperature, top-k (threshold by a 4-pass radix select on order-preserving keys, so ties at
// the threshold survive as on the host), top-p (the survivors bitonic-sorted by (value, id), then the
// host's sequential cumulative sum), and the inverse-CDF draw in id order with the host's Philox
// number. Sums are fp64 like the host's, in a different order: a choice can differ only where two
// cumulative sums tie to rounding.
enum { SMP_THREADS = 1024 };

typedef struct {
    int greedy, top_k, n_suppress;
    float temperature, top_p, penalty;
    int suppress[SAMPLER_MAX_SUPPRESS];
    uint2 key;
} SampleCfg;

static __device__ uint32_t f32_key(float v) {  // unsigned order == float order
    const uint32_t u = __float_as_uint(v);
    return (u & 0x80000000u) ? ~u : u | 0x80000000u;
}
static __device__ float key_f32(uint32_t k) { return __uint_as_float((k & 0x80000000u) ? k & 0x7fffffffu : ~k); }

// Block-wide reductions over SMP_THREADS threads; every thread gets the result.
static __device__ double block_sum(double v, double *sh) {
    for (int off = 16; off; off >>= 1) v += __shfl_xor_sync(0xffffffffu, v, off);
    __syncthreads();
    if (threadIdx.x % 32 == 0) sh[threadIdx.x / 32] = v;
    __syncthreads();
    double t = 0;
    for (int w = 0; w < SMP_THREADS / 32; w++) t += sh[w];
    return t;
}
static __device__ float block_max(float v, float *sh) {
    for (int off = 16; off; off >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, off));
    __syncthreads();
    if (threadIdx.x % 32 == 0) sh[threadIdx.x / 32] = v;
    __syncthreads();
    float t = -INFINITY;
    for (int w = 0; w < SMP_THREADS / 32; w++) t = fmaxf(t, sh[w]);
    return t;
}

static __device__ int suppressed(const SampleCfg &c, int id) {
    for (int i = 0; i < c.n_suppress; i++)
        if (c.suppress[i] == id) return 1;
    return 0;
}

static __global__ void __launch_bounds__(SMP_THREADS)
    sample_rows_kernel(int *out_id, float *out_lp, const bf16 *logits, int V, float *work, uint64_t *cand, int np,
                       int *hist, const SampleRow *rows, SampleCfg c, uint32_t step) {
    __shared__ double shd[SMP_THREADS / 32];
    __shared__ float shf[SMP_THREADS / 32];
    __shared__ uint32_t bins[256];
    __shared__ uint32_t s_prefix, s_k, s_n;
    __shared__ int s_drop, s_pick, s_last;
    __shared__ double chunk_sum[SMP_THREADS];
    const int r = blockIdx.x, tid = threadIdx.x;
    const bf16 *x = logits + (size_t)r * V;
    float *w = work + (size_t)r * V;  // [V] the processed row
    const SampleRow sr = rows[r];

    // unprocessed log-sum-exp, for the chosen id's log-prob
    float m0 = -INFINITY;
    for (int i = tid; i < V; i += SMP_THREADS) {
        const float v = __bfloat162float(x[i]);
        w[i] = v;
        m0 = fmaxf(m0, v);
    }
    m0 = block_max(m0, shf);
    double z0 = 0;
    for (int i = tid; i < V; i += SMP_THREADS) z0 += exp((double)__bfloat162float(x[i]) - m0);
    z0 = block_sum(z0, shd);

    // suppression, then the penalty from each history id's value (duplicates write the same number)
    if (tid < c.n_suppress) w[c.suppress[tid]] = -INFINITY;
    if (c.penalty != 1.0f)
        for (int i = tid; i < sr.n_hist; i += SMP_THREADS) {
            const int id = hist[sr.hist_off + i];
            if (id < 0 || id >= V || suppressed(c, id)) continue;
            const float v = __bfloat162float(x[id]);
            w[id] = v < 0 ? v * c.penalty : v / c.penalty;
        }
    __syncthreads();

    if (c.greedy) {  // first maximum, as the host's strict '>' scan
        float best = -INFINITY;
        int bi = V;
        for (int i = tid; i < V; i += SMP_THREADS)
            if (w[i] > best || (bi == V && w[i] == best)) best = w[i], bi = i;
        const float top = block_max(best, shf);
        if (tid == 0) s_pick = V;
        __syncthreads();
        if (best == top) atomicMin(&s_pick, bi);
        __syncthreads();
    } else {
        for (int i = tid; i < V; i += SMP_THREADS) w[i] /= c.temperature;
        __syncthreads();
        const int use_k = c.top_k > 0 && c.top_k < V, use_p = c.top_p < 1.0f;
        if (use_k) {  // the top_k-th largest value, 8 key bits per pass from the top
            if (tid == 0) s_prefix = 0, s_k = (uint32_t)c.top_k;
            uint32_t mask = 0;
            for (int shift = 24; shift >= 0; shift -= 8) {
                for (int i = tid; i < 256; i += SMP_THREADS) bins[i] = 0;
                __syncthreads();
                const uint32_t prefix = s_prefix;
                for (int i = tid; i < V; i += SMP_THREADS) {
                    const uint32_t k = f32_key(w[i]);
                    if ((k & mask) == prefix) atomicAdd(&bins[(k >> shift) & 255u], 1u);
                }
                __syncthreads();
                if (tid == 0) {
                    uint32_t k = s_k;
                    int d = 255;
                    for (; d > 0 && bins[d] < k; d--) k -= bins[d];
                    s_prefix = prefix | ((uint32_t)d << shift), s_k = k;
                }
                mask |= 255u << shift;
                __syncthreads();
            }
            const float thr = key_f32(s_prefix);
            for (int i = tid; i < V; i += SMP_THREADS)
                if (!(w[i] >= thr)) w[i] = -INFINITY;
            __syncthreads();
        }
        if (use_p) {
            // survivors as (value key, id): one ascending sort gives the host's (value, id) order
            uint64_t *cd = cand + (size_t)r * np;
            if (tid == 0) s_n = 0;
            __syncthreads();
            for (int i = tid; i < V; i += SMP_THREADS)
                if (w[i] > -INFINITY) cd[atomicAdd(&s_n, 1u)] = ((uint64_t)f32_key(w[i]) << 32) | (uint32_t)i;
            __syncthreads();
            const int n = (int)s_n;
            int p2 = 1;
            while (p2 < n) p2 <<= 1;
            for (int i = n + tid; i < p2; i += SMP_THREADS) cd[i] = ~0ull;
            __syncthreads();
            for (int k = 2; k <= p2; k <<= 1)
                for (int j = k >> 1; j > 0; j >>= 1) {
                    for (int i = tid; i < p2; i += SMP_THREADS) {
                        const int ij = i ^ j;
                        if (ij <= i) continue;
                        const uint64_t a = cd[i], b = cd[ij];
                        if ((a > b) == ((i & k) == 0)) cd[i] = b, cd[ij] = a;
                    }
                    __syncthreads();
                }
            const float m = key_f32((uint32_t)(cd[n - 1] >> 32));
            double z = 0;
            for (int i = tid; i < n; i += SMP_THREADS) z += exp((double)key_f32((uint32_t)(cd[i] >> 32)) - m);
            z = block_sum(z, shd);
            if (tid == 0) {
                double cum = 0;
                int drop = 0;
                for (int i = 0; i < n - 1; i++) {  // the most likely token always stays
                    cum += exp((double)key_f32((uint32_t)(cd[i] >> 32)) - m) / z;
                    if (cum <= 1.0 - c.top_p)
                        drop = i + 1;
                    else
                        break;
                }
                s_drop = drop;
            }
            __syncthreads();
            for (int i = tid; i < s_drop; i += SMP_THREADS) w[(uint32_t)cd[i]] = -INFINITY;
            __syncthreads();
        }
        // inverse CDF in id order: each thread owns a contiguous span, spans' sums scanned in order
        float mx = -INFINITY;
        for (int i = tid; i < V; i += SMP_THREADS) mx = fmaxf(mx, w[i]);
        const float m = block_max(mx, shf);
        const int span = (V + SMP_THREADS - 1) / SMP_THREADS, i0 = tid * span, i1 = min(V, i0 + span);
        double s = 0;
        int last = -1;
        for (int i = i0; i < i1; i++) {
            const double e = exp((double)w[i] - m);
            if (e != 0) s += e, last = i;
        }
        chunk_sum[tid] = s;
        if (tid == 0) s_pick = -1, s_last = -1;
        __syncthreads();
        if (last >= 0) atomicMax(&s_last, last);
        if (tid == 0) {
            double z = 0;
            for (int t = 0; t < SMP_THREADS; t++) {
                const double cs = chunk_sum[t];
                chunk_sum[t] = z;  // exclusive prefix
                z += cs;
            }
            shd[0] = z;
        }
        __syncthreads();
        const uint4 rb = philox(make_uint4(sr.question, sr.sample, step, 0u), c.key);
        const double u = (double)((float)(rb.x >> 8) * (1.0f / 16777216.0f)) * shd[0];
        const double before = chunk_sum[tid];
        if (s > 0 && u >= before && u < before + s) {  // the one span holding u
            double cum = before;
            int pick = last;  // rounding may leave u beyond this span's running sum
            for (int i = i0; i < i1; i++) {
                const double e = exp((double)w[i] - m);
                if (e == 0) continue;
                cum += e;
                if (u < cum) {
                    pick = i;
                    break;
                }
            }
            s_pick = pick;
        }
        __syncthreads();
        if (tid == 0 && s_pick < 0) s_pick = s_last;  // rounding left u beyond the total
        __syncthreads();
    }
    if (tid == 0) {
        const int pick = s_pick;
        out_id[r] = pick;
        out_lp[r] = (float)((double)__bfloat162float(x[pick]) - m0 - log(z0));
        hist[sr.hist_off + sr.n_hist] = pick;
    }
}

void cu_sample_rows(Ops *o, int *ids_host, float *lp_host, const Tensor *logits, int R, int V, const SamplerParams *sp,
                    int *hist, const SampleRow *rows, uint32_t step) {
    Cuda *c = impl(o);
    graph_forbid(c, "sample_rows");
    if (R <= 0) return;
    int np = 1;
    while (np < V) np <<= 1;
    const size_t need = (size_t)R * V * sizeof(float) + (size_t)R * np * sizeof(uint64_t) +
                        (size_t)R * (sizeof(SampleRow) + sizeof(int) + sizeof(float));
    if (need > c->smp_bytes) {
        if (c->smp) CUDA_CHECK(cudaFree(c->smp));
        CUDA_CHECK(cudaMalloc(&c->smp, need));
        c->smp_bytes = need;
    }
    // layout: cand [R, np] u64 | work [R, V] f32 | rows [R] | ids [R] | lp [R]
    uint64_t *cand = (uint64_t *)c->smp;
    float *work = (float *)(cand + (size_t)R * np);
    SampleRow *drows = (SampleRow *)(work + (size_t)R * V);
    int *dids = (int *)(drows + R);
    float *dlp = (float *)(dids + R);
    CUDA_CHECK(cudaMemcpyAsync(drows, rows, (size_t)R * sizeof(SampleRow), cudaMemcpyHostToDevice, c->stream));
    SampleCfg cfg = {};
    cfg.greedy = sp->greedy, cfg.top_k = sp->top_k, cfg.n_suppress = sp->n_suppress;
    cfg.temperature = sp->temperature, cfg.top_p = sp->top_p, cfg.penalty = sp->repetition_penalty;
    for (int i = 0; i < sp->n_suppress; i++) cfg.suppress[i] = sp->suppress[i];
    cfg.key = make_uint2((uint32_t)sp->seed, (uint32_t)(sp->seed >> 32));
    sample_rows_kernel<<<R, SMP_THREADS, 0, c->stream>>>(dids, dlp, (const bf16 *)logits, V, work, cand, np, hist,
                                                         drows, cfg, step);
    CUDA_CHECK(cudaGetLastError());
    CUDA_CHECK(cudaMemcpyAsync(ids_host, dids, (size_t)R * sizeof(int), cudaMemcpyDeviceToHost, c->stream));
    CUDA_CHECK(cudaMemcpyAsync(lp_host, dlp, (size_t)R * sizeof(float), cudaMemcpyDeviceToHost, c->stream));
    CUDA_CHECK(cudaStreamSynchronize(c->stream));
}
