// Tests of common/data/synth: determinism (same seed, same bytes), the output loads with the dataset
// readers without errors, and the audio really encodes each answer (burst counts, RMS of halves,
// tone energy at the drawn frequency, zero-crossing rate at the start and end of a sweep), and the pitch
// classes are far apart at the encoder's log-mel input.
#include "audio/audio.h"
#include "audio/mel.h"
#include "data/dataset.h"
#include "data/synth.h"
#include "test.h"
#include "util/fileio.h"

#include <dirent.h>
#include <math.h>
#include <sndfile.h>

enum { N = 60 };

static int generate(const char *dir, uint64_t seed, SynthSummary *sum) {
    SynthOptions o = {.out_dir = dir, .n = N, .seed = seed, .test_frac = 0.2};
    Err e;
    if (synth_generate(&o, sum, &e)) {
        fprintf(stderr, "%s\n", e.msg);
        return -1;
    }
    return 0;
}

static int same_file(const char *a, const char *b) {
    Err e;
    size_t na, nb;
    char *x = file_read_all(a, &na, &e), *y = file_read_all(b, &nb, &e);
    int same = x && y && na == nb && memcmp(x, y, na) == 0;
    free(x);
    free(y);
    return same;
}

static const char *in_dir(const char *dir, const char *name) {
    static char buf[4][4200];
    static int k;
    char *out = buf[k++ & 3];
    return path_join(out, sizeof buf[0], dir, name);
}

static const char *wav_name(int64_t i) {
    static char buf[4][64];
    static int k;
    char *out = buf[k++ & 3];
    snprintf(out, sizeof buf[0], "audio/q%06lld.wav", (long long)i);
    return out;
}

static const char *DATA_FILES[] = {"train.jsonl", "test.jsonl", "test-mmau.json"};

static void test_determinism(void) {
    const char *a = TMP_PATH("synth_a"), *b = TMP_PATH("synth_b"), *c = TMP_PATH("synth_c");
    SynthSummary sa, sb, sc;
    CHECK(generate(a, 7, &sa) == 0);
    CHECK(generate(b, 7, &sb) == 0);
    CHECK(generate(c, 8, &sc) == 0);
    int all_same = 1, wav_differs = 0;
    for (int i = 0; i < 3; i++) all_same &= same_file(in_dir(a, DATA_FILES[i]), in_dir(b, DATA_FILES[i]));
    for (int64_t i = 0; i < N; i++) {
        all_same &= same_file(in_dir(a, wav_name(i)), in_dir(b, wav_name(i)));
        wav_differs |= !same_file(in_dir(a, wav_name(i)), in_dir(c, wav_name(i)));
    }
    CHECK(all_same);
    CHECK(wav_differs);
    CHECK(!same_file(in_dir(a, "train.jsonl"), in_dir(c, "train.jsonl")));
    // Summary: the split is round(N * 0.2); every family and several answer positions occur.
    CHECK_INT(sa.n[1], 12);
    CHECK_INT(sa.n[0], 48);
    int64_t fam = 0, answer_positions = 0;
    for (int k = 0; k < SYNTH_N_FAMILIES; k++) fam += sa.family[0][k] + sa.family[1][k] > 0;
    for (int k = 0; k < SYNTH_MAX_CHOICES; k++) answer_positions += sa.answer[0][k] > 0;
    CHECK_INT(fam, SYNTH_N_FAMILIES);
    CHECK(answer_positions >= 3);
    CHECK(sa.stereo > 0 && sa.stereo < N);
    CHECK(sa.float_wav > 0 && sa.float_wav < N);
    // No temporary files are left behind.
    DIR *d = opendir(in_dir(a, "audio"));
    int tmp_left = 0, files = 0;
    for (struct dirent *de; d && (de = readdir(d));) {
        tmp_left |= strstr(de->d_name, ".tmp.") != NULL;
        files += de->d_name[0] == 'q';
    }
    if (d) closedir(d);
    CHECK(!tmp_left);
    CHECK_INT(files, N);
    char *text = NULL;
    FILE *f = open_memstream(&text, &(size_t){0});
    synth_summary_print(&sa, f);
    fclose(f);
    CHECK(strstr(text, "tone_noise") && strstr(text, "train      48") && strstr(text, "test       12"));
    free(text);
}

static void test_loads(void) {
    const char *dir = TMP_PATH("synth_a");
    Dataset train, test, mmau;
    Err e;
    DataOptions o = data_options_default();
    o.max_bad = 0;
    CHECKF(dataset_load(&train, in_dir(dir, "train.jsonl"), &o, &e) == 0, "%s", e.msg);
    CHECKF(dataset_load(&test, in_dir(dir, "test.jsonl"), &o, &e) == 0, "%s", e.msg);
    CHECKF(dataset_load(&mmau, in_dir(dir, "test-mmau.json"), &o, &e) == 0, "%s", e.msg);
    CHECK_INT(train.n, 48);
    CHECK_INT(test.n, 12);
    CHECK_INT(mmau.n, 12);
    CHECK(mmau.format == DATA_FORMAT_MMAU);
    for (int64_t i = 0; i < test.n && i < mmau.n; i++) {
        const Question *a = &test.q[i], *b = &mmau.q[i];
        CHECK_STR(a->audio_path, b->audio_path);
        CHECK_STR(a->answer_text, b->answer_text);
        CHECK_INT(a->answer, b->answer);
        CHECK_STR(a->question, b->question);
        CHECK_STR(b->dataset, "synthetic");
        CHECK_STR(b->task, "sound");
        CHECK_STR(b->split, "test");
        CHECK(path_exists(a->audio_path));
        // The item regenerated from (seed, index) matches what the file says.
        SynthItem it;
        synth_item(&it, 7, atoll(a->id), 1, SYNTH_MAX_CLIP_S, 0);
        CHECK_STR(b->sub_category, synth_family_name(it.family));
        CHECK_STR(b->difficulty, it.difficulty);
        CHECK_STR(a->answer_text, it.choices[it.answer]);
    }
    for (int64_t i = 0; i < train.n; i++) CHECK_STR(train.q[i].split, "train");
    dataset_free(&train);
    dataset_free(&test);
    dataset_free(&mmau);
}

// Channel 0 of the written WAV (the channel the reference keeps), checked against the item.
static float *read_ch0(const char *path, const SynthItem *it) {
    SF_INFO info = {0};
    SNDFILE *sf = sf_open(path, SFM_READ, &info);
    if (!CHECK(sf != NULL)) return NULL;
    CHECK_INT(info.samplerate, it->sample_rate);
    CHECK_INT(info.channels, it->channels);
    CHECK_INT(info.frames, it->frames);
    CHECK_INT(info.format, SF_FORMAT_WAV | (it->float_wav ? SF_FORMAT_FLOAT : SF_FORMAT_PCM_16));
    float *all = malloc((size_t)(info.frames * info.channels) * sizeof(float));
    CHECK(sf_readf_float(sf, all, info.frames) == info.frames);
    sf_close(sf);
    float *x = malloc((size_t)info.frames * sizeof(float));
    for (int64_t t = 0; t < info.frames; t++) x[t] = all[t * info.channels];
    free(all);
    return x;
}

// Bursts of energy: 10 ms frames above the geometric mean of the median frame (background) and the
// loudest frame, runs of >= 3 frames.
static int count_bursts(const float *x, int64_t n, int sr) {
    int64_t hop = sr / 100, nf = n / hop;
    double *e = malloc((size_t)nf * sizeof(double)), *sorted = malloc((size_t)nf * sizeof(double));
    double top = 0;
    for (int64_t f = 0; f < nf; f++) {
        double s = 0;
        for (int64_t i = 0; i < hop; i++) s += (double)x[f * hop + i] * x[f * hop + i];
        e[f] = sorted[f] = s / (double)hop;
        top = fmax(top, s / (double)hop);
    }
    for (int64_t i = 1; i < nf; i++)  // insertion sort: a few hundred frames
        for (int64_t j = i; j > 0 && sorted[j - 1] > sorted[j]; j--) {
            double t = sorted[j];
            sorted[j] = sorted[j - 1];
            sorted[j - 1] = t;
        }
    double thr = sqrt(sorted[nf / 2] * top);
    int bursts = 0, run = 0;
    for (int64_t f = 0; f <= nf; f++) {
        if (f < nf && e[f] > thr) {
            run++;
        } else {
            bursts += run >= 3;
            run = 0;
        }
    }
    free(e);
    free(sorted);
    return bursts;
}

static double rms(const float *x, int64_t n) {
    double s = 0;
    for (int64_t i = 0; i < n; i++) s += (double)x[i] * x[i];
    return sqrt(s / (double)n);
}

// |DFT at f|^2 / (n * energy): ~0.5 for a pure tone at f, ~1/n for white noise.
static double tonality(const float *x, int64_t n, int sr, double f) {
    double re = 0, im = 0, energy = 0, w = 2 * M_PI * f / sr;
    for (int64_t i = 0; i < n; i++) {
        re += x[i] * cos(w * (double)i);
        im -= x[i] * sin(w * (double)i);
        energy += (double)x[i] * x[i];
    }
    return (re * re + im * im) / ((double)n * energy);
}

static double zero_cross_rate(const float *x, int64_t n) {
    int64_t z = 0;
    for (int64_t i = 1; i < n; i++) z += (x[i - 1] < 0) != (x[i] < 0);
    return (double)z / (double)n;
}

static void test_audio_encodes_answer(void) {
    const char *dir = TMP_PATH("synth_a");
    int checked[SYNTH_N_FAMILIES] = {0};
    for (int64_t i = 0; i < N; i++) {
        SynthItem it;
        synth_item(&it, 7, i, 0, SYNTH_MAX_CLIP_S, 0);
        float *x = read_ch0(in_dir(dir, wav_name(i)), &it);
        if (!x) continue;
        const char *ans = it.choices[it.answer];
        const SynthEvent *ev = &it.events[0];
        int sr = it.sample_rate;
        int64_t t0 = (int64_t)(ev->start * sr), len = (int64_t)(ev->dur * sr);
        switch (it.family) {
        case SYNTH_BEEPS:
            CHECKF(count_bursts(x, it.frames, sr) == atoi(ans), "item %lld: %d bursts, answer %s",
                   (long long)i, count_bursts(x, it.frames, sr), ans);
            break;
        case SYNTH_LOUDER: {
            int64_t half = it.frames / 2;
            double r0 = rms(x, half), r1 = rms(x + half, it.frames - half);
            CHECKF((r0 > r1) == (strcmp(ans, "first") == 0), "item %lld: rms %g %g, answer %s",
                   (long long)i, r0, r1, ans);
            break;
        }
        case SYNTH_PITCH: {
            int cls = strcmp(ans, "low") == 0 ? 0 : strcmp(ans, "medium") == 0 ? 1 : 2;
            CHECK(ev->f0 >= SYNTH_PITCH_HZ[cls][0] && ev->f0 <= SYNTH_PITCH_HZ[cls][1]);
            CHECKF(tonality(x + t0, len, sr, ev->f0) > 0.2, "item %lld", (long long)i);
            break;
        }
        case SYNTH_TONE_NOISE: {
            double t = tonality(x + t0, len, sr, ev->f0);
            CHECKF((t > 0.2) == (strcmp(ans, "tone") == 0) && (t > 0.2 || t < 0.01),
                   "item %lld: tonality %g, answer %s", (long long)i, t, ans);
            break;
        }
        case SYNTH_SWEEP: {
            double z0 = zero_cross_rate(x + t0, len / 4), z1 = zero_cross_rate(x + t0 + len - len / 4, len / 4);
            CHECKF((z1 > z0) == (strcmp(ans, "rising") == 0), "item %lld: zcr %g -> %g, answer %s",
                   (long long)i, z0, z1, ans);
            break;
        }
        default: break;
        }
        checked[it.family]++;
        free(x);
    }
    for (int k = 0; k < SYNTH_N_FAMILIES; k++) CHECK(checked[k] >= 10);
}

// A shorter longest clip: every clip of every family fits it, and the families still draw long clips
// (the beeps' lower bound reaches 2.25 s).
static void test_max_seconds(void) {
    double longest = 0;
    for (int64_t i = 0; i < 200; i++) {
        SynthItem it;
        synth_item(&it, 7, i, 0, 3.0, 0);
        double s = (double)it.frames / it.sample_rate;
        CHECKF(s >= 1.0 && s <= 3.0 + 1.0 / it.sample_rate, "item %lld: %g s", (long long)i, s);
        for (int k = 0; k < it.n_events; k++)
            CHECK(it.events[k].start >= 0 && it.events[k].start + it.events[k].dur <= s);
        longest = fmax(longest, s);
    }
    CHECK(longest > 2.5);
}

// A family subset: questions cycle through the chosen families in order (mask 0: all five, index mod 5);
// an unknown or empty name and a mask bit beyond the families are errors naming them.
static void test_families(void) {
    unsigned mask;
    Err e;
    CHECK(synth_families_parse("tone_noise,pitch", &mask, &e) == 0);
    CHECK_INT((int)mask, (1 << SYNTH_PITCH) | (1 << SYNTH_TONE_NOISE));
    for (int64_t i = 0; i < 20; i++) {
        SynthItem it, all;
        synth_item(&it, 7, i, 0, 3.0, mask);
        CHECK_INT(it.family, i % 2 ? SYNTH_TONE_NOISE : SYNTH_PITCH);
        synth_item(&all, 7, i, 0, 3.0, 0);
        CHECK_INT(all.family, (int)(i % SYNTH_N_FAMILIES));
    }
    CHECK(synth_families_parse("pitch,chirp", &mask, &e) == -1);
    CHECK(strstr(e.msg, "unknown family \"chirp\"") != NULL);
    CHECK(synth_families_parse("pitch,", &mask, &e) == -1);
    CHECK(strstr(e.msg, "unknown family \"\"") != NULL);
    SynthOptions o = {.out_dir = TMP_PATH("synth_fam"), .n = 5, .seed = 1, .families = 1u << SYNTH_N_FAMILIES};
    CHECK(synth_generate(&o, NULL, &e) == -1);
    CHECK(strstr(e.msg, "family mask") != NULL);
}

static void test_bad_options(void) {
    SynthOptions o = {.out_dir = TMP_PATH("synth_bad"), .n = 0, .seed = 1, .test_frac = 0.1};
    Err e;
    CHECK(synth_generate(&o, NULL, &e) == -1);
    CHECK_STR(e.msg, "synthetic data: --n must be positive (got 0)");
    o.n = 5;
    o.test_frac = 1.5;
    CHECK(synth_generate(&o, NULL, &e) == -1);
    CHECK_STR(e.msg, "synthetic data: test fraction 1.5 not in [0, 1]");
    o.test_frac = 0.1;
    o.max_clip_s = 2.4;
    CHECK(synth_generate(&o, NULL, &e) == -1);
    CHECK_STR(e.msg, "synthetic data: longest clip 2.4 s not in [2.5, 30] s");
    o.max_clip_s = 0;
    o.out_dir = "/proc/no/such/dir";
    CHECK(synth_generate(&o, NULL, &e) == -1);
    CHECK(strstr(e.msg, "cannot create directory") != NULL);
    uint8_t t[10];
    synth_split(1, 10, 0.0, t);
    int n = 0;
    for (int i = 0; i < 10; i++) n += t[i];
    CHECK_INT(n, 0);
    synth_split(1, 10, 1.0, t);
    n = 0;
    for (int i = 0; i < 10; i++) n += t[i];
    CHECK_INT(n, 10);
}

// Time-mean over the valid frames of the log-mel features of a rendered clip (channel 0, resampled
// to AUDIO_SAMPLE_RATE, as the prompt builder sees it): v[MEL_N_MELS].
static int clip_mel_mean(const MelContext *mel, const SynthItem *it, uint64_t seed, double *v) {
    float *x = synth_render(it, seed);
    float *mono = mallocCheck((size_t)it->frames * sizeof(float));
    for (int64_t t = 0; t < it->frames; t++) mono[t] = x[t * it->channels];
    free(x);
    Err e;
    int64_t n;
    float *y = audio_resample(mono, it->frames, it->sample_rate, AUDIO_SAMPLE_RATE, &n, &e);
    free(mono);
    if (!y) return -1;
    float *f = mallocCheck((size_t)MEL_N_MELS * MEL_FRAMES * sizeof(float));  // [128, 3000]
    int32_t *mask = mallocCheck(MEL_FRAMES * sizeof(int32_t));
    mel_compute(mel, y, n, f, mask);
    int valid = 0;
    for (int t = 0; t < MEL_FRAMES; t++) valid += mask[t];
    for (int b = 0; b < MEL_N_MELS; b++) {
        double s = 0;
        for (int t = 0; t < MEL_FRAMES; t++) s += mask[t] ? f[(size_t)b * MEL_FRAMES + t] : 0;
        v[b] = s / valid;
    }
    free(y);
    free(f);
    free(mask);
    return 0;
}

// The pitch classes are audible to a small model: for each class, the mean (over time and over the mel
// bands inside the class's frequency range) of the encoder's input features separates that class from
// the other two by many within-class standard deviations. Measured on 3 s clips (the demo's window).
static void test_pitch_audible(void) {
    enum { M = 90 };
    MelContext *mel = mel_context_create();
    double lo_mel = mel_scale_from_hz(0), hi_mel = mel_scale_from_hz(8000);
    double sum[3][2] = {{0}}, sq[3][2] = {{0}};
    int cnt[3][2] = {{0}};
    for (int64_t i = 0; i < M; i++) {
        SynthItem it;
        synth_item(&it, 7, i, 0, 3.0, 1u << SYNTH_PITCH);
        const char *ans = it.choices[it.answer];
        int cls = strcmp(ans, "low") == 0 ? 0 : strcmp(ans, "medium") == 0 ? 1 : 2;
        double v[MEL_N_MELS];
        CHECK(clip_mel_mean(mel, &it, 7, v) == 0);
        for (int c = 0; c < 3; c++) {
            double s = 0;
            int nb = 0;
            for (int b = 0; b < MEL_N_MELS; b++) {  // band b's centre: point b + 1 of 130 equally spaced mels
                double hz = mel_scale_to_hz(lo_mel + (hi_mel - lo_mel) * (b + 1) / (MEL_N_MELS + 1));
                if (hz >= SYNTH_PITCH_HZ[c][0] / 1.05 && hz <= SYNTH_PITCH_HZ[c][1] * 1.05) s += v[b], nb++;
            }
            s /= nb;
            int in = cls == c;
            sum[c][in] += s, sq[c][in] += s * s, cnt[c][in]++;
        }
    }
    for (int c = 0; c < 3; c++) {
        double m1 = sum[c][1] / cnt[c][1], m0 = sum[c][0] / cnt[c][0];
        double v1 = sq[c][1] / cnt[c][1] - m1 * m1, v0 = sq[c][0] / cnt[c][0] - m0 * m0;
        double d = (m1 - m0) / sqrt(0.5 * (v1 + v0));
        printf("pitch class %d: band mean %.3f vs %.3f, std %.3f / %.3f: %.1f std\n", c, m1, m0, sqrt(v1), sqrt(v0), d);
        CHECKF(d > 5, "class %d: %.2f std", c, d);  // 0.3-1.9 std before the tone filled the clip
    }
    mel_context_free(mel);
}

int main(void) {
    RUN(test_determinism);
    RUN(test_loads);
    RUN(test_audio_encodes_answer);
    RUN(test_max_seconds);
    RUN(test_families);
    RUN(test_pitch_audible);
    RUN(test_bad_options);
    return test_summary("test_synth");
}
