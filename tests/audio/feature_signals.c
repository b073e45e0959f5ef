#include "feature_signals.h"

#include <math.h>
#include <stdlib.h>

#include "audio/audio.h"
#include "util/rng.h"

static const char *const feature_names[FEATURE_SIGNALS] = {
    "tone", "short_tone", "noise_burst", "chirp", "click", "one_sample", "long_35s", "mmau",
};

const char *feature_signal_name(int i) { return feature_names[i]; }

// Approximately N(0, 1): the sum of 4 uniforms (24-bit, exact in float) centred and scaled. Integer
// counters make it identical on every machine, unlike Box-Muller through libm.
static float feature_noise(uint64_t seed, uint32_t k) {
    float s = 0.0f;
    for (uint32_t j = 0; j < 4; j++) s += rng_uniform_at(seed, k, j, 0, 0);
    return (s - 2.0f) * 1.7320508f;  // var of a sum of 4 U(0,1) = 1/3
}

static double feature_sin(double hz, int64_t i) { return sin(2.0 * M_PI * hz * (double)i / 16000.0); }

float *feature_signal_make(int i, const char *mmau_path, int64_t *n, Err *e) {
    static const int64_t lens[FEATURE_SIGNALS] = {80000, 4800, 64000, 160000, 48000, 1, 560000, 0};
    const char *name = feature_names[i];
    if (lens[i] == 0) {  // mmau
        Audio a;
        if (audio_load(mmau_path, AUDIO_MONO_FIRST, &a, e) != 0) return NULL;
        *n = a.n;
        return a.samples;
    }
    int64_t len = lens[i];
    float *x = callocCheck((size_t)len, sizeof(float));
    for (int64_t k = 0; k < len; k++) {
        double v = 0.0;
        switch (i) {
        case 0:  // 440 Hz + a weaker 3 kHz partial, 5 s
        case 1:  // the same, 0.3 s
            v = 0.5 * feature_sin(440.0, k) + 0.1 * feature_sin(3000.0, k);
            break;
        case 2:  // 2 s silence, 1 s noise (sigma 0.3), 1 s silence
            v = (k >= 32000 && k < 48000) ? 0.3 * feature_noise(11, (uint32_t)k) : 0.0;
            break;
        case 3: {  // linear chirp 50 Hz -> 7900 Hz over 10 s
            double t = (double)k / 16000.0;
            v = 0.4 * sin(2.0 * M_PI * (50.0 * t + 0.5 * (7850.0 / 10.0) * t * t));
            break;
        }
        case 4:  // 3 s silence with a two-sample click at 1.5 s
            v = k == 24000 ? 0.9 : k == 24001 ? -0.9 : 0.0;
            break;
        case 5:  // a single sample
            v = 0.25;
            break;
        case 6:  // 35 s: amplitude-modulated 220 Hz + 1.1 kHz with low noise (truncated to 30 s)
            v = (0.3 + 0.2 * feature_sin(0.5, k)) * (feature_sin(220.0, k) + 0.3 * feature_sin(1100.0, k)) +
                0.01 * feature_noise(12, (uint32_t)k);
            break;
        default:
            fatal("feature signal %s has no generator", name);
        }
        x[k] = (float)v;
    }
    *n = len;
    return x;
}
