#include "audio/audio_len.h"

// Python's // on ints: rounds toward minus infinity (C's / rounds toward zero).
static int floordiv(int a, int b) { return a / b - ((a % b != 0) && ((a < 0) != (b < 0))); }

int audio_valid_frames(int64_t n_samples) {
    if (n_samples <= 0) return 0;
    if (n_samples > AUDIO_MAX_SAMPLES) n_samples = AUDIO_MAX_SAMPLES;
    return (int)((n_samples + AUDIO_HOP - 1) / AUDIO_HOP);
}

int audio_encoder_len(int valid_frames) { return floordiv(valid_frames - 1, 2) + 1; }

int audio_token_count(int valid_frames) {
    int n = floordiv(audio_encoder_len(valid_frames) - 2, 2) + 1;
    return n > 0 ? n : 0;
}
