// GPU suite: the optimizer kernels (optim_cuda.h) against learner/optim.c on random data: a shard's
// gradient as the bf16 sum over 2 learners, divided by 2, clipped (clip active on some steps), three
// AdamW steps with weight decay; the squared norm, master weights, moments and the bf16 weights are
// compared (max errors printed; the kernels repeat the CPU's fp32 operations, so they should agree to
// the last bit), then the update's time at a 7B learner's shard size on this card. Exits 77 (skipped)
// without a CUDA build or a GPU.
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "test.h"
#ifdef AQA_CUDA
#include <cuda_runtime.h>

#include "model/cuda/ops_cuda.h"
#include "model/safetensors.h"
#include "optim.h"
#include "optim_cuda.h"
#include "util/log.h"
#include "util/rng.h"

static void *to_dev(const void *h, size_t bytes) {
    void *d;
    cudaMalloc(&d, bytes);
    cudaMemcpy(d, h, bytes, cudaMemcpyHostToDevice);
    return d;
}

static void test_against_cpu(void) {
    const size_t n = ((size_t)1 << 20) + 123;
    const int L = 2;
    Rng r;
    rng_init(&r, 5, 0);
    float *p = mallocCheck(n * sizeof(float)), *g = mallocCheck(n * sizeof(float));
    uint16_t *gb = mallocCheck(n * sizeof(uint16_t)), *pb = mallocCheck(n * sizeof(uint16_t));
    float *got = mallocCheck(n * sizeof(float));
    for (size_t i = 0; i < n; i++) p[i] = (float)rng_normal(&r) * 0.02f;
    AdamW cpu;
    adamw_init(&cpu, n);
    AdamWConfig cfg = {.beta1 = 0.9, .beta2 = 0.999, .eps = 1e-8, .weight_decay = 0.01};
    float *dp = to_dev(p, n * 4), *dm = to_dev(cpu.m, n * 4), *dv = to_dev(cpu.v, n * 4);
    void *dg, *dout;
    double *scratch, *dsum, sum;
    cudaMalloc(&dg, n * 2);
    cudaMalloc(&dout, n * 2);
    cudaMalloc((void **)&scratch, OPTIM_CUDA_PARTIALS * sizeof(double));
    cudaMalloc((void **)&dsum, sizeof(double));
    const double max_norm[3] = {1e9, 1.0, 0.05};  // step 1 unclipped, then clipped harder
    for (int step = 1; step <= 3; step++) {
        // the reduce-scatter's output: a bf16 sum over L learners
        for (size_t i = 0; i < n; i++) {
            gb[i] = st_f32_to_bf16((float)rng_normal(&r) * (step == 2 ? 0.01f : 0.001f) * L);
            g[i] = st_bf16_to_f32(gb[i]);
        }
        cudaMemcpy(dg, gb, n * 2, cudaMemcpyHostToDevice);
        optim_scale(g, n, 1.0 / L);
        double norm = sqrt(optim_sumsq(g, n)), clip = optim_clip_scale(norm, max_norm[step - 1]);
        if (clip < 1) optim_scale(g, n, clip);
        double lr = 1e-3 * step;
        adamw_step(&cpu, &cfg, lr, p, g);
        optim_cuda_sumsq(dg, n, 1.0f / L, scratch, dsum, 0);
        cudaMemcpy(&sum, dsum, sizeof sum, cudaMemcpyDeviceToHost);
        double gnorm = sqrt(sum);
        AdamWScalars sc = adamw_scalars(&cfg, lr, step);
        optim_cuda_adamw(&sc, dp, dm, dv, dg, 1.0f / L, optim_clip_scale(gnorm, max_norm[step - 1]), dout, n, 0);
        cudaMemcpy(got, dp, n * 4, cudaMemcpyDeviceToHost);
        double ep = cmp_err(got, p, n, 1).abs;
        cudaMemcpy(got, dm, n * 4, cudaMemcpyDeviceToHost);
        double em = cmp_err(got, cpu.m, n, 1).abs;
        cudaMemcpy(got, dv, n * 4, cudaMemcpyDeviceToHost);
        double ev = cmp_err(got, cpu.v, n, 1).abs;
        cudaMemcpy(pb, dout, n * 2, cudaMemcpyDeviceToHost);
        size_t bad_bf16 = 0;
        for (size_t i = 0; i < n; i++) bad_bf16 += pb[i] != st_f32_to_bf16(p[i]);
        printf("  step %d (clip %.3f): norm %.9g vs %.9g (rel %.1e); max abs err master %.3e m %.3e v %.3e; "
               "bf16 weights off %zu\n",
               step, clip, gnorm, norm, fabs(gnorm - norm) / norm, ep, em, ev, bad_bf16);
        CHECK(fabs(gnorm - norm) <= 1e-12 * norm);
        CHECK(ep <= 1e-7f && em <= 1e-9f && ev <= 1e-12f);
        CHECK(bad_bf16 == 0);
    }
    cudaFree(dp), cudaFree(dm), cudaFree(dv), cudaFree(dg), cudaFree(dout), cudaFree(scratch), cudaFree(dsum);
    adamw_free(&cpu);
    free(p), free(g), free(gb), free(pb), free(got);
}

// The update of a 7B learner's shard with 2 learners (8.4e9 / 2 parameters would need 35 GB here; the
// time is linear in n, so 1e9 elements are timed and the figure scaled).
static void bench_update(void) {
    const size_t n = (size_t)1000 * 1000 * 1000;
    float *dp, *dm, *dv;
    void *dg, *dout;
    double *scratch, *dsum;
    if (cudaMalloc((void **)&dp, n * 4) != cudaSuccess) {
        cudaGetLastError();
        printf("  (not enough device memory for the timing)\n");
        return;
    }
    cudaMalloc((void **)&dm, n * 4), cudaMalloc((void **)&dv, n * 4);
    cudaMalloc(&dg, n * 2), cudaMalloc(&dout, n * 2);
    cudaMalloc((void **)&scratch, OPTIM_CUDA_PARTIALS * sizeof(double)), cudaMalloc((void **)&dsum, sizeof(double));
    cudaMemset(dp, 0, n * 4), cudaMemset(dm, 0, n * 4), cudaMemset(dv, 0, n * 4), cudaMemset(dg, 0, n * 2);
    AdamWConfig cfg = adamw_config_default();
    cudaEvent_t a, b;
    cudaEventCreate(&a), cudaEventCreate(&b);
    AdamWScalars sc = adamw_scalars(&cfg, 1e-6, 1);
    optim_cuda_adamw(&sc, dp, dm, dv, dg, 0.5f, 1, dout, n, 0);  // warm-up
    cudaEventRecord(a, 0);
    for (int i = 0; i < 3; i++) {
        optim_cuda_sumsq(dg, n, 0.5f, scratch, dsum, 0);
        sc = adamw_scalars(&cfg, 1e-6, 2 + i);
        optim_cuda_adamw(&sc, dp, dm, dv, dg, 0.5f, 1, dout, n, 0);
    }
    cudaEventRecord(b, 0);
    cudaEventSynchronize(b);
    float ms;
    cudaEventElapsedTime(&ms, a, b);
    ms /= 3;
    // bytes moved: grad read twice (norm, update), master/m/v read and written, bf16 weights written
    double gb = (double)n * (2 * 2 + 3 * 8 + 2) / 1e9;
    printf("  norm + AdamW over %zu parameters: %.2f ms (%.0f GB/s); a 7B shard of 2 learners (4.2e9): ~%.0f ms\n",
           n, ms, gb / (ms / 1e3), ms * 4.2);
    CHECK(ms > 0);
    cudaFree(dp), cudaFree(dm), cudaFree(dv), cudaFree(dg), cudaFree(dout), cudaFree(scratch), cudaFree(dsum);
}

int main(void) {
    if (ops_cuda_device_count() < 1) {
        printf("no CUDA device: skipped\n");
        return 77;
    }
    ops_cuda_set_device(0);
    RUN(test_against_cpu);
    RUN(bench_update);
    return test_summary("optim_cuda");
}
#else
int main(void) {
    printf("no CUDA in this build: skipped\n");
    return 77;
}
#endif
