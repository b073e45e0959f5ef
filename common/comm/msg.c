// msg.c: message headers, CRC32, and the GROUP / WEIGHTS payload codecs. Fields are written byte by
// byte in little-endian order so the format does not depend on struct layout or host endianness.
#include "msg.h"

#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

// Sanity limits: a decoder never allocates from a count it has not bounded.
#define MSG_MAX_G 4096
#define MSG_MAX_FUNCS 64
#define MSG_MAX_NAME 256
#define MSG_MAX_PATH 4096
#define MSG_MAX_REASON 4096

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

typedef struct {
    uint8_t *p;
    size_t n, cap;
} Writer;

static uint8_t *w_reserve(Writer *w, size_t k) {
    if (w->n + k > w->cap) {
        w->cap = (w->n + k) * 2;
        w->p = reallocCheck(w->p, w->cap);
    }
    uint8_t *at = w->p + w->n;
    w->n += k;
    return at;
}

static void le_put(uint8_t *at, uint64_t v, int bytes) {
    for (int i = 0; i < bytes; i++) at[i] = (uint8_t)(v >> (8 * i));
}

static uint64_t le_get(const uint8_t *at, int bytes) {
    uint64_t v = 0;
    for (int i = 0; i < bytes; i++) v |= (uint64_t)at[i] << (8 * i);
    return v;
}

static void w_u8(Writer *w, uint8_t v) { *w_reserve(w, 1) = v; }
static void w_u32(Writer *w, uint32_t v) { le_put(w_reserve(w, 4), v, 4); }
static void w_u64(Writer *w, uint64_t v) { le_put(w_reserve(w, 8), v, 8); }
static void w_f32(Writer *w, float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    w_u32(w, u);
}
static void w_f64(Writer *w, double f) {
    uint64_t u;
    memcpy(&u, &f, 8);
    w_u64(w, u);
}
static void w_str(Writer *w, const char *s) {
    size_t k = strlen(s);
    w_u32(w, (uint32_t)k);
    memcpy(w_reserve(w, k), s, k);
}

// ---- bounds-checked reader ------------------------------------------------------------------------

typedef struct {
    const uint8_t *p;
    size_t n, pos;
    Err *e;
} Reader;

// Returns the next k bytes, or NULL (Err set naming the field) when fewer remain.
static const uint8_t *r_take(Reader *r, size_t k, const char *field) {
    if (k > r->n - r->pos) {
        err_set(r->e, "field %s: needs %zu bytes at payload offset %zu, %zu left", field, k, r->pos, r->n - r->pos);
        return NULL;
    }
    const uint8_t *at = r->p + r->pos;
    r->pos += k;
    return at;
}

static int r_u8(Reader *r, uint8_t *v, const char *field) {
    const uint8_t *at = r_take(r, 1, field);
    if (!at) return -1;
    *v = *at;
    return 0;
}

static int r_u32(Reader *r, uint32_t *v, const char *field) {
    const uint8_t *at = r_take(r, 4, field);
    if (!at) return -1;
    *v = (uint32_t)le_get(at, 4);
    return 0;
}

static int r_u64(Reader *r, uint64_t *v, const char *field) {
    const uint8_t *at = r_take(r, 8, field);
    if (!at) return -1;
    *v = le_get(at, 8);
    return 0;
}

static int r_f64(Reader *r, double *v, const char *field) {
    uint64_t u;
    if (r_u64(r, &u, field)) return -1;
    memcpy(v, &u, 8);
    return 0;
}

// A count that must lie in [lo, hi]; hi also bounds any allocation made from it.
static int r_count(Reader *r, int *v, int64_t lo, int64_t hi, const char *field) {
    uint32_t u;
    if (r_u32(r, &u, field)) return -1;
    if ((int64_t)u < lo || (int64_t)u > hi) return err_set(r->e, "field %s: %u not in [%lld, %lld]", field, u, (long long)lo, (long long)hi);
    *v = (int)u;
    return 0;
}

static int r_str(Reader *r, char **s, size_t max, const char *field) {
    uint32_t k;
    if (r_u32(r, &k, field)) return -1;
    if (k > max) return err_set(r->e, "field %s: length %u > %zu", field, k, max);
    const uint8_t *at = r_take(r, k, field);
    if (!at) return -1;
    *s = mallocCheck(k + 1);
    memcpy(*s, at, k);
    (*s)[k] = 0;
    if (strlen(*s) != k) return err_set(r->e, "field %s: contains a NUL byte", field);
    return 0;
}

static int r_i32s(Reader *r, int32_t *dst, int n, const char *field) {
    const uint8_t *at = r_take(r, (size_t)n * 4, field);
    if (!at) return -1;
    for (int i = 0; i < n; i++) dst[i] = (int32_t)(uint32_t)le_get(at + 4 * (size_t)i, 4);
    return 0;
}

static int r_f32s(Reader *r, float *dst, size_t n, const char *field) {
    const uint8_t *at = r_take(r, n * 4, field);
    if (!at) return -1;
    for (size_t i = 0; i < n; i++) {
        uint32_t u = (uint32_t)le_get(at + 4 * i, 4);
        memcpy(&dst[i], &u, 4);
    }
    return 0;
}

// ---- header -----------------------------------------------------------------------------------------

static void header_write(uint8_t *buf, MsgType type, int64_t version, const uint8_t *payload, size_t bytes) {
    le_put(buf, MSG_MAGIC, 4);
    le_put(buf + 4, MSG_PROTOCOL, 2);
    le_put(buf + 6, type, 2);
    le_put(buf + 8, bytes, 8);
    le_put(buf + 16, (uint64_t)version, 8);
    le_put(buf + 24, msg_crc32(payload, bytes), 4);
    le_put(buf + 28, 0, 4);
}

static const char *type_name(unsigned t) { return t == MSG_GROUP ? "GROUP" : t == MSG_WEIGHTS ? "WEIGHTS" : "unknown"; }

int msg_header_read(const uint8_t *buf, size_t n, MsgType type, MsgHeader *h, Err *e) {
    if (n < MSG_HEADER_BYTES) return err_set(e, "message of %zu bytes: shorter than the %d-byte header", n, MSG_HEADER_BYTES);
    h->magic = (uint32_t)le_get(buf, 4);
    h->protocol = (uint16_t)le_get(buf + 4, 2);
    h->type = (uint16_t)le_get(buf + 6, 2);
    h->payload_bytes = le_get(buf + 8, 8);
    h->version = (int64_t)le_get(buf + 16, 8);
    h->crc = (uint32_t)le_get(buf + 24, 4);
    if (h->magic != MSG_MAGIC) return err_set(e, "header magic 0x%08x, expected 0x%08x", h->magic, MSG_MAGIC);
    if (h->protocol != MSG_PROTOCOL) return err_set(e, "header protocol version %u, expected %d", h->protocol, MSG_PROTOCOL);
    if (h->type != type)
        return err_set(e, "header type %u (%s), expected %d (%s)", h->type, type_name(h->type), type, type_name(type));
    if (le_get(buf + 28, 4) != 0) return err_set(e, "header reserved bytes are not zero");
    if (h->payload_bytes != n - MSG_HEADER_BYTES)
        return err_set(e, "header payload length %llu, but %zu bytes follow the header",
                       (unsigned long long)h->payload_bytes, n - MSG_HEADER_BYTES);
    uint32_t crc = msg_crc32(buf + MSG_HEADER_BYTES, n - MSG_HEADER_BYTES);
    if (crc != h->crc) return err_set(e, "payload checksum 0x%08x, header says 0x%08x", crc, h->crc);
    return 0;
}

// ---- trajectory group -------------------------------------------------------------------------------

void traj_group_alloc(TrajGroup *g, int G, const int *len, int n_prompt, int n_funcs, int with_ref) {
    memset(g, 0, sizeof *g);
    g->G = G;
    g->n_prompt = n_prompt;
    g->n_funcs = n_funcs;
    g->prompt_ids = callocCheck((size_t)n_prompt + 1, sizeof(int32_t));
    g->func_names = callocCheck((size_t)n_funcs + 1, sizeof(char *));
    g->func_rewards = callocCheck((size_t)G * n_funcs + 1, sizeof(float));
    g->rewards = callocCheck((size_t)G + 1, sizeof(float));
    g->offset = callocCheck((size_t)G + 1, sizeof(int));
    g->len = callocCheck((size_t)G + 1, sizeof(int));
    for (int i = 0; i < G; i++) {
        g->offset[i] = g->n_tokens;
        g->len[i] = len[i];
        g->n_tokens += len[i];
    }
    size_t T = (size_t)g->n_tokens + 1;
    g->ids = callocCheck(T, sizeof(int32_t));
    g->mask = callocCheck(T, 1);
    g->sample_lp = callocCheck(T, sizeof(float));
    g->ref_lp = with_ref ? callocCheck(T, sizeof(float)) : NULL;
}

void traj_group_init_failed(TrajGroup *g, int64_t question, int64_t slot, const char *audio_path, const char *reason) {
    traj_group_alloc(g, 0, NULL, 0, 0, 0);
    g->question = question;
    g->slot = slot;
    g->failed = 1;
    g->audio_path = strdupCheck(audio_path);
    g->reason = strdupCheck(reason);
}

void traj_group_free(TrajGroup *g) {
    if (g->func_names)
        for (int i = 0; i < g->n_funcs; i++) free(g->func_names[i]);
    free(g->func_names);
    free(g->prompt_ids);
    free(g->audio_path);
    free(g->reason);
    free(g->func_rewards);
    free(g->rewards);
    free(g->offset);
    free(g->len);
    free(g->ids);
    free(g->mask);
    free(g->sample_lp);
    free(g->ref_lp);
    memset(g, 0, sizeof *g);
}

// A failed group carries its reason and nothing of the completions; a good one no reason.
static int failure_check(const TrajGroup *g, Err *e) {
    if (g->failed != 0 && g->failed != 1) return err_set(e, "failed flag %d not 0/1", g->failed);
    if (!g->failed) {
        if (g->reason) return err_set(e, "a group that did not fail carries a failure reason");
        return 0;
    }
    if (!g->reason || !g->reason[0]) return err_set(e, "failed group without a reason");
    if (strlen(g->reason) > MSG_MAX_REASON) return err_set(e, "failure reason longer than %d bytes", MSG_MAX_REASON);
    if (g->G != 0 || g->n_prompt != 0 || g->n_funcs != 0 || g->n_tokens != 0 || g->ref_lp)
        return err_set(e, "failed group holds data (G %d, n_prompt %d, n_funcs %d, n_tokens %d)", g->G, g->n_prompt,
                       g->n_funcs, g->n_tokens);
    return 0;
}

static int times_check(const TrajTimes *t, Err *e) {
    const double v[5] = {t->data, t->prefill, t->decode, t->reward, t->reference};
    static const char *const names[5] = {"data", "prefill", "decode", "reward", "reference"};
    for (int i = 0; i < 5; i++)
        if (!isfinite(v[i]) || v[i] < 0) return err_set(e, "time.%s %g is not a finite number >= 0", names[i], v[i]);
    return 0;
}

int traj_group_check(const TrajGroup *g, Err *e) {
    if (g->question < 0) return err_set(e, "question index %lld < 0", (long long)g->question);
    if (g->slot < 0) return err_set(e, "slot %lld < 0", (long long)g->slot);
    if (failure_check(g, e) || times_check(&g->time, e)) return -1;
    if (!g->failed && (g->G < 1 || g->G > MSG_MAX_G)) return err_set(e, "G %d not in [1, %d]", g->G, MSG_MAX_G);
    if (g->n_prompt < 0) return err_set(e, "n_prompt %d < 0", g->n_prompt);
    if (g->n_funcs < 0 || g->n_funcs > MSG_MAX_FUNCS) return err_set(e, "n_funcs %d not in [0, %d]", g->n_funcs, MSG_MAX_FUNCS);
    if (g->audio_samples < 0) return err_set(e, "audio_samples %lld < 0", (long long)g->audio_samples);
    if (!g->audio_path || !g->audio_path[0]) return err_set(e, "audio_path is empty");
    if (strlen(g->audio_path) > MSG_MAX_PATH) return err_set(e, "audio_path longer than %d bytes", MSG_MAX_PATH);
    for (int i = 0; i < g->n_prompt; i++)
        if (g->prompt_ids[i] < 0) return err_set(e, "prompt_ids[%d] = %d < 0", i, g->prompt_ids[i]);
    for (int f = 0; f < g->n_funcs; f++) {
        const char *name = g->func_names[f];
        if (!name || !name[0] || strlen(name) > MSG_MAX_NAME)
            return err_set(e, "func_names[%d] is empty or longer than %d bytes", f, MSG_MAX_NAME);
        for (int k = 0; k < f; k++)
            if (strcmp(g->func_names[k], name) == 0) return err_set(e, "func_names[%d] \"%s\" repeats func_names[%d]", f, name, k);
    }
    int64_t tokens = 0;
    for (int i = 0; i < g->G; i++) {
        if (g->len[i] < 0) return err_set(e, "len[%d] = %d < 0", i, g->len[i]);
        if (g->offset[i] != tokens) return err_set(e, "offset[%d] = %d, expected %lld (samples are packed)", i, g->offset[i], (long long)tokens);
        tokens += g->len[i];
        if (!isfinite(g->rewards[i])) return err_set(e, "rewards[%d] is not finite", i);
        for (int f = 0; f < g->n_funcs; f++)
            if (isinf(g->func_rewards[(size_t)i * g->n_funcs + f])) return err_set(e, "func_rewards[%d][%d] is infinite", i, f);
        int ended = 0;
        for (int t = g->offset[i]; t < g->offset[i] + g->len[i]; t++) {
            int pos = t - g->offset[i];
            if (g->ids[t] < 0) return err_set(e, "ids of sample %d position %d = %d < 0", i, pos, g->ids[t]);
            if (g->mask[t] > 1) return err_set(e, "mask of sample %d position %d = %d not 0/1", i, pos, g->mask[t]);
            if (g->mask[t] && ended) return err_set(e, "mask of sample %d: 1 at position %d after a 0 (mask must be a prefix)", i, pos);
            ended |= !g->mask[t];
            if (!isfinite(g->sample_lp[t])) return err_set(e, "sample_lp of sample %d position %d is not finite", i, pos);
            if (g->ref_lp && !isfinite(g->ref_lp[t])) return err_set(e, "ref_lp of sample %d position %d is not finite", i, pos);
        }
    }
    if (tokens != g->n_tokens) return err_set(e, "n_tokens %d, but the lengths sum to %lld", g->n_tokens, (long long)tokens);
    return 0;
}

int msg_encode_group(const TrajGroup *g, uint8_t **out, size_t *out_bytes, Err *e) {
    if (traj_group_check(g, e)) return err_prefix(e, "encode group of question %lld", (long long)g->question);
    Writer w = {0};
    w_reserve(&w, MSG_HEADER_BYTES);
    w_u64(&w, (uint64_t)g->question);
    w_u64(&w, (uint64_t)g->slot);
    w_u8(&w, (uint8_t)g->failed);
    if (g->failed) w_str(&w, g->reason);
    w_f64(&w, g->time.data);
    w_f64(&w, g->time.prefill);
    w_f64(&w, g->time.decode);
    w_f64(&w, g->time.reward);
    w_f64(&w, g->time.reference);
    w_u32(&w, (uint32_t)g->G);
    w_u32(&w, (uint32_t)g->n_prompt);
    for (int i = 0; i < g->n_prompt; i++) w_u32(&w, (uint32_t)g->prompt_ids[i]);
    w_u64(&w, (uint64_t)g->audio_samples);
    w_str(&w, g->audio_path);
    w_u32(&w, (uint32_t)g->n_funcs);
    for (int f = 0; f < g->n_funcs; f++) w_str(&w, g->func_names[f]);
    w_u8(&w, g->ref_lp != NULL);
    for (int i = 0; i < g->G; i++) w_u32(&w, (uint32_t)g->len[i]);
    for (int i = 0; i < g->G; i++) w_f32(&w, g->rewards[i]);
    for (size_t i = 0; i < (size_t)g->G * g->n_funcs; i++) w_f32(&w, g->func_rewards[i]);
    for (int t = 0; t < g->n_tokens; t++) w_u32(&w, (uint32_t)g->ids[t]);
    memcpy(w_reserve(&w, (size_t)g->n_tokens), g->mask, (size_t)g->n_tokens);
    for (int t = 0; t < g->n_tokens; t++) w_f32(&w, g->sample_lp[t]);
    if (g->ref_lp)
        for (int t = 0; t < g->n_tokens; t++) w_f32(&w, g->ref_lp[t]);
    header_write(w.p, MSG_GROUP, g->version, w.p + MSG_HEADER_BYTES, w.n - MSG_HEADER_BYTES);
    *out = w.p;
    *out_bytes = w.n;
    return 0;
}

// Reads the payload after the header into g; the counts are bounded by the bytes that remain before
// anything is allocated from them. Strings read before g is allocated are owned here until moved.
static int group_read(Reader *r, TrajGroup *g) {
    uint64_t question, slot, audio_samples;
    int G, n_prompt, n_funcs = 0, n_names = 0, len[MSG_MAX_G];
    int32_t *prompt = NULL;
    char *path = NULL, *reason = NULL, *names[MSG_MAX_FUNCS] = {0};
    uint8_t has_ref, failed;
    TrajTimes times;
    int64_t tokens = 0;
    int rc = -1;
    if (r_u64(r, &question, "question") || r_u64(r, &slot, "slot") || r_u8(r, &failed, "failed")) goto done;
    if (failed > 1) {
        err_set(r->e, "field failed: %u not 0/1", failed);
        goto done;
    }
    // A failed group has no samples; a good one at least one.
    if ((failed && r_str(r, &reason, MSG_MAX_REASON, "reason")) || r_f64(r, &times.data, "time.data") ||
        r_f64(r, &times.prefill, "time.prefill") || r_f64(r, &times.decode, "time.decode") || r_f64(r, &times.reward, "time.reward") ||
        r_f64(r, &times.reference, "time.reference") || r_count(r, &G, failed ? 0 : 1, failed ? 0 : MSG_MAX_G, "G") ||
        r_count(r, &n_prompt, 0, (int64_t)((r->n - r->pos) / 4), "n_prompt"))
        goto done;
    prompt = mallocCheck(((size_t)n_prompt + 1) * sizeof(int32_t));
    if (r_i32s(r, prompt, n_prompt, "prompt_ids") || r_u64(r, &audio_samples, "audio_samples") ||
        r_str(r, &path, MSG_MAX_PATH, "audio_path") || r_count(r, &n_funcs, 0, MSG_MAX_FUNCS, "n_funcs"))
        goto done;
    for (; n_names < n_funcs; n_names++)
        if (r_str(r, &names[n_names], MSG_MAX_NAME, "func_names")) goto done;
    if (r_u8(r, &has_ref, "has_ref")) goto done;
    if (has_ref > 1) {
        err_set(r->e, "field has_ref: %u not 0/1", has_ref);
        goto done;
    }
    for (int i = 0; i < G; i++) {
        if (r_count(r, &len[i], 0, INT32_MAX, "len")) goto done;
        tokens += len[i];
    }
    // What must remain: rewards 4 * G * (1 + n_funcs) bytes, then 9 bytes a token (id, mask,
    // sample_lp), 13 with ref_lp.
    size_t left = r->n - r->pos, rewards_bytes = (size_t)G * 4 * (1 + (size_t)n_funcs);
    if (tokens > INT32_MAX || (uint64_t)tokens > left / 9 || rewards_bytes + (size_t)tokens * (9 + 4 * has_ref) != left) {
        err_set(r->e, "field len: %lld tokens over %d samples do not match the %zu payload bytes left", (long long)tokens, G, left);
        goto done;
    }
    traj_group_alloc(g, G, len, n_prompt, n_funcs, has_ref);
    g->question = (int64_t)question;
    g->slot = (int64_t)slot;
    g->failed = failed;
    g->reason = reason;
    reason = NULL;
    g->time = times;
    g->audio_samples = (int64_t)audio_samples;
    memcpy(g->prompt_ids, prompt, (size_t)n_prompt * sizeof(int32_t));
    g->audio_path = path;
    path = NULL;
    memcpy(g->func_names, names, (size_t)n_funcs * sizeof(char *));
    memset(names, 0, sizeof names);  // moved into g
    const uint8_t *mask = NULL;
    if (r_f32s(r, g->rewards, (size_t)G, "rewards") || r_f32s(r, g->func_rewards, (size_t)G * n_funcs, "func_rewards") ||
        r_i32s(r, g->ids, g->n_tokens, "ids") || !(mask = r_take(r, (size_t)g->n_tokens, "mask")))
        goto done;
    memcpy(g->mask, mask, (size_t)g->n_tokens);
    if (r_f32s(r, g->sample_lp, (size_t)g->n_tokens, "sample_lp") ||
        (has_ref && r_f32s(r, g->ref_lp, (size_t)g->n_tokens, "ref_lp")))
        goto done;
    rc = 0;
done:
    // names[n_names] may hold a string r_str allocated before rejecting it.
    for (int f = 0; f <= n_names && f < MSG_MAX_FUNCS; f++) free(names[f]);
    free(prompt);
    free(path);
    free(reason);
    return rc;
}

int msg_decode_group(const uint8_t *buf, size_t n, TrajGroup *g, Err *e) {
    memset(g, 0, sizeof *g);
    MsgHeader h;
    if (msg_header_read(buf, n, MSG_GROUP, &h, e)) return err_prefix(e, "group message");
    Reader r = {.p = buf + MSG_HEADER_BYTES, .n = n - MSG_HEADER_BYTES, .e = e};
    if (group_read(&r, g) || traj_group_check(g, e)) {
        traj_group_free(g);
        return err_prefix(e, "group message");
    }
    g->version = h.version;
    return 0;
}

// ---- weights announcement -----------------------------------------------------------------------------

uint32_t msg_weights_n_buckets(uint64_t n_elems, uint64_t bucket_elems) {
    return (uint32_t)((n_elems + bucket_elems - 1) / bucket_elems);
}

void msg_encode_weights(int64_t version, uint64_t n_elems, uint64_t bucket_elems, uint8_t buf[MSG_WEIGHTS_BYTES]) {
    uint8_t *p = buf + MSG_HEADER_BYTES;
    le_put(p, n_elems, 8);
    le_put(p + 8, bucket_elems, 8);
    le_put(p + 16, msg_weights_n_buckets(n_elems, bucket_elems), 4);
    le_put(p + 20, 0, 4);
    header_write(buf, MSG_WEIGHTS, version, p, 24);
}

int msg_decode_weights(const uint8_t *buf, size_t n, WeightsInfo *w, Err *e) {
    MsgHeader h;
    if (msg_header_read(buf, n, MSG_WEIGHTS, &h, e)) return err_prefix(e, "weights message");
    if (h.payload_bytes != 24) return err_set(e, "weights message: payload of %llu bytes, expected 24", (unsigned long long)h.payload_bytes);
    const uint8_t *p = buf + MSG_HEADER_BYTES;
    w->version = h.version;
    w->n_elems = le_get(p, 8);
    w->bucket_elems = le_get(p + 8, 8);
    w->n_buckets = (uint32_t)le_get(p + 16, 4);
    if (w->bucket_elems < 1 || w->bucket_elems > INT32_MAX)
        return err_set(e, "weights message: bucket_elems %llu not in [1, %d]", (unsigned long long)w->bucket_elems, INT32_MAX);
    if ((w->n_elems + w->bucket_elems - 1) / w->bucket_elems != w->n_buckets)
        return err_set(e, "weights message: n_buckets %u inconsistent with %llu elements in buckets of %llu", w->n_buckets,
                       (unsigned long long)w->n_elems, (unsigned long long)w->bucket_elems);
    if (le_get(p + 20, 4) != 0) return err_set(e, "weights message: reserved payload bytes are not zero");
    return 0;
}
