// msg.c: message headers, CRC32, the little-endian writer and checked reader of every payload codec
// (msg_codec.h), and the WEIGHTS announcement; the GROUP codec is traj.c. Fields are written byte by
// byte in little-endian order so the format does not depend on struct layout or host endianness.
#include "msg.h"

#include "msg_codec.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>


// ---- CRC32 ----------------------------------------------------------------------------------------

static uint32_t crc_table[256];
static pthread_once_t crc_once = PTHREAD_ONCE_INIT;

static void crc_init(void) {
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t c = i;
        for (int k = 0; k < 8; k++) c = c & 1 ? 0xedb88320u ^ (c >> 1) : c >> 1;
        crc_table[i] = c;
    }
}

uint32_t msg_crc32(const void *data, size_t n) {
    pthread_once(&crc_once, crc_init);
    const uint8_t *p = data;
    uint32_t c = 0xffffffffu;
    for (size_t i = 0; i < n; i++) c = crc_table[(c ^ p[i]) & 0xff] ^ (c >> 8);
    return c ^ 0xffffffffu;
}

// ---- little-endian writer ---------------------------------------------------------------------------

uint8_t *msg_w_reserve(MsgWriter *w, size_t k) {
    if (w->n + k > w->cap) {
        w->cap = (w->n + k) * 2;
        w->p = reallocCheck(w->p, w->cap);
    }
    uint8_t *at = w->p + w->n;
    w->n += k;
    return at;
}

void msg_le_put(uint8_t *at, uint64_t v, int bytes) {
    for (int i = 0; i < bytes; i++) at[i] = (uint8_t)(v >> (8 * i));
}

uint64_t msg_le_get(const uint8_t *at, int bytes) {
    uint64_t v = 0;
    for (int i = 0; i < bytes; i++) v |= (uint64_t)at[i] << (8 * i);
    return v;
}

void msg_w_u8(MsgWriter *w, uint8_t v) { *msg_w_reserve(w, 1) = v; }
void msg_w_u32(MsgWriter *w, uint32_t v) { msg_le_put(msg_w_reserve(w, 4), v, 4); }
void msg_w_u64(MsgWriter *w, uint64_t v) { msg_le_put(msg_w_reserve(w, 8), v, 8); }
void msg_w_f32(MsgWriter *w, float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    msg_w_u32(w, u);
}
void msg_w_f64(MsgWriter *w, double f) {
    uint64_t u;
    memcpy(&u, &f, 8);
    msg_w_u64(w, u);
}
void msg_w_str(MsgWriter *w, const char *s) {
    size_t k = strlen(s);
    msg_w_u32(w, (uint32_t)k);
    memcpy(msg_w_reserve(w, k), s, k);
}

// ---- bounds-checked reader ------------------------------------------------------------------------

// Returns the next k bytes, or NULL (Err set naming the field) when fewer remain.
const uint8_t *msg_r_take(MsgReader *r, size_t k, const char *field) {
    if (k > r->n - r->pos) {
        err_set(r->e, "field %s: needs %zu bytes at payload offset %zu, %zu left", field, k, r->pos, r->n - r->pos);
        return NULL;
    }
    const uint8_t *at = r->p + r->pos;
    r->pos += k;
    return at;
}

int msg_r_u8(MsgReader *r, uint8_t *v, const char *field) {
    const uint8_t *at = msg_r_take(r, 1, field);
    if (!at) return -1;
    *v = *at;
    return 0;
}

int msg_r_u32(MsgReader *r, uint32_t *v, const char *field) {
    const uint8_t *at = msg_r_take(r, 4, field);
    if (!at) return -1;
    *v = (uint32_t)msg_le_get(at, 4);
    return 0;
}

int msg_r_u64(MsgReader *r, uint64_t *v, const char *field) {
    const uint8_t *at = msg_r_take(r, 8, field);
    if (!at) return -1;
    *v = msg_le_get(at, 8);
    return 0;
}

int msg_r_f64(MsgReader *r, double *v, const char *field) {
    uint64_t u;
    if (msg_r_u64(r, &u, field)) return -1;
    memcpy(v, &u, 8);
    return 0;
}

// A count that must lie in [lo, hi]; hi also bounds any allocation made from it.
int msg_r_count(MsgReader *r, int *v, int64_t lo, int64_t hi, const char *field) {
    uint32_t u;
    if (msg_r_u32(r, &u, field)) return -1;
    if ((int64_t)u < lo || (int64_t)u > hi) return err_set(r->e, "field %s: %u not in [%lld, %lld]", field, u, (long long)lo, (long long)hi);
    *v = (int)u;
    return 0;
}

int msg_r_str(MsgReader *r, char **s, size_t max, const char *field) {
    uint32_t k;
    if (msg_r_u32(r, &k, field)) return -1;
    if (k > max) return err_set(r->e, "field %s: length %u > %zu", field, k, max);
    const uint8_t *at = msg_r_take(r, k, field);
    if (!at) return -1;
    *s = mallocCheck(k + 1);
    memcpy(*s, at, k);
    (*s)[k] = 0;
    if (strlen(*s) != k) return err_set(r->e, "field %s: contains a NUL byte", field);
    return 0;
}

int msg_r_i32s(MsgReader *r, int32_t *dst, int n, const char *field) {
    const uint8_t *at = msg_r_take(r, (size_t)n * 4, field);
    if (!at) return -1;
    for (int i = 0; i < n; i++) dst[i] = (int32_t)(uint32_t)msg_le_get(at + 4 * (size_t)i, 4);
    return 0;
}

int msg_r_f32s(MsgReader *r, float *dst, size_t n, const char *field) {
    const uint8_t *at = msg_r_take(r, n * 4, field);
    if (!at) return -1;
    for (size_t i = 0; i < n; i++) {
        uint32_t u = (uint32_t)msg_le_get(at + 4 * i, 4);
        memcpy(&dst[i], &u, 4);
    }
    return 0;
}

// ---- header -----------------------------------------------------------------------------------------

void msg_header_write(uint8_t *buf, MsgType type, int64_t version, const uint8_t *payload, size_t bytes) {
    msg_le_put(buf, MSG_MAGIC, 4);
    msg_le_put(buf + 4, MSG_PROTOCOL, 2);
    msg_le_put(buf + 6, type, 2);
    msg_le_put(buf + 8, bytes, 8);
    msg_le_put(buf + 16, (uint64_t)version, 8);
    msg_le_put(buf + 24, msg_crc32(payload, bytes), 4);
    msg_le_put(buf + 28, 0, 4);
}

static const char *type_name(unsigned t) { return t == MSG_GROUP ? "GROUP" : t == MSG_WEIGHTS ? "WEIGHTS" : "unknown"; }

int msg_header_read(const uint8_t *buf, size_t n, MsgType type, MsgHeader *h, Err *e) {
    if (n < MSG_HEADER_BYTES) return err_set(e, "message of %zu bytes: shorter than the %d-byte header", n, MSG_HEADER_BYTES);
    h->magic = (uint32_t)msg_le_get(buf, 4);
    h->protocol = (uint16_t)msg_le_get(buf + 4, 2);
    h->type = (uint16_t)msg_le_get(buf + 6, 2);
    h->payload_bytes = msg_le_get(buf + 8, 8);
    h->version = (int64_t)msg_le_get(buf + 16, 8);
    h->crc = (uint32_t)msg_le_get(buf + 24, 4);
    if (h->magic != MSG_MAGIC) return err_set(e, "header magic 0x%08x, expected 0x%08x", h->magic, MSG_MAGIC);
    if (h->protocol != MSG_PROTOCOL) return err_set(e, "header protocol version %u, expected %d", h->protocol, MSG_PROTOCOL);
    if (h->type != type)
        return err_set(e, "header type %u (%s), expected %d (%s)", h->type, type_name(h->type), type, type_name(type));
    if (msg_le_get(buf + 28, 4) != 0) return err_set(e, "header reserved bytes are not zero");
    if (h->payload_bytes != n - MSG_HEADER_BYTES)
        return err_set(e, "header payload length %llu, but %zu bytes follow the header",
                       (unsigned long long)h->payload_bytes, n - MSG_HEADER_BYTES);
    uint32_t crc = msg_crc32(buf + MSG_HEADER_BYTES, n - MSG_HEADER_BYTES);
    if (crc != h->crc) return err_set(e, "payload checksum 0x%08x, header says 0x%08x", crc, h->crc);
    return 0;
}

// ---- weights announcement -----------------------------------------------------------------------------

uint32_t msg_weights_n_buckets(uint64_t n_elems, uint64_t bucket_elems) {
    return (uint32_t)((n_elems + bucket_elems - 1) / bucket_elems);
}

void msg_encode_weights(int64_t version, uint64_t n_elems, uint64_t bucket_elems, uint8_t buf[MSG_WEIGHTS_BYTES]) {
    uint8_t *p = buf + MSG_HEADER_BYTES;
    msg_le_put(p, n_elems, 8);
    msg_le_put(p + 8, bucket_elems, 8);
    msg_le_put(p + 16, msg_weights_n_buckets(n_elems, bucket_elems), 4);
    msg_le_put(p + 20, 0, 4);
    msg_header_write(buf, MSG_WEIGHTS, version, p, 24);
}

int msg_decode_weights(const uint8_t *buf, size_t n, WeightsInfo *w, Err *e) {
    MsgHeader h;
    if (msg_header_read(buf, n, MSG_WEIGHTS, &h, e)) return err_prefix(e, "weights message");
    if (h.payload_bytes != 24) return err_set(e, "weights message: payload of %llu bytes, expected 24", (unsigned long long)h.payload_bytes);
    const uint8_t *p = buf + MSG_HEADER_BYTES;
    w->version = h.version;
    w->n_elems = msg_le_get(p, 8);
    w->bucket_elems = msg_le_get(p + 8, 8);
    w->n_buckets = (uint32_t)msg_le_get(p + 16, 4);
    if (w->bucket_elems < 1 || w->bucket_elems > INT32_MAX)
        return err_set(e, "weights message: bucket_elems %llu not in [1, %d]", (unsigned long long)w->bucket_elems, INT32_MAX);
    if ((w->n_elems + w->bucket_elems - 1) / w->bucket_elems != w->n_buckets)
        return err_set(e, "weights message: n_buckets %u inconsistent with %llu elements in buckets of %llu", w->n_buckets,
                       (unsigned long long)w->n_elems, (unsigned long long)w->bucket_elems);
    if (msg_le_get(p + 20, 4) != 0) return err_set(e, "weights message: reserved payload bytes are not zero");
    return 0;
}
