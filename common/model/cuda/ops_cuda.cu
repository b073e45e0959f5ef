// ops_cuda.cu: the CUDA backend of ops.h: creation and the table of its ops, each defined in the file of
// its concern (see ops_cuda_internal.h). Tensors are bf16; every reduction (GEMM, norms, softmax,
// log-sum-exp) accumulates in fp32 and the saved statistics (mean, rstd, lse) are fp32. Everything runs in
// order on one stream. Also the CUDA and cuBLAS check helpers (cuda_check.h).
#include <stdlib.h>

#include "model/cuda/ops_cuda_internal.h"

void cuda_check_at(const char *file, int line, cudaError_t rc, const char *what) {
    if (rc != cudaSuccess) fatal_at(file, line, "CUDA: %s: %s", what, cudaGetErrorString(rc));
}

void blas_check_at(const char *file, int line, int status, const char *what) {
    if (status != 0)
        fatal_at(file, line, "cuBLAS: %s: %s (status %d)", what, cublasGetStatusString((cublasStatus_t)status), status);
}

static void cu_destroy(Ops *o) {
    Cuda *c = impl(o);
    CUDA_CHECK(cudaStreamSynchronize(c->stream));
    gemm_plans_free(c);
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
    const cudaError_t rc = cudaGetDeviceCount(&n);
    if (rc == cudaSuccess) return n;
    // no GPU, no driver (or only the driver's stub library): a machine without CUDA, not a failure
    if (rc == cudaErrorNoDevice || rc == cudaErrorInsufficientDriver || rc == cudaErrorStubLibrary) {
        cudaGetLastError();  // clear the error, so later checks do not report it
        return 0;
    }
    fatal("CUDA: cudaGetDeviceCount: %s (%s)", cudaGetErrorString(rc), cudaGetErrorName(rc));
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
    attention_init();
    decode_attention_init();
    flash_fwd_init();
    backward_init();
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
