#include "ckpt/trainer_state.h"

#include <errno.h>
#include <inttypes.h>
#include <jansson.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "ckpt/crc32.h"
#include "util/fileio.h"

// The arrays are written as the CPU holds them; the format says little-endian.
_Static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "trainer_state: little-endian hosts only");

enum { TS_HEADER_BYTES = 32, TS_ALIGN = 64 };

// One row of the metadata's array table. offset is from the start of the array section, which begins
// at the first TS_ALIGN boundary after the metadata (so the offsets do not depend on the metadata's own
// length). crc[k] covers floats [k * block, (k + 1) * block) (version 1: one block, the whole array).
typedef struct {
    char name[TRAINER_NAME_CAP];
    int64_t offset;
    int64_t count;
    int64_t block;
    uint32_t *crc;  // [ts_n_blocks]
} TsEntry;

struct TrainerFile {
    char path[4096];
    FILE *f;
    TrainerState st;
    TsEntry ent[TRAINER_MAX_ARRAYS];
    int n_ent;
    int64_t data_start;  // file offset of the array section
    float *buf;          // [TRAINER_CRC_BLOCK]: the block being checked
};

static int64_t ts_n_blocks(const TsEntry *t) { return t->count == 0 ? 0 : (t->count + t->block - 1) / t->block; }

static void ts_entries_free(TsEntry *ent, int n) {
    for (int i = 0; i < n; i++) free(ent[i].crc), ent[i].crc = NULL;
}

static int64_t ts_align(int64_t x) { return (x + TS_ALIGN - 1) / TS_ALIGN * TS_ALIGN; }

static void put_u32(unsigned char *p, uint32_t v) {
    for (int i = 0; i < 4; i++) p[i] = (unsigned char)(v >> (8 * i));
}
static void put_u64(unsigned char *p, uint64_t v) {
    for (int i = 0; i < 8; i++) p[i] = (unsigned char)(v >> (8 * i));
}
static uint32_t get_u32(const unsigned char *p) {
    uint32_t v = 0;
    for (int i = 3; i >= 0; i--) v = (v << 8) | p[i];
    return v;
}
static uint64_t get_u64(const unsigned char *p) {
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--) v = (v << 8) | p[i];
    return v;
}

// ---------------------------------------------------------------------------------------------------
// Names, lookups and the checks shared by save and load

static int ts_name_ok(const char *s) {
    size_t n = strlen(s);
    if (n == 0 || n >= TRAINER_NAME_CAP) return 0;
    for (const char *p = s; *p; p++)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') || *p == '_' ||
              *p == '.' || *p == '-'))
            return 0;
    return 1;
}

static int ts_check_name(const char *what, const char *name, Err *e) {
    if (!name || !ts_name_ok(name))
        return err_set(e, "%s name \"%s\": must be 1-%d characters of [A-Za-z0-9_.-]", what,
                       name ? name : "(null)", TRAINER_NAME_CAP - 1);
    return 0;
}

int trainer_state_set_rng(TrainerState *st, const char *name, const Rng *r, Err *e) {
    if (ts_check_name("rng", name, e)) return -1;
    if (r->used > 4) return err_set(e, "rng \"%s\": used = %u, must be <= 4", name, r->used);
    for (int i = 0; i < st->n_rngs; i++)
        if (strcmp(st->rngs[i].name, name) == 0) {
            st->rngs[i].rng = *r;
            return 0;
        }
    if (st->n_rngs >= TRAINER_MAX_RNGS)
        return err_set(e, "rng \"%s\": more than %d rngs", name, TRAINER_MAX_RNGS);
    TrainerRng *t = &st->rngs[st->n_rngs++];
    snprintf(t->name, sizeof t->name, "%s", name);
    t->rng = *r;
    return 0;
}

int trainer_state_set_scalar(TrainerState *st, const char *name, double value, Err *e) {
    if (ts_check_name("scalar", name, e)) return -1;
    for (int i = 0; i < st->n_scalars; i++)
        if (strcmp(st->scalars[i].name, name) == 0) {
            st->scalars[i].value = value;
            return 0;
        }
    if (st->n_scalars >= TRAINER_MAX_SCALARS)
        return err_set(e, "scalar \"%s\": more than %d scalars", name, TRAINER_MAX_SCALARS);
    TrainerScalar *t = &st->scalars[st->n_scalars++];
    snprintf(t->name, sizeof t->name, "%s", name);
    t->value = value;
    return 0;
}

int trainer_state_get_rng(const TrainerState *st, const char *name, Rng *out, Err *e) {
    for (int i = 0; i < st->n_rngs; i++)
        if (strcmp(st->rngs[i].name, name) == 0) {
            *out = st->rngs[i].rng;
            return 0;
        }
    return err_set(e, "trainer state has no rng \"%s\"", name);
}

int trainer_state_get_scalar(const TrainerState *st, const char *name, double *out, Err *e) {
    for (int i = 0; i < st->n_scalars; i++)
        if (strcmp(st->scalars[i].name, name) == 0) {
            *out = st->scalars[i].value;
            return 0;
        }
    return err_set(e, "trainer state has no scalar \"%s\"", name);
}

void trainer_state_free(TrainerState *st) {
    free(st->config_json);
    st->config_json = NULL;
    free(st->shard.segs);
    st->shard.segs = NULL;
    st->shard.n_segs = 0;
}

int trainer_shard_n_segs(const TrainerShard *s) { return s->n_segs ? s->n_segs : 1; }

TrainerSeg trainer_shard_seg(const TrainerShard *s, int i) {
    return s->n_segs ? s->segs[i] : (TrainerSeg){.lo = s->offset, .n = s->count, .at = 0};
}

static int ts_cmp_seg_lo(const void *a, const void *b) {
    int64_t x = ((const TrainerSeg *)a)->lo, y = ((const TrainerSeg *)b)->lo;
    return (x > y) - (x < y);
}

// Segments inside the model and the arrays, in array order, covering no parameter twice.
static int ts_check_segs(const TrainerShard *s, Err *e) {
    if (s->n_segs == 0) return 0;
    if (s->n_segs < 0 || !s->segs) return err_set(e, "optimizer.segments: %d, list missing", s->n_segs);
    if (s->offset != 0) return err_set(e, "optimizer.shard_offset = %" PRId64 " with segments, must be 0", s->offset);
    int64_t end = 0;
    for (int i = 0; i < s->n_segs; i++) {
        const TrainerSeg *g = &s->segs[i];
        if (g->n < 1 || g->lo < 0 || g->lo > s->n_params - g->n || g->at < end || g->at > s->count - g->n)
            return err_set(e,
                           "optimizer.segments[%d] = [%" PRId64 ", +%" PRId64 ") at %" PRId64
                           ": outside n_params %" PRId64 " or count %" PRId64 ", or before the previous one",
                           i, g->lo, g->n, g->at, s->n_params, s->count);
        end = g->at + g->n;
    }
    TrainerSeg *by_lo = mallocCheck((size_t)s->n_segs * sizeof *by_lo);
    memcpy(by_lo, s->segs, (size_t)s->n_segs * sizeof *by_lo);
    qsort(by_lo, (size_t)s->n_segs, sizeof *by_lo, ts_cmp_seg_lo);
    int rc = 0;
    for (int i = 1; i < s->n_segs && !rc; i++)
        if (by_lo[i].lo < by_lo[i - 1].lo + by_lo[i - 1].n)
            rc = err_set(e, "optimizer.segments: parameters [%" PRId64 ", +%" PRId64 ") and [%" PRId64 ", +%" PRId64
                            ") overlap", by_lo[i - 1].lo, by_lo[i - 1].n, by_lo[i].lo, by_lo[i].n);
    free(by_lo);
    return rc;
}

// Everything a valid state satisfies, whether about to be written or just read.
static int ts_check_state(const TrainerState *st, Err *e) {
    if (st->step < 0) return err_set(e, "step = %" PRId64 ", must be >= 0", st->step);
    if (st->version < 0) return err_set(e, "version = %" PRId64 ", must be >= 0", st->version);
    if (!st->config_json) return err_set(e, "config: missing (config_json is NULL)");
    const OrderCursor *c = &st->cursor;
    if (c->n_questions < 1)
        return err_set(e, "cursor.n_questions = %" PRId64 ", must be >= 1", c->n_questions);
    if (c->epoch < 0) return err_set(e, "cursor.epoch = %" PRId64 ", must be >= 0", c->epoch);
    if (c->position < 0 || c->position >= c->n_questions)
        return err_set(e, "cursor.position = %" PRId64 ", must be in [0, %" PRId64 ")", c->position,
                       c->n_questions);
    if (ts_check_name("optimizer kind", st->optim_kind, e)) return -1;
    if (st->optim_step < 0) return err_set(e, "optimizer.step = %" PRId64 ", must be >= 0", st->optim_step);
    const TrainerShard *s = &st->shard;
    if (s->n_params < 0) return err_set(e, "optimizer.n_params = %" PRId64 ", must be >= 0", s->n_params);
    if (s->n_ranks < 1) return err_set(e, "optimizer.n_ranks = %d, must be >= 1", s->n_ranks);
    if (s->rank < 0 || s->rank >= s->n_ranks)
        return err_set(e, "optimizer.rank = %d, must be in [0, %d)", s->rank, s->n_ranks);
    if (s->n_segs == 0 && (s->offset < 0 || s->count < 0 || s->offset > s->n_params - s->count))
        return err_set(e, "optimizer shard [%" PRId64 ", +%" PRId64 ") does not fit n_params = %" PRId64,
                       s->offset, s->count, s->n_params);
    if (s->count < 0) return err_set(e, "optimizer.shard_count = %" PRId64 ", must be >= 0", s->count);
    if (ts_check_segs(s, e)) return -1;
    if (st->n_rngs < 0 || st->n_rngs > TRAINER_MAX_RNGS)
        return err_set(e, "n_rngs = %d, must be in [0, %d]", st->n_rngs, TRAINER_MAX_RNGS);
    for (int i = 0; i < st->n_rngs; i++) {
        if (ts_check_name("rng", st->rngs[i].name, e)) return -1;
        if (st->rngs[i].rng.used > 4)
            return err_set(e, "rng \"%s\": used = %u, must be <= 4", st->rngs[i].name, st->rngs[i].rng.used);
        for (int j = 0; j < i; j++)
            if (strcmp(st->rngs[i].name, st->rngs[j].name) == 0)
                return err_set(e, "rng \"%s\": appears twice", st->rngs[i].name);
    }
    if (st->n_scalars < 0 || st->n_scalars > TRAINER_MAX_SCALARS)
        return err_set(e, "n_scalars = %d, must be in [0, %d]", st->n_scalars, TRAINER_MAX_SCALARS);
    for (int i = 0; i < st->n_scalars; i++) {
        if (ts_check_name("scalar", st->scalars[i].name, e)) return -1;
        for (int j = 0; j < i; j++)
            if (strcmp(st->scalars[i].name, st->scalars[j].name) == 0)
                return err_set(e, "scalar \"%s\": appears twice", st->scalars[i].name);
    }
    return 0;
}

static int ts_check_arrays(const TrainerArray *arrays, int n_arrays, Err *e) {
    if (n_arrays < 0 || n_arrays > TRAINER_MAX_ARRAYS)
        return err_set(e, "n_arrays = %d, must be in [0, %d]", n_arrays, TRAINER_MAX_ARRAYS);
    for (int i = 0; i < n_arrays; i++) {
        if (ts_check_name("array", arrays[i].name, e)) return -1;
        if (arrays[i].n < 0)
            return err_set(e, "array \"%s\": n = %" PRId64 ", must be >= 0", arrays[i].name, arrays[i].n);
        if (arrays[i].n > 0 && !arrays[i].data)
            return err_set(e, "array \"%s\": data is NULL", arrays[i].name);
        for (int j = 0; j < i; j++)
            if (strcmp(arrays[i].name, arrays[j].name) == 0)
                return err_set(e, "array \"%s\": appears twice", arrays[i].name);
    }
    return 0;
}

// ---------------------------------------------------------------------------------------------------
// Saving

// jansson returns NULL only when out of memory (or for invalid UTF-8, checked before): a system failure.
static json_t *jnn(json_t *v) {
    if (!v) fatal("trainer_state: out of memory building JSON");
    return v;
}
static void jset(json_t *obj, const char *key, json_t *v) {
    if (json_object_set_new(obj, key, jnn(v)) != 0) fatal("trainer_state: out of memory building JSON");
}
static void jpush(json_t *arr, json_t *v) {
    if (json_array_append_new(arr, jnn(v)) != 0) fatal("trainer_state: out of memory building JSON");
}
// 64-bit unsigned values go as decimal strings: JSON readers commonly hold numbers as doubles.
static json_t *ju64(uint64_t v) {
    char s[32];
    snprintf(s, sizeof s, "%" PRIu64, v);
    return json_string(s);
}

static json_t *ts_meta_json(const TrainerState *st, const TsEntry *ent, int n_ent, int64_t data_bytes) {
    json_t *root = jnn(json_object());
    jset(root, "format", json_string("aqa-trainer-state"));
    jset(root, "step", json_integer(st->step));
    jset(root, "version", json_integer(st->version));
    jset(root, "ckpt_id", ju64(st->ckpt_id));
    jset(root, "config", json_string(st->config_json));

    json_t *cur = jnn(json_object());
    jset(cur, "epoch", json_integer(st->cursor.epoch));
    jset(cur, "position", json_integer(st->cursor.position));
    jset(cur, "n_questions", json_integer(st->cursor.n_questions));
    jset(cur, "seed", ju64(st->cursor.seed));
    jset(root, "cursor", cur);

    json_t *opt = jnn(json_object());
    jset(opt, "kind", json_string(st->optim_kind));
    jset(opt, "step", json_integer(st->optim_step));
    jset(opt, "n_params", json_integer(st->shard.n_params));
    jset(opt, "shard_offset", json_integer(st->shard.offset));
    jset(opt, "shard_count", json_integer(st->shard.count));
    jset(opt, "rank", json_integer(st->shard.rank));
    jset(opt, "n_ranks", json_integer(st->shard.n_ranks));
    if (st->shard.n_segs) {
        json_t *segs = jnn(json_array());
        for (int i = 0; i < st->shard.n_segs; i++) {
            const TrainerSeg *g = &st->shard.segs[i];
            json_t *o = jnn(json_array());
            jpush(o, json_integer(g->lo));
            jpush(o, json_integer(g->n));
            jpush(o, json_integer(g->at));
            jpush(segs, o);
        }
        jset(opt, "segments", segs);
    }
    jset(root, "optimizer", opt);

    json_t *rngs = jnn(json_array());
    for (int i = 0; i < st->n_rngs; i++) {
        const Rng *r = &st->rngs[i].rng;
        json_t *o = jnn(json_object());
        jset(o, "name", json_string(st->rngs[i].name));
        jset(o, "seed", ju64(r->seed));
        jset(o, "stream", ju64(r->stream));
        jset(o, "block", ju64(r->block));
        // Words already consumed are never read again; zeros keep the file a function of the state
        // (rng_init leaves buf unset).
        json_t *buf = jnn(json_array());
        for (uint32_t k = 0; k < 4; k++) jpush(buf, json_integer(k < r->used ? 0 : r->buf[k]));
        jset(o, "buf", buf);
        jset(o, "used", json_integer(r->used));
        jpush(rngs, o);
    }
    jset(root, "rngs", rngs);

    // "bits" is the exact value (NaN payloads included); "value" is for people reading the file.
    json_t *scal = jnn(json_array());
    for (int i = 0; i < st->n_scalars; i++) {
        double v = st->scalars[i].value;
        uint64_t bits;
        memcpy(&bits, &v, 8);
        char hex[24];
        snprintf(hex, sizeof hex, "%016" PRIx64, bits);
        json_t *o = jnn(json_object());
        jset(o, "name", json_string(st->scalars[i].name));
        jset(o, "value", isfinite(v) ? json_real(v) : json_null());
        jset(o, "bits", json_string(hex));
        jpush(scal, o);
    }
    jset(root, "scalars", scal);

    json_t *arr = jnn(json_array());
    for (int i = 0; i < n_ent; i++) {
        json_t *o = jnn(json_object());
        jset(o, "name", json_string(ent[i].name));
        jset(o, "dtype", json_string("f32"));
        jset(o, "offset", json_integer(ent[i].offset));
        jset(o, "count", json_integer(ent[i].count));
        jset(o, "crc_block", json_integer(ent[i].block));
        json_t *crc = jnn(json_array());
        for (int64_t k = 0; k < ts_n_blocks(&ent[i]); k++) jpush(crc, json_integer(ent[i].crc[k]));
        jset(o, "crc32", crc);
        jpush(arr, o);
    }
    jset(root, "arrays", arr);
    jset(root, "data_bytes", json_integer(data_bytes));
    return root;
}

// A failed write (a full disk, RLIMIT_FSIZE) is the caller's error to report, not the process's end.
static int ts_write(AtomicFile *af, const void *p, int64_t bytes, Err *e) {
    if (bytes > 0 && fwrite(p, 1, (size_t)bytes, af->f) != (size_t)bytes) {
        int saved = errno;
        atomic_abort(af);
        return err_set(e, "%s: write failed: %s", af->path, strerror(saved));
    }
    return 0;
}

static int ts_write_zeros(AtomicFile *af, int64_t n, Err *e) {
    static const unsigned char zero[TS_ALIGN];
    return ts_write(af, zero, n, e);
}

int trainer_state_save(const char *path, const TrainerState *st, const TrainerArray *arrays, int n_arrays,
                       Err *e) {
    if (ts_check_state(st, e) || ts_check_arrays(arrays, n_arrays, e))
        return err_prefix(e, "%s: cannot save", path);
    // json_string refuses invalid UTF-8; say so rather than report it as out of memory.
    json_t *probe = json_string(st->config_json);
    if (!probe) return err_set(e, "%s: cannot save: config is not valid UTF-8", path);
    json_decref(probe);

    TsEntry ent[TRAINER_MAX_ARRAYS];
    int64_t pos = 0;
    for (int i = 0; i < n_arrays; i++) {
        snprintf(ent[i].name, sizeof ent[i].name, "%s", arrays[i].name);
        ent[i].offset = pos;
        ent[i].count = arrays[i].n;
        ent[i].block = TRAINER_CRC_BLOCK;
        ent[i].crc = mallocCheck((size_t)(ts_n_blocks(&ent[i]) + 1) * sizeof(uint32_t));
        for (int64_t k = 0, lo = 0; lo < arrays[i].n; k++, lo += ent[i].block) {
            int64_t m = arrays[i].n - lo < ent[i].block ? arrays[i].n - lo : ent[i].block;
            ent[i].crc[k] = crc32_update(0, arrays[i].data + lo, (size_t)m * sizeof(float));
        }
        pos = ts_align(pos + arrays[i].n * (int64_t)sizeof(float));
    }
    json_t *root = ts_meta_json(st, ent, n_arrays, pos);
    ts_entries_free(ent, n_arrays);
    char *meta = json_dumps(root, JSON_INDENT(1) | JSON_PRESERVE_ORDER);
    json_decref(root);
    if (!meta) fatal("trainer_state: out of memory printing JSON");
    size_t meta_len = strlen(meta);

    unsigned char hdr[TS_HEADER_BYTES] = {0};
    memcpy(hdr, TRAINER_STATE_MAGIC, 8);
    put_u32(hdr + 8, TRAINER_STATE_VERSION);
    put_u64(hdr + 16, meta_len);
    put_u32(hdr + 24, crc32_update(0, meta, meta_len));
    put_u32(hdr + 28, crc32_update(0, hdr, 28));

    AtomicFile af;
    if (atomic_open(&af, path, e)) {
        free(meta);
        return -1;
    }
    int64_t data_start = ts_align(TS_HEADER_BYTES + (int64_t)meta_len);
    int rc = ts_write(&af, hdr, sizeof hdr, e) || ts_write(&af, meta, (int64_t)meta_len, e) ||
             ts_write_zeros(&af, data_start - TS_HEADER_BYTES - (int64_t)meta_len, e);
    free(meta);
    for (int i = 0; i < n_arrays && !rc; i++) {
        int64_t bytes = arrays[i].n * (int64_t)sizeof(float);
        rc = ts_write(&af, arrays[i].data, bytes, e) || ts_write_zeros(&af, ts_align(bytes) - bytes, e);
    }
    return rc ? -1 : atomic_commit(&af, e);
}

// ---------------------------------------------------------------------------------------------------
// Loading: every field is looked up with its path ("optimizer.n_params", "rngs[2].used") for errors.

static int jget(json_t *obj, const char *ctx, const char *key, json_t **out, Err *e) {
    *out = json_is_object(obj) ? json_object_get(obj, key) : NULL;
    if (!*out) return err_set(e, "%s%s%s: missing", ctx, *ctx ? "." : "", key);
    return 0;
}

static int jint(json_t *obj, const char *ctx, const char *key, int64_t lo, int64_t hi, int64_t *out, Err *e) {
    json_t *v;
    if (jget(obj, ctx, key, &v, e)) return -1;
    if (!json_is_integer(v)) return err_set(e, "%s%s%s: not an integer", ctx, *ctx ? "." : "", key);
    *out = json_integer_value(v);
    if (*out < lo || *out > hi)
        return err_set(e, "%s%s%s = %" PRId64 ", must be in [%" PRId64 ", %" PRId64 "]", ctx, *ctx ? "." : "",
                       key, *out, lo, hi);
    return 0;
}

static int jstr(json_t *obj, const char *ctx, const char *key, const char **out, Err *e) {
    json_t *v;
    if (jget(obj, ctx, key, &v, e)) return -1;
    if (!json_is_string(v)) return err_set(e, "%s%s%s: not a string", ctx, *ctx ? "." : "", key);
    *out = json_string_value(v);
    return 0;
}

static int jname(json_t *obj, const char *ctx, const char *key, char *out, Err *e) {
    const char *s;
    if (jstr(obj, ctx, key, &s, e)) return -1;
    if (!ts_name_ok(s)) return err_set(e, "%s%s%s = \"%s\": not a valid name", ctx, *ctx ? "." : "", key, s);
    snprintf(out, TRAINER_NAME_CAP, "%s", s);
    return 0;
}

// A decimal string (ju64) or, with hex, exactly 16 hex digits (scalar bits).
static int jdigits(json_t *obj, const char *ctx, const char *key, int hex, uint64_t *out, Err *e) {
    const char *s;
    if (jstr(obj, ctx, key, &s, e)) return -1;
    size_t n = strlen(s);
    int ok = hex ? n == 16 : n >= 1 && n <= 20;
    for (size_t i = 0; ok && i < n; i++)
        ok = hex ? strchr("0123456789abcdef", s[i]) != NULL : s[i] >= '0' && s[i] <= '9';
    errno = 0;
    if (ok) *out = strtoull(s, NULL, hex ? 16 : 10);
    if (!ok || errno == ERANGE)
        return err_set(e, "%s%s%s = \"%s\": not a %s", ctx, *ctx ? "." : "", key, s,
                       hex ? "16-digit hex number" : "64-bit unsigned decimal");
    return 0;
}

static int jlist(json_t *obj, const char *key, int max, json_t **out, Err *e) {
    if (jget(obj, "", key, out, e)) return -1;
    if (!json_is_array(*out)) return err_set(e, "%s: not a list", key);
    if ((int64_t)json_array_size(*out) > max)
        return err_set(e, "%s: %zu entries, at most %d", key, json_array_size(*out), max);
    return 0;
}

static int ts_parse_rngs(json_t *root, TrainerState *st, Err *e) {
    json_t *list;
    if (jlist(root, "rngs", TRAINER_MAX_RNGS, &list, e)) return -1;
    st->n_rngs = (int)json_array_size(list);
    for (int i = 0; i < st->n_rngs; i++) {
        json_t *o = json_array_get(list, (size_t)i), *buf;
        char ctx[32];
        snprintf(ctx, sizeof ctx, "rngs[%d]", i);
        Rng *r = &st->rngs[i].rng;
        int64_t used;
        if (jname(o, ctx, "name", st->rngs[i].name, e) || jdigits(o, ctx, "seed", 0, &r->seed, e) ||
            jdigits(o, ctx, "stream", 0, &r->stream, e) || jdigits(o, ctx, "block", 0, &r->block, e) ||
            jint(o, ctx, "used", 0, 4, &used, e) || jget(o, ctx, "buf", &buf, e))
            return -1;
        r->used = (uint32_t)used;
        if (!json_is_array(buf) || json_array_size(buf) != 4)
            return err_set(e, "%s.buf: not a list of 4", ctx);
        for (int k = 0; k < 4; k++) {
            json_t *w = json_array_get(buf, (size_t)k);
            if (!json_is_integer(w) || json_integer_value(w) < 0 || json_integer_value(w) > UINT32_MAX)
                return err_set(e, "%s.buf[%d]: not a 32-bit unsigned integer", ctx, k);
            r->buf[k] = (uint32_t)json_integer_value(w);
        }
    }
    return 0;
}

static int ts_parse_scalars(json_t *root, TrainerState *st, Err *e) {
    json_t *list;
    if (jlist(root, "scalars", TRAINER_MAX_SCALARS, &list, e)) return -1;
    st->n_scalars = (int)json_array_size(list);
    for (int i = 0; i < st->n_scalars; i++) {
        json_t *o = json_array_get(list, (size_t)i);
        char ctx[32];
        snprintf(ctx, sizeof ctx, "scalars[%d]", i);
        uint64_t bits = 0;
        if (jname(o, ctx, "name", st->scalars[i].name, e) || jdigits(o, ctx, "bits", 1, &bits, e)) return -1;
        memcpy(&st->scalars[i].value, &bits, 8);
    }
    return 0;
}

// The CRCs of array entry t: version 1 has one (an integer), version 2 a list, one per block.
static int ts_parse_crcs(json_t *o, const char *ctx, uint32_t version, TsEntry *t, Err *e) {
    int64_t crc;
    if (version == 1) {
        t->block = t->count > 0 ? t->count : 1;
        if (jint(o, ctx, "crc32", 0, UINT32_MAX, &crc, e)) return -1;
        t->crc = mallocCheck(sizeof(uint32_t));
        t->crc[0] = (uint32_t)crc;
        return 0;
    }
    json_t *list;
    if (jint(o, ctx, "crc_block", 1, INT64_MAX, &t->block, e) || jget(o, ctx, "crc32", &list, e)) return -1;
    if (!json_is_array(list) || (int64_t)json_array_size(list) != ts_n_blocks(t))
        return err_set(e, "%s.crc32: not a list of %" PRId64 " CRCs (one per block of %" PRId64 ")", ctx,
                       ts_n_blocks(t), t->block);
    t->crc = mallocCheck((size_t)(ts_n_blocks(t) + 1) * sizeof(uint32_t));
    for (int64_t k = 0; k < ts_n_blocks(t); k++) {
        json_t *w = json_array_get(list, (size_t)k);
        if (!json_is_integer(w) || json_integer_value(w) < 0 || json_integer_value(w) > UINT32_MAX)
            return err_set(e, "%s.crc32[%" PRId64 "]: not a 32-bit unsigned integer", ctx, k);
        t->crc[k] = (uint32_t)json_integer_value(w);
    }
    return 0;
}

// The array table: names unique, offsets aligned, in order, not overlapping, inside data_bytes.
static int ts_parse_arrays(json_t *root, uint32_t version, int64_t data_bytes, TsEntry *ent, int *n_ent, Err *e) {
    json_t *list;
    if (jlist(root, "arrays", TRAINER_MAX_ARRAYS, &list, e)) return -1;
    int n = (int)json_array_size(list);
    int64_t end = 0;
    for (int i = 0; i < n; i++) {
        json_t *o = json_array_get(list, (size_t)i);
        char ctx[32];
        snprintf(ctx, sizeof ctx, "arrays[%d]", i);
        const char *dtype;
        if (jname(o, ctx, "name", ent[i].name, e) || jstr(o, ctx, "dtype", &dtype, e) ||
            jint(o, ctx, "offset", end, data_bytes, &ent[i].offset, e) ||
            jint(o, ctx, "count", 0, (data_bytes - ent[i].offset) / (int64_t)sizeof(float), &ent[i].count,
                 e))
            return -1;
        if (strcmp(dtype, "f32") != 0)
            return err_set(e, "%s.dtype = \"%s\", only \"f32\" is known", ctx, dtype);
        if (ent[i].offset % TS_ALIGN)
            return err_set(e, "%s.offset = %" PRId64 ": not %d-byte aligned", ctx, ent[i].offset, TS_ALIGN);
        if (ts_parse_crcs(o, ctx, version, &ent[i], e)) return -1;
        *n_ent = i + 1;  // its CRCs are ours to free now
        end = ent[i].offset + ent[i].count * (int64_t)sizeof(float);
        for (int j = 0; j < i; j++)
            if (strcmp(ent[i].name, ent[j].name) == 0)
                return err_set(e, "%s: name \"%s\" appears twice", ctx, ent[i].name);
    }
    return 0;
}

// optimizer.segments (version 2, optional): a list of [lo, n, at].
static int ts_parse_segs(json_t *opt, TrainerShard *s, Err *e) {
    json_t *list = json_object_get(opt, "segments");
    if (!list) return 0;
    if (!json_is_array(list) || json_array_size(list) < 1 || json_array_size(list) > INT32_MAX)
        return err_set(e, "optimizer.segments: not a non-empty list");
    s->n_segs = (int)json_array_size(list);
    s->segs = mallocCheck((size_t)s->n_segs * sizeof *s->segs);
    for (int i = 0; i < s->n_segs; i++) {
        json_t *g = json_array_get(list, (size_t)i);
        int64_t v[3];
        for (int k = 0; k < 3; k++) {
            json_t *x = json_is_array(g) && json_array_size(g) == 3 ? json_array_get(g, (size_t)k) : NULL;
            if (!json_is_integer(x))
                return err_set(e, "optimizer.segments[%d]: not a list of 3 integers [lo, n, at]", i);
            v[k] = json_integer_value(x);
        }
        s->segs[i] = (TrainerSeg){.lo = v[0], .n = v[1], .at = v[2]};
    }
    return 0;
}

static int ts_parse_meta(json_t *root, uint32_t version, TrainerState *st, int64_t *data_bytes, TsEntry *ent,
                         int *n_ent, Err *e) {
    const char *format, *config, *kind;
    json_t *cur, *opt;
    int64_t n_ranks, rank;
    if (jstr(root, "", "format", &format, e)) return -1;
    if (strcmp(format, "aqa-trainer-state") != 0)
        return err_set(e, "format = \"%s\", expected \"aqa-trainer-state\"", format);
    if (jint(root, "", "step", 0, INT64_MAX, &st->step, e) ||
        jint(root, "", "version", 0, INT64_MAX, &st->version, e) || jstr(root, "", "config", &config, e) ||
        jget(root, "", "cursor", &cur, e) ||
        jint(cur, "cursor", "epoch", 0, INT64_MAX, &st->cursor.epoch, e) ||
        jint(cur, "cursor", "n_questions", 1, INT64_MAX, &st->cursor.n_questions, e) ||
        jint(cur, "cursor", "position", 0, st->cursor.n_questions - 1, &st->cursor.position, e) ||
        jdigits(cur, "cursor", "seed", 0, &st->cursor.seed, e) || jget(root, "", "optimizer", &opt, e) ||
        jstr(opt, "optimizer", "kind", &kind, e) ||
        jint(opt, "optimizer", "step", 0, INT64_MAX, &st->optim_step, e) ||
        jint(opt, "optimizer", "n_params", 0, INT64_MAX, &st->shard.n_params, e) ||
        jint(opt, "optimizer", "shard_offset", 0, st->shard.n_params, &st->shard.offset, e) ||
        jint(opt, "optimizer", "shard_count", 0, INT64_MAX / (int64_t)sizeof(float), &st->shard.count, e) ||
        jint(opt, "optimizer", "n_ranks", 1, INT32_MAX, &n_ranks, e) ||
        jint(opt, "optimizer", "rank", 0, n_ranks - 1, &rank, e) ||
        jint(root, "", "data_bytes", 0, INT64_MAX, data_bytes, e))
        return -1;
    if (!ts_name_ok(kind) || strlen(kind) >= TRAINER_KIND_CAP)
        return err_set(e, "optimizer.kind = \"%s\": not a valid name", kind);
    snprintf(st->optim_kind, sizeof st->optim_kind, "%.*s", TRAINER_KIND_CAP - 1, kind);
    st->shard.n_ranks = (int)n_ranks;
    st->shard.rank = (int)rank;
    if (version >= 2 && (jdigits(root, "", "ckpt_id", 0, &st->ckpt_id, e) || ts_parse_segs(opt, &st->shard, e)))
        return -1;
    if (ts_parse_rngs(root, st, e) || ts_parse_scalars(root, st, e) ||
        ts_parse_arrays(root, version, *data_bytes, ent, n_ent, e))
        return -1;
    st->config_json = strdupCheck(config);
    return ts_check_state(st, e);
}

// Opens f->path and reads everything before the arrays into f (f->f positioned after the metadata).
static int ts_open(TrainerFile *f, Err *e) {
    const char *path = f->path;
    f->f = fopen(path, "rb");
    if (!f->f) return err_set(e, "%s: cannot open: %s", path, strerror(errno));
    struct stat sb;
    if (fstat(fileno(f->f), &sb) != 0) fatal("%s: fstat: %s", path, strerror(errno));
    int64_t size = (int64_t)sb.st_size;
    unsigned char hdr[TS_HEADER_BYTES];
    char *meta = NULL;
    json_t *root = NULL;
    if (size < TS_HEADER_BYTES) {
        err_set(e, "%s: truncated: %" PRId64 " bytes, the header alone is %d", path, size, TS_HEADER_BYTES);
        goto fail;
    }
    freadCheck(hdr, 1, sizeof hdr, f->f);
    if (memcmp(hdr, TRAINER_STATE_MAGIC, 8) != 0) {
        err_set(e, "%s: not a trainer state file (bad magic)", path);
        goto fail;
    }
    // The version comes before the header CRC: a later format may lay out the rest of the header anew.
    uint32_t version = get_u32(hdr + 8);
    if (version < 1 || version > TRAINER_STATE_VERSION) {
        err_set(e, "%s: format version %u, this build reads versions 1 to %d", path, version,
                TRAINER_STATE_VERSION);
        goto fail;
    }
    if (get_u32(hdr + 28) != crc32_update(0, hdr, 28) || get_u32(hdr + 12) != 0) {
        err_set(e, "%s: header CRC mismatch (corrupted file)", path);
        goto fail;
    }
    uint64_t meta_len = get_u64(hdr + 16);
    if (meta_len > (uint64_t)(size - TS_HEADER_BYTES)) {
        err_set(e, "%s: truncated: metadata length %" PRIu64 " but only %" PRId64 " bytes follow the header",
                path, meta_len, size - TS_HEADER_BYTES);
        goto fail;
    }
    meta = mallocCheck(meta_len + 1);
    freadCheck(meta, 1, meta_len, f->f);
    meta[meta_len] = 0;
    uint32_t want = get_u32(hdr + 24), got = crc32_update(0, meta, meta_len);
    if (got != want) {
        err_set(e, "%s: metadata CRC mismatch (stored %08x, computed %08x): corrupted file", path, want, got);
        goto fail;
    }
    json_error_t jerr;
    root = json_loadb(meta, meta_len, 0, &jerr);
    if (!root) {
        err_set(e, "%s: metadata: bad JSON at line %d: %s", path, jerr.line, jerr.text);
        goto fail;
    }
    int64_t data_bytes;
    if (ts_parse_meta(root, version, &f->st, &data_bytes, f->ent, &f->n_ent, e)) {
        err_prefix(e, "%s: metadata", path);
        goto fail;
    }
    f->data_start = ts_align(TS_HEADER_BYTES + (int64_t)meta_len);
    if (f->data_start > INT64_MAX - data_bytes || f->data_start + data_bytes != size) {
        err_set(e, "%s: %s: file has %" PRId64 " bytes, metadata says %" PRId64, path,
                size < f->data_start + data_bytes ? "truncated" : "trailing bytes", size,
                f->data_start + data_bytes);
        goto fail;
    }
    json_decref(root);
    free(meta);
    return 0;
fail:
    json_decref(root);
    free(meta);
    return -1;
}

void trainer_file_close(TrainerFile *f) {
    if (!f) return;
    if (f->f) fcloseCheck(f->f);
    trainer_state_free(&f->st);
    ts_entries_free(f->ent, f->n_ent);
    free(f->buf);
    free(f);
}

TrainerFile *trainer_file_open(const char *path, Err *e) {
    TrainerFile *f = callocCheck(1, sizeof *f);
    snprintf(f->path, sizeof f->path, "%s", path);
    if (ts_open(f, e)) {
        trainer_file_close(f);
        return NULL;
    }
    return f;
}

const TrainerState *trainer_file_state(const TrainerFile *f) { return &f->st; }
const char *trainer_file_path(const TrainerFile *f) { return f->path; }

int trainer_state_peek(const char *path, TrainerState *st, Err *e) {
    memset(st, 0, sizeof *st);
    TrainerFile *f = trainer_file_open(path, e);
    if (!f) return -1;
    *st = f->st;  // the file's allocations move to *st
    memset(&f->st, 0, sizeof f->st);
    trainer_file_close(f);
    return 0;
}

static int ts_check_layout(const TrainerShard *have, const TrainerShard *want, Err *e) {
    if (have->n_params != want->n_params)
        return err_set(e, "optimizer.n_params = %" PRId64 ", the model has %" PRId64, have->n_params,
                       want->n_params);
    if (have->n_ranks != want->n_ranks)
        return err_set(e, "optimizer.n_ranks = %d: written by %d learner ranks, this run has %d",
                       have->n_ranks, have->n_ranks, want->n_ranks);
    if (have->rank != want->rank)
        return err_set(e, "optimizer.rank = %d, expected rank %d", have->rank, want->rank);
    if (have->offset != want->offset || have->count != want->count)
        return err_set(e,
                       "optimizer shard [%" PRId64 ", +%" PRId64 ") differs from this rank's [%" PRId64
                       ", +%" PRId64 ")",
                       have->offset, have->count, want->offset, want->count);
    if (trainer_shard_n_segs(have) != trainer_shard_n_segs(want))
        return err_set(e, "optimizer.segments: %d, this rank's shard has %d", trainer_shard_n_segs(have),
                       trainer_shard_n_segs(want));
    for (int i = 0; i < trainer_shard_n_segs(have); i++) {
        TrainerSeg a = trainer_shard_seg(have, i), b = trainer_shard_seg(want, i);
        if (a.lo != b.lo || a.n != b.n || a.at != b.at)
            return err_set(e, "optimizer.segments[%d] differs from this rank's", i);
    }
    return 0;
}

static int ts_find(const TrainerFile *f, const char *name) {
    for (int k = 0; k < f->n_ent; k++)
        if (strcmp(f->ent[k].name, name) == 0) return k;
    return -1;
}

int trainer_file_read(TrainerFile *f, const char *name, int64_t at, int64_t n, float *dst, Err *e) {
    int k = ts_find(f, name);
    if (k < 0) return err_set(e, "%s: array \"%s\": not in the file", f->path, name);
    const TsEntry *t = &f->ent[k];
    if (at < 0 || n < 0 || at > t->count - n)
        return err_set(e, "%s: array \"%s\": elements [%" PRId64 ", +%" PRId64 ") outside its %" PRId64, f->path,
                       name, at, n, t->count);
    if (n == 0) return 0;
    // A version 1 file's one block is the whole array: read into dst when wanted whole, else into a
    // buffer of its size (older checkpoints only).
    int whole = at == 0 && n == t->count && t->block >= t->count;
    int64_t cap = whole ? 0 : t->block < TRAINER_CRC_BLOCK ? TRAINER_CRC_BLOCK : t->block;
    float *buf = cap > TRAINER_CRC_BLOCK ? mallocCheck((size_t)cap * sizeof(float)) : NULL;
    if (!whole && !buf && !f->buf) f->buf = mallocCheck(TRAINER_CRC_BLOCK * sizeof(float));
    float *blk = whole ? dst : buf ? buf : f->buf;
    int rc = 0;
    for (int64_t b = at / t->block; b * t->block < at + n && !rc; b++) {
        int64_t lo = b * t->block, m = t->count - lo < t->block ? t->count - lo : t->block;
        if (fseeko(f->f, (off_t)(f->data_start + t->offset + lo * (int64_t)sizeof(float)), SEEK_SET) != 0)
            fatal("%s: seek: %s", f->path, strerror(errno));
        freadCheck(blk, sizeof(float), (size_t)m, f->f);
        uint32_t got = crc32_update(0, blk, (size_t)m * sizeof(float));
        if (got != t->crc[b])
            rc = err_set(e,
                         "%s: array \"%s\": CRC mismatch in block %" PRId64 " (stored %08x, computed %08x): "
                         "corrupted file",
                         f->path, name, b, t->crc[b], got);
        else if (!whole) {
            int64_t from = at > lo ? at : lo, to = at + n < lo + m ? at + n : lo + m;
            memcpy(dst + (from - at), blk + (from - lo), (size_t)(to - from) * sizeof(float));
        }
    }
    free(buf);
    return rc;
}

int trainer_state_load(const char *path, const TrainerShard *expect, TrainerState *st,
                       const TrainerArray *arrays, int n_arrays, Err *e) {
    memset(st, 0, sizeof *st);
    if (ts_check_arrays(arrays, n_arrays, e)) return err_prefix(e, "%s: cannot load", path);
    TrainerFile *f = trainer_file_open(path, e);
    if (!f) return -1;
    int rc = 0;
    if (expect && ts_check_layout(&f->st.shard, expect, e)) rc = err_prefix(e, "%s", path);
    int used[TRAINER_MAX_ARRAYS] = {0};
    for (int i = 0; i < n_arrays && !rc; i++) {
        int k = ts_find(f, arrays[i].name);
        if (k < 0)
            rc = err_set(e, "%s: array \"%s\": not in the file", path, arrays[i].name);
        else if (f->ent[k].count != arrays[i].n)
            rc = err_set(e, "%s: array \"%s\": %" PRId64 " floats in the file, expected %" PRId64, path,
                         arrays[i].name, f->ent[k].count, arrays[i].n);
        else {
            used[k] = 1;
            rc = trainer_file_read(f, arrays[i].name, 0, arrays[i].n, arrays[i].data, e);
        }
    }
    // Leaving an array behind would silently drop state (e.g. master weights) from the resumed run.
    for (int k = 0; k < f->n_ent && !rc; k++)
        if (!used[k])
            rc = err_set(e, "%s: array \"%s\": in the file but not loaded by this run", path, f->ent[k].name);
    if (!rc) {
        *st = f->st;
        memset(&f->st, 0, sizeof f->st);
    }
    trainer_file_close(f);
    return rc;
}
