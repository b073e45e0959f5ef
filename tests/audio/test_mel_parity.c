// Parity of common/audio/mel with HF's WhisperFeatureExtractor: reads the fixture written by
// tests/reference/whisper_features.py, regenerates the same inputs (feature_signals.h), recomputes and
// requires max |C - HF| <= 1e-4 over the sampled values and the whole-matrix statistics. A missing
// fixture is a failure, with the command that makes it.
#include <jansson.h>

#include "test.h"
#include "audio/mel.h"
#include "feature_signals.h"

#define FIXTURE "tests/fixtures/audio/whisper_features.json"
static const double TOL = 1e-4;

static MelContext *ctx;
static float feats[MEL_N_MELS * MEL_FRAMES];  // [128, 3000]
static int32_t mask[MEL_FRAMES];

static int signal_index(const char *name) {
    for (int i = 0; i < FEATURE_SIGNALS; i++)
        if (strcmp(feature_signal_name(i), name) == 0) return i;
    return -1;
}

static double jnum(json_t *o, const char *key) { return json_number_value(json_object_get(o, key)); }

static void check_clip(json_t *clip) {
    const char *name = json_string_value(json_object_get(clip, "name"));
    int which = name ? signal_index(name) : -1;
    CHECKF(which >= 0, "fixture clip \"%s\" is not a known signal", name ? name : "(no name)");
    if (which < 0) return;
    Err e;
    int64_t n = 0;
    float *x = feature_signal_make(which, FIXTURE_PATH(FEATURE_MMAU_CLIP), &n, &e);  // [n]
    CHECKF(x != NULL, "%s", e.msg);
    if (!x) return;
    CHECK_INT(n, (int64_t)json_integer_value(json_object_get(clip, "n_samples")));
    // The inputs must be the ones the reference saw (resampling of the real clip included).
    double sum = 0.0, sumsq = 0.0;
    for (int64_t i = 0; i < n; i++) {
        sum += x[i];
        sumsq += (double)x[i] * x[i];
    }
    // (Slack for inputs made on another CPU, whose soxr may round differently in the last bit.)
    CHECK_NEAR(sum, jnum(clip, "input_sum"), 1e-6 * (1.0 + fabs(jnum(clip, "input_sum"))) + 1e-8 * (double)n);
    CHECK_NEAR(sumsq, jnum(clip, "input_sumsq"), 1e-6 * (1.0 + jnum(clip, "input_sumsq")));

    mel_compute(ctx, x, n, feats, mask);
    int valid = 0;
    for (int t = 0; t < MEL_FRAMES; t++) valid += mask[t];
    CHECK_INT(valid, json_integer_value(json_object_get(clip, "mask_sum")));

    double s = 0.0, s2 = 0.0, lo = INFINITY, hi = -INFINITY;
    for (int i = 0; i < MEL_N_MELS * MEL_FRAMES; i++) {
        s += feats[i];
        s2 += (double)feats[i] * feats[i];
        lo = fmin(lo, feats[i]);
        hi = fmax(hi, feats[i]);
    }
    double cnt = MEL_N_MELS * MEL_FRAMES, mean = s / cnt, sd = sqrt(fmax(s2 / cnt - mean * mean, 0.0));
    CHECK_NEAR(mean, jnum(clip, "mean"), TOL);
    CHECK_NEAR(sd, jnum(clip, "std"), TOL);
    CHECK_NEAR(lo, jnum(clip, "min"), TOL);
    CHECK_NEAR(hi, jnum(clip, "max"), TOL);

    json_t *samples = json_object_get(clip, "samples");
    double err_hf = 0.0, err_f64 = 0.0;
    size_t k;
    json_t *smp;
    json_array_foreach(samples, k, smp) {
        int m = (int)json_integer_value(json_array_get(smp, 0)), t = (int)json_integer_value(json_array_get(smp, 1));
        CHECKF(m >= 0 && m < MEL_N_MELS && t >= 0 && t < MEL_FRAMES, "%s sample %zu: bad position", name, k);
        if (m < 0 || m >= MEL_N_MELS || t < 0 || t >= MEL_FRAMES) continue;
        float v = feats[m * MEL_FRAMES + t];
        err_hf = fmax(err_hf, cmp_diff(v, json_number_value(json_array_get(smp, 2))));
        err_f64 = fmax(err_f64, cmp_diff(v, json_number_value(json_array_get(smp, 3))));
    }
    CHECKF(json_array_size(samples) >= 100, "%s: only %zu samples", name, json_array_size(samples));
    printf("  %-12s n=%-7lld samples=%zu max|C-HF|=%.3g max|C-f64|=%.3g (HF vs f64 whole matrix %.3g)\n", name,
           (long long)n, json_array_size(samples), err_hf, err_f64, jnum(clip, "hf_vs_f64_max_abs"));
    CHECKF(err_hf <= TOL, "%s: max |C - HF| = %.3g > %.0e", name, err_hf, TOL);
    CHECKF(err_f64 <= TOL, "%s: max |C - float64| = %.3g > %.0e", name, err_f64, TOL);
    free(x);
}

static void test_parity(void) {
    const char *path = SRC_PATH(FIXTURE);
    json_error_t jerr;
    json_t *root = json_load_file(path, 0, &jerr);
    CHECKF(root != NULL,
           "fixture %s missing or unreadable (%s). Make it on a machine with transformers:\n"
           "       build/tests/audio/feature_inputs /tmp/feat_in tests/fixtures/" FEATURE_MMAU_CLIP "\n"
           "       python3 tests/reference/whisper_features.py /tmp/feat_in " FIXTURE,
           path, jerr.text);
    if (!root) return;
    json_t *clips = json_object_get(root, "clips");
    const char *hf_path = json_string_value(json_object_get(root, "hf_path"));
    printf("  fixture: HF %s path, transformers %s\n", hf_path ? hf_path : "?",
           json_string_value(json_object_get(json_object_get(root, "versions"), "transformers")));
    CHECK_INT(json_array_size(clips), FEATURE_SIGNALS);
    size_t i;
    json_t *clip;
    json_array_foreach(clips, i, clip) check_clip(clip);
    json_decref(root);
}

int main(void) {
    ctx = mel_context_create();
    RUN(test_parity);
    mel_context_free(ctx);
    return test_summary("test_mel_parity");
}
