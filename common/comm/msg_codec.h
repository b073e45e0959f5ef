// msg_codec.h: the little-endian writer and bounds-checked reader every payload codec of msg.h is written
// with (msg.c: header and WEIGHTS; traj.c: GROUP). Internal to common/comm. A reader never reads past its
// buffer and names the field it was reading in the error.
#pragma once
#include <stddef.h>
#include <stdint.h>

#include "comm/msg.h"

typedef struct {
    uint8_t *p;  // malloc'd, grown as needed
    size_t n, cap;
} MsgWriter;

typedef struct {
    const uint8_t *p;
    size_t n, pos;
    Err *e;
} MsgReader;

void msg_le_put(uint8_t *at, uint64_t v, int bytes);
uint64_t msg_le_get(const uint8_t *at, int bytes);

// Appends k bytes to w and returns where they go.
uint8_t *msg_w_reserve(MsgWriter *w, size_t k);
void msg_w_u8(MsgWriter *w, uint8_t v);
void msg_w_u32(MsgWriter *w, uint32_t v);
void msg_w_u64(MsgWriter *w, uint64_t v);
void msg_w_f32(MsgWriter *w, float f);
void msg_w_f64(MsgWriter *w, double f);
void msg_w_str(MsgWriter *w, const char *s);  // u32 length, then the bytes (no NUL)

// Each returns 0, or -1 with r->e naming `field` (too few bytes left, a count out of range, a NUL in a
// string). msg_r_take returns the next k bytes or NULL.
const uint8_t *msg_r_take(MsgReader *r, size_t k, const char *field);
int msg_r_u8(MsgReader *r, uint8_t *v, const char *field);
int msg_r_u32(MsgReader *r, uint32_t *v, const char *field);
int msg_r_u64(MsgReader *r, uint64_t *v, const char *field);
int msg_r_f64(MsgReader *r, double *v, const char *field);
// A count that must lie in [lo, hi]; hi also bounds any allocation made from it.
int msg_r_count(MsgReader *r, int *v, int64_t lo, int64_t hi, const char *field);
// A malloc'd NUL-terminated string of at most max bytes.
int msg_r_str(MsgReader *r, char **s, size_t max, const char *field);
int msg_r_i32s(MsgReader *r, int32_t *dst, int n, const char *field);
int msg_r_f32s(MsgReader *r, float *dst, size_t n, const char *field);

// The 32-byte header of a message whose payload follows it (msg.h's layout, its CRC computed here).
void msg_header_write(uint8_t *buf, MsgType type, int64_t version, const uint8_t *payload, size_t bytes);
