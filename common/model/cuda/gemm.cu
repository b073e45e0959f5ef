// gemm.cu: GEMMs of the CUDA backend through cuBLASLt, bf16 in and out with fp32 accumulation and the
// bias fused as an epilogue. Plans are cached per shape (a decode step pays no heuristic search) and,
// made outside a graph capture, tuned by timing the heuristic's candidates; cublasGemmEx is the fallback
// where cuBLASLt has no plan.
#include <math.h>
#include <string.h>

#include "model/cuda/ops_cuda_internal.h"

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

void gemm_plans_free(Cuda *c) {
    for (int i = 0; i < c->n_plans; i++) {
        GemmPlan *p = &c->plans[i];
        cublasLtMatmulDescDestroy(p->desc);
        cublasLtMatrixLayoutDestroy(p->la), cublasLtMatrixLayoutDestroy(p->lb);
        cublasLtMatrixLayoutDestroy(p->lc);
    }
    c->n_plans = 0;
}

static GemmPlan *plan_get(Cuda *c, int M, int N, int K, int ta, int tb, int bias, int beta, int align, const void *A,
                          const void *B, const void *biasp) {
    for (int i = 0; i < c->n_plans; i++) {
        GemmPlan *p = &c->plans[i];
        if (p->M == M && p->N == N && p->K == K && p->ta == ta && p->tb == tb && p->bias == bias &&
            p->beta == beta && p->align == align)
            return p;
    }
    if (c->n_plans == PLAN_CAP) gemm_plans_free(c);  // a workload with this many shapes is unusual: start over
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

static __global__ void add_bias_kernel(bf16 *C, const bf16 *bias, size_t MN, int N) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < MN; i += (size_t)gridDim.x * blockDim.x)
        C[i] = __float2bfloat16(__bfloat162float(C[i]) + __bfloat162float(bias[i % N]));
}

void cu_matmul(Ops *o, Tensor *C, const Tensor *A, const Tensor *B, const Tensor *bias, int M, int N, int K, int ta,
               int tb, int accumulate) {
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
