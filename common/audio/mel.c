#include "audio/mel.h"

#include <fftw3.h>
#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "util/check.h"

#ifdef _OPENMP
#define MEL_OMP(directive) _Pragma(directive)
#else
#define MEL_OMP(directive)
#endif

enum { MEL_PAD = MEL_N_FFT / 2 };  // reflect padding each side (torch.stft center=True)
#define MEL_POWER_FLOOR 1e-10f     // mel energies clamp here before log10 (HF: clamp(min=1e-10))

struct MelContext {
    float window[MEL_N_FFT];                       // periodic Hann
    float filters[MEL_N_BINS * MEL_N_MELS];        // W [201, 128] (bin-major, as HF's mel_filters)
    float bands[MEL_N_MELS * MEL_N_BINS];          // W^T [128, 201]: one filter's weights contiguous
    int band_lo[MEL_N_MELS], band_hi[MEL_N_MELS];  // nonzero bins of filter m: [lo, hi)
    fftwf_plan plan;                               // r2c, 400 points; run on arrays from fftwf_malloc
};

// FFTW's planner keeps global state: creating or destroying plans must not overlap in time.
static pthread_mutex_t mel_plan_lock = PTHREAD_MUTEX_INITIALIZER;

// HF's operation order, so the filter edges round the same way.
double mel_scale_from_hz(double f) {
    if (f < 1000.0) return 3.0 * f / 200.0;
    return 15.0 + log(f / 1000.0) * (27.0 / log(6.4));
}

double mel_scale_to_hz(double m) {
    if (m < 15.0) return 200.0 * m / 3.0;
    return 1000.0 * exp(log(6.4) / 27.0 * (m - 15.0));
}

// Triangular Slaney-normalised filters over 0-8000 Hz, built in float64 and rounded once to float32.
static void mel_build_filters(MelContext *ctx) {
    enum { NP = MEL_N_MELS + 2 };
    double fk[NP];  // filter edge/centre frequencies (Hz)
    double mel_max = mel_scale_from_hz(AUDIO_SAMPLE_RATE / 2.0);
    double step = mel_max / (NP - 1);  // numpy.linspace: i * step, last point exactly the stop value
    for (int i = 0; i < NP; i++) fk[i] = mel_scale_to_hz(i == NP - 1 ? mel_max : i * step);
    double bin_hz = (AUDIO_SAMPLE_RATE / 2.0) / (MEL_N_BINS - 1);
    for (int m = 0; m < MEL_N_MELS; m++) {
        double norm = 2.0 / (fk[m + 2] - fk[m]);
        ctx->band_lo[m] = MEL_N_BINS;
        ctx->band_hi[m] = 0;
        for (int b = 0; b < MEL_N_BINS; b++) {
            double f = b * bin_hz;
            double down = (f - fk[m]) / (fk[m + 1] - fk[m]);
            double up = (fk[m + 2] - f) / (fk[m + 2] - fk[m + 1]);
            double w = fmax(0.0, fmin(down, up)) * norm;
            float wf = (float)w;
            ctx->filters[b * MEL_N_MELS + m] = wf;
            ctx->bands[m * MEL_N_BINS + b] = wf;
            if (wf != 0.0f) {
                if (b < ctx->band_lo[m]) ctx->band_lo[m] = b;
                ctx->band_hi[m] = b + 1;
            }
        }
        if (ctx->band_hi[m] == 0) ctx->band_lo[m] = 0;  // an empty filter (none for these settings)
    }
}

MelContext *mel_context_create(void) {
    MelContext *ctx = callocCheck(1, sizeof *ctx);
    for (int i = 0; i < MEL_N_FFT; i++) ctx->window[i] = (float)(0.5 - 0.5 * cos(2.0 * M_PI * i / MEL_N_FFT));
    mel_build_filters(ctx);
    float *in = fftwf_malloc(MEL_N_FFT * sizeof(float));
    fftwf_complex *out = fftwf_malloc(MEL_N_BINS * sizeof(fftwf_complex));
    if (!in || !out) fatal("fftwf_malloc failed");
    // FFTW_ESTIMATE: the plan (hence the rounding) does not depend on timing measurements.
    pthread_mutex_lock(&mel_plan_lock);
    ctx->plan = fftwf_plan_dft_r2c_1d(MEL_N_FFT, in, out, FFTW_ESTIMATE);
    pthread_mutex_unlock(&mel_plan_lock);
    fftwf_free(in);
    fftwf_free(out);
    if (!ctx->plan) fatal("fftwf_plan_dft_r2c_1d(%d) failed", MEL_N_FFT);
    return ctx;
}

void mel_context_free(MelContext *ctx) {
    if (!ctx) return;
    pthread_mutex_lock(&mel_plan_lock);
    fftwf_destroy_plan(ctx->plan);
    pthread_mutex_unlock(&mel_plan_lock);
    free(ctx);
}

const float *mel_filters(const MelContext *ctx) { return ctx->filters; }

// Sample p of the 30 s clip reflect-padded by MEL_PAD: index p - MEL_PAD mirrored at both ends
// (x[-k] = x[k], x[N-1+k] = x[N-1-k], N = 480000), zero past the n_used samples actually given.
static inline float mel_padded_sample(const float *x, int64_t n_used, int64_t p) {
    int64_t i = p - MEL_PAD;
    if (i < 0) i = -i;
    if (i >= AUDIO_MAX_SAMPLES) i = 2 * (AUDIO_MAX_SAMPLES - 1) - i;
    return i < n_used ? x[i] : 0.0f;
}

// log10 mel energies of frame t into column t of lg [128, 3000]; returns their maximum.
static float mel_frame(const MelContext *ctx, const float *x, int64_t n_used, int t, float *buf,
                       fftwf_complex *spec, float *lg) {
    int64_t p0 = (int64_t)t * AUDIO_HOP;
    // Frames away from both ends read x directly; the first two and those near 30 s need the mirror.
    if (p0 >= MEL_PAD && p0 + MEL_N_FFT - MEL_PAD <= n_used) {
        const float *src = x + p0 - MEL_PAD;
        for (int k = 0; k < MEL_N_FFT; k++) buf[k] = src[k] * ctx->window[k];
    } else {
        for (int k = 0; k < MEL_N_FFT; k++) buf[k] = mel_padded_sample(x, n_used, p0 + k) * ctx->window[k];
    }
    fftwf_execute_dft_r2c(ctx->plan, buf, spec);
    float power[MEL_N_BINS];
    for (int b = 0; b < MEL_N_BINS; b++) power[b] = spec[b][0] * spec[b][0] + spec[b][1] * spec[b][1];
    float fmax_ = -INFINITY;
    for (int m = 0; m < MEL_N_MELS; m++) {
        const float *w = ctx->bands + m * MEL_N_BINS;
        float s = 0.0f;
        for (int b = ctx->band_lo[m]; b < ctx->band_hi[m]; b++) s += w[b] * power[b];
        float v = log10f(s > MEL_POWER_FLOOR ? s : MEL_POWER_FLOOR);
        lg[(size_t)m * MEL_FRAMES + t] = v;
        if (v > fmax_) fmax_ = v;
    }
    return fmax_;
}

// Frames from this one on read only zeros (every padded index lands at or past n_used, the right-end
// mirror included, since it reaches back at most to sample 479959), so their log-mel is the clamp
// log10(1e-10) in every band: computed once instead of 400-point FFTs of zeros. A 3 s clip in its 30 s
// window then costs 302 frames instead of 3000, with the same bits.
static int mel_first_silent_frame(int64_t n_used) {
    int64_t t = (n_used + MEL_PAD + AUDIO_HOP - 1) / AUDIO_HOP;
    return t < MEL_FRAMES ? (int)t : MEL_FRAMES;
}

// Below this many frames (10 s of audio, about 2 ms on one core) a clip is computed on the calling
// thread: an OpenMP team costs more than it saves there, and far more when its cores are busy (other
// ranks, other jobs), where a team waits at each barrier for a descheduled thread.
enum { MEL_PARALLEL_MIN_FRAMES = 1000 };

int mel_compute(const MelContext *ctx, const float *x, int64_t n, float *features, int32_t *mask) {
    int64_t n_used = n < AUDIO_MAX_SAMPLES ? (n > 0 ? n : 0) : AUDIO_MAX_SAMPLES;
    const int T = mel_first_silent_frame(n_used);  // frames [0, T) computed, [T, MEL_FRAMES) silent
    const float silent = log10f(MEL_POWER_FLOOR);   // mel_frame's value for an all-zero frame
    float top = T < MEL_FRAMES ? silent : -INFINITY;
    MEL_OMP("omp parallel if (T >= MEL_PARALLEL_MIN_FRAMES) reduction(max : top)")
    {
        float *buf = fftwf_malloc(MEL_N_FFT * sizeof(float));
        fftwf_complex *spec = fftwf_malloc(MEL_N_BINS * sizeof(fftwf_complex));
        if (!buf || !spec) fatal("fftwf_malloc failed");
        MEL_OMP("omp for schedule(dynamic, 50)")
        for (int t = 0; t < T; t++) {
            float v = mel_frame(ctx, x, n_used, t, buf, spec, features);
            top = v > top ? v : top;
        }
        fftwf_free(buf);
        fftwf_free(spec);
    }
    // The floor is relative to the loudest value of the whole padded clip (HF: log_spec.max() - 8).
    float floor_ = top - 8.0f;
    float silent_out = ((silent > floor_ ? silent : floor_) + 4.0f) / 4.0f;
    MEL_OMP("omp parallel for if (T >= MEL_PARALLEL_MIN_FRAMES) schedule(static)")
    for (int m = 0; m < MEL_N_MELS; m++) {
        float *row = features + (size_t)m * MEL_FRAMES;
        for (int t = 0; t < T; t++) {
            float v = row[t] > floor_ ? row[t] : floor_;
            row[t] = (v + 4.0f) / 4.0f;
        }
        for (int t = T; t < MEL_FRAMES; t++) row[t] = silent_out;
    }
    int L = audio_valid_frames(n_used);
    for (int t = 0; t < MEL_FRAMES; t++) mask[t] = t < L;
    return audio_token_count(L);
}
