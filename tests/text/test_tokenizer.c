// Tests of common/text: the 133-id Qwen2-Audio check (qwen2-audio.md section 6), chat rendering,
// <|AUDIO|> expansion, both tokenizer file layouts and merge encodings, UTF-8 handling (invalid input,
// lossy decode), special tokens, the piece cache and its hash map, the splits where HF and the
// JavaScript port differ, bad tokenizer files, and the aqa-tokenize tool (argv[1]).
#include <jansson.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#include "audio/audio_len.h"
#include "test.h"
#include "text/processor.h"
#include "text/strmap.h"
#include "text/utf8.h"
#include "text_fixture.h"

static Tokenizer *tok;  // the Qwen2-Audio tokenizer (tokenizer.json layout)
static const char *tok_dir;
static const char *tool_path;

static void encode_ok(Tokenizer *t, const char *s, TokenIds *out) {
    Err e;
    out->n = 0;
    CHECKF(tokenizer_encode(t, s, strlen(s), out, &e) == 0, "%s", e.msg);
}

static int ids_eq(const TokenIds *a, const int32_t *b, int n) {
    return a->n == n && memcmp(a->ids, b, (size_t)n * sizeof(int32_t)) == 0;
}

static void test_spec_133(void) {
    // One user turn [audio of 64321 samples, "What's that sound?"]: the HF integration test's ids.
    int n_audio = audio_token_count(audio_valid_frames(64321));
    CHECK_INT(n_audio, 101);
    int32_t want[133];
    int n = 0;
    const int32_t head[] = {151644, 8948, 198, 2610, 525, 264, 10950, 17847, 13, 151645, 198, 151644, 872, 198,
                            14755, 220, 16, 25, 220, 151647};
    const int32_t tail[] = {151648, 198, 3838, 594, 429, 5112, 30, 151645, 198, 151644, 77091, 198};
    for (size_t i = 0; i < sizeof head / sizeof head[0]; i++) want[n++] = head[i];
    for (int i = 0; i < 101; i++) want[n++] = 151646;
    for (size_t i = 0; i < sizeof tail / sizeof tail[0]; i++) want[n++] = tail[i];
    CHECK_INT(n, 133);
    TokenIds ids = {0};
    Err e;
    CHECKF(processor_encode_aqa_prompt(tok, "What's that sound?", n_audio, &ids, &e) == 0, "%s", e.msg);
    CHECK_INT(ids.n, 133);
    CHECK(ids_eq(&ids, want, n));
    token_ids_free(&ids);
}

static void test_chat_render(void) {
    Err e;
    ChatItem items[] = {{CHAT_ITEM_AUDIO, NULL}, {CHAT_ITEM_TEXT, "What's that sound?"}};
    ChatMessage m = {"user", NULL, items, 2};
    char *s = chat_render(&m, 1, 1, &e);
    CHECK_STR(s, "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\nAudio 1: "
                 "<|audio_bos|><|AUDIO|><|audio_eos|>\nWhat's that sound?<|im_end|>\n<|im_start|>assistant\n");
    free(s);
    // A system message replaces the default one; audios are numbered across the conversation.
    ChatItem two[] = {{CHAT_ITEM_AUDIO, NULL}, {CHAT_ITEM_AUDIO, NULL}};
    ChatMessage conv[] = {{"system", "S", NULL, 0}, {"user", NULL, two, 2}, {"user", NULL, items, 1}};
    s = chat_render(conv, 3, 0, &e);
    CHECK_STR(s, "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nAudio 1: <|audio_bos|><|AUDIO|><|audio_eos|>\n"
                 "Audio 2: <|audio_bos|><|AUDIO|><|audio_eos|>\n<|im_end|>\n<|im_start|>user\nAudio 3: "
                 "<|audio_bos|><|AUDIO|><|audio_eos|>\n<|im_end|>\n");
    free(s);
    ChatMessage bad = {NULL, "x", NULL, 0};
    CHECK(chat_render(&bad, 1, 1, &e) == NULL);
    CHECK(strstr(e.msg, "missing role") != NULL);
    ChatItem no_text = {CHAT_ITEM_TEXT, NULL};
    ChatMessage bad2 = {"user", NULL, &no_text, 1};
    CHECK(chat_render(&bad2, 1, 1, &e) == NULL);
    CHECK(strstr(e.msg, "item 0") != NULL);
}

static void test_expand_audio(void) {
    Err e;
    int n2[] = {2, 1};
    char *s = processor_expand_audio("a<|audio_bos|><|AUDIO|><|audio_eos|>b<|AUDIO|>c", n2, 2, &e);
    // The first is already wrapped; the bare second one gets wrapped.
    CHECK_STR(s, "a<|audio_bos|><|AUDIO|><|AUDIO|><|audio_eos|>b<|audio_bos|><|AUDIO|><|audio_eos|>c");
    free(s);
    int n1[] = {3};
    s = processor_expand_audio("<|audio_bos|><|AUDIO|>x", n1, 1, &e);  // preceded by bos only: not wrapped
    CHECK_STR(s, "<|audio_bos|><|AUDIO|><|AUDIO|><|AUDIO|>x");
    free(s);
    int n0[] = {0};
    s = processor_expand_audio("<|AUDIO|><|audio_eos|>", n0, 1, &e);
    CHECK_STR(s, "<|audio_eos|>");
    free(s);
    CHECK(processor_expand_audio("<|AUDIO|><|AUDIO|>", n1, 1, &e) == NULL);
    CHECK(strstr(e.msg, "2 <|AUDIO|> placeholders but 1 audios") != NULL);
    CHECK(processor_expand_audio("no audio", n1, 1, &e) == NULL);
    int neg[] = {-1};
    CHECK(processor_expand_audio("<|AUDIO|>", neg, 1, &e) == NULL);
    CHECK(strstr(e.msg, "negative") != NULL);
    // processor_encode propagates the mismatch.
    TokenIds ids = {0};
    ChatMessage m = {"user", "text only", NULL, 0};
    CHECK(processor_encode(tok, &m, 1, 1, n1, 1, &ids, &e) == -1);
    CHECK_INT(ids.n, 0);
}

static void test_special_and_lookup(void) {
    CHECK_INT(tokenizer_token_id(tok, "<|im_end|>"), 151645);
    CHECK_INT(tokenizer_token_id(tok, "<|AUDIO|>"), 151646);
    CHECK_INT(tokenizer_token_id(tok, "Hello"), 9707);
    CHECK_INT(tokenizer_token_id(tok, "\xC4\xA0world"), 1879);  // byte-level form of " world"
    CHECK_INT(tokenizer_token_id(tok, "<|no_such|>"), -1);
    CHECK_INT(tokenizer_vocab_size(tok), 151649);
    CHECK(tokenizer_is_special(tok, 151645) && !tokenizer_is_special(tok, 9707) && !tokenizer_is_special(tok, 999999));
    TokenIds ids = {0};
    encode_ok(tok, "Hello world 123 <|im_end|>", &ids);
    const int32_t want[] = {9707, 1879, 220, 16, 17, 18, 220, 151645};
    CHECK(ids_eq(&ids, want, 8));
    // Near-misses of special tokens are plain text; the longest added token wins.
    encode_ok(tok, "<|im_end", &ids);
    for (int i = 0; i < ids.n; i++) CHECK(ids.ids[i] < 151643);
    char *s = tokenizer_decode(tok, want, 8, 1);
    CHECK_STR(s, "Hello world 123 ");
    free(s);
    s = tokenizer_decode(tok, want, 8, 0);
    CHECK_STR(s, "Hello world 123 <|im_end|>");
    free(s);
    // Ids without a token (the model's padded embedding rows, negatives) are dropped, as HF does.
    const int32_t odd[] = {9707, 151649, 155000, -1, 1879};
    s = tokenizer_decode(tok, odd, 5, 0);
    CHECK_STR(s, "Hello world");
    free(s);
    token_ids_free(&ids);
}

static void test_utf8(void) {
    Err e;
    TokenIds ids = {0};
    CHECK(tokenizer_encode(tok, "ab\xFF" "cd", 5, &ids, &e) == -1);
    CHECK_STR(e.msg, "invalid UTF-8 at byte offset 2");
    CHECK_INT(ids.n, 0);
    CHECK(tokenizer_encode(tok, "x\xC0\xAF", 3, &ids, &e) == -1);  // overlong '/'
    CHECK_STR(e.msg, "invalid UTF-8 at byte offset 1");
    CHECK(tokenizer_encode(tok, "\xED\xA0\x80", 3, &ids, &e) == -1);  // surrogate D800
    CHECK(tokenizer_encode(tok, "ok \xE4\xB8", 5, &ids, &e) == -1);  // truncated at the end
    CHECK_STR(e.msg, "invalid UTF-8 at byte offset 3");
    CHECK(tokenizer_encode(tok, "\xF4\x90\x80\x80", 4, &ids, &e) == -1);  // above U+10FFFF
    // An embedded NUL is a character like any other.
    CHECK(tokenizer_encode(tok, "a\0b", 3, &ids, &e) == 0);
    CHECK_INT(ids.n, 3);
    // Lossy decoding: one U+FFFD per maximal ill-formed subpart (Python's errors="replace").
    size_t n;
    char *s = utf8_lossy((const uint8_t *)"\xF0\x9F\x98" "A", 4, &n);
    CHECK_STR(s, "\xEF\xBF\xBD" "A");
    free(s);
    s = utf8_lossy((const uint8_t *)"\xE0\x80x", 3, &n);
    CHECK_STR(s, "\xEF\xBF\xBD\xEF\xBF\xBDx");
    free(s);
    s = utf8_lossy((const uint8_t *)"\xC3\xA9\xFF", 3, &n);
    CHECK_STR(s, "\xC3\xA9\xEF\xBF\xBD");
    free(s);
    // Decoding half of a multi-byte character (byte tokens) never fails.
    encode_ok(tok, "\xE4\xB8\xAD", &ids);  // one CJK character: check its byte-level ids decode back
    s = tokenizer_decode(tok, ids.ids, ids.n, 0);
    CHECK_STR(s, "\xE4\xB8\xAD");
    free(s);
    int32_t partial[] = {tokenizer_token_id(tok, "\xC3\xA4"), tokenizer_token_id(tok, "a")};  // byte 0xE4, 'a'
    CHECK(partial[0] >= 0);
    s = tokenizer_decode(tok, partial, 2, 0);
    CHECK_STR(s, "\xEF\xBF\xBD" "a");
    free(s);
    token_ids_free(&ids);
}

static void test_nfc(void) {
    TokenIds a = {0}, b = {0};
    encode_ok(tok, "cafe\xCC\x81", &a);  // e + combining acute
    encode_ok(tok, "caf\xC3\xA9", &b);   // precomposed
    CHECK(a.n == b.n && ids_eq(&a, b.ids, b.n));
    // NFC runs per segment between special tokens: '>' + U+0338 must not recompose into U+226F.
    encode_ok(tok, "<|im_end|>\xCC\xB8", &a);
    CHECK(a.n >= 2 && a.ids[0] == 151645);
    token_ids_free(&a);
    token_ids_free(&b);
}

// Where the JavaScript reference's \s differs from HF's (Oniguruma: Unicode White_Space): U+0085 is
// whitespace, U+FEFF is not. The expected ids are the HF pieces encoded one by one.
static void test_hf_whitespace(void) {
    TokenIds got = {0}, want = {0}, part = {0};
    // "a \u0085!" -> "a", " ", "\u0085", "!" (JS: "a", " \u0085!").
    encode_ok(tok, "a \xC2\x85!", &got);
    const char *pieces1[] = {"a", " ", "\xC2\x85", "!"};
    for (int i = 0; i < 4; i++) {
        encode_ok(tok, pieces1[i], &part);
        for (int k = 0; k < part.n; k++) token_ids_push(&want, part.ids[k]);
    }
    CHECK(ids_eq(&got, want.ids, want.n));
    // "a \uFEFF!" -> "a", " \uFEFF!" (JS: "a", " ", "\uFEFF", "!").
    want.n = 0;
    encode_ok(tok, "a \xEF\xBB\xBF!", &got);
    const char *pieces2[] = {"a", " \xEF\xBB\xBF!"};
    for (int i = 0; i < 2; i++) {
        encode_ok(tok, pieces2[i], &part);
        for (int k = 0; k < part.n; k++) token_ids_push(&want, part.ids[k]);
    }
    CHECK(ids_eq(&got, want.ids, want.n));
    encode_ok(tok, "a \xEF\xBB\xBF", &part);  // " \uFEFF" is one merged token
    CHECK_INT(part.n, 2);
    token_ids_free(&got);
    token_ids_free(&want);
    token_ids_free(&part);
}

static void test_cache(void) {
    const char *text = "The quick brown fox jumps over the lazy dog. The quick brown fox!";
    TokenIds a = {0}, b = {0};
    tokenizer_cache_clear(tok);
    CHECK_INT(tokenizer_cache_size(tok), 0);
    encode_ok(tok, text, &a);
    int n = tokenizer_cache_size(tok);
    CHECK(n > 0 && n < a.n);  // repeated pieces are cached once
    encode_ok(tok, text, &b);
    CHECK(ids_eq(&a, b.ids, b.n));
    CHECK_INT(tokenizer_cache_size(tok), n);
    token_ids_free(&a);
    token_ids_free(&b);
}

static void test_strmap(void) {
    StrMap m;
    strmap_init(&m, 4);
    char key[32];
    for (int i = 0; i < 1000; i++) {  // grows from 4 slots
        int n = snprintf(key, sizeof key, "k%d", i);
        strmap_put(&m, key, (size_t)n, i, -i);
    }
    CHECK_INT(m.n, 1000);
    int ok = 1;
    for (int i = 0; i < 1000; i++) {
        int n = snprintf(key, sizeof key, "k%d", i);
        const StrSlot *s = strmap_get(&m, key, (size_t)n);
        ok &= s && s->a == i && s->b == -i;
    }
    CHECK(ok);
    strmap_put(&m, "k7", 2, 70, 7);  // overwrite keeps one entry
    CHECK_INT(m.n, 1000);
    CHECK_INT(strmap_get(&m, "k7", 2)->a, 70);
    CHECK(strmap_get(&m, "k", 1) == NULL && strmap_get(&m, "k7\0", 3) == NULL);
    strmap_put(&m, "", 0, 5, 6);  // the empty key is a key
    CHECK_INT(strmap_get(&m, "", 0)->b, 6);
    strmap_clear(&m);
    CHECK(m.n == 0 && strmap_get(&m, "k7", 2) == NULL);
    strmap_free(&m);
}

static void copy_file(const char *from_dir, const char *to_dir, const char *name) {
    char a[4096], b[4096];
    size_t n;
    Err e;
    char *data = file_read_all(path_join(a, sizeof a, from_dir, name), &n, &e);
    CHECKF(data != NULL, "%s", e.msg);
    if (!data) return;
    CHECK(file_write_atomic(path_join(b, sizeof b, to_dir, name), data, n, &e) == 0);
    free(data);
}

static void test_vocab_merges_layout(void) {
    // A directory with only vocab.json + merges.txt + tokenizer_config.json encodes identically.
    const char *dir = TMP_PATH("tok_vocab_merges");
    Err e;
    CHECK(dir_make(dir, &e) == 0);
    copy_file(tok_dir, dir, "vocab.json");
    copy_file(tok_dir, dir, "merges.txt");
    copy_file(tok_dir, dir, "tokenizer_config.json");
    Tokenizer *t2 = tokenizer_load(dir, &e);
    CHECKF(t2 != NULL, "%s", e.msg);
    if (!t2) return;
    const char *texts[] = {"What's that sound?<|im_end|>\n", "Zürich 中文 1234 \r\n  x",
                           "e\xCC\x81 \xF0\x9F\x98\x80"};
    TokenIds a = {0}, b = {0};
    for (int i = 0; i < 3; i++) {
        encode_ok(tok, texts[i], &a);
        encode_ok(t2, texts[i], &b);
        CHECKF(ids_eq(&a, b.ids, b.n), "text %d", i);
    }
    CHECK_INT(tokenizer_token_id(t2, "<|audio_eos|>"), 151648);
    CHECK(tokenizer_is_special(t2, 151648));
    token_ids_free(&a);
    token_ids_free(&b);
    tokenizer_free(t2);
}

// A small tokenizer.json: the 256 byte-level tokens, "ab", "abc", a merge list in the given encoding.
static char *tiny_json(int pair_merges, const char *pre_type, const char *extra_added) {
    json_t *vocab = json_object();
    int id = 0;
    for (int b = 0; b < 256; b++) {  // id = byte value; the character is GPT-2's byte-to-unicode map
        char ch[8];
        uint32_t cp = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255) ? (uint32_t)b : 0;
        if (!cp) {
            int k = 0;
            for (int c = 0; c < b; c++)
                if (!((c >= 33 && c <= 126) || (c >= 161 && c <= 172) || (c >= 174 && c <= 255))) k++;
            cp = 256u + (uint32_t)k;
        }
        ch[utf8_put(cp, ch)] = 0;
        json_object_set_new(vocab, ch, json_integer(id++));
    }
    json_object_set_new(vocab, "ab", json_integer(id++));
    json_object_set_new(vocab, "abc", json_integer(id++));
    json_t *merges = pair_merges ? json_pack("[[s,s],[s,s]]", "a", "b", "ab", "c") : json_pack("[s,s]", "a b", "ab c");
    json_t *root = json_pack(
        "{s:[{s:i,s:s,s:b}], s:{s:s}, s:{s:s,s:[{s:s,s:{s:s},s:s,s:b},{s:s,s:b,s:b}]}, s:{s:s}, s:{s:s,s:o,s:o}}",
        "added_tokens", "id", 300, "content", "<|x|>", "special", 1, "normalizer", "type", "NFC", "pre_tokenizer",
        "type", "Sequence", "pretokenizers", "type", pre_type, "pattern", "Regex",
        "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}|"
        " ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|"
        "\\s+(?!\\S)|\\s+",
        "behavior", "Isolated", "invert", 0, "type", "ByteLevel", "add_prefix_space", 0, "use_regex", 0, "decoder",
        "type", "ByteLevel", "model", "type", "BPE", "vocab", vocab, "merges", merges);
    if (extra_added) {
        json_error_t je;
        json_array_append_new(json_object_get(root, "added_tokens"), json_loads(extra_added, 0, &je));
    }
    char *s = json_dumps(root, JSON_COMPACT);
    json_decref(root);
    return s;
}

static Tokenizer *load_text(const char *name, const char *text, Err *e) {
    const char *path = TMP_PATH(name);
    Err we;
    CHECK(file_write_atomic(path, text, strlen(text), &we) == 0);
    return tokenizer_load(path, e);
}

static void test_merge_encodings(void) {
    Err e;
    char *strs = tiny_json(0, "Split", NULL), *pairs = tiny_json(1, "Split", NULL);
    Tokenizer *a = load_text("tiny_str.json", strs, &e);
    CHECKF(a != NULL, "%s", e.msg);
    Tokenizer *b = load_text("tiny_pair.json", pairs, &e);
    CHECKF(b != NULL, "%s", e.msg);
    if (a && b) {
        TokenIds x = {0}, y = {0};
        encode_ok(a, "abc ab<|x|>abcd", &x);
        encode_ok(b, "abc ab<|x|>abcd", &y);
        // Pieces "abc", " ab", <|x|>, "abcd"; ids are byte values, 256 = "ab", 257 = "abc".
        const int32_t want[] = {257, ' ', 256, 300, 257, 'd'};
        CHECK(ids_eq(&x, want, 6));
        CHECK(ids_eq(&y, want, 6));
        token_ids_free(&x);
        token_ids_free(&y);
    }
    tokenizer_free(a);
    tokenizer_free(b);
    // The same BPE as vocab.json + merges.txt, with an empty line and a CRLF line in merges.txt.
    const char *dir = TMP_PATH("tok_tiny_vm");
    char path[4096];
    CHECK(dir_make(dir, &e) == 0);
    json_error_t je;
    json_t *root = json_loads(strs, 0, &je);
    char *vocab = json_dumps(json_object_get(json_object_get(root, "model"), "vocab"), JSON_COMPACT);
    CHECK(file_write_atomic(path_join(path, sizeof path, dir, "vocab.json"), vocab, strlen(vocab), &e) == 0);
    const char *merges = "#version: 0.2\na b\n\nab c\r\n";
    CHECK(file_write_atomic(path_join(path, sizeof path, dir, "merges.txt"), merges, strlen(merges), &e) == 0);
    Tokenizer *c = tokenizer_load(dir, &e);
    CHECKF(c != NULL, "%s", e.msg);
    if (c) {
        TokenIds z = {0};
        encode_ok(c, "abcd ab", &z);
        const int32_t want[] = {257, 'd', ' ', 256};
        CHECK(ids_eq(&z, want, 4));
        CHECK_INT(tokenizer_token_id(c, "<|x|>"), -1);  // no tokenizer_config.json: no added tokens
        token_ids_free(&z);
    }
    tokenizer_free(c);
    free(vocab);
    json_decref(root);
    free(strs);
    free(pairs);
}

static void test_bad_files(void) {
    Err e;
    CHECK(tokenizer_load(TMP_PATH("no_such_tokenizer"), &e) == NULL);
    CHECK(strstr(e.msg, "no such file") != NULL);
    CHECK(load_text("bad_syntax.json", "{\"model\": [1, 2", &e) == NULL);
    CHECK(strstr(e.msg, "bad_syntax.json:1") != NULL);
    CHECK(load_text("bad_nomodel.json", "{}", &e) == NULL);
    CHECK(strstr(e.msg, "missing \"model\"") != NULL);
    char *s = tiny_json(0, "Whitespace", NULL);
    CHECK(load_text("bad_pre.json", s, &e) == NULL);
    CHECK(strstr(e.msg, "pre_tokenizer must be") != NULL);
    free(s);
    s = tiny_json(0, "Split", "{\"id\": 301, \"content\": \"<y>\", \"lstrip\": true}");
    CHECK(load_text("bad_lstrip.json", s, &e) == NULL);
    CHECK(strstr(e.msg, "lstrip=true is not supported") != NULL);
    free(s);
    s = tiny_json(0, "Split", "{\"id\": 301, \"content\": \"\"}");
    CHECK(load_text("bad_empty.json", s, &e) == NULL);
    CHECK(strstr(e.msg, "added_tokens[1]") != NULL);
    free(s);
    // A merge naming a token that is not in the vocabulary.
    s = tiny_json(0, "Split", NULL);
    char *p = strstr(s, "\"ab c\"");
    CHECK(p != NULL);
    if (p) memcpy(p, "\"ab q\"", 6);
    CHECK(load_text("bad_merge.json", s, &e) == NULL);
    CHECK(strstr(e.msg, "model.merges[1]: merged \"abq\" is not in the vocabulary") != NULL);
    free(s);
    s = tiny_json(0, "Split", NULL);
    p = strstr(s, "\"a b\"");
    if (p) memcpy(p, "\"a_b\"", 5);
    CHECK(load_text("bad_merge_fmt.json", s, &e) == NULL);
    CHECK(strstr(e.msg, "model.merges[0]: expected \"a b\"") != NULL);
    free(s);
    // A vocabulary without all 256 byte-level tokens cannot encode every input.
    s = tiny_json(0, "Split", NULL);
    p = strstr(s, "\"~\":");
    if (p) memcpy(p, "\"Q\":", 4);  // "Q" twice: the last wins, "~" is gone
    CHECK(load_text("bad_bytes.json", s, &e) == NULL);
    CHECKF(strstr(e.msg, "lacks the byte-level token U+007E of byte 0x7E") != NULL, "%s", e.msg);
    free(s);
    // vocab.json layout: a bad merges.txt line is reported with its line number.
    const char *dir = TMP_PATH("tok_bad_merges");
    CHECK(dir_make(dir, &e) == 0);
    char path[4096];
    CHECK(file_write_atomic(path_join(path, sizeof path, dir, "vocab.json"), "{\"a\": 0}", 8, &e) == 0);
    CHECK(file_write_atomic(path_join(path, sizeof path, dir, "merges.txt"), "#version: 0.2\na a\nb\n", 20, &e) == 0);
    CHECK(tokenizer_load(dir, &e) == NULL);
    CHECK(strstr(e.msg, "merges.txt:2: \"aa\"") != NULL || strstr(e.msg, "merges.txt:2: merged") != NULL);
    // The builder refuses a source whose vocabulary overlaps the audio token ids.
    CHECK(file_write_atomic(path_join(path, sizeof path, dir, "src.json"),
                            "{\"model\": {\"vocab\": {\"a\": 151646}, \"merges\": []}}", 49, &e) == 0);
    CHECK(tokenizer_build_qwen2_audio(path, TMP_PATH("tok_bad_build"), &e) == -1);
    CHECK(strstr(e.msg, "id must be an integer below 151643") != NULL);
}

// Runs aqa-tokenize with tokenizer PATH on input; returns its exit status and its output (both streams).
static int run_tool(const char *path, const char *args, const char *input, char *out, size_t cap) {
    const char *in = TMP_PATH("tool_in.txt"), *res = TMP_PATH("tool_out.txt");
    Err e;
    CHECK(file_write_atomic(in, input, strlen(input), &e) == 0);
    char cmd[16384];
    snprintf(cmd, sizeof cmd, "\"%s\" --tokenizer \"%s\" %s < \"%s\" > \"%s\" 2>&1", tool_path, path, args, in, res);
    int st = system(cmd);
    size_t n;
    char *text = file_read_all(res, &n, &e);
    snprintf(out, cap, "%s", text ? text : "");
    free(text);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static void test_tool(void) {
    CHECKF(tool_path != NULL, "usage: test_tokenizer AQA_TOKENIZE");
    if (!tool_path) return;
    char out[8192];
    CHECK_INT(run_tool(tok_dir, "", "What's that sound?\nhi<|im_end|>\n", out, sizeof out), 0);
    CHECK_STR(out, "3838 594 429 5112 30\n6023 151645\n");
    CHECK_INT(run_tool(tok_dir, "--decode", "3838 594 429 5112 30\n6023 151645\n", out, sizeof out), 0);
    CHECK_STR(out, "What's that sound?\nhi<|im_end|>\n");
    // The other modes and the errors with the tiny tokenizer (ids are byte values, 256 = "ab", 300 = <|x|>).
    char tiny[4096];  // TMP_PATH's buffers rotate: keep a copy
    snprintf(tiny, sizeof tiny, "%s", TMP_PATH("tiny_str.json"));
    CHECK_INT(run_tool(tiny, "--decode --skip-special", "104 105 300\n", out, sizeof out), 0);
    CHECK_STR(out, "hi\n");
    CHECK_INT(run_tool(tiny, "--jsonl", "\"ab\\nb\"\n", out, sizeof out), 0);
    CHECK_STR(out, "256 10 98\n");
    CHECK_INT(run_tool(tiny, "--decode --jsonl", "256 10 98\n", out, sizeof out), 0);
    CHECK_STR(out, "\"ab\\nb\"\n");
    CHECK_INT(run_tool(tiny, "", "ok\nab\xFF\n", out, sizeof out), 1);
    CHECK(strstr(out, "stdin:2: invalid UTF-8 at byte offset 2") != NULL);
    CHECK_INT(run_tool(tiny, "--decode", "12 x3\n", out, sizeof out), 1);
    CHECK(strstr(out, "stdin:1: column 4: expected a non-negative token id") != NULL);
    CHECK_INT(run_tool(tiny, "--jsonl", "[1]\n", out, sizeof out), 1);
    CHECK(strstr(out, "stdin:1: expected a JSON string") != NULL);
    CHECK_INT(run_tool(TMP_PATH("no_such_dir"), "", "x\n", out, sizeof out), 1);
    CHECK(strstr(out, "no such file or directory") != NULL);
}

int main(int argc, char **argv) {
    tool_path = argc > 1 ? argv[1] : NULL;
    tok_dir = fixture_tokenizer_dir("tok_unit");
    if (!tok_dir) return 1;
    Err e;
    tok = tokenizer_load(tok_dir, &e);
    if (!tok) {
        fprintf(stderr, "FAIL: %s\n", e.msg);
        return 1;
    }
    RUN(test_spec_133);
    RUN(test_chat_render);
    RUN(test_expand_audio);
    RUN(test_special_and_lookup);
    RUN(test_utf8);
    RUN(test_nfc);
    RUN(test_hf_whitespace);
    RUN(test_cache);
    RUN(test_strmap);
    RUN(test_vocab_merges_layout);
    RUN(test_merge_encodings);
    RUN(test_bad_files);
    RUN(test_tool);
    tokenizer_free(tok);
    return test_summary("test_tokenizer");
}
