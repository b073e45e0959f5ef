// audio.h: reading audio files into 16 kHz mono float32, band-limited resampling, and writing audio files.
// Any format libsndfile reads (WAV, FLAC, OGG, ...) at any rate and channel count is accepted. Mono is
// channel 0 by default, as the R1-AQA reference (torchaudio.load(...)[0]); the mean of all channels is an
// option. Resampling uses libsoxr (high quality, linear phase), the counterpart of torchaudio's windowed-
// sinc Resample. Integer PCM is scaled to [-1, 1) as torchaudio.load does (int16 / 32768).
#pragma once
#include <stdint.h>

#include "util/check.h"

typedef enum {
    AUDIO_MONO_FIRST = 0,  // channel 0 (the reference)
    AUDIO_MONO_MEAN = 1,   // mean of all channels
} AudioMono;

typedef struct {
    float *samples;     // [n] mono at AUDIO_SAMPLE_RATE (16 kHz)
    int64_t n;          // samples after resampling
    int rate_in;        // the file's sample rate
    int channels_in;    // the file's channel count
    int64_t frames_in;  // the file's frames (before resampling)
} Audio;

// Loads path as mono 16 kHz float32 into *out (free with audio_free). Bad input (missing, unreadable,
// a directory, not audio, 0 frames, truncated, non-finite samples, over 30 minutes) returns -1 with e
// naming the file and the reason; *out is then empty.
int audio_load(const char *path, AudioMono mono, Audio *out, Err *e);
// The same for the bytes of an audio file already in memory (libsndfile virtual I/O); name is used in
// messages.
int audio_decode(const void *data, size_t size, const char *name, AudioMono mono, Audio *out, Err *e);
void audio_free(Audio *a);

// Resamples n mono samples from rate_in to rate_out (Hz). Returns a malloc'd buffer of
// *n_out = ceil(n * rate_out / rate_in) samples (torchaudio's output length); rate_in == rate_out copies.
// Returns NULL and sets e for bad rates or a resampler failure.
float *audio_resample(const float *in, int64_t n, int rate_in, int rate_out, int64_t *n_out, Err *e);

// Writes frames x [frames, channels] (interleaved, nominally in [-1, 1]) atomically to path with libsndfile
// format code sf_format (e.g. SF_FORMAT_FLAC | SF_FORMAT_PCM_16). Returns -1 and sets e on failure.
int audio_write(const char *path, int sf_format, const float *x, int64_t frames, int channels, int rate,
                Err *e);

typedef enum {
    AUDIO_WAV_PCM16 = 0,  // 16-bit PCM (clipped to [-1, 1))
    AUDIO_WAV_FLOAT = 1,  // 32-bit float, exact
} AudioWavSample;
// audio_write as a WAV file of the given sample type.
int audio_write_wav(const char *path, const float *x, int64_t frames, int channels, int rate,
                    AudioWavSample sample, Err *e);
