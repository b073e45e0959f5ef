// sweep.h: MMAU results across the checkpoints of a training run.
// A run keeps checkpoints as RUN/checkpoints/step-NNNNNN/; a checkpoint counts once its ".complete"
// marker exists, and is evaluated once MMAU_RESULT_NAME (eval-mmau.json) exists inside it. The sweep
// lists the checkpoints, tells which still lack a result, tabulates the results (step, sound, music,
// speech, total; best total first) and plots accuracy against step with gnuplot.
#pragma once
#include <stdio.h>

#include "eval/mmau_score.h"
#include "util/check.h"
#include "util/plot.h"

#define SWEEP_COMPLETE_MARKER ".complete"

typedef struct {
    long step;
    char *dir;       // the checkpoint directory
    int complete;    // the .complete marker exists
    int has_result;  // complete and eval-mmau.json exists; score is valid
    MmauScore score;
} SweepEntry;

typedef struct {
    SweepEntry *entry;  // [n], by step
    int n;
} Sweep;

// Lists RUN/checkpoints/step-<digits> directories (other names, such as a checkpoint still being
// written under a temporary name, are not checkpoints) and reads the result of each complete one.
// A missing checkpoints folder or an unreadable result file is an error naming the path.
int sweep_scan(Sweep *sw, const char *run_dir, Err *e);
void sweep_free(Sweep *sw);
// Indices of the entries with results, best total accuracy first (ties: earlier step first). Returns
// the count; order is malloc'd [count] (caller frees).
int sweep_ranking(const Sweep *sw, int **order);
// The report: checkpoints lacking a result, incomplete ones, then the table of results.
void sweep_print(const Sweep *sw, FILE *f);

enum { SWEEP_PLOT_SKIPPED = PLOT_SKIPPED };
// Plots sound/music/speech/total accuracy against step into png_path (written atomically). Returns 0,
// SWEEP_PLOT_SKIPPED with the reason in e (gnuplot is not installed, or no checkpoint has a result),
// or -1 with e set when gnuplot fails.
int sweep_plot(const Sweep *sw, const char *png_path, Err *e);
