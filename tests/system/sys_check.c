// sys_check: the comparisons the system tests make on a run's outputs.
//   sys_check metrics A.jsonl B.jsonl exact|TOL   every row of A and B has the same step and the same
//       metrics: equal bit for bit (exact) or within TOL relative (|a - b| <= TOL * max(1, |a|)).
//       Wall-clock metrics (time, time.*, tokens_per_s) are skipped.
//   sys_check state CKPT_A CKPT_B MASTER_TOL MOMENT_TOL   the whole trainer state of two checkpoints, each
//       read from all its trainer files (written by any number of learners): step, weights version, data
//       cursor, optimizer kind and step, parameter count, RNG streams and named scalars equal exactly; the fp32 master weights within MASTER_TOL (max |a - b| / max(1, max |a|)); AdamW's
//       moments m and v each within MOMENT_TOL (||a - b|| / ||a||). After one step m = (1 - beta1) g, so
//       MOMENT_TOL bounds the gradient's error (a parameter check cannot: Adam's first step moves every
//       weight by about lr whatever the gradient's size). 0 0 asks for equal values.
//   sys_check sum A.jsonl NAME MIN   the sum over the rows of metric NAME is at least MIN.
//   sys_check rows A.jsonl N   A holds N rows, steps 0..N-1.
//   sys_check values A.jsonl NAME V0,V1,...   row i's NAME is exactly Vi, above 0 where Vi is "+", below X
//            where Vi is "<X" (NaN is none of these).
//   sys_check h5 RUN_DIR NAME   RUN_DIR/metrics.h5's dataset NAME holds RUN_DIR/metrics.jsonl's values of
//       NAME, row for row, bit for bit.
// Exits 0 when the check holds, 1 (with the first difference on stderr) when not, 2 on bad usage/input.
// Every comparison fails on NaN or Inf (test.h's cmp_diff); exact means equal bits and finite.
#include <hdf5.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ckpt/ckpt.h"
#include "ckpt/trainer_shards.h"
#include "ckpt/trainer_state.h"
#include "test.h"
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

// Equal bits and finite (NaN == NaN by bits would pass a memcmp).
static int same_bits(double x, double y) {
    return isfinite(x) && memcmp(&x, &y, sizeof x) == 0;
}

// A metric of both runs: exact (tol < 0) or within tol relative. A null (a non-finite value written out) is
// a failure: a NaN loss in both runs is not agreement.
static int same_value(json_t *a, json_t *b, double tol) {
    if (!json_is_number(a) || !json_is_number(b)) return 0;
    double x = json_number_value(a), y = json_number_value(b);
    if (tol < 0) return same_bits(x, y);
    return cmp_diff(x, y) <= tol * fmax(1.0, fabs(x));
}

static int check_metrics(const char *pa, const char *pb, const char *mode) {
    double tol = strcmp(mode, "exact") == 0 ? -1 : atof(mode);
    json_t *A = read_rows(pa), *B = read_rows(pb);
    int rc = 0;
    double worst = 0;  // max |a - b| / max(1, |a|) over the compared metrics
    const char *worst_key = "";
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
            if (vb && json_is_number(va) && json_is_number(vb)) {
                double d = cmp_diff(json_number_value(va), json_number_value(vb)) /
                           fmax(1.0, fabs(json_number_value(va)));
                if (d > worst) worst = d, worst_key = key;
            }
            if (!vb || !same_value(va, vb, strcmp(key, "step") == 0 ? -1 : tol)) {
                fprintf(stderr, "sys_check: row %zu, %s: %.17g in %s, %.17g in %s\n", i, key, json_number_value(va), pa,
                        vb ? json_number_value(vb) : NAN, pb);
                rc = 1;
            }
        }
    }
    if (rc == 0)
        printf("sys_check: %zu rows agree (%s); largest relative difference %.3g (%s)\n", json_array_size(A), mode,
               worst, worst_key);
    json_decref(A);
    json_decref(B);
    return rc;
}

enum { STATE_ARRAYS = 3 };  // master, adam.m, adam.v (learner/trainer_ckpt.c)

// The trainer state of checkpoint directory dir, whatever number of learners wrote it: *st (its first
// file's) and the whole arrays (malloc'd [st->shard.n_params] each).
static void read_state(const char *dir, TrainerState *st, float *arr[STATE_ARRAYS]) {
    char path[4300];
    Err e;
    ckpt_trainer_path(path, sizeof path, dir, 0, 1);
    int n_files;
    uint64_t id;
    if (ckpt_marker_read(dir, &n_files, &id, &e)) die("%s", e.msg);
    if (trainer_state_peek(ckpt_trainer_path(path, sizeof path, dir, 0, n_files), st, &e)) die("%s", e.msg);
    int64_t n = st->shard.n_params;
    TrainerShards sh;
    if (trainer_shards_open(&sh, dir, st->step, n, &e)) die("%s", e.msg);
    const char *names[STATE_ARRAYS] = {"master", "adam.m", "adam.v"};
    for (int i = 0; i < STATE_ARRAYS; i++) {
        arr[i] = mallocCheck((size_t)(n ? n : 1) * sizeof(float));
        if (trainer_shards_read(&sh, names[i], 0, n, arr[i], &e)) die("%s", e.msg);
    }
    trainer_shards_close(&sh);
}

// The scalar parts of two trainer states: 0 when equal, else 1 with the first difference on stderr.
static int state_fields_differ(const TrainerState *a, const TrainerState *b) {
    const char *what = NULL;
    if (a->step != b->step) what = "step";
    else if (a->version != b->version) what = "weights version";
    else if (a->cursor.epoch != b->cursor.epoch || a->cursor.position != b->cursor.position ||
             a->cursor.n_questions != b->cursor.n_questions || a->cursor.seed != b->cursor.seed)
        what = "data cursor";
    else if (strcmp(a->optim_kind, b->optim_kind) != 0 || a->optim_step != b->optim_step) what = "optimizer step";
    else if (a->shard.n_params != b->shard.n_params) what = "parameter count";
    else if (a->n_rngs != b->n_rngs || a->n_scalars != b->n_scalars) what = "number of RNGs or scalars";
    for (int i = 0; !what && i < a->n_rngs; i++) {
        const TrainerRng *x = &a->rngs[i], *y = &b->rngs[i];
        if (strcmp(x->name, y->name) != 0 || x->rng.seed != y->rng.seed || x->rng.stream != y->rng.stream ||
            x->rng.block != y->rng.block || x->rng.used != y->rng.used || memcmp(x->rng.buf, y->rng.buf, sizeof x->rng.buf))
            what = x->name;
    }
    for (int i = 0; !what && i < a->n_scalars; i++)
        if (strcmp(a->scalars[i].name, b->scalars[i].name) != 0 || !same_bits(a->scalars[i].value, b->scalars[i].value))
            what = a->scalars[i].name;
    if (what) fprintf(stderr, "sys_check: trainer states differ in %s\n", what);
    return what != NULL;
}

static int check_state(const char *da, const char *db, double master_tol, double moment_tol) {
    TrainerState sa, sb;
    float *a[STATE_ARRAYS], *b[STATE_ARRAYS];
    read_state(da, &sa, a);
    read_state(db, &sb, b);
    int rc = state_fields_differ(&sa, &sb);
    int64_t n = sa.shard.n_params;
    if (rc == 0) {
        CmpErr em = cmp_err(a[0], b[0], (size_t)n, 1);
        double scale = fmax(1, cmp_max_abs(a[0], (size_t)n));
        // relative to A's norm (floor: both all zero is agreement)
        double dm = cmp_norm_rel(b[1], a[1], (size_t)n, 1e-30), dv = cmp_norm_rel(b[2], a[2], (size_t)n, 1e-30);
        printf("sys_check: step %lld, %lld parameters: master max difference %.3g (scale %.3g); adam.m norm rel "
               "%.3g, adam.v norm rel %.3g\n",
               (long long)sa.step, (long long)n, em.abs, scale, dm, dv);
        if (!(em.abs <= master_tol * scale)) {
            fprintf(stderr, "sys_check: master weights differ by %.3g > %.3g x %.3g\n", em.abs, master_tol, scale);
            rc = 1;
        }
        if (!(dm <= moment_tol) || !(dv <= moment_tol)) {
            fprintf(stderr, "sys_check: Adam moments differ (m %.3g, v %.3g) > %.3g\n", dm, dv, moment_tol);
            rc = 1;
        }
    }
    trainer_state_free(&sa);
    trainer_state_free(&sb);
    for (int i = 0; i < STATE_ARRAYS; i++) free(a[i]), free(b[i]);
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
        int ok = *s == '+' ? x > 0 : *s == '<' ? x < strtod(s + 1, NULL) : x == strtod(s, NULL);
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
    if (argc == 6 && strcmp(argv[1], "state") == 0) return check_state(argv[2], argv[3], atof(argv[4]), atof(argv[5]));
    if (argc == 5 && strcmp(argv[1], "sum") == 0) return check_sum(argv[2], argv[3], atof(argv[4]));
    if (argc == 4 && strcmp(argv[1], "rows") == 0) return check_rows(argv[2], atol(argv[3]));
    if (argc == 5 && strcmp(argv[1], "values") == 0) return check_values(argv[2], argv[3], argv[4]);
    if (argc == 4 && strcmp(argv[1], "h5") == 0) return check_h5(argv[2], argv[3]);
    die("%s", "usage: sys_check metrics A B exact|TOL | state CKPT_A CKPT_B MASTER_TOL MOMENT_TOL | sum A NAME MIN | "
              "rows A N | values A NAME V0,V1,... | h5 RUN_DIR NAME");
}
