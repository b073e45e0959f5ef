// metrics_read.h: a run's metrics.h5 read back as a table, also while the run is still writing it.
// The writer (metrics.c) is not an HDF5 SWMR writer (it creates a dataset when a name first appears,
// which SWMR forbids) and flushes after each step, so the reader never opens the file in HDF5 at all:
// it copies the bytes (plain read(), no lock, nothing the writer can notice), opens that copy in memory
// and checks that it is a consistent step (it opens, every dataset has the step dataset's length, steps
// increase). A copy taken in the middle of a step's write fails these checks and is taken again.
#pragma once
#include <stdint.h>

#include "util/check.h"

typedef struct {
    int64_t n;        // rows
    int64_t *step;    // [n], increasing
    int n_series;     // every float64 dataset ("time" included), in the file's name order
    char **name;      // [n_series]
    double **value;   // [n_series][n]; NaN where a step did not log the name
} MetricsTable;

// Reads path (metrics.h5) into t. Returns -1 with e set when the file is missing, not a metrics file,
// or no consistent copy could be taken within a few seconds.
int metrics_read(const char *path, MetricsTable *t, Err *e);
void metrics_table_free(MetricsTable *t);
// The values of a series, or NULL when the file has no such name.
const double *metrics_series(const MetricsTable *t, const char *name);
