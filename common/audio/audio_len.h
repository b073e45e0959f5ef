// audio_len.h: how many mel frames, encoder positions and <|AUDIO|> tokens a clip of n samples gives
// (qwen2-audio.md 3.1 step 9 and 4 step 3). Both the processor (prompt expansion) and the model
// (mask, kept rows) use these, so they live apart from the feature code.
#pragma once
#include <stdint.h>

enum {
    AUDIO_SAMPLE_RATE = 16000,
    AUDIO_HOP = 160,
    AUDIO_MAX_SAMPLES = 480000,  // 30 s
    AUDIO_FRAMES = 3000,         // mel frames per (padded) clip
};

// L: valid mel frames, ceil(min(n, 480000) / 160).
int audio_valid_frames(int64_t n_samples);
// L1: valid encoder positions after the stride-2 conv, (L - 1) // 2 + 1 (floor division).
int audio_encoder_len(int valid_frames);
// N: audio tokens kept after pooling, (L1 - 2) // 2 + 1 (floor division; 0 when L <= 2).
int audio_token_count(int valid_frames);
