// fuzz_audio: the bytes of an audio file (any format libsndfile reads) through audio_decode (libsndfile
// virtual I/O, then the same checks, mixdown and resampling as audio_load). Invariant: accepted audio
// has finite samples, and as many as torchaudio's resampled length of the input.
#include <math.h>

#include "audio/audio.h"
#include "audio/audio_len.h"
#include "fuzz.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    fuzz_quiet();
    Audio a;
    Err e;
    if (audio_decode(data, size, "fuzz.audio", (size > 0 && (data[size - 1] & 1)) ? AUDIO_MONO_MEAN : AUDIO_MONO_FIRST,
                     &a, &e) != 0)
        return 0;
    FUZZ_CHECK(a.n > 0 && a.frames_in > 0 && a.rate_in > 0 && a.channels_in > 0, "empty audio accepted");
    int64_t want = (a.frames_in * AUDIO_SAMPLE_RATE + a.rate_in - 1) / a.rate_in;  // ceil; < 2^63 (30 min cap)
    FUZZ_CHECK(a.n == want, "%lld samples from %lld frames at %d Hz, want %lld", (long long)a.n,
               (long long)a.frames_in, a.rate_in, (long long)want);
    for (int64_t i = 0; i < a.n; i++) FUZZ_CHECK(isfinite(a.samples[i]), "sample %lld not finite", (long long)i);
    audio_free(&a);
    return 0;
}
