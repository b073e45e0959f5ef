// Tests of common/comm/msg (single process): CRC32 known answer, GROUP and WEIGHTS round trips, and every
// corrupt-buffer case: header fields, checksum, each payload field (re-sealed with a valid checksum so the
// payload validation itself is reached), every truncation length and random byte flips.
#include "comm/traj.h"
#include "test.h"
#include "util/rng.h"

// Payload layout of a GROUP (see msg.c): question u64, slot u64, failed u8, reason (u32 length + bytes,
// failed groups only), times f64[4] (data, generate, reward, reference), G u32, n_prompt u32, prompt i32[n_prompt],
// audio_samples u64, path (u32 length + bytes), n_funcs u32, names (u32 length + bytes each), has_ref u8,
// len u32[G], rewards f32[G], func_rewards f32[G * n_funcs], ids i32[T], mask u8[T], sample_lp f32[T],
// ref_lp f32[T] if has_ref. The header: magic @0, protocol @4, type @6, payload bytes @8, version @16,
// crc @24, reserved @28.
static void put32(uint8_t *p, uint32_t v) {
    for (int i = 0; i < 4; i++) p[i] = (uint8_t)(v >> (8 * i));
}

// Re-writes the header's payload length and CRC after a test edited the payload.
static void reseal(uint8_t *buf, size_t n) {
    uint64_t len = n - MSG_HEADER_BYTES;
    for (int i = 0; i < 8; i++) buf[8 + i] = (uint8_t)(len >> (8 * i));
    put32(buf + 24, msg_crc32(buf + MSG_HEADER_BYTES, len));
}

// Question 17, G = 3 samples of 4, 1 and 2 tokens, 5 prompt ids, two reward functions.
static void make_group(TrajGroup *g, int with_ref) {
    const int len[3] = {4, 1, 2};
    traj_group_alloc(g, 3, len, 5, 2, with_ref);
    g->question = 17;
    g->slot = 33;
    g->version = 42;
    g->time = (TrajTimes){.data = 0.5, .prefill = 12.25, .decode = 4.5, .reward = 0.0625, .reference = 3.0};
    for (int i = 0; i < 5; i++) g->prompt_ids[i] = 151643 + i;
    g->audio_samples = 160000;
    g->audio_path = strdupCheck("/data/wavs/-HG3Omg_89c_30.wav");
    g->func_names[0] = strdupCheck("accuracy");
    g->func_names[1] = strdupCheck("format");
    for (int i = 0; i < 3; i++) {
        g->func_rewards[i * 2] = (float)(i == 0);
        g->func_rewards[i * 2 + 1] = i == 2 ? NAN : 1.0f;  // NaN: function not applicable
        g->rewards[i] = (float)(i == 0) + 1.0f;
    }
    for (int t = 0; t < g->n_tokens; t++) {
        g->ids[t] = 1000 + t;
        g->mask[t] = 1;
        g->sample_lp[t] = -0.125f * (float)(t + 1);
        if (g->ref_lp) g->ref_lp[t] = -0.25f * (float)(t + 1);
    }
    g->mask[3] = 0;  // sample 0 ended (EOS) at position 2
}

static int same_float(float a, float b) { return (isnan(a) && isnan(b)) || a == b; }

static int group_equal(const TrajGroup *a, const TrajGroup *b) {
    if (a->slot != b->slot || a->failed != b->failed || memcmp(&a->time, &b->time, sizeof a->time) ||
        !a->reason != !b->reason || (a->reason && strcmp(a->reason, b->reason)))
        return 0;
    if (a->question != b->question || a->version != b->version || a->G != b->G || a->n_prompt != b->n_prompt ||
        a->audio_samples != b->audio_samples || strcmp(a->audio_path, b->audio_path) || a->n_funcs != b->n_funcs ||
        a->n_tokens != b->n_tokens || !a->ref_lp != !b->ref_lp)
        return 0;
    if (memcmp(a->prompt_ids, b->prompt_ids, sizeof(int32_t) * (size_t)a->n_prompt)) return 0;
    for (int f = 0; f < a->n_funcs; f++)
        if (strcmp(a->func_names[f], b->func_names[f])) return 0;
    for (int i = 0; i < a->G; i++) {
        if (a->len[i] != b->len[i] || a->offset[i] != b->offset[i] || !same_float(a->rewards[i], b->rewards[i])) return 0;
        for (int f = 0; f < a->n_funcs; f++)
            if (!same_float(a->func_rewards[i * a->n_funcs + f], b->func_rewards[i * a->n_funcs + f])) return 0;
    }
    for (int t = 0; t < a->n_tokens; t++)
        if (a->ids[t] != b->ids[t] || a->mask[t] != b->mask[t] || a->sample_lp[t] != b->sample_lp[t] ||
            (a->ref_lp && a->ref_lp[t] != b->ref_lp[t]))
            return 0;
    return 1;
}

static void test_crc(void) {
    CHECK(msg_crc32("123456789", 9) == 0xcbf43926u);  // the standard CRC-32 check value
    CHECK(msg_crc32("", 0) == 0);
}

static void test_group_round_trip(void) {
    Err e;
    for (int with_ref = 0; with_ref < 2; with_ref++) {
        TrajGroup g, d;
        make_group(&g, with_ref);
        uint8_t *buf;
        size_t n;
        CHECK(msg_encode_group(&g, &buf, &n, &e) == 0);
        // 32 header + 8 + 8 + 1 + 40 + 4 + 4 + 20 + 8 + (4 + 29) + 4 + (4 + 8) + (4 + 6) + 1 + 12 + 12 + 24
        // + 7 * 13 (or 9).
        CHECK_INT(n, 32 + 8 + 8 + 1 + 40 + 4 + 4 + 20 + 8 + 33 + 4 + 12 + 10 + 1 + 12 + 12 + 24 + 7 * (with_ref ? 13 : 9));
        CHECK(msg_decode_group(buf, n, &d, &e) == 0);
        CHECK(group_equal(&g, &d));
        CHECK_INT(d.version, 42);
        CHECK_INT(d.slot, 33);
        CHECK(d.time.prefill == 12.25 && d.time.decode == 4.5 && d.time.reference == 3.0);
        CHECK_INT(d.offset[2], 5);
        CHECK(isnan(d.func_rewards[5]));
        traj_group_free(&d);
        CHECK(d.ids == NULL);
        free(buf);
        traj_group_free(&g);
    }
}

// Encodes the standard group (with ref_lp), applies `edit` to the payload, re-seals, and expects the
// decoder to fail with a message containing `want`.
static void expect_bad(void (*edit)(uint8_t *payload, size_t n), const char *want, int line) {
    Err e;
    TrajGroup g, d;
    make_group(&g, 1);
    uint8_t *buf;
    size_t n;
    msg_encode_group(&g, &buf, &n, &e);
    edit(buf + MSG_HEADER_BYTES, n - MSG_HEADER_BYTES);
    reseal(buf, n);
    int rc = msg_decode_group(buf, n, &d, &e);
    CHECKF(rc == -1 && strstr(e.msg, want), "line %d: rc %d, \"%s\" lacks \"%s\"", line, rc, e.msg, want);
    CHECK(d.ids == NULL && d.func_names == NULL);  // nothing left allocated on failure
    free(buf);
    traj_group_free(&g);
}
#define EXPECT_BAD(edit, want) expect_bad(edit, want, __LINE__)

// Offsets in the standard payload: slot @8; failed @16; times @17 (5 x f64); G @57; n_prompt @61; prompt
// ids @65; audio_samples @85; path length @93, path @97 (29 bytes); n_funcs @126; names @130 ("accuracy"
// 4 + 8, "format" 4 + 6); has_ref @152; len @153; rewards @165; func_rewards @177; ids @201; mask @229;
// sample_lp @236; ref_lp @264; end @292.
static void edit_g0(uint8_t *p, size_t n) { put32(p + 57, 0); }
static void edit_g_huge(uint8_t *p, size_t n) { put32(p + 57, 100000); }
static void edit_n_prompt(uint8_t *p, size_t n) { put32(p + 61, 0x7fffffff); }
static void edit_path_len(uint8_t *p, size_t n) { put32(p + 93, 4000); }
static void edit_path_nul(uint8_t *p, size_t n) { p[99] = 0; }
static void edit_n_funcs(uint8_t *p, size_t n) { put32(p + 126, 65); }
static void edit_has_ref(uint8_t *p, size_t n) { p[152] = 2; }
static void edit_len(uint8_t *p, size_t n) { put32(p + 153, 5); }
static void edit_reward_inf(uint8_t *p, size_t n) { put32(p + 165 + 4, 0x7f800000u); }
static void edit_func_inf(uint8_t *p, size_t n) { put32(p + 177 + 8, 0xff800000u); }
static void edit_id(uint8_t *p, size_t n) { put32(p + 201 + 8, 0xffffffffu); }
static void edit_mask2(uint8_t *p, size_t n) { p[229 + 1] = 2; }
static void edit_mask_gap(uint8_t *p, size_t n) { p[229 + 1] = 0; }  // 1 0 1 0 in sample 0
static void edit_lp_nan(uint8_t *p, size_t n) { put32(p + 236 + 4 * 4, 0x7fc00000u); }
static void edit_ref_nan(uint8_t *p, size_t n) { put32(p + 264 + 4 * 6, 0x7fc00000u); }
static void edit_question(uint8_t *p, size_t n) { p[7] = 0x80; }  // negative index
static void edit_audio_samples(uint8_t *p, size_t n) { p[85 + 7] = 0xff; }

static void edit_slot(uint8_t *p, size_t n) { p[8 + 7] = 0x80; }  // negative slot
static void edit_failed2(uint8_t *p, size_t n) { p[16] = 2; }
static void edit_time_neg(uint8_t *p, size_t n) { p[17 + 8 + 7] ^= 0x80; }  // time.prefill < 0
static void edit_time_nan(uint8_t *p, size_t n) {  // time.reference = quiet NaN
    memset(p + 17 + 32, 0, 6);
    p[17 + 32 + 6] = 0xf8;
    p[17 + 32 + 7] = 0x7f;
}

static void test_group_bad_payload(void) {
    EXPECT_BAD(edit_g0, "field G: 0 not in [1, 1024]");
    EXPECT_BAD(edit_g_huge, "field G: 100000");
    EXPECT_BAD(edit_n_prompt, "field n_prompt");
    EXPECT_BAD(edit_path_len, "field audio_path: needs 4000 bytes");
    EXPECT_BAD(edit_path_nul, "field audio_path: contains a NUL byte");
    EXPECT_BAD(edit_n_funcs, "field n_funcs: 65 not in [0, 64]");
    EXPECT_BAD(edit_has_ref, "field has_ref: 2");
    EXPECT_BAD(edit_len, "field len: 8 tokens over 3 samples do not match");
    EXPECT_BAD(edit_reward_inf, "rewards[1] is not finite");
    EXPECT_BAD(edit_func_inf, "func_rewards[1][0] is infinite");
    EXPECT_BAD(edit_id, "ids of sample 0 position 2 = -1");
    EXPECT_BAD(edit_mask2, "mask of sample 0 position 1 = 2");
    EXPECT_BAD(edit_mask_gap, "mask of sample 0: 1 at position 2 after a 0");
    EXPECT_BAD(edit_lp_nan, "sample_lp of sample 1 position 0");
    EXPECT_BAD(edit_ref_nan, "ref_lp of sample 2 position 1");
    EXPECT_BAD(edit_question, "question index");
    EXPECT_BAD(edit_audio_samples, "audio_samples");
    EXPECT_BAD(edit_slot, "slot");
    EXPECT_BAD(edit_failed2, "field failed: 2 not 0/1");
    EXPECT_BAD(edit_time_neg, "time.prefill -12.25 is not a finite number >= 0");
    EXPECT_BAD(edit_time_nan, "time.reference nan is not a finite number >= 0");
}

// A failed group: round trip, its exact size, and what it may not carry.
static void test_failed_group(void) {
    Err e;
    TrajGroup g, d;
    traj_group_init_failed(&g, 9, 21, "audio/q9.wav", "audio/q9.wav: not an audio file");
    g.version = 3;
    g.time.data = 0.75;
    uint8_t *buf;
    size_t n;
    CHECK(msg_encode_group(&g, &buf, &n, &e) == 0);
    // header, question, slot, failed, reason (4 + 31), times, G, n_prompt, audio_samples, path (4 + 12),
    // n_funcs, has_ref.
    CHECK_INT(n, 32 + 8 + 8 + 1 + 35 + 40 + 4 + 4 + 8 + 16 + 4 + 1);
    CHECK(msg_decode_group(buf, n, &d, &e) == 0);
    CHECK(group_equal(&g, &d));
    CHECK(d.failed == 1 && d.G == 0 && d.version == 3 && d.slot == 21 && d.time.data == 0.75);
    CHECK_STR(d.reason, "audio/q9.wav: not an audio file");
    traj_group_free(&d);
    // G = 1 inside a failed group's payload (offset of G: 8 + 8 + 1 + 35 + 40 = 92).
    put32(buf + MSG_HEADER_BYTES + 92, 1);
    reseal(buf, n);
    CHECK(msg_decode_group(buf, n, &d, &e) == -1 && strstr(e.msg, "field G: 1 not in [0, 0]"));
    // An empty reason.
    put32(buf + MSG_HEADER_BYTES + 92, 0);
    put32(buf + MSG_HEADER_BYTES + 17, 0);
    memmove(buf + MSG_HEADER_BYTES + 21, buf + MSG_HEADER_BYTES + 21 + 31, n - (MSG_HEADER_BYTES + 21 + 31));
    reseal(buf, n - 31);
    CHECK(msg_decode_group(buf, n - 31, &d, &e) == -1 && strstr(e.msg, "failed group without a reason"));
    free(buf);
    // The semantic checks both ways.
    g.n_prompt = 2;
    CHECK(traj_group_check(&g, &e) == -1 && strstr(e.msg, "failed group holds data (G 0, n_prompt 2"));
    g.n_prompt = 0;
    g.failed = 0;
    CHECK(traj_group_check(&g, &e) == -1 && strstr(e.msg, "did not fail carries a failure reason"));
    free(g.reason);
    g.reason = NULL;
    CHECK(traj_group_check(&g, &e) == -1 && strstr(e.msg, "G 0 not in [1, 1024]"));
    traj_group_free(&g);
}

static void test_group_bad_header(void) {
    Err e;
    TrajGroup g, d;
    make_group(&g, 0);
    uint8_t *buf, *copy;
    size_t n;
    msg_encode_group(&g, &buf, &n, &e);
    copy = mallocCheck(n + 1);
    struct {
        size_t at;
        uint8_t value;
        const char *want;
    } cases[] = {
        {0, 'X', "magic"},
        {4, 1, "protocol version 5, expected 4"},
        {6, 3, "type 2 (WEIGHTS), expected 1 (GROUP)"},
        {29, 1, "reserved"},
        {8, 0xff, "payload length"},
        {24, 0x55, "checksum"},
        {MSG_HEADER_BYTES + 20, 0x01, "checksum"},  // a payload bit flip
    };
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        memcpy(copy, buf, n);
        copy[cases[k].at] ^= cases[k].value;
        int rc = msg_decode_group(copy, n, &d, &e);
        CHECKF(rc == -1 && strstr(e.msg, cases[k].want), "case %zu: \"%s\" lacks \"%s\"", k, e.msg, cases[k].want);
        CHECK(strncmp(e.msg, "group message: ", 15) == 0);
    }
    CHECK(msg_decode_group(buf, 10, &d, &e) == -1 && strstr(e.msg, "shorter than the 32-byte header"));
    // A byte too many or too few after an intact header.
    memcpy(copy, buf, n);
    copy[n] = 0;
    CHECK(msg_decode_group(copy, n + 1, &d, &e) == -1 && strstr(e.msg, "payload length"));
    CHECK(msg_decode_group(buf, n - 1, &d, &e) == -1 && strstr(e.msg, "payload length"));
    free(copy);
    free(buf);
    traj_group_free(&g);
}

// Every proper prefix of the payload, re-sealed: each must fail cleanly (never read past the end).
// Trailing garbage likewise. Random byte flips with a re-sealed checksum must decode or fail, never
// crash, and a decoded result must pass its own checks.
static void test_group_truncations_and_flips(void) {
    Err e;
    TrajGroup g, d;
    make_group(&g, 1);
    uint8_t *buf;
    size_t n;
    msg_encode_group(&g, &buf, &n, &e);
    uint8_t *copy = mallocCheck(n + 8);
    int failed = 0;
    for (size_t k = MSG_HEADER_BYTES; k < n; k++) {
        memcpy(copy, buf, k);
        reseal(copy, k);
        failed += msg_decode_group(copy, k, &d, &e) == -1;
    }
    CHECK_INT(failed, n - MSG_HEADER_BYTES);
    memcpy(copy, buf, n);
    memset(copy + n, 0, 8);
    reseal(copy, n + 8);
    CHECK(msg_decode_group(copy, n + 8, &d, &e) == -1 && strstr(e.msg, "do not match"));
    Rng r;
    rng_init(&r, 3, 0);
    int decoded = 0, rejected = 0;
    for (int k = 0; k < 2000; k++) {
        memcpy(copy, buf, n);
        size_t at = MSG_HEADER_BYTES + rng_below(&r, n - MSG_HEADER_BYTES);
        copy[at] ^= (uint8_t)(1 + rng_below(&r, 255));
        reseal(copy, n);
        if (msg_decode_group(copy, n, &d, &e) == 0) {
            decoded += traj_group_check(&d, &e) == 0;
            traj_group_free(&d);
        } else {
            rejected++;
        }
    }
    CHECK_INT(decoded + rejected, 2000);
    CHECK(rejected > 0);
    free(copy);
    free(buf);
    traj_group_free(&g);
}

static void test_group_encode_refuses(void) {
    Err e;
    TrajGroup g;
    uint8_t *buf = NULL;
    size_t n;
    make_group(&g, 1);
    g.mask[5] = 3;
    CHECK(msg_encode_group(&g, &buf, &n, &e) == -1 && strstr(e.msg, "encode group of question 17: mask of sample 2"));
    CHECK(buf == NULL);
    g.mask[5] = 1;
    g.offset[2] = 4;
    CHECK(msg_encode_group(&g, &buf, &n, &e) == -1 && strstr(e.msg, "offset[2] = 4, expected 5"));
    g.offset[2] = 5;
    g.n_tokens = 6;
    CHECK(traj_group_check(&g, &e) == -1 && strstr(e.msg, "n_tokens 6, but the lengths sum to 7"));
    g.n_tokens = 7;
    free(g.audio_path);
    g.audio_path = strdupCheck("");
    CHECK(traj_group_check(&g, &e) == -1 && strstr(e.msg, "audio_path is empty"));
    free(g.audio_path);
    g.audio_path = strdupCheck("a.wav");
    free(g.func_names[1]);
    g.func_names[1] = strdupCheck("accuracy");
    CHECK(traj_group_check(&g, &e) == -1 && strstr(e.msg, "func_names[1] \"accuracy\" repeats func_names[0]"));
    free(g.func_names[1]);
    g.func_names[1] = NULL;
    CHECK(traj_group_check(&g, &e) == -1 && strstr(e.msg, "func_names[1] is empty"));
    traj_group_free(&g);
}

static void test_weights(void) {
    Err e;
    uint8_t buf[MSG_WEIGHTS_BYTES];
    WeightsInfo w;
    CHECK_INT(msg_weights_n_buckets(1000, 64), 16);  // 15 full buckets and one of 40
    CHECK_INT(msg_weights_n_buckets(1024, 64), 16);
    CHECK_INT(msg_weights_n_buckets(0, 64), 0);
    msg_encode_weights(7, 1000, 64, buf);
    CHECK(msg_decode_weights(buf, sizeof buf, &w, &e) == 0);
    CHECK_INT(w.version, 7);
    CHECK_INT(w.n_elems, 1000);
    CHECK_INT(w.bucket_elems, 64);
    CHECK_INT(w.n_buckets, 16);
    uint8_t bad[MSG_WEIGHTS_BYTES];
    memcpy(bad, buf, sizeof bad);
    put32(bad + MSG_HEADER_BYTES + 16, 15);  // n_buckets
    reseal(bad, sizeof bad);
    CHECK(msg_decode_weights(bad, sizeof bad, &w, &e) == -1 && strstr(e.msg, "n_buckets 15 inconsistent"));
    memcpy(bad, buf, sizeof bad);
    memset(bad + MSG_HEADER_BYTES + 8, 0, 8);  // bucket_elems 0
    reseal(bad, sizeof bad);
    CHECK(msg_decode_weights(bad, sizeof bad, &w, &e) == -1 && strstr(e.msg, "bucket_elems 0"));
    memcpy(bad, buf, sizeof bad);
    bad[MSG_HEADER_BYTES + 21] = 1;
    reseal(bad, sizeof bad);
    CHECK(msg_decode_weights(bad, sizeof bad, &w, &e) == -1 && strstr(e.msg, "reserved payload"));
    memcpy(bad, buf, sizeof bad);
    bad[MSG_HEADER_BYTES] ^= 1;
    CHECK(msg_decode_weights(bad, sizeof bad, &w, &e) == -1 && strstr(e.msg, "checksum"));
    CHECK(msg_decode_weights(buf, sizeof buf - 1, &w, &e) == -1 && strstr(e.msg, "payload length"));
    // A GROUP is not a WEIGHTS message.
    TrajGroup g;
    make_group(&g, 0);
    uint8_t *gb;
    size_t n;
    msg_encode_group(&g, &gb, &n, &e);
    CHECK(msg_decode_weights(gb, n, &w, &e) == -1 && strstr(e.msg, "type 1 (GROUP), expected 2 (WEIGHTS)"));
    free(gb);
    traj_group_free(&g);
}

int main(void) {
    RUN(test_crc);
    RUN(test_group_round_trip);
    RUN(test_group_bad_payload);
    RUN(test_failed_group);
    RUN(test_group_bad_header);
    RUN(test_group_truncations_and_flips);
    RUN(test_group_encode_refuses);
    RUN(test_weights);
    return test_summary("msg");
}
