// mel.h: the Whisper log-mel front end of Qwen2-Audio (qwen2-audio.md section 4), as HF's
// WhisperFeatureExtractor(feature_size=128): 16 kHz mono -> features [128, 3000] + frame mask [3000].
// The clip is cut/zero-padded to 30 s, reflect-padded by 200, framed 400/160 with a periodic Hann window,
// FFT'd (FFTW, float32), |X|^2 (last frame dropped), Slaney mel (128 x 201), log10 clamped to 1e-10 and to
// (global max - 8), then (x + 4) / 4.
// Numerics: float32 throughout, as HF's torch path (torch.stft + float32 matmul), which is what HF runs
// whenever torch is installed; the filter bank is built in float64 and rounded once to float32 as HF does.
// Frames that read only the zero padding are not transformed (their value is known), so a short clip
// costs its own frames. Threads (OpenMP) split the frames of clips of 10 s or more; shorter ones run on
// the calling thread. Every frame is computed the same way on any thread, so results are bit-identical
// for any thread count. Callers that already run one clip per thread should set omp_set_num_threads(1)
// (or OMP_NUM_THREADS=1): OpenMP teams on busy cores spin and run slower.
#pragma once
#include <stdint.h>

#include "audio/audio_len.h"

enum {
    MEL_N_FFT = 400,
    MEL_N_BINS = 201,  // MEL_N_FFT / 2 + 1
    MEL_N_MELS = 128,
    MEL_FRAMES = AUDIO_FRAMES,  // 3000
};

typedef struct MelContext MelContext;

// Builds the filter bank and the FFTW plan. Safe to call from several threads (plan creation is
// serialised inside). One context may then be used by any number of threads at once.
MelContext *mel_context_create(void);
void mel_context_free(MelContext *ctx);

// The Slaney mel scale (HF audio_utils hertz_to_mel / mel_to_hertz, mel_scale="slaney"), float64.
double mel_scale_from_hz(double hz);
double mel_scale_to_hz(double mel);

// The filter bank W [MEL_N_BINS, MEL_N_MELS] (float32, as used), for inspection and tests.
const float *mel_filters(const MelContext *ctx);

// Features of the first min(n, 480000) samples of x (16 kHz mono): features [128, 3000] (row = mel
// band), mask [3000] (1 for the audio_valid_frames(n) valid frames, else 0). Returns the audio-token
// count N = audio_token_count(audio_valid_frames(n)). x may be NULL when n == 0.
int mel_compute(const MelContext *ctx, const float *x, int64_t n, float *features, int32_t *mask);
