// Tests of common/model/safetensors: dtype conversions (round to nearest even), single-file and sharded
// round trips, the index file, and every malformed-input error (each must name the file and the tensor).
#include "test.h"
#include "model/safetensors.h"
#include "util/fileio.h"

#include <jansson.h>
#include <stdint.h>
#include <sys/stat.h>
#include <unistd.h>

static float f32_of(uint32_t u) {
    float f;
    memcpy(&f, &u, 4);
    return f;
}

static void test_bf16(void) {
    CHECK_INT(st_f32_to_bf16(1.0f), 0x3f80);
    CHECK_INT(st_f32_to_bf16(f32_of(0x3f808000)), 0x3f80);  // halfway, even below
    CHECK_INT(st_f32_to_bf16(f32_of(0x3f818000)), 0x3f82);  // halfway, even above
    CHECK_INT(st_f32_to_bf16(f32_of(0x3f808001)), 0x3f81);  // just above halfway
    CHECK_INT(st_f32_to_bf16(f32_of(0x3f807fff)), 0x3f80);  // just below halfway
    CHECK_INT(st_f32_to_bf16(-2.5f), 0xc020);
    CHECK_INT(st_f32_to_bf16(f32_of(0x7f800000)), 0x7f80);  // inf
    CHECK_INT(st_f32_to_bf16(f32_of(0x7f7fffff)), 0x7f80);  // FLT_MAX rounds to inf, as torch
    uint16_t nan = st_f32_to_bf16(f32_of(0x7f800001));       // a NaN whose payload is in the low bits
    CHECK((nan & 0x7f80) == 0x7f80 && (nan & 0x7f) != 0);
    int exact = 1;
    for (uint32_t h = 0; h < 0x10000; h++)
        if ((h & 0x7f80) != 0x7f80) exact &= st_f32_to_bf16(st_bf16_to_f32((uint16_t)h)) == h;
    CHECK(exact);
}

static void test_f16(void) {
    CHECK_INT(st_f32_to_f16(1.0f), 0x3c00);
    CHECK_INT(st_f32_to_f16(-2.0f), 0xc000);
    CHECK_INT(st_f32_to_f16(65504.0f), 0x7bff);
    CHECK_INT(st_f32_to_f16(65519.0f), 0x7bff);
    CHECK_INT(st_f32_to_f16(65520.0f), 0x7c00);             // rounds to inf
    CHECK_INT(st_f32_to_f16(1.0f + 1.0f / 2048), 0x3c00);   // halfway, even below
    CHECK_INT(st_f32_to_f16(1.0f + 3.0f / 2048), 0x3c02);   // halfway, even above
    CHECK_INT(st_f32_to_f16(ldexpf(1, -14)), 0x0400);       // smallest normal
    CHECK_INT(st_f32_to_f16(ldexpf(1, -24)), 0x0001);       // smallest subnormal
    CHECK_INT(st_f32_to_f16(ldexpf(1, -25)), 0x0000);       // halfway to 0: even
    CHECK_INT(st_f32_to_f16(ldexpf(3, -25)), 0x0002);       // halfway 1..2: even
    CHECK_INT(st_f32_to_f16(ldexpf(1, -14) * (1 - ldexpf(1, -12))), 0x0400);  // subnormal rounds up to normal
    CHECK_INT(st_f32_to_f16(-ldexpf(1, -30)), 0x8000);
    CHECK(st_f32_to_f16(f32_of(0x7fc00000)) == 0x7e00);
    CHECK_NEAR(st_f16_to_f32(0x3555), 0.333251953125, 0);
    int exact = 1;
    for (uint32_t h = 0; h < 0x10000; h++)
        if ((h & 0x7c00) != 0x7c00 || (h & 0x3ff) == 0) exact &= st_f32_to_f16(st_f16_to_f32((uint16_t)h)) == h;
    CHECK(exact);
}

// a [2,3,4], b [5], c scalar
static float ta[24], tb[5], tc[1];
static StWriteTensor three[3];

static void fill_three(void) {
    for (int i = 0; i < 24; i++) ta[i] = (float)i * 0.37f - 3.1f + ldexpf(1, -20) * (float)i;
    for (int i = 0; i < 5; i++) tb[i] = -1e-3f * (float)(i + 1);
    tc[0] = 12345.678f;
    three[0] = (StWriteTensor){.name = "a.weight", .ndim = 3, .shape = {2, 3, 4}, .data = ta};
    three[1] = (StWriteTensor){.name = "b.bias", .ndim = 1, .shape = {5}, .data = tb};
    three[2] = (StWriteTensor){.name = "c", .ndim = 0, .data = tc};
}

static void roundtrip(StDtype dt, const char *file) {
    Err e;
    fill_three();
    const char *path = TMP_PATH(file);
    CHECK(st_write_file(path, three, 3, dt, &e) == 0);
    StReader r;
    if (!CHECK(st_open(&r, path, &e) == 0)) {
        fprintf(stderr, "%s\n", e.msg);
        return;
    }
    CHECK_INT(r.n, 3);
    for (int k = 0; k < 3; k++) {
        const StTensor *t = st_find(&r, three[k].name);
        if (!CHECK(t != NULL)) continue;
        CHECK(t->dtype == dt);
        CHECK_INT(t->ndim, three[k].ndim);
        float out[24];
        int64_t shape[3] = {three[k].shape[0], three[k].shape[1], three[k].shape[2]};
        CHECK(st_read_f32(&r, three[k].name, three[k].ndim, shape, out, &e) == 0);
        int same = 1;
        for (size_t i = 0; i < t->numel; i++) {
            float x = three[k].data[i];
            float want = dt == ST_F32 ? x : dt == ST_BF16 ? st_bf16_to_f32(st_f32_to_bf16(x))
                                                          : st_f16_to_f32(st_f32_to_f16(x));
            same &= memcmp(&out[i], &want, 4) == 0;
        }
        CHECKF(same, "tensor %s differs after a %s round trip", three[k].name, st_dtype_name(dt));
    }
    CHECK(st_find(&r, "nope") == NULL);
    // The data region starts 8-byte aligned and the header carries format "pt".
    uint64_t hlen;
    memcpy(&hlen, r.files[0].map, 8);
    CHECK(hlen % 8 == 0);
    CHECK(memmem(r.files[0].map + 8, hlen, "\"format\":\"pt\"", 13) != NULL);
    st_close(&r);
}

static void test_roundtrip_f32(void) { roundtrip(ST_F32, "st_f32.safetensors"); }
static void test_roundtrip_bf16(void) { roundtrip(ST_BF16, "st_bf16.safetensors"); }
static void test_roundtrip_f16(void) { roundtrip(ST_F16, "st_f16.safetensors"); }

// A bf16 source (StReadBf16) over h, its reads recorded: the largest n, and any outside it.
static const uint16_t *src_h;
static size_t src_n, src_reads, src_max, src_outside;
static void src_read(void *ctx, size_t off, size_t n, uint16_t *out) {
    src_reads++;
    src_max = n > src_max ? n : src_max;
    if (off > src_n || n > src_n - off) {
        src_outside++;
        return;
    }
    memcpy(out, src_h + off, n * 2);
}

// A tensor from a bf16 source larger than the writer's chunk: read in bounded chunks, written as BF16
// (its bytes), F32 (widened, exact) and F16; the values read back are the source's, converted once.
static void test_bf16_source(void) {
    enum { N = (1 << 21) + 77 };  // two chunks and a bit
    uint16_t *h = mallocCheck(N * 2);
    float *out = mallocCheck(N * sizeof(float));
    for (size_t i = 0; i < N; i++) h[i] = st_f32_to_bf16((float)((i * 2654435761u) % 20011) * 1e-3f - 10.0f);
    src_h = h + 5, src_n = N - 5;
    const StDtype dts[3] = {ST_BF16, ST_F32, ST_F16};
    for (int d = 0; d < 3; d++) {
        Err e;
        src_reads = src_max = src_outside = 0;
        StWriteTensor t = {.name = "w", .ndim = 2, .shape = {2, (N - 7) / 2}, .read_bf16 = src_read, .at = 1};
        size_t n = (size_t)t.shape[0] * (size_t)t.shape[1];
        const char *path = TMP_PATH("st_bf16_source.safetensors");
        CHECK(st_write_file(path, &t, 1, dts[d], &e) == 0);
        CHECKF(src_reads >= 2 && src_max <= (1 << 20) && src_outside == 0, "%s: %zu reads, largest %zu",
               st_dtype_name(dts[d]), src_reads, src_max);
        StReader r;
        if (!CHECK(st_open(&r, path, &e) == 0)) continue;
        CHECK(st_read_f32(&r, "w", 2, t.shape, out, &e) == 0);
        size_t bad = 0;
        for (size_t i = 0; i < n; i++) {
            float x = st_bf16_to_f32(src_h[1 + i]);
            float want = dts[d] == ST_F16 ? st_f16_to_f32(st_f32_to_f16(x)) : x;
            bad += memcmp(&out[i], &want, 4) != 0;
        }
        CHECKF(bad == 0, "%s: %zu of %zu values differ", st_dtype_name(dts[d]), bad, n);
        if (dts[d] == ST_BF16) CHECK(memcmp(st_find(&r, "w")->data, src_h + 1, n * 2) == 0);
        st_close(&r);
    }
    free(h);
    free(out);
}

// Writes a raw safetensors file: header length, header text, then nbytes of data (0x11 each).
static const char *write_raw(const char *name, uint64_t hlen_override, const char *header, size_t nbytes) {
    const char *path = TMP_PATH(name);
    FILE *f = fopenCheck(path, "wb");
    uint64_t hlen = hlen_override ? hlen_override : strlen(header);
    fwriteCheck(&hlen, 8, 1, f);
    fwriteCheck(header, 1, strlen(header), f);
    for (size_t i = 0; i < nbytes; i++) fputc(0x11, f);
    fcloseCheck(f);
    return path;
}

// Opening path must fail with a message containing every given fragment.
static void expect_open_error(const char *path, const char *frag1, const char *frag2) {
    StReader r;
    Err e = {{0}};
    int rc = st_open(&r, path, &e);
    CHECKF(rc == -1, "%s opened", path);
    if (rc == 0) st_close(&r);
    CHECKF(strstr(e.msg, frag1) != NULL, "'%s' not in \"%s\"", frag1, e.msg);
    if (frag2) CHECKF(strstr(e.msg, frag2) != NULL, "'%s' not in \"%s\"", frag2, e.msg);
}

static void test_bad_files(void) {
    const char *p = TMP_PATH("st_short.safetensors");
    CHECK(file_write_atomic(p, "abc", 3, &(Err){{0}}) == 0);
    expect_open_error(p, "st_short.safetensors", "truncated");
    p = write_raw("st_hlen.safetensors", 1000, "{}", 0);
    expect_open_error(p, "st_hlen.safetensors", "bad header length");
    p = write_raw("st_json.safetensors", 0, "{\"a\": [", 0);
    expect_open_error(p, "st_json.safetensors", "not valid JSON");
    p = write_raw("st_arr.safetensors", 0, "[1, 2]", 0);
    expect_open_error(p, "st_arr.safetensors", "not a JSON object");
    p = write_raw("st_dtype.safetensors", 0, "{\"w\":{\"dtype\":\"Q4\",\"shape\":[1],\"data_offsets\":[0,4]}}", 4);
    expect_open_error(p, "tensor 'w'", "unsupported dtype \"Q4\"");
    p = write_raw("st_shape.safetensors", 0, "{\"w\":{\"dtype\":\"F32\",\"shape\":3,\"data_offsets\":[0,4]}}", 4);
    expect_open_error(p, "tensor 'w'", "shape");
    p = write_raw("st_neg.safetensors", 0, "{\"w\":{\"dtype\":\"F32\",\"shape\":[-1],\"data_offsets\":[0,4]}}", 4);
    expect_open_error(p, "tensor 'w'", "shape[0]");
    p = write_raw("st_range.safetensors", 0, "{\"w\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]}}", 8);
    expect_open_error(p, "st_range.safetensors: tensor 'w'", "outside the data region");
    p = write_raw("st_size.safetensors", 0, "{\"w\":{\"dtype\":\"BF16\",\"shape\":[4],\"data_offsets\":[0,16]}}", 16);
    expect_open_error(p, "tensor 'w'", "want 8");
    p = write_raw("st_order.safetensors", 0, "{\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[8,4]}}", 8);
    expect_open_error(p, "tensor 'w'", "data_offsets");
    p = write_raw("st_overlap.safetensors", 0,
                  "{\"u\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
                  "\"v\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}", 12);
    expect_open_error(p, "'u' and 'v'", "overlap");
    p = write_raw("st_meta.safetensors", 0, "{\"__metadata__\": 5}", 0);
    expect_open_error(p, "st_meta.safetensors", "__metadata__");
    p = write_raw("st_entry.safetensors", 0, "{\"w\": 7}", 0);
    expect_open_error(p, "tensor 'w'", "not a JSON object");
    expect_open_error(TMP_PATH("st_no_such_file.safetensors"), "st_no_such_file", "cannot open");
}

static void test_dtypes_and_lookup_errors(void) {
    Err e = {{0}};
    // I32 data [7, -2] and a BF16 [2] tensor.
    const char *p = TMP_PATH("st_int.safetensors");
    const char *hdr = "{\"__metadata__\":{\"k\":\"v\"},\"ids\":{\"dtype\":\"I32\",\"shape\":[2],\"data_offsets\":[0,8]},"
                      "\"h\":{\"dtype\":\"BF16\",\"shape\":[2],\"data_offsets\":[8,12]}}";
    FILE *f = fopenCheck(p, "wb");
    uint64_t hlen = strlen(hdr);
    int32_t ids[2] = {7, -2};
    uint16_t h[2] = {0x3f80, 0xc020};
    fwriteCheck(&hlen, 8, 1, f);
    fwriteCheck(hdr, 1, hlen, f);
    fwriteCheck(ids, 4, 2, f);
    fwriteCheck(h, 2, 2, f);
    fcloseCheck(f);
    StReader r;
    if (!CHECK(st_open(&r, p, &e) == 0)) return;
    const StTensor *t = st_find(&r, "ids");
    CHECK(t && t->dtype == ST_I32 && t->nbytes == 8);
    int32_t got[2];
    if (t) memcpy(got, t->data, 8);
    CHECK(t && got[0] == 7 && got[1] == -2);
    float out[2];
    CHECK(st_to_f32(&r, t, out, &e) == -1);
    CHECK(strstr(e.msg, "'ids'") && strstr(e.msg, "I32") && strstr(e.msg, "st_int.safetensors"));
    int64_t s2[1] = {2}, s3[1] = {3};
    CHECK(st_read_f32(&r, "h", 1, s2, out, &e) == 0);
    CHECK(out[0] == 1.0f && out[1] == -2.5f);
    CHECK(st_read_f32(&r, "h", 1, s3, out, &e) == -1);
    CHECK(strstr(e.msg, "'h'") && strstr(e.msg, "[2]") && strstr(e.msg, "expected [3]"));
    CHECK(st_read_f32(&r, "gone", 1, s2, out, &e) == -1);
    CHECK(strstr(e.msg, "'gone'") && strstr(e.msg, "not found"));
    st_close(&r);
}

static void rm_dir_files(const char *dir) {
    char cmd[4200];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    CHECK(system(cmd) == 0);
    Err e;
    CHECK(dir_make(dir, &e) == 0);
}

static void test_sharded(void) {
    Err e;
    const char *dir = TMP_PATH("st_sharded");
    rm_dir_files(dir);
    enum { N = 7, BIG = 4000 };
    static float data[N][BIG];
    StWriteTensor ts[N];
    char names[N][32];
    for (int k = 0; k < N; k++) {
        for (int i = 0; i < BIG; i++) data[k][i] = (float)(k * BIG + i) * 0.5f;
        snprintf(names[k], sizeof names[k], "layers.%d.weight", k);
        // tensor 5 is larger than a shard: it gets one of its own
        ts[k] = (StWriteTensor){.name = names[k], .ndim = 2, .shape = {k == 5 ? 40 : 10, 100},
                                .data = data[k]};
    }
    // F32: 4000 bytes per tensor (16000 for tensor 5); two fit in 8100 bytes.
    int shards = st_write_sharded(dir, ts, N, ST_F32, 8100, &e);
    CHECK_INT(shards, 5);  // {0,1} {2,3} {4} {5} {6}
    char p[4096];
    CHECK(path_exists(path_join(p, sizeof p, dir, "model-00001-of-00005.safetensors")));
    CHECK(path_exists(path_join(p, sizeof p, dir, "model-00005-of-00005.safetensors")));
    CHECK(!path_exists(path_join(p, sizeof p, dir, "model.safetensors")));
    json_error_t jerr;
    json_t *idx = json_load_file(path_join(p, sizeof p, dir, "model.safetensors.index.json"), 0, &jerr);
    if (CHECK(idx != NULL)) {
        CHECK_INT(json_integer_value(json_object_get(json_object_get(idx, "metadata"), "total_size")), 6 * 4000 + 16000);
        json_t *wm = json_object_get(idx, "weight_map");
        CHECK_INT(json_object_size(wm), N);
        CHECK_STR(json_string_value(json_object_get(wm, "layers.1.weight")), "model-00001-of-00005.safetensors");
        CHECK_STR(json_string_value(json_object_get(wm, "layers.4.weight")), "model-00003-of-00005.safetensors");
        CHECK_STR(json_string_value(json_object_get(wm, "layers.5.weight")), "model-00004-of-00005.safetensors");
        json_decref(idx);
    }
    // Through the directory and through the index path.
    for (int via = 0; via < 2; via++) {
        StReader r;
        const char *src = via ? path_join(p, sizeof p, dir, "model.safetensors.index.json") : dir;
        if (!CHECK(st_open(&r, src, &e) == 0)) {
            fprintf(stderr, "%s\n", e.msg);
            continue;
        }
        CHECK_INT(r.n, N);
        CHECK_INT(r.n_files, 5);
        int same = 1;
        for (int k = 0; k < N; k++) {
            static float out[BIG];
            size_t bytes = (size_t)(ts[k].shape[0] * ts[k].shape[1]) * sizeof(float);
            same &= st_read_f32(&r, names[k], 2, ts[k].shape, out, &e) == 0 && memcmp(out, data[k], bytes) == 0;
        }
        CHECK(same);
        st_close(&r);
    }
    // Everything fits one shard: a single model.safetensors and no index, as transformers writes.
    const char *one = TMP_PATH("st_single");
    rm_dir_files(one);
    CHECK_INT(st_write_sharded(one, ts, N, ST_BF16, 1 << 20, &e), 1);
    CHECK(path_exists(path_join(p, sizeof p, one, "model.safetensors")));
    CHECK(!path_exists(path_join(p, sizeof p, one, "model.safetensors.index.json")));
    StReader r;
    CHECK(st_open(&r, one, &e) == 0 && r.n == N);
    st_close(&r);
}

// Writes the index text into dir (which holds two shards a/b from write_pair).
static const char *write_index(const char *dir, const char *text) {
    static char p[4096];
    path_join(p, sizeof p, dir, "model.safetensors.index.json");
    Err e;
    CHECK(file_write_atomic(p, text, strlen(text), &e) == 0);
    return p;
}

static void test_bad_index(void) {
    Err e;
    const char *dir = TMP_PATH("st_badidx");
    rm_dir_files(dir);
    fill_three();
    char p[4096];
    CHECK(st_write_file(path_join(p, sizeof p, dir, "s1.safetensors"), three, 2, ST_F32, &e) == 0);
    CHECK(st_write_file(path_join(p, sizeof p, dir, "s2.safetensors"), three + 2, 1, ST_F32, &e) == 0);
    // No index and two files: ambiguous.
    expect_open_error(dir, "st_badidx", "several .safetensors");
    const char *ip = write_index(dir, "{\"weight_map\": {\"a.weight\": \"s1.safetensors\", \"b.bias\": "
                                      "\"s1.safetensors\", \"c\": \"s2.safetensors\"}}");
    StReader r;
    CHECK(st_open(&r, dir, &e) == 0 && r.n == 3 && r.n_files == 2);
    st_close(&r);
    write_index(dir, "{\"weight_map\": {\"a.weight\": \"s1.safetensors\", \"b.bias\": \"s1.safetensors\", "
                     "\"c\": \"s3.safetensors\"}}");
    expect_open_error(dir, "s3.safetensors", "does not exist");
    write_index(dir, "{\"weight_map\": {\"a.weight\": \"s1.safetensors\", \"b.bias\": \"s2.safetensors\", "
                     "\"c\": \"s2.safetensors\"}}");
    expect_open_error(ip, "tensor 'b.bias'", "does not hold it");
    write_index(dir, "{\"weight_map\": {\"a.weight\": \"s1.safetensors\", \"c\": \"s2.safetensors\"}}");
    expect_open_error(ip, "tensor 'b.bias'", "missing from the weight_map");
    write_index(dir, "{\"weight_map\": {\"a.weight\": \"../x.safetensors\"}}");
    expect_open_error(ip, "a.weight", "not a shard file name");
    {  // a shard name longer than a path can be (tests/fuzz/fuzz_safetensors: it ended the process)
        char text[6000];
        int k = snprintf(text, sizeof text, "{\"weight_map\": {\"a.weight\": \"");
        memset(text + k, 's', 5000);
        snprintf(text + k + 5000, sizeof text - (size_t)k - 5000, ".safetensors\"}}");
        write_index(dir, text);
        expect_open_error(ip, "a.weight", "not a shard file name (or too long)");
    }
    write_index(dir, "{\"metadata\": {}}");
    expect_open_error(ip, "model.safetensors.index.json", "weight_map");
    write_index(dir, "{\"weight_map\": ");
    expect_open_error(ip, "model.safetensors.index.json", "not valid JSON");
    // The same tensor in two shards.
    CHECK(st_write_file(path_join(p, sizeof p, dir, "s2.safetensors"), three + 1, 2, ST_F32, &e) == 0);
    write_index(dir, "{\"weight_map\": {\"a.weight\": \"s1.safetensors\", \"b.bias\": \"s1.safetensors\", "
                     "\"c\": \"s2.safetensors\"}}");
    expect_open_error(dir, "tensor 'b.bias'", "appears in both");
    const char *empty = TMP_PATH("st_empty_dir");
    rm_dir_files(empty);
    expect_open_error(empty, "st_empty_dir", "no model.safetensors");
}

int main(void) {
    RUN(test_bf16);
    RUN(test_f16);
    RUN(test_roundtrip_f32);
    RUN(test_roundtrip_bf16);
    RUN(test_roundtrip_f16);
    RUN(test_bf16_source);
    RUN(test_bad_files);
    RUN(test_dtypes_and_lookup_errors);
    RUN(test_sharded);
    RUN(test_bad_index);
    return test_summary("test_safetensors");
}
