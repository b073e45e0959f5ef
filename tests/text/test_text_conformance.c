// Conformance of the C tokenizer with the JavaScript port of HF tokenizers (@lenml/tokenizers, run by
// node): every corpus line (tests/text/corpus.jsonl, plus the MMAU test-mini questions, choices and
// full R1-AQA prompts) must give identical ids, decode to the same text as in JS, and round-trip:
// decode(ids) == the line with each stretch between special tokens put in NFC (by utf8proc directly,
// so the tokenizer's NFC fast path is checked too). Chat renders are
// compared with the Jinja template run by JS. Also prints encode throughput, C against JS.
// argv[1]: the node executable ("" when meson found none: the test fails, saying how to install it).
#include <jansson.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <utf8proc.h>

#include "audio/audio_len.h"
#include "test.h"
#include "text/processor.h"
#include "text_fixture.h"

typedef struct {
    char **s;
    size_t *len;
    int n, cap;
} Lines;

static void lines_add(Lines *l, const char *s, size_t len) {
    if (l->n == l->cap) {
        l->cap = l->cap ? 2 * l->cap : 1024;
        l->s = reallocCheck(l->s, (size_t)l->cap * sizeof(char *));
        l->len = reallocCheck(l->len, (size_t)l->cap * sizeof(size_t));
    }
    l->s[l->n] = mallocCheck(len + 1);
    memcpy(l->s[l->n], s, len);
    l->s[l->n][len] = 0;
    l->len[l->n++] = len;
}

static int read_corpus(Lines *l, const char *path) {
    size_t n;
    Err e;
    char *text = file_read_all(path, &n, &e);
    if (!text) {
        fprintf(stderr, "FAIL: %s\n", e.msg);
        return -1;
    }
    int line_no = 0;
    for (char *p = text, *next; *p; p = next) {
        next = strchr(p, '\n');
        if (next) *next++ = 0;
        else next = p + strlen(p);
        line_no++;
        json_error_t je;
        json_t *j = json_loads(p, JSON_DECODE_ANY, &je);
        if (!json_is_string(j)) {
            fprintf(stderr, "FAIL: %s:%d: expected a JSON string\n", path, line_no);
            json_decref(j);
            free(text);
            return -1;
        }
        lines_add(l, json_string_value(j), json_string_length(j));
        json_decref(j);
    }
    free(text);
    return 0;
}

// MMAU questions and choices, and for some items the full rendered + expanded R1-AQA prompt.
static int add_mmau(Lines *l) {
    const char *path = FIXTURE_PATH("mmau/mmau-test-mini.json");
    json_error_t je;
    json_t *root = json_load_file(path, 0, &je);
    if (!json_is_array(root)) {
        fprintf(stderr, "FAIL: %s: %s\n", path, root ? "expected an array" : je.text);
        json_decref(root);
        return -1;
    }
    size_t i;
    json_t *item;
    json_array_foreach(root, i, item) {
        const char *q = json_string_value(json_object_get(item, "question"));
        json_t *choices = json_object_get(item, "choices");
        if (!q || !json_is_array(choices)) continue;
        lines_add(l, q, strlen(q));
        char prompt[8192];
        int o = snprintf(prompt, sizeof prompt, "%s Please choose the answer from the following options: [", q);
        size_t k;
        json_t *c;
        json_array_foreach(choices, k, c) {
            const char *s = json_string_value(c);
            if (!s) continue;
            lines_add(l, s, strlen(s));
            if (o < (int)sizeof prompt - 1)
                o += snprintf(prompt + o, sizeof prompt - (size_t)o, "%s'%s'", k ? ", " : "", s);
        }
        if (i % 20 == 0 && o < (int)sizeof prompt - 64) {
            snprintf(prompt + o, sizeof prompt - (size_t)o, "]. Output the final answer in <answer> </answer>.");
            ChatItem items[2] = {{CHAT_ITEM_AUDIO, NULL}, {CHAT_ITEM_TEXT, prompt}};
            ChatMessage m = {"user", NULL, items, 2};
            Err e;
            char *text = chat_render(&m, 1, 1, &e);
            int n_audio = audio_token_count(audio_valid_frames(16000 * (int64_t)(1 + i % 30)));
            char *full = text ? processor_expand_audio(text, &n_audio, 1, &e) : NULL;
            if (full) lines_add(l, full, strlen(full));
            free(text);
            free(full);
        }
    }
    json_decref(root);
    return 0;
}

// Chat cases, as C messages and as the JSON conversation HF's apply_chat_template takes.
static const ChatItem ITEMS_SPEC[] = {{CHAT_ITEM_AUDIO, NULL}, {CHAT_ITEM_TEXT, "What's that sound?"}};
static const ChatItem ITEMS_MULTI[] = {{CHAT_ITEM_TEXT, "Compare "},
                                       {CHAT_ITEM_AUDIO, NULL},
                                       {CHAT_ITEM_AUDIO, NULL},
                                       {CHAT_ITEM_TEXT, "Which is louder?\n"}};
static const ChatItem ITEMS_ONE_AUDIO[] = {{CHAT_ITEM_AUDIO, NULL}};
static const ChatItem ITEMS_SYS[] = {{CHAT_ITEM_TEXT, "You judge audio."}};
static const ChatMessage CASE0[] = {{"user", NULL, ITEMS_SPEC, 2}};
static const ChatMessage CASE1[] = {{"system", "Be brief.", NULL, 0}, {"user", "Hi there", NULL, 0}};
static const ChatMessage CASE2[] = {{"user", NULL, ITEMS_MULTI, 4},
                                   {"assistant", "The second one.", NULL, 0},
                                   {"user", NULL, ITEMS_ONE_AUDIO, 1}};
static const ChatMessage CASE3[] = {{"system", NULL, ITEMS_SYS, 1}, {"user", NULL, ITEMS_SPEC, 2}};
static const ChatMessage CASE4[] = {{"assistant", "Hello <|im_end|> again", NULL, 0}};
static const struct {
    const ChatMessage *m;
    int n, gen;
} CASES[] = {{CASE0, 1, 1}, {CASE1, 2, 1}, {CASE2, 3, 0}, {CASE3, 2, 1}, {CASE4, 1, 0}};
enum { N_CASES = sizeof CASES / sizeof CASES[0] };

static json_t *cases_json(void) {
    json_t *all = json_array();
    for (int c = 0; c < N_CASES; c++) {
        json_t *msgs = json_array();
        for (int i = 0; i < CASES[c].n; i++) {
            const ChatMessage *m = &CASES[c].m[i];
            json_t *content;
            if (m->content) {
                content = json_string(m->content);
            } else {
                content = json_array();
                for (int k = 0; k < m->n_items; k++) {
                    const ChatItem *it = &m->items[k];
                    json_array_append_new(content,
                                          it->type == CHAT_ITEM_AUDIO
                                              ? json_pack("{s:s, s:s}", "type", "audio", "audio_url", "a.wav")
                                              : json_pack("{s:s, s:s}", "type", "text", "text", it->text));
                }
            }
            json_array_append_new(msgs, json_pack("{s:s, s:o}", "role", m->role, "content", content));
        }
        json_array_append_new(all, json_pack("{s:o, s:b}", "messages", msgs, "add_generation_prompt", CASES[c].gen));
    }
    return all;
}

static int write_corpus(const Lines *l, const char *path) {
    AtomicFile af;
    Err e;
    if (atomic_open(&af, path, &e)) return -1;
    for (int i = 0; i < l->n; i++) {
        json_t *j = json_stringn(l->s[i], l->len[i]);
        json_dumpf(j, af.f, JSON_ENCODE_ANY);
        fputc('\n', af.f);
        json_decref(j);
    }
    return atomic_commit(&af, &e);
}

// The text a line must decode to: special tokens kept, every stretch between them in NFC.
static char *expected_text(const char *s, size_t n) {
    static const char *special[] = {"<|im_start|>", "<|im_end|>", "<|endoftext|>",
                                    "<|AUDIO|>",    "<|audio_bos|>", "<|audio_eos|>"};
    char *out = mallocCheck(4 * n + 1);  // NFC grows a string by at most 3x
    size_t o = 0, seg = 0;
    for (size_t i = 0; i <= n;) {
        size_t hit = 0;
        for (int k = 0; k < 6 && i < n && !hit; k++) {
            size_t l = strlen(special[k]);
            if (l <= n - i && memcmp(s + i, special[k], l) == 0) hit = l;
        }
        if (!hit && i < n) {
            i++;
            continue;
        }
        if (i > seg) {
            utf8proc_uint8_t *nfc = NULL;
            utf8proc_ssize_t m = utf8proc_map((const utf8proc_uint8_t *)s + seg, (utf8proc_ssize_t)(i - seg), &nfc,
                                              UTF8PROC_STABLE | UTF8PROC_COMPOSE);
            if (m < 0) fatal("utf8proc_map: %s", utf8proc_errmsg(m));
            memcpy(out + o, nfc, (size_t)m);
            o += (size_t)m;
            free(nfc);
        }
        if (i == n) break;
        memcpy(out + o, s + i, hit);
        o += hit;
        i += hit;
        seg = i;
    }
    out[o] = 0;
    return out;
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int ids_equal(const TokenIds *a, json_t *b) {
    if (!json_is_array(b) || (size_t)a->n != json_array_size(b)) return 0;
    for (int i = 0; i < a->n; i++)
        if (json_integer_value(json_array_get(b, (size_t)i)) != a->ids[i]) return 0;
    return 1;
}

static const char *node_path;

static void test_conformance(void) {
    if (!node_path || !*node_path) {
        CHECKF(0, "node not found: install nodejs (launch/setup.sh) and reconfigure");
        return;
    }
    const char *dir = fixture_tokenizer_dir("tok_conformance");
    if (!CHECK(dir != NULL)) return;
    Err e;
    Tokenizer *tok = tokenizer_load(dir, &e);
    CHECKF(tok != NULL, "%s", e.msg);
    if (!tok) return;
    Lines lines = {0};
    if (!CHECK(read_corpus(&lines, SRC_PATH("tests/text/corpus.jsonl")) == 0)) return;
    int n_own = lines.n;
    CHECK(n_own >= 2000);
    CHECK(add_mmau(&lines) == 0);
    const char *corpus = TMP_PATH("conformance_corpus.jsonl"), *chat = TMP_PATH("conformance_chat.json");
    const char *out = TMP_PATH("conformance_js.jsonl");
    CHECK(write_corpus(&lines, corpus) == 0);
    json_t *cases = cases_json();
    CHECK(json_dump_file(cases, chat, 0) == 0);
    json_decref(cases);
    remove(out);
    enum { REPEATS = 2 };
    char cmd[16384];
    snprintf(cmd, sizeof cmd, "\"%s\" \"%s\" \"%s\" \"%s\" \"%s\" \"%s\" %d", node_path,
             SRC_PATH("tests/text/js_reference.js"), dir, corpus, chat, out, REPEATS);
    int rc = system(cmd);
    CHECKF(rc == 0, "node js_reference.js failed (status %d): see the message above", rc);
    if (rc != 0) return;

    FILE *f = fopenCheck(out, "r");
    char *buf = NULL;
    size_t cap = 0;
    int same_ids = 0, same_text = 0, round_trip = 0, nfc_changed = 0, shown = 0;
    TokenIds ids = {0};
    for (int i = 0; i < lines.n; i++) {
        int got = getline(&buf, &cap, f) > 0;
        CHECKF(got, "JS output ends at line %d", i);
        if (!got) break;
        json_error_t je;
        json_t *j = json_loads(buf, 0, &je);
        ids.n = 0;
        int enc = tokenizer_encode(tok, lines.s[i], lines.len[i], &ids, &e) == 0;
        CHECKF(enc, "line %d: %s", i + 1, e.msg);
        if (!enc) {
            json_decref(j);
            continue;
        }
        int ok_ids = ids_equal(&ids, json_object_get(j, "ids"));
        char *back = tokenizer_decode(tok, ids.ids, ids.n, 0);
        const char *js_text = json_string_value(json_object_get(j, "text"));
        int ok_text = js_text && strcmp(back, js_text) == 0;
        char *want = expected_text(lines.s[i], lines.len[i]);
        int trip = strcmp(back, want) == 0;
        same_ids += ok_ids;
        same_text += ok_text;
        round_trip += trip;
        nfc_changed += strlen(want) != lines.len[i] || memcmp(want, lines.s[i], lines.len[i]) != 0;
        if ((!ok_ids || !ok_text || !trip) && shown++ < 10)
            fprintf(stderr, "MISMATCH line %d %s: ids %s, decode %s, round trip %s\n", i + 1, lines.s[i],
                    ok_ids ? "same" : "differ", ok_text ? "same" : "differs", trip ? "ok" : "bad");
        free(want);
        free(back);
        json_decref(j);
    }
    printf("%d lines (%d corpus + %d MMAU): %d identical ids, %d identical decode, %d round-trip (%d of them "
           "to their NFC form)\n",
           lines.n, n_own, lines.n - n_own, same_ids, same_text, round_trip, nfc_changed);
    CHECK_INT(same_ids, lines.n);
    CHECK_INT(same_text, lines.n);
    CHECK_INT(round_trip, lines.n);

    // Chat renders.
    json_t *chat_js = NULL, *bench = NULL;
    while (getline(&buf, &cap, f) > 0) {
        json_error_t je;
        json_t *j = json_loads(buf, 0, &je);
        if (json_object_get(j, "chat")) chat_js = json_incref(json_object_get(j, "chat"));
        if (json_object_get(j, "bench")) bench = json_incref(json_object_get(j, "bench"));
        json_decref(j);
    }
    fclose(f);
    free(buf);
    int same_chat = 0;
    for (int c = 0; c < N_CASES; c++) {
        char *r = chat_render(CASES[c].m, CASES[c].n, CASES[c].gen, &e);
        const char *js = json_string_value(json_array_get(chat_js, (size_t)c));
        int ok = r && js && strcmp(r, js) == 0;
        CHECKF(ok, "chat case %d:\nC:  %s\nJS: %s", c, r ? r : e.msg, js ? js : "(none)");
        same_chat += ok;
        free(r);
    }
    printf("%d chat cases: %d identical renders\n", N_CASES, same_chat);

    // Throughput: the whole corpus encoded REPEATS times, after the pass above warmed the piece cache.
    size_t bytes = 0;
    for (int i = 0; i < lines.n; i++) bytes += lines.len[i];
    double t0 = now_s();
    for (int r = 0; r < REPEATS; r++)
        for (int i = 0; i < lines.n; i++) ids.n = 0, tokenizer_encode(tok, lines.s[i], lines.len[i], &ids, &e);
    double warm = now_s() - t0;
    t0 = now_s();
    for (int r = 0; r < REPEATS; r++) {
        tokenizer_cache_clear(tok);
        for (int i = 0; i < lines.n; i++) ids.n = 0, tokenizer_encode(tok, lines.s[i], lines.len[i], &ids, &e);
    }
    double cold = now_s() - t0;
    double js_bytes = json_number_value(json_object_get(bench, "bytes"));
    double js_s = json_number_value(json_object_get(bench, "seconds"));
    printf("encode throughput, %d lines, %.2f MB x %d: C %.1f MB/s (warm piece cache), %.1f MB/s (cache "
           "emptied each pass); JavaScript %.2f MB/s\n",
           lines.n, (double)bytes / 1e6, REPEATS, (double)bytes * REPEATS / warm / 1e6,
           (double)bytes * REPEATS / cold / 1e6, js_s > 0 ? js_bytes / js_s / 1e6 : 0.0);
    CHECK(js_s > 0);
    json_decref(chat_js);
    json_decref(bench);
    token_ids_free(&ids);
    for (int i = 0; i < lines.n; i++) free(lines.s[i]);
    free(lines.s);
    free(lines.len);
    tokenizer_free(tok);
}

int main(int argc, char **argv) {
    node_path = argc > 1 ? argv[1] : NULL;
    RUN(test_conformance);
    return test_summary("test_text_conformance");
}
