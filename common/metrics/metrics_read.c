#include "metrics/metrics_read.h"

#include <errno.h>
#include <hdf5.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "util/fileio.h"

enum { READ_ATTEMPTS = 50 };  // 50 x 100 ms: a step's write takes milliseconds

typedef struct {
    char **names;
    int n, cap;
} NameList;

#if H5_VERSION_GE(1, 12, 0)
typedef H5L_info2_t LinkInfo;
#define LINK_ITERATE H5Literate2
#else
typedef H5L_info_t LinkInfo;
#define LINK_ITERATE H5Literate
#endif

static herr_t collect_name(hid_t group, const char *name, const LinkInfo *info, void *data) {
    NameList *l = data;
    if (l->n == l->cap) {
        l->cap = l->cap ? 2 * l->cap : 32;
        l->names = reallocCheck(l->names, (size_t)l->cap * sizeof(char *));
    }
    l->names[l->n++] = strdupCheck(name);
    return 0;
}

// Reads a 1-D dataset of exactly n rows as mtype into out; -1 when it is not that.
static int read_column(hid_t f, const char *name, hid_t mtype, hsize_t n, void *out) {
    hid_t ds = H5Dopen2(f, name, H5P_DEFAULT);
    if (ds < 0) return -1;
    hid_t sp = H5Dget_space(ds);
    hsize_t dims[1] = {0};
    int ok = sp >= 0 && H5Sget_simple_extent_ndims(sp) == 1 && H5Sget_simple_extent_dims(sp, dims, NULL) == 1 &&
             dims[0] == n && (n == 0 || H5Dread(ds, mtype, H5S_ALL, H5S_ALL, H5P_DEFAULT, out) >= 0);
    if (sp >= 0) H5Sclose(sp);
    H5Dclose(ds);
    return ok ? 0 : -1;
}

static hsize_t column_rows(hid_t f, const char *name) {
    hid_t ds = H5Dopen2(f, name, H5P_DEFAULT);
    if (ds < 0) return (hsize_t)-1;
    hid_t sp = H5Dget_space(ds);
    hsize_t dims[1] = {(hsize_t)-1};
    if (sp >= 0 && H5Sget_simple_extent_ndims(sp) == 1) H5Sget_simple_extent_dims(sp, dims, NULL);
    if (sp >= 0) H5Sclose(sp);
    H5Dclose(ds);
    return dims[0];
}

// Parses one in-memory copy. Returns 0, or -1 with the reason in e (inconsistent or not a metrics file).
static int parse_image(const char *path, void *image, size_t size, MetricsTable *t, Err *e) {
    hid_t fapl = H5Pcreate(H5P_FILE_ACCESS);
    H5Pset_fapl_core(fapl, 1 << 20, 0);  // in memory, never written back
    H5Pset_file_image(fapl, image, size);
    // The core driver refuses a name that exists on disk along with an image: name the copy apart.
    char name[4200];
    snprintf(name, sizeof name, "%s (in-memory copy)", path);
    hid_t f = H5Fopen(name, H5F_ACC_RDONLY, fapl);
    H5Pclose(fapl);
    if (f < 0) return err_set(e, "%s: not readable as HDF5", path);
    int rc = 0;
    hsize_t n = column_rows(f, "step");
    NameList l = {0};
    if (n == (hsize_t)-1) rc = err_set(e, "%s: no \"step\" dataset; not a metrics file", path);
    if (!rc && LINK_ITERATE(f, H5_INDEX_NAME, H5_ITER_INC, NULL, collect_name, &l) < 0)
        rc = err_set(e, "%s: cannot list the datasets", path);
    if (!rc) {
        t->n = (int64_t)n;
        t->step = callocCheck(n + 1, sizeof(int64_t));
        t->name = callocCheck((size_t)l.n + 1, sizeof(char *));
        t->value = callocCheck((size_t)l.n + 1, sizeof(double *));
        if (read_column(f, "step", H5T_NATIVE_INT64, n, t->step)) rc = err_set(e, "%s: \"step\" unreadable", path);
        for (int64_t i = 1; !rc && i < t->n; i++)
            if (t->step[i] <= t->step[i - 1]) rc = err_set(e, "%s: steps not increasing at row %lld", path, (long long)i);
    }
    for (int i = 0; i < l.n; i++) {
        if (!rc && strcmp(l.names[i], "step") != 0) {
            double *v = callocCheck(n + 1, sizeof(double));
            t->name[t->n_series] = l.names[i];
            t->value[t->n_series++] = v;
            l.names[i] = NULL;
            if (read_column(f, t->name[t->n_series - 1], H5T_NATIVE_DOUBLE, n, v))
                rc = err_set(e, "%s: \"%s\" does not have the %llu rows of \"step\"", path, t->name[t->n_series - 1],
                             (unsigned long long)n);
        }
        free(l.names[i]);
    }
    free(l.names);
    H5Fclose(f);
    return rc;
}

static int same_file_state(const struct stat *a, const struct stat *b) {
    return a->st_size == b->st_size && a->st_mtim.tv_sec == b->st_mtim.tv_sec &&
           a->st_mtim.tv_nsec == b->st_mtim.tv_nsec && a->st_ino == b->st_ino;
}

int metrics_read(const char *path, MetricsTable *t, Err *e) {
    memset(t, 0, sizeof *t);
    H5E_auto2_t saved_fn;
    void *saved_data;
    H5Eget_auto2(H5E_DEFAULT, &saved_fn, &saved_data);
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL);  // a copy caught mid-write is expected; it is retried
    int rc = -1;
    for (int attempt = 0; attempt < READ_ATTEMPTS && rc; attempt++) {
        if (attempt) nanosleep(&(struct timespec){0, 100 * 1000 * 1000}, NULL);
        struct stat before, after;
        if (stat(path, &before) != 0) {
            err_set(e, "%s: %s", path, strerror(errno));
            break;
        }
        size_t size;
        char *image = file_read_all(path, &size, e);
        if (!image) break;
        // The writer changed the file while it was copied: the copy may mix two steps.
        if (stat(path, &after) != 0 || !same_file_state(&before, &after) || (size_t)before.st_size != size) {
            free(image);
            err_set(e, "%s: changed during every copy", path);
            continue;
        }
        rc = parse_image(path, image, size, t, e);
        if (rc) metrics_table_free(t);
        free(image);
    }
    H5Eset_auto2(H5E_DEFAULT, saved_fn, saved_data);
    return rc;
}

void metrics_table_free(MetricsTable *t) {
    for (int i = 0; i < t->n_series; i++) {
        free(t->name[i]);
        free(t->value[i]);
    }
    free(t->name);
    free(t->value);
    free(t->step);
    memset(t, 0, sizeof *t);
}

const double *metrics_series(const MetricsTable *t, const char *name) {
    for (int i = 0; i < t->n_series; i++)
        if (strcmp(t->name[i], name) == 0) return t->value[i];
    return NULL;
}
