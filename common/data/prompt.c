#include "data/prompt.h"

#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <utf8proc.h>

// A growable NUL-terminated byte string.
typedef struct {
    char *s;
    size_t len, cap;
} StrBuf;

static void sb_put(StrBuf *b, const char *p, size_t n) {
    if (b->len + n + 1 > b->cap) {
        b->cap = (b->len + n + 1) * 2;
        b->s = reallocCheck(b->s, b->cap);
    }
    memcpy(b->s + b->len, p, n);
    b->len += n;
    b->s[b->len] = 0;
}

static void sb_str(StrBuf *b, const char *s) { sb_put(b, s, strlen(s)); }

static void sb_printf(StrBuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void sb_printf(StrBuf *b, const char *fmt, ...) {
    char tmp[32];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    sb_put(b, tmp, (size_t)n);
}

// The string (never NULL, even when empty).
static char *sb_take(StrBuf *b) { return b->s ? b->s : strdupCheck(""); }

// Python's Py_UNICODE_ISPRINTABLE for a non-ASCII code point.
static int py_printable(int32_t c) {
    switch (utf8proc_category(c)) {
    case UTF8PROC_CATEGORY_CC: case UTF8PROC_CATEGORY_CF: case UTF8PROC_CATEGORY_CS:
    case UTF8PROC_CATEGORY_CO: case UTF8PROC_CATEGORY_CN: case UTF8PROC_CATEGORY_ZL:
    case UTF8PROC_CATEGORY_ZP: case UTF8PROC_CATEGORY_ZS:
        return 0;
    default:
        return 1;
    }
}

static void repr_into(StrBuf *b, const char *s) {
    char quote = (strchr(s, '\'') && !strchr(s, '"')) ? '"' : '\'';
    sb_put(b, &quote, 1);
    const uint8_t *p = (const uint8_t *)s;
    while (*p) {
        if (*p < 0x80) {
            char c = (char)*p++;
            if (c == quote || c == '\\') {
                sb_put(b, "\\", 1);
                sb_put(b, &c, 1);
            } else if (c == '\t') {
                sb_str(b, "\\t");
            } else if (c == '\n') {
                sb_str(b, "\\n");
            } else if (c == '\r') {
                sb_str(b, "\\r");
            } else if (c < 0x20 || c == 0x7f) {
                sb_printf(b, "\\x%02x", (unsigned)c);
            } else {
                sb_put(b, &c, 1);
            }
            continue;
        }
        utf8proc_int32_t cp;
        utf8proc_ssize_t n = utf8proc_iterate(p, -1, &cp);
        if (n <= 0) {
            sb_printf(b, "\\x%02x", (unsigned)*p++);
        } else {
            if (py_printable(cp)) sb_put(b, (const char *)p, (size_t)n);
            else if (cp <= 0xff) sb_printf(b, "\\x%02x", (unsigned)cp);
            else if (cp <= 0xffff) sb_printf(b, "\\u%04x", (unsigned)cp);
            else sb_printf(b, "\\U%08x", (unsigned)cp);
            p += n;
        }
    }
    sb_put(b, &quote, 1);
}

char *prompt_py_repr(const char *s) {
    StrBuf b = {0};
    repr_into(&b, s);
    return sb_take(&b);
}

static void list_into(StrBuf *b, const char *const *items, int n) {
    sb_str(b, "[");
    for (int i = 0; i < n; i++) {
        if (i) sb_str(b, ", ");
        repr_into(b, items[i]);
    }
    sb_str(b, "]");
}

char *prompt_py_list(const char *const *items, int n) {
    StrBuf b = {0};
    list_into(&b, items, n);
    return sb_take(&b);
}

static void replace_into(StrBuf *b, const char *s, const char *from, const char *to) {
    size_t nf = strlen(from);
    if (nf == 0) fatal("prompt_replace_all: empty pattern");
    for (const char *hit; (hit = strstr(s, from)); s = hit + nf) {
        sb_put(b, s, (size_t)(hit - s));
        sb_str(b, to);
    }
    sb_str(b, s);
}

char *prompt_replace_all(const char *s, const char *from, const char *to) {
    StrBuf b = {0};
    replace_into(&b, s, from, to);
    return sb_take(&b);
}

char *prompt_text(PromptStyle style, const char *question, const char *const *choices, int n_choices) {
    StrBuf b = {0};
    if (style == PROMPT_MMAU) sb_str(&b, question);
    else replace_into(&b, question, "video", "audio");
    sb_str(&b, " Please choose the answer from the following options: ");
    list_into(&b, choices, n_choices);
    sb_str(&b, style == PROMPT_R1AQA_THINK
                   ? ". Output the thinking process in <think> </think> and final answer in <answer> </answer>."
                   : ". Output the final answer in <answer> </answer>.");
    return sb_take(&b);
}

char *prompt_for_question(const Question *q, PromptStyle style) {
    return prompt_text(style, q->question, (const char *const *)q->choices, q->n_choices);
}

char *prompt_solution(const Question *q) {
    StrBuf b = {0};
    sb_str(&b, "<answer>");
    sb_str(&b, q->answer_text);
    sb_str(&b, "</answer>");
    return sb_take(&b);
}
