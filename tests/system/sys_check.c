// sys_check: the comparisons the system tests make on a run's outputs.
//   sys_check metrics A.jsonl B.jsonl exact|TOL   every row of A and B has the same step and the same
//       metrics: equal bit for bit (exact) or within TOL relative (|a - b| <= TOL * max(1, |a|)).
//       Wall-clock metrics (time, time.*, tokens_per_s) are skipped.
//   sys_check params CKPT_A CKPT_B TOL   the fp32 master weights of two checkpoints agree within TOL
//       (max |a - b| / max(1, max |a|)).
//   sys_check sum A.jsonl NAME MIN   the sum over the rows of metric NAME is at least MIN.
//   sys_check rows A.jsonl N   A holds N rows, steps 0..N-1.
//   sys_check values A.jsonl NAME V0,V1,...   row i's NAME is exactly Vi, or above 0 where Vi is "+".
//   sys_check h5 RUN_DIR NAME   RUN_DIR/metrics.h5's dataset NAME holds RUN_DIR/metrics.jsonl's values of
//       NAME, row for row, bit for bit.
// Exits 0 when the check holds, 1 (with the first difference on stderr) when not, 2 on bad usage/input.
#include <hdf5.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ckpt/ckpt.h"
#include "ckpt/trainer_state.h"
#include "util/check.h"

static void die(const char *fmt, const char *a) {
    fprintf(stderr, "sys_check: ");
    fprintf(stderr, fmt, a);
    fprintf(stderr, "\n");
    exit(2);
}

// The rows of a metrics.jsonl file (a JSON array of objects; the caller decrefs).
static json_t *read_rows(const char *path) {
    FILE *f = fopen(path, "r");
    if (!f) die("cannot open %s", path);
    json_t *rows = json_array();
    char line[1 << 16];
    while (fgets(line, sizeof line, f)) {
        json_error_t je;
        json_t *o = json_loads(line, 0, &je);
        if (!json_is_object(o)) die("%s: a line is not a JSON object", path);
        json_array_append_new(rows, o);
    }
    fclose(f);
    return rows;
}

static int wall_clock(const char *key) {
    return strcmp(key, "time") == 0 || strncmp(key, "time.", 5) == 0 || strcmp(key, "tokens_per_s") == 0;
}

static int same_value(json_t *a, json_t *b, double tol) {
    if (json_is_null(a) || json_is_null(b)) return json_is_null(a) && json_is_null(b);
    double x = json_number_value(a), y = json_number_value(b);
    if (tol < 0) return memcmp(&x, &y, sizeof x) == 0;
    return fabs(x - y) <= tol * fmax(1.0, fabs(x));
}

static int check_metrics(const char *pa, const char *pb, const char *mode) {
    double tol = strcmp(mode, "exact") == 0 ? -1 : atof(mode);
    json_t *A = read_rows(pa), *B = read_rows(pb);
    int rc = 0;
    if (json_array_size(A) != json_array_size(B) || json_array_size(A) == 0) {
        fprintf(stderr, "sys_check: %zu rows in %s, %zu in %s\n", json_array_size(A), pa, json_array_size(B), pb);
        rc = 1;
    }
    for (size_t i = 0; rc == 0 && i < json_array_size(A); i++) {
        json_t *ra = json_array_get(A, i), *rb = json_array_get(B, i);
        const char *key;
        json_t *va;
        if (json_object_size(ra) != json_object_size(rb)) {
            fprintf(stderr, "sys_check: row %zu: %zu metrics vs %zu\n", i, json_object_size(ra), json_object_size(rb));
            rc = 1;
        }
        json_object_foreach(ra, key, va) {
            if (rc || wall_clock(key)) continue;
            json_t *vb = json_object_get(rb, key);
            if (!vb || !same_value(va, vb, strcmp(key, "step") == 0 ? -1 : tol)) {
                fprintf(stderr, "sys_check: row %zu, %s: %.17g in %s, %.17g in %s\n", i, key, json_number_value(va), pa,
                        vb ? json_number_value(vb) : NAN, pb);
                rc = 1;
            }
        }
    }
    if (rc == 0) printf("sys_check: %zu rows agree (%s)\n", json_array_size(A), mode);
    json_decref(A);
    json_decref(B);
    return rc;
}

// The master weights of checkpoint directory dir ([*n], malloc'd).
static float *read_master(const char *dir, int64_t *n) {
    char path[4300];
    Err e;
    TrainerState st;
    ckpt_trainer_path(path, sizeof path, dir, 0, 1);
    if (trainer_state_peek(path, &st, &e)) die("%s", e.msg);
    *n = st.shard.n_params;
    trainer_state_free(&st);
    float *master = mallocCheck((size_t)*n * sizeof(float)), *m = mallocCheck((size_t)*n * sizeof(float)),
          *v = mallocCheck((size_t)*n * sizeof(float));
    TrainerArray arr[3] = {{"master", master, *n}, {"adam.m", m, *n}, {"adam.v", v, *n}};
    if (trainer_state_load(path, NULL, &st, arr, 3, &e)) die("%s", e.msg);
    trainer_state_free(&st);
    free(m);
    free(v);
    return master;
}

static int check_params(const char *da, const char *db, double tol) {
    int64_t na, nb;
    float *a = read_master(da, &na), *b = read_master(db, &nb);
    int rc = 0;
    if (na != nb) {
        fprintf(stderr, "sys_check: %lld parameters in %s, %lld in %s\n", (long long)na, da, (long long)nb, db);
        rc = 1;
    } else {
        double diff = 0, scale = 1;
        int64_t at = 0;
        for (int64_t i = 0; i < na; i++) {
            double d = fabs((double)a[i] - b[i]);
            if (!(d <= diff)) diff = d, at = i;
            scale = fmax(scale, fabs(a[i]));
        }
        printf("sys_check: %lld parameters, max difference %.3g (parameter %lld), scale %.3g\n", (long long)na, diff,
               (long long)at, scale);
        rc = !(diff <= tol * scale);
    }
    free(a);
    free(b);
    return rc;
}

static int check_sum(const char *p, const char *name, double min) {
    json_t *A = read_rows(p);
    double s = 0;
    for (size_t i = 0; i < json_array_size(A); i++) s += json_number_value(json_object_get(json_array_get(A, i), name));
    json_decref(A);
    printf("sys_check: sum of %s over %s = %g\n", name, p, s);
    return !(s >= min);
}

static int check_rows(const char *p, long n) {
    json_t *A = read_rows(p);
    int rc = (long)json_array_size(A) != n;
    for (size_t i = 0; !rc && i < json_array_size(A); i++)
        rc = json_integer_value(json_object_get(json_array_get(A, i), "step")) != (json_int_t)i;
    if (rc) fprintf(stderr, "sys_check: %s: expected steps 0..%ld\n", p, n - 1);
    json_decref(A);
    return rc;
}

static int check_values(const char *p, const char *name, const char *list) {
    json_t *A = read_rows(p);
    int rc = 0;
    size_t i = 0;
    for (const char *s = list; *s && rc == 0; i++) {
        json_t *v = json_object_get(json_array_get(A, i), name);
        double x = json_is_number(v) ? json_number_value(v) : NAN;
        int ok = *s == '+' ? x > 0 : x == strtod(s, NULL);
        if (!ok) fprintf(stderr, "sys_check: %s row %zu: %s = %.17g, expected %.*s\n", p, i, name, x,
                         (int)strcspn(s, ","), s);
        rc = !ok;
        s += strcspn(s, ",");
        s += *s == ',';
    }
    if (rc == 0 && i != json_array_size(A)) {
        fprintf(stderr, "sys_check: %s: %zu rows, %zu values given\n", p, json_array_size(A), i);
        rc = 1;
    }
    if (rc == 0) printf("sys_check: %s of %s: %s\n", name, p, list);
    json_decref(A);
    return rc;
}

static int check_h5(const char *dir, const char *name) {
    char path[4300];
    snprintf(path, sizeof path, "%s/metrics.jsonl", dir);
    json_t *A = read_rows(path);
    size_t n = json_array_size(A);
    snprintf(path, sizeof path, "%s/metrics.h5", dir);
    hid_t f = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    if (f < 0) die("cannot open %s", path);
    hid_t ds = H5Lexists(f, name, H5P_DEFAULT) > 0 ? H5Dopen2(f, name, H5P_DEFAULT) : -1;
    if (ds < 0) die("no dataset %s in metrics.h5", name);
    hid_t sp = H5Dget_space(ds);
    hsize_t dims = 0;
    H5Sget_simple_extent_dims(sp, &dims, NULL);
    H5Sclose(sp);
    double *x = mallocCheck((dims + 1) * sizeof(double));
    int rc = dims != n || H5Dread(ds, H5T_NATIVE_DOUBLE, H5S_ALL, H5S_ALL, H5P_DEFAULT, x) < 0;
    for (size_t i = 0; rc == 0 && i < n; i++) {
        double y = json_number_value(json_object_get(json_array_get(A, i), name));
        rc = memcmp(&x[i], &y, sizeof y) != 0;
        if (rc)
            fprintf(stderr, "sys_check: %s row %zu: %.17g in metrics.h5, %.17g in metrics.jsonl\n", name, i, x[i], y);
    }
    if (rc == 0) printf("sys_check: %s: %zu rows, metrics.h5 = metrics.jsonl\n", name, n);
    else if (dims != n) fprintf(stderr, "sys_check: %s: %llu rows in metrics.h5, %zu in metrics.jsonl\n", name,
                                (unsigned long long)dims, n);
    free(x);
    H5Dclose(ds);
    H5Fclose(f);
    json_decref(A);
    return rc;
}

int main(int argc, char **argv) {
    if (argc == 5 && strcmp(argv[1], "metrics") == 0) return check_metrics(argv[2], argv[3], argv[4]);
    if (argc == 5 && strcmp(argv[1], "params") == 0) return check_params(argv[2], argv[3], atof(argv[4]));
    if (argc == 5 && strcmp(argv[1], "sum") == 0) return check_sum(argv[2], argv[3], atof(argv[4]));
    if (argc == 4 && strcmp(argv[1], "rows") == 0) return check_rows(argv[2], atol(argv[3]));
    if (argc == 5 && strcmp(argv[1], "values") == 0) return check_values(argv[2], argv[3], argv[4]);
    if (argc == 4 && strcmp(argv[1], "h5") == 0) return check_h5(argv[2], argv[3]);
    die("%s", "usage: sys_check metrics A B exact|TOL | params CKPT_A CKPT_B TOL | sum A NAME MIN | rows A N | "
              "values A NAME V0,V1,... | h5 RUN_DIR NAME");
}
