// Tests of common/audio/audio: loading WAV/FLAC/OGG at 8-48 kHz, mono by channel 0 or mean, the soxr
// resampler (frequency and amplitude kept, tones above 8 kHz removed), atomic writes, and every bad file.
#include "test.h"
#include "audio/audio.h"
#include "audio/audio_len.h"
#include "util/fileio.h"

#include <sndfile.h>
#include <sys/stat.h>
#include <unistd.h>

// [n * ch] interleaved: channel c holds amp_c * sin(2 pi hz t) (amp_c = amp, then -amp/2, ...).
static float *make_tone(double hz, double amp, int rate, int64_t n, int ch) {
    float *x = mallocCheck((size_t)(n * ch) * sizeof(float));
    for (int64_t i = 0; i < n; i++)
        for (int c = 0; c < ch; c++)
            x[i * ch + c] = (float)((c == 0 ? amp : -amp / (c + 1)) * sin(2.0 * M_PI * hz * (double)i / rate));
    return x;
}

// RMS of x[lo, hi).
static double rms(const float *x, int64_t lo, int64_t hi) {
    double s = 0.0;
    for (int64_t i = lo; i < hi; i++) s += (double)x[i] * x[i];
    return sqrt(s / (double)(hi - lo));
}

// Frequency from upward zero crossings over x[lo, hi) at rate Hz.
static double tone_hz(const float *x, int64_t lo, int64_t hi, int rate) {
    int64_t first = -1, last = -1, count = 0;
    for (int64_t i = lo + 1; i < hi; i++) {
        if (x[i - 1] < 0.0f && x[i] >= 0.0f) {
            if (first < 0) first = i;
            last = i;
            count++;
        }
    }
    return count > 1 ? (double)(count - 1) * rate / (double)(last - first) : 0.0;
}

// A 1 s, 1 kHz tone written at rate in the given format, loaded back: 16 kHz, same pitch and level.
static void check_tone_file(const char *name, int format, int rate, double amp_tol) {
    Err e;
    const char *path = TMP_PATH(name);
    float *x = make_tone(1000.0, 0.5, rate, rate, 1);
    CHECKF(audio_write(path, format, x, rate, 1, rate, &e) == 0, "%s", e.msg);
    free(x);
    Audio a;
    CHECKF(audio_load(path, AUDIO_MONO_FIRST, &a, &e) == 0, "%s", e.msg);
    CHECK_INT(a.n, 16000);
    CHECK_INT(a.rate_in, rate);
    CHECK_INT(a.channels_in, 1);
    CHECK_INT(a.frames_in, rate);
    if (a.n == 16000) {
        CHECK_NEAR(tone_hz(a.samples, 800, 15200, 16000), 1000.0, 0.5);
        CHECK_NEAR(rms(a.samples, 800, 15200), 0.5 / sqrt(2.0), amp_tol);
    }
    audio_free(&a);
}

static void test_load_rates(void) {
    check_tone_file("tone8k.wav", SF_FORMAT_WAV | SF_FORMAT_PCM_16, 8000, 2e-3);
    check_tone_file("tone22k.wav", SF_FORMAT_WAV | SF_FORMAT_PCM_16, 22050, 2e-3);
    check_tone_file("tone44k.wav", SF_FORMAT_WAV | SF_FORMAT_FLOAT, 44100, 2e-3);
    check_tone_file("tone48k.wav", SF_FORMAT_WAV | SF_FORMAT_PCM_16, 48000, 2e-3);
    check_tone_file("tone44k.flac", SF_FORMAT_FLAC | SF_FORMAT_PCM_16, 44100, 2e-3);
    check_tone_file("tone48k.ogg", SF_FORMAT_OGG | SF_FORMAT_VORBIS, 48000, 2e-2);  // lossy
}

static void test_16k_exact(void) {
    // At 16 kHz a float WAV comes back bit for bit (no resampling).
    Err e;
    const char *path = TMP_PATH("exact16k.wav");
    float *x = make_tone(440.0, 0.7, 16000, 1234, 1);
    CHECKF(audio_write_wav(path, x, 1234, 1, 16000, AUDIO_WAV_FLOAT, &e) == 0, "%s", e.msg);
    Audio a;
    CHECKF(audio_load(path, AUDIO_MONO_FIRST, &a, &e) == 0, "%s", e.msg);
    CHECK(a.n == 1234 && memcmp(a.samples, x, 1234 * sizeof(float)) == 0);
    audio_free(&a);
    // 16-bit PCM: within half a step of 1/32768 (libsndfile writes x * 32767, reads / 32768).
    CHECKF(audio_write_wav(path, x, 1234, 1, 16000, AUDIO_WAV_PCM16, &e) == 0, "%s", e.msg);
    CHECKF(audio_load(path, AUDIO_MONO_FIRST, &a, &e) == 0, "%s", e.msg);
    double worst = 0.0;
    for (int i = 0; i < 1234 && a.n == 1234; i++) worst = fmax(worst, fabs(a.samples[i] - x[i]));
    CHECK_NEAR(worst, 0.0, 0.7 / 32768 + 1.0 / 32768);
    audio_free(&a);
    free(x);
}

static void test_stereo(void) {
    Err e;
    const char *path = TMP_PATH("stereo16k.wav");
    enum { N = 4000 };
    float *x = make_tone(300.0, 0.6, 16000, N, 2);  // ch0 = 0.6 s(t), ch1 = -0.3 s(t)
    CHECKF(audio_write_wav(path, x, N, 2, 16000, AUDIO_WAV_FLOAT, &e) == 0, "%s", e.msg);
    Audio a, b;
    CHECKF(audio_load(path, AUDIO_MONO_FIRST, &a, &e) == 0, "%s", e.msg);
    CHECKF(audio_load(path, AUDIO_MONO_MEAN, &b, &e) == 0, "%s", e.msg);
    CHECK_INT(a.channels_in, 2);
    int first_ok = a.n == N, mean_ok = b.n == N;
    for (int i = 0; i < N && first_ok && mean_ok; i++) {
        first_ok &= a.samples[i] == x[2 * i];
        mean_ok &= b.samples[i] == (float)(((double)x[2 * i] + x[2 * i + 1]) / 2.0);
    }
    CHECK(first_ok);
    CHECK(mean_ok);
    audio_free(&a);
    audio_free(&b);
    free(x);
    // 44.1 kHz stereo: channel 0 is resampled, not the mix.
    float *y = make_tone(1000.0, 0.5, 44100, 44100, 2);
    path = TMP_PATH("stereo44k.flac");
    CHECKF(audio_write(path, SF_FORMAT_FLAC | SF_FORMAT_PCM_16, y, 44100, 2, 44100, &e) == 0, "%s", e.msg);
    CHECKF(audio_load(path, AUDIO_MONO_FIRST, &a, &e) == 0, "%s", e.msg);
    CHECKF(audio_load(path, AUDIO_MONO_MEAN, &b, &e) == 0, "%s", e.msg);
    CHECK_NEAR(rms(a.samples, 800, 15200), 0.5 / sqrt(2.0), 2e-3);
    CHECK_NEAR(rms(b.samples, 800, 15200), 0.125 / sqrt(2.0), 2e-3);  // (0.5 - 0.25) / 2
    audio_free(&a);
    audio_free(&b);
    free(y);
}

static void test_resample(void) {
    Err e;
    int64_t m = 0;
    // 1 kHz at 44.1 kHz -> 16 kHz: pitch and level kept.
    float *x = make_tone(1000.0, 0.5, 44100, 88200, 1);
    float *y = audio_resample(x, 88200, 44100, 16000, &m, &e);
    CHECK_INT(m, 32000);
    CHECK_NEAR(tone_hz(y, 1000, 31000, 16000), 1000.0, 0.2);
    CHECK_NEAR(rms(y, 1000, 31000), 0.5 / sqrt(2.0), 1e-3);
    free(x);
    free(y);
    // 10 kHz at 48 kHz is above the 8 kHz Nyquist limit of 16 kHz: removed, not aliased to 6 kHz.
    x = make_tone(10000.0, 0.5, 48000, 96000, 1);
    y = audio_resample(x, 96000, 48000, 16000, &m, &e);
    CHECK_INT(m, 32000);
    double r = rms(y, 1000, 31000);
    CHECKF(r < 1e-4, "10 kHz tone left rms %.3g after resampling to 16 kHz", r);
    free(x);
    free(y);
    // Output length is ceil(n * out / in), as torchaudio's Resample.
    float z[7] = {0};
    y = audio_resample(z, 7, 44100, 16000, &m, &e);
    CHECK_INT(m, 3);
    free(y);
    y = audio_resample(z, 0, 44100, 16000, &m, &e);
    CHECK(y != NULL && m == 0);
    free(y);
    CHECK(audio_resample(z, 7, 0, 16000, &m, &e) == NULL);
    CHECK(strstr(e.msg, "bad arguments") != NULL);
}

// audio_load must fail with a message naming the file and containing why.
static void check_bad(const char *path, const char *why) {
    Err e;
    Audio a;
    e.msg[0] = 0;
    CHECKF(audio_load(path, AUDIO_MONO_FIRST, &a, &e) == -1, "%s loaded", path);
    CHECKF(strstr(e.msg, path) != NULL && strstr(e.msg, why) != NULL, "message \"%s\" lacks \"%s\"", e.msg, why);
    CHECK(a.samples == NULL && a.n == 0);
    printf("  %s\n", e.msg);
}

static void test_bad_files(void) {
    Err e;
    check_bad(TMP_PATH("no_such_file.wav"), "No such file");
    check_bad(TMP_PATH(""), "is a directory");
    const char *text = TMP_PATH("text.wav");
    CHECK(file_write_atomic(text, "this is not audio\n", 18, &e) == 0);
    check_bad(text, "Format not recognised");
    const char *empty = TMP_PATH("empty.wav");
    CHECKF(audio_write_wav(empty, NULL, 0, 1, 16000, AUDIO_WAV_PCM16, &e) == 0, "%s", e.msg);
    check_bad(empty, "no audio frames");
    // Truncated: a 1 s PCM16 WAV cut to 20000 bytes; libsndfile alone would return the 9978 frames left.
    const char *cut = TMP_PATH("truncated.wav");
    float *x = make_tone(440.0, 0.5, 16000, 16000, 1);
    CHECKF(audio_write_wav(cut, x, 16000, 1, 16000, AUDIO_WAV_PCM16, &e) == 0, "%s", e.msg);
    CHECK(truncate(cut, 20000) == 0);
    check_bad(cut, "truncated WAV: header declares 32000 data bytes, file holds 19956");
    // Cut inside the header: no data chunk.
    CHECK(truncate(cut, 30) == 0);
    check_bad(cut, "No 'data' chunk");
    // A FLAC cut in half: its header still promises 1 s.
    const char *flac = TMP_PATH("truncated.flac");
    CHECKF(audio_write(flac, SF_FORMAT_FLAC | SF_FORMAT_PCM_16, x, 16000, 1, 16000, &e) == 0, "%s", e.msg);
    struct stat st;
    CHECK(stat(flac, &st) == 0 && truncate(flac, st.st_size / 2) == 0);
    check_bad(flac, "truncated: read");
    // Over the length limit: 1900 s, written at 1 Hz to stay small.
    const char *slow = TMP_PATH("too_long.wav");
    float *zeros = callocCheck(1900, sizeof(float));
    CHECKF(audio_write_wav(slow, zeros, 1900, 1, 1, AUDIO_WAV_PCM16, &e) == 0, "%s", e.msg);
    check_bad(slow, "too long: 1900 frames at 1 Hz (limit 1800 s)");
    // A rate no audio has (a corrupt header): 1 Hz would take soxr seconds to upsample.
    CHECKF(audio_write_wav(slow, zeros, 100, 1, 1, AUDIO_WAV_PCM16, &e) == 0, "%s", e.msg);
    check_bad(slow, "sample rate 1 Hz outside [1000, 1000000]");
    free(zeros);
    // Finite but huge float samples overflow in the resampling filter.
    const char *huge = TMP_PATH("huge.wav");
    float big[400];
    for (int i = 0; i < 400; i++) big[i] = (i % 2 ? -3e38f : 3e38f);
    CHECKF(audio_write_wav(huge, big, 400, 1, 22050, AUDIO_WAV_FLOAT, &e) == 0, "%s", e.msg);
    check_bad(huge, "not finite after resampling from 22050 Hz");
    // A float WAV holding NaN.
    x[123] = NAN;
    const char *nan_wav = TMP_PATH("nan.wav");
    CHECKF(audio_write_wav(nan_wav, x, 16000, 1, 16000, AUDIO_WAV_FLOAT, &e) == 0, "%s", e.msg);
    check_bad(nan_wav, "non-finite sample at frame 123");
    free(x);
}

// audio_decode (libsndfile virtual I/O) on a file's bytes gives exactly what audio_load gives; bad bytes
// get the error naming the given name.
static void test_decode_memory(void) {
    Err e;
    const char *path = TMP_PATH("memory.flac");
    float *x = make_tone(440.0, 0.5, 22050, 5000, 2);
    CHECKF(audio_write(path, SF_FORMAT_FLAC | SF_FORMAT_PCM_16, x, 5000, 2, 22050, &e) == 0, "%s", e.msg);
    free(x);
    size_t n;
    char *bytes = file_read_all(path, &n, &e);
    Audio a, b;
    CHECKF(audio_load(path, AUDIO_MONO_MEAN, &a, &e) == 0, "%s", e.msg);
    CHECKF(audio_decode(bytes, n, "mem", AUDIO_MONO_MEAN, &b, &e) == 0, "%s", e.msg);
    CHECK(a.n == b.n && a.n > 0 && memcmp(a.samples, b.samples, (size_t)a.n * sizeof(float)) == 0);
    CHECK(b.rate_in == 22050 && b.channels_in == 2 && b.frames_in == 5000);
    audio_free(&a);
    audio_free(&b);
    CHECK(audio_decode(bytes, n / 2, "half.flac", AUDIO_MONO_FIRST, &b, &e) == -1);
    CHECKF(strstr(e.msg, "half.flac: truncated") != NULL, "%s", e.msg);
    CHECK(audio_decode("RIFF", 4, "riff", AUDIO_MONO_FIRST, &b, &e) == -1 && strstr(e.msg, "riff: cannot open audio"));
    CHECK(b.samples == NULL && b.n == 0);
    free(bytes);
}

static void test_write_errors(void) {
    Err e;
    float x[4] = {0};
    CHECK(audio_write_wav(TMP_PATH("no/such/dir/x.wav"), x, 4, 1, 16000, AUDIO_WAV_PCM16, &e) == -1);
    CHECK(strstr(e.msg, "no/such/dir") != NULL);
    CHECK(audio_write(TMP_PATH("bad.wav"), 0x7fff0000, x, 4, 1, 16000, &e) == -1);
    CHECK(strstr(e.msg, "bad format") != NULL);
    CHECK(!path_exists(TMP_PATH("bad.wav")));
    CHECK(audio_write_wav(TMP_PATH("bad.wav"), x, 4, 0, 16000, AUDIO_WAV_PCM16, &e) == -1);
}

int main(void) {
    RUN(test_load_rates);
    RUN(test_16k_exact);
    RUN(test_stereo);
    RUN(test_resample);
    RUN(test_bad_files);
    RUN(test_decode_memory);
    RUN(test_write_errors);
    return test_summary("test_audio");
}
