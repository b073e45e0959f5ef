#include "text/utf8.h"

#include "util/check.h"

int utf8_seq_len(const uint8_t *s, size_t n) {
    uint8_t b = s[0];
    if (b < 0x80) return 1;
    int need;
    uint8_t lo = 0x80, hi = 0xBF;  // range of the second byte (Table 3-7); later bytes are 80..BF
    if (b >= 0xC2 && b <= 0xDF) {
        need = 2;
    } else if (b >= 0xE0 && b <= 0xEF) {
        need = 3;
        if (b == 0xE0) lo = 0xA0;
        if (b == 0xED) hi = 0x9F;  // excludes the surrogates D800..DFFF
    } else if (b >= 0xF0 && b <= 0xF4) {
        need = 4;
        if (b == 0xF0) lo = 0x90;
        if (b == 0xF4) hi = 0x8F;  // nothing above U+10FFFF
    } else {
        return -1;
    }
    for (int k = 1; k < need; k++) {
        if ((size_t)k >= n) return -k;
        uint8_t c = s[k];
        uint8_t l = k == 1 ? lo : 0x80, h = k == 1 ? hi : 0xBF;
        if (c < l || c > h) return -k;
    }
    return need;
}

long utf8_first_invalid(const char *s, size_t n) {
    const uint8_t *u = (const uint8_t *)s;
    size_t i = 0;
    while (i < n) {
        if (u[i] < 0x80) {
            i++;
            continue;
        }
        int len = utf8_seq_len(u + i, n - i);
        if (len < 0) return (long)i;
        i += (size_t)len;
    }
    return -1;
}

int utf8_put(uint32_t cp, char *out) {
    if (cp < 0x80) {
        out[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        out[0] = (char)(0xC0 | (cp >> 6));
        out[1] = (char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        out[0] = (char)(0xE0 | (cp >> 12));
        out[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        out[2] = (char)(0x80 | (cp & 0x3F));
        return 3;
    }
    out[0] = (char)(0xF0 | (cp >> 18));
    out[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
    out[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
    out[3] = (char)(0x80 | (cp & 0x3F));
    return 4;
}

uint32_t utf8_get(const uint8_t *s, int len) {
    if (len == 1) return s[0];
    uint32_t cp = s[0] & (0xFF >> (len + 1));
    for (int k = 1; k < len; k++) cp = (cp << 6) | (s[k] & 0x3F);
    return cp;
}

char *utf8_lossy(const uint8_t *s, size_t n, size_t *out_len) {
    // Each ill-formed byte becomes at most 3 bytes (U+FFFD), so 3n + 1 always fits.
    char *out = mallocCheck(3 * n + 1);
    size_t o = 0, i = 0;
    while (i < n) {
        int len = utf8_seq_len(s + i, n - i);
        if (len > 0) {
            for (int k = 0; k < len; k++) out[o++] = (char)s[i + k];
            i += (size_t)len;
        } else {
            o += (size_t)utf8_put(0xFFFD, out + o);
            i += (size_t)(-len);
        }
    }
    out[o] = 0;
    if (out_len) *out_len = o;
    return out;
}
