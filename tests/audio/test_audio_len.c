// The token-count table of qwen2-audio.md section 4.
#include "test.h"
#include "audio/audio_len.h"

static void test_table(void) {
    static const struct { int64_t n; int L, L1, N; } rows[] = {
        {0, 0, 0, 0},         {1, 1, 1, 0},         {160, 1, 1, 0},       {480, 3, 2, 1},
        {16000, 100, 50, 25}, {64000, 400, 200, 100}, {64321, 403, 202, 101},
        {480000, 3000, 1500, 750}, {10000000, 3000, 1500, 750},
    };
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
        int L = audio_valid_frames(rows[i].n);
        CHECK_INT(L, rows[i].L);
        CHECK_INT(audio_encoder_len(L), rows[i].L1);
        CHECK_INT(audio_token_count(L), rows[i].N);
    }
    CHECK_INT(audio_token_count(2), 0);  // L <= 2 -> 0
    CHECK_INT(audio_token_count(4), 1);
}

int main(void) {
    RUN(test_table);
    return test_summary("test_audio_len");
}
