// bench_host_adamw: parameters per second of the offloaded optimizer's host AdamW (adamw_step_bf16, the
// piece zero_cuda runs per bucket with optim.offload=host): bf16 gradient sum in, fp32 master weights and
// moments updated, bf16 weights out, OpenMP threads = the cores (OMP_NUM_THREADS to change). The state
// is first touched by the same static thread schedule, as in a long run. The limit printed beside it is
// the host's copy bandwidth measured in the same process with the same threads (28 bytes move per
// parameter). tests/bench/torch_adamw.py is
// the baseline (torch.optim.AdamW, foreach, fp32, CPU) over the same count; run both on one machine:
//   build/tests/bench/bench_host_adamw [--params N] [--reps R] [--json OUT]
//   python3 tests/bench/torch_adamw.py [--params N] [--reps R] --ours OUT
#include <jansson.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench_common.h"
#include "model/safetensors.h"
#include "optim.h"

static const char *usage = "usage: bench_host_adamw [--params N] [--reps R] [--json OUT]\n";

int main(int argc, char **argv) {
    int n_int = 100000000, reps = 5;
    const char *json = NULL;
    Err e;
    for (int i = 1; i < argc; i++) {
        const char *f = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        int rc = 0;
        if (!strcmp(f, "--params") && v) rc = bench_parse_int(f, v, 1, 1 << 30, &n_int, &e), i++;
        else if (!strcmp(f, "--reps") && v) rc = bench_parse_int(f, v, 1, 1000, &reps, &e), i++;
        else if (!strcmp(f, "--json") && v) json = v, i++;
        else rc = err_set(&e, "unknown or incomplete option %s", f);
        if (rc) {
            fprintf(stderr, "bench_host_adamw: %s\n%s", e.msg, usage);
            return 2;
        }
    }
    const size_t n = (size_t)n_int;
    float *master = mallocCheck(n * sizeof(float)), *m = mallocCheck(n * sizeof(float));
    float *v = mallocCheck(n * sizeof(float));
    uint16_t *g = mallocCheck(n * 2), *out = mallocCheck(n * 2);
#pragma omp parallel for schedule(static)
    for (size_t i = 0; i < n; i++) {
        master[i] = (float)(i % 1000) * 1e-3f - 0.5f, m[i] = 0, v[i] = 0;
        g[i] = st_f32_to_bf16((float)((i * 2654435761u) % 2001) * 1e-5f - 0.01f), out[i] = 0;
    }
    double *t = mallocCheck((size_t)reps * sizeof(double));
    // The limit: this machine's copy bandwidth with the same threads and schedule (master into m, each
    // thread its static share; bytes read + written), then m zeroed again as the update expects.
    for (int r = -1; r < reps; r++) {
        double t0 = bench_now();
#pragma omp parallel
        {
            size_t k = (size_t)omp_get_num_threads(), j = (size_t)omp_get_thread_num();
            size_t lo = n * j / k, hi = n * (j + 1) / k;
            memcpy(m + lo, master + lo, (hi - lo) * sizeof(float));
        }
        if (r >= 0) t[r] = bench_now() - t0;
    }
    const double copy_gbs = (double)n * 4 * 2 / bench_median(t, reps) / 1e9;
#pragma omp parallel for schedule(static)
    for (size_t i = 0; i < n; i++) m[i] = 0;
    AdamWConfig cfg = adamw_config_default();
    for (int r = -1; r < reps; r++) {  // r = -1: warm-up
        AdamWScalars s = adamw_scalars(&cfg, 1e-6, r + 2);
        double t0 = bench_now();
        adamw_step_bf16(&s, master, m, v, g, 0.125f, 0.5, out, n);
        if (r >= 0) t[r] = bench_now() - t0;
    }
    double sec = bench_median(t, reps), rate = (double)n / sec;
    // bytes moved per element: g and out bf16, master, m, v read and written fp32
    const double bytes_per = 2 + 2 + 3 * 4 * 2, gbs = (double)n * bytes_per / sec / 1e9;
    const double roof = copy_gbs * 1e9 / bytes_per;  // params/s if the update ran at copy bandwidth
    int threads = omp_get_max_threads();
    printf("host AdamW (adamw_step_bf16): %zu params, %d threads: %.4f s per step, %.3e params/s, %.1f GB/s\n", n,
           threads, sec, rate, gbs);
    printf("limit: measured copy bandwidth %.1f GB/s (same threads) / %.0f bytes a parameter = %.3e params/s: "
           "%.0f%% of it\n", copy_gbs, bytes_per, roof, 100 * rate / roof);
    if (json) {
        json_t *root = json_pack("{s:I, s:i, s:f, s:f, s:f}", "params", (json_int_t)n, "threads", threads, "seconds",
                                 sec, "params_per_s", rate, "copy_gb_per_s", copy_gbs);
        if (json_dump_file(root, json, JSON_INDENT(1))) fatal("bench_host_adamw: cannot write %s", json);
        json_decref(root);
    }
    free(master), free(m), free(v), free(g), free(out), free(t);
    return 0;
}
