#include "util/plot.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

// 1 iff an executable `name` is on PATH (popen would only tell by a shell error).
static int on_path(const char *name) {
    const char *p = getenv("PATH");
    char dir[4096], full[4200];
    while (p && *p) {
        size_t n = strcspn(p, ":");
        if (n > 0 && n < sizeof dir) {
            memcpy(dir, p, n);
            dir[n] = 0;
            snprintf(full, sizeof full, "%s/%s", dir, name);
            if (access(full, X_OK) == 0) return 1;
        }
        p += n + (p[n] == ':');
    }
    return 0;
}

int plot_begin(Plot *p, const char *png_path, int width, int height, Err *e) {
    if (!on_path("gnuplot")) {
        err_set(e, "gnuplot is not installed (apt-get install gnuplot-nox); plot skipped");
        return PLOT_SKIPPED;
    }
    // gnuplot's string syntax has no escape for a single quote inside '...'.
    if (strchr(png_path, '\'')) return err_set(e, "%s: a plot path may not contain a single quote", png_path);
    if (atomic_open(&p->out, png_path, e)) return -1;
    // gnuplot writes the PNG into the temporary file itself; atomic_commit then fsyncs that same file
    // and renames it into place.
    p->gp = popen("gnuplot", "w");
    if (!p->gp) fatal("popen gnuplot: %s", strerror(errno));
    fprintf(p->gp, "set terminal pngcairo size %d,%d font ',9'\nset output '%s'\n", width, height, p->out.tmp);
    return 0;
}

int plot_end(Plot *p, Err *e) {
    fprintf(p->gp, "\nunset output\n");
    int status = pclose(p->gp);
    p->gp = NULL;
    if (status == -1 || !WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        atomic_abort(&p->out);
        return err_set(e, "%s: gnuplot failed (status %d)", p->out.path, status);
    }
    return atomic_commit(&p->out, e);
}
