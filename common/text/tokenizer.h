// tokenizer.h: the Qwen2 byte-level BPE tokenizer, byte-exact with Hugging Face `tokenizers`
// (qwen2-audio.md section 5).
// Encode: added/special tokens are matched in the raw text first (leftmost, longest); every other
// segment is NFC-normalised (utf8proc), split by the pre-tokenizer regex (PCRE2, UTF + UCP, JIT), mapped
// byte-to-unicode and merged by BPE rank. BPE runs on token ids with a min-heap of candidate merges
// (rank, then position, as HF's word.rs) and a piece cache keyed by the raw piece bytes.
// The regex's \s is Unicode White_Space, as in HF (Oniguruma): U+0085 is whitespace and U+FEFF is not;
// the JavaScript port used in CI differs on both (tests/text/test_tokenizer.c, test_hf_whitespace).
// Decode: tokens back to bytes, then UTF-8 with U+FFFD for ill-formed subparts; never fails.
// Text that is not valid UTF-8 is rejected with an error naming the byte offset (no silent repair: a
// corrupt data line should be seen, not trained on).
// A Tokenizer is read-only after loading except for its piece cache and scratch buffers: use one per
// thread for encoding (decoding and lookups are safe to share).
#pragma once
#include <stddef.h>
#include <stdint.h>

#include "util/check.h"

typedef struct Tokenizer Tokenizer;

// A growable array of token ids. Zero-initialise ({0}); free with token_ids_free.
typedef struct {
    int32_t *ids;
    int n, cap;
} TokenIds;

void token_ids_push(TokenIds *t, int32_t id);
void token_ids_free(TokenIds *t);

// path: a tokenizer.json file, or a model directory holding tokenizer.json, or else vocab.json +
// merges.txt (+ tokenizer_config.json for added tokens, `added_tokens_decoder`; read only in this
// layout: tokenizer.json carries its own added_tokens). Supported: byte-level BPE with an NFC (or no)
// normalizer, a Split(regex, Isolated) + ByteLevel pre-tokenizer, added tokens without
// lstrip/rstrip/single_word. Anything else, and malformed files, return NULL with e set (naming the
// file and what is wrong).
Tokenizer *tokenizer_load(const char *path, Err *e);
void tokenizer_free(Tokenizer *tok);

// Appends the ids of text[0..len) to out. Returns 0, or -1 with e set when text is not valid UTF-8
// ("invalid UTF-8 at byte offset N"); out is unchanged on error.
int tokenizer_encode(Tokenizer *tok, const char *text, size_t len, TokenIds *out, Err *e);
// Decodes ids to a NUL-terminated UTF-8 string (caller frees). skip_special drops added tokens marked
// special; ids with no token (the model's padded embedding rows) are dropped, as HF does.
char *tokenizer_decode(const Tokenizer *tok, const int32_t *ids, int n, int skip_special);
// The id of a token given by its vocabulary string (an added token's content, or the byte-level form
// as in vocab.json), or -1.
int32_t tokenizer_token_id(const Tokenizer *tok, const char *token);
// One more than the largest token id.
int tokenizer_vocab_size(const Tokenizer *tok);
// Whether id is an added token marked special.
int tokenizer_is_special(const Tokenizer *tok, int32_t id);
// Entries in the piece cache (for tests and benchmarks) and a way to empty it.
int tokenizer_cache_size(const Tokenizer *tok);
void tokenizer_cache_clear(Tokenizer *tok);
