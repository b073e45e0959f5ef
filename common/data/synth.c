#include "data/synth.h"

#include <jansson.h>
#include <math.h>
#include <sndfile.h>
#include <stdlib.h>
#include <string.h>

#include "util/fileio.h"
#include "util/rng.h"

// Philox stream tags: item parameters, audio samples and the split each get their own streams.
static const uint64_t TAG_ITEM = 0x5E1Full << 48, TAG_AUDIO = 0x5E2Aull << 48, TAG_SPLIT = 0x5E3Bull << 48;

static const char *FAMILY_NAMES[SYNTH_N_FAMILIES] = {"beeps", "pitch", "louder", "sweep", "tone_noise"};
const double SYNTH_PITCH_HZ[3][2] = {{200, 260}, {800, 860}, {2500, 2750}};
static const char *DIFFICULTY[3] = {"easy", "medium", "hard"};

const char *synth_family_name(SynthFamily f) { return FAMILY_NAMES[f]; }

int synth_families_parse(const char *list, unsigned *mask, Err *e) {
    *mask = 0;
    for (const char *p = list;;) {
        size_t n = strcspn(p, ",");
        int f = 0;
        while (f < SYNTH_N_FAMILIES && !(strlen(FAMILY_NAMES[f]) == n && strncmp(p, FAMILY_NAMES[f], n) == 0)) f++;
        if (f == SYNTH_N_FAMILIES)
            return err_set(e, "synthetic data: families \"%s\": unknown family \"%.*s\" (known: beeps, pitch, "
                              "louder, sweep, tone_noise)", list, (int)n, p);
        *mask |= 1u << f;
        if (!p[n]) return 0;
        p += n + 1;
    }
}

// The (index mod k)-th of the k families in mask (0 = all).
static SynthFamily family_of(int64_t index, unsigned mask) {
    if (!mask) mask = (1u << SYNTH_N_FAMILIES) - 1;
    int k = __builtin_popcount(mask), want = (int)(index % k), f = 0;
    for (;; f++)
        if ((mask >> f & 1) && want-- == 0) return (SynthFamily)f;
}

static double uniform(Rng *r, double lo, double hi) { return lo + (hi - lo) * rng_uniform(r); }
static const char *pick(Rng *r, const char *const *options, int n) { return options[rng_below(r, (uint64_t)n)]; }

// Shuffles the family's class labels into it->choices; `truth` is the class the audio encodes.
static void set_choices(SynthItem *it, Rng *r, const char *const *labels, int n, int truth) {
    int64_t perm[SYNTH_MAX_CHOICES];
    for (int i = 0; i < n; i++) perm[i] = i;
    rng_shuffle(r, perm, n);
    for (int i = 0; i < n; i++) {
        it->choices[i] = labels[perm[i]];
        if (perm[i] == truth) it->answer = i;
    }
    it->n_choices = n;
}

// A single sound of length in [lo, hi] s (bounded by the clip) at a random place in the clip.
static SynthEvent place_one(Rng *r, double clip_s, SynthSound kind, double lo, double hi) {
    SynthEvent ev = {.kind = kind, .rms = 0.25};
    if (hi > clip_s - 0.2) hi = clip_s - 0.2;
    if (lo > hi) lo = hi;
    ev.dur = uniform(r, lo, hi);
    ev.start = uniform(r, 0.1, clip_s - 0.1 - ev.dur);
    return ev;
}

// Log-uniform clip length in [lo_s, it->max_clip_s] s: short clips are common, as in the real sets.
static double clip_length(const SynthItem *it, Rng *r, double lo_s) {
    if (lo_s < 1.0) lo_s = 1.0;
    double hi_s = it->max_clip_s > lo_s ? it->max_clip_s : lo_s;
    return lo_s * exp(rng_uniform(r) * log(hi_s / lo_s));
}

static double family_beeps(SynthItem *it, Rng *r) {
    static const char *labels[] = {"1", "2", "3", "4"};
    static const char *questions[] = {"How many beeps are there in the audio?",
                                      "Count the beeps in this audio clip. How many are there?",
                                      "How many times does the tone beep?"};
    int n = 1 + (int)rng_below(r, 4);
    double f = uniform(r, 400, 2000), dur = uniform(r, 0.08, 0.2), total = 0;
    double gaps[SYNTH_MAX_EVENTS];
    for (int k = 0; k < n; k++) {
        gaps[k] = k ? uniform(r, 0.15, 0.35) : 0;
        total += gaps[k] + dur;
    }
    double clip = clip_length(it, r, total + 0.4);
    double t = uniform(r, 0.2, clip - 0.2 - total);
    for (int k = 0; k < n; k++) {
        t += gaps[k];
        it->events[k] = (SynthEvent){.kind = SYNTH_TONE, .start = t, .dur = dur, .rms = 0.25, .f0 = f};
        t += dur;
    }
    it->n_events = n;
    it->question = pick(r, questions, 3);
    set_choices(it, r, labels, 4, n - 1);
    return clip;
}

// One steady tone over the whole clip at a narrow level and SNR, its frequency in one of three narrow
// bands far apart on the mel scale: every frame of the clip carries the class (measured in
// tests/data/test_synth.c, test_pitch_audible).
static double family_pitch(SynthItem *it, Rng *r) {
    static const char *labels[] = {"low", "medium", "high"};
    static const char *questions[] = {"Is the pitch of the tone low, medium or high?",
                                      "What is the pitch of the tone in the audio?"};
    int cls = (int)rng_below(r, 3);
    double clip = clip_length(it, r, 1.0);
    it->events[0] = (SynthEvent){.kind = SYNTH_TONE, .start = 0.05, .dur = clip - 0.1, .rms = 0.25,
                                 .f0 = uniform(r, SYNTH_PITCH_HZ[cls][0], SYNTH_PITCH_HZ[cls][1])};
    it->n_events = 1;
    it->snr_db = uniform(r, 30, 40);
    it->peak_dbfs = uniform(r, -6, -3);
    it->question = pick(r, questions, 2);
    set_choices(it, r, labels, 3, cls);
    return clip;
}

static double family_louder(SynthItem *it, Rng *r) {
    static const char *labels[] = {"first", "second"};
    static const char *questions[] = {"Two sounds play one after the other. Which one is louder?",
                                      "Which of the two sounds is louder, the first or the second?"};
    int louder = (int)rng_below(r, 2);
    SynthSound kind = rng_below(r, 2) ? SYNTH_NOISE : SYNTH_TONE;
    double f = uniform(r, 300, 1500), diff_db = uniform(r, 6, 18);
    double clip = clip_length(it, r, 1.0), half = clip / 2;
    // Equal durations, one sound inside each half: the louder half has the larger RMS.
    double dur = uniform(r, 0.3, fmin(1.5, half - 0.2));
    for (int k = 0; k < 2; k++) {
        double rms = k == louder ? 0.25 : 0.25 * pow(10, -diff_db / 20);
        double start = k * half + uniform(r, 0.1, half - 0.1 - dur);
        it->events[k] = (SynthEvent){.kind = kind, .start = start, .dur = dur, .rms = rms, .f0 = f};
    }
    it->n_events = 2;
    it->question = pick(r, questions, 2);
    set_choices(it, r, labels, 2, louder);
    return clip;
}

static double family_sweep(SynthItem *it, Rng *r, int sample_rate) {
    static const char *labels[] = {"rising", "falling"};
    static const char *questions[] = {"Is the pitch of the sound rising or falling?",
                                      "Does the sweep in the audio go up or down in pitch? Is it rising or falling?"};
    int falling = (int)rng_below(r, 2);
    double lo = uniform(r, 150, 400), hi = uniform(r, 1200, fmin(3500, 0.4 * sample_rate));
    double clip = clip_length(it, r, 1.0);
    it->events[0] = place_one(r, clip, SYNTH_CHIRP, 0.5, 4.0);
    it->events[0].f0 = falling ? hi : lo;
    it->events[0].f1 = falling ? lo : hi;
    it->n_events = 1;
    it->question = pick(r, questions, 2);
    set_choices(it, r, labels, 2, falling);
    return clip;
}

static double family_tone_noise(SynthItem *it, Rng *r) {
    static const char *labels[] = {"tone", "noise"};
    static const char *questions[] = {"Is the sound in the audio a pure tone or noise?",
                                      "What kind of sound is played: a tone or noise?"};
    int noise = (int)rng_below(r, 2);
    double clip = clip_length(it, r, 1.0);
    it->events[0] = place_one(r, clip, noise ? SYNTH_NOISE : SYNTH_TONE, 0.5, 4.0);
    it->events[0].f0 = uniform(r, 200, 2500);
    it->n_events = 1;
    it->question = pick(r, questions, 2);
    set_choices(it, r, labels, 2, noise);
    return clip;
}

void synth_item(SynthItem *it, uint64_t seed, int64_t index, int is_test, double max_clip_s, unsigned families) {
    static const int rates[] = {8000, 16000, 22050, 44100, 48000};
    memset(it, 0, sizeof *it);
    it->max_clip_s = max_clip_s;
    Rng r;
    rng_init(&r, seed, TAG_ITEM | (uint64_t)index);
    it->index = index;
    it->family = family_of(index, families);
    it->is_test = is_test;
    it->sample_rate = rates[rng_below(&r, 5)];
    it->channels = rng_below(&r, 4) == 0 ? 2 : 1;
    it->float_wav = rng_below(&r, 5) == 0;
    it->snr_db = uniform(&r, 6, 36);
    it->peak_dbfs = uniform(&r, -25, -1);
    it->ch1_gain = uniform(&r, 0.5, 1.0);
    double clip = 0;
    switch (it->family) {
    case SYNTH_BEEPS: clip = family_beeps(it, &r); break;
    case SYNTH_PITCH: clip = family_pitch(it, &r); break;
    case SYNTH_LOUDER: clip = family_louder(it, &r); break;
    case SYNTH_SWEEP: clip = family_sweep(it, &r, it->sample_rate); break;
    default: clip = family_tone_noise(it, &r); break;
    }
    it->difficulty = DIFFICULTY[it->snr_db >= 20 ? 0 : it->snr_db >= 12 ? 1 : 2];
    it->frames = (int64_t)ceil(clip * it->sample_rate);
}

// Uniform white noise in [-1, 1): RMS 1/sqrt(3).
static float noise_sample(Rng *r) { return (float)((int32_t)rng_u32(r)) * (1.0f / 2147483648.0f); }

// Adds one sound to the mono foreground x[frames], with 10 ms raised-cosine on/off ramps (no clicks).
static void render_event(const SynthEvent *ev, int sample_rate, Rng *r, float *x, int64_t frames) {
    int64_t t0 = (int64_t)llround(ev->start * sample_rate), n = (int64_t)llround(ev->dur * sample_rate);
    if (t0 + n > frames) n = frames - t0;
    int64_t ramp = (int64_t)(0.01 * sample_rate);
    if (ramp > n / 4) ramp = n / 4;
    double amp = ev->kind == SYNTH_NOISE ? ev->rms * sqrt(3.0) : ev->rms * sqrt(2.0);
    double phase = 0, f = ev->f0, step = 2 * M_PI / sample_rate;
    double ratio = ev->kind == SYNTH_CHIRP ? pow(ev->f1 / ev->f0, 1.0 / (double)n) : 1.0;
    for (int64_t i = 0; i < n; i++) {
        double env = 1.0;
        if (i < ramp) env = 0.5 - 0.5 * cos(M_PI * (double)i / (double)ramp);
        else if (i >= n - ramp) env = 0.5 - 0.5 * cos(M_PI * (double)(n - 1 - i) / (double)ramp);
        double v;
        if (ev->kind == SYNTH_NOISE) {
            v = noise_sample(r);
        } else {
            v = sin(phase);
            phase += step * f;
            if (phase > 2 * M_PI) phase -= 2 * M_PI;
            f *= ratio;
        }
        x[t0 + i] += (float)(amp * env * v);
    }
}

float *synth_render(const SynthItem *it, uint64_t seed) {
    Rng r;
    rng_init(&r, seed, TAG_AUDIO | (uint64_t)it->index);
    int64_t frames = it->frames;
    int ch = it->channels;
    float *fg = callocCheck((size_t)frames, sizeof(float));  // [frames] mono foreground
    double quietest = INFINITY;
    for (int k = 0; k < it->n_events; k++) {
        render_event(&it->events[k], it->sample_rate, &r, fg, frames);
        quietest = fmin(quietest, it->events[k].rms);
    }
    float bg = (float)(quietest * pow(10, -it->snr_db / 20) * sqrt(3.0));  // uniform noise amplitude
    float *x = mallocCheck((size_t)(frames * ch) * sizeof(float));  // [frames, ch]
    float peak = 0;
    for (int64_t t = 0; t < frames; t++)
        for (int c = 0; c < ch; c++) {
            float v = fg[t] * (c ? (float)it->ch1_gain : 1.0f) + bg * noise_sample(&r);
            x[t * ch + c] = v;
            peak = fmaxf(peak, fabsf(v));
        }
    free(fg);
    float scale = (float)pow(10, it->peak_dbfs / 20) / peak;
    for (int64_t i = 0; i < frames * ch; i++) x[i] *= scale;
    return x;
}

void synth_split(uint64_t seed, int64_t n, double test_frac, uint8_t *is_test) {
    int64_t n_test = llround((double)n * test_frac);
    if (n_test < 0) n_test = 0;
    if (n_test > n) n_test = n;
    int64_t *perm = mallocCheck((size_t)(n ? n : 1) * sizeof(int64_t));
    for (int64_t i = 0; i < n; i++) perm[i] = i;
    Rng r;
    rng_init(&r, seed, TAG_SPLIT);
    rng_shuffle(&r, perm, n);
    memset(is_test, 0, (size_t)n);
    for (int64_t i = 0; i < n_test; i++) is_test[perm[i]] = 1;
    free(perm);
}

// Writes one clip as WAV through an AtomicFile (libsndfile on its descriptor, so the rename
// happens only once the whole file, header included, is on disk).
static int write_wav(const char *path, const SynthItem *it, const float *x, Err *e) {
    AtomicFile af;
    if (atomic_open(&af, path, e)) return -1;
    SF_INFO info = {.samplerate = it->sample_rate, .channels = it->channels,
                    .format = SF_FORMAT_WAV | (it->float_wav ? SF_FORMAT_FLOAT : SF_FORMAT_PCM_16)};
    SNDFILE *sf = sf_open_fd(fileno(af.f), SFM_WRITE, &info, 0);
    if (!sf) {
        atomic_abort(&af);
        return err_set(e, "%s: cannot write WAV: %s", path, sf_strerror(NULL));
    }
    // The PEAK chunk carries a time stamp; without it the same seed gives the same bytes.
    sf_command(sf, SFC_SET_ADD_PEAK_CHUNK, NULL, SF_FALSE);
    sf_count_t got = sf_writef_float(sf, x, it->frames);
    int bad = got != it->frames;
    if (sf_close(sf) != 0) bad = 1;
    if (bad) {
        atomic_abort(&af);
        return err_set(e, "%s: WAV write failed", path);
    }
    return atomic_commit(&af, e);
}

static json_t *item_r1aqa_json(const SynthItem *it, const char *split) {
    char audio[64];
    snprintf(audio, sizeof audio, "audio/q%06lld.wav", (long long)it->index);
    json_t *choices = json_array();
    for (int i = 0; i < it->n_choices; i++) json_array_append_new(choices, json_string(it->choices[i]));
    json_t *o = json_object();
    json_object_set_new(o, "id", json_integer(it->index));
    json_object_set_new(o, "question_text", json_string(it->question));
    json_object_set_new(o, "multi_choice", choices);
    json_object_set_new(o, "answer", json_integer(it->answer));
    json_object_set_new(o, "audio_path", json_string(audio));
    json_object_set_new(o, "dataset_name", json_string("synthetic"));
    json_object_set_new(o, "task", json_string("sound"));
    json_object_set_new(o, "category", json_string("Perception"));
    json_object_set_new(o, "sub-category", json_string(FAMILY_NAMES[it->family]));
    json_object_set_new(o, "difficulty", json_string(it->difficulty));
    json_object_set_new(o, "split", json_string(split));
    return o;
}

static json_t *item_mmau_json(const SynthItem *it) {
    char id[64], audio[64];
    snprintf(id, sizeof id, "synth-%06lld", (long long)it->index);
    snprintf(audio, sizeof audio, "./audio/q%06lld.wav", (long long)it->index);
    json_t *choices = json_array();
    for (int i = 0; i < it->n_choices; i++) json_array_append_new(choices, json_string(it->choices[i]));
    json_t *o = json_object();
    json_object_set_new(o, "id", json_string(id));
    json_object_set_new(o, "audio_id", json_string(audio));
    json_object_set_new(o, "question", json_string(it->question));
    json_object_set_new(o, "choices", choices);
    json_object_set_new(o, "answer", json_string(it->choices[it->answer]));
    json_object_set_new(o, "dataset", json_string("synthetic"));
    json_object_set_new(o, "task", json_string("sound"));
    json_object_set_new(o, "split", json_string("test"));
    json_object_set_new(o, "category", json_string("Perception"));
    json_object_set_new(o, "sub-category", json_string(FAMILY_NAMES[it->family]));
    json_object_set_new(o, "difficulty", json_string(it->difficulty));
    return o;
}

// Writes lines (train.jsonl / test.jsonl: one compact object per line, Python json.dumps spacing).
static int write_lines(const char *path, json_t *items, Err *e) {
    AtomicFile af;
    if (atomic_open(&af, path, e)) return -1;
    size_t i;
    json_t *o;
    json_array_foreach(items, i, o) {
        if (json_dumpf(o, af.f, JSON_PRESERVE_ORDER) != 0 || fputc('\n', af.f) == EOF) {
            atomic_abort(&af);
            return err_set(e, "%s: write failed", path);
        }
    }
    return atomic_commit(&af, e);
}

static int write_array(const char *path, json_t *items, Err *e) {
    AtomicFile af;
    if (atomic_open(&af, path, e)) return -1;
    if (json_dumpf(items, af.f, JSON_INDENT(2) | JSON_PRESERVE_ORDER) != 0 || fputc('\n', af.f) == EOF) {
        atomic_abort(&af);
        return err_set(e, "%s: write failed", path);
    }
    return atomic_commit(&af, e);
}

static void summary_add(SynthSummary *s, const SynthItem *it) {
    int sp = it->is_test;
    s->n[sp]++;
    s->family[sp][it->family]++;
    s->answer[sp][it->answer]++;
    for (int d = 0; d < 3; d++) s->difficulty[sp][d] += it->difficulty == DIFFICULTY[d];
    s->stereo += it->channels == 2;
    s->float_wav += it->float_wav;
    s->audio_seconds += (double)it->frames / it->sample_rate;
}

int synth_generate(const SynthOptions *opt, SynthSummary *sum, Err *e) {
    if (opt->n <= 0) return err_set(e, "synthetic data: --n must be positive (got %lld)", (long long)opt->n);
    if (!(opt->test_frac >= 0 && opt->test_frac <= 1))
        return err_set(e, "synthetic data: test fraction %g not in [0, 1]", opt->test_frac);
    double max_clip_s = opt->max_clip_s ? opt->max_clip_s : SYNTH_MAX_CLIP_S;
    if (!(max_clip_s >= SYNTH_MIN_MAX_CLIP_S && max_clip_s <= 30))
        return err_set(e, "synthetic data: longest clip %g s not in [%g, 30] s", max_clip_s, SYNTH_MIN_MAX_CLIP_S);
    if (opt->families >> SYNTH_N_FAMILIES)
        return err_set(e, "synthetic data: family mask 0x%x names no family above %d", opt->families, SYNTH_N_FAMILIES - 1);
    char dir[4096], path[4200];
    path_join(dir, sizeof dir, opt->out_dir, "audio");
    if (dir_make(dir, e)) return -1;

    SynthSummary s = {0};
    uint8_t *is_test = mallocCheck((size_t)opt->n);
    synth_split(opt->seed, opt->n, opt->test_frac, is_test);
    json_t *lines[2] = {json_array(), json_array()}, *mmau = json_array();
    int rc = 0;
    for (int64_t i = 0; i < opt->n && rc == 0; i++) {
        SynthItem it;
        synth_item(&it, opt->seed, i, is_test[i], max_clip_s, opt->families);
        float *x = synth_render(&it, opt->seed);
        char name[64];
        snprintf(name, sizeof name, "q%06lld.wav", (long long)i);
        rc = write_wav(path_join(path, sizeof path, dir, name), &it, x, e);
        free(x);
        json_array_append_new(lines[it.is_test], item_r1aqa_json(&it, it.is_test ? "test" : "train"));
        if (it.is_test) json_array_append_new(mmau, item_mmau_json(&it));
        summary_add(&s, &it);
    }
    // The JSON files last: a crash before this point leaves no data set that looks complete.
    if (rc == 0) rc = write_lines(path_join(path, sizeof path, opt->out_dir, "train.jsonl"), lines[0], e);
    if (rc == 0) rc = write_lines(path_join(path, sizeof path, opt->out_dir, "test.jsonl"), lines[1], e);
    if (rc == 0) rc = write_array(path_join(path, sizeof path, opt->out_dir, "test-mmau.json"), mmau, e);
    json_decref(lines[0]);
    json_decref(lines[1]);
    json_decref(mmau);
    free(is_test);
    if (sum) *sum = s;
    return rc;
}

void synth_summary_print(const SynthSummary *s, FILE *f) {
    static const char *split[2] = {"train", "test"};
    fprintf(f, "%-6s %6s", "split", "total");
    for (int k = 0; k < SYNTH_N_FAMILIES; k++) fprintf(f, " %10s", FAMILY_NAMES[k]);
    for (int a = 0; a < SYNTH_MAX_CHOICES; a++) fprintf(f, "   ans=%d", a);
    for (int d = 0; d < 3; d++) fprintf(f, " %7s", DIFFICULTY[d]);
    fputc('\n', f);
    for (int sp = 0; sp < 2; sp++) {
        fprintf(f, "%-6s %6lld", split[sp], (long long)s->n[sp]);
        for (int k = 0; k < SYNTH_N_FAMILIES; k++) fprintf(f, " %10lld", (long long)s->family[sp][k]);
        for (int a = 0; a < SYNTH_MAX_CHOICES; a++) fprintf(f, " %7lld", (long long)s->answer[sp][a]);
        for (int d = 0; d < 3; d++) fprintf(f, " %7lld", (long long)s->difficulty[sp][d]);
        fputc('\n', f);
    }
    fprintf(f, "audio: %.1f s in all, %lld stereo, %lld float32 WAV\n", s->audio_seconds,
            (long long)s->stereo, (long long)s->float_wav);
}
