#include "text/strmap.h"

#include <stdlib.h>
#include <string.h>

#include "util/check.h"

uint64_t strmap_hash(const char *s, size_t n) {
    // Eight bytes at a time, multiply-xorshift mixing (pieces are short; this is the cache's hot path).
    uint64_t h = 0x9E3779B97F4A7C15ull ^ n;
    while (n >= 8) {
        uint64_t w;
        memcpy(&w, s, 8);
        h = (h ^ w) * 0xff51afd7ed558ccdull;
        h ^= h >> 32;
        s += 8, n -= 8;
    }
    uint64_t w = 0;
    memcpy(&w, s, n);
    h = (h ^ w) * 0xc4ceb9fe1a85ec53ull;
    h ^= h >> 29;
    h *= 0xff51afd7ed558ccdull;
    h ^= h >> 32;
    return h | 1;  // 0 marks an empty slot
}

void strmap_init(StrMap *m, uint32_t cap) {
    m->cap = cap;
    m->n = 0;
    m->slots = callocCheck(cap, sizeof(StrSlot));
    m->keys_cap = 1 << 16;
    m->keys_n = 0;
    m->keys = mallocCheck(m->keys_cap);
}

void strmap_free(StrMap *m) {
    free(m->slots);
    free(m->keys);
}

void strmap_clear(StrMap *m) {
    memset(m->slots, 0, (size_t)m->cap * sizeof(StrSlot));
    m->n = 0;
    m->keys_n = 0;
}

static StrSlot *strmap_slot(const StrMap *m, const char *key, size_t len, uint64_t h) {
    uint32_t mask = m->cap - 1;
    for (uint32_t i = (uint32_t)h & mask;; i = (i + 1) & mask) {
        StrSlot *s = &m->slots[i];
        if (s->h == 0) return s;
        if (s->h == h && s->key_len == len && memcmp(m->keys + s->key_off, key, len) == 0) return s;
    }
}

const StrSlot *strmap_get(const StrMap *m, const char *key, size_t len) {
    const StrSlot *s = strmap_slot(m, key, len, strmap_hash(key, len));
    return s->h ? s : NULL;
}

static void strmap_grow(StrMap *m) {
    StrSlot *old = m->slots;
    uint32_t old_cap = m->cap;
    m->cap *= 2;
    m->slots = callocCheck(m->cap, sizeof(StrSlot));
    for (uint32_t i = 0; i < old_cap; i++) {
        if (!old[i].h) continue;
        uint32_t mask = m->cap - 1, j = (uint32_t)old[i].h & mask;
        while (m->slots[j].h) j = (j + 1) & mask;
        m->slots[j] = old[i];
    }
    free(old);
}

// Inserts key -> (a, b), or overwrites the values of an existing key.
void strmap_put(StrMap *m, const char *key, size_t len, int32_t a, int32_t b) {
    if (2 * (m->n + 1) > m->cap) strmap_grow(m);
    uint64_t h = strmap_hash(key, len);
    StrSlot *s = strmap_slot(m, key, len, h);
    if (!s->h) {
        if (m->keys_n + len > m->keys_cap) {
            while (m->keys_n + len > m->keys_cap) m->keys_cap *= 2;
            m->keys = reallocCheck(m->keys, m->keys_cap);
        }
        memcpy(m->keys + m->keys_n, key, len);
        s->h = h;
        s->key_off = (uint32_t)m->keys_n;
        s->key_len = (uint32_t)len;
        m->keys_n += len;
        m->n++;
    }
    s->a = a;
    s->b = b;
}
