// fuzz_tokenizer_file: a tokenizer.json (vocabulary, merges, added tokens, the pre-tokenizer regex)
// through tokenizer_load; an accepted tokenizer then encodes and decodes a fixed text mixing letters,
// digits, spaces, non-ASCII and an added-token-like string.
#include "fuzz.h"
#include "text/tokenizer.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    fuzz_quiet();
    const char *path = fuzz_write_file("tokenizer.json", data, size);
    Err e;
    Tokenizer *tok = tokenizer_load(path, &e);
    if (!tok) return 0;
    static const char text[] = "Hello world 123 <|x|> abcab\xc3\xa9 \xe4\xb8\xad\n\n  x's";
    TokenIds ids = {0};
    if (tokenizer_encode(tok, text, sizeof text - 1, &ids, &e) == 0) {
        for (int i = 0; i < ids.n; i++)
            FUZZ_CHECK(ids.ids[i] >= 0 && ids.ids[i] < tokenizer_vocab_size(tok), "id %d", ids.ids[i]);
        free(tokenizer_decode(tok, ids.ids, ids.n, 1));
    }
    token_ids_free(&ids);
    tokenizer_free(tok);
    return 0;
}
