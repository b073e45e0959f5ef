#include "text/tokenizer.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <jansson.h>
#include <pcre2.h>
#include <stdlib.h>
#include <string.h>
#include <utf8proc.h>

#include "text/strmap.h"
#include "text/utf8.h"
#include "util/fileio.h"

// The Qwen2 split pattern (Qwen2Tokenizer's PRETOKENIZE_REGEX, and the Split pre-tokenizer of its
// tokenizer.json): used when a model directory ships only vocab.json + merges.txt.
static const char QWEN2_PATTERN[] =
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|"
    "\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";

// HF compiles the pattern with Oniguruma, whose \s is the Unicode White_Space property. PCRE2's \s
// (with UCP) is \p{Z} plus \h and \v, which differs (it has U+180E), so \s and \S are rewritten to this
// explicit set before compiling.
static const char WHITE_SPACE_SET[] =
    "\\t\\n\\x{0B}\\f\\r\\x{20}\\x{85}\\x{A0}\\x{1680}\\x{2000}-\\x{200A}\\x{2028}\\x{2029}\\x{202F}"
    "\\x{205F}\\x{3000}";

// The piece cache holds up to CACHE_MAX_ENTRIES pieces of at most CACHE_MAX_PIECE bytes (longer pieces
// rarely repeat, and would let one huge input fill memory).
enum { CACHE_MAX_ENTRIES = 1 << 18, CACHE_MAX_PIECE = 256 };

// ---------------------------------------------------------------------------------------------------
// Merge table (open addressing, power-of-two capacity, load <= 1/2).

// (left id, right id) -> (rank, merged id).
typedef struct {
    uint64_t key;  // (left + 1) << 32 | right; 0 marks an empty slot
    int32_t rank, new_id;
} PairSlot;

typedef struct {
    PairSlot *slots;
    uint32_t cap, n;
} PairMap;

static uint64_t pair_key(int32_t l, int32_t r) { return ((uint64_t)(uint32_t)(l + 1) << 32) | (uint32_t)r; }

static PairSlot *pairmap_slot(const PairMap *m, uint64_t key) {
    uint32_t mask = m->cap - 1;
    for (uint32_t i = (uint32_t)((key * 0x9E3779B97F4A7C15ull) >> 32) & mask;; i = (i + 1) & mask) {
        PairSlot *s = &m->slots[i];
        if (s->key == 0 || s->key == key) return s;
    }
}

// ---------------------------------------------------------------------------------------------------

typedef struct {
    char *content;
    int len;
    int32_t id;
    int special;
} AddedToken;

typedef struct {
    int32_t id, prev, next, len;  // len 0: merged into its left neighbour
} Symbol;

typedef struct {
    int32_t rank, pos, new_id;
} Merge;

struct Tokenizer {
    StrMap vocab;  // byte-level token string -> id
    PairMap merges;
    int32_t byte_id[256];  // id of the single-character token of each byte
    AddedToken *added;     // [n_added], longest first, so the first match is the longest
    int n_added;
    uint8_t added_first[256];  // whether some added token starts with this byte
    int n_vocab;
    uint8_t *special;      // [n_vocab]
    uint32_t *dec_off;     // [n_vocab] offsets into dec_bytes
    int32_t *dec_len;      // [n_vocab], -1: no token with this id
    char *dec_bytes;
    int nfc;
    int ignore_merges;
    pcre2_code *re;
    pcre2_match_data *md;
    int jit;
    // Piece cache: raw piece bytes -> ids in cache_ids.
    StrMap cache;
    int32_t *cache_ids;
    size_t cache_n, cache_cap;
    // Scratch of the BPE merge loop.
    Symbol *sym;
    Merge *heap;
    size_t sym_cap, heap_cap;
    char *mapped;
    size_t mapped_cap;
};

void token_ids_push(TokenIds *t, int32_t id) {
    if (t->n == t->cap) {
        t->cap = t->cap ? 2 * t->cap : 64;
        t->ids = reallocCheck(t->ids, (size_t)t->cap * sizeof(int32_t));
    }
    t->ids[t->n++] = id;
}

void token_ids_free(TokenIds *t) {
    free(t->ids);
    t->ids = NULL;
    t->n = t->cap = 0;
}

// GPT-2's byte-to-unicode map: printable bytes keep their code point, the other 68 get 256, 257, ...
static uint32_t byte_to_cp(int b) {
    if ((b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255)) return (uint32_t)b;
    int k = 0;
    for (int c = 0; c < b; c++)
        if (!((c >= 33 && c <= 126) || (c >= 161 && c <= 172) || (c >= 174 && c <= 255))) k++;
    return 256u + (uint32_t)k;
}

// Inverse of byte_to_cp: the byte of code point cp, or -1.
static int cp_to_byte(uint32_t cp) {
    static int16_t table[512];
    static int ready;
    if (!ready) {
        for (int i = 0; i < 512; i++) table[i] = -1;
        for (int b = 0; b < 256; b++) table[byte_to_cp(b)] = (int16_t)b;
        ready = 1;
    }
    return cp < 512 ? table[cp] : -1;
}

// ---------------------------------------------------------------------------------------------------
// Loading.

static int32_t vocab_id(const Tokenizer *tok, const char *s, size_t n) {
    const StrSlot *slot = strmap_get(&tok->vocab, s, n);
    return slot ? slot->a : -1;
}

static int add_merge(Tokenizer *tok, const char *a, const char *b, int32_t rank, const char *where, Err *e) {
    size_t la = strlen(a), lb = strlen(b);
    int32_t ia = vocab_id(tok, a, la), ib = vocab_id(tok, b, lb);
    if (ia < 0) return err_set(e, "%s: \"%s\" is not in the vocabulary", where, a);
    if (ib < 0) return err_set(e, "%s: \"%s\" is not in the vocabulary", where, b);
    char *ab = mallocCheck(la + lb);
    memcpy(ab, a, la);
    memcpy(ab + la, b, lb);
    int32_t im = vocab_id(tok, ab, la + lb);
    if (im < 0) err_set(e, "%s: merged \"%.*s\" is not in the vocabulary", where, (int)(la + lb), ab);
    free(ab);
    if (im < 0) return -1;
    PairMap *m = &tok->merges;
    if (2 * (m->n + 1) > m->cap) {
        PairSlot *old = m->slots;
        uint32_t old_cap = m->cap;
        m->cap = m->cap ? 2 * m->cap : 1 << 16;
        m->slots = callocCheck(m->cap, sizeof(PairSlot));
        for (uint32_t i = 0; i < old_cap; i++)
            if (old[i].key) *pairmap_slot(m, old[i].key) = old[i];
        free(old);
    }
    // A repeated pair keeps its last rank, as HF's HashMap (and the JS port's Map) built in order do.
    PairSlot *s = pairmap_slot(m, pair_key(ia, ib));
    if (!s->key) m->n++;
    s->key = pair_key(ia, ib);
    s->rank = rank;
    s->new_id = im;
    return 0;
}

// Splits an "a b" merge line into its two halves (in place); -1 unless there is exactly one space.
static int split_merge(char *line, char **a, char **b) {
    char *sp = strchr(line, ' ');
    if (!sp || sp == line || !sp[1] || strchr(sp + 1, ' ')) return -1;
    *sp = 0;
    *a = line;
    *b = sp + 1;
    return 0;
}

static int load_vocab_object(Tokenizer *tok, json_t *vocab, const char *where, Err *e) {
    if (!json_is_object(vocab)) return err_set(e, "%s: expected an object of token -> id", where);
    strmap_init(&tok->vocab, 1 << 18);
    const char *key;
    json_t *val;
    json_object_foreach(vocab, key, val) {
        json_int_t id = json_is_integer(val) ? json_integer_value(val) : -1;
        if (id < 0 || id >= (1 << 24))
            return err_set(e, "%s: token \"%s\": id must be an integer in [0, 2^24)", where, key);
        strmap_put(&tok->vocab, key, strlen(key), (int32_t)id, 0);
    }
    return 0;
}

static int load_merges_json(Tokenizer *tok, json_t *merges, const char *path, Err *e) {
    if (!json_is_array(merges)) return err_set(e, "%s: model.merges must be an array", path);
    size_t i;
    json_t *m;
    char where[4200];
    json_array_foreach(merges, i, m) {
        snprintf(where, sizeof where, "%s: model.merges[%zu]", path, i);
        if (json_is_string(m)) {
            char *line = strdupCheck(json_string_value(m)), *a, *b;
            int rc = split_merge(line, &a, &b) ? err_set(e, "%s: expected \"a b\"", where)
                                               : add_merge(tok, a, b, (int32_t)i, where, e);
            free(line);
            if (rc) return -1;
        } else if (json_is_array(m) && json_array_size(m) == 2 && json_is_string(json_array_get(m, 0)) &&
                   json_is_string(json_array_get(m, 1))) {
            if (add_merge(tok, json_string_value(json_array_get(m, 0)), json_string_value(json_array_get(m, 1)),
                          (int32_t)i, where, e))
                return -1;
        } else {
            return err_set(e, "%s: expected \"a b\" or [a, b]", where);
        }
    }
    return 0;
}

static int load_merges_txt(Tokenizer *tok, const char *path, Err *e) {
    size_t n;
    char *text = file_read_all(path, &n, e);
    if (!text) return -1;
    int rank = 0, line_no = 0, rc = 0;
    char where[4200];
    for (char *line = text, *end = text + n, *next; line < end; line = next) {
        next = memchr(line, '\n', (size_t)(end - line));
        if (next) *next++ = 0;
        else next = end;
        line_no++;
        size_t len = strlen(line);
        if (len && line[len - 1] == '\r') line[--len] = 0;
        // As Qwen2Tokenizer: an optional "#version" header, and empty lines, are skipped.
        if (len == 0 || (line_no == 1 && strncmp(line, "#version", 8) == 0)) continue;
        snprintf(where, sizeof where, "%s:%d", path, line_no);
        char *a, *b;
        if (split_merge(line, &a, &b)) {
            rc = err_set(e, "%s: expected \"a b\"", where);
            break;
        }
        if ((rc = add_merge(tok, a, b, rank++, where, e))) break;
    }
    free(text);
    return rc;
}

// Adds one added token (from tokenizer.json added_tokens or tokenizer_config.json added_tokens_decoder).
static int add_added_token(Tokenizer *tok, json_t *t, json_int_t id, const char *where, Err *e) {
    json_t *content = json_object_get(t, "content");
    if (!json_is_string(content) || json_string_length(content) == 0)
        return err_set(e, "%s: \"content\" must be a non-empty string", where);
    if (id < 0 || id >= (1 << 24)) return err_set(e, "%s: id must be in [0, 2^24)", where);
    // The Qwen tokenizers strip nothing around added tokens; refuse options this encoder does not apply
    // rather than silently tokenizing differently from HF.
    const char *opts[] = {"lstrip", "rstrip", "single_word"};
    for (int k = 0; k < 3; k++)
        if (json_is_true(json_object_get(t, opts[k])))
            return err_set(e, "%s: \"%s\": %s=true is not supported", where, json_string_value(content), opts[k]);
    tok->added = reallocCheck(tok->added, (size_t)(tok->n_added + 1) * sizeof(AddedToken));
    AddedToken *a = &tok->added[tok->n_added++];
    a->content = strdupCheck(json_string_value(content));
    a->len = (int)strlen(a->content);
    a->id = (int32_t)id;
    a->special = json_is_true(json_object_get(t, "special"));
    return 0;
}

// tokenizer.json: checks that the pipeline is the byte-level BPE this encoder implements.
static int load_tokenizer_json(Tokenizer *tok, const char *path, json_t *root, const char **pattern, Err *e) {
    json_t *model = json_object_get(root, "model");
    if (!json_is_object(model)) return err_set(e, "%s: missing \"model\"", path);
    json_t *type = json_object_get(model, "type");
    if (type && (!json_is_string(type) || strcmp(json_string_value(type), "BPE")))
        return err_set(e, "%s: model.type must be \"BPE\"", path);
    const char *affixes[] = {"continuing_subword_prefix", "end_of_word_suffix"};
    for (int k = 0; k < 2; k++) {
        json_t *v = json_object_get(model, affixes[k]);
        if (v && !json_is_null(v) && !(json_is_string(v) && json_string_length(v) == 0))
            return err_set(e, "%s: model.%s is not supported", path, affixes[k]);
    }
    if (json_is_true(json_object_get(model, "byte_fallback")))
        return err_set(e, "%s: model.byte_fallback is not supported", path);
    json_t *dropout = json_object_get(model, "dropout");
    if (dropout && !json_is_null(dropout)) return err_set(e, "%s: model.dropout is not supported", path);
    tok->ignore_merges = json_is_true(json_object_get(model, "ignore_merges"));

    json_t *norm = json_object_get(root, "normalizer");
    if (norm && !json_is_null(norm)) {
        json_t *nt = json_object_get(norm, "type");
        if (!json_is_string(nt) || strcmp(json_string_value(nt), "NFC"))
            return err_set(e, "%s: normalizer must be NFC or null", path);
        tok->nfc = 1;
    }
    // pre_tokenizer: Sequence[Split(Regex, Isolated, invert false), ByteLevel(no prefix space, no regex)].
    json_t *pre = json_object_get(root, "pre_tokenizer");
    json_t *seq = json_object_get(pre, "pretokenizers");
    json_t *split = json_array_get(seq, 0), *bl = json_array_get(seq, 1);
    json_t *regex = json_object_get(json_object_get(split, "pattern"), "Regex");
    json_t *behavior = json_object_get(split, "behavior");
    if (strcmp(json_string_value(json_object_get(pre, "type")) ?: "", "Sequence") ||
        strcmp(json_string_value(json_object_get(split, "type")) ?: "", "Split") || !json_is_array(seq) ||
        json_array_size(seq) != 2 || !json_is_string(regex) ||
        !json_is_string(behavior) || strcmp(json_string_value(behavior), "Isolated") ||
        json_is_true(json_object_get(split, "invert")) ||
        strcmp(json_string_value(json_object_get(bl, "type")) ?: "", "ByteLevel") ||
        json_is_true(json_object_get(bl, "add_prefix_space")) || json_is_true(json_object_get(bl, "use_regex")))
        return err_set(e,
                       "%s: pre_tokenizer must be Sequence[Split(Regex, Isolated), ByteLevel(add_prefix_space "
                       "false, use_regex false)]",
                       path);
    *pattern = json_string_value(regex);
    json_t *dec = json_object_get(root, "decoder");
    if (strcmp(json_string_value(json_object_get(dec, "type")) ?: "", "ByteLevel"))
        return err_set(e, "%s: decoder must be ByteLevel", path);
    json_t *post = json_object_get(root, "post_processor");
    if (post && !json_is_null(post) && strcmp(json_string_value(json_object_get(post, "type")) ?: "", "ByteLevel"))
        return err_set(e, "%s: post_processor must be ByteLevel or null (no BOS/EOS is added)", path);

    char where[4200];
    snprintf(where, sizeof where, "%s: model.vocab", path);
    if (load_vocab_object(tok, json_object_get(model, "vocab"), where, e)) return -1;
    if (load_merges_json(tok, json_object_get(model, "merges"), path, e)) return -1;
    json_t *added = json_object_get(root, "added_tokens");
    if (added && !json_is_array(added)) return err_set(e, "%s: added_tokens must be an array", path);
    size_t i;
    json_t *t;
    json_array_foreach(added, i, t) {
        snprintf(where, sizeof where, "%s: added_tokens[%zu]", path, i);
        json_t *id = json_object_get(t, "id");
        if (!json_is_integer(id)) return err_set(e, "%s: \"id\" must be an integer", where);
        if (add_added_token(tok, t, json_integer_value(id), where, e)) return -1;
    }
    return 0;
}

static json_t *json_load_path(const char *path, Err *e) {
    json_error_t je;
    json_t *root = json_load_file(path, 0, &je);
    if (!root) err_set(e, "%s:%d: %s", path, je.line, je.text);
    return root;
}

// A model directory without tokenizer.json: vocab.json + merges.txt (+ tokenizer_config.json).
static int load_vocab_merges(Tokenizer *tok, const char *dir, Err *e) {
    char path[4096];
    path_join(path, sizeof path, dir, "vocab.json");
    json_t *vocab = json_load_path(path, e);
    if (!vocab) return -1;
    int rc = load_vocab_object(tok, vocab, path, e);
    json_decref(vocab);
    if (rc) return -1;
    path_join(path, sizeof path, dir, "merges.txt");
    if (load_merges_txt(tok, path, e)) return -1;
    tok->nfc = 1;  // Qwen2Tokenizer normalises to NFC before splitting
    path_join(path, sizeof path, dir, "tokenizer_config.json");
    if (!path_exists(path)) return 0;
    json_t *cfg = json_load_path(path, e);
    if (!cfg) return -1;
    json_t *dec = json_object_get(cfg, "added_tokens_decoder");
    const char *key;
    json_t *t;
    char where[4200];
    rc = 0;
    if (dec && !json_is_object(dec)) rc = err_set(e, "%s: added_tokens_decoder must be an object", path);
    json_object_foreach(dec, key, t) {
        if (rc) break;
        snprintf(where, sizeof where, "%s: added_tokens_decoder[\"%s\"]", path, key);
        char *end;
        long id = strtol(key, &end, 10);
        if (*key == 0 || *end) rc = err_set(e, "%s: key must be an integer id", where);
        else rc = add_added_token(tok, t, id, where, e);
    }
    json_decref(cfg);
    return rc;
}

// Rewrites \s and \S (outside and inside classes) to the Unicode White_Space set; see WHITE_SPACE_SET.
static char *pattern_translate(const char *p, Err *e) {
    size_t n = strlen(p), cap = n * (sizeof WHITE_SPACE_SET + 4) + 1, o = 0;
    char *out = mallocCheck(cap);
    int in_class = 0;
    for (size_t i = 0; i < n; i++) {
        if (p[i] == '\\' && i + 1 < n) {
            char c = p[i + 1];
            const char *rep = NULL;
            char buf[sizeof WHITE_SPACE_SET + 4];
            if (c == 's') {
                snprintf(buf, sizeof buf, in_class ? "%s" : "[%s]", WHITE_SPACE_SET);
                rep = buf;
            } else if (c == 'S') {
                if (in_class) {
                    free(out);
                    err_set(e, "pre-tokenizer pattern: \\S inside a character class is not supported");
                    return NULL;
                }
                snprintf(buf, sizeof buf, "[^%s]", WHITE_SPACE_SET);
                rep = buf;
            }
            if (rep) {
                size_t l = strlen(rep);
                memcpy(out + o, rep, l);
                o += l;
            } else {
                out[o++] = p[i];
                out[o++] = c;
            }
            i++;
            continue;
        }
        if (p[i] == '[' && !in_class) {
            in_class = 1;
            out[o++] = p[i];
            // A ']' (or '^]') right after '[' is a literal, not the end of the class.
            if (i + 1 < n && p[i + 1] == '^') out[o++] = p[++i];
            if (i + 1 < n && p[i + 1] == ']') out[o++] = p[++i];
            continue;
        }
        if (p[i] == ']' && in_class) in_class = 0;
        out[o++] = p[i];
    }
    out[o] = 0;
    return out;
}

static int compile_pattern(Tokenizer *tok, const char *pattern, Err *e) {
    char *p = pattern_translate(pattern, e);
    if (!p) return -1;
    int code;
    PCRE2_SIZE off;
    tok->re = pcre2_compile((PCRE2_SPTR)p, PCRE2_ZERO_TERMINATED, PCRE2_UTF | PCRE2_UCP, &code, &off, NULL);
    free(p);
    if (!tok->re) {
        PCRE2_UCHAR msg[256];
        pcre2_get_error_message(code, msg, sizeof msg);
        return err_set(e, "pre-tokenizer pattern: %s at offset %zu", (char *)msg, (size_t)off);
    }
    // JIT is an optimisation only: the interpreter gives the same matches where JIT is unavailable.
    tok->jit = pcre2_jit_compile(tok->re, PCRE2_JIT_COMPLETE) == 0;
    tok->md = pcre2_match_data_create_from_pattern(tok->re, NULL);
    if (!tok->md) fatal("pcre2_match_data_create_from_pattern: out of memory");
    return 0;
}

static int cmp_added_len(const void *a, const void *b) {
    const AddedToken *x = a, *y = b;
    return y->len - x->len;
}

// Builds the id tables (decode bytes, special flags, byte ids) once vocab and added tokens are known.
static int finish_tables(Tokenizer *tok, const char *path, Err *e) {
    int n_vocab = 0;
    for (uint32_t i = 0; i < tok->vocab.cap; i++)
        if (tok->vocab.slots[i].h && tok->vocab.slots[i].a >= n_vocab) n_vocab = tok->vocab.slots[i].a + 1;
    for (int i = 0; i < tok->n_added; i++)
        if (tok->added[i].id >= n_vocab) n_vocab = tok->added[i].id + 1;
    tok->n_vocab = n_vocab;
    tok->special = callocCheck((size_t)n_vocab, 1);
    tok->dec_off = callocCheck((size_t)n_vocab, sizeof(uint32_t));
    tok->dec_len = mallocCheck((size_t)n_vocab * sizeof(int32_t));
    for (int i = 0; i < n_vocab; i++) tok->dec_len[i] = -1;
    // Decoded bytes of a token: its characters mapped back through byte-to-unicode, or, as HF's
    // ByteLevel decoder does when some character has no byte, the token's own UTF-8.
    size_t cap = tok->vocab.keys_n + 1024, n = 0;
    for (int i = 0; i < tok->n_added; i++) cap += (size_t)tok->added[i].len;
    tok->dec_bytes = mallocCheck(cap);
    for (int pass = 0; pass < 2; pass++) {
        int count = pass == 0 ? (int)tok->vocab.cap : tok->n_added;
        for (int i = 0; i < count; i++) {
            const char *s;
            size_t len;
            int32_t id;
            if (pass == 0) {
                const StrSlot *slot = &tok->vocab.slots[i];
                if (!slot->h) continue;
                s = tok->vocab.keys + slot->key_off, len = slot->key_len, id = slot->a;
            } else {
                s = tok->added[i].content, len = (size_t)tok->added[i].len, id = tok->added[i].id;
                tok->special[id] = (uint8_t)tok->added[i].special;
            }
            size_t start = n;
            int all_bytes = 1;
            for (size_t k = 0; k < len;) {
                int l = utf8_seq_len((const uint8_t *)s + k, len - k);
                if (l < 0) return err_set(e, "%s: token id %d is not valid UTF-8", path, id);
                int b = cp_to_byte(utf8_get((const uint8_t *)s + k, l));
                if (b < 0) {
                    all_bytes = 0;
                    break;
                }
                tok->dec_bytes[n++] = (char)b;
                k += (size_t)l;
            }
            if (!all_bytes) {
                n = start;
                memcpy(tok->dec_bytes + n, s, len);
                n += len;
            }
            tok->dec_off[id] = (uint32_t)start;
            tok->dec_len[id] = (int32_t)(n - start);
        }
    }
    for (int b = 0; b < 256; b++) {
        char ch[4];
        int l = utf8_put(byte_to_cp(b), ch);
        tok->byte_id[b] = vocab_id(tok, ch, (size_t)l);
        if (tok->byte_id[b] < 0)
            return err_set(e, "%s: the vocabulary lacks the byte-level token U+%04X of byte 0x%02X", path,
                           byte_to_cp(b), b);
    }
    if (tok->n_added) qsort(tok->added, (size_t)tok->n_added, sizeof(AddedToken), cmp_added_len);
    for (int i = 0; i < tok->n_added; i++) tok->added_first[(uint8_t)tok->added[i].content[0]] = 1;
    return 0;
}

Tokenizer *tokenizer_load(const char *path, Err *e) {
    Tokenizer *tok = callocCheck(1, sizeof(Tokenizer));
    char file[4096];
    const char *json_path = NULL;
    if (!path_exists(path)) {
        err_set(e, "%s: no such file or directory", path);
        tokenizer_free(tok);
        return NULL;
    }
    size_t plen = strlen(path);
    if (plen >= 5 && strcmp(path + plen - 5, ".json") == 0) {
        json_path = path;
    } else if (path_exists(path_join(file, sizeof file, path, "tokenizer.json"))) {
        json_path = file;
    }
    int rc;
    const char *pattern = QWEN2_PATTERN;
    json_t *root = NULL;
    if (json_path) {
        root = json_load_path(json_path, e);
        rc = root ? load_tokenizer_json(tok, json_path, root, &pattern, e) : -1;
    } else {
        rc = load_vocab_merges(tok, path, e);
    }
    if (rc == 0) rc = compile_pattern(tok, pattern, e);  // pattern may point into root: compile first
    if (root) json_decref(root);
    if (rc == 0) rc = finish_tables(tok, json_path ? json_path : path, e);
    if (rc) {
        tokenizer_free(tok);
        return NULL;
    }
    strmap_init(&tok->cache, 1 << 12);
    return tok;
}

void tokenizer_free(Tokenizer *tok) {
    if (!tok) return;
    if (tok->vocab.slots) strmap_free(&tok->vocab);
    if (tok->cache.slots) strmap_free(&tok->cache);
    free(tok->merges.slots);
    for (int i = 0; i < tok->n_added; i++) free(tok->added[i].content);
    free(tok->added);
    free(tok->special);
    free(tok->dec_off);
    free(tok->dec_len);
    free(tok->dec_bytes);
    if (tok->md) pcre2_match_data_free(tok->md);
    if (tok->re) pcre2_code_free(tok->re);
    free(tok->cache_ids);
    free(tok->sym);
    free(tok->heap);
    free(tok->mapped);
    free(tok);
}

// ---------------------------------------------------------------------------------------------------
// Encoding.

// Min-heap on (rank, pos): the lowest rank merges first, the leftmost among equal ranks (HF word.rs).
static int merge_less(Merge a, Merge b) { return a.rank < b.rank || (a.rank == b.rank && a.pos < b.pos); }

static void heap_push(Merge *h, size_t *n, Merge m) {
    size_t i = (*n)++;
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (!merge_less(m, h[p])) break;
        h[i] = h[p];
        i = p;
    }
    h[i] = m;
}

static Merge heap_pop(Merge *h, size_t *n) {
    Merge top = h[0], last = h[--(*n)];
    size_t i = 0;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= *n) break;
        if (c + 1 < *n && merge_less(h[c + 1], h[c])) c++;
        if (!merge_less(h[c], last)) break;
        h[i] = h[c];
        i = c;
    }
    if (*n) h[i] = last;
    return top;
}

static void push_pair(const Tokenizer *tok, Merge *heap, size_t *nh, int32_t pos, int32_t l, int32_t r) {
    const PairSlot *s = pairmap_slot(&tok->merges, pair_key(l, r));
    if (s->key) heap_push(heap, nh, (Merge){s->rank, pos, s->new_id});
}

// BPE of one piece given as raw bytes; appends the ids to out.
static void bpe_piece(Tokenizer *tok, const uint8_t *p, size_t n, TokenIds *out) {
    if (tok->ignore_merges) {
        // The whole piece as one token when the vocabulary has it (HF's ignore_merges).
        if (tok->mapped_cap < 2 * n) {
            tok->mapped_cap = 2 * n + 64;
            tok->mapped = reallocCheck(tok->mapped, tok->mapped_cap);
        }
        size_t m = 0;
        for (size_t i = 0; i < n; i++) m += (size_t)utf8_put(byte_to_cp(p[i]), tok->mapped + m);
        int32_t id = vocab_id(tok, tok->mapped, m);
        if (id >= 0) {
            token_ids_push(out, id);
            return;
        }
    }
    if (tok->sym_cap < n) {
        tok->sym_cap = n + 64;
        tok->sym = reallocCheck(tok->sym, tok->sym_cap * sizeof(Symbol));
    }
    if (tok->heap_cap < 3 * n) {  // n - 1 initial pairs, at most 2 more per merge
        tok->heap_cap = 3 * n + 64;
        tok->heap = reallocCheck(tok->heap, tok->heap_cap * sizeof(Merge));
    }
    Symbol *sym = tok->sym;
    Merge *heap = tok->heap;
    size_t nh = 0;
    for (size_t i = 0; i < n; i++) {
        sym[i] = (Symbol){tok->byte_id[p[i]], (int32_t)i - 1, i + 1 < n ? (int32_t)i + 1 : -1, 1};
        if (i > 0) push_pair(tok, heap, &nh, (int32_t)i - 1, sym[i - 1].id, sym[i].id);
    }
    while (nh) {
        Merge top = heap_pop(heap, &nh);
        Symbol *s = &sym[top.pos];
        if (s->len == 0 || s->next < 0) continue;
        Symbol *r = &sym[s->next];
        // Stale entry: the pair at this position changed since it was pushed.
        const PairSlot *cur = pairmap_slot(&tok->merges, pair_key(s->id, r->id));
        if (!cur->key || cur->new_id != top.new_id) continue;
        s->id = top.new_id;
        s->len += r->len;
        s->next = r->next;
        r->len = 0;
        if (s->next >= 0) sym[s->next].prev = top.pos;
        if (s->prev >= 0) push_pair(tok, heap, &nh, s->prev, sym[s->prev].id, s->id);
        if (s->next >= 0) push_pair(tok, heap, &nh, top.pos, s->id, sym[s->next].id);
    }
    for (int32_t i = 0; i >= 0; i = sym[i].next) token_ids_push(out, sym[i].id);
}

static void encode_piece(Tokenizer *tok, const char *p, size_t n, TokenIds *out) {
    const StrSlot *hit = strmap_get(&tok->cache, p, n);
    if (hit) {
        for (int32_t k = 0; k < hit->b; k++) token_ids_push(out, tok->cache_ids[hit->a + k]);
        return;
    }
    int start = out->n;
    bpe_piece(tok, (const uint8_t *)p, n, out);
    if (n > CACHE_MAX_PIECE) return;
    int count = out->n - start;
    // Bounded cache: emptied when full (pieces repeat heavily, so it refills with the common ones).
    if (tok->cache.n >= CACHE_MAX_ENTRIES) tokenizer_cache_clear(tok);
    if (tok->cache_n + (size_t)count > tok->cache_cap) {
        tok->cache_cap = 2 * (tok->cache_n + (size_t)count) + 1024;
        tok->cache_ids = reallocCheck(tok->cache_ids, tok->cache_cap * sizeof(int32_t));
    }
    memcpy(tok->cache_ids + tok->cache_n, out->ids + start, (size_t)count * sizeof(int32_t));
    strmap_put(&tok->cache, p, n, (int32_t)tok->cache_n, count);
    tok->cache_n += (size_t)count;
}

// Whether NFC leaves s unchanged for certain, judged per code point: below U+0300 nothing decomposes or
// combines; above, a character is inert unless it has a combining class, a decomposition, can be the
// second half of a composition, or is a Hangul vowel/trailing jamo. Only uncertain text pays for
// utf8proc's full normalisation.
static int nfc_inert(const char *s, size_t n) {
    const uint8_t *u = (const uint8_t *)s;
    for (size_t i = 0; i < n;) {
        if (u[i] < 0xCC) {  // lead bytes below 0xCC encode code points below U+0300
            i += u[i] < 0x80 ? 1 : 2;
            continue;
        }
        int len = utf8_seq_len(u + i, n - i);
        uint32_t cp = utf8_get(u + i, len);
        const utf8proc_property_t *p = utf8proc_get_property((utf8proc_int32_t)cp);
        if (p->combining_class || p->decomp_seqindex != UINT16_MAX ||
            (p->comb_index != UINT16_MAX && p->comb_index >= 0x8000) || (cp >= 0x1160 && cp <= 0x11FF))
            return 0;
        i += (size_t)len;
    }
    return 1;
}

// One segment between added tokens: NFC, regex split (matches and the gaps between them are pieces,
// HF's "Isolated" behaviour), BPE of each piece.
static int encode_segment(Tokenizer *tok, const char *s, size_t n, TokenIds *out, Err *e) {
    if (n == 0) return 0;
    utf8proc_uint8_t *nfc = NULL;
    if (tok->nfc && !nfc_inert(s, n)) {
        utf8proc_ssize_t m =
            utf8proc_map((const utf8proc_uint8_t *)s, (utf8proc_ssize_t)n, &nfc, UTF8PROC_STABLE | UTF8PROC_COMPOSE);
        if (m < 0) return err_set(e, "NFC normalisation failed: %s", utf8proc_errmsg(m));
        s = (const char *)nfc;
        n = (size_t)m;
    }
    size_t off = 0, gap = 0;
    int rc = 0;
    while (off < n) {
        int r = tok->jit ? pcre2_jit_match(tok->re, (PCRE2_SPTR)s, n, off, 0, tok->md, NULL)
                         : pcre2_match(tok->re, (PCRE2_SPTR)s, n, off, PCRE2_NO_UTF_CHECK, tok->md, NULL);
        if (r == PCRE2_ERROR_NOMATCH) break;
        if (r < 0) {
            PCRE2_UCHAR msg[256];
            pcre2_get_error_message(r, msg, sizeof msg);
            rc = err_set(e, "pre-tokenizer regex failed at byte %zu: %s", off, (char *)msg);
            break;
        }
        PCRE2_SIZE *ov = pcre2_get_ovector_pointer(tok->md);
        size_t a = ov[0], b = ov[1];
        if (b == a) {  // an empty match splits nothing: step over one character
            int l = utf8_seq_len((const uint8_t *)s + a, n - a);
            off = a + (size_t)(l > 0 ? l : 1);
            continue;
        }
        if (a > gap) encode_piece(tok, s + gap, a - gap, out);
        encode_piece(tok, s + a, b - a, out);
        off = gap = b;
    }
    if (rc == 0 && gap < n) encode_piece(tok, s + gap, n - gap, out);
    free(nfc);
    return rc;
}

int tokenizer_encode(Tokenizer *tok, const char *text, size_t len, TokenIds *out, Err *e) {
    long bad = utf8_first_invalid(text, len);
    if (bad >= 0) return err_set(e, "invalid UTF-8 at byte offset %ld", bad);
    int n0 = out->n;
    size_t seg = 0;
    for (size_t i = 0; i < len;) {
        const AddedToken *hit = NULL;
        if (tok->added_first[(uint8_t)text[i]]) {
            for (int k = 0; k < tok->n_added && !hit; k++) {
                const AddedToken *a = &tok->added[k];
                if ((size_t)a->len <= len - i && memcmp(text + i, a->content, (size_t)a->len) == 0) hit = a;
            }
        }
        if (!hit) {
            i++;
            continue;
        }
        if (encode_segment(tok, text + seg, i - seg, out, e)) {
            out->n = n0;
            return -1;
        }
        token_ids_push(out, hit->id);
        i += (size_t)hit->len;
        seg = i;
    }
    if (encode_segment(tok, text + seg, len - seg, out, e)) {
        out->n = n0;
        return -1;
    }
    return 0;
}

// ---------------------------------------------------------------------------------------------------
// Decoding and lookups.

char *tokenizer_decode(const Tokenizer *tok, const int32_t *ids, int n, int skip_special) {
    size_t total = 0;
    for (int i = 0; i < n; i++)
        if (ids[i] >= 0 && ids[i] < tok->n_vocab && tok->dec_len[ids[i]] > 0) total += (size_t)tok->dec_len[ids[i]];
    uint8_t *bytes = mallocCheck(total + 1);
    size_t o = 0;
    for (int i = 0; i < n; i++) {
        int32_t id = ids[i];
        if (id < 0 || id >= tok->n_vocab || tok->dec_len[id] < 0) continue;
        if (skip_special && tok->special[id]) continue;
        memcpy(bytes + o, tok->dec_bytes + tok->dec_off[id], (size_t)tok->dec_len[id]);
        o += (size_t)tok->dec_len[id];
    }
    char *s = utf8_lossy(bytes, o, NULL);
    free(bytes);
    return s;
}

int32_t tokenizer_token_id(const Tokenizer *tok, const char *token) {
    size_t n = strlen(token);
    for (int i = 0; i < tok->n_added; i++)
        if ((size_t)tok->added[i].len == n && memcmp(tok->added[i].content, token, n) == 0) return tok->added[i].id;
    return vocab_id(tok, token, n);
}

int tokenizer_vocab_size(const Tokenizer *tok) { return tok->n_vocab; }

int tokenizer_is_special(const Tokenizer *tok, int32_t id) {
    return id >= 0 && id < tok->n_vocab && tok->special[id];
}

int tokenizer_cache_size(const Tokenizer *tok) { return (int)tok->cache.n; }

void tokenizer_cache_clear(Tokenizer *tok) {
    strmap_clear(&tok->cache);
    tok->cache_n = 0;
}
