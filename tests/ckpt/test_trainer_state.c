// Tests of common/ckpt trainer_state and crc32: CRC known answers, bit-exact round trip (an RNG saved
// mid-block continues exactly), every corruption and mismatch case with the field it must name, bad
// input refused before anything is written, segmented shards and partial reads, and version 1 files.
#include "test.h"
#include "ckpt/crc32.h"
#include "ckpt/trainer_state.h"
#include "util/fileio.h"

#include <stdint.h>
#include <unistd.h>

enum { N_PARAMS = 1000, SHARD_OFF = 250, SHARD_N = 500 };

// Bit-at-a-time CRC-32, the definition the table-driven code must agree with.
static uint32_t crc32_bitwise(const unsigned char *p, size_t n) {
    uint32_t c = 0xFFFFFFFFu;
    for (size_t i = 0; i < n; i++) {
        c ^= p[i];
        for (int k = 0; k < 8; k++) c = (c & 1) ? (c >> 1) ^ 0xEDB88320u : c >> 1;
    }
    return ~c;
}

static void test_crc32(void) {
    CHECK(crc32_update(0, "123456789", 9) == 0xCBF43926u);
    CHECK(crc32_update(0, "", 0) == 0);
    CHECK(crc32_update(0, "The quick brown fox jumps over the lazy dog", 43) == 0x414FA339u);
    unsigned char buf[300];
    for (int i = 0; i < 300; i++) buf[i] = (unsigned char)(i * 37 + 11);
    int bad = 0;
    // Every length and start alignment around the 8-byte steps, and split updates.
    for (int start = 0; start < 8; start++)
        for (int n = 0; n < 200; n++) {
            uint32_t want = crc32_bitwise(buf + start, (size_t)n);
            if (crc32_update(0, buf + start, (size_t)n) != want) bad++;
            int cut = n / 3;
            if (crc32_update(crc32_update(0, buf + start, (size_t)cut), buf + start + cut,
                             (size_t)(n - cut)) != want)
                bad++;
        }
    CHECK_INT(bad, 0);
}

// A state with every kind of field set, RNGs stopped mid-block.
static void make_state(TrainerState *st, Rng *sampler) {
    memset(st, 0, sizeof *st);
    Err e;
    st->step = 120;
    st->version = 121;
    st->config_json = strdupCheck(
        "{\"train\": {\"seed\": 7, \"run_dir\": \"runs/\\u00e9t\\u00e9\"}, \"optim\": {\"lr\": 1e-06}}");
    st->cursor = (OrderCursor){.epoch = 3, .position = 17, .n_questions = 40, .seed = 0xFFFFFFFFFFFFFFF1ull};
    snprintf(st->optim_kind, sizeof st->optim_kind, "adamw");
    st->optim_step = 119;
    st->shard =
        (TrainerShard){.n_params = N_PARAMS, .offset = SHARD_OFF, .count = SHARD_N, .rank = 1, .n_ranks = 4};
    rng_init(sampler, 0xDEADBEEFCAFEF00Dull, 0x8000000000000003ull);
    for (int i = 0; i < 7; i++) rng_u32(sampler);  // block 2 of the stream, 1 word left
    Rng fresh, full;
    rng_init(&fresh, 1, 2);
    rng_init(&full, 3, 4);
    for (int i = 0; i < 8; i++) rng_u32(&full);  // buffer exactly used up
    CHECK(trainer_state_set_rng(st, "sampler", sampler, &e) == 0);
    CHECK(trainer_state_set_rng(st, "fresh", &fresh, &e) == 0);
    CHECK(trainer_state_set_rng(st, "dropout.layer-3", &full, &e) == 0);
    CHECK(trainer_state_set_scalar(st, "loss", 0.1 + 0.2, &e) == 0);
    CHECK(trainer_state_set_scalar(st, "neg_zero", -0.0, &e) == 0);
    CHECK(trainer_state_set_scalar(st, "nan", NAN, &e) == 0);
    CHECK(trainer_state_set_scalar(st, "inf", -INFINITY, &e) == 0);
    CHECK(trainer_state_set_scalar(st, "denormal", 4.9e-324, &e) == 0);
}

// m, v, master: [SHARD_N] each, one flat buffer; values include signed zeros, denormals, NaN and inf.
static float *make_arrays(TrainerArray a[3], uint64_t seed) {
    float *buf = mallocCheck(3 * SHARD_N * sizeof(float));
    Rng r;
    rng_init(&r, seed, 0);
    for (int i = 0; i < 3 * SHARD_N; i++) {
        uint32_t bits = rng_u32(&r);
        memcpy(&buf[i], &bits, 4);
    }
    buf[0] = -0.0f, buf[1] = 1e-45f, buf[2] = INFINITY, buf[3] = NAN;
    a[0] = (TrainerArray){"adam.m", buf, SHARD_N};
    a[1] = (TrainerArray){"adam.v", buf + SHARD_N, SHARD_N};
    a[2] = (TrainerArray){"master", buf + 2 * SHARD_N, SHARD_N};
    return buf;
}

static const char *save_reference(void) {
    static char path[4096];
    snprintf(path, sizeof path, "%s", TMP_PATH("ts_ref.bin"));
    TrainerState st;
    Rng s;
    make_state(&st, &s);
    TrainerArray a[3];
    float *buf = make_arrays(a, 5);
    Err e;
    CHECKF(trainer_state_save(path, &st, a, 3, &e) == 0, "%s", e.msg);
    free(buf);
    trainer_state_free(&st);
    return path;
}

static void test_roundtrip(void) {
    Err e;
    const char *path = TMP_PATH("ts_roundtrip.bin");
    TrainerState st, got;
    Rng sampler;
    make_state(&st, &sampler);
    TrainerArray a[3], b[3];
    float *src = make_arrays(a, 5), *dst = make_arrays(b, 6);
    CHECKF(trainer_state_save(path, &st, a, 3, &e) == 0, "%s", e.msg);
    CHECK(!path_exists(TMP_PATH("ts_roundtrip.bin.tmp.")));
    // Arrays asked for in a different order than saved.
    TrainerArray swapped[3] = {b[2], b[0], b[1]};
    CHECKF(trainer_state_load(path, &st.shard, &got, swapped, 3, &e) == 0, "%s", e.msg);
    CHECK(memcmp(src, dst, 3 * SHARD_N * sizeof(float)) == 0);
    CHECK_INT(got.step, 120);
    CHECK_INT(got.version, 121);
    CHECK_STR(got.config_json, st.config_json);
    CHECK(memcmp(&got.cursor, &st.cursor, sizeof st.cursor) == 0);
    CHECK_STR(got.optim_kind, "adamw");
    CHECK_INT(got.optim_step, 119);
    CHECK(memcmp(&got.shard, &st.shard, sizeof st.shard) == 0);
    CHECK_INT(got.n_rngs, 3);
    for (int i = 0; i < 3; i++) {
        CHECK_STR(got.rngs[i].name, st.rngs[i].name);
        const Rng *x = &got.rngs[i].rng, *y = &st.rngs[i].rng;
        // An used-up buffer (used == 4) is never read again; only the live words must survive.
        CHECK(x->seed == y->seed && x->stream == y->stream && x->block == y->block && x->used == y->used);
        CHECK(memcmp(x->buf + x->used, y->buf + y->used, 4 * (4 - y->used)) == 0);
    }
    CHECK_INT(got.n_scalars, st.n_scalars);
    for (int i = 0; i < st.n_scalars; i++) {
        CHECK_STR(got.scalars[i].name, st.scalars[i].name);
        CHECK(memcmp(&got.scalars[i].value, &st.scalars[i].value, sizeof(double)) == 0);
    }
    // The loaded sampler continues the original stream draw for draw, across block boundaries.
    Rng r;
    CHECKF(trainer_state_get_rng(&got, "sampler", &r, &e) == 0, "%s", e.msg);
    int same = 1;
    for (int i = 0; i < 37; i++) same &= rng_u32(&r) == rng_u32(&sampler);
    CHECK(same);
    CHECK(rng_normal(&r) == rng_normal(&sampler));
    double loss;
    CHECK(trainer_state_get_scalar(&got, "loss", &loss, &e) == 0 && loss == 0.1 + 0.2);
    CHECK(trainer_state_get_scalar(&got, "missing", &loss, &e) == -1);
    CHECK(strstr(e.msg, "\"missing\"") != NULL);
    CHECK(trainer_state_get_rng(&got, "nope", &r, &e) == -1);
    CHECK(strstr(e.msg, "\"nope\"") != NULL);
    trainer_state_free(&got);
    CHECK(got.config_json == NULL);

    // Saving the loaded state again gives the same bytes: nothing is lost or reformatted.
    CHECK(trainer_state_load(path, NULL, &got, b, 3, &e) == 0);
    const char *path2 = TMP_PATH("ts_roundtrip2.bin");
    CHECKF(trainer_state_save(path2, &got, b, 3, &e) == 0, "%s", e.msg);
    size_t n1, n2;
    char *f1 = file_read_all(path, &n1, &e), *f2 = file_read_all(path2, &n2, &e);
    CHECK(f1 && f2 && n1 == n2 && memcmp(f1, f2, n1) == 0);
    // Self-describing: the metadata is plain JSON right after the header; arrays start 64-aligned.
    CHECK(f1 && memcmp(f1, "AQATRST", 8) == 0 &&
          strstr(f1 + 32, "\"format\": \"aqa-trainer-state\"") != NULL);
    CHECK(n1 % 64 == 0);
    free(f1);
    free(f2);
    trainer_state_free(&got);

    // peek reads the metadata only.
    CHECKF(trainer_state_peek(path, &got, &e) == 0, "%s", e.msg);
    CHECK_INT(got.shard.count, SHARD_N);
    CHECK_INT(got.cursor.position, 17);
    trainer_state_free(&got);
    trainer_state_free(&st);
    free(src);
    free(dst);
}

static void test_empty_arrays(void) {
    // An unsharded state without arrays (e.g. SGD) and a zero-length array are both fine.
    Err e;
    TrainerState st, got;
    Rng s;
    make_state(&st, &s);
    st.shard = (TrainerShard){.n_params = 0, .offset = 0, .count = 0, .rank = 0, .n_ranks = 1};
    st.n_rngs = 0;
    st.n_scalars = 0;
    const char *path = TMP_PATH("ts_empty.bin");
    TrainerArray z = {"empty", NULL, 0};
    CHECKF(trainer_state_save(path, &st, &z, 1, &e) == 0, "%s", e.msg);
    CHECKF(trainer_state_load(path, &st.shard, &got, &z, 1, &e) == 0, "%s", e.msg);
    CHECK_INT(got.n_rngs, 0);
    trainer_state_free(&got);
    CHECKF(trainer_state_save(path, &st, NULL, 0, &e) == 0, "%s", e.msg);
    CHECKF(trainer_state_load(path, NULL, &got, NULL, 0, &e) == 0, "%s", e.msg);
    trainer_state_free(&got);
    trainer_state_free(&st);
}

// Copies the reference file with bytes changed by `edit` and returns the load error ("" on success).
typedef void (*Edit)(char *buf, size_t *n);
static const char *load_edited(const char *ref, Edit edit, const TrainerShard *expect) {
    static Err e;
    size_t n;
    char *buf = file_read_all(ref, &n, &e);
    if (!buf) return e.msg;
    edit(buf, &n);
    const char *path = TMP_PATH("ts_corrupt.bin");
    if (file_write_atomic(path, buf, n, &e)) return e.msg;
    free(buf);
    TrainerState st;
    TrainerArray a[3];
    float *dst = make_arrays(a, 9);
    e.msg[0] = 0;
    if (trainer_state_load(path, expect, &st, a, 3, &e) == 0)
        trainer_state_free(&st);
    else
        CHECK(st.config_json == NULL);
    free(dst);
    return e.msg;
}

static void wr32(char *p, uint32_t v) { memcpy(p, &v, 4); }
// Recomputes the metadata and header CRCs (to reach the checks behind them).
static void fix_crcs(char *buf) {
    uint64_t meta_len;
    memcpy(&meta_len, buf + 16, 8);
    wr32(buf + 24, crc32_update(0, buf + 32, meta_len));
    wr32(buf + 28, crc32_update(0, buf, 28));
}
// Offset of array k's first byte: the file ends with the arrays, each [SHARD_N] floats padded to 64.
static size_t array_start(size_t n, int k) {
    size_t padded = (SHARD_N * 4 + 63) / 64 * 64;
    return n - (size_t)(3 - k) * padded;
}
// Replaces the first occurrence of `from` in the metadata by `to` of the same length, fixing CRCs.
static void meta_replace(char *buf, const char *from, const char *to) {
    char *p = strstr(buf + 32, from);
    CHECKF(p != NULL && strlen(from) == strlen(to), "metadata has no \"%s\"", from);
    if (!p) return;
    memcpy(p, to, strlen(to));
    fix_crcs(buf);
}

static void ed_none(char *b, size_t *n) { (void)b, (void)n; }
static void ed_trunc_last(char *b, size_t *n) { (void)b, (*n)--; }
static void ed_trunc_header(char *b, size_t *n) { (void)b, *n = 20; }
static void ed_trunc_meta(char *b, size_t *n) { (void)b, *n = 100; }
static void ed_trailing(char *b, size_t *n) { b[(*n)++] = 0; }  // file_read_all leaves one spare byte
static void ed_magic(char *b, size_t *n) { (void)n, b[0] = 'X'; }
static void ed_version(char *b, size_t *n) {
    (void)n;
    wr32(b + 8, 3);
    fix_crcs(b);
}
static void ed_header(char *b, size_t *n) { (void)n, b[16] ^= 1; }
static void ed_meta_byte(char *b, size_t *n) { (void)n, b[60] ^= 0x20; }
static void ed_adam_v(char *b, size_t *n) { b[array_start(*n, 1) + 123] ^= 0x04; }
static void ed_master(char *b, size_t *n) { b[array_start(*n, 2) + SHARD_N * 4 - 1] ^= 0x80; }
static void ed_used(char *b, size_t *n) { (void)n, meta_replace(b, "\"used\": 3", "\"used\": 7"); }
static void ed_position(char *b, size_t *n) {
    (void)n, meta_replace(b, "\"position\": 17", "\"position\": 40");
}
static void ed_format(char *b, size_t *n) {
    (void)n, meta_replace(b, "aqa-trainer-state", "aqa-trainer-stat_");
}
static void ed_dtype(char *b, size_t *n) { (void)n, meta_replace(b, "\"f32\"", "\"f16\""); }
static void ed_seed(char *b, size_t *n) {
    (void)n, meta_replace(b, "\"seed\": \"18446744073709551601\"", "\"seed\": \"1844674407370955160x\"");
}
static void ed_rename(char *b, size_t *n) {
    (void)n, meta_replace(b, "\"name\": \"adam.v\"", "\"name\": \"adam.w\"");
}
static void ed_json(char *b, size_t *n) { (void)n, meta_replace(b, "{\n \"format\"", "[\n \"format\""); }
static void ed_key(char *b, size_t *n) { (void)n, meta_replace(b, "\"format\"", "\"formax\""); }
static void ed_step(char *b, size_t *n) { (void)n, meta_replace(b, "\"step\": 120", "\"step\": -12"); }

static void test_corruption(void) {
    const char *ref = save_reference();
    TrainerShard want = {
        .n_params = N_PARAMS, .offset = SHARD_OFF, .count = SHARD_N, .rank = 1, .n_ranks = 4};
    const char *msg;
#define EXPECT(edit, expect, ...)                                                                      \
    do {                                                                                               \
        msg = load_edited(ref, edit, expect);                                                          \
        const char *subs_[] = {__VA_ARGS__};                                                           \
        for (size_t i_ = 0; i_ < sizeof subs_ / sizeof *subs_; i_++)                                   \
            CHECKF(strstr(msg, subs_[i_]) != NULL, "%s: \"%s\" not in \"%s\"", #edit, subs_[i_], msg); \
    } while (0)
    msg = load_edited(ref, ed_none, &want);
    CHECK_STR(msg, "");
    EXPECT(ed_trunc_last, &want, "ts_corrupt.bin", "truncated");
    EXPECT(ed_trunc_header, &want, "ts_corrupt.bin", "truncated", "header");
    EXPECT(ed_trunc_meta, &want, "ts_corrupt.bin", "truncated", "metadata length");
    EXPECT(ed_trailing, &want, "ts_corrupt.bin", "trailing bytes");
    EXPECT(ed_magic, &want, "ts_corrupt.bin", "magic");
    EXPECT(ed_version, &want, "ts_corrupt.bin", "version 3", "versions 1 to 2");
    EXPECT(ed_header, &want, "ts_corrupt.bin", "header CRC");
    EXPECT(ed_meta_byte, &want, "ts_corrupt.bin", "metadata CRC");
    EXPECT(ed_adam_v, &want, "ts_corrupt.bin", "\"adam.v\"", "CRC mismatch");
    EXPECT(ed_master, &want, "ts_corrupt.bin", "\"master\"", "CRC mismatch");
    EXPECT(ed_used, &want, "ts_corrupt.bin", "rngs[0].used = 7");
    EXPECT(ed_position, &want, "ts_corrupt.bin", "cursor.position = 40");
    EXPECT(ed_format, &want, "ts_corrupt.bin", "format");
    EXPECT(ed_dtype, &want, "ts_corrupt.bin", "arrays[0].dtype");
    EXPECT(ed_seed, &want, "ts_corrupt.bin", "cursor.seed");
    EXPECT(ed_rename, &want, "ts_corrupt.bin", "\"adam.v\": not in the file");
    EXPECT(ed_json, &want, "ts_corrupt.bin", "bad JSON at line 2");
    EXPECT(ed_key, &want, "ts_corrupt.bin", "metadata: format: missing");
    EXPECT(ed_step, &want, "ts_corrupt.bin", "step = -12");

    // Layout mismatches: a different model size, learner count, rank or shard.
    TrainerShard bad = want;
    bad.n_params = N_PARAMS + 1;
    EXPECT(ed_none, &bad, "ts_corrupt.bin", "n_params = 1000", "1001");
    bad = want;
    bad.n_ranks = 2;
    EXPECT(ed_none, &bad, "n_ranks", "written by 4 learner ranks, this run has 2");
    bad = want;
    bad.rank = 2;
    EXPECT(ed_none, &bad, "rank = 1, expected rank 2");
    bad = want;
    bad.offset = 0;
    EXPECT(ed_none, &bad, "shard [250, +500)", "[0, +500)");

    // Missing file.
    Err e;
    TrainerState st;
    CHECK(trainer_state_load(TMP_PATH("ts_no_such.bin"), NULL, &st, NULL, 0, &e) == -1);
    CHECK(strstr(e.msg, "ts_no_such.bin") && strstr(e.msg, "cannot open"));
#undef EXPECT
}

static void test_array_mismatch(void) {
    const char *ref = save_reference();
    Err e;
    TrainerState st;
    TrainerArray a[3];
    float *buf = make_arrays(a, 1);
    // A file array the run does not load: the state would silently be lost.
    CHECK(trainer_state_load(ref, NULL, &st, a, 2, &e) == -1);
    CHECKF(strstr(e.msg, "\"master\": in the file but not loaded"), "%s", e.msg);
    // A requested array of another size.
    a[1].n = SHARD_N - 1;
    CHECK(trainer_state_load(ref, NULL, &st, a, 3, &e) == -1);
    CHECKF(strstr(e.msg, "\"adam.v\": 500 floats in the file, expected 499"), "%s", e.msg);
    a[1].n = SHARD_N;
    // A requested array that is not there.
    TrainerArray extra[4] = {a[0], a[1], a[2], {"adam.u", buf, 1}};
    CHECK(trainer_state_load(ref, NULL, &st, extra, 4, &e) == -1);
    CHECKF(strstr(e.msg, "\"adam.u\": not in the file"), "%s", e.msg);
    free(buf);
}

// Bad input to save is refused with the field named, and no file appears. Case i breaks one field.
static const char *const bad_save_msgs[] = {
    "step = -1",
    "cursor.position = 40",
    "cursor.n_questions = 0",
    "optimizer.rank = 4",
    "does not fit n_params",
    "rng \"sampler\": used = 5",
    "rng \"fresh\": appears twice",
    "scalar name \"bad name\"",
    "array \"adam.m\": appears twice",
    "array name \"\"",
    "array \"adam.v\": n = -1",
    "array \"adam.v\": data is NULL",
    "config: missing",
    "config is not valid UTF-8",
    "optimizer kind name",
};
static void bad_save_edit(int i, TrainerState *s, TrainerArray *x) {
    switch (i) {
    case 0: s->step = -1; break;
    case 1: s->cursor.position = 40; break;
    case 2: s->cursor.n_questions = 0, s->cursor.position = 0; break;
    case 3: s->shard.rank = 4; break;
    case 4: s->shard.count = N_PARAMS; break;
    case 5: s->rngs[0].rng.used = 5; break;
    case 6: snprintf(s->rngs[0].name, TRAINER_NAME_CAP, "fresh"); break;
    case 7: snprintf(s->scalars[0].name, TRAINER_NAME_CAP, "bad name"); break;
    case 8: x[1].name = "adam.m"; break;
    case 9: x[2].name = ""; break;
    case 10: x[1].n = -1; break;
    case 11: x[1].data = NULL; break;
    case 12: free(s->config_json), s->config_json = NULL; break;
    case 13: free(s->config_json), s->config_json = strdupCheck("\"\xff\""); break;
    case 14: s->optim_kind[0] = 0; break;
    }
}

static void test_save_bad_input(void) {
    const char *path = TMP_PATH("ts_bad.bin");
    TrainerArray a[3];
    float *buf = make_arrays(a, 2);
    for (int i = 0; i < (int)(sizeof bad_save_msgs / sizeof *bad_save_msgs); i++) {
        TrainerState st;
        Rng s;
        make_state(&st, &s);
        TrainerArray x[3] = {a[0], a[1], a[2]};
        bad_save_edit(i, &st, x);
        Err e = {{0}};
        unlink(path);
        CHECK(trainer_state_save(path, &st, x, 3, &e) == -1);
        CHECKF(strstr(e.msg, bad_save_msgs[i]) && strstr(e.msg, "ts_bad.bin"),
               "case %d: \"%s\" not in \"%s\"", i, bad_save_msgs[i], e.msg);
        CHECK(!path_exists(path));
        trainer_state_free(&st);
    }
    // The tables are bounded; set_* report a full table and bad names.
    TrainerState st;
    Rng s;
    make_state(&st, &s);
    Err e;
    char name[32];
    int rc = 0;
    for (int i = st.n_rngs; i < TRAINER_MAX_RNGS && !rc; i++) {
        snprintf(name, sizeof name, "r%d", i);
        rc = trainer_state_set_rng(&st, name, &s, &e);
    }
    CHECK_INT(rc, 0);
    CHECK(trainer_state_set_rng(&st, "one_more", &s, &e) == -1 && strstr(e.msg, "more than 16 rngs"));
    CHECK(trainer_state_set_rng(&st, "sampler", &s, &e) == 0);  // replacing an existing one is fine
    CHECK(trainer_state_set_scalar(&st, "a/b", 1.0, &e) == -1 && strstr(e.msg, "\"a/b\""));
    s.used = 9;
    CHECK(trainer_state_set_rng(&st, "sampler", &s, &e) == -1 && strstr(e.msg, "used = 9"));
    trainer_state_free(&st);
    // An unwritable destination is an error, not a crash.
    make_state(&st, &s);
    CHECK(trainer_state_save(TMP_PATH("no/such/dir/ts.bin"), &st, a, 3, &e) == -1);
    CHECK(strstr(e.msg, "no/such/dir") != NULL);
    trainer_state_free(&st);
    free(buf);
}

// A segmented shard (a ZeRO-1 shard's layout: pieces with padding between) round trips with its
// segments and checkpoint id; another layout is refused; parts of arrays read through TrainerFile; bad
// segments are refused before anything is written.
static void test_segments(void) {
    Err e;
    const char *path = TMP_PATH("ts_segs.bin");
    TrainerState st, got;
    Rng s;
    make_state(&st, &s);
    // array [SHARD_N]: parameters [600, 800) at 0, padding [200, 210), [100, 350) at 210, padding to the end
    TrainerSeg segs[2] = {{600, 200, 0}, {100, 250, 210}};
    st.shard = (TrainerShard){
        .n_params = N_PARAMS, .count = SHARD_N, .rank = 1, .n_ranks = 4, .n_segs = 2, .segs = segs};
    st.ckpt_id = 0xFEDCBA9876543210ull;
    TrainerArray a[3], b[3];
    float *src = make_arrays(a, 7), *dst = make_arrays(b, 8);
    CHECKF(trainer_state_save(path, &st, a, 3, &e) == 0, "%s", e.msg);
    CHECKF(trainer_state_load(path, &st.shard, &got, b, 3, &e) == 0, "%s", e.msg);
    CHECK(memcmp(src, dst, 3 * SHARD_N * sizeof(float)) == 0);
    CHECK(got.ckpt_id == st.ckpt_id && got.shard.n_segs == 2 && got.shard.count == SHARD_N);
    CHECK(got.shard.segs && memcmp(got.shard.segs, segs, sizeof segs) == 0);
    trainer_state_free(&got);
    TrainerSeg other[2] = {{600, 200, 0}, {100, 250, 211}};
    TrainerShard want = st.shard;
    want.segs = other;
    CHECK(trainer_state_load(path, &want, &got, b, 3, &e) == -1);
    CHECKF(strstr(e.msg, "ts_segs.bin") && strstr(e.msg, "segments[1]"), "%s", e.msg);

    TrainerFile *f = trainer_file_open(path, &e);
    CHECKF(f != NULL, "%s", e.msg);
    float part[50];
    CHECK(trainer_file_read(f, "master", 300, 50, part, &e) == 0);
    CHECK(memcmp(part, a[2].data + 300, sizeof part) == 0);
    CHECK(trainer_file_read(f, "master", 480, 50, part, &e) == -1);
    CHECKF(strstr(e.msg, "ts_segs.bin") && strstr(e.msg, "outside its 500"), "%s", e.msg);
    CHECK(trainer_file_read(f, "nope", 0, 1, part, &e) == -1 && strstr(e.msg, "\"nope\": not in the file"));
    CHECK(trainer_file_state(f)->ckpt_id == st.ckpt_id);
    trainer_file_close(f);

    const TrainerSeg bad[][2] = {{{600, 200, 0}, {650, 100, 210}},   // covers parameters twice
                                 {{600, 200, 0}, {950, 100, 210}},   // beyond n_params
                                 {{600, 200, 0}, {100, 250, 100}},   // before the previous one
                                 {{600, 200, 0}, {100, 300, 210}}};  // beyond count
    const char *why[] = {"overlap", "outside n_params", "before the previous one", "count 500"};
    for (int i = 0; i < 4; i++) {
        memcpy(segs, bad[i], sizeof segs);
        unlink(path);
        CHECK(trainer_state_save(path, &st, a, 3, &e) == -1);
        CHECKF(strstr(e.msg, "ts_segs.bin") && strstr(e.msg, why[i]), "case %d: %s", i, e.msg);
        CHECK(!path_exists(path));
    }
    st.shard.segs = NULL;  // ours, not the state's
    st.shard.n_segs = 0;
    trainer_state_free(&st);
    free(src);
    free(dst);
}

// A version 1 file (the previous format: one CRC per array, no checkpoint id, no segments), written here
// as that format's saver did: it loads whole and in parts (its one CRC block is larger than a block of
// this version), and a flipped bit is still found.
static void test_version1(void) {
    enum { N = TRAINER_CRC_BLOCK + 1000 };
    float *x = mallocCheck(N * sizeof(float)), *y = mallocCheck(N * sizeof(float));
    for (int i = 0; i < N; i++) x[i] = (float)i * 0.5f;
    int64_t data_bytes = ((int64_t)N * 4 + 63) / 64 * 64;
    char meta[1024];
    int len = snprintf(meta, sizeof meta,
                       "{\"format\": \"aqa-trainer-state\", \"step\": 3, \"version\": 3, \"config\": \"{}\", "
                       "\"cursor\": {\"epoch\": 0, \"position\": 0, \"n_questions\": 4, \"seed\": \"9\"}, "
                       "\"optimizer\": {\"kind\": \"adamw\", \"step\": 3, \"n_params\": %d, \"shard_offset\": 0, "
                       "\"shard_count\": %d, \"rank\": 0, \"n_ranks\": 1}, \"rngs\": [], \"scalars\": [], "
                       "\"arrays\": [{\"name\": \"master\", \"dtype\": \"f32\", \"offset\": 0, \"count\": %d, "
                       "\"crc32\": %u}], \"data_bytes\": %lld}",
                       N, N, N, crc32_update(0, x, N * sizeof(float)), (long long)data_bytes);
    size_t start = (32 + (size_t)len + 63) / 64 * 64, size = start + (size_t)data_bytes;
    char *buf = callocCheck(size, 1);
    memcpy(buf, TRAINER_STATE_MAGIC, 8);
    wr32(buf + 8, 1);
    uint64_t meta_len = (uint64_t)len;
    memcpy(buf + 16, &meta_len, 8);
    memcpy(buf + 32, meta, (size_t)len);
    fix_crcs(buf);
    memcpy(buf + start, x, N * sizeof(float));
    const char *path = TMP_PATH("ts_v1.bin");
    Err e;
    CHECK(file_write_atomic(path, buf, size, &e) == 0);
    TrainerState st;
    TrainerArray a = {"master", y, N};
    CHECKF(trainer_state_load(path, NULL, &st, &a, 1, &e) == 0, "%s", e.msg);
    CHECK(memcmp(x, y, N * sizeof(float)) == 0 && st.ckpt_id == 0 && st.shard.n_segs == 0 && st.step == 3);
    trainer_state_free(&st);
    TrainerFile *f = trainer_file_open(path, &e);
    CHECKF(f != NULL, "%s", e.msg);
    CHECK(trainer_file_read(f, "master", N - 1500, 1000, y, &e) == 0);
    CHECK(memcmp(x + N - 1500, y, 1000 * sizeof(float)) == 0);
    trainer_file_close(f);
    buf[size - 100] ^= 1;
    CHECK(file_write_atomic(path, buf, size, &e) == 0);
    f = trainer_file_open(path, &e);
    CHECK(f && trainer_file_read(f, "master", 0, 10, y, &e) == -1);
    CHECKF(strstr(e.msg, "ts_v1.bin") && strstr(e.msg, "CRC mismatch in block 0"), "%s", e.msg);
    trainer_file_close(f);
    unlink(path);  // a megabyte: not left behind
    free(buf);
    free(x);
    free(y);
}

int main(void) {
    RUN(test_crc32);
    RUN(test_roundtrip);
    RUN(test_empty_arrays);
    RUN(test_corruption);
    RUN(test_array_mismatch);
    RUN(test_save_bad_input);
    RUN(test_segments);
    RUN(test_version1);
    return test_summary("test_trainer_state");
}
