// feature_signals.h: the 16 kHz test signals of the feature-parity check (tests/audio/feature_inputs.c
// writes them for the HF reference script; test_mel_parity.c regenerates them). Synthetic signals use
// only integer-exact noise (Philox) and double-precision sin, so both machines build the same floats.
#pragma once
#include <stdint.h>

#include "util/check.h"

enum { FEATURE_SIGNALS = 8 };

// Name of signal i in [0, FEATURE_SIGNALS): tone, short_tone, noise_burst, chirp, click, one_sample,
// long_35s, mmau.
const char *feature_signal_name(int i);
// Signal i as a malloc'd [*n] buffer at 16 kHz. "mmau" is the wav at mmau_path loaded (channel 0) and
// resampled to 16 kHz with audio_load. Returns NULL and sets e when that file cannot be loaded.
float *feature_signal_make(int i, const char *mmau_path, int64_t *n, Err *e);
// The real MMAU test-mini clip under the shared data directory (one file; its name is fixed).
#define FEATURE_MMAU_CLIP "mmau/test-mini-audios/3fe64f3d-282c-4bc8-a753-68f8f6c35652.wav"
