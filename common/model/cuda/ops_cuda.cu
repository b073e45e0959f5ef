// ops_cuda.cu: the CUDA backend of ops.h. Tensors are bf16; every reduction (GEMM, norms, softmax,
// log-sum-exp) accumulates in fp32 and the saved statistics (mean, rstd, lse) are fp32. GEMMs go through
// cuBLASLt with the bias fused as an epilogue (plans cached per shape, so a decode step pays no heuristic
// search). Attention never forms a [T x T] matrix: runs of many query rows (prefill, encoder, training
// groups) go to a tensor-core flash kernel (flash_fwd.cu's mma.sync kernel for head_dim 64 and 128, else
// WMMA bf16 tiles here; fp32 online softmax); short runs (decode) go to a CUDA-core kernel whose blocks
// hold every query row of a group that shares a prefix, so a decode step reads the shared prompt's keys
// once for all G samples, split over blocks when they are few. Inference fuses the stacked q/k/v (RoPE and cache writes in one kernel) and gate/up projections,
// and a repeated op sequence (a decode step) can be captured once as a CUDA graph and replayed with new
// host inputs (ops.h graph_*). GEMM plans made outside a capture are tuned by timing the heuristic's
// candidates. Everything runs in order on one stream. Backward ops accumulate their parameter gradients
// in fp32 (column sums through fp32 partials, embedding scatter-add by first occurrence) and round once
// into the bf16 gradient; the scatter-add and the column sums are deterministic (no float atomics).
#include <cublasLt.h>
#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_runtime.h>
#include <mma.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

extern "C" {
#include "model/cuda/ops_cuda.h"
#include "util/check.h"
}
#include "model/cuda/ops_cuda_internal.h"

typedef __nv_bfloat16 bf16;

#define BLAS_CHECK(x)                                                               \
    do {                                                                            \
        int st_ = (int)(x);                                                         \
        if (st_ != 0) fatal("cuBLAS: %s: status %d", #x, st_);                      \
    } while (0)

// ---------------------------------------------------------------- backend state

enum { PLAN_CAP = 512, ATT_CACHE = 2 };

typedef struct {
    int M, N, K, ta, tb, bias, beta, align;  // key
    cublasLtMatmulDesc_t desc;
    cublasLtMatrixLayout_t la, lb, lc;
    cublasLtMatmulAlgo_t algo;
    int ok;  // 0: cuBLASLt found no plan, use cublasGemmEx
} GemmPlan;

// Device copy of one attention call's work list (see attention below), reused while the host segments
// are unchanged: every layer of a forward passes the same list.
typedef struct {
    AttnSeg *segs;  // host copy of the key
    int nseg, cap_seg, group;
    void *rows, *items, *fitems;  // device: rows, items, and the tensor-core path's one-segment items
    size_t cap_rows, cap_items, cap_fitems;
    int n_fitems;
    int n_items, n_rows, max_vec, nq, max_pre;  // nq: query rows spanned, max_pre: longest prefix
    int max_tiles;  // most 32-key tiles (prefix, then each run's own keys) of an item: the decode path's work
    unsigned long long stamp;
    float *part;  // a graph's list only: its own split states (Cuda.part otherwise)
    size_t part_n;
} AttnCache;

typedef struct {
    cudaStream_t stream;
    cublasHandle_t blas;
    cublasLtHandle_t lt;
    void *lt_ws;
    size_t lt_ws_bytes;
    GemmPlan plans[PLAN_CAP];
    int n_plans;
    float *scratch;  // fp32 staging for upload_act / download_act
    size_t scratch_n;
    AttnCache att[ATT_CACHE];
    unsigned long long att_clock;
    float *part;  // split-prefix attention states
    size_t part_n;
    int n_sm;
    void **blk_ptr;  // live allocations and their sizes, for the peak
    size_t *blk_size;
    int n_blk, cap_blk;
    size_t cur_bytes, peak_bytes;
    void *smp;  // sample_rows workspace (see there)
    size_t smp_bytes;
    AttnBwd *attn_bwd;  // attention_bwd.cu's plan and scratch
    int decode_old;     // AQA_DECODE_ATTN=old: short runs always take attention_kernel (isolates the fast path)
    int flash_old;      // AQA_FLASH=old: the WMMA flash_kernel for every head dim (flash_fwd.cu otherwise)
    struct Graph *gr;  // the graph of the pass in progress (graph_begin .. graph_end), or NULL
} Cuda;

static Cuda *impl(Ops *o) { return (Cuda *)o->impl; }

int cuda_env_old(const char *var) {
    const char *v = getenv(var);
    if (!v || !*v || !strcmp(v, "new")) return 0;
    if (!strcmp(v, "old")) return 1;
    fatal("ops_cuda: %s='%s' (expected 'old' or 'new')", var, v);
}

// ---------------------------------------------------------------- graphs (ops.h graph_*)

// A pass through a graph is the model code issuing its ops as usual. On the first pass the stream is
// captured: host inputs are copied into pinned blocks the graph owns and the captured copies read them
// there, and device buffers an op needs for itself (attention work lists, split states) are the graph's
// own, so every address in the graph stays valid. On a later pass each op only adds its arguments to a
// signature and the host inputs are rewritten in place, in the same order; graph_end compares the
// signature with the captured one and replays, or asks for the pass again after dropping the graph.
enum { GRAPH_PIN_BLOCK = 1 << 16 };

typedef struct {
    void *host;  // pinned source of one captured upload
    size_t bytes;
    void *dst;
} GraphStage;

typedef struct Graph {
    cudaGraphExec_t exec;  // NULL until captured
    cudaEvent_t done;      // the last launch finished: its pinned inputs may be rewritten
    int replay, bad;       // this pass only stages; its inputs did not match the captured ones
    uint64_t key, pass_key;
    GraphStage *st;  // captured uploads in order; i_st: the next one of this pass
    int n_st, cap_st, i_st;
    void **pins;  // pinned blocks; the last one is filled from pin_used
    int n_pins;
    size_t pin_used, pin_cap;
    void **devs;  // device buffers owned by the graph
    int n_devs;
    AttnCache *plans;  // attention work lists in first-use order; i_plan: the current one of this pass
    int n_plans, i_plan;
} Graph;

static void graph_mix(Graph *g, const uint64_t *v, size_t n) {
    for (size_t i = 0; i < n; i++) g->pass_key = (g->pass_key ^ v[i]) * 1099511628211ull + (v[i] >> 29);
}

// Records an op's arguments (integers and pointers) in the pass signature; true when the op must not
// run (a replay pass: its kernels are in the graph already).
template <typename... Ts>
static int graph_skip(Cuda *c, int line, Ts... v) {
    if (!c->gr) return 0;
    const uint64_t k[] = {(uint64_t)line, (uint64_t)v...};
    graph_mix(c->gr, k, sizeof k / sizeof k[0]);
    return c->gr->replay;
}
#define GRAPH_SKIP(c, ...)                                    \
    do {                                                     \
        if (graph_skip((c), __LINE__, __VA_ARGS__)) return; \
    } while (0)

static void graph_forbid(Cuda *c, const char *what) {
    if (c->gr) fatal("cuda: %s inside a graph pass (graph passes may not read back, synchronise or allocate)", what);
}

static void *graph_dev_alloc(Graph *g, size_t bytes) {
    void *p;
    CUDA_CHECK(cudaMalloc(&p, bytes ? bytes : 1));
    g->devs = (void **)reallocCheck(g->devs, (size_t)(g->n_devs + 1) * sizeof(void *));
    g->devs[g->n_devs++] = p;
    return p;
}

// dst <- src_host[bytes] as an input of the graph (see above).
static void graph_stage(Cuda *c, void *dst, const void *src, size_t bytes) {
    Graph *g = c->gr;
    if (g->replay) {
        if (g->i_st >= g->n_st || g->st[g->i_st].dst != dst || g->st[g->i_st].bytes != bytes) {
            g->bad = 1;
            return;
        }
        memcpy(g->st[g->i_st++].host, src, bytes);
        return;
    }
    const size_t need = (bytes + 15) & ~(size_t)15;
    if (!g->n_pins || g->pin_used + need > g->pin_cap) {
        g->pin_cap = need > (size_t)GRAPH_PIN_BLOCK ? need : (size_t)GRAPH_PIN_BLOCK;
        g->pins = (void **)reallocCheck(g->pins, (size_t)(g->n_pins + 1) * sizeof(void *));
        CUDA_CHECK(cudaMallocHost(&g->pins[g->n_pins++], g->pin_cap));
        g->pin_used = 0;
    }
    void *h = (char *)g->pins[g->n_pins - 1] + g->pin_used;
    g->pin_used += need;
    memcpy(h, src, bytes);
    if (g->n_st == g->cap_st) {
        g->cap_st = g->cap_st ? 2 * g->cap_st : 16;
        g->st = (GraphStage *)reallocCheck(g->st, (size_t)g->cap_st * sizeof(GraphStage));
    }
    g->st[g->n_st++] = (GraphStage){h, bytes, dst};
    CUDA_CHECK(cudaMemcpyAsync(dst, h, bytes, cudaMemcpyHostToDevice, c->stream));
}

static void graph_clear(Graph *g) {
    CUDA_CHECK(cudaEventSynchronize(g->done));  // a launch in flight still uses the buffers
    if (g->exec) CUDA_CHECK(cudaGraphExecDestroy(g->exec));
    g->exec = NULL;
    for (int i = 0; i < g->n_pins; i++) CUDA_CHECK(cudaFreeHost(g->pins[i]));
    for (int i = 0; i < g->n_devs; i++) CUDA_CHECK(cudaFree(g->devs[i]));
    for (int i = 0; i < g->n_plans; i++) free(g->plans[i].segs);
    free(g->pins), free(g->devs), free(g->st), free(g->plans);
    g->pins = NULL, g->devs = NULL, g->st = NULL, g->plans = NULL;
    g->n_pins = g->n_devs = g->n_st = g->cap_st = g->n_plans = 0;
    g->pin_used = g->pin_cap = 0;
}

static void *cu_graph_create(Ops *o) {
    (void)o;
    Graph *g = (Graph *)callocCheck(1, sizeof(Graph));
    CUDA_CHECK(cudaEventCreateWithFlags(&g->done, cudaEventDisableTiming));
    return g;
}

static void cu_graph_begin(Ops *o, void *gp) {
    Cuda *c = impl(o);
    Graph *g = (Graph *)gp;
    if (c->gr) fatal("cuda: graph_begin inside another graph pass");
    c->gr = g;
    g->replay = g->exec != NULL, g->bad = 0, g->pass_key = 1469598103934665603ull, g->i_st = 0, g->i_plan = 0;
    if (g->replay)
        CUDA_CHECK(cudaEventSynchronize(g->done));  // the last replay may still read the pinned inputs
    else
        CUDA_CHECK(cudaStreamBeginCapture(c->stream, cudaStreamCaptureModeRelaxed));
}

static int cu_graph_end(Ops *o, void *gp, int run) {
    Cuda *c = impl(o);
    Graph *g = (Graph *)gp;
    if (c->gr != g) fatal("cuda: graph_end without its graph_begin");
    c->gr = NULL;
    if (!g->replay) {
        cudaGraph_t graph;
        CUDA_CHECK(cudaStreamEndCapture(c->stream, &graph));
        if (run) {
            CUDA_CHECK(cudaGraphInstantiate(&g->exec, graph, 0));
            g->key = g->pass_key;
        }
        CUDA_CHECK(cudaGraphDestroy(graph));
        if (!run) {
            graph_clear(g);
            return 0;
        }
    } else if (!run) {
        return 0;
    } else if (g->bad || g->i_st != g->n_st || g->i_plan != g->n_plans || g->pass_key != g->key) {
        graph_clear(g);  // another op sequence: the caller's next pass captures it
        return 1;
    }
    CUDA_CHECK(cudaGraphLaunch(g->exec, c->stream));
    CUDA_CHECK(cudaEventRecord(g->done, c->stream));
    return 0;
}

static void cu_graph_free(Ops *o, void *gp) {
    Graph *g = (Graph *)gp;
    if (!g) return;
    if (impl(o)->gr == g) fatal("cuda: graph_free during its pass");
    CUDA_CHECK(cudaStreamSynchronize(impl(o)->stream));
    graph_clear(g);
    CUDA_CHECK(cudaEventDestroy(g->done));
    free(g);
}

static unsigned grid_for(size_t n, int threads) {
    size_t b = (n + threads - 1) / threads;
    return (unsigned)(b > 65535 * 16 ? 65535 * 16 : (b ? b : 1));
}

// ---------------------------------------------------------------- memory


static void *cu_alloc(Ops *o, size_t bytes) {
    Cuda *c = impl(o);
    graph_forbid(c, "alloc");
    void *p;
    CUDA_CHECK(cudaMalloc(&p, bytes ? bytes : 1));
    CUDA_CHECK(cudaMemsetAsync(p, 0, bytes ? bytes : 1, c->stream));
    if (c->n_blk == c->cap_blk) {
        c->cap_blk = c->cap_blk ? 2 * c->cap_blk : 64;
        c->blk_ptr = (void **)reallocCheck(c->blk_ptr, (size_t)c->cap_blk * sizeof(void *));
        c->blk_size = (size_t *)reallocCheck(c->blk_size, (size_t)c->cap_blk * sizeof(size_t));
    }
    c->blk_ptr[c->n_blk] = p, c->blk_size[c->n_blk++] = bytes;
    c->cur_bytes += bytes;
    if (c->cur_bytes > c->peak_bytes) c->peak_bytes = c->cur_bytes;
    return p;
}

static void cu_free(Ops *o, void *p) {
    Cuda *c = impl(o);
    graph_forbid(c, "free");
    if (!p) return;
    for (int i = 0; i < c->n_blk; i++)
        if (c->blk_ptr[i] == p) {
            c->cur_bytes -= c->blk_size[i];
            c->blk_ptr[i] = c->blk_ptr[c->n_blk - 1], c->blk_size[i] = c->blk_size[c->n_blk - 1];
            c->n_blk--;
            break;
        }
    CUDA_CHECK(cudaFree(p));
}

static void cu_upload(Ops *o, void *dst, const void *src, size_t bytes) {
    Cuda *c = impl(o);
    if (c->gr) {
        const uint64_t k[] = {(uint64_t)dst, bytes};
        graph_mix(c->gr, k, 2);
        if (bytes) graph_stage(c, dst, src, bytes);
        return;
    }
    if (bytes) CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, impl(o)->stream));
}

static void cu_download(Ops *o, void *dst, const void *src, size_t bytes) {
    graph_forbid(impl(o), "download");
    if (!bytes) return;
    CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, impl(o)->stream));
    CUDA_CHECK(cudaStreamSynchronize(impl(o)->stream));
}

static void cu_copy(Ops *o, void *dst, const void *src, size_t bytes) {
    GRAPH_SKIP(impl(o), dst, src, bytes);
    if (bytes) CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, impl(o)->stream));
}

static void cu_zero(Ops *o, void *dst, size_t bytes) {
    GRAPH_SKIP(impl(o), dst, bytes);
    if (bytes) CUDA_CHECK(cudaMemsetAsync(dst, 0, bytes, impl(o)->stream));
}

static void cu_sync(Ops *o) {
    graph_forbid(impl(o), "sync");
    CUDA_CHECK(cudaStreamSynchronize(impl(o)->stream));
}

__global__ void f32_to_bf16_kernel(bf16 *y, const float *x, size_t n) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
        y[i] = __float2bfloat16(x[i]);
}

__global__ void bf16_to_f32_kernel(float *y, const bf16 *x, size_t n) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
        y[i] = __bfloat162float(x[i]);
}

// fp32 <-> bf16 conversion goes through a fixed device scratch, chunk by chunk, so a 7B upload never
// needs a device fp32 copy of the whole model.
static void cu_upload_act(Ops *o, Tensor *dst, const float *src, size_t n) {
    Cuda *c = impl(o);
    graph_forbid(c, "upload_act");
    for (size_t i = 0; i < n; i += c->scratch_n) {
        size_t k = n - i < c->scratch_n ? n - i : c->scratch_n;
        CUDA_CHECK(cudaMemcpyAsync(c->scratch, src + i, k * sizeof(float), cudaMemcpyHostToDevice, c->stream));
        f32_to_bf16_kernel<<<grid_for(k, 256), 256, 0, c->stream>>>((bf16 *)dst + i, c->scratch, k);
    }
    CUDA_CHECK(cudaGetLastError());
}

static void cu_download_act(Ops *o, float *dst, const Tensor *src, size_t n) {
    Cuda *c = impl(o);
    graph_forbid(c, "download_act");
    for (size_t i = 0; i < n; i += c->scratch_n) {
        size_t k = n - i < c->scratch_n ? n - i : c->scratch_n;
        bf16_to_f32_kernel<<<grid_for(k, 256), 256, 0, c->stream>>>(c->scratch, (const bf16 *)src + i, k);
        CUDA_CHECK(cudaMemcpyAsync(dst + i, c->scratch, k * sizeof(float), cudaMemcpyDeviceToHost, c->stream));
    }
    CUDA_CHECK(cudaStreamSynchronize(c->stream));
}

// ---------------------------------------------------------------- GEMM

// Row-major C[M,N] = op(A) op(B) is column-major C^T[N,M] = op(B)^T op(A)^T, so cuBLAS sees B first.
static int ptr_align(const void *p) {
    uintptr_t a = (uintptr_t)p;
    int al = 256;
    while (al > 2 && a % al) al /= 2;
    return al;
}

// Outputs above PLAN_TUNE_MAX bytes are not tuned: such GEMMs are compute-bound, where the heuristic's
// choice is good, and their scratch output would be large.
enum { PLAN_TRY = 8, PLAN_REPS = 3, PLAN_TUNE_MAX = 64 << 20 };

// Times the heuristic's candidate algorithms on the call's own operands (the output into a scratch
// buffer) and keeps the fastest: for the skinny decode GEMMs the heuristic's first choice is often not the
// one that streams the weights fastest. Not while a graph is being captured (nothing may run then).
static void plan_tune(Cuda *c, GemmPlan *p, const cublasLtMatmulHeuristicResult_t *res, int n, const void *A,
                      const void *B, const void *bias) {
    void *C;
    CUDA_CHECK(cudaMalloc(&C, (size_t)p->M * p->N * sizeof(bf16)));
    CUDA_CHECK(cudaMemsetAsync(C, 0, (size_t)p->M * p->N * sizeof(bf16), c->stream));
    if (p->bias)
        BLAS_CHECK(cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bias, sizeof bias));
    cudaEvent_t e0, e1;
    CUDA_CHECK(cudaEventCreate(&e0));
    CUDA_CHECK(cudaEventCreate(&e1));
    const float one = 1.0f, beta = p->beta ? 1.0f : 0.0f;
    float best = INFINITY;
    for (int i = 0; i < n; i++) {
        if (cublasLtMatmul(c->lt, p->desc, &one, B, p->la, A, p->lb, &beta, C, p->lc, C, p->lc, &res[i].algo,
                           c->lt_ws, c->lt_ws_bytes, c->stream) != CUBLAS_STATUS_SUCCESS)
            continue;  // warm-up; a candidate that cannot run is skipped
        CUDA_CHECK(cudaEventRecord(e0, c->stream));
        for (int r = 0; r < PLAN_REPS; r++)
            BLAS_CHECK(cublasLtMatmul(c->lt, p->desc, &one, B, p->la, A, p->lb, &beta, C, p->lc, C, p->lc,
                                      &res[i].algo, c->lt_ws, c->lt_ws_bytes, c->stream));
        CUDA_CHECK(cudaEventRecord(e1, c->stream));
        CUDA_CHECK(cudaEventSynchronize(e1));
        float ms;
        CUDA_CHECK(cudaEventElapsedTime(&ms, e0, e1));
        if (ms < best) best = ms, p->algo = res[i].algo;
    }
    CUDA_CHECK(cudaEventDestroy(e0));
    CUDA_CHECK(cudaEventDestroy(e1));
    CUDA_CHECK(cudaFree(C));
}

static GemmPlan *plan_get(Cuda *c, int M, int N, int K, int ta, int tb, int bias, int beta, int align,
                          const void *A, const void *B, const void *biasp) {
    for (int i = 0; i < c->n_plans; i++) {
        GemmPlan *p = &c->plans[i];
        if (p->M == M && p->N == N && p->K == K && p->ta == ta && p->tb == tb && p->bias == bias &&
            p->beta == beta && p->align == align)
            return p;
    }
    if (c->n_plans == PLAN_CAP) {  // a workload with this many shapes is unusual: start over
        for (int i = 0; i < c->n_plans; i++) {
            GemmPlan *p = &c->plans[i];
            cublasLtMatmulDescDestroy(p->desc);
            cublasLtMatrixLayoutDestroy(p->la), cublasLtMatrixLayoutDestroy(p->lb);
            cublasLtMatrixLayoutDestroy(p->lc);
        }
        c->n_plans = 0;
    }
    GemmPlan *p = &c->plans[c->n_plans++];
    memset(p, 0, sizeof *p);
    p->M = M, p->N = N, p->K = K, p->ta = ta, p->tb = tb, p->bias = bias, p->beta = beta, p->align = align;
    BLAS_CHECK(cublasLtMatmulDescCreate(&p->desc, CUBLAS_COMPUTE_32F, CUDA_R_32F));
    cublasOperation_t opa = tb ? CUBLAS_OP_T : CUBLAS_OP_N, opb = ta ? CUBLAS_OP_T : CUBLAS_OP_N;
    BLAS_CHECK(cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_TRANSA, &opa, sizeof opa));
    BLAS_CHECK(cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_TRANSB, &opb, sizeof opb));
    if (bias) {
        cublasLtEpilogue_t epi = CUBLASLT_EPILOGUE_BIAS;
        cudaDataType_t bt = CUDA_R_16BF;
        BLAS_CHECK(cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_EPILOGUE, &epi, sizeof epi));
        BLAS_CHECK(cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE, &bt, sizeof bt));
    }
    // Lt "A" = op(B)^T [N,K], "B" = op(A)^T [K,M], "C" = C^T [N,M]; layouts are the stored matrices
    BLAS_CHECK(cublasLtMatrixLayoutCreate(&p->la, CUDA_R_16BF, tb ? K : N, tb ? N : K, tb ? K : N));
    BLAS_CHECK(cublasLtMatrixLayoutCreate(&p->lb, CUDA_R_16BF, ta ? M : K, ta ? K : M, ta ? M : K));
    BLAS_CHECK(cublasLtMatrixLayoutCreate(&p->lc, CUDA_R_16BF, N, M, N));
    cublasLtMatmulPreference_t pref;
    BLAS_CHECK(cublasLtMatmulPreferenceCreate(&pref));
    BLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &c->lt_ws_bytes,
                                                    sizeof c->lt_ws_bytes));
    uint32_t al = (uint32_t)align;
    BLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, &al, sizeof al));
    BLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, &al, sizeof al));
    BLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, &al, sizeof al));
    BLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, &al, sizeof al));
    cublasLtMatmulHeuristicResult_t res[PLAN_TRY];
    int found = 0;
    if (cublasLtMatmulAlgoGetHeuristic(c->lt, p->desc, p->la, p->lb, p->lc, p->lc, pref, PLAN_TRY, res, &found) ==
            CUBLAS_STATUS_SUCCESS &&
        found > 0) {
        p->algo = res[0].algo;
        p->ok = 1;
        if (found > 1 && !c->gr && (size_t)M * N * sizeof(bf16) <= (size_t)PLAN_TUNE_MAX)
            plan_tune(c, p, res, found, A, B, biasp);
    }
    cublasLtMatmulPreferenceDestroy(pref);
    return p;
}

__global__ void add_bias_kernel(bf16 *C, const bf16 *bias, size_t MN, int N) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < MN; i += (size_t)gridDim.x * blockDim.x)
        C[i] = __float2bfloat16(__bfloat162float(C[i]) + __bfloat162float(bias[i % N]));
}

static void cu_matmul(Ops *o, Tensor *C, const Tensor *A, const Tensor *B, const Tensor *bias, int M, int N, int K,
                      int ta, int tb, int accumulate) {
    Cuda *c = impl(o);
    GRAPH_SKIP(c, C, A, B, bias, M, N, K, ta, tb, accumulate);
    if (M <= 0 || N <= 0) return;
    const float one = 1.0f, beta = accumulate ? 1.0f : 0.0f;
    if (K <= 0) {  // empty sum: C = bias (+ C)
        if (!accumulate) cu_zero(o, C, (size_t)M * N * sizeof(bf16));
        if (bias) add_bias_kernel<<<grid_for((size_t)M * N, 256), 256, 0, c->stream>>>((bf16 *)C, (const bf16 *)bias,
                                                                                       (size_t)M * N, N);
        return;
    }
    int align = ptr_align(A), ab = ptr_align(B), ac = ptr_align(C);
    align = ab < align ? ab : align;
    align = ac < align ? ac : align;
    // the fused epilogue reads the bias with vector loads: only an aligned bias goes through it
    const int fuse = bias && ptr_align(bias) >= 16;
    GemmPlan *p = plan_get(c, M, N, K, ta, tb, fuse, accumulate, align, A, B, bias);
    int done = 0;
    if (p->ok) {
        if (fuse)
            BLAS_CHECK(cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bias, sizeof bias));
        done = cublasLtMatmul(c->lt, p->desc, &one, B, p->la, A, p->lb, &beta, C, p->lc, C, p->lc, &p->algo, c->lt_ws,
                              c->lt_ws_bytes, c->stream) == CUBLAS_STATUS_SUCCESS;
    }
    if (!done)
        BLAS_CHECK(cublasGemmEx(c->blas, tb ? CUBLAS_OP_T : CUBLAS_OP_N, ta ? CUBLAS_OP_T : CUBLAS_OP_N, N, M, K, &one,
                                B, CUDA_R_16BF, tb ? K : N, A, CUDA_R_16BF, ta ? M : K, &beta, C, CUDA_R_16BF, N,
                                CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
    if (bias && !(done && fuse))
        add_bias_kernel<<<grid_for((size_t)M * N, 256), 256, 0, c->stream>>>((bf16 *)C, (const bf16 *)bias,
                                                                             (size_t)M * N, N);
}

// ---------------------------------------------------------------- reductions

// Sum over the block of one float per thread (blockDim.x a multiple of 32, <= 1024).
__device__ float block_sum(float v, float *sh) {
    for (int o = 16; o; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    const int w = threadIdx.x / 32, nw = blockDim.x / 32;
    __syncthreads();  // sh may still be read by a previous call
    if (threadIdx.x % 32 == 0) sh[w] = v;
    __syncthreads();
    float t = 0.0f;
    for (int i = 0; i < nw; i++) t += sh[i];
    return t;
}

__global__ void layernorm_kernel(bf16 *y, float *mean, float *rstd, const bf16 *x, const bf16 *w, const bf16 *b,
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
__global__ void rmsnorm_kernel(bf16 *y, float *rstd, const bf16 *x, const bf16 *w, int C, float eps) {
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

static int row_threads(int C) {
    int t = 32;
    while (t < 1024 && t < C / 4) t *= 2;
    return t;
}

static void cu_layernorm(Ops *o, Tensor *y, float *mean, float *rstd, const Tensor *x, const Tensor *w,
                         const Tensor *b, int T, int C, float eps) {
    GRAPH_SKIP(impl(o), y, mean, rstd, x, w, b, T, C);
    if (T <= 0) return;
    layernorm_kernel<<<T, row_threads(C), 0, impl(o)->stream>>>((bf16 *)y, mean, rstd, (const bf16 *)x,
                                                                (const bf16 *)w, (const bf16 *)b, C, eps);
}

static void cu_rmsnorm(Ops *o, Tensor *y, float *rstd, const Tensor *x, const Tensor *w, int T, int C, float eps) {
    GRAPH_SKIP(impl(o), y, rstd, x, w, T, C);
    if (T <= 0) return;
    rmsnorm_kernel<<<T, row_threads(C), 0, impl(o)->stream>>>((bf16 *)y, rstd, (const bf16 *)x, (const bf16 *)w, C,
                                                              eps);
}

// log-sum-exp of a row by an online (max, sum) pair per thread, merged across the block.
__global__ void logprob_kernel(float *lp, float *lse, const bf16 *logits, const int *tgt, int V) {
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

static void cu_logprob(Ops *o, float *lp, float *lse, const Tensor *logits, const int *tgt, int R, int V) {
    GRAPH_SKIP(impl(o), lp, lse, logits, tgt, R, V);
    if (R <= 0) return;
    logprob_kernel<<<R, 1024, 0, impl(o)->stream>>>(lp, lse, (const bf16 *)logits, tgt, V);
}

// ---------------------------------------------------------------- element-wise and data movement

__global__ void im2col_kernel(bf16 *cols, const bf16 *x, int C, int Tin, int sc, int st, int K, int stride, int pad,
                              int Tout) {
    const size_t n = (size_t)Tout * C * K;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
        const int k = (int)(i % K), ch = (int)(i / K % C), t = (int)(i / ((size_t)K * C));
        const int ti = t * stride + k - pad;
        cols[i] = (ti >= 0 && ti < Tin) ? x[(size_t)ch * sc + (size_t)ti * st] : __float2bfloat16(0.0f);
    }
}

static void cu_im2col(Ops *o, Tensor *cols, const Tensor *x, int C, int Tin, int sc, int st, int K, int stride,
                      int pad, int Tout) {
    GRAPH_SKIP(impl(o), cols, x, C, Tin, sc, st, K, stride, pad, Tout);
    size_t n = (size_t)Tout * C * K;
    if (!n) return;
    im2col_kernel<<<grid_for(n, 256), 256, 0, impl(o)->stream>>>((bf16 *)cols, (const bf16 *)x, C, Tin, sc, st, K,
                                                                 stride, pad, Tout);
}

// HF computes inv_freq and the angle in fp32; cos/sin here are full-precision sincosf of that angle.
__global__ void rope_kernel(bf16 *x, const int *pos, int T, int H, int hd, float theta, int inverse) {
    const int half = hd / 2;
    const size_t n = (size_t)T * H * half;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
        const int d = (int)(i % half);
        const size_t th = i / half, t = th / H;
        const float inv_freq = 1.0f / powf(theta, (float)(2 * d) / (float)hd);
        float s, c;
        sincosf(inv_freq * (float)pos[t], &s, &c);
        if (inverse) s = -s;
        bf16 *xh = x + th * hd;
        const float a = __bfloat162float(xh[d]), b = __bfloat162float(xh[d + half]);
        xh[d] = __float2bfloat16(a * c - b * s);
        xh[d + half] = __float2bfloat16(b * c + a * s);
    }
}

static void cu_rope(Ops *o, Tensor *x, const int *pos, int T, int H, int hd, float theta, int inverse) {
    GRAPH_SKIP(impl(o), x, pos, T, H, hd, inverse);
    size_t n = (size_t)T * H * (hd / 2);
    if (!n) return;
    rope_kernel<<<grid_for(n, 256), 256, 0, impl(o)->stream>>>((bf16 *)x, pos, T, H, hd, theta, inverse);
}

__global__ void gelu_kernel(bf16 *y, const bf16 *x, size_t n) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
        const float v = __bfloat162float(x[i]);
        y[i] = __float2bfloat16(0.5f * v * (1.0f + erff(v * 0.70710678118654752f)));
    }
}

__global__ void silu_mul_kernel(bf16 *y, const bf16 *g, const bf16 *u, size_t n) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
        const float a = __bfloat162float(g[i]);
        y[i] = __float2bfloat16(a / (1.0f + expf(-a)) * __bfloat162float(u[i]));
    }
}

__global__ void add_kernel(bf16 *y, const bf16 *a, const bf16 *b, size_t n) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
        y[i] = __float2bfloat16(__bfloat162float(a[i]) + __bfloat162float(b[i]));
}

__global__ void avgpool2_kernel(bf16 *y, const bf16 *x, int R, int C) {
    const size_t n = (size_t)R * C;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
        const size_t r = i / C, c = i % C;
        y[i] = __float2bfloat16((__bfloat162float(x[2 * r * C + c]) + __bfloat162float(x[(2 * r + 1) * C + c])) *
                                0.5f);
    }
}

static void cu_gelu(Ops *o, Tensor *y, const Tensor *x, size_t n) {
    GRAPH_SKIP(impl(o), y, x, n);
    if (n) gelu_kernel<<<grid_for(n, 256), 256, 0, impl(o)->stream>>>((bf16 *)y, (const bf16 *)x, n);
}
static void cu_silu_mul(Ops *o, Tensor *y, const Tensor *g, const Tensor *u, size_t n) {
    GRAPH_SKIP(impl(o), y, g, u, n);
    if (n)
        silu_mul_kernel<<<grid_for(n, 256), 256, 0, impl(o)->stream>>>((bf16 *)y, (const bf16 *)g, (const bf16 *)u,
                                                                       n);
}
static void cu_add(Ops *o, Tensor *y, const Tensor *a, const Tensor *b, size_t n) {
    GRAPH_SKIP(impl(o), y, a, b, n);
    if (n) add_kernel<<<grid_for(n, 256), 256, 0, impl(o)->stream>>>((bf16 *)y, (const bf16 *)a, (const bf16 *)b, n);
}
static void cu_avgpool2(Ops *o, Tensor *y, const Tensor *x, int R, int C) {
    GRAPH_SKIP(impl(o), y, x, R, C);
    size_t n = (size_t)R * C;
    if (n) avgpool2_kernel<<<grid_for(n, 256), 256, 0, impl(o)->stream>>>((bf16 *)y, (const bf16 *)x, R, C);
}

// One block per row: rows are independent when no destination repeats (gathers, the audio merge).
__global__ void copy_rows_kernel(bf16 *dst, const int *dst_idx, const bf16 *src, const int *src_idx, int C) {
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
__global__ void __launch_bounds__(CR_THREADS)
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

static void cu_copy_rows(Ops *o, Tensor *dst, const int *dst_idx, const Tensor *src, const int *src_idx, int n,
                         int C, int accumulate) {
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
__global__ void swiglu_kernel(bf16 *y, const bf16 *gu, int FF, size_t n) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
        const size_t t = i / FF, j = i % FF;
        const float a = __bfloat162float(gu[t * 2 * FF + j]);
        y[i] = __float2bfloat16(a / (1.0f + expf(-a)) * __bfloat162float(gu[t * 2 * FF + FF + j]));
    }
}

static void cu_swiglu(Ops *o, Tensor *y, const Tensor *gu, int T, int FF) {
    GRAPH_SKIP(impl(o), y, gu, T, FF);
    const size_t n = (size_t)T * FF;
    if (n) swiglu_kernel<<<grid_for(n, 256), 256, 0, impl(o)->stream>>>((bf16 *)y, (const bf16 *)gu, FF, n);
}

// From qkv[T, Q + 2 KV]: q with RoPE -> q[T, Q]; k with RoPE and v -> cache row kv_row[t]. Element i of a
// row's work is a rotation pair of a q head (i < H * half), of a k head (next KVH * half), else a v
// element. The rotation is rope_kernel's.
__global__ void qkv_rope_cache_kernel(bf16 *q, bf16 *kc, bf16 *vc, const bf16 *qkv, const int *pos,
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
        const float inv_freq = 1.0f / powf(theta, (float)(2 * d) / (float)hd);
        float sn, cs;
        sincosf(inv_freq * (float)pos[t], &sn, &cs);
        const float a = __bfloat162float(x[d]), b = __bfloat162float(x[d + half]);
        y[d] = __float2bfloat16(a * cs - b * sn);
        y[d + half] = __float2bfloat16(b * cs + a * sn);
    }
}

static void cu_qkv_rope_cache(Ops *o, Tensor *q, Tensor *kc, Tensor *vc, const Tensor *qkv, const int *pos,
                              const int *kv_row, int T, int H, int KVH, int hd, float theta) {
    GRAPH_SKIP(impl(o), q, kc, vc, qkv, pos, kv_row, T, H, KVH, hd);
    const size_t n = (size_t)T * ((size_t)(H + KVH) * (hd / 2) + (size_t)KVH * hd);
    if (n)
        qkv_rope_cache_kernel<<<grid_for(n, 256), 256, 0, impl(o)->stream>>>(
            (bf16 *)q, (bf16 *)kc, (bf16 *)vc, (const bf16 *)qkv, pos, kv_row, T, H, KVH, hd, theta);
}

// ---------------------------------------------------------------- attention

// Work list: an item is up to ATT_MAXV / group query rows, all seeing the same prefix keys; a block
// handles one item for one kv head, so the prefix tiles it loads serve every row and every query head of
// the GQA group. Rows of one segment share their own keys (a "run"); a decode step packs the G one-row
// segments of a group into one item, reading the prompt's keys once for all samples. When items are too
// few to fill the GPU (decode), the prefix is split over grid.z blocks whose partial softmax states
// (unnormalised output, max, sum) a second kernel merges, as in flash-decoding.
enum { ATT_KT = 32, ATT_VPW = 4, ATT_MAXV = 64, ATT_MAXD = 128, ATT_MIN_THREADS = 256, ATT_MAX_SPLIT = 32 };

// Loads key/value rows base + j, j < nk, of kv head kvh into the shared tiles as fp32; 16-byte loads
// when rows are 8-element aligned (vec8).
__device__ void att_load_tile(float *Ks, float *Vs, const bf16 *k, const bf16 *v, int base, int nk, int KVH, int kvh,
                              int hd, int vec8) {
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
__device__ void att_tile(const float *Qs, const float *Ks, const float *Vs, int hd, int nk, float scale, int warp,
                         const int *active, const int *vis, float (*o)[DPL], float *m, float *l) {
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
__global__ void attention_kernel(bf16 *out, float *lse, float *part, const bf16 *q, const bf16 *k, const bf16 *v,
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
__global__ void attention_merge_kernel(bf16 *out, float *lse, const float *part, const AttRow *rows, int H, int hd,
                                       int split, int nq) {
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

// Decode fast path (short runs whose items hold few query vectors, head_dim 64 or 128): a block of
// DA_WARPS warps takes up to NV query vectors of one item for one kv head (grid.x: item x chunk of NV
// vectors) and a range of that item's key tiles (grid.z: split); tiles are the prefix's 32-key tiles
// then each run's own keys. A warp owns whole tiles: it stages the tile's keys as bf16 in its own shared
// rows with 16-byte coalesced loads, scores all NV vectors with one key per lane (the queries are
// broadcast from shared memory), keeps an online softmax per vector and adds P.V with each value row
// read once from global memory for all NV vectors (lane: HD / 32 dims). The warps' states are combined
// in the block, and splits are merged by attention_merge_kernel as above. Every key row is thus read
// once per (kv head, chunk), and a decode step's work spreads over kv heads x splits blocks.
enum { DA_WARPS = 4, DA_KT = 32, DA_VB = 16 };

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
__device__ int da_own_tile(const AttRow *rs, int rlo, int rhi, int u, int *ra, int *rb, int *t0) {
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
__device__ void da_tile(const float *Qs, bf16 *Ks, float *Ps, const bf16 *k, const bf16 *v, int base, int nk,
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

// part (split > 1): states as attention_kernel's. nchunk: chunks of NV vectors per item; tpb: tiles per split.
template <int HD, int NV>
__global__ void __launch_bounds__(32 * DA_WARPS)
    decode_attention_kernel(bf16 *out, float *lse, float *part, const bf16 *q, const bf16 *k, const bf16 *v,
                            const AttRow *rows, const AttItem *items, int H, int KVH, float scale, int nq,
                            int nchunk, int tpb) {
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


// Tensor-core path for runs of many query rows (prefill, the encoder, training groups): a block takes
// 64 rows of one segment for one head; each of its 4 warps owns 16 rows. Per 64-key tile, S = Q K^T and
// O += P V are bf16 WMMA products with fp32 accumulation; the online softmax (fp32 max/sum per row, two
// lanes a row) rescales the warp's fp32 output tile in shared memory between the two products.
enum { FA_BQ = 64, FA_BK = 64, FA_WARPS = 4 };

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
__device__ void fa_load(bf16 *t, const bf16 *src, const AttRow *rs, int base, int n, int stride, int head) {
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
__global__ void __launch_bounds__(128) flash_kernel(bf16 *out, float *lse, const bf16 *q, const bf16 *k,
                                                    const bf16 *v, const AttRow *rows, const AttItem *items, int H,
                                                    int KVH, float scale) {
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

// Shared memory of attention_kernel for items of up to qcap query vectors: a decode step's few vectors
// leave room for more resident blocks.
static size_t att_smem(int hd, int qcap) {
    return ((size_t)qcap * hd + (size_t)ATT_KT * (hd + 1) + (size_t)ATT_KT * hd) * 4;
}

// Host work lists of segs (see attention_kernel and flash_kernel) and their sizes in a->.
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
        for (int ra = it->row0, rb; ra < it->row0 + it->nrows; ra = rb) {  // runs as da_own_tile counts them
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

static void cu_attention(Ops *o, Tensor *out, float *lse, const Tensor *q, const Tensor *k, const Tensor *v,
                         const AttnSeg *segs, int nseg, int H, int KVH, int hd, float scale) {
    Cuda *c = impl(o);
    if (nseg <= 0) return;
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
    const int flash = (hd == 32 || hd == 64 || hd == 128) &&
                      ((uintptr_t)q | (uintptr_t)k | (uintptr_t)v) % 16 == 0 && a->n_rows >= 16 * nseg;
    const int vec8 = hd % 8 == 0 && ((uintptr_t)k | (uintptr_t)v) % 16 == 0;
    // decode path (decode_attention_kernel) for items of few vectors: chunks of dnv vectors re-read an
    // item's keys per chunk, so it takes items of at most `group` chunks (no more key bytes than MHA)
    const int dnv = a->max_vec <= 8 ? 8 : 16, nchunk = (a->max_vec + dnv - 1) / dnv;
    const int fast = !flash && !c->decode_old && vec8 && (hd == 64 || hd == 128) && nchunk <= (group > 1 ? group : 1);
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
    GRAPH_SKIP(c, out, lse, q, k, v, H, KVH, hd, flash, a->n_fitems, a->n_items, a->n_rows, a->nq, split, threads,
               vpw, fast, nchunk, tpb, dnv);
    if (flash) {
        const dim3 grid(a->n_fitems, H);
        const AttItem *fi = (const AttItem *)a->fitems;
        if (!c->flash_old && flash_fwd_supports(hd) && (uintptr_t)out % 4 == 0)  // it stores bf16 pairs
            flash_fwd_run(ob, lse, qb, kb, vb, rows, fi, a->n_fitems, H, KVH, hd, scale, c->stream);
        else if (hd == 32)
            flash_kernel<32><<<grid, 32 * FA_WARPS, FaSmem<32>::bytes, c->stream>>>(ob, lse, qb, kb, vb, rows, fi, H,
                                                                                     KVH, scale);
        else if (hd == 64)
            flash_kernel<64><<<grid, 32 * FA_WARPS, FaSmem<64>::bytes, c->stream>>>(ob, lse, qb, kb, vb, rows, fi, H,
                                                                                     KVH, scale);
        else
            flash_kernel<128><<<grid, 32 * FA_WARPS, FaSmem<128>::bytes, c->stream>>>(ob, lse, qb, kb, vb, rows, fi,
                                                                                       H, KVH, scale);
        CUDA_CHECK(cudaGetLastError());
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
        const dim3 grid(a->n_items * nchunk, KVH, split);
#define DA_LAUNCH(HD, NV)                                                                                   \
    decode_attention_kernel<HD, NV><<<grid, 32 * DA_WARPS, DaSmem<HD, NV>::bytes, c->stream>>>( \
        ob, lse, part, qb, kb, vb, rows, items, H, KVH, scale, a->nq, nchunk, tpb)
        if (hd == 64 && dnv == 8) DA_LAUNCH(64, 8);
        else if (hd == 64) DA_LAUNCH(64, 16);
        else if (dnv == 8) DA_LAUNCH(128, 8);
        else DA_LAUNCH(128, 16);
#undef DA_LAUNCH
        CUDA_CHECK(cudaGetLastError());
    } else {
        const dim3 grid(a->n_items, KVH, split);
        const int qcap = threads / 32 * vpw;  // vectors the warps cover
        const size_t sh = att_smem(hd, qcap);
#define ATT_LAUNCH(DPL, VPW)                                                                          \
    attention_kernel<DPL, VPW><<<grid, threads, sh, c->stream>>>(ob, lse, part, qb, kb, vb, rows, items, H, \
                                                                 KVH, hd, scale, vec8, a->nq, qcap)
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
    }
    if (split > 1)
        attention_merge_kernel<<<dim3(a->n_rows, H), 128, 0, c->stream>>>(ob, lse, part, rows, H, hd, split, a->nq);
    CUDA_CHECK(cudaGetLastError());
}

// ---------------------------------------------------------------- backward

// Column sums (parameter gradients of biases and norm weights) go in two deterministic steps: blocks
// each own a slice of rows and write fp32 partial sums [nb, N] to the backend's fp32 scratch, then one
// finishing pass adds the nb partials, in block order, to the bf16 gradient once. The stream orders
// these uses of the scratch after any upload_act/download_act staging through it.
static float *part_scratch(Cuda *c, size_t n) {
    if (n > c->scratch_n) fatal("ops_cuda: %zu fp32 partial sums exceed the %zu-float scratch", n, c->scratch_n);
    return c->scratch;
}

// dst[j] += sum_b part[b * N + j], b in order.
__global__ void colsum_finish_kernel(bf16 *dst, const float *part, int nb, int N) {
    const int j = blockIdx.x * blockDim.x + threadIdx.x;
    if (j >= N) return;
    float s = 0.0f;
    for (int b = 0; b < nb; b++) s += part[(size_t)b * N + j];
    dst[j] = __float2bfloat16(__bfloat162float(dst[j]) + s);
}

enum { BG_WARPS = 8, BG_COLS = 64 };

// Block (x: 64 columns, y: a slice of rows); each warp sums every BG_WARPS-th row of the slice, a lane
// two columns 32 apart (coalesced 64-byte row reads), then the warps' sums meet in shared memory.
__global__ void __launch_bounds__(BG_WARPS * 32) bias_grad_kernel(float *part, const bf16 *dy, int M, int N) {
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
static void cu_bias_grad(Ops *o, Tensor *db, const Tensor *dy, int M, int N) {
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
__global__ void col2im_kernel(bf16 *dx, const bf16 *dcols, int C, int Tin, int sc, int st, int K, int stride,
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

static void cu_col2im(Ops *o, Tensor *dx, const Tensor *dcols, int C, int Tin, int sc, int st, int K, int stride,
                      int pad, int Tout) {
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
__global__ void norm_bwd_kernel(bf16 *dx, float *part, const bf16 *dy, const bf16 *x, const bf16 *w,
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

static void cu_layernorm_bwd(Ops *o, Tensor *dx, Tensor *dw, Tensor *db, const Tensor *dy, const Tensor *x,
                             const Tensor *w, const float *mean, const float *rstd, int T, int C) {
    norm_bwd(o, 1, dx, dw, db, dy, x, w, mean, rstd, T, C);
}

static void cu_rmsnorm_bwd(Ops *o, Tensor *dx, Tensor *dw, const Tensor *dy, const Tensor *x, const Tensor *w,
                           const float *rstd, int T, int C) {
    norm_bwd(o, 0, dx, dw, NULL, dy, x, w, NULL, rstd, T, C);
}

// Element-wise backward ops read every input of element i before writing, so dx may alias dy.
__global__ void gelu_bwd_kernel(bf16 *dx, const bf16 *dy, const bf16 *x, size_t n) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
        const float v = __bfloat162float(x[i]);
        const float cdf = 0.5f * (1.0f + erff(v * 0.70710678118654752f));
        const float pdf = 0.3989422804014327f * expf(-0.5f * v * v);
        dx[i] = __float2bfloat16(__bfloat162float(dy[i]) * (cdf + v * pdf));
    }
}

__global__ void silu_mul_bwd_kernel(bf16 *dg, bf16 *du, const bf16 *dy, const bf16 *g, const bf16 *u, size_t n) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
        const float a = __bfloat162float(g[i]), b = __bfloat162float(u[i]), d = __bfloat162float(dy[i]);
        const float sig = 1.0f / (1.0f + expf(-a));
        du[i] = __float2bfloat16(d * a * sig);
        dg[i] = __float2bfloat16(d * b * sig * (1.0f + a * (1.0f - sig)));
    }
}

__global__ void avgpool2_bwd_kernel(bf16 *dx, const bf16 *dy, int R, int C) {
    const size_t n = (size_t)R * C;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
        const size_t r = i / C, c = i % C;
        const bf16 h = __float2bfloat16(__bfloat162float(dy[i]) * 0.5f);
        dx[2 * r * C + c] = h;
        dx[(2 * r + 1) * C + c] = h;
    }
}

static void cu_gelu_bwd(Ops *o, Tensor *dx, const Tensor *dy, const Tensor *x, size_t n) {
    if (n)
        gelu_bwd_kernel<<<grid_for(n, 256), 256, 0, impl(o)->stream>>>((bf16 *)dx, (const bf16 *)dy,
                                                                       (const bf16 *)x, n);
}
static void cu_silu_mul_bwd(Ops *o, Tensor *dg, Tensor *du, const Tensor *dy, const Tensor *g, const Tensor *u,
                            size_t n) {
    if (n)
        silu_mul_bwd_kernel<<<grid_for(n, 256), 256, 0, impl(o)->stream>>>(
            (bf16 *)dg, (bf16 *)du, (const bf16 *)dy, (const bf16 *)g, (const bf16 *)u, n);
}
static void cu_avgpool2_bwd(Ops *o, Tensor *dx, const Tensor *dy, int R, int C) {
    size_t n = (size_t)R * C;
    if (n) avgpool2_bwd_kernel<<<grid_for(n, 256), 256, 0, impl(o)->stream>>>((bf16 *)dx, (const bf16 *)dy, R, C);
}

// In place over one chunk of rows: x = dlp * (onehot(tgt) - exp(x - lse)), in fp32, rounded once (the
// target element too). Blocks (x: a span of the row, y: rows); R*V*4 bytes (read + write).
__global__ void logprob_bwd_kernel(bf16 *logits, const float *lse, const int *tgt, const float *dlp, int R, int V) {
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

static void cu_logprob_bwd(Ops *o, Tensor *logits, const float *lse, const int *tgt, const float *dlp, int R,
                           int V) {
    Cuda *c = impl(o);
    if (R <= 0 || V <= 0) return;
    int nx = (4 * c->n_sm + R - 1) / R, vx = (V + 255) / 256;
    nx = nx < vx ? nx : vx;
    logprob_bwd_kernel<<<dim3(nx, R < 65535 ? R : 65535), 256, 0, c->stream>>>((bf16 *)logits, lse, tgt, dlp, R,
                                                                                 V);
}

// The flash backward lives in attention_bwd.cu.
static void cu_attention_bwd(Ops *o, Tensor *dq, Tensor *dk, Tensor *dv, const Tensor *dout, const Tensor *out,
                             const float *lse, const Tensor *q, const Tensor *k, const Tensor *v, const AttnSeg *segs,
                             int nseg, int H, int KVH, int hd, float scale) {
    Cuda *c = impl(o);
    attn_bwd_run(&c->attn_bwd, (bf16 *)dq, (bf16 *)dk, (bf16 *)dv, (const bf16 *)dout, (const bf16 *)out, lse,
                 (const bf16 *)q, (const bf16 *)k, (const bf16 *)v, segs, nseg, H, KVH, hd, scale, c->n_sm, c->stream);
}

// ---------------------------------------------------------------- Philox, fills and sampling

// Philox4x32-10 (Salmon et al. 2011): counter (i, 0, key_hi, key_lo-mixed) under a seed key.
__device__ uint4 philox(uint4 ctr, uint2 key) {
    for (int r = 0; r < 10; r++) {
        const uint32_t hi0 = __umulhi(0xD2511F53u, ctr.x), lo0 = 0xD2511F53u * ctr.x;
        const uint32_t hi1 = __umulhi(0xCD9E8D57u, ctr.z), lo1 = 0xCD9E8D57u * ctr.z;
        ctr = make_uint4(hi1 ^ ctr.y ^ key.x, lo1, hi0 ^ ctr.w ^ key.y, lo0);
        key.x += 0x9E3779B9u, key.y += 0xBB67AE85u;
    }
    return ctr;
}

__device__ float u01(uint32_t x) { return ((x >> 8) + 0.5f) * (1.0f / 16777216.0f); }  // (0, 1)

__global__ void fill_kernel(bf16 *x, size_t n, float std, float value, uint2 key, uint32_t khi, uint32_t klo) {
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

__device__ uint32_t f32_key(float v) {  // unsigned order == float order
    const uint32_t u = __float_as_uint(v);
    return (u & 0x80000000u) ? ~u : u | 0x80000000u;
}
__device__ float key_f32(uint32_t k) { return __uint_as_float((k & 0x80000000u) ? k & 0x7fffffffu : ~k); }

// Block-wide reductions over SMP_THREADS threads; every thread gets the result.
__device__ double block_sum(double v, double *sh) {
    for (int off = 16; off; off >>= 1) v += __shfl_xor_sync(0xffffffffu, v, off);
    __syncthreads();
    if (threadIdx.x % 32 == 0) sh[threadIdx.x / 32] = v;
    __syncthreads();
    double t = 0;
    for (int w = 0; w < SMP_THREADS / 32; w++) t += sh[w];
    return t;
}
__device__ float block_max(float v, float *sh) {
    for (int off = 16; off; off >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, off));
    __syncthreads();
    if (threadIdx.x % 32 == 0) sh[threadIdx.x / 32] = v;
    __syncthreads();
    float t = -INFINITY;
    for (int w = 0; w < SMP_THREADS / 32; w++) t = fmaxf(t, sh[w]);
    return t;
}

__device__ int suppressed(const SampleCfg &c, int id) {
    for (int i = 0; i < c.n_suppress; i++)
        if (c.suppress[i] == id) return 1;
    return 0;
}

__global__ void __launch_bounds__(SMP_THREADS)
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

static void cu_sample_rows(Ops *o, int *ids_host, float *lp_host, const Tensor *logits, int R, int V,
                           const SamplerParams *sp, int *hist, const SampleRow *rows, uint32_t step) {
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

// ---------------------------------------------------------------- create / destroy

static void cu_destroy(Ops *o) {
    Cuda *c = impl(o);
    CUDA_CHECK(cudaStreamSynchronize(c->stream));
    for (int i = 0; i < c->n_plans; i++) {
        GemmPlan *p = &c->plans[i];
        cublasLtMatmulDescDestroy(p->desc);
        cublasLtMatrixLayoutDestroy(p->la), cublasLtMatrixLayoutDestroy(p->lb);
        cublasLtMatrixLayoutDestroy(p->lc);
    }
    for (int i = 0; i < ATT_CACHE; i++) {
        free(c->att[i].segs);
        if (c->att[i].rows) cudaFree(c->att[i].rows);
        if (c->att[i].items) cudaFree(c->att[i].items);
        if (c->att[i].fitems) cudaFree(c->att[i].fitems);
    }
    cudaFree(c->lt_ws);
    cudaFree(c->scratch);
    if (c->part) cudaFree(c->part);
    if (c->smp) cudaFree(c->smp);
    attn_bwd_free(c->attn_bwd);
    cublasLtDestroy(c->lt);
    cublasDestroy(c->blas);
    cudaStreamDestroy(c->stream);
    free(c->blk_ptr);
    free(c->blk_size);
    free(c);
    free(o);
}

extern "C" int ops_cuda_device_count(void) {
    int n = 0;
    if (cudaGetDeviceCount(&n) != cudaSuccess) {
        cudaGetLastError();  // clear the sticky "no device" error
        return 0;
    }
    return n;
}

extern "C" int ops_cuda_set_device(int index) {
    const int n = ops_cuda_device_count();
    if (n < 1) fatal("ops_cuda_set_device: no CUDA device");
    const int dev = (index % n + n) % n;
    CUDA_CHECK(cudaSetDevice(dev));
    return dev;
}

extern "C" void ops_cuda_mem_info(size_t *free_bytes, size_t *total_bytes) {
    CUDA_CHECK(cudaMemGetInfo(free_bytes, total_bytes));
}

extern "C" size_t ops_cuda_peak_bytes(const Ops *o) {
    const Cuda *c = (const Cuda *)o->impl;
    return c->peak_bytes + c->lt_ws_bytes + c->scratch_n * sizeof(float) + c->smp_bytes + attn_bwd_bytes(c->attn_bwd);
}

extern "C" void *ops_cuda_stream(const Ops *o) { return ((const Cuda *)o->impl)->stream; }

extern "C" Ops *ops_cuda_create(void) {
    if (ops_cuda_device_count() < 1) fatal("ops_cuda_create: no CUDA device");
    Cuda *c = (Cuda *)callocCheck(1, sizeof(Cuda));
    CUDA_CHECK(cudaStreamCreateWithFlags(&c->stream, cudaStreamNonBlocking));
    int dev;
    CUDA_CHECK(cudaGetDevice(&dev));
    CUDA_CHECK(cudaDeviceGetAttribute(&c->n_sm, cudaDevAttrMultiProcessorCount, dev));
    BLAS_CHECK(cublasCreate(&c->blas));
    BLAS_CHECK(cublasSetStream(c->blas, c->stream));
    BLAS_CHECK(cublasSetMathMode(c->blas, CUBLAS_DEFAULT_MATH));
    BLAS_CHECK(cublasLtCreate(&c->lt));
    c->lt_ws_bytes = (size_t)32 << 20;
    CUDA_CHECK(cudaMalloc(&c->lt_ws, c->lt_ws_bytes));
    c->scratch_n = (size_t)16 << 20;
    CUDA_CHECK(cudaMalloc((void **)&c->scratch, c->scratch_n * sizeof(float)));
    const int sh = (int)att_smem(ATT_MAXD, ATT_MAXV);
    CUDA_CHECK(cudaFuncSetAttribute(attention_kernel<1, 1>, cudaFuncAttributeMaxDynamicSharedMemorySize, sh));
    CUDA_CHECK(cudaFuncSetAttribute(attention_kernel<2, 1>, cudaFuncAttributeMaxDynamicSharedMemorySize, sh));
    CUDA_CHECK(cudaFuncSetAttribute(attention_kernel<4, 1>, cudaFuncAttributeMaxDynamicSharedMemorySize, sh));
    CUDA_CHECK(cudaFuncSetAttribute(attention_kernel<1, ATT_VPW>, cudaFuncAttributeMaxDynamicSharedMemorySize, sh));
    CUDA_CHECK(cudaFuncSetAttribute(attention_kernel<2, ATT_VPW>, cudaFuncAttributeMaxDynamicSharedMemorySize, sh));
    CUDA_CHECK(cudaFuncSetAttribute(attention_kernel<4, ATT_VPW>, cudaFuncAttributeMaxDynamicSharedMemorySize, sh));
    CUDA_CHECK(cudaFuncSetAttribute(decode_attention_kernel<64, 8>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                    (int)DaSmem<64, 8>::bytes));
    CUDA_CHECK(cudaFuncSetAttribute(decode_attention_kernel<64, 16>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                    (int)DaSmem<64, 16>::bytes));
    CUDA_CHECK(cudaFuncSetAttribute(decode_attention_kernel<128, 8>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                    (int)DaSmem<128, 8>::bytes));
    CUDA_CHECK(cudaFuncSetAttribute(decode_attention_kernel<128, 16>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                    (int)DaSmem<128, 16>::bytes));
    c->decode_old = cuda_env_old("AQA_DECODE_ATTN");
    CUDA_CHECK(cudaFuncSetAttribute(flash_kernel<32>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                    (int)FaSmem<32>::bytes));
    CUDA_CHECK(cudaFuncSetAttribute(flash_kernel<64>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                    (int)FaSmem<64>::bytes));
    CUDA_CHECK(cudaFuncSetAttribute(flash_kernel<128>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                    (int)FaSmem<128>::bytes));
    flash_fwd_init();
    c->flash_old = cuda_env_old("AQA_FLASH");
    CUDA_CHECK(cudaFuncSetAttribute(norm_bwd_kernel<0>, cudaFuncAttributeMaxDynamicSharedMemorySize, NORM_MAX_SMEM));
    CUDA_CHECK(cudaFuncSetAttribute(norm_bwd_kernel<1>, cudaFuncAttributeMaxDynamicSharedMemorySize, NORM_MAX_SMEM));
    Ops *o = (Ops *)callocCheck(1, sizeof(Ops));
    o->name = "cuda";
    o->impl = c;
    o->destroy = cu_destroy;
    o->act_size = sizeof(bf16);
    o->alloc = cu_alloc;
    o->free = cu_free;
    o->upload = cu_upload;
    o->download = cu_download;
    o->upload_act = cu_upload_act;
    o->download_act = cu_download_act;
    o->copy = cu_copy;
    o->zero = cu_zero;
    o->sync = cu_sync;
    o->matmul = cu_matmul;
    o->im2col = cu_im2col;
    o->layernorm = cu_layernorm;
    o->rmsnorm = cu_rmsnorm;
    o->rope = cu_rope;
    o->attention = cu_attention;
    o->attention_bwd = cu_attention_bwd;
    o->gelu = cu_gelu;
    o->silu_mul = cu_silu_mul;
    o->add = cu_add;
    o->avgpool2 = cu_avgpool2;
    o->copy_rows = cu_copy_rows;
    o->logprob = cu_logprob;
    o->sample_rows = cu_sample_rows;
    o->swiglu = cu_swiglu;
    o->qkv_rope_cache = cu_qkv_rope_cache;
    o->graph_create = cu_graph_create;
    o->graph_begin = cu_graph_begin;
    o->graph_end = cu_graph_end;
    o->graph_free = cu_graph_free;
    o->bias_grad = cu_bias_grad;
    o->col2im = cu_col2im;
    o->layernorm_bwd = cu_layernorm_bwd;
    o->rmsnorm_bwd = cu_rmsnorm_bwd;
    o->gelu_bwd = cu_gelu_bwd;
    o->silu_mul_bwd = cu_silu_mul_bwd;
    o->avgpool2_bwd = cu_avgpool2_bwd;
    o->logprob_bwd = cu_logprob_bwd;
    return o;
}
