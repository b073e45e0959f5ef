// aqa_eval: MMAU test-mini evaluation.
//   aqa-eval --score-only PRED.json [--out-json OUT.json]
//     scores a prediction file (the MMAU items with "model_prediction", or "model_output") with the
//     official rule and prints the official evaluation.py layout; --out-json also writes the numbers
//     as JSON (atomically), e.g. RUN/checkpoints/step-000100/eval-mmau.json for the sweep.
//   aqa-eval --sweep RUN_DIR [--plot OUT.png]
//     lists RUN_DIR/checkpoints/step-*, names the complete ones that lack eval-mmau.json, prints
//     step/sound/music/speech/total sorted by total, and plots accuracy by step (default
//     RUN_DIR/eval-mmau-sweep.png; skipped with a note when gnuplot is not installed).
// Like every binary it takes --config FILE and --set section.key=value (validated; --help-config).
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config/config.h"
#include "eval/mmau_score.h"
#include "eval/sweep.h"
#include "util/fileio.h"

static const char *usage =
    "usage: aqa-eval [--config FILE] [--set k=v ...] --score-only PRED.json [--out-json OUT.json]\n"
    "       aqa-eval [--config FILE] [--set k=v ...] --sweep RUN_DIR [--plot OUT.png]\n";

typedef struct {
    const char *score_file, *out_json, *sweep_dir, *plot;
} Args;

static int parse_args(int argc, char **argv, Args *a, Err *e) {
    memset(a, 0, sizeof *a);
    for (int i = 1; i < argc; i++) {
        const char **slot = !strcmp(argv[i], "--score-only") ? &a->score_file
                            : !strcmp(argv[i], "--out-json") ? &a->out_json
                            : !strcmp(argv[i], "--sweep")    ? &a->sweep_dir
                            : !strcmp(argv[i], "--plot")     ? &a->plot
                                                             : NULL;
        if (!slot) return err_set(e, "unknown argument %s", argv[i]);
        if (i + 1 == argc) return err_set(e, "%s needs a value", argv[i]);
        if (*slot) return err_set(e, "%s given twice", argv[i]);
        *slot = argv[++i];
    }
    if (!a->score_file == !a->sweep_dir) return err_set(e, "give exactly one of --score-only and --sweep");
    if (a->out_json && !a->score_file) return err_set(e, "--out-json goes with --score-only");
    if (a->plot && !a->sweep_dir) return err_set(e, "--plot goes with --sweep");
    return 0;
}

// Prints a score in the official layout and, when asked, writes it as JSON (every scoring mode ends here).
static int report(const MmauScore *s, const char *out_json, Err *e) {
    mmau_score_print(s, stdout);
    return out_json ? mmau_score_write_json(s, out_json, e) : 0;
}

static int run_score(const Args *a, Err *e) {
    MmauScore s;
    mmau_score_init(&s);
    int rc = mmau_score_file(&s, a->score_file, e);
    if (rc == 0) rc = report(&s, a->out_json, e);
    mmau_score_free(&s);
    return rc;
}

static int run_sweep(const Args *a, Err *e) {
    Sweep sw;
    if (sweep_scan(&sw, a->sweep_dir, e)) {
        sweep_free(&sw);
        return -1;
    }
    sweep_print(&sw, stdout);
    char png[4096];
    const char *plot = a->plot ? a->plot : path_join(png, sizeof png, a->sweep_dir, "eval-mmau-sweep.png");
    int rc = sweep_plot(&sw, plot, e);
    if (rc == 0)
        printf("plot: %s\n", plot);
    else if (rc == SWEEP_PLOT_SKIPPED)
        printf("plot skipped: %s\n", e->msg);
    sweep_free(&sw);
    return rc < 0 ? -1 : 0;
}

int main(int argc, char **argv) {
    Config *cfg = mallocCheck(sizeof *cfg);
    Err e;
    Args a;
    int rc = config_from_args(cfg, &argc, argv, &e);
    if (rc == 0 && parse_args(argc, argv, &a, &e)) {
        fprintf(stderr, "aqa-eval: %s\n%s", e.msg, usage);
        rc = -1;
    } else if (rc == 0) {
        rc = a.score_file ? run_score(&a, &e) : run_sweep(&a, &e);
        if (rc < 0) fprintf(stderr, "aqa-eval: %s\n", e.msg);
    } else if (rc < 0) {
        fprintf(stderr, "aqa-eval: %s\n", e.msg);
    }
    free(cfg);
    return rc < 0 ? 1 : 0;
}
