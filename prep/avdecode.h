// avdecode.h: any audio or video file FFmpeg reads (mp4, mkv, webm, wav, flac, mp3, ...) -> its first
// audio stream as 16 kHz mono float32, through libavformat (demuxing), libavcodec (decoding) and
// libswresample (downmix and resampling with FFmpeg's defaults, as `ffmpeg -i IN -ac 1 -ar 16000`).
#pragma once
#include <stdint.h>

#include "audio/audio_len.h"
#include "util/check.h"

// Decodes path into *out ([*n] samples at AUDIO_SAMPLE_RATE, malloc'd; caller frees). A file that cannot be
// opened, has no audio stream, fails to decode before its end, or yields no samples returns -1 with e
// naming the file and the reason (FFmpeg's message); *out is then NULL. A file cut short in a way the
// demuxer reports as its end keeps the audio before the cut, as the ffmpeg command line does.
int avdec_load(const char *path, float **out, int64_t *n, Err *e);
