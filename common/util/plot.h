// plot.h: PNG plots through gnuplot (a child process reading its script on stdin), written atomically:
// gnuplot writes the temporary file and only a successful run renames it over the final name, so a
// reader never sees a half-drawn PNG. Used by the checkpoint sweep and by aqa-plot's dashboard.
#pragma once
#include <stdio.h>

#include "util/check.h"
#include "util/fileio.h"

typedef struct {
    FILE *gp;        // gnuplot's stdin: the caller writes the script here
    AtomicFile out;  // the PNG being drawn
} Plot;

enum { PLOT_SKIPPED = 1 };

// Starts gnuplot with the pngcairo terminal (anti-aliased; in gnuplot-nox) at width x height pixels,
// drawing into png_path's temporary name. Returns 0, PLOT_SKIPPED with the reason in e (gnuplot is not
// installed) or -1 with e set (a path gnuplot cannot quote, the file cannot be made).
int plot_begin(Plot *p, const char *png_path, int width, int height, Err *e);
// Closes the script, waits for gnuplot and renames the PNG into place; when gnuplot failed the
// temporary file is removed and -1 returned with e set.
int plot_end(Plot *p, Err *e);
