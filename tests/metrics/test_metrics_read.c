// Tests of metrics_read (reading metrics.h5 back, also while a run writes it) and the aqa-plot tool
// (argv[1]): the table equals what was logged (late names and gaps NaN); a reader polling while another
// process appends 300 steps only ever sees whole steps; the dashboard is a PNG; --spark prints the
// per-step reward and accuracy as block sparklines.
#include "test.h"
#include "metrics/metrics.h"
#include "metrics/metrics_read.h"
#include "util/fileio.h"

#include <signal.h>
#include <stdint.h>
#include <sys/wait.h>
#include <unistd.h>

static const char *plot_exe;

// The values step s logs (each an exact function of s, so a torn read shows).
static void log_step(Metrics *m, int64_t s) {
    Err e;
    const char *names[] = {"reward.total_mean", "reward.accuracy_mean", "reward.format_mean", "kl", "lr",
                           "time.step", "zero_std_frac", "tokens_per_s", "grad_norm", "mismatch.logprob_max",
                           "completion.len_mean"};
    double v[11] = {1.0 + s / 8.0, s / 8.0, 1.0, 0.01 * s, 1e-6 * (100 - s), 0.5, 0.25, 100.0 + s, 1.0 + s,
                    0.001 * s, 9};
    // completion.len_mean is left out of every third step; the mismatch name first appears at step 4.
    int n = s % 3 == 2 ? 10 : 11;
    if (s < 4) names[9] = names[10], v[9] = v[10], n--;
    CHECKF(metrics_log(m, s, names, v, n, &e) == 0, "%s", e.msg);
}

static void test_read_back(void) {
    const char *run = TMP_PATH("metrics_read_run");
    Err e;
    CHECK(system("rm -rf \"$AQA_TMP/metrics_read_run\"") == 0);
    Metrics *m = metrics_open(run, false, true, METRICS_FRESH, &e);
    if (!m) {
        CHECKF(0, "%s", e.msg);
        return;
    }
    for (int64_t s = 1; s <= 8; s++) log_step(m, s);
    metrics_close(m);
    MetricsTable t;
    char h5[4096];
    if (metrics_read(path_join(h5, sizeof h5, run, "metrics.h5"), &t, &e)) {
        CHECKF(0, "%s", e.msg);
        return;
    }
    CHECK_INT(t.n, 8);
    for (int64_t i = 0; i < t.n; i++) CHECK_INT(t.step[i], i + 1);
    const double *r = metrics_series(&t, "reward.total_mean"), *len = metrics_series(&t, "completion.len_mean");
    const double *late = metrics_series(&t, "mismatch.logprob_max");
    CHECK(r && len && late && metrics_series(&t, "time") && !metrics_series(&t, "step") && !metrics_series(&t, "x"));
    for (int64_t i = 0; r && len && late && i < t.n; i++) {
        int64_t s = i + 1;
        CHECK(r[i] == 1.0 + s / 8.0);
        CHECK(s % 3 == 2 ? isnan(len[i]) : len[i] == 9);
        CHECK(s >= 4 ? late[i] == 0.001 * s : isnan(late[i]));
    }
    metrics_table_free(&t);
    CHECK(metrics_read(TMP_PATH("metrics_read_none/metrics.h5"), &t, &e) == -1 && strstr(e.msg, "metrics_read_none"));
    char bad[4096];
    snprintf(bad, sizeof bad, "%s/not.h5", run);
    CHECK(file_write_atomic(bad, "not hdf5", 8, &e) == 0);
    CHECK(metrics_read(bad, &t, &e) == -1 && strstr(e.msg, "not readable as HDF5"));

    // The tool: a PNG dashboard, and sparklines. reward.total_mean rises by equal steps over 8 steps, so
    // its 8 cells are the 8 levels in order; 4 cells average pairs of steps.
    static char out[65536], cmd[8192];
    snprintf(cmd, sizeof cmd, "'%s' '%s' 2>&1", plot_exe, run);
    CHECKF(test_run_cmd(cmd, out, sizeof out) == 0 && strstr(out, "dashboard: "), "%s", out);
    snprintf(bad, sizeof bad, "%s/dashboard.png", run);
    size_t n = 0;
    char *png = file_read_all(bad, &n, &e);
    CHECKF(png && n > 20000 && memcmp(png, "\x89PNG\r\n\x1a\n", 8) == 0, "dashboard: %zu bytes", n);
    free(png);
    snprintf(cmd, sizeof cmd, "'%s' --spark '%s' --width 8", plot_exe, run);
    CHECKF(test_run_cmd(cmd, out, sizeof out) == 0, "%s", out);
    CHECK_STR(out, "steps 1-8  reward 1.125 ▁▂▃▄▅▆▇█ 2.000  accuracy 0.125 ▁▂▃▄▅▆▇█ 1.000\n");
    snprintf(cmd, sizeof cmd, "'%s' --spark '%s' --width 4", plot_exe, run);
    CHECKF(test_run_cmd(cmd, out, sizeof out) == 0, "%s", out);
    CHECK_STR(out, "steps 1-8  reward 1.188 ▁▃▆█ 1.938  accuracy 0.188 ▁▃▆█ 0.938\n");
    snprintf(cmd, sizeof cmd, "'%s' --spark 2>&1", plot_exe);
    CHECK(test_run_cmd(cmd, out, sizeof out) == 2);
}

// A writer process appends steps as fast as it can; the reader meanwhile takes table after table: each
// must be whole steps 1..n with every value the function of its step.
static void test_read_while_writing(void) {
    const char *run = TMP_PATH("metrics_read_live");
    Err e;
    CHECK(system("rm -rf \"$AQA_TMP/metrics_read_live\"") == 0);
    Metrics *m = metrics_open(run, false, true, METRICS_FRESH, &e);
    if (!m) {
        CHECKF(0, "%s", e.msg);
        return;
    }
    log_step(m, 1);
    // The writer's handle lives in the child only: a copy left open in the parent would leak, and closing
    // it would write the step-1 state over the child's file.
    metrics_close(m);
    pid_t pid = fork();
    if (pid == 0) {
        Metrics *w = metrics_open(run, false, true, 1, &e);
        if (!w) _exit(1);
        for (int64_t s = 2; s <= 300; s++) log_step(w, s);
        metrics_close(w);
        _exit(0);
    }
    char h5[4096];
    path_join(h5, sizeof h5, run, "metrics.h5");
    int reads = 0, bad = 0, growing = 0;
    int64_t last = 0;
    for (int done = 0; !done;) {
        done = waitpid(pid, NULL, WNOHANG) == pid;
        MetricsTable t;
        if (metrics_read(h5, &t, &e)) {
            bad++;
            fprintf(stderr, "     %s\n", e.msg);
            continue;
        }
        reads++;
        growing += t.n > last;
        last = t.n;
        const double *r = metrics_series(&t, "reward.total_mean"), *lr = metrics_series(&t, "lr");
        for (int64_t i = 0; i < t.n; i++)
            if (t.step[i] != i + 1 || !r || r[i] != 1.0 + (i + 1) / 8.0 || !lr || lr[i] != 1e-6 * (100 - (i + 1))) bad++;
        metrics_table_free(&t);
    }
    CHECKF(bad == 0, "%d torn or failed reads of %d", bad, reads);
    CHECKF(reads >= 3 && growing >= 2, "%d reads, %d saw the file grow", reads, growing);
    CHECK_INT(last, 300);
    // The reader leaves the writer's file as it is: the run resumes from it.
    m = metrics_open(run, false, true, 300, &e);
    CHECKF(m != NULL, "%s", e.msg);
    if (m) metrics_close(m);
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: test_metrics_read PATH/TO/aqa-plot\n");
        return 2;
    }
    plot_exe = argv[1];
    RUN(test_read_back);
    RUN(test_read_while_writing);
    return test_summary("test_metrics_read");
}
