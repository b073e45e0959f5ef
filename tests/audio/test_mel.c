// Tests of common/audio/mel: filter-bank check values (qwen2-audio.md 4.5), frame mask and token count,
// silence, 1 sample, short/30 s/over-30 s clips against a float64 reference written independently here
// (explicit reflect-padded array, naive DFT), and bit-identical results for any thread count.
#include <pthread.h>

#include "test.h"
#include "audio/mel.h"
#include "feature_signals.h"

#ifdef _OPENMP
#include <omp.h>
#endif

static MelContext *ctx;

static void test_filters(void) {
    CHECK_NEAR(mel_scale_from_hz(8000.0), 45.245640471924965, 1e-12);
    CHECK_NEAR(mel_scale_to_hz(45.245640471924965 / 129.0), 23.38275993, 1e-8);
    CHECK_NEAR(mel_scale_to_hz(mel_scale_from_hz(3456.7)), 3456.7, 1e-9);
    const float *W = mel_filters(ctx);  // [201, 128]
    CHECK_NEAR(W[1 * MEL_N_MELS + 0], 0.012373986332636972, 1e-9);
    double sum = 0.0;
    int lo[MEL_N_MELS], hi[MEL_N_MELS], negative = 0;
    for (int m = 0; m < MEL_N_MELS; m++) {
        lo[m] = -1;
        hi[m] = -1;
        for (int b = 0; b < MEL_N_BINS; b++) {
            float w = W[b * MEL_N_MELS + m];
            negative |= w < 0.0f;
            sum += w;
            if (w > 0.0f && lo[m] < 0) lo[m] = b;
            if (w > 0.0f) hi[m] = b;
        }
    }
    CHECK(!negative);
    CHECK_NEAR(sum, 3.1909855285406987, 1e-6);
    CHECK_INT(lo[0], 1);
    CHECK_INT(hi[0], 1);
    CHECK_INT(lo[1], 1);
    CHECK_INT(hi[1], 1);
    CHECK_INT(lo[127], 191);
    CHECK_INT(hi[127], 199);
}

// float64 log10 mel of every frame (before the max-8 floor) into lg [128, 3000]; returns the maximum.
static double ref_log_mel(const float *x, int64_t n, double *lg) {
    static double cosv[MEL_N_FFT], sinv[MEL_N_FFT];
    for (int k = 0; k < MEL_N_FFT; k++) {
        cosv[k] = cos(2.0 * M_PI * k / MEL_N_FFT);
        sinv[k] = sin(2.0 * M_PI * k / MEL_N_FFT);
    }
    enum { N = AUDIO_MAX_SAMPLES, P = MEL_N_FFT / 2 };
    double *pad = callocCheck(N + 2 * P, sizeof(double));  // [480400] reflect-padded 30 s clip
    for (int64_t i = 0; i < N && i < n; i++) pad[P + i] = x[i];
    for (int k = 1; k <= P; k++) {
        pad[P - k] = pad[P + k];
        pad[P + N - 1 + k] = pad[P + N - 1 - k];
    }
    const float *W = mel_filters(ctx);
    double top = -INFINITY;
    for (int t = 0; t < MEL_FRAMES; t++) {
        double fr[MEL_N_FFT], power[MEL_N_BINS];
        int any = 0;
        for (int k = 0; k < MEL_N_FFT; k++) {
            fr[k] = pad[t * AUDIO_HOP + k] * (0.5 - 0.5 * cosv[k]);
            any |= fr[k] != 0.0;
        }
        for (int b = 0; b < MEL_N_BINS; b++) {
            double re = 0.0, im = 0.0;
            for (int k = 0; any && k < MEL_N_FFT; k++) {
                re += fr[k] * cosv[(b * k) % MEL_N_FFT];
                im -= fr[k] * sinv[(b * k) % MEL_N_FFT];
            }
            power[b] = re * re + im * im;
        }
        for (int m = 0; m < MEL_N_MELS; m++) {
            double s = 0.0;
            for (int b = 0; b < MEL_N_BINS; b++) s += (double)W[b * MEL_N_MELS + m] * power[b];
            double v = log10(s > 1e-10 ? s : 1e-10);
            lg[m * MEL_FRAMES + t] = v;
            if (v > top) top = v;
        }
    }
    free(pad);
    return top;
}

// Max |features - float64 reference| over all 128 x 3000 values.
static double ref_max_error(const float *x, int64_t n, const float *features) {
    double *lg = mallocCheck(sizeof(double) * MEL_N_MELS * MEL_FRAMES);
    double top = ref_log_mel(x, n, lg);
    double worst = 0.0;
    for (int i = 0; i < MEL_N_MELS * MEL_FRAMES; i++) {
        double v = (fmax(lg[i], top - 8.0) + 4.0) / 4.0;
        worst = fmax(worst, cmp_diff(v, features[i]));
    }
    free(lg);
    return worst;
}

static float feats[MEL_N_MELS * MEL_FRAMES];
static int32_t mask[MEL_FRAMES];

static int mask_sum(void) {
    int s = 0;
    for (int t = 0; t < MEL_FRAMES; t++) s += mask[t];
    return s;
}

static void test_silence(void) {
    float *x = callocCheck(16000, sizeof(float));
    CHECK_INT(mel_compute(ctx, x, 16000, feats, mask), 25);
    CHECK_INT(mask_sum(), 100);
    CHECK(mask[99] == 1 && mask[100] == 0);
    // All energies clamp to 1e-10 -> log10 -10 = the max, so every value is (-10 + 4) / 4.
    int all = 1;
    for (int i = 0; i < MEL_N_MELS * MEL_FRAMES; i++) all &= fabsf(feats[i] - (-1.5f)) < 1e-6f;
    CHECK(all);
    free(x);
    CHECK_INT(mel_compute(ctx, NULL, 0, feats, mask), 0);
    CHECK_INT(mask_sum(), 0);
}

static void test_mask_lengths(void) {
    static const int64_t ns[] = {1, 159, 160, 161, 480, 64321, 479999, 480000, 600000};
    float *x = callocCheck(600000, sizeof(float));
    for (size_t i = 0; i < sizeof ns / sizeof ns[0]; i++) {
        int L = audio_valid_frames(ns[i]);
        CHECK_INT(mel_compute(ctx, x, ns[i], feats, mask), audio_token_count(L));
        CHECK_INT(mask_sum(), L);
        CHECK(mask[L - 1] == 1);
        if (L < MEL_FRAMES) CHECK(mask[L] == 0);
    }
    free(x);
}

// A generated signal against the float64 reference; returns its token count.
static int check_signal(int which, double tol) {
    Err e;
    int64_t n = 0;
    float *x = feature_signal_make(which, NULL, &n, &e);
    int N = mel_compute(ctx, x, n, feats, mask);
    double err = ref_max_error(x, n, feats);
    printf("  %-12s n=%-7lld N=%-3d max |err| vs float64 = %.3g\n", feature_signal_name(which), (long long)n, N,
           err);
    CHECKF(err <= tol, "%s: max error %.3g > %.3g", feature_signal_name(which), err, tol);
    CHECK_INT(mask_sum(), audio_valid_frames(n));
    free(x);
    return N;
}

static void test_short_clips(void) {
    CHECK_INT(check_signal(5, 1e-4), 0);  // one sample: L = 1 -> N = 0
    CHECK_INT(check_signal(1, 1e-4), 7);  // 0.3 s: L = 30, L1 = 15, N = 7
    check_signal(4, 1e-4);                // silence + click
    check_signal(2, 1e-4);                // noise burst
}

static void test_long_clips(void) {
    CHECK_INT(check_signal(6, 1e-4), 750);  // 35 s, truncated
    CHECK_INT(mask_sum(), MEL_FRAMES);
    // Over 30 s equals exactly the first 30 s, bit for bit.
    Err e;
    int64_t n = 0;
    float *x = feature_signal_make(6, NULL, &n, &e);
    float *first = mallocCheck(sizeof feats);
    memcpy(first, feats, sizeof feats);
    CHECK_INT(mel_compute(ctx, x, AUDIO_MAX_SAMPLES, feats, mask), 750);
    CHECK(memcmp(first, feats, sizeof feats) == 0);
    free(first);
    free(x);
}

// The frames past a clip's end are not transformed (mel_first_silent_frame): the features equal,
// bit for bit, those of the same clip zero-extended to 30 s, where every frame is transformed. Lengths
// around the boundary frame (n + 200 a multiple of 160 or one past it) included.
static void test_silent_tail(void) {
    float *full = mallocCheck(sizeof feats);
    float *z = callocCheck(AUDIO_MAX_SAMPLES, sizeof(float));
    int32_t m[MEL_FRAMES];
    for (int which = 0; which <= 5; which++) {
        Err e;
        int64_t n = 0;
        float *x = feature_signal_make(which, NULL, &n, &e);
        const int64_t cuts[] = {n, 1, 120, 121, 280, 281, 16000 - 39, 16000 - 40};
        for (size_t c = 0; c < sizeof cuts / sizeof cuts[0]; c++) {
            int64_t k = cuts[c] < n ? cuts[c] : n;
            memset(z, 0, AUDIO_MAX_SAMPLES * sizeof(float));
            memcpy(z, x, (size_t)k * sizeof(float));
            mel_compute(ctx, z, AUDIO_MAX_SAMPLES, full, m);
            mel_compute(ctx, x, k, feats, mask);
            CHECKF(memcmp(full, feats, sizeof feats) == 0, "%s cut at %lld: differs from the zero-extended clip",
                   feature_signal_name(which), (long long)k);
        }
        free(x);
    }
    free(z);
    free(full);
}

// The chirp is 10 s: 1002 frames transformed, enough for the OpenMP team (MEL_PARALLEL_MIN_FRAMES).
static void test_threads(void) {
#ifdef _OPENMP
    Err e;
    int64_t n = 0;
    float *x = feature_signal_make(3, NULL, &n, &e);  // chirp
    float *one = mallocCheck(sizeof feats);
    int saved = omp_get_max_threads();
    omp_set_num_threads(1);
    mel_compute(ctx, x, n, one, mask);
    omp_set_num_threads(3);
    mel_compute(ctx, x, n, feats, mask);
    omp_set_num_threads(saved);
    CHECK(memcmp(one, feats, sizeof feats) == 0);
    free(one);
    free(x);
#endif
}

// Contexts created and used on several threads at once give the same bits as the main thread.
typedef struct {
    const float *x;
    int64_t n;
    float *out;  // [128, 3000]
} MelJob;

static void *mel_job(void *arg) {
    MelJob *j = arg;
    MelContext *own = mel_context_create();
    int32_t m[MEL_FRAMES];
    mel_compute(own, j->x, j->n, j->out, m);
    mel_context_free(own);
    return NULL;
}

static void test_concurrent_contexts(void) {
    enum { T = 4 };
    Err e;
    int64_t n = 0;
    float *x = feature_signal_make(0, NULL, &n, &e);  // tone
    mel_compute(ctx, x, n, feats, mask);
    MelJob jobs[T];
    pthread_t th[T];
    for (int i = 0; i < T; i++) {
        jobs[i] = (MelJob){x, n, mallocCheck(sizeof feats)};
        CHECK(pthread_create(&th[i], NULL, mel_job, &jobs[i]) == 0);
    }
    for (int i = 0; i < T; i++) {
        pthread_join(th[i], NULL);
        CHECK(memcmp(jobs[i].out, feats, sizeof feats) == 0);
        free(jobs[i].out);
    }
    free(x);
}

int main(void) {
    ctx = mel_context_create();
    RUN(test_filters);
    RUN(test_silence);
    RUN(test_mask_lengths);
    RUN(test_short_clips);
    RUN(test_long_clips);
    RUN(test_silent_tail);
    RUN(test_threads);
    RUN(test_concurrent_contexts);
    mel_context_free(ctx);
    return test_summary("test_mel");
}
