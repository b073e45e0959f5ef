// bench_features: throughput of the audio front end, in clips per second:
//   features        mel_compute on 480000 samples (all OpenMP threads, then 1 thread), and on the first
//                   48000 (a 3 s clip, the main job's: only its own frames are transformed, on one thread)
//   load+features   audio_load of a 30 s 44.1 kHz 16-bit WAV (read, soxr to 16 kHz) + mel_compute
// Usage: bench_features [ITERATIONS] (default 20). Run by `meson test --benchmark` or directly.
#include <math.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

#include "audio/audio.h"
#include "audio/mel.h"
#include "util/rng.h"

#ifdef _OPENMP
#include <omp.h>
#endif

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

// 30 s at rate: a few partials under a slow envelope plus noise, so no frame is trivially silent.
static float *bench_clip(int rate, int64_t n) {
    float *x = mallocCheck((size_t)n * sizeof(float));
    for (int64_t i = 0; i < n; i++) {
        double t = (double)i / rate;
        double env = 0.4 + 0.3 * sin(2.0 * M_PI * 0.3 * t);
        x[i] = (float)(env * (0.5 * sin(2.0 * M_PI * 220.0 * t) + 0.2 * sin(2.0 * M_PI * 1760.0 * t)) +
                       0.02 * (rng_uniform_at(7, (uint32_t)i, 0, 0, 0) - 0.5f));
    }
    return x;
}

static double bench_mel(const MelContext *ctx, const float *x, int64_t n, int iters, float *feats, int32_t *mask) {
    mel_compute(ctx, x, n, feats, mask);  // warm-up (page faults, FFTW twiddles)
    double t0 = now_s();
    for (int i = 0; i < iters; i++) mel_compute(ctx, x, n, feats, mask);
    return iters / (now_s() - t0);
}

// audio_load of path (read + resample to 16 kHz) then mel_compute, repeated.
static double bench_load(const MelContext *ctx, const char *path, int iters, float *feats, int32_t *mask) {
    Err e;
    double t0 = now_s();
    for (int i = 0; i < iters; i++) {
        Audio a;
        if (audio_load(path, AUDIO_MONO_FIRST, &a, &e) != 0) fatal("%s", e.msg);
        mel_compute(ctx, a.samples, a.n, feats, mask);
        audio_free(&a);
    }
    return iters / (now_s() - t0);
}

int main(int argc, char **argv) {
    int iters = argc > 1 ? atoi(argv[1]) : 20;
    if (iters <= 0) fatal("usage: %s [ITERATIONS > 0]", argv[0]);
    MelContext *ctx = mel_context_create();
    float *feats = mallocCheck(sizeof(float) * MEL_N_MELS * MEL_FRAMES);  // [128, 3000]
    int32_t mask[MEL_FRAMES];
    float *x = bench_clip(AUDIO_SAMPLE_RATE, AUDIO_MAX_SAMPLES);  // [480000]
    const char *tmp = getenv("AQA_TMP") ? getenv("AQA_TMP") : "/tmp";
    char path[4096];
    snprintf(path, sizeof path, "%s/bench_features_44k.wav.%ld", tmp, (long)getpid());
    int64_t n44 = 30 * 44100;
    float *y = bench_clip(44100, n44);  // [1323000]
    Err e;
    if (audio_write_wav(path, y, n44, 1, 44100, AUDIO_WAV_PCM16, &e) != 0) fatal("%s", e.msg);
    int threads = 1;
#ifdef _OPENMP
    threads = omp_get_max_threads();
#endif
    printf("bench_features: 30 s clips, %d iterations, clips/s\n", iters);
    printf("  features, %d thread(s):                         %8.1f\n", threads,
           bench_mel(ctx, x, AUDIO_MAX_SAMPLES, iters, feats, mask));
    printf("  features of a 3 s clip:                         %8.1f\n",
           bench_mel(ctx, x, 3 * AUDIO_SAMPLE_RATE, iters, feats, mask));
    printf("  load 44.1 kHz WAV + resample + features, %d:    %8.1f\n", threads,
           bench_load(ctx, path, iters, feats, mask));
#ifdef _OPENMP
    if (threads > 1) {
        omp_set_num_threads(1);
        printf("  features, 1 thread:                             %8.1f\n",
               bench_mel(ctx, x, AUDIO_MAX_SAMPLES, iters, feats, mask));
        printf("  load 44.1 kHz WAV + resample + features, 1:    %8.1f\n",
               bench_load(ctx, path, iters, feats, mask));
        omp_set_num_threads(threads);
    }
#endif
    unlink(path);
    free(y);
    free(x);
    free(feats);
    mel_context_free(ctx);
    return 0;
}
