// aqa-plot: training curves of a run, from RUN_DIR/metrics.h5 (safe to run while the run is writing it;
// see metrics/metrics_read.h).
//   aqa-plot RUN_DIR [--out FILE.png]   a PNG dashboard, one panel per concept (rewards per function,
//                                       accuracy with the MMAU results of evaluated checkpoints, zero-std
//                                       groups, KL, completion length, grad norm, lr, mismatch, phase
//                                       times, tokens/s, loss, clipping); default RUN_DIR/dashboard.png
//   aqa-plot --spark RUN_DIR [--width N] one line: reward and accuracy per step as unicode sparklines
// Rendering is gnuplot's (pngcairo; gnuplot-nox is already a dependency of the sweep plot): axes, ticks,
// legends and text come for free, where a hand-written PNG encoder would need its own font and layout.
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "eval/sweep.h"
#include "metrics/metrics_read.h"
#include "util/fileio.h"
#include "util/log.h"
#include "util/plot.h"

static const char *usage =
    "usage: aqa-plot RUN_DIR [--out FILE.png]\n"
    "       aqa-plot --spark RUN_DIR [--width N]\n";

// A panel shows every series whose name matches one of its patterns ("x*": prefix x; "*_mean" inside a
// prefix pattern "reward.*_mean": prefix and suffix).
typedef struct {
    const char *title;
    const char *patterns[4];
    int log_y;  // when every value is positive
} Panel;

static const Panel panels[] = {
    {"rewards per function (mean)", {"reward.*_mean"}, 0},
    {"accuracy", {"reward.accuracy_mean"}, 0},
    {"zero-std groups, reward std", {"zero_std_frac", "reward.total_std", "filtered_groups"}, 0},
    {"KL to the reference", {"kl"}, 0},
    {"completion length (tokens)", {"completion.len_mean", "completion.len_max", "target.len_mean", "target.len_max"}, 0},
    {"grad norm (before clipping)", {"grad_norm"}, 1},
    {"learning rate", {"lr"}, 0},
    {"rollout/learner mismatch", {"mismatch*"}, 0},
    {"phase times (s per step)", {"time.*"}, 0},
    {"tokens/s (learner)", {"tokens_per_s"}, 0},
    {"loss", {"loss"}, 0},
    {"clipped / truncated fraction", {"clip.frac", "completion.truncated_frac"}, 0},
};
enum { N_PANELS = sizeof panels / sizeof panels[0] };

static int name_matches(const char *name, const char *pat) {
    const char *star = strchr(pat, '*');
    if (!star) return strcmp(name, pat) == 0;
    size_t pre = (size_t)(star - pat), suf = strlen(star + 1), n = strlen(name);
    return n >= pre + suf && strncmp(name, pat, pre) == 0 && strcmp(name + n - suf, star + 1) == 0;
}

static int has_values(const MetricsTable *t, int s) {
    for (int64_t i = 0; i < t->n; i++)
        if (isfinite(t->value[s][i])) return 1;
    return 0;
}

static int panel_has(const Panel *p, const MetricsTable *t, int s) {
    if (strcmp(t->name[s], "time") == 0 || !has_values(t, s)) return 0;  // "time" is the wall clock
    for (int k = 0; k < 4 && p->patterns[k]; k++)
        if (name_matches(t->name[s], p->patterns[k])) return 1;
    return 0;
}

// A log axis only when every value shown is positive (a zero gradient norm would leave nothing to draw).
static int panel_positive(const Panel *p, const MetricsTable *t) {
    for (int s = 0; s < t->n_series; s++)
        for (int64_t i = 0; panel_has(p, t, s) && i < t->n; i++)
            if (t->value[s][i] <= 0) return 0;
    return 1;
}

// A gnuplot string in single quotes ('' inside stands for one), shown as it is (noenhanced: '_' is no
// subscript).
static void put_title(FILE *gp, const char *s) {
    fputc('\'', gp);
    for (; *s; s++) fputs(*s == '\'' ? "''" : (char[2]){*s, 0}, gp);
    fputs("' noenhanced", gp);
}

static int draw(const char *run_dir, const MetricsTable *t, const Sweep *sw, const char *png, Err *e) {
    int show[N_PANELS], n_show = 0, n_results = 0;
    char absent[512] = "";
    // checkpoints evaluated so far (a sweep lists the others too; an empty data block makes gnuplot warn)
    for (int i = 0; i < sw->n; i++) n_results += sw->entry[i].has_result;
    for (int p = 0; p < N_PANELS; p++) {
        show[p] = p == 1 && n_results > 0;  // accuracy also shows evaluated checkpoints
        for (int s = 0; s < t->n_series && !show[p]; s++) show[p] = panel_has(&panels[p], t, s);
        n_show += show[p];
        if (!show[p]) snprintf(absent + strlen(absent), sizeof absent - strlen(absent), "%s%s", absent[0] ? ", " : "", panels[p].title);
    }
    if (n_show == 0) return err_set(e, "%s: no metric has a value yet", run_dir);
    int cols = n_show < 3 ? n_show : 3, rows = (n_show + cols - 1) / cols;
    Plot pl;
    int rc = plot_begin(&pl, png, 560 * cols, 340 * rows + 40, e);
    if (rc) return rc;
    FILE *gp = pl.gp;
    // Every series as one column of a data block: column 1 the step, column s + 2 series s.
    fprintf(gp, "set datafile missing '?'\n$m << EOD\n");
    for (int64_t i = 0; i < t->n; i++) {
        fprintf(gp, "%lld", (long long)t->step[i]);
        for (int s = 0; s < t->n_series; s++)
            isfinite(t->value[s][i]) ? fprintf(gp, " %.9g", t->value[s][i]) : fprintf(gp, " ?");
        fputc('\n', gp);
    }
    fprintf(gp, "EOD\n$mmau << EOD\n");
    for (int i = 0; i < sw->n; i++)
        if (sw->entry[i].has_result) fprintf(gp, "%ld %.6f\n", sw->entry[i].step, mmau_accuracy(sw->entry[i].score.all) / 100);
    time_t now = time(NULL);
    char when[64];
    strftime(when, sizeof when, "%Y-%m-%d %H:%M:%S UTC", gmtime(&now));
    fprintf(gp, "EOD\nset multiplot layout %d,%d title ", rows, cols);
    char head[8192];
    snprintf(head, sizeof head, "%s: %lld steps (last %lld), drawn %s%s%s", run_dir, (long long)t->n,
             t->n ? (long long)t->step[t->n - 1] : 0LL, when, absent[0] ? "; no data: " : "", absent);
    put_title(gp, head);
    fprintf(gp, "\nset grid\nset key top left font ',8' noenhanced\nset xlabel 'step'\n");
    // One step axis for every panel (names that start late, checkpoints after the last logged step);
    // values on a panel's border stay visible.
    long long x1 = t->n ? t->step[t->n - 1] : 0;
    for (int i = 0; i < sw->n; i++)
        if (sw->entry[i].has_result && sw->entry[i].step > x1) x1 = sw->entry[i].step;
    if (t->n && x1 > t->step[0]) fprintf(gp, "set xrange [%lld:%lld]\n", (long long)t->step[0], x1);
    fprintf(gp, "set offsets 0, 0, graph 0.05, graph 0.05\n");
    for (int p = 0; p < N_PANELS; p++) {
        if (!show[p]) continue;
        fprintf(gp, "set title ");
        put_title(gp, panels[p].title);
        fprintf(gp, "\n%sset logscale y\nplot", panels[p].log_y && panel_positive(&panels[p], t) ? "" : "un");
        int first = 1;
        for (int s = 0; s < t->n_series; s++) {
            if (!panel_has(&panels[p], t, s)) continue;
            fprintf(gp, "%s $m using 1:%d with lines title '%s'", first ? "" : ",", s + 2, t->name[s]);
            first = 0;
        }
        if (p == 1 && n_results > 0) {
            fprintf(gp, "%s $mmau using 1:2 with linespoints pt 7 title 'MMAU test-mini, checkpoint step-N'", first ? "" : ",");
            first = 0;
        }
        fputc('\n', gp);
    }
    fprintf(gp, "unset multiplot\n");
    return plot_end(&pl, e);
}

// Unicode block sparkline of v[n] in at most width cells (bucket means), scaled to its own range.
static void sparkline(FILE *f, const char *label, const double *v, int64_t n, int width) {
    static const char *const bars[] = {"▁", "▂", "▃", "▄", "▅", "▆", "▇", "█"};
    int cells = n < width ? (int)n : width;
    double *b = callocCheck((size_t)cells + 1, sizeof(double)), lo = INFINITY, hi = -INFINITY, first = NAN, last = NAN;
    for (int c = 0; c < cells; c++) {
        int64_t from = n * c / cells, to = n * (c + 1) / cells, k = 0;
        double sum = 0;
        for (int64_t i = from; i < to; i++)
            if (isfinite(v[i])) sum += v[i], k++;
        b[c] = k ? sum / k : NAN;
        if (k) {
            lo = fmin(lo, b[c]), hi = fmax(hi, b[c]);
            if (isnan(first)) first = b[c];
            last = b[c];
        }
    }
    fprintf(f, "%s %.3f ", label, first);
    for (int c = 0; c < cells; c++) {
        int level = !isfinite(b[c]) ? -1 : hi > lo ? (int)((b[c] - lo) / (hi - lo) * 7.999) : 3;
        fputs(level < 0 ? " " : bars[level], f);
    }
    fprintf(f, " %.3f", last);
    free(b);
}

static int spark(const char *run_dir, const MetricsTable *t, int width, Err *e) {
    const char *names[2] = {"reward.total_mean", "reward.accuracy_mean"}, *labels[2] = {"reward", "accuracy"};
    if (!metrics_series(t, names[0])) names[0] = "loss", labels[0] = "loss";  // an SFT run has no rewards
    if (t->n == 0 || !metrics_series(t, names[0])) return err_set(e, "%s: no %s yet", run_dir, names[0]);
    printf("steps %lld-%lld  ", (long long)t->step[0], (long long)t->step[t->n - 1]);
    for (int k = 0; k < 2; k++) {
        const double *v = metrics_series(t, names[k]);
        if (!v) continue;
        if (k) printf("  ");
        sparkline(stdout, labels[k], v, t->n, width);
    }
    printf("\n");
    return 0;
}

int main(int argc, char **argv) {
    log_init("aqa-plot", -1);
    const char *run_dir = NULL, *out = NULL;
    int spark_mode = 0, width = 40;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--spark")) {
            spark_mode = 1;
        } else if (!strcmp(argv[i], "--out") && i + 1 < argc) {
            out = argv[++i];
        } else if (!strcmp(argv[i], "--width") && i + 1 < argc) {
            char *end;
            long w = strtol(argv[++i], &end, 10);
            if (*end || w < 4 || w > 1000) {
                fprintf(stderr, "aqa-plot: --width %s: expected 4..1000\n%s", argv[i], usage);
                return 2;
            }
            width = (int)w;
        } else if (argv[i][0] != '-' && !run_dir) {
            run_dir = argv[i];
        } else {
            fprintf(stderr, "aqa-plot: unexpected argument '%s'\n%s", argv[i], usage);
            return 2;
        }
    }
    if (!run_dir) {
        fputs(usage, stderr);
        return 2;
    }
    char h5[4096], png[4096];
    MetricsTable t;
    Err e;
    if (metrics_read(path_join(h5, sizeof h5, run_dir, "metrics.h5"), &t, &e)) {
        fprintf(stderr, "aqa-plot: %s\n", e.msg);
        return 1;
    }
    int rc;
    if (spark_mode) {
        rc = spark(run_dir, &t, width, &e);
    } else {
        Sweep sw;
        Err se;
        if (sweep_scan(&sw, run_dir, &se)) sweep_free(&sw), sw = (Sweep){0};  // no checkpoints yet: no MMAU points
        if (!out) out = path_join(png, sizeof png, run_dir, "dashboard.png");
        rc = draw(run_dir, &t, &sw, out, &e);
        if (rc == 0) printf("dashboard: %s\n", out);
        sweep_free(&sw);
    }
    if (rc) fprintf(stderr, "aqa-plot: %s\n", e.msg);
    metrics_table_free(&t);
    return rc ? 1 : 0;
}
