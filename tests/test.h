// test.h: a minimal test harness. A test binary runs its cases with RUN(case), each case makes
// CHECK()s; the binary prints "<binary>: N passed, N failed" (checks) and exits non-zero on failure.
// Environment (set by tests/meson.build): AQA_SRC (source root), AQA_TMP (a scratch directory
// inside the build tree). Data a test reads lives in the repository (tests/fixtures/: FIXTURE_PATH).
#pragma once
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

static int test_passed_, test_failed_;
static const char *test_case_ = "";

static inline int test_check_(int ok, const char *expr, const char *file, int line) {
    if (ok) {
        test_passed_++;
    } else {
        test_failed_++;
        fprintf(stderr, "FAIL %s:%d [%s] %s\n", file, line, test_case_, expr);
    }
    return ok;
}

#define CHECK(cond) test_check_(!!(cond), #cond, __FILE__, __LINE__)
// CHECK with a printf-style explanation printed on failure.
#define CHECKF(cond, ...)                                 \
    do {                                                  \
        if (!test_check_(!!(cond), #cond, __FILE__, __LINE__)) { \
            fprintf(stderr, "     ");                     \
            fprintf(stderr, __VA_ARGS__);                 \
            fputc('\n', stderr);                          \
        }                                                 \
    } while (0)

// ---- Comparisons: the one set every test uses. A NaN or Inf on either side is an infinite error, never
// NaN, so `err <= tol` fails and a later element cannot hide it (max(), fmax() and `d > worst` all keep an
// infinity but drop a NaN).

// |a - b|; +Inf when either is NaN or infinite.
static inline double cmp_diff(double a, double b) {
    return isfinite(a) && isfinite(b) ? fabs(a - b) : INFINITY;
}

// |a - b| / (|a| + |b| + floor); +Inf when either is NaN or infinite.
static inline double cmp_rel_diff(double a, double b, double floor) {
    double d = cmp_diff(a, b);
    return isinf(d) ? d : d / (fabs(a) + fabs(b) + floor);
}

// max over n of |x|; +Inf when any is NaN or infinite.
static inline double cmp_max_abs(const float *x, size_t n) {
    double m = 0;
    for (size_t i = 0; i < n; i++) m = fmax(m, cmp_diff(x[i], 0));
    return m;
}

// Whole-array error: abs = max |a - b|, rel = abs / max(max |b|, floor); both +Inf when any a or b is NaN
// or infinite.
typedef struct {
    double abs, rel;
} CmpErr;
static inline CmpErr cmp_err(const float *a, const float *b, size_t n, double floor) {
    double md = 0, mb = floor;
    for (size_t i = 0; i < n; i++) {
        md = fmax(md, cmp_diff(a[i], b[i]));
        mb = fmax(mb, fabs(b[i]));
    }
    return (CmpErr){md, md / mb};
}

// ||a - b|| / max(||b||, floor); +Inf when any a or b is NaN or Inf.
static inline double cmp_norm_rel(const float *a, const float *b, size_t n, double floor) {
    double d = 0, r = 0;
    for (size_t i = 0; i < n; i++) {
        const double x = cmp_diff(a[i], b[i]);
        d += x * x, r += (double)b[i] * b[i];
    }
    return isinf(d) ? d : sqrt(d) / fmax(sqrt(r), floor);
}

// The tolerance measure for whole tensors: max |a - b| relative to max |b| (floor 1e-6).
static inline double cmp_rel_err(const float *a, const float *b, size_t n) {
    return cmp_err(a, b, n, 1e-6).rel;
}

#define CHECK_NEAR(a, b, tol)                                                                   \
    CHECKF(cmp_diff((a), (b)) <= (tol), "%s = %.9g, %s = %.9g, tol %.3g", #a, (double)(a), #b, \
           (double)(b), (double)(tol))
#define CHECK_STR(a, b)                                                                         \
    CHECKF(strcmp((a), (b)) == 0, "%s = \"%s\"\n     %s = \"%s\"", #a, (a), #b, (b))
#define CHECK_INT(a, b) \
    CHECKF((long long)(a) == (long long)(b), "%s = %lld, %s = %lld", #a, (long long)(a), #b, (long long)(b))

#define RUN(fn)                                 \
    do {                                        \
        test_case_ = #fn;                       \
        int failed_before_ = test_failed_;      \
        fn();                                   \
        fprintf(stderr, "%s %s\n", test_failed_ == failed_before_ ? "ok  " : "FAIL", #fn); \
    } while (0)

static inline int test_summary(const char *name) {
    printf("%s: %d passed, %d failed\n", name, test_passed_, test_failed_);
    return test_failed_ ? 1 : 0;
}

// Runs a shell command (popen), capturing up to cap - 1 bytes of its stdout into out; returns its exit
// status, or -1 when it could not run or did not exit.
static inline int test_run_cmd(const char *cmd, char *out, size_t cap) {
    FILE *p = popen(cmd, "r");
    if (!p) return -1;
    size_t n = fread(out, 1, cap - 1, p);
    out[n] = 0;
    int st = pclose(p);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

// Path helpers: "$AQA_TMP/name", "$AQA_SRC/tests/fixtures/rel", "$AQA_SRC/rel" (static buffers, rotate 8).
static inline const char *test_env_path_(const char *var, const char *fallback, const char *rel) {
    static char bufs[8][4096];
    static int k;
    const char *base = getenv(var);
    if (!base) base = fallback;
    char *out = bufs[k++ & 7];
    snprintf(out, sizeof bufs[0], "%s/%s", base, rel);
    return out;
}
#define TMP_PATH(rel) test_env_path_("AQA_TMP", "/tmp", rel)
#define FIXTURE_PATH(rel) test_env_path_("AQA_SRC", ".", "tests/fixtures/" rel)
#define SRC_PATH(rel) test_env_path_("AQA_SRC", ".", rel)
