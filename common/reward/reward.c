#include "reward/reward.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <utf8proc.h>

// Python's str.isspace() set (identical to re's \s on str and to what str.strip() removes; PCRE2's \s
// lacks \x1c-\x1f).
static const unsigned PY_SPACE[] = {0x09, 0x0a, 0x0b, 0x0c, 0x0d, 0x1c, 0x1d, 0x1e, 0x1f, 0x20,
                                    0x85, 0xa0, 0x1680, 0x2000, 0x2001, 0x2002, 0x2003, 0x2004,
                                    0x2005, 0x2006, 0x2007, 0x2008, 0x2009, 0x200a, 0x2028, 0x2029,
                                    0x202f, 0x205f, 0x3000};

// The tag patterns are matched by hand, in linear time: as regexes (PCRE2 or Python re) they are
// quadratic on adversarial text such as 100k unclosed "<answer>" tags, which would stall the
// single-threaded server. Their equivalence to the Python patterns is argued at each function and
// checked in tests/reward against PCRE2 spellings of the patterns on random strings.
// The MMAU tokenizer is a PCRE2 class: \w on a Python str is exactly [\p{L}\p{N}_] (checked over all
// code points for Unicode 14, PCRE2 10.42's version too); PCRE2's UCP \w may add marks, so the class is
// spelled out. `\b\w+\b` under findall yields the maximal runs, which the greedy class finds.
static pcre2_code *word_pat;
static pthread_once_t word_once = PTHREAD_ONCE_INIT;
static pthread_key_t md_key;  // per-thread pcre2_match_data, freed when the thread ends

static void md_free(void *md) { pcre2_match_data_free(md); }

static void word_compile(void) {
    int code;
    PCRE2_SIZE off;
    word_pat = pcre2_compile((PCRE2_SPTR) "[\\p{L}\\p{N}_]+", PCRE2_ZERO_TERMINATED, PCRE2_UTF | PCRE2_UCP, &code,
                             &off, NULL);
    if (!word_pat) {
        PCRE2_UCHAR msg[256];
        pcre2_get_error_message(code, msg, sizeof msg);
        fatal("MMAU word pattern at offset %zu: %s", (size_t)off, (char *)msg);
    }
    if (pthread_key_create(&md_key, md_free) != 0) fatal("pthread_key_create failed");
}

static pcre2_match_data *match_data(void) {
    pthread_once(&word_once, word_compile);
    pcre2_match_data *md = pthread_getspecific(md_key);
    if (!md) {
        md = pcre2_match_data_create(1, NULL);
        if (!md || pthread_setspecific(md_key, md) != 0) fatal("out of memory for PCRE2 match data");
    }
    return md;
}

void reward_options_default(RewardOptions *opt) {
    opt->mode = REWARD_MODE_ANSWER;
    opt->accuracy_weight = 1.0;
    opt->format_weight = 1.0;
    opt->numeric_equivalence = 0;
}

int reward_mode_parse(const char *s, RewardMode *out) {
    if (strcmp(s, "answer") == 0) *out = REWARD_MODE_ANSWER;
    else if (strcmp(s, "think") == 0) *out = REWARD_MODE_THINK;
    else return -1;
    return 0;
}

const char *reward_mode_name(RewardMode mode) { return mode == REWARD_MODE_THINK ? "think" : "answer"; }

int reward_is_py_space(unsigned c) {
    for (size_t i = 0; i < sizeof PY_SPACE / sizeof PY_SPACE[0]; i++)
        if (PY_SPACE[i] == c) return 1;
    return 0;
}

// Decodes the (valid) UTF-8 code point at s[i]; sets *n to its byte length.
static unsigned utf8_at(const char *s, size_t i, size_t *n) {
    const unsigned char *u = (const unsigned char *)s + i;
    if (u[0] < 0x80) { *n = 1; return u[0]; }
    if (u[0] < 0xe0) { *n = 2; return ((u[0] & 0x1fu) << 6) | (u[1] & 0x3fu); }
    if (u[0] < 0xf0) { *n = 3; return ((u[0] & 0x0fu) << 12) | ((u[1] & 0x3fu) << 6) | (u[2] & 0x3fu); }
    *n = 4;
    return ((u[0] & 0x07u) << 18) | ((u[1] & 0x3fu) << 12) | ((u[2] & 0x3fu) << 6) | (u[3] & 0x3fu);
}

size_t reward_py_strip(const char *s, size_t len, size_t *start) {
    size_t a = 0, b = len, n;
    while (a < b && reward_is_py_space(utf8_at(s, a, &n))) a += n;
    while (b > a) {
        size_t k = b - 1;
        while (k > a && ((unsigned char)s[k] & 0xc0) == 0x80) k--;  // back to the lead byte
        if (!reward_is_py_space(utf8_at(s, k, &n))) break;
        b = k;
    }
    *start = a;
    return b - a;
}

// Length of the well-formed UTF-8 sequence at u[0..len), or 0 if ill-formed; *sub gets the length of
// the maximal ill-formed subpart (>= 1) to replace with one U+FFFD, as Python's decoder does.
static size_t utf8_valid_len(const unsigned char *u, size_t len, size_t *sub) {
    unsigned b = u[0], lo = 0x80, hi = 0xbf;
    size_t need;
    *sub = 1;
    if (b < 0x80) return 1;
    if (b >= 0xc2 && b <= 0xdf) need = 1;
    else if (b == 0xe0) { need = 2; lo = 0xa0; }
    else if (b == 0xed) { need = 2; hi = 0x9f; }
    else if (b >= 0xe1 && b <= 0xef) need = 2;
    else if (b == 0xf0) { need = 3; lo = 0x90; }
    else if (b == 0xf4) { need = 3; hi = 0x8f; }
    else if (b >= 0xf1 && b <= 0xf3) need = 3;
    else return 0;
    size_t k = 0;
    while (k < need && 1 + k < len) {
        unsigned c = u[1 + k];
        if (c < (k == 0 ? lo : 0x80) || c > (k == 0 ? hi : 0xbf)) break;
        k++;
    }
    if (k == need) return need + 1;
    *sub = k + 1;
    return 0;
}

char *reward_utf8_sanitize(const char *s, size_t len) {
    char *out = mallocCheck(3 * len + 1);  // each bad byte becomes at most 3 bytes
    const unsigned char *u = (const unsigned char *)s;
    size_t i = 0, o = 0;
    while (i < len) {
        size_t sub, n = utf8_valid_len(u + i, len - i, &sub);
        if (n) {
            memcpy(out + o, s + i, n);
            o += n;
            i += n;
        } else {
            memcpy(out + o, "\xef\xbf\xbd", 3);
            o += 3;
            i += sub;
        }
    }
    out[o] = 0;
    return out;
}

// Text as scored: s itself when valid UTF-8, else a repaired copy stored in *own (caller frees).
static const char *text_valid(const char *s, char **own) {
    *own = NULL;
    size_t len = strlen(s), i = 0, sub;
    while (i < len) {
        size_t n = utf8_valid_len((const unsigned char *)s + i, len - i, &sub);
        if (!n) return *own = reward_utf8_sanitize(s, len);
        i += n;
    }
    return s;
}

// The accuracy answer of valid text s[0..len) as a span [*start, *start + return).
// re.search(r'<answer>(.*?)</answer>') without DOTALL: the match must lie within one line, and the
// leftmost start wins. In a line, only its first "<answer>" can start the match: a "</answer>" after a
// later opening tag also follows the first one. The lazy group ends at the first "</answer>" after it.
static size_t answer_span(const char *s, size_t len, size_t *start) {
    size_t line = 0;
    for (;;) {
        const char *nl = memchr(s + line, '\n', len - line);
        size_t end = nl ? (size_t)(nl - s) : len;  // this line is s[line, end)
        const char *open = memmem(s + line, end - line, "<answer>", 8);
        if (open) {
            size_t g = (size_t)(open - s) + 8;
            const char *close = memmem(s + g, end - g, "</answer>", 9);
            if (close) {
                size_t a, n = reward_py_strip(s + g, (size_t)(close - s) - g, &a);
                *start = g + a;
                return n;
            }
        }
        if (!nl) break;
        line = end + 1;
    }
    return reward_py_strip(s, len, start);
}

// re.fullmatch(r'<answer>.*?</answer>', s, re.DOTALL): the lazy .*? backtracks until "</answer>" ends
// the text, so it holds iff the text starts with "<answer>" and ends with a "</answer>" after it.
static int format_answer(const char *s, size_t len) {
    return len >= 17 && memcmp(s, "<answer>", 8) == 0 && memcmp(s + len - 9, "</answer>", 9) == 0;
}

// re.fullmatch(r'<think>.*?</think>\s*<answer>.*?</answer>', s, re.DOTALL): some "</think>" after the
// opening tag is followed by whitespace (all of it: a shorter \s* leaves a space where '<' must be),
// then "<answer>", and the text ends with a "</answer>" after that. The whitespace runs after
// different "</think>"s are disjoint, so the scan is linear.
static int format_think(const char *s, size_t len) {
    if (len < 7 + 8 + 8 + 9 || memcmp(s, "<think>", 7) != 0 || memcmp(s + len - 9, "</answer>", 9) != 0) return 0;
    const char *p;
    size_t from = 7, n;
    while ((p = memmem(s + from, len - from, "</think>", 8))) {
        size_t k = (size_t)(p - s) + 8;
        while (k < len && reward_is_py_space(utf8_at(s, k, &n))) k += n;
        if (k + 8 + 9 <= len && memcmp(s + k, "<answer>", 8) == 0) return 1;
        from = (size_t)(p - s) + 1;
    }
    return 0;
}

char *reward_extract_answer(const char *text) {
    char *own;
    const char *s = text_valid(text, &own);
    size_t start, n = answer_span(s, strlen(s), &start);
    char *out = mallocCheck(n + 1);
    memcpy(out, s + start, n);
    out[n] = 0;
    free(own);
    return out;
}

// Parses s[0..n) fully as a number (strtod, C locale); returns 0 on success. Hexadecimal is refused,
// as Python's float() refuses it.
static int parse_number(const char *s, size_t n, double *v) {
    char buf[128];
    if (n == 0 || n >= sizeof buf || memchr(s, 'x', n) || memchr(s, 'X', n)) return -1;
    memcpy(buf, s, n);
    buf[n] = 0;
    char *end;
    *v = strtod(buf, &end);
    return *end == 0 ? 0 : -1;
}

void reward_score(const RewardOptions *opt, const char *completion, const char *solution,
                  RewardResult *out) {
    char *own_c, *own_s;
    const char *c = text_valid(completion, &own_c), *s = text_valid(solution, &own_s);
    size_t ca, sa, clen = strlen(c);
    size_t cn = answer_span(c, clen, &ca), sn = answer_span(s, strlen(s), &sa);
    int acc = cn == sn && memcmp(c + ca, s + sa, cn) == 0;
    double x, y;
    if (!acc && opt->numeric_equivalence && parse_number(c + ca, cn, &x) == 0 &&
        parse_number(s + sa, sn, &y) == 0)
        acc = x == y;
    int fmt = opt->mode == REWARD_MODE_THINK ? format_think(c, clen) : format_answer(c, clen);
    out->accuracy = acc;
    out->format = fmt;
    out->total = opt->accuracy_weight * out->accuracy + opt->format_weight * out->format;
    out->mmau_correct = -1;
    free(own_c);
    free(own_s);
}

// ---- MMAU rule ----

// Python's cased / case-ignorable character classes, as used by str.lower()'s final-sigma rule.
static int is_cased(int32_t c) {
    utf8proc_category_t k = utf8proc_category(c);
    return k == UTF8PROC_CATEGORY_LU || k == UTF8PROC_CATEGORY_LL || k == UTF8PROC_CATEGORY_LT;
}

static int is_case_ignorable(int32_t c) {
    static const int32_t mid[] = {0x27, 0x2e, 0x3a, 0x5e, 0x60, 0xa8, 0xad, 0xaf, 0xb4, 0xb7, 0xb8,
                                  0x387, 0x5f4, 0x2018, 0x2019, 0x2024, 0x2027, 0xfe13, 0xfe52,
                                  0xfe55, 0xff07, 0xff0e, 0xff1a};
    utf8proc_category_t k = utf8proc_category(c);
    if (k == UTF8PROC_CATEGORY_MN || k == UTF8PROC_CATEGORY_ME || k == UTF8PROC_CATEGORY_CF ||
        k == UTF8PROC_CATEGORY_LM || k == UTF8PROC_CATEGORY_SK)
        return 1;
    for (size_t i = 0; i < sizeof mid / sizeof mid[0]; i++)
        if (mid[i] == c) return 1;
    return 0;
}

// Python str.lower() of valid UTF-8: per-code-point lowercase, U+0130 -> "i\u0307", and a capital
// sigma at the end of a word -> final sigma. Returns a malloc'd string.
static char *py_lower(const char *s) {
    size_t len = strlen(s), n = 0, i = 0, step;
    int32_t *cp = mallocCheck((len + 1) * sizeof *cp);  // [n] code points
    while (i < len) {
        cp[n++] = (int32_t)utf8_at(s, i, &step);
        i += step;
    }
    char *out = mallocCheck(4 * n + 1);  // a lowered code point (or U+0130's pair) fits 4 bytes
    size_t o = 0;
    for (size_t k = 0; k < n; k++) {
        int32_t c = cp[k];
        if (c == 0x130) {
            o += (size_t)utf8proc_encode_char('i', (utf8proc_uint8_t *)out + o);
            c = 0x307;
        } else if (c == 0x3a3) {
            size_t j = k;
            while (j > 0 && is_case_ignorable(cp[j - 1])) j--;
            int final = j > 0 && is_cased(cp[j - 1]);
            j = k + 1;
            while (final && j < n && is_case_ignorable(cp[j])) j++;
            c = final && (j == n || !is_cased(cp[j])) ? 0x3c2 : 0x3c3;
        } else {
            c = utf8proc_tolower(c);
        }
        o += (size_t)utf8proc_encode_char(c, (utf8proc_uint8_t *)out + o);
    }
    out[o] = 0;
    free(cp);
    return out;
}

// A set of tokens: sorted, unique, malloc'd strings.
typedef struct {
    char **tok;
    int n;
} TokenSet;

static int cmp_str(const void *a, const void *b) {
    return strcmp(*(char *const *)a, *(char *const *)b);
}

// tokens(s) = set(re.findall(r'\b\w+\b', s.lower())).
static void tokenize(const char *text, TokenSet *ts) {
    char *own;
    const char *valid = text_valid(text, &own);
    char *s = py_lower(valid);
    free(own);
    pcre2_match_data *md = match_data();
    size_t len = strlen(s), off = 0;
    int cap = 8;
    ts->tok = mallocCheck(cap * sizeof *ts->tok);
    ts->n = 0;
    while (off < len && pcre2_match(word_pat, (PCRE2_SPTR)s, len, off, PCRE2_NO_UTF_CHECK, md, NULL) > 0) {
        PCRE2_SIZE *ov = pcre2_get_ovector_pointer(md);
        if (ts->n == cap) ts->tok = reallocCheck(ts->tok, (cap *= 2) * sizeof *ts->tok);
        char *t = mallocCheck(ov[1] - ov[0] + 1);
        memcpy(t, s + ov[0], ov[1] - ov[0]);
        t[ov[1] - ov[0]] = 0;
        ts->tok[ts->n++] = t;
        off = ov[1];
    }
    free(s);
    qsort(ts->tok, ts->n, sizeof *ts->tok, cmp_str);
    int u = 0;
    for (int i = 0; i < ts->n; i++) {
        if (u > 0 && strcmp(ts->tok[u - 1], ts->tok[i]) == 0) free(ts->tok[i]);
        else ts->tok[u++] = ts->tok[i];
    }
    ts->n = u;
}

static int ts_has(const TokenSet *ts, const char *t) {
    return bsearch(&t, ts->tok, ts->n, sizeof *ts->tok, cmp_str) != NULL;
}

static int ts_equal(const TokenSet *a, const TokenSet *b) {
    if (a->n != b->n) return 0;
    for (int i = 0; i < a->n; i++)
        if (strcmp(a->tok[i], b->tok[i]) != 0) return 0;
    return 1;
}

static void ts_free(TokenSet *ts) {
    for (int i = 0; i < ts->n; i++) free(ts->tok[i]);
    free(ts->tok);
}

int mmau_is_correct(const char *prediction, const char *answer, const char *const *choices,
                    int n_choices) {
    TokenSet pred, ans;
    tokenize(prediction, &pred);
    tokenize(answer, &ans);
    int ok = pred.n > 0;
    for (int i = 0; ok && i < ans.n; i++) ok = ts_has(&pred, ans.tok[i]);
    // Incorrect tokens: tokens of every choice that is not the answer, minus the answer's tokens.
    for (int c = 0; ok && c < n_choices; c++) {
        TokenSet ch;
        tokenize(choices[c], &ch);
        if (!ts_equal(&ch, &ans))
            for (int i = 0; ok && i < ch.n; i++)
                if (!ts_has(&ans, ch.tok[i]) && ts_has(&pred, ch.tok[i])) ok = 0;
        ts_free(&ch);
    }
    ts_free(&pred);
    ts_free(&ans);
    return ok;
}
