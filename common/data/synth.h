// synth.h: a synthetic audio-question data set whose answers are audible, for tests and for
// checking that training moves accuracy. Five families (sub-category = family name):
//   beeps       "How many beeps ...?"            1 / 2 / 3 / 4        (count of tone bursts)
//   pitch       low / medium / high              (one tone over the whole clip: 200-260, 800-860,
//                                                 2500-2750 Hz, far apart on the mel scale)
//   louder      first / second                   (two equal-length sounds, 6-18 dB apart)
//   sweep       rising / falling                 (one logarithmic frequency sweep)
//   tone_noise  tone / noise                     (one burst: a sine or white noise)
// Every clip varies sample rate (8k, 16k, 22.05k, 44.1k, 48k), length (1 s to the longest clip length,
// default 10 s, log-uniform; the beeps family needs up to 2.25 s, so the longest is at least 2.5 s), peak
// level (-25 to -1 dBFS), background white noise (SNR 6-36 dB against the quietest foreground
// sound), channels (1 in 4 stereo: both channels carry the sounds, independent background noise)
// and WAV encoding (1 in 5 float32, else 16-bit PCM). Choices are shuffled per question. The pitch family
// narrows the level (-3 to -6 dBFS) and the SNR (30-40 dB): with its tone filling the clip, the class is
// many within-class standard deviations apart at the log-mel input, so a small model hears it.
// Difficulty is set by the SNR alone: easy >= 20 dB, medium 12-20 dB, hard < 12 dB.
// A subset of the families may be chosen (SynthOptions.families): question i then belongs to the
// (i mod k)-th of the k chosen families, in the order above.
// Everything is a pure function of (seed, question index, families) through Philox streams, so a seed
// gives the same bytes on every run.
// Output of synth_generate in DIR: audio/qNNNNNN.wav, train.jsonl and test.jsonl (R1-AQA lines,
// relative audio_path "audio/qNNNNNN.wav", plus task/category/sub-category/difficulty/split keys),
// test-mmau.json (the test split in MMAU form: id "synth-NNNNNN", audio_id "./audio/qNNNNNN.wav",
// dataset "synthetic", task "sound", category "Perception"). Every file is written to a temporary
// name and renamed; audio first, the JSON files last, so a crash never leaves a complete-looking set.
#pragma once
#include <stdint.h>
#include <stdio.h>

#include "util/check.h"

typedef enum {
    SYNTH_BEEPS = 0,
    SYNTH_PITCH,
    SYNTH_LOUDER,
    SYNTH_SWEEP,
    SYNTH_TONE_NOISE,
    SYNTH_N_FAMILIES
} SynthFamily;

enum { SYNTH_MAX_CHOICES = 4, SYNTH_MAX_EVENTS = 4 };
#define SYNTH_MAX_CLIP_S 10.0     // default longest clip, s
#define SYNTH_MIN_MAX_CLIP_S 2.5  // the longest clip may not be shorter (four beeps and their gaps fit)

typedef enum { SYNTH_TONE, SYNTH_CHIRP, SYNTH_NOISE } SynthSound;

// The pitch family's tone frequency range per class (low, medium, high), Hz.
extern const double SYNTH_PITCH_HZ[3][2];

// One foreground sound: times in seconds, level as RMS before the final peak scaling.
typedef struct {
    SynthSound kind;
    double start, dur;
    double rms;
    double f0, f1;  // Hz; a chirp goes from f0 to f1, a tone uses f0
} SynthEvent;

typedef struct {
    int64_t index;
    SynthFamily family;
    int is_test;
    int sample_rate, channels;
    int64_t frames;
    int float_wav;          // 1: 32-bit float WAV, 0: 16-bit PCM
    double snr_db;          // quietest foreground sound over the background noise
    double peak_dbfs;       // peak level of the written clip
    double ch1_gain;        // stereo: gain of the sounds in the second channel
    double max_clip_s;      // longest clip length drawn, s
    const char *difficulty; // "easy" | "medium" | "hard"
    const char *question;
    const char *choices[SYNTH_MAX_CHOICES];  // shuffled
    int n_choices;
    int answer;             // index into choices
    int n_events;
    SynthEvent events[SYNTH_MAX_EVENTS];
} SynthItem;

typedef struct {
    const char *out_dir;
    int64_t n;
    uint64_t seed;
    double test_frac;  // share of questions in the test split, [0, 1]
    double max_clip_s; // longest clip, s, in [SYNTH_MIN_MAX_CLIP_S, 30]; 0 = SYNTH_MAX_CLIP_S
    unsigned families; // bit f set: family f is drawn; 0 = all families
} SynthOptions;

typedef struct {
    int64_t n[2];  // [train, test]
    int64_t family[2][SYNTH_N_FAMILIES];
    int64_t answer[2][SYNTH_MAX_CHOICES];
    int64_t difficulty[2][3];  // easy, medium, hard
    int64_t stereo, float_wav;
    double audio_seconds;
} SynthSummary;

const char *synth_family_name(SynthFamily f);
// Parses a comma-separated list of family names ("pitch,tone_noise") into a SynthOptions.families
// mask; an unknown or empty name is an error naming it.
int synth_families_parse(const char *list, unsigned *mask, Err *e);
// Draws question `index` (the (index mod k)-th of the k families in the mask; 0 = all) for the given
// split, clips at most max_clip_s long (synth_generate checks the range).
void synth_item(SynthItem *it, uint64_t seed, int64_t index, int is_test, double max_clip_s, unsigned families);
// The clip of an item: [frames, channels] interleaved, peak-scaled (caller frees).
float *synth_render(const SynthItem *it, uint64_t seed);
// Which questions are in the test split: is_test[i] for i < n (round(n * test_frac) of them).
void synth_split(uint64_t seed, int64_t n, double test_frac, uint8_t *is_test);
// Writes the whole data set (see above). sum (optional) receives the counts.
int synth_generate(const SynthOptions *opt, SynthSummary *sum, Err *e);
void synth_summary_print(const SynthSummary *s, FILE *f);
