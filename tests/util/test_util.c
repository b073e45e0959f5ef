// Tests of common/util: Err formatting, atomic writes, directory creation, Philox known answers, the
// process's peak memory.
#include "test.h"
#include "util/check.h"
#include "util/fileio.h"
#include "util/procmem.h"
#include "util/rng.h"

#include <unistd.h>

static void test_err(void) {
    Err e;
    CHECK(err_set(&e, "%s:%d: bad", "a.jsonl", 3) == -1);
    CHECK_STR(e.msg, "a.jsonl:3: bad");
    err_prefix(&e, "config %s", "x.json");
    CHECK_STR(e.msg, "config x.json: a.jsonl:3: bad");
}

static void test_atomic(void) {
    Err e;
    const char *path = TMP_PATH("util_atomic.txt");
    unlink(path);
    CHECK(file_write_atomic(path, "hello", 5, &e) == 0);
    size_t n = 0;
    char *s = file_read_all(path, &n, &e);
    CHECK(s && n == 5 && strcmp(s, "hello") == 0);
    free(s);
    // An aborted write leaves neither a temp file nor a changed target.
    AtomicFile af;
    CHECK(atomic_open(&af, path, &e) == 0);
    fputs("partial", af.f);
    atomic_abort(&af);
    CHECK(!path_exists(af.tmp));
    s = file_read_all(path, &n, &e);
    CHECK(s && strcmp(s, "hello") == 0);
    free(s);
    CHECK(file_read_all(TMP_PATH("no/such/file"), &n, &e) == NULL);
    CHECK(strstr(e.msg, "no/such/file") != NULL);
    CHECK(atomic_open(&af, TMP_PATH("no/such/dir/x"), &e) == -1);
}

static void test_dir(void) {
    Err e;
    CHECK(dir_make(TMP_PATH("util_dir/a/b/c"), &e) == 0);
    CHECK(path_exists(TMP_PATH("util_dir/a/b/c")));
    CHECK(dir_make(TMP_PATH("util_dir/a/b/c"), &e) == 0);
}

static void test_philox(void) {
    // Known-answer vectors of Random123 (kat_vectors: philox4x32 10 rounds).
    uint32_t out[4];
    uint32_t z[4] = {0, 0, 0, 0};
    philox4x32(z, 0, out);
    CHECK(out[0] == 0x6627e8d5u && out[1] == 0xe169c58du && out[2] == 0xbc57ac4cu && out[3] == 0x9b00dbd8u);
    uint32_t f[4] = {0xffffffffu, 0xffffffffu, 0xffffffffu, 0xffffffffu};
    philox4x32(f, 0xffffffffffffffffull, out);
    CHECK(out[0] == 0x408f276du && out[1] == 0x41c83b0eu && out[2] == 0xa20bc7c6u && out[3] == 0x6d5451fdu);
    uint32_t p[4] = {0x243f6a88u, 0x85a308d3u, 0x13198a2eu, 0x03707344u};
    philox4x32(p, ((uint64_t)0x299f31d0u << 32) | 0xa4093822u, out);
    CHECK(out[0] == 0xd16cfe09u && out[1] == 0x94fdccebu && out[2] == 0x5001e420u && out[3] == 0x24126ea1u);
}

static void test_rng_stream(void) {
    Rng a, b;
    rng_init(&a, 42, 7);
    rng_init(&b, 42, 7);
    double sum = 0, sum2 = 0;
    int same = 1, in_range = 1;
    for (int i = 0; i < 100000; i++) {
        double u = rng_uniform(&a);
        same &= u == rng_uniform(&b);
        in_range &= u >= 0.0 && u < 1.0;
        sum += u;
        sum2 += u * u;
    }
    CHECK(same);
    CHECK(in_range);
    CHECK_NEAR(sum / 100000, 0.5, 0.01);
    CHECK_NEAR(sum2 / 100000 - (sum / 100000) * (sum / 100000), 1.0 / 12, 0.005);
    int64_t idx[10];
    for (int i = 0; i < 10; i++) idx[i] = i;
    rng_shuffle(&a, idx, 10);
    int seen = 0;
    for (int i = 0; i < 10; i++) seen |= 1 << idx[i];
    CHECK(seen == 0x3ff);
    Rng c;
    rng_init(&c, 42, 8);
    CHECK(rng_u64(&c) != rng_u64(&b));
}

// test.h's comparisons: a NaN or Inf anywhere is an infinite error that no later element hides.
// The peak grows by what the process touches: 64 MiB written page by page must show (a reading that
// ignored them, or read another field, stays below).
static void test_procmem(void) {
    double before = procmem_peak_bytes();
    const size_t n = (size_t)64 << 20;
    volatile char *p = mallocCheck(n);
    for (size_t i = 0; i < n; i += 4096) p[i] = (char)i;
    double after = procmem_peak_bytes();
    printf("  VmHWM %.1f MiB -> %.1f MiB after touching 64 MiB\n", before / 1048576, after / 1048576);
    CHECK(before > 0 && after >= before + 0.9 * (double)n);
    free((void *)p);
}

static void test_cmp(void) {
    CHECK(cmp_diff(1.0, 1.5) == 0.5);
    CHECK(isinf(cmp_diff(NAN, NAN)) && isinf(cmp_diff(1, INFINITY)) && isinf(cmp_diff(INFINITY, INFINITY)));
    CHECK(!(cmp_diff(NAN, 0) <= 1e30));
    CHECK(isinf(cmp_rel_diff(INFINITY, INFINITY, 1)) && cmp_rel_diff(1, 3, 0) == 0.5);
    const float ref[4] = {1, 2, 3, 4};
    float a[4] = {1, 2, 3, 4};
    CHECK(cmp_err(a, ref, 4, 1e-6).abs == 0 && cmp_rel_err(a, ref, 4) == 0);
    a[3] = 5;  // max |a - b| 1, max |b| 4
    CHECK(cmp_err(a, ref, 4, 1e-6).abs == 1 && cmp_err(a, ref, 4, 1e-6).rel == 0.25);
    a[0] = NAN;  // before a larger difference: still infinite
    CHECK(isinf(cmp_err(a, ref, 4, 1e-6).abs) && isinf(cmp_rel_err(a, ref, 4)));
    CHECK(isinf(cmp_rel_err(ref, a, 4)));  // NaN in the reference
    CHECK(isinf(cmp_max_abs(a, 4)) && cmp_max_abs(ref, 4) == 4);
    CHECK(isinf(cmp_norm_rel(a, ref, 4, 1e-9)) && isinf(cmp_norm_rel(ref, a, 4, 1e-9)));
    const float b3[3] = {3, 0, 4}, c3[3] = {3, 0, 4.5f}, z3[3] = {0, 0, 0};
    CHECK(cmp_norm_rel(c3, b3, 3, 1e-9) == 0.1 && cmp_norm_rel(z3, z3, 3, 1e-30) == 0);
    a[0] = 1, a[3] = -INFINITY;
    CHECK(isinf(cmp_rel_err(a, ref, 4)));
    // fmax and `>` keep an infinite error where they would drop a NaN
    CHECK(isinf(fmax(fmax(0, cmp_diff(NAN, 0)), 2)));
}

int main(void) {
    RUN(test_cmp);
    RUN(test_procmem);
    RUN(test_err);
    RUN(test_atomic);
    RUN(test_dir);
    RUN(test_philox);
    RUN(test_rng_stream);
    return test_summary("test_util");
}
