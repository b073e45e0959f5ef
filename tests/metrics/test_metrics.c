// Tests of common/metrics: values read back from metrics.jsonl (jansson) and metrics.h5 (HDF5 C API),
// NaN for names missing at a step, a crashed writer's file, resume truncation, and bad input.
#include "test.h"
#include "metrics/metrics.h"
#include "util/fileio.h"

#include <hdf5.h>
#include <jansson.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

// Reads a 1-D dataset as doubles (steps too); returns its length, or -1 when it is missing.
static int h5_read(const char *path, const char *name, double *out, int cap) {
    hid_t f = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    if (f < 0) return -1;
    int n = -1;
    hid_t ds = H5Lexists(f, name, H5P_DEFAULT) > 0 ? H5Dopen2(f, name, H5P_DEFAULT) : -1;
    if (ds >= 0) {
        hid_t sp = H5Dget_space(ds);
        hsize_t dims = 0;
        H5Sget_simple_extent_dims(sp, &dims, NULL);
        H5Sclose(sp);
        n = (int)dims;
        if (n <= cap && n > 0) H5Dread(ds, H5T_NATIVE_DOUBLE, H5S_ALL, H5S_ALL, H5P_DEFAULT, out);
        H5Dclose(ds);
    }
    H5Fclose(f);
    return n;
}

// Parses metrics.jsonl into up to cap objects (caller decrefs); returns the line count.
static int jsonl_read(const char *path, json_t **out, int cap) {
    Err e;
    char *text = file_read_all(path, NULL, &e);
    if (!text) return -1;
    int n = 0;
    for (char *line = strtok(text, "\n"); line && n < cap; line = strtok(NULL, "\n")) {
        json_error_t jerr;
        out[n] = json_loads(line, 0, &jerr);
        if (!out[n]) {
            fprintf(stderr, "     bad line %d: %s\n", n + 1, jerr.text);
            break;
        }
        n++;
    }
    free(text);
    return n;
}

static void free_json(json_t **objs, int n) {
    for (int i = 0; i < n; i++) json_decref(objs[i]);
}

static void test_write_read(void) {
    const char *dir = TMP_PATH("metrics_rw/run");
    char h5[4200], jl[4200];
    snprintf(h5, sizeof h5, "%s/metrics.h5", dir);
    snprintf(jl, sizeof jl, "%s/metrics.jsonl", dir);
    Err e;
    double t0 = (double)time(NULL);
    Metrics *m = metrics_open(dir, true, true, METRICS_FRESH, &e);
    CHECKF(m != NULL, "%s", e.msg);
    if (!m) return;
    // Steps 1..5; "kl" first appears at step 3, "reward" is left out at step 5; step 4 logs a NaN.
    for (int s = 1; s <= 5; s++) {
        const char *names[3] = {"loss", "reward", "kl"};
        double vals[3] = {0.5 / s, s == 4 ? NAN : 0.1 * s, 1e-3 * s};
        const char *names5[2] = {"loss", "kl"};
        double vals5[2] = {0.5 / s, 1e-3 * s};
        int rc = s == 5 ? metrics_log(m, s, names5, vals5, 2, &e)
                        : metrics_log(m, s, names, vals, s >= 3 ? 3 : 2, &e);
        CHECKF(rc == 0, "%s", e.msg);
    }
    metrics_close(m);

    double v[16];
    CHECK_INT(h5_read(h5, "step", v, 16), 5);
    CHECK(v[0] == 1 && v[4] == 5);
    CHECK_INT(h5_read(h5, "loss", v, 16), 5);
    CHECK(v[0] == 0.5 && v[1] == 0.25 && v[4] == 0.1);
    CHECK_INT(h5_read(h5, "reward", v, 16), 5);
    CHECK(v[0] == 0.1 && v[2] == 0.1 * 3 && isnan(v[3]) && isnan(v[4]));
    CHECK_INT(h5_read(h5, "kl", v, 16), 5);
    CHECK(isnan(v[0]) && isnan(v[1]) && v[2] == 3e-3 && v[4] == 5e-3);
    CHECK_INT(h5_read(h5, "time", v, 16), 5);
    CHECK(v[0] >= t0 - 1 && v[0] <= t0 + 60 && v[4] >= v[0]);

    json_t *rows[16];
    int n = jsonl_read(jl, rows, 16);
    CHECK_INT(n, 5);
    if (n == 5) {
        CHECK(json_integer_value(json_object_get(rows[0], "step")) == 1);
        CHECK(json_real_value(json_object_get(rows[1], "loss")) == 0.25);
        CHECK(json_real_value(json_object_get(rows[2], "reward")) == 0.1 * 3);  // exact round trip
        CHECK(json_object_get(rows[0], "kl") == NULL);
        CHECK(json_is_null(json_object_get(rows[3], "reward")));
        CHECK(json_object_get(rows[4], "reward") == NULL);
        CHECK(json_real_value(json_object_get(rows[4], "time")) >= t0 - 1);
        CHECK_INT(json_object_size(rows[2]), 5);
    }
    free_json(rows, n);
}

static void test_bad_input(void) {
    Err e;
    Metrics *m = metrics_open(TMP_PATH("metrics_bad"), true, true, METRICS_FRESH, &e);
    CHECKF(m != NULL, "%s", e.msg);
    if (!m) return;
    double one = 1.0;
    static const char *bad[] = {"", "step", "time", "a/b", ".x", "a b", "r\xc3\xa9"};
    for (int i = 0; i < 7; i++) {
        const char *names[1] = {bad[i]};
        CHECKF(metrics_log(m, 1, names, &one, 1, &e) == -1, "accepted \"%s\"", bad[i]);
        CHECKF(strstr(e.msg, "metric name") != NULL, "%s", e.msg);
    }
    char longname[200];
    memset(longname, 'x', 199);
    longname[199] = 0;
    const char *ln[1] = {longname};
    CHECK(metrics_log(m, 1, ln, &one, 1, &e) == -1 && strstr(e.msg, "length"));
    const char *dup[2] = {"a", "a"};
    double two[2] = {1, 2};
    CHECK(metrics_log(m, 1, dup, two, 2, &e) == -1 && strstr(e.msg, "\"a\" given twice"));
    const char *ok[2] = {"a", "b.c-d_E9"};
    CHECKF(metrics_log(m, 1, ok, two, 2, &e) == 0, "%s", e.msg);
    CHECK(metrics_log(m, 1, ok, two, 2, &e) == -1 && strstr(e.msg, "step 1 after step 1"));
    CHECK(metrics_log(m, 0, ok, two, 2, &e) == -1);
    CHECKF(metrics_log(m, 7, ok, two, 0, &e) == 0, "%s", e.msg);  // a step with no scalars is fine
    metrics_close(m);

    // A run dir that cannot be made: a plain file is in the way.
    Err e2;
    CHECK(file_write_atomic(TMP_PATH("metrics_file"), "x", 1, &e2) == 0);
    CHECK(metrics_open(TMP_PATH("metrics_file/run"), true, true, METRICS_FRESH, &e) == NULL);
    CHECK(strstr(e.msg, "metrics_file") != NULL);

    // Resume over damaged files: each error names the file (and line for JSON lines).
    const char *dir = TMP_PATH("metrics_damaged");
    CHECK(dir_make(dir, &e2) == 0);
    char path[4200];
    snprintf(path, sizeof path, "%s/metrics.h5", dir);
    CHECK(file_write_atomic(path, "not hdf5", 8, &e2) == 0);
    CHECK(metrics_open(dir, false, true, 3, &e) == NULL);
    CHECKF(strstr(e.msg, "metrics.h5: cannot open to resume"), "%s", e.msg);
    snprintf(path, sizeof path, "%s/metrics.jsonl", dir);
    const char *lines = "{\"step\": 1, \"loss\": 1.0}\n{\"loss\": 2.0}\n";
    CHECK(file_write_atomic(path, lines, strlen(lines), &e2) == 0);
    CHECK(metrics_open(dir, true, false, 3, &e) == NULL);
    CHECKF(strstr(e.msg, "metrics.jsonl:2: not a metrics line"), "%s", e.msg);
    lines = "{\"step\": 1, \"loss\": 1.0}\nnot json\n";
    CHECK(file_write_atomic(path, lines, strlen(lines), &e2) == 0);
    CHECK(metrics_open(dir, true, false, 3, &e) == NULL);
    CHECKF(strstr(e.msg, "metrics.jsonl:2:"), "%s", e.msg);
}

// A writer that dies without metrics_close leaves an HDF5 file with every flushed step readable.
static void test_crash(void) {
    const char *dir = TMP_PATH("metrics_crash");
    char h5[4200], jl[4200];
    snprintf(h5, sizeof h5, "%s/metrics.h5", dir);
    snprintf(jl, sizeof jl, "%s/metrics.jsonl", dir);
    fflush(NULL);
    pid_t pid = fork();
    if (pid == 0) {
        Err e;
        Metrics *m = metrics_open(dir, true, true, METRICS_FRESH, &e);
        if (!m) _exit(2);
        for (int s = 0; s < 3; s++) {
            const char *names[1] = {"loss"};
            double v = 10.0 + s;
            if (metrics_log(m, s, names, &v, 1, &e)) _exit(3);
        }
        _exit(0);  // no metrics_close, no atexit handlers: as if killed
    }
    int status = 0;
    CHECK(pid > 0 && waitpid(pid, &status, 0) == pid);
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    double v[8];
    CHECK_INT(h5_read(h5, "step", v, 8), 3);
    CHECK(v[0] == 0 && v[2] == 2);
    CHECK_INT(h5_read(h5, "loss", v, 8), 3);
    CHECK(v[0] == 10 && v[1] == 11 && v[2] == 12);
    json_t *rows[8];
    int n = jsonl_read(jl, rows, 8);
    CHECK_INT(n, 3);
    free_json(rows, n);

    // And the crashed run resumes from its last checkpointed step.
    Err e;
    Metrics *m = metrics_open(dir, true, true, 1, &e);
    CHECKF(m != NULL, "%s", e.msg);
    metrics_close(m);
    CHECK_INT(h5_read(h5, "loss", v, 8), 2);
}

// Resuming from step k drops the rows after k in both files, then appends the new steps.
static void test_resume(void) {
    const char *dir = TMP_PATH("metrics_resume");
    char h5[4200], jl[4200];
    snprintf(h5, sizeof h5, "%s/metrics.h5", dir);
    snprintf(jl, sizeof jl, "%s/metrics.jsonl", dir);
    Err e;
    Metrics *m = metrics_open(dir, true, true, METRICS_FRESH, &e);
    CHECKF(m != NULL, "%s", e.msg);
    if (!m) return;
    for (int s = 1; s <= 6; s++) {
        const char *names[2] = {"loss", "late"};
        double vals[2] = {(double)s, 100.0 + s};
        CHECK(metrics_log(m, s, names, vals, s == 6 ? 2 : 1, &e) == 0);
    }
    metrics_close(m);
    // A torn last line, as a crash in the middle of a write leaves it.
    FILE *f = fopenCheck(jl, "a");
    fputs("{\"step\": 7, \"lo", f);
    fcloseCheck(f);

    m = metrics_open(dir, true, true, 4, &e);
    CHECKF(m != NULL, "%s", e.msg);
    if (!m) return;
    const char *names[2] = {"loss", "new"};
    double vals[2] = {-4.5, 7};
    CHECK(metrics_log(m, 4, names, vals, 2, &e) == -1 && strstr(e.msg, "step 4 after step 4"));
    for (int s = 5; s <= 6; s++) {
        vals[0] = -(double)s;
        CHECK(metrics_log(m, s, names, vals, 2, &e) == 0);
    }
    metrics_close(m);

    double v[16];
    CHECK_INT(h5_read(h5, "step", v, 16), 6);
    CHECK(v[3] == 4 && v[4] == 5 && v[5] == 6);
    CHECK_INT(h5_read(h5, "loss", v, 16), 6);
    CHECK(v[0] == 1 && v[3] == 4 && v[4] == -5 && v[5] == -6);
    CHECK_INT(h5_read(h5, "late", v, 16), 6);  // its only value was at step 6, which was dropped
    int all_nan = 1;
    for (int i = 0; i < 6; i++) all_nan &= isnan(v[i]);
    CHECK(all_nan);
    CHECK_INT(h5_read(h5, "new", v, 16), 6);
    CHECK(isnan(v[3]) && v[4] == 7 && v[5] == 7);

    json_t *rows[16];
    int n = jsonl_read(jl, rows, 16);
    CHECK_INT(n, 6);
    int steps_ok = n == 6;
    for (int i = 0; i < n; i++) steps_ok &= json_integer_value(json_object_get(rows[i], "step")) == i + 1;
    CHECK(steps_ok);
    if (n == 6) {
        CHECK(json_real_value(json_object_get(rows[4], "loss")) == -5);
        CHECK(json_object_get(rows[5], "late") == NULL);
    }
    free_json(rows, n);
}

// Each file can be turned off; resuming where no file exists yet starts one.
static void test_switches(void) {
    Err e;
    const char *dir = TMP_PATH("metrics_only_jsonl");
    char h5[4200], jl[4200];
    snprintf(h5, sizeof h5, "%s/metrics.h5", dir);
    snprintf(jl, sizeof jl, "%s/metrics.jsonl", dir);
    unlink(h5);
    unlink(jl);
    Metrics *m = metrics_open(dir, true, false, 10, &e);
    CHECKF(m != NULL, "%s", e.msg);
    const char *names[1] = {"x"};
    double one = 1;
    CHECK(metrics_log(m, 11, names, &one, 1, &e) == 0);
    metrics_close(m);
    CHECK(path_exists(jl) && !path_exists(h5));
    unlink(jl);
    m = metrics_open(dir, false, true, METRICS_FRESH, &e);
    CHECK(metrics_log(m, 0, names, &one, 1, &e) == 0);
    metrics_close(m);
    CHECK(!path_exists(jl) && path_exists(h5));
}

int main(void) {
    RUN(test_write_read);
    RUN(test_bad_input);
    RUN(test_crash);
    RUN(test_resume);
    RUN(test_switches);
    return test_summary("test_metrics");
}
