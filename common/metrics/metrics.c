#include "metrics/metrics.h"

#include <errno.h>
#include <hdf5.h>
#include <jansson.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "config/jsonout.h"
#include "util/fileio.h"

enum { METRICS_CHUNK = 1024, METRICS_NAME_CAP = 128 };

typedef struct {
    char name[METRICS_NAME_CAP];
    hid_t ds;
} MetricSeries;

struct Metrics {
    FILE *jsonl;  // NULL when off
    char jsonl_path[4096];
    hid_t h5;  // H5I_INVALID_HID when off
    char h5_path[4096];
    hid_t step_ds;
    MetricSeries *series;  // every float64 dataset, "time" included
    int n_series, cap_series;
    hsize_t rows;
    int64_t last_step;
};

// HDF5 failures while writing are system failures (disk full, I/O error): the library has printed its
// error stack, we add where.
#define MH5_CHECK(expr, m)                                                      \
    do {                                                                        \
        if ((expr) < 0) fatal("%s: HDF5 call failed: %s", (m)->h5_path, #expr); \
    } while (0)

// ---------------------------------------------------------------------------------------------------
// HDF5 side.

static hid_t h5_series_create(Metrics *m, const char *name, hid_t ftype, hid_t mtype, const void *fill) {
    hsize_t dims[1] = {m->rows}, maxdims[1] = {H5S_UNLIMITED}, chunk[1] = {METRICS_CHUNK};
    hid_t space = H5Screate_simple(1, dims, maxdims);
    hid_t dcpl = H5Pcreate(H5P_DATASET_CREATE);
    MH5_CHECK(space, m);
    MH5_CHECK(dcpl, m);
    MH5_CHECK(H5Pset_chunk(dcpl, 1, chunk), m);
    if (fill) MH5_CHECK(H5Pset_fill_value(dcpl, mtype, fill), m);
    hid_t ds = H5Dcreate2(m->h5, name, ftype, space, H5P_DEFAULT, dcpl, H5P_DEFAULT);
    MH5_CHECK(ds, m);
    H5Pclose(dcpl);
    H5Sclose(space);
    return ds;
}

static void h5_series_add(Metrics *m, const char *name, hid_t ds) {
    if (m->n_series == m->cap_series) {
        m->cap_series = m->cap_series ? 2 * m->cap_series : 16;
        m->series = reallocCheck(m->series, (size_t)m->cap_series * sizeof *m->series);
    }
    MetricSeries *s = &m->series[m->n_series++];
    snprintf(s->name, sizeof s->name, "%s", name);
    s->ds = ds;
}

static hid_t h5_series_get(Metrics *m, const char *name) {
    for (int i = 0; i < m->n_series; i++)
        if (strcmp(m->series[i].name, name) == 0) return m->series[i].ds;
    const double missing = NAN;  // earlier rows of a new name, and rows where it is not logged
    hid_t ds = h5_series_create(m, name, H5T_IEEE_F64LE, H5T_NATIVE_DOUBLE, &missing);
    h5_series_add(m, name, ds);
    return ds;
}

static void h5_write_at(Metrics *m, hid_t ds, hid_t mtype, hsize_t row, const void *value) {
    hsize_t start[1] = {row}, count[1] = {1};
    hid_t fspace = H5Dget_space(ds);
    hid_t mspace = H5Screate_simple(1, count, NULL);
    MH5_CHECK(fspace, m);
    MH5_CHECK(mspace, m);
    MH5_CHECK(H5Sselect_hyperslab(fspace, H5S_SELECT_SET, start, NULL, count, NULL), m);
    MH5_CHECK(H5Dwrite(ds, mtype, mspace, fspace, H5P_DEFAULT, value), m);
    H5Sclose(mspace);
    H5Sclose(fspace);
}

static hid_t h5_fapl(Metrics *m) {
    // No file lock: a plotting script may read metrics.h5 while the run appends (it is flushed each step).
    hid_t fapl = H5Pcreate(H5P_FILE_ACCESS);
    MH5_CHECK(fapl, m);
#if H5_VERSION_GE(1, 10, 7)
    MH5_CHECK(H5Pset_file_locking(fapl, false, true), m);
#endif
    return fapl;
}

static void h5_create(Metrics *m) {
    hid_t fapl = h5_fapl(m);
    m->h5 = H5Fcreate(m->h5_path, H5F_ACC_TRUNC, H5P_DEFAULT, fapl);
    MH5_CHECK(m->h5, m);
    H5Pclose(fapl);
    m->step_ds = h5_series_create(m, "step", H5T_STD_I64LE, H5T_NATIVE_INT64, NULL);
}

// Reopens an existing file, keeps the rows with step <= resume_step. Bad content is reported via e.
static int h5_resume(Metrics *m, int64_t resume_step, Err *e) {
    H5E_auto2_t saved_fn;
    void *saved_data;
    H5Eget_auto2(H5E_DEFAULT, &saved_fn, &saved_data);
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL);  // an unreadable file is bad input, reported below
    hid_t fapl = h5_fapl(m);
    m->h5 = H5Fopen(m->h5_path, H5F_ACC_RDWR, fapl);
    H5Pclose(fapl);
    if (m->h5 >= 0) m->step_ds = H5Dopen2(m->h5, "step", H5P_DEFAULT);
    H5Eset_auto2(H5E_DEFAULT, saved_fn, saved_data);
    if (m->h5 < 0) return err_set(e, "%s: cannot open to resume (not an HDF5 file, or damaged)", m->h5_path);
    if (m->step_ds < 0) return err_set(e, "%s: no \"step\" dataset; not a metrics file", m->h5_path);

    hid_t space = H5Dget_space(m->step_ds);
    MH5_CHECK(space, m);
    hsize_t n = 0;
    if (H5Sget_simple_extent_ndims(space) != 1 || H5Sget_simple_extent_dims(space, &n, NULL) < 0) {
        H5Sclose(space);
        return err_set(e, "%s: \"step\" is not a 1-D dataset", m->h5_path);
    }
    H5Sclose(space);
    int64_t *steps = mallocCheck((size_t)(n ? n : 1) * sizeof *steps);
    if (n) MH5_CHECK(H5Dread(m->step_ds, H5T_NATIVE_INT64, H5S_ALL, H5S_ALL, H5P_DEFAULT, steps), m);
    hsize_t keep = 0;
    while (keep < n && steps[keep] <= resume_step) keep++;  // steps increase (metrics_log enforces it)
    free(steps);
    m->rows = keep;
    MH5_CHECK(H5Dset_extent(m->step_ds, &keep), m);

    H5G_info_t info;
    MH5_CHECK(H5Gget_info(m->h5, &info), m);
    for (hsize_t i = 0; i < info.nlinks; i++) {
        char name[METRICS_NAME_CAP];
        ssize_t len =
            H5Lget_name_by_idx(m->h5, ".", H5_INDEX_NAME, H5_ITER_INC, i, name, sizeof name, H5P_DEFAULT);
        MH5_CHECK(len, m);
        if ((size_t)len >= sizeof name) return err_set(e, "%s: dataset name too long", m->h5_path);
        if (strcmp(name, "step") == 0) continue;
        hid_t ds = H5Dopen2(m->h5, name, H5P_DEFAULT);
        if (ds < 0) return err_set(e, "%s: \"%s\" is not a dataset", m->h5_path, name);
        hid_t sp = H5Dget_space(ds);
        hsize_t rows = 0;
        int ok =
            sp >= 0 && H5Sget_simple_extent_ndims(sp) == 1 && H5Sget_simple_extent_dims(sp, &rows, NULL) >= 0;
        if (sp >= 0) H5Sclose(sp);
        h5_series_add(m, name, ds);  // closed by metrics_close even when the check below fails
        if (!ok || rows != n)
            return err_set(e, "%s: dataset \"%s\" has %llu rows, \"step\" has %llu", m->h5_path, name,
                           (unsigned long long)rows, (unsigned long long)n);
        MH5_CHECK(H5Dset_extent(ds, &keep), m);
    }
    MH5_CHECK(H5Fflush(m->h5, H5F_SCOPE_LOCAL), m);
    return 0;
}

static void h5_log(Metrics *m, int64_t step, double time_s, const char *const *names, const double *values,
                   int n) {
    hsize_t row = m->rows++;
    hid_t time_ds = h5_series_get(m, "time");  // a new series is created with m->rows NaN rows
    hid_t *ds = mallocCheck((size_t)(n ? n : 1) * sizeof *ds);
    for (int i = 0; i < n; i++) ds[i] = h5_series_get(m, names[i]);
    MH5_CHECK(H5Dset_extent(m->step_ds, &m->rows), m);
    for (int i = 0; i < m->n_series; i++) MH5_CHECK(H5Dset_extent(m->series[i].ds, &m->rows), m);
    h5_write_at(m, m->step_ds, H5T_NATIVE_INT64, row, &step);
    h5_write_at(m, time_ds, H5T_NATIVE_DOUBLE, row, &time_s);
    for (int i = 0; i < n; i++) h5_write_at(m, ds[i], H5T_NATIVE_DOUBLE, row, &values[i]);
    free(ds);
    MH5_CHECK(H5Fflush(m->h5, H5F_SCOPE_LOCAL), m);
}

// ---------------------------------------------------------------------------------------------------
// JSON lines side.

// Keeps the complete lines with step <= resume_step (a torn last line from a crash is dropped), rewrites
// the file atomically and opens it for appending.
static int jsonl_resume(Metrics *m, int64_t resume_step, Err *e) {
    size_t size = 0;
    char *text = file_read_all(m->jsonl_path, &size, e);
    if (!text) return -1;
    char *kept = mallocCheck(size + 1);
    size_t n_kept = 0;
    int line_no = 0;
    for (char *line = text; *line;) {
        char *nl = strchr(line, '\n');
        if (!nl) break;
        line_no++;
        json_error_t jerr;
        json_t *obj = json_loadb(line, (size_t)(nl - line), 0, &jerr);
        json_t *step = obj ? json_object_get(obj, "step") : NULL;
        if (!json_is_integer(step)) {
            json_decref(obj);
            free(kept);
            free(text);
            return err_set(e, "%s:%d: not a metrics line (an object with an integer \"step\")", m->jsonl_path,
                           line_no);
        }
        if (json_integer_value(step) <= resume_step) {
            memcpy(kept + n_kept, line, (size_t)(nl - line) + 1);
            n_kept += (size_t)(nl - line) + 1;
        }
        json_decref(obj);
        line = nl + 1;
    }
    free(text);
    int rc = file_write_atomic(m->jsonl_path, kept, n_kept, e);
    free(kept);
    if (rc) return -1;
    m->jsonl = fopenCheck(m->jsonl_path, "a");
    return 0;
}

static void jsonl_log(Metrics *m, int64_t step, double time_s, const char *const *names, const double *values,
                      int n) {
    char *buf = NULL, num[64];
    size_t len = 0, cap = 0;
    jsonout_printf(&buf, &len, &cap, "{\"step\": %lld, \"time\": %s", (long long)step,
                   jsonout_double(num, sizeof num, time_s));
    for (int i = 0; i < n; i++) {
        jsonout_printf(&buf, &len, &cap, ", ");
        jsonout_string(&buf, &len, &cap, names[i]);
        jsonout_printf(&buf, &len, &cap, ": %s", jsonout_double(num, sizeof num, values[i]));
    }
    jsonout_printf(&buf, &len, &cap, "}\n");
    fwriteCheck(buf, 1, len, m->jsonl);  // one write per line: a crash tears at most the last line
    if (fflush(m->jsonl) != 0) fatal("%s: write failed: %s", m->jsonl_path, strerror(errno));
    free(buf);
}

// ---------------------------------------------------------------------------------------------------

Metrics *metrics_open(const char *run_dir, bool jsonl, bool hdf5, int64_t resume_step, Err *e) {
    if (dir_make(run_dir, e)) return NULL;
    Metrics *m = callocCheck(1, sizeof *m);
    m->h5 = m->step_ds = H5I_INVALID_HID;
    m->last_step = resume_step;  // METRICS_FRESH (-1): steps start at 0 or later
    path_join(m->jsonl_path, sizeof m->jsonl_path, run_dir, "metrics.jsonl");
    path_join(m->h5_path, sizeof m->h5_path, run_dir, "metrics.h5");
    int resume = resume_step >= 0;
    if (jsonl) {
        if (resume && path_exists(m->jsonl_path)) {
            if (jsonl_resume(m, resume_step, e)) goto fail;
        } else {
            m->jsonl = fopenCheck(m->jsonl_path, "w");
        }
    }
    if (hdf5) {
        if (resume && path_exists(m->h5_path)) {
            if (h5_resume(m, resume_step, e)) goto fail;
        } else {
            h5_create(m);
        }
    }
    return m;
fail:
    metrics_close(m);
    return NULL;
}

static int metrics_check_name(const char *name, Err *e) {
    size_t n = strlen(name);
    if (n == 0 || n >= METRICS_NAME_CAP)
        return err_set(e, "metric name \"%.60s\": length must be 1..%d", name, METRICS_NAME_CAP - 1);
    if (strcmp(name, "step") == 0 || strcmp(name, "time") == 0)
        return err_set(e, "metric name \"%s\" is reserved", name);
    if (name[0] == '.') return err_set(e, "metric name \"%s\" starts with '.'", name);
    for (const char *p = name; *p; p++)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') || *p == '_' ||
              *p == '.' || *p == '-'))
            return err_set(e, "metric name \"%s\": only letters, digits, '_', '.', '-' allowed", name);
    return 0;
}

int metrics_log(Metrics *m, int64_t step, const char *const *names, const double *values, int n, Err *e) {
    if (step <= m->last_step)
        return err_set(e, "metrics: step %lld after step %lld (steps must increase)", (long long)step,
                       (long long)m->last_step);
    for (int i = 0; i < n; i++) {
        if (metrics_check_name(names[i], e)) return err_prefix(e, "metrics: step %lld", (long long)step);
        for (int j = 0; j < i; j++)
            if (strcmp(names[i], names[j]) == 0)
                return err_set(e, "metrics: step %lld: metric \"%s\" given twice", (long long)step, names[i]);
    }
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    double time_s = (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
    if (m->jsonl) jsonl_log(m, step, time_s, names, values, n);
    if (m->h5 >= 0) h5_log(m, step, time_s, names, values, n);
    m->last_step = step;
    return 0;
}

void metrics_close(Metrics *m) {
    if (!m) return;
    if (m->jsonl) fcloseCheck(m->jsonl);
    for (int i = 0; i < m->n_series; i++) H5Dclose(m->series[i].ds);
    if (m->step_ds >= 0) H5Dclose(m->step_ds);
    if (m->h5 >= 0 && H5Fclose(m->h5) < 0) fatal("%s: close failed", m->h5_path);
    free(m->series);
    free(m);
}
