// sweep.c: checkpoint listing, result table and gnuplot plot of a run's MMAU results.
#include "eval/sweep.h"

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "util/fileio.h"
#include "util/plot.h"

// "step-" followed by 1..15 digits only; a temporary name ("step-000100.tmp.123") is not a checkpoint.
static int parse_step(const char *name, long *step) {
    if (strncmp(name, "step-", 5) != 0) return 0;
    const char *d = name + 5;
    size_t n = strlen(d);
    if (n == 0 || n > 15) return 0;
    for (size_t i = 0; i < n; i++)
        if (!isdigit((unsigned char)d[i])) return 0;
    *step = strtol(d, NULL, 10);
    return 1;
}

static int cmp_step(const void *a, const void *b) {
    long x = ((const SweepEntry *)a)->step, y = ((const SweepEntry *)b)->step;
    return (x > y) - (x < y);
}

static int is_dir(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

int sweep_scan(Sweep *sw, const char *run_dir, Err *e) {
    memset(sw, 0, sizeof *sw);
    char ck[4096], path[4096];
    path_join(ck, sizeof ck, run_dir, "checkpoints");
    DIR *d = opendir(ck);
    if (!d) return err_set(e, "%s: cannot open: %s", ck, strerror(errno));
    int cap = 0;
    struct dirent *de;
    while ((de = readdir(d))) {
        long step;
        if (!parse_step(de->d_name, &step)) continue;
        path_join(path, sizeof path, ck, de->d_name);
        if (!is_dir(path)) continue;
        if (sw->n == cap) sw->entry = reallocCheck(sw->entry, (cap = cap ? 2 * cap : 16) * sizeof *sw->entry);
        SweepEntry *en = &sw->entry[sw->n++];
        memset(en, 0, sizeof *en);
        en->step = step;
        en->dir = strdupCheck(path);
    }
    closedir(d);
    qsort(sw->entry, sw->n, sizeof *sw->entry, cmp_step);
    for (int i = 0; i < sw->n; i++) {
        SweepEntry *en = &sw->entry[i];
        en->complete = path_exists(path_join(path, sizeof path, en->dir, SWEEP_COMPLETE_MARKER));
        if (!en->complete || !path_exists(path_join(path, sizeof path, en->dir, MMAU_RESULT_NAME))) continue;
        if (mmau_score_read_json(&en->score, path, e)) return -1;
        en->has_result = 1;
    }
    return 0;
}

void sweep_free(Sweep *sw) {
    for (int i = 0; i < sw->n; i++) {
        free(sw->entry[i].dir);
        mmau_score_free(&sw->entry[i].score);
    }
    free(sw->entry);
    memset(sw, 0, sizeof *sw);
}

int sweep_ranking(const Sweep *sw, int **order) {
    int n = 0;
    *order = mallocCheck((sw->n + 1) * sizeof **order);
    for (int i = 0; i < sw->n; i++)
        if (sw->entry[i].has_result) (*order)[n++] = i;
    // Insertion sort: a run has tens of checkpoints. Entries are by step, so a stable sort on the total
    // puts the earlier step first among equal totals.
    for (int i = 1; i < n; i++) {
        int k = (*order)[i], j = i;
        double acc = mmau_accuracy(sw->entry[k].score.all);
        while (j > 0 && mmau_accuracy(sw->entry[(*order)[j - 1]].score.all) < acc) {
            (*order)[j] = (*order)[j - 1];
            j--;
        }
        (*order)[j] = k;
    }
    return n;
}

void sweep_print(const Sweep *sw, FILE *f) {
    int complete = 0, missing = 0;
    for (int i = 0; i < sw->n; i++) {
        complete += sw->entry[i].complete;
        missing += sw->entry[i].complete && !sw->entry[i].has_result;
    }
    fprintf(f, "%d checkpoints, %d complete, %d evaluated\n", sw->n, complete, complete - missing);
    if (missing > 0) {
        fprintf(f, "%d complete checkpoint(s) without %s (not evaluated yet):\n", missing, MMAU_RESULT_NAME);
        for (int i = 0; i < sw->n; i++)
            if (sw->entry[i].complete && !sw->entry[i].has_result)
                fprintf(f, "  step %ld: %s\n", sw->entry[i].step, sw->entry[i].dir);
    }
    if (complete < sw->n) {
        fprintf(f, "%d checkpoint(s) without a %s marker (being written, or crashed), ignored:\n",
                sw->n - complete, SWEEP_COMPLETE_MARKER);
        for (int i = 0; i < sw->n; i++)
            if (!sw->entry[i].complete) fprintf(f, "  step %ld: %s\n", sw->entry[i].step, sw->entry[i].dir);
    }
    int *order;
    int n = sweep_ranking(sw, &order);
    if (n == 0) {
        fprintf(f, "no checkpoint has an MMAU result yet\n");
    } else {
        fprintf(f, "MMAU test-mini accuracy (%%), best total first:\n");
        fprintf(f, "%10s", "step");  // task columns in mmau_task_names order: sound, music, speech
        for (int t = 0; t < MMAU_NUM_TASKS; t++) fprintf(f, " %7s", mmau_task_names[t]);
        fprintf(f, " %7s\n", "total");
        for (int r = 0; r < n; r++) {
            const SweepEntry *en = &sw->entry[order[r]];
            fprintf(f, "%10ld", en->step);
            for (int t = 0; t < MMAU_NUM_TASKS; t++) fprintf(f, " %7.2f", mmau_accuracy(en->score.task[t]));
            fprintf(f, " %7.2f\n", mmau_accuracy(en->score.all));
        }
    }
    free(order);
}

int sweep_plot(const Sweep *sw, const char *png_path, Err *e) {
    int *order;
    int n = sweep_ranking(sw, &order);
    free(order);
    if (n == 0) {
        err_set(e, "no checkpoint has an MMAU result, nothing to plot");
        return SWEEP_PLOT_SKIPPED;
    }
    Plot p;
    int rc = plot_begin(&p, png_path, 960, 600, e);
    if (rc) return rc;
    FILE *gp = p.gp;
    fprintf(gp,
            "set title 'MMAU test-mini accuracy by checkpoint'\nset xlabel 'step'\n"
            "set ylabel 'accuracy (%%)'\nset grid\nset key outside right\n$acc << EOD\n");
    for (int i = 0; i < sw->n; i++) {  // by step: the lines join checkpoints in training order
        const SweepEntry *en = &sw->entry[i];
        if (!en->has_result) continue;
        fprintf(gp, "%ld", en->step);
        for (int t = 0; t < MMAU_NUM_TASKS; t++) fprintf(gp, " %.4f", mmau_accuracy(en->score.task[t]));
        fprintf(gp, " %.4f\n", mmau_accuracy(en->score.all));
    }
    fprintf(gp, "EOD\nplot");
    for (int t = 0; t <= MMAU_NUM_TASKS; t++)
        fprintf(gp, "%s $acc using 1:%d with linespoints title '%s'", t ? "," : "", t + 2,
                t < MMAU_NUM_TASKS ? mmau_task_names[t] : "total");
    return plot_end(&p, e);
}
