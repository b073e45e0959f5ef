// utf8.h: UTF-8 validation, code point encoding and lossy decoding with U+FFFD.
// Validation follows Unicode Table 3-7 (no overlongs, no surrogates, nothing above U+10FFFF); the lossy
// decoder replaces each "maximal subpart" of an ill-formed sequence by one U+FFFD, as Python's
// bytes.decode(errors="replace"), Rust's String::from_utf8_lossy and the WHATWG TextDecoder do, so a
// decoded completion reads the same here as in Hugging Face.
#pragma once
#include <stddef.h>
#include <stdint.h>

// Length (1..4) of the well-formed sequence at s[0..n), or minus the length of its maximal ill-formed
// subpart (-1..-3) when it is not well-formed. n must be >= 1.
int utf8_seq_len(const uint8_t *s, size_t n);
// Byte offset of the first ill-formed sequence in s[0..n), or -1 when all of it is valid UTF-8.
long utf8_first_invalid(const char *s, size_t n);
// Writes the UTF-8 form of code point cp (< 0x110000) into out; returns its length (1..4).
int utf8_put(uint32_t cp, char *out);
// Decodes the code point of a well-formed sequence of length len (from utf8_seq_len).
uint32_t utf8_get(const uint8_t *s, int len);
// Copies s[0..n) into a new NUL-terminated buffer, replacing ill-formed subparts by U+FFFD (caller frees).
char *utf8_lossy(const uint8_t *s, size_t n, size_t *out_len);
