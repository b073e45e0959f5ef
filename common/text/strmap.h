// strmap.h: a hash map from byte strings to two int32 values (open addressing, power-of-two capacity,
// load <= 1/2, keys copied into one arena). The tokenizer's vocabulary (token -> id) and its piece cache
// (piece -> offset and count of its ids) are both one.
#pragma once
#include <stddef.h>
#include <stdint.h>

// String -> (a, b): the vocabulary (a = id) and the piece cache (a = offset into the id pool, b = count).
typedef struct {
    uint64_t h;
    uint32_t key_off, key_len;
    int32_t a, b;
} StrSlot;

typedef struct {
    StrSlot *slots;  // [cap]
    uint32_t cap, n;
    char *keys;  // key bytes, back to back
    size_t keys_n, keys_cap;
} StrMap;

void strmap_init(StrMap *m, uint32_t cap);  // cap: a power of two
void strmap_free(StrMap *m);
void strmap_clear(StrMap *m);
// The slot of key, or NULL.
const StrSlot *strmap_get(const StrMap *m, const char *key, size_t len);
// Inserts key -> (a, b), or overwrites the values of an existing key.
void strmap_put(StrMap *m, const char *key, size_t len, int32_t a, int32_t b);
uint64_t strmap_hash(const char *s, size_t n);
