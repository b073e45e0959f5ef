#include "config/jsonout.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util/check.h"

char *jsonout_double(char *out, size_t cap, double x) {
    if (!isfinite(x)) {
        snprintf(out, cap, "null");
        return out;
    }
    // The fewest significant digits that read back exactly (17 always do), then Python's repr layout:
    // plain decimals for exponents in [-4, 16), scientific notation outside.
    int prec = 1;
    for (; prec < 17; prec++) {
        snprintf(out, cap, "%.*e", prec - 1, x);
        if (strtod(out, NULL) == x) break;
    }
    int exp10 = x == 0 ? 0 : atoi(strchr(out, 'e') + 1);
    int n;
    if (exp10 < -4 || exp10 >= 16) {
        n = snprintf(out, cap, "%.*e", prec - 1, x);
    } else {
        int decimals = prec - 1 - exp10;
        n = snprintf(out, cap, "%.*f", decimals > 0 ? decimals : 0, x);
        if (decimals <= 0 && n >= 0 && (size_t)n + 2 < cap) n += snprintf(out + n, cap - (size_t)n, ".0");
    }
    if (n < 0 || (size_t)n >= cap) fatal("jsonout_double: buffer of %zu bytes too small", cap);
    return out;
}

static void jsonout_reserve(char **buf, size_t *len, size_t *cap, size_t more) {
    if (*len + more + 1 <= *cap) return;
    size_t want = *cap ? *cap : 256;
    while (*len + more + 1 > want) want *= 2;
    *buf = reallocCheck(*buf, want);
    *cap = want;
}

void jsonout_printf(char **buf, size_t *len, size_t *cap, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0) fatal("jsonout_printf: bad format \"%s\"", fmt);
    jsonout_reserve(buf, len, cap, (size_t)n);
    va_start(ap, fmt);
    vsnprintf(*buf + *len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    *len += (size_t)n;
}

void jsonout_string(char **buf, size_t *len, size_t *cap, const char *s) {
    jsonout_printf(buf, len, cap, "\"");
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (*p == '"' || *p == '\\')
            jsonout_printf(buf, len, cap, "\\%c", *p);
        else if (*p == '\n')
            jsonout_printf(buf, len, cap, "\\n");
        else if (*p == '\t')
            jsonout_printf(buf, len, cap, "\\t");
        else if (*p < 0x20)
            jsonout_printf(buf, len, cap, "\\u%04x", *p);
        else
            jsonout_printf(buf, len, cap, "%c", *p);
    }
    jsonout_printf(buf, len, cap, "\"");
}
